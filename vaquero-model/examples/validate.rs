//! Validates a SoT directory and says what it holds:
//!
//! ```text
//! cargo run -p vaquero-model --example validate -- examples/lab
//! ```
//!
//! A broken SoT prints every problem at `file:line:col` and exits with 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/lab".into());
    let sot = match vaquero_model::Sot::load_dir(std::path::Path::new(&dir)) {
        Ok(sot) => sot,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return ExitCode::FAILURE;
        }
    };
    let sites = match sot.compile() {
        Ok(sites) => sites,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for (id, model) in &sites {
        println!(
            "site {id}: {} hosts, {} workflows, version {}",
            model.hosts().len(),
            model.data().workflows.len(),
            &model.version()[..12]
        );
        for h in model.hosts() {
            println!(
                "  {} ({}): {}",
                h.name,
                h.workflow,
                model.stages(h).join(" → ")
            );
        }
    }
    ExitCode::SUCCESS
}
