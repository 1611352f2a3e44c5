//! Property tests: generated valid SoTs load and their compiled models
//! round-trip; a model diffed against itself is empty; class inheritance
//! is depth-first, in order, later wins.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::collections::BTreeMap;
use std::fmt::Write;

use proptest::prelude::*;
use vaquero_model::{SiteModel, Sot, SotFiles, diff};

const BASE: &[(&str, &str)] = &[
    (
        "os/linux.yml",
        "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/linux\"\n  initrd: [\"{{ urls.assets }}/initrd\"]\ncmdline:\n  - console: ttyS0\n  - hostname: \"{{ host.name }}\"\n  - role: \"{{ md.role | default('none') }}\"\n",
    ),
    (
        "boot/install.yml",
        "id: install\noperating_system: linux\nunattended:\n  type: cloud-config\n  use: user-data.yml\n",
    ),
    (
        "boot/burnin.yml",
        "id: burnin\noperating_system: linux\nunattended:\n  type: kickstart\n  use: ks.cfg\n",
    ),
    ("workflows/one.yml", "id: one\nstages:\n  - boot: install\n"),
    (
        "workflows/two.yml",
        "id: two\nstages:\n  - boot: burnin\n  - boot: install\n",
    ),
    (
        "assets/cloud-config/user-data.yml",
        "#cloud-config\nhostname: {{ host.name }}\nfqdn: {{ interface.ipv4 }}\n",
    ),
    (
        "assets/kickstart/ks.cfg",
        "text\nnetwork --ip={{ interface.ipv4 }} --hostname={{ host.name }}\nreboot\n",
    ),
];

#[derive(Debug, Clone)]
struct GenHost {
    two_stages: bool,
    role: Option<u8>,
    classes: Vec<usize>,
    uuid: bool,
}

fn gen_host() -> impl Strategy<Value = GenHost> {
    (
        any::<bool>(),
        proptest::option::of(0u8..4),
        proptest::collection::vec(0usize..4, 0..3),
        any::<bool>(),
    )
        .prop_map(|(two_stages, role, classes, uuid)| GenHost {
            two_stages,
            role,
            classes,
            uuid,
        })
}

