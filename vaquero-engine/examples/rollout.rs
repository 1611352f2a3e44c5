//! Rolls the repository's lab (`examples/lab`) out against a perfect
//! fleet — every BMC and job answers ok, every machine netboots and
//! reports its checkpoint a minute later — and prints each action:
//!
//! ```text
//! cargo run -p vaquero-engine --example rollout
//! ```
//!
//! The engine is pure: the loop below is the whole world. A real site
//! commits each step to a store before carrying out its actions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vaquero_engine::jiff::Timestamp;
use vaquero_engine::{ActionKind, Engine, EngineConfig, Event, EventKind, Outcome, SiteState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    let sot = vaquero_model::Sot::load_dir(&dir).map_err(|d| d.to_string())?;
    let mut data = sot
        .compile()?
        .remove("lab")
        .ok_or("no site lab")?
        .into_data();
    // Reboot now, without waiting for a window or an approval.
    data.site.policy.force_provision = true;
    data.site.policy.auto_apply = true;
    data.site.policy.windows.clear();
    let model = Arc::new(vaquero_model::SiteModel::from_data(data)?);

    let engine = Engine::new(model.clone(), EngineConfig::default())?;
    let mut now: Timestamp = "2026-11-26T12:00:00Z".parse()?;
    let mut state = SiteState::new("lab");
    let plan = vaquero_engine::plan(None, &model);
    println!(
        "plan: {} hosts rebooted in {} batches",
        plan.summary.rebooted, plan.batches
    );
    state.apply(&engine.start(&state, &plan, now)?);

    // What the fleet will say, by the minute it says it.
    let mut world: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    let mut minute = 0;
    while state.hosts.values().any(|h| !h.phase.settled()) && minute < 24 * 60 {
        let events = world.remove(&minute).unwrap_or_default();
        let step = engine.step(&state, &events, now);
        state.apply(&step);
        for a in &step.actions {
            println!("{now} {} {}", a.host, a.kind.name());
            let answer = |kind| Event {
                host: a.host.clone(),
                kind,
            };
            let next = world.entry(minute + 1).or_default();
            match &a.kind {
                ActionKind::Notice(_) => {}
                ActionKind::PowerCycle => {
                    next.push(answer(EventKind::Result {
                        seq: a.seq,
                        outcome: Outcome::ok(),
                    }));
                    // The machine netboots what the boot service serves
                    // for this attempt, installs, and checks in.
                    let attempt = a.attempt;
                    let boot = world.entry(minute + 2).or_default();
                    boot.push(answer(EventKind::Dhcp));
                    boot.push(answer(EventKind::Script { attempt }));
                    boot.push(answer(EventKind::Config { attempt }));
                    world
                        .entry(minute + 3)
                        .or_default()
                        .push(answer(EventKind::Checkpoint { attempt }));
                }
                _ => next.push(answer(EventKind::Result {
                    seq: a.seq,
                    outcome: Outcome::ok(),
                })),
            }
        }
        minute += 1;
        now = now.checked_add(Duration::from_secs(60))?;
    }
    for h in state.hosts.values() {
        println!("{}: {}", h.name, h.phase);
    }
    Ok(())
}
