//! Any bytes, placed as one file of an otherwise valid SoT, must load into a
//! model or into diagnostics — never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaquero_model::{Sot, SotFiles};

const PATHS: [&str; 8] = [
    "os/os.yml",
    "boot/boot.yml",
    "workflows/wf.yml",
    "classes/base.yml",
    "sites/lab/env.yml",
    "sites/lab/hosts.yml",
    "assets/cloud-config/user-data.yml",
    "assets/cloud-config/snippets/part.yml",
];

fn base() -> SotFiles {
    let mut f = SotFiles::new();
    f.insert("os/os.yml", "id: os\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/linux\"\n  initrd: [\"{{ urls.assets }}/initrd\"]\ncmdline:\n  - console: ttyS0\n");
    f.insert(
        "boot/boot.yml",
        "id: boot\noperating_system: os\nunattended:\n  type: cloud-config\n  use: user-data.yml\n",
    );
    f.insert(
        "workflows/wf.yml",
        "id: wf\nstages:\n  - boot: boot\npolicy:\n  max_concurrent: \"50%\"\n",
    );
    f.insert("classes/base.yml", "metadata:\n  a: 1\n");
    f.insert("sites/lab/env.yml", "id: lab\nagents:\n  - id: a\n    asset_server: {url: \"http://10.0.0.2:8080\"}\nsubnets:\n  - id: s\n    cidr: 10.0.0.0/24\n    dns: [10.0.0.1]\n");
    f.insert("sites/lab/hosts.yml", "name: h\nworkflow: wf\nclasses: [base]\ninterfaces:\n  - {type: physical, mac: \"52:54:00:00:00:01\", subnet: s, ipv4: 10.0.0.11}\n");
    f.insert(
        "assets/cloud-config/user-data.yml",
        "#cloud-config\nhostname: {{ host.name }}\n{% include \"snippets/part.yml\" %}\n",
    );
    f.insert("assets/cloud-config/snippets/part.yml", "a: {{ md.a }}\n");
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut files = base();
    let text = String::from_utf8_lossy(rest);
    files.insert(PATHS[which as usize % PATHS.len()], text.as_ref());
    if let Ok(sot) = Sot::load(&files) {
        let _ = sot.compile();
    }
});
