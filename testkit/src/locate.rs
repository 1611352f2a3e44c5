//! Finds a helper binary of `vaquero-testkit` for an integration test,
//! building it first. Included by the tests with `#[path]` (no dependency
//! on the testkit crate, which depends on theirs).

use std::path::PathBuf;
use std::process::Command;

/// The path of the testkit binary `bin`, built first in this test's own
/// target directory and profile: a no-op after `cargo test --workspace`,
/// which builds it; a lone test run gets it fresh, never stale.
pub fn testkit(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/<profile>/deps/<test>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a test binary under <target>/<profile>/deps");
    let target = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--locked", "-p", "vaquero-testkit"])
        .args(["--bin", bin, "--profile", profile, "--target-dir"])
        .arg(target)
        .status()
        .unwrap_or_else(|e| panic!("cargo build of {bin}: {e}"));
    assert!(status.success(), "cargo build of {bin} failed");
    profile_dir.join(bin)
}
