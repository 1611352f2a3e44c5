//! The compiled model of `examples/lab`: lookups, inheritance, rendering.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::Path;

use vaquero_model::{
    BmcType, Concurrency, DhcpMode, DirSource, MacAddr, SiteModel, Sot, Uuid, load_source,
};

fn lab() -> (Sot, SiteModel) {
    let sot =
        Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
    let model = SiteModel::compile(&sot, "lab").unwrap();
    (sot, model)
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

#[test]
fn the_lab_has_what_the_issue_asks_for() {
    let (sot, model) = lab();
    assert_eq!(sot.sites.len(), 1);
    let site = model.site();
    assert_eq!(site.subnets.len(), 2);
    assert_eq!(site.agents[0].dhcp_mode, DhcpMode::Server);
    assert!(model.hosts().len() >= 6);
    assert!(sot.workflows.values().any(|w| w.stages.len() == 2));
    let kinds: Vec<BmcType> = model
        .hosts()
        .iter()
        .filter_map(|h| h.bmc())
        .map(|(_, b)| b.kind)
        .collect();
    for k in [BmcType::Ipmi, BmcType::Redfish, BmcType::Ssh, BmcType::Exec] {
        assert!(kinds.contains(&k), "a {k:?} BMC");
    }
    for t in ["cloud-config", "ignition", "kickstart", "untyped"] {
        assert!(
            sot.assets
                .keys()
                .any(|a| a.starts_with(&format!("{t}/snippets/"))),
            "{t} snippet"
        );
    }
    assert_eq!(site.subnets[0].dhcp_options.len(), 3);
    assert_eq!(
        site.subnets[0].dhcp_options[0].encoded().unwrap(),
        &[10, 99, 0, 2][..]
    );
    assert_eq!(
        site.subnets[0].dhcp_options[1].encoded().unwrap(),
        &3600u32.to_be_bytes()[..]
    );
    assert_eq!(site.subnets[0].lease_time.unwrap().as_secs(), 3600);
    // Vaquero's spellings: `workflow:` and `deps:` in storage.yml, `domain` in env.yml.
    assert_eq!(sot.workflows["storage"].stages[0].boot, "rocky-install");
    assert_eq!(
        sot.workflows["storage"].policy.max_concurrent,
        Concurrency::Count(1)
    );
    assert_eq!(
        site.subnets[1].domain_name.as_deref(),
        Some("oob.lab.vaquero.test")
    );
}

#[test]
fn lookups_by_mac_uuid_and_location() {
    let (_, model) = lab();
    let h = model.by_mac(&mac("52-54-00-00-01-02")).unwrap();
    assert_eq!(h.host.name, "k8s-02");
    assert_eq!(h.interface.ipv4.to_string(), "10.99.0.12");
    // The BMC NIC belongs to the same host, on its own interface.
    let b = model.by_mac(&mac("52:54:00:00:02:02")).unwrap();
    assert_eq!(
        (b.host.name.as_str(), b.interface.ipv4.to_string()),
        ("k8s-02", "10.99.1.12".to_owned())
    );
    assert!(model.by_mac(&mac("52:54:00:ff:ff:ff")).is_none());

    let u: Uuid = "4C4C4544-0042-3510-8052-B4C04F384D01".parse().unwrap();
    assert_eq!(model.by_uuid(&u).unwrap().host.name, "k8s-01");

    assert_eq!(
        model
            .by_location(Some("ge-0/0/1"), Some("tor-a"))
            .unwrap()
            .host
            .name,
        "k8s-01"
    );
    assert!(
        model.by_location(Some("ge-0/0/1"), Some("tor-b")).is_none(),
        "both ids given: both must match"
    );
    assert!(model.by_location(Some("ge-0/0/2"), None).is_none());
    assert_eq!(
        model
            .by_name("bastion-01")
            .unwrap()
            .interface
            .hostname
            .as_deref(),
        Some("bastion")
    );
}

#[test]
fn classes_merge_depth_first_later_wins() {
    let (_, model) = lab();
    let md = |n: &str| model.by_name(n).unwrap().host.metadata.clone();
    let k3 = md("k8s-03");
    assert_eq!(k3["rack"], "b");
    assert_eq!(k3["k8s_version"], "1.32", "the host overrides its class");
    assert_eq!(
        k3["alpine_mirror"], "http://mirror.rack-b.lab/alpine",
        "rack.b overrides base"
    );
    assert_eq!(k3["monitoring"], true, "YAML booleans stay booleans");
    assert_eq!(
        model.by_name("k8s-03").unwrap().host.workflow,
        "k8s-worker",
        "from role.k8s-worker"
    );
    // `~ssh_keys` replaces the list it would otherwise append to.
    let b = md("bastion-01");
    assert_eq!(b["ssh_keys"].as_array().unwrap().len(), 1);
    assert!(
        b["ssh_keys"][0]
            .as_str()
            .unwrap()
            .ends_with("bastion-admins@lab")
    );
}

#[test]
fn rendering_and_version() {
    let (_, model) = lab();
    let h = model.by_mac(&mac("52:54:00:00:01:03")).unwrap();
    let urls = model.urls(h, "burnin", "t0k3n").unwrap();
    assert_eq!(urls.checkpoint, "http://10.99.0.2:8080/checkpoint/t0k3n");
    assert_eq!(
        urls.config,
        "http://10.99.0.2:8080/config/52-54-00-00-01-03?boot=burnin"
    );
    let ctx = model.context(h, "burnin", Some(&urls));
    let r = model.render_boot("burnin", &ctx).unwrap();
    assert_eq!(
        r.kernel,
        "http://10.99.0.2:8080/files/alpine-3.20/vmlinuz-lts"
    );
    assert_eq!(
        r.cmdline,
        "alpine_repo=http://mirror.rack-b.lab/alpine/v3.20/main modloop=http://10.99.0.2:8080/files/alpine-3.20/modloop-lts ip=dhcp vaquero.script=http://10.99.0.2:8080/config/52-54-00-00-01-03?boot=burnin console=ttyS0"
    );
    let (kind, text) = model.render_unattended("burnin", &ctx).unwrap().unwrap();
    assert_eq!(kind.dir(), "untyped");
    assert!(
        text.contains("--timeout 30m"),
        "boot metadata reaches md: {text}"
    );
    let (before, validate) = model
        .render_jobs(
            "flatcar-install",
            &model.context(h, "flatcar-install", Some(&urls)),
        )
        .unwrap();
    assert_eq!(before[0].command[2], "k8s-03");
    assert_eq!(validate[0].env["KUBE_VERSION"], "1.32");

    // The version is a content hash: stable, and the same from a directory source.
    let (_, again) = lab();
    assert_eq!(again.version(), model.version());
    assert_eq!(model.version().len(), 64);
    let loaded = load_source(&DirSource::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab"),
    ))
    .unwrap();
    assert_eq!(loaded.sites["lab"].version(), model.version());
}

