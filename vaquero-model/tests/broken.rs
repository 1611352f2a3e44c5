//! One broken SoT per error kind: each is `examples/lab` with one mistake,
//! and each asserts the exact `file:line:col: key.path: message` output.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::Path;

use vaquero_model::{Sot, SotFiles};

fn lab() -> SotFiles {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    SotFiles::read_dir(&root).expect("examples/lab is readable")
}

/// `examples/lab` with `from` replaced by `to` (exactly once) in `path`;
/// an empty `from` adds (or replaces) the whole file.
fn broken(edits: &[(&str, &str, &str)]) -> String {
    let mut files = lab();
    for (path, from, to) in edits {
        if from.is_empty() {
            files.insert(*path, *to);
            continue;
        }
        let text = files.get(path).unwrap_or_else(|| panic!("no file {path}"));
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` must occur once in {path}"
        );
        let new = text.replacen(from, to, 1);
        files.insert(*path, new);
    }
    match Sot::load(&files) {
        Ok(_) => "(valid)".to_owned(),
        Err(d) => d.to_string(),
    }
}

fn check(edits: &[(&str, &str, &str)], expected: &str) {
    let got = broken(edits);
    assert_eq!(got.trim_end(), expected.trim(), "\n--- got:\n{got}");
}

#[test]
fn the_lab_is_valid() {
    assert_eq!(broken(&[]), "(valid)");
}

#[test]
fn yaml_syntax_error() {
    check(
        &[(
            "sites/lab/k8s.yml",
            "serial: SN-K8S-01",
            "serial: [SN-K8S-01",
        )],
        "sites/lab/k8s.yml:7:9: YAML syntax error: illegal placement of ':' indicator",
    );
}

#[test]
fn unknown_field_with_suggestion() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "workflow: bastion",
            "workflw: bastion",
        )],
        "sites/lab/bastion.yml:2:1: workflw: unknown field `workflw` (did you mean `workflow`?)",
    );
}

#[test]
fn every_unknown_field_of_a_document_at_once() {
    check(
        &[
            (
                "sites/lab/storage.yml",
                "    identifier: ens3\n  - type: bmc\n    mac: \"52:54:00:00:02:21\"",
                "    identifer: ens3\n  - type: bmc\n    mac: \"52:54:00:00:02:21\"",
            ),
            (
                "sites/lab/storage.yml",
                "never_provision: true",
                "never_provison: true",
            ),
        ],
        "sites/lab/storage.yml:9:5: interfaces[0].identifer: unknown field `identifer` (did you mean `identifier`?)\nsites/lab/storage.yml:20:1: never_provison: unknown field `never_provison` (did you mean `never_provision`?)",
    );
}

#[test]
fn missing_required_field() {
    check(
        &[("os/alpine.yml", "os_family: alpine\n", "")],
        "os/alpine.yml:1:1: missing field `os_family`",
    );
}

#[test]
fn wrong_type() {
    check(
        &[("sites/lab/env.yml", "vlan: 100", "vlan: hundred")],
        "sites/lab/env.yml:19:11: subnets[0].vlan: expected a number (invalid digit found in string)",
    );
}

#[test]
fn dangling_workflow() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "workflow: bastion",
            "workflow: jumphost",
        )],
        "sites/lab/bastion.yml:2:11: workflow: unknown workflow `jumphost`",
    );
}

#[test]
fn dangling_boot() {
    check(
        &[(
            "workflows/bastion.yml",
            "boot: ubuntu-install",
            "boot: ubuntu-instal",
        )],
        "workflows/bastion.yml:3:11: stages[0].boot: unknown boot `ubuntu-instal` (did you mean `ubuntu-install`?)",
    );
}

#[test]
fn dangling_os() {
    check(
        &[(
            "boot/burnin.yml",
            "operating_system: alpine-3.20",
            "operating_system: alpine-3.19",
        )],
        "boot/burnin.yml:2:19: operating_system: unknown operating system `alpine-3.19` (did you mean `alpine-3.20`?)",
    );
}

#[test]
fn dangling_asset() {
    check(
        &[("boot/rocky-install.yml", "use: rocky.ks", "use: rocky9.ks")],
        "boot/rocky-install.yml:5:8: unattended.use: no asset `assets/kickstart/rocky9.ks`",
    );
}

#[test]
fn dangling_subnet() {
    check(
        &[("sites/lab/bastion.yml", "subnet: oob", "subnet: ipmi")],
        "sites/lab/bastion.yml:17:13: interfaces[1].subnet: unknown subnet `ipmi` in site `lab`",
    );
}

#[test]
fn dangling_class_of_host() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "classes: [rack.a]",
            "classes: [rack.c]",
        )],
        "sites/lab/bastion.yml:3:11: classes[0]: unknown class `rack.c` (did you mean `rack.a` or `rack.b`?)",
    );
}

#[test]
fn dangling_class_parent() {
    check(
        &[("classes/rack/a.yml", "classes: [base]", "classes: [common]")],
        "classes/rack/a.yml:1:11: classes[0]: unknown class `common`",
    );
}

#[test]
fn dangling_block_dep() {
    check(
        &[(
            "workflows/k8s-worker.yml",
            "block_deps: [storage]",
            "block_deps: [ceph]",
        )],
        "workflows/k8s-worker.yml:9:16: policy.block_deps[0]: unknown workflow `ceph`",
    );
}

#[test]
fn duplicate_id() {
    check(
        &[(
            "os/alpine-copy.yml",
            "",
            "id: rocky-9\nos_family: rhel\nmajor_version: \"9\"\nboot:\n  kernel: k\n  initrd: [i]\n",
        )],
        "os/rocky-9.yml:1:5: id: duplicate os `rocky-9` (first defined at os/alpine-copy.yml:1:5)",
    );
}

#[test]
fn duplicate_mac() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "mac: \"52:54:00:00:01:31\"",
            "mac: \"52:54:00:00:01:01\"",
        )],
        "sites/lab/k8s.yml:12:10: interfaces[0].mac: duplicate MAC 52:54:00:00:01:01 (first defined at sites/lab/bastion.yml:10:10)",
    );
}

#[test]
fn duplicate_ip() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "ipv4: 10.99.0.31",
            "ipv4: 10.99.0.11",
        )],
        "sites/lab/k8s.yml:14:11: interfaces[0].ipv4: duplicate IPv4 address 10.99.0.11 (first defined at sites/lab/bastion.yml:12:11)",
    );
}

#[test]
fn ip_outside_subnet() {
    check(
        &[(
            "sites/lab/bastion.yml",
            "ipv4: 10.99.0.31",
            "ipv4: 10.98.0.31",
        )],
        "sites/lab/bastion.yml:12:11: interfaces[0].ipv4: 10.98.0.31 is outside subnet `prov` (10.99.0.0/24)",
    );
}

#[test]
fn class_cycle() {
    check(
        &[(
            "classes/base.yml",
            "metadata:\n  timezone",
            "classes: [rack.a]\nmetadata:\n  timezone",
        )],
        "classes/rack/a.yml:1:11: classes[0]: class cycle: base → rack.a → base",
    );
}

#[test]
fn template_error_cloud_config() {
    check(
        &[(
            "assets/cloud-config/ubuntu.yml",
            "timezone: {{ md.timezone }}",
            "timezone: {{ md.time_zone }}",
        )],
        "assets/cloud-config/ubuntu.yml:8:16: undefined value: `md.time_zone` is undefined (did you mean `md.timezone`?) (for host `bastion-01`)",
    );
}

#[test]
fn template_error_ignition_snippet() {
    check(
        &[(
            "assets/ignition/snippets/ssh-keys.json",
            "{{ md.ssh_keys | tojson }}",
            "{{ md.ssh_key | tojson }}",
        )],
        "assets/ignition/snippets/ssh-keys.json:1:17: undefined value: tojson was given an undefined value (for host `k8s-01` and 2 more)",
    );
}

#[test]
fn template_error_kickstart() {
    check(
        &[(
            "assets/kickstart/rocky.ks",
            "--hostname={{ host.name }}",
            "--hostname={{ host.fqdn }}",
        )],
        "assets/kickstart/rocky.ks:6:208: undefined value: `host.fqdn` is undefined (for host `storage-01` and 1 more)",
    );
}

#[test]
fn template_error_untyped() {
    check(
        &[(
            "assets/untyped/burnin.sh",
            "{{ md.burnin_minutes }} minutes",
            "{{ md.burnin_minutes + }} minutes",
        )],
        "assets/untyped/burnin.sh:2:66: syntax error: unexpected end of variable block",
    );
}

#[test]
fn template_error_in_os_cmdline() {
    check(
        &[(
            "os/rocky-9.yml",
            "ip: \"{{ interface.identifier }}:dhcp\"",
            "ip: \"{{ interface.nic }}:dhcp\"",
        )],
        "os/rocky-9.yml:13:9: cmdline[2].ip: undefined value: `interface.nic` is undefined (did you mean `interface.bmc` or `interface.mac`?) (for host `storage-01` and 1 more)",
    );
}

#[test]
fn malformed_cloud_config() {
    check(
        &[("assets/cloud-config/ubuntu.yml", "#cloud-config\n", "")],
        "assets/cloud-config/ubuntu.yml:1:1: rendered cloud-config is malformed at its line 1: a cloud-config must start with the line `#cloud-config` (for host `bastion-01`)",
    );
}

