//! `/metrics` of a live `vaquero standalone` (the lab SoT, DHCP off, on
//! loopback) against `docs/metrics.md`: every metric scraped is
//! documented with its type and help text, and every metric documented
//! as *always* present for standalone is scraped.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A documented metric: its type, where it is emitted, when present, and
/// its meaning.
struct Doc {
    kind: String,
    emitted_by: String,
    present: String,
    meaning: String,
}

fn documented() -> BTreeMap<String, Doc> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"))
            .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `vaquero_")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 6, "a row of docs/metrics.md: {line}");
        out.insert(
            cells[0].trim_matches('`').to_owned(),
            Doc {
                kind: cells[1].to_owned(),
                emitted_by: cells[3].to_owned(),
                present: cells[4].to_owned(),
                meaning: cells[5].to_owned(),
            },
        );
    }
    assert!(
        out.len() > 40,
        "docs/metrics.md lists {} metrics",
        out.len()
    );
    out
}

use vaquero_test_support::free_tcp_port as free_port;

/// Kills the child when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_scrape_of_a_live_standalone_matches_docs_metrics_md() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = tmp.path().join("sot");
    let status = Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab"))
        .arg(&sot)
        .status()
        .unwrap();
    assert!(status.success());
    let env = sot.join("sites/lab/env.yml");
    let text = std::fs::read_to_string(&env)
        .unwrap()
        .replace(
            "dhcp_mode: server\n    interfaces: [vq-lab0]",
            "dhcp_mode: off",
        )
        .replace("/var/lib/vaquero/files", tmp.path().to_str().unwrap());
    std::fs::write(&env, text).unwrap();
    let port = free_port();
    let _child = Running(
        Command::new(env!("CARGO_BIN_EXE_vaquero"))
            .args(["standalone", "--sot"])
            .arg(&sot)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .args(["--api", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Once the engine has stepped, its gauges are there too.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5", &url])
            .output()
            .expect("curl (scripts/setup)");
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        if t.contains("vaquero_hosts{") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape with vaquero_hosts in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let docs = documented();
    let mut types = BTreeMap::new();
    let mut helps = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            helps.insert(name.to_owned(), help.to_owned());
        }
    }
    let mut problems = Vec::new();
    for (name, kind) in &types {
        match docs.get(name) {
            None => problems.push(format!(
                "{name} ({kind}) is scraped but not in docs/metrics.md"
            )),
            Some(d) => {
                if &d.kind != kind {
                    problems.push(format!(
                        "{name}: scraped as {kind}, documented as {}",
                        d.kind
                    ));
                }
                if helps.get(name) != Some(&d.meaning) {
                    problems.push(format!(
                        "{name}: help {:?} differs from the documented meaning {:?}",
                        helps.get(name),
                        d.meaning
                    ));
                }
            }
        }
    }
    for (name, d) in &docs {
        if d.present == "always" && d.emitted_by.contains("standalone") && !types.contains_key(name)
        {
            problems.push(format!(
                "{name} is documented as always present in standalone, but not scraped"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nscrape:\n{scrape}",
        problems.join("\n")
    );
    // What standalone's engine exports once it steps, seen.
    for name in [
        "vaquero_hosts",
        "vaquero_rollout_hosts",
        "vaquero_sot_refused",
    ] {
        assert!(types.contains_key(name), "{name} after a step");
    }
    assert!(
        scrape.contains("vaquero_hosts{site=\"lab\",phase=\"failed\"} 0"),
        "every phase, zeros included"
    );
    assert!(
        scrape.contains("vaquero_engine_step_duration_seconds_bucket{le=\"0.001\"}"),
        "a real histogram"
    );
}