/// A host of the model gets a context read from the model on demand; a
/// host from elsewhere (a clone) gets it serialized whole. Both must be the
/// same to templates: equal values, same keys in the same order, same JSON.
#[test]
fn on_demand_contexts_equal_serialized_ones() {
    let (_, model) = lab();
    let urls_for = |h: vaquero_model::HostRef<'_>, boot: &str| model.urls(h, boot, "t0k3n");
    let mut checked = 0;
    for (index, host) in model.hosts().iter().enumerate() {
        let copy = host.clone();
        for (j, interface) in host.interfaces.iter().enumerate() {
            let own = vaquero_model::HostRef {
                host,
                index,
                interface,
            };
            let other = vaquero_model::HostRef {
                host: &copy,
                index,
                interface: &copy.interfaces[j],
            };
            for boot in model
                .data()
                .boots
                .keys()
                .map(String::as_str)
                .chain(["nope"])
            {
                let a = model.context(own, boot, urls_for(own, boot).as_ref());
                let b = model.context(other, boot, urls_for(other, boot).as_ref());
                assert_eq!(a, b, "{} {boot}", host.name);
                assert_eq!(
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&b).unwrap(),
                    "{} {boot}",
                    host.name
                );
                for part in ["host", "interface", "md"] {
                    let (pa, pb) = (a.get_attr(part).unwrap(), b.get_attr(part).unwrap());
                    assert_eq!(pa.len(), pb.len(), "{part}");
                    let ka: Vec<_> = pa.try_iter().unwrap().collect();
                    let kb: Vec<_> = pb.try_iter().unwrap().collect();
                    assert_eq!(ka, kb, "{} {boot} {part}", host.name);
                    for k in &ka {
                        assert_eq!(pa.get_item(k).unwrap(), pb.get_item(k).unwrap());
                    }
                    assert!(pa.get_attr("no_such_key").unwrap().is_undefined());
                    assert_eq!(pa.is_true(), pb.is_true());
                }
                if let Some(u) = urls_for(own, boot) {
                    let (got, want) = (
                        a.get_attr("urls").unwrap(),
                        minijinja::Value::from(minijinja::value::Serde(&u)),
                    );
                    assert_eq!(got, want);
                    assert_eq!(
                        serde_json::to_string(&got).unwrap(),
                        serde_json::to_string(&want).unwrap()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "{checked}");
}