#[test]
fn malformed_ignition() {
    check(
        &[(
            "assets/ignition/flatcar.ign",
            "\"ignition\": { \"version\": \"3.4.0\" },",
            "\"ignition\": {},",
        )],
        "assets/ignition/flatcar.ign:1:1: rendered ignition is malformed at its line 1: ignition config has no `ignition.version` string (for host `k8s-01` and 2 more)",
    );
}

#[test]
fn malformed_kickstart() {
    check(
        &[(
            "assets/kickstart/rocky.ks",
            "keyboard us\n",
            "keyboard us\nkeybaord us\n",
        )],
        "assets/kickstart/rocky.ks:5:1: rendered kickstart is malformed at its line 5: unknown kickstart command `keybaord` (for host `storage-01` and 1 more)",
    );
}

#[test]
fn min_standing_too_high() {
    check(
        &[(
            "workflows/storage.yml",
            "min_standing: 1",
            "min_standing: 5",
        )],
        "workflows/storage.yml:8:17: deps.min_standing: min_standing 5 is more than the workflow's 2 host(s)",
    );
}

#[test]
fn empty_site() {
    check(
        &[(
            "sites/edge/env.yml",
            "",
            "id: edge\nagents:\n  - id: edge-agent\nsubnets:\n  - id: prov\n    cidr: 10.98.0.0/24\n    dns: [10.98.0.1]\n",
        )],
        "sites/edge/env.yml:1:5: id: site `edge` has no hosts",
    );
}