/// A valid SoT: the base files, four classes (class i inherits i-1), and
/// one site with the generated hosts.
fn sot_files(hosts: &[GenHost]) -> SotFiles {
    let mut f = SotFiles::new();
    for (p, t) in BASE {
        f.insert(*p, *t);
    }
    for i in 0..4 {
        let parents = if i > 0 {
            format!("classes: [c{}]\n", i - 1)
        } else {
            String::new()
        };
        f.insert(
            format!("classes/c{i}.yml"),
            format!("{parents}metadata:\n  level: {i}\n  c{i}: true\n"),
        );
    }
    f.insert(
        "sites/gen/env.yml",
        "id: gen\nagents:\n  - id: a\n    asset_server: {url: \"http://10.0.0.2:8080\"}\nsubnets:\n  - id: s\n    cidr: 10.0.0.0/16\n    dns: [10.0.0.1]\n",
    );
    let mut inv = String::new();
    for (i, h) in hosts.iter().enumerate() {
        inv.push_str("---\n");
        let _ = writeln!(inv, "name: host-{i}");
        let _ = writeln!(
            inv,
            "workflow: {}",
            if h.two_stages { "two" } else { "one" }
        );
        if !h.classes.is_empty() {
            let c: Vec<String> = h.classes.iter().map(|c| format!("c{c}")).collect();
            let _ = writeln!(inv, "classes: [{}]", c.join(", "));
        }
        if let Some(r) = h.role {
            let _ = writeln!(inv, "metadata:\n  role: r{r}");
        }
        if h.uuid {
            let _ = writeln!(inv, "uuid: 00000000-0000-4000-8000-{i:012x}");
        }
        let _ = writeln!(
            inv,
            "interfaces:\n  - type: physical\n    mac: \"02:00:00:00:{:02x}:{:02x}\"\n    subnet: s\n    ipv4: 10.0.{}.{}",
            i / 256,
            i % 256,
            1 + i / 250,
            1 + i % 250
        );
    }
    f.insert("sites/gen/hosts.yml", inv);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_sots_load_and_models_round_trip(hosts in proptest::collection::vec(gen_host(), 1..40)) {
        let sot = Sot::load(&sot_files(&hosts)).map_err(|d| TestCaseError::fail(d.to_string()))?;
        prop_assert_eq!(sot.sites["gen"].hosts.len(), hosts.len());
        let model = SiteModel::compile(&sot, "gen").unwrap();
        let json = serde_json::to_string(&model).unwrap();
        let back: SiteModel = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.data(), model.data());
        prop_assert_eq!(back.version(), model.version());
        // Lookups agree after the round trip.
        for (i, h) in model.hosts().iter().enumerate() {
            let mac = h.interfaces[0].mac;
            prop_assert_eq!(back.by_mac(&mac).map(|r| r.index), Some(i));
            if let Some(u) = h.uuid {
                prop_assert_eq!(back.by_uuid(&u).map(|r| r.index), Some(i));
            }
        }
        // Compiling twice gives the same version.
        let again = SiteModel::compile(&sot, "gen").unwrap();
        prop_assert_eq!(again.version(), model.version());
    }

    #[test]
    fn a_model_diffed_against_itself_is_empty(hosts in proptest::collection::vec(gen_host(), 1..30)) {
        let sot = Sot::load(&sot_files(&hosts)).map_err(|d| TestCaseError::fail(d.to_string()))?;
        let a = SiteModel::compile(&sot, "gen").unwrap();
        let b = SiteModel::compile(&Sot::load(&sot_files(&hosts)).unwrap(), "gen").unwrap();
        prop_assert!(diff(&a, &a).is_empty());
        prop_assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn inheritance_is_depth_first_in_order_later_wins(
        parents in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..3), 6),
        values in proptest::collection::vec(proptest::collection::btree_map(0u8..5, 0u8..100, 0..4), 6),
        host_classes in proptest::collection::vec(0usize..6, 0..4),
        host_values in proptest::collection::btree_map(0u8..5, 0u8..100, 0..3),
    ) {
        // Class i may only inherit from classes < i: no cycles.
        let parents: Vec<Vec<usize>> = parents
            .iter()
            .enumerate()
            .map(|(i, ps)| ps.iter().copied().filter(|p| *p < i).collect())
            .collect();
        let mut f = SotFiles::new();
        for (p, t) in BASE {
            f.insert(*p, *t);
        }
        let md = |m: &BTreeMap<u8, u8>| {
            let mut s = String::from("metadata:\n  _: 0\n");
            for (k, v) in m {
                let _ = writeln!(s, "  k{k}: {v}");
            }
            s
        };
        for i in 0..6 {
            let ps: Vec<String> = parents[i].iter().map(|p| format!("c{p}")).collect();
            f.insert(format!("classes/c{i}.yml"), format!("classes: [{}]\n{}", ps.join(", "), md(&values[i])));
        }
        f.insert(
            "sites/gen/env.yml",
            "id: gen\nagents:\n  - id: a\n    asset_server: {url: \"http://10.0.0.2\"}\nsubnets:\n  - id: s\n    cidr: 10.0.0.0/16\n    dns: [10.0.0.1]\n",
        );
        let hc: Vec<String> = host_classes.iter().map(|c| format!("c{c}")).collect();
        f.insert(
            "sites/gen/hosts.yml",
            format!(
                "name: h\nworkflow: one\nclasses: [{}]\n{}interfaces:\n  - {{type: physical, mac: \"02:00:00:00:00:01\", subnet: s, ipv4: 10.0.0.5}}\n",
                hc.join(", "),
                md(&host_values)
            ),
        );
        // The model's answer…
        let sot = Sot::load(&f);
        let host_md = match &sot {
            Ok(s) => s.sites["gen"].hosts[0].metadata.clone(),
            Err(d) => return Err(TestCaseError::fail(d.to_string())),
        };
        // …against a reference: resolve each class depth-first, then apply.
        fn apply(i: usize, parents: &[Vec<usize>], values: &[BTreeMap<u8, u8>], out: &mut BTreeMap<u8, u8>) {
            for p in &parents[i] {
                apply(*p, parents, values, out);
            }
            out.extend(values[i].iter().map(|(k, v)| (*k, *v)));
        }
        let mut expected = BTreeMap::new();
        for c in &host_classes {
            apply(*c, &parents, &values, &mut expected);
        }
        expected.extend(host_values.iter().map(|(k, v)| (*k, *v)));
        let got: BTreeMap<u8, u8> = host_md
            .iter()
            .filter(|(k, _)| *k != "_")
            .map(|(k, v)| (k[1..].parse().unwrap(), v.as_u64().unwrap() as u8))
            .collect();
        prop_assert_eq!(got, expected);
    }
}