#[test]
fn several_errors_in_several_files_at_once() {
    check(
        &[
            ("sites/lab/bastion.yml", "ipv4: 10.99.0.31", "ipv4: 10.98.0.31"),
            ("sites/lab/env.yml", "value: \"3600\"", "value: \"-1\""),
            ("sites/lab/env.yml", "\"22:00-06:00\"", "\"22:00-6:00\""),
            ("sites/lab/k8s.yml", "uuid: 4c4c4544-0042-3510-8052-b4c04f384d02", "uuid: 4c4c4544-0042-3510-8052"),
            ("classes/role/storage.yml", "workflow: storage", "name: storage\nworkflow: storage"),
        ],
        "classes/role/storage.yml:1:7: name: a class cannot set `name`
sites/lab/bastion.yml:12:11: interfaces[0].ipv4: 10.98.0.31 is outside subnet `prov` (10.99.0.0/24)
sites/lab/env.yml:28:16: subnets[0].dhcp_options[1].value: `-1` is not a valid uint32
sites/lab/env.yml:45:13: policy.windows[0]: invalid window `22:00-6:00`: expected \"HH:MM-HH:MM\"
sites/lab/k8s.yml:28:7: uuid: invalid UUID `4c4c4544-0042-3510-8052`: expected 32 hex digits like 4c4c4544-0042-3510-8052-b4c04f384d32",
    );
}

#[test]
fn duplicate_host_name_and_bmc_secrets() {
    check(
        &[
            ("sites/lab/bastion.yml", "name: bastion-01", "name: k8s-01"),
            ("sites/lab/bastion.yml", "password_env: LAB_REDFISH_PASSWORD", "password_env: LAB_REDFISH_PASSWORD\n      password_file: /etc/pw"),
        ],
        "sites/lab/bastion.yml:20:11: interfaces[1].bmc: set `password_env` or `password_file`, not both
sites/lab/k8s.yml:3:7: name: duplicate host `k8s-01` in site `lab` (first defined at sites/lab/bastion.yml:1:7)",
    );
}

/// `examples/lab` with the files under `from` moved to `to` (a path
/// prefix), validated.
fn moved(from: &str, to: &str) -> String {
    let mut files = SotFiles::new();
    for (path, text) in lab().iter() {
        match path.strip_prefix(from) {
            Some(rest) => files.insert(format!("{to}{rest}"), text.clone()),
            None => files.insert(path, text.clone()),
        }
    }
    match Sot::load(&files) {
        Ok(sot) => format!("(valid)\n{}", sot.warnings),
        Err(d) => d.to_string(),
    }
}

#[test]
fn a_mistyped_sites_directory_is_an_error_not_a_lost_host() {
    let got = moved("sites/lab/bastion.yml", "site/lab/bastion.yml");
    assert!(
        got.starts_with(
            "site/lab/bastion.yml:1:1: unknown directory `site/` (did you mean `sites/`?): this file is not read\n"
        ),
        "{got}"
    );
}

#[test]
fn a_nested_site_directory_is_an_error() {
    let got = moved("sites/lab/bastion.yml", "sites/lab/rack-c/bastion.yml");
    assert!(
        got.starts_with(
            "sites/lab/rack-c/bastion.yml:1:1: directories inside a site are not read: this file's hosts would be left out (move it to `sites/lab/`)\n"
        ),
        "{got}"
    );
}

#[test]
fn a_yaml_file_at_the_top_is_an_error() {
    let got = moved("sites/lab/bastion.yml", "bastion.yml");
    assert!(
        got.starts_with(
            "bastion.yml:1:1: a YAML file at the top of the SoT is not read: entities go in os/, boot/, workflows/, classes/ or sites/<site>/\n"
        ),
        "{got}"
    );
}

#[test]
fn a_mistyped_workflows_directory_is_named() {
    let got = moved("workflows/", "workflow/");
    assert!(
        got.starts_with(
            "workflow/bastion.yml:1:1: unknown directory `workflow/` (did you mean `workflows/`?): this file is not read\n"
        ),
        "{got}"
    );
}

#[test]
fn a_yaml_file_outside_the_layout_is_a_warning() {
    let got = moved("workflows/bastion.yml", "ci/pipeline.yml");
    // The workflow is gone, so its hosts fail; the file itself is named.
    assert!(
        got.contains(
            "ci/pipeline.yml:1:1: warning: not read: `ci/` is not part of the SoT layout (os/, boot/, workflows/, classes/, assets/, sites/)"
        ),
        "{got}"
    );
    let mut files = lab();
    files.insert("ci/pipeline.yml", "stages: [validate]\n");
    let sot = Sot::load(&files).expect("a stray CI file does not make the SoT invalid");
    assert_eq!(
        sot.warnings.to_string().trim(),
        "ci/pipeline.yml:1:1: warning: not read: `ci/` is not part of the SoT layout (os/, boot/, workflows/, classes/, assets/, sites/)"
    );
}

#[test]
fn a_sot_without_a_site_is_an_error() {
    let mut files = SotFiles::new();
    for (path, text) in lab().iter() {
        if !path.starts_with("sites/") {
            files.insert(path, text.clone());
        }
    }
    let got = Sot::load(&files).map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        got.trim(),
        "sites:1:1: the SoT has no site (no `sites/<site>/env.yml`): is this the SoT's top directory?"
    );
}

#[test]
fn a_sot_one_level_too_high_is_an_error() {
    // `examples/` instead of `examples/lab`: every file is one level down.
    let got = moved("", "lab/");
    assert!(
        got.ends_with(
            "sites:1:1: the SoT has no site (no `sites/<site>/env.yml`): is this the SoT's top directory? (the SoT seems to be in `lab/`)\n"
        ),
        "{got}"
    );
}

#[test]
fn a_mistyped_workflow_is_reported_once() {
    check(
        &[(
            "classes/role/storage.yml",
            "workflow: storage",
            "workflow: storag",
        )],
        "classes/role/storage.yml:1:11: workflow: unknown workflow `storag` (did you mean `storage`?)",
    );
}

#[test]
fn misspelled_references_get_a_did_you_mean() {
    check(
        &[(
            "workflows/storage.yml",
            "boot: rocky-install",
            "boot: rocky-instal",
        )],
        "workflows/storage.yml:5:11: workflow[0].boot: unknown boot `rocky-instal` (did you mean `rocky-install`?)",
    );
    check(
        &[(
            "boot/burnin.yml",
            "operating_system: alpine-3.20",
            "operating_system: Alpine-3.20",
        )],
        "boot/burnin.yml:2:19: operating_system: unknown operating system `Alpine-3.20` (did you mean `alpine-3.20`?)",
    );
    check(
        &[(
            "sites/lab/storage.yml",
            "classes: [rack.b, role.storage]\nnever",
            "classes: [rack.b, role.storag]\nnever",
        )],
        "sites/lab/storage.yml:18:1: missing field `workflow`\n\
         sites/lab/storage.yml:19:19: classes[1]: unknown class `role.storag` (did you mean `role.storage`?)",
    );
}

/// The original Vaquero's boots have a `name`: a title, accepted.
#[test]
fn a_boot_may_have_a_name() {
    assert_eq!(
        broken(&[(
            "boot/burnin.yml",
            "id: burnin\n",
            "id: burnin\nname: Burn-in with stress-ng\n"
        )]),
        "(valid)"
    );
}

#[test]
fn a_bad_cidr_says_which_part_is_wrong() {
    check(
        &[(
            "sites/lab/env.yml",
            "cidr: 10.99.0.0/24",
            "cidr: 10.99.0.0/33",
        )],
        "sites/lab/env.yml:14:11: subnets[0].cidr: `10.99.0.0/33`: the prefix length must be 0 to 32, not `33`",
    );
    check(
        &[(
            "sites/lab/env.yml",
            "cidr: 10.99.0.0/24",
            "cidr: 10.99.0.256/24",
        )],
        "sites/lab/env.yml:14:11: subnets[0].cidr: `10.99.0.256/24`: `10.99.0.256` is not an IPv4 address",
    );
    check(
        &[("sites/lab/env.yml", "cidr: 10.99.0.0/24", "cidr: 10.99.0.0")],
        "sites/lab/env.yml:14:11: subnets[0].cidr: `10.99.0.0` is not a CIDR: write the network and its prefix length, e.g. `10.0.0.0/24`",
    );
}

#[test]
fn an_undefined_template_variable_is_named_with_the_closest_key() {
    check(
        &[(
            "assets/kickstart/rocky.ks",
            "timezone {{ md.timezone }}",
            "timezone {{ md.timezon }}",
        )],
        "assets/kickstart/rocky.ks:5:13: undefined value: `md.timezon` is undefined (did you mean `md.timezone`?) (for host `storage-01` and 1 more)",
    );
}

#[test]
fn a_go_template_gets_its_jinja_form() {
    check(
        &[(
            "assets/kickstart/rocky.ks",
            "(rack {{ md.rack }})",
            "(rack {{.md.rack}})",
        )],
        "assets/kickstart/rocky.ks:1:45: `{{.md.rack}}` is Go template syntax; templates are Jinja (minijinja): write `{{ md.rack }}`",
    );
    check(
        &[(
            "os/rocky-9.yml",
            "kernel: \"{{ urls.assets }}",
            "kernel: \"{{- .urls.assets -}}",
        )],
        "os/rocky-9.yml:7:11: boot.kernel: `{{- .urls.assets -}}` is Go template syntax; templates are Jinja (minijinja): write `{{ urls.assets }}`",
    );
}

/// A SoT written in the original format: an agent with `name` for `id`
/// and the asset server as `addr`/`port`/`scheme` with `save_path`, a boot
/// with a `name`, `workflow:`/`deps:`/`domain` spellings.
#[test]
fn an_original_format_agent_loads() {
    let original = "  - name: lab-agent-1
    dhcp_mode: server
    interfaces: [vq-lab0]
    asset_server:
      addr: 10.99.0.2
      port: 8080
      scheme: http
      save_path: /var/lib/vaquero/files
      cdn_addr: mirror.example
      cdn_scheme: https
";
    let modern = "  - id: lab-agent-1
    dhcp_mode: server
    interfaces: [vq-lab0]
    asset_server:
      url: http://10.99.0.2:8080
      base_dir: /var/lib/vaquero/files
";
    let mut files = lab();
    let env = files.get("sites/lab/env.yml").unwrap();
    assert!(env.contains(modern));
    let env = env.replacen(modern, original, 1);
    files.insert("sites/lab/env.yml", env);
    // With the original's other spellings the lab already uses (`workflow:`
    // and `deps:` in a workflow, `domain` in a subnet) and a boot `name`,
    // the whole SoT is in the original format.
    let boot = files.get("boot/burnin.yml").unwrap().replacen(
        "id: burnin\n",
        "id: burnin\nname: Burn-in\n",
        1,
    );
    files.insert("boot/burnin.yml", boot);
    for (file, spelling) in [
        ("workflows/storage.yml", "workflow:"),
        ("workflows/storage.yml", "deps:"),
        ("sites/lab/env.yml", "domain:"),
    ] {
        assert!(
            files.get(file).unwrap().contains(spelling),
            "{file}: {spelling}"
        );
    }
    let sot = Sot::load(&files).unwrap_or_else(|d| panic!("{d}"));
    sot.compile().unwrap_or_else(|d| panic!("{d}"));
    let a = &sot.sites["lab"].site.agents[0];
    assert_eq!(a.id, "lab-agent-1");
    let s = a.asset_server.as_ref().unwrap();
    assert_eq!(s.url.as_deref(), Some("http://10.99.0.2:8080"));
    assert_eq!(s.base_dir.as_deref(), Some("/var/lib/vaquero/files"));
    assert_eq!(s.cdn.as_deref(), Some("https://mirror.example"));
}

#[test]
fn original_format_keys_without_a_mapping_name_the_replacement() {
    check(
        &[(
            "sites/lab/env.yml",
            "    dhcp_mode: server\n",
            "    dhcp_mode: server\n    ssh_container: vaquero/ssh\n    ipmi_container: vaquero/ipmi\n",
        )],
        "sites/lab/env.yml:6:20: agents[0].ssh_container: the original format's SSH container is not supported: Vaquero runs SSH itself (jobs of `type: ssh`, and `bmc: {type: ssh}` for power); remove the key
sites/lab/env.yml:7:21: agents[0].ipmi_container: the original format's IPMI container is not supported: Vaquero speaks IPMI itself (`bmc: {type: ipmi}` on the host's BMC interface); remove the key",
    );
    check(
        &[(
            "sites/lab/env.yml",
            "      url: http://10.99.0.2:8080\n",
            "      url: http://10.99.0.2:8080\n      port: 8080\n",
        )],
        "sites/lab/env.yml:8:10: agents[0].asset_server: set `url`, or the original `addr`/`port`/`scheme`, not both",
    );
    check(
        &[(
            "sites/lab/env.yml",
            "      url: http://10.99.0.2:8080\n",
            "      port: 8080\n",
        )],
        "sites/lab/env.yml:8:11: agents[0].asset_server: `port` or `scheme` without `addr`: give `addr` too, or write the URL",
    );
}

/// An https:// asset server URL: refused, since the boot service would
/// serve plain HTTP on that port.
#[test]
fn an_https_asset_server_url_is_refused() {
    check(
        &[(
            "sites/lab/env.yml",
            "      url: http://10.99.0.2:8080\n",
            "      url: https://10.99.0.2\n",
        )],
        "sites/lab/env.yml:8:12: agents[0].asset_server.url: https:// is refused: the boot service has no TLS, and would serve plain HTTP on this URL's port; write http://",
    );
}

/// Boot service limits that would refuse everything, or links let out
/// into relative or root directories: each at its line.
#[test]
fn boot_service_limits_and_link_directories_are_checked() {
    check(
        &[
            (
                "sites/lab/env.yml",
                "      base_dir: /var/lib/vaquero/files\n",
                "      base_dir: /var/lib/vaquero/files\n      max_client_connections: 0\n      allow_links_to: [/srv/kernels, boot]\n",
            ),
            (
                "sites/lab/env.yml",
                "      base_dir: /var/lib/vaquero/tftp\n",
                "      base_dir: /var/lib/vaquero/tftp\n      allow_links_to: [/]\n",
            ),
        ],
        "sites/lab/env.yml:10:31: agents[0].asset_server.max_client_connections: 0 would refuse every connection: give at least 1, or leave it out for the default (64)
sites/lab/env.yml:11:38: agents[0].asset_server.allow_links_to[1]: `boot` must be an absolute directory other than `/`, without `..`
sites/lab/env.yml:14:24: agents[0].tftp_server.allow_links_to[0]: `/` must be an absolute directory other than `/`, without `..`",
    );
}

/// A host document with a structural error is still cross-checked: its
/// address, MAC and name against the others, in the same run.
#[test]
fn a_structurally_broken_host_is_still_cross_checked() {
    check(
        &[
            ("sites/lab/bastion.yml", "workflow: bastion\n", "workflw: bastion\n"),
            ("sites/lab/bastion.yml", "ipv4: 10.99.0.31", "ipv4: 10.98.0.31"),
        ],
        "sites/lab/bastion.yml:2:1: workflw: unknown field `workflw` (did you mean `workflow`?)
sites/lab/bastion.yml:12:11: interfaces[0].ipv4: 10.98.0.31 is outside subnet `prov` (10.99.0.0/24)",
    );
    check(
        &[
            ("sites/lab/bastion.yml", "workflow: bastion\n", ""),
            ("sites/lab/bastion.yml", "ipv4: 10.99.0.31", "ipv4: 10.99.0.11"),
        ],
        "sites/lab/bastion.yml:1:1: missing field `workflow`
sites/lab/k8s.yml:14:11: interfaces[0].ipv4: duplicate IPv4 address 10.99.0.11 (first defined at sites/lab/bastion.yml:11:11)",
    );
    // No "needs a physical interface" for a misspelled `interfaces`.
    check(
        &[("sites/lab/bastion.yml", "interfaces:", "interfacs:")],
        "sites/lab/bastion.yml:8:1: interfacs: unknown field `interfacs` (did you mean `interfaces`?)",
    );
}

#[test]
fn ipmi_retransmission_fields() {
    check(
        &[
            ("sites/lab/k8s.yml", "      port: 623\n", "      port: 623\n      tries: 0\n      retransmit: 2m\n"),
            ("sites/lab/bastion.yml", "password_env: LAB_REDFISH_PASSWORD", "password_env: LAB_REDFISH_PASSWORD\n      tries: 3"),
        ],
        "sites/lab/bastion.yml:20:11: interfaces[1].bmc: `retransmit` and `tries` are for an ipmi BMC (other BMCs speak TCP)
sites/lab/k8s.yml:23:14: interfaces[1].bmc.tries: `tries` must be 1 to 10
sites/lab/k8s.yml:24:19: interfaces[1].bmc.retransmit: `retransmit` must be 1s to 30s",
    );
}
