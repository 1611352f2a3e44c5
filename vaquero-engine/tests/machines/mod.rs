//! Machines behind fake BMCs (vaquero-lom's `FakeDriver`) that "boot":
//! each power cycle onto the network makes the machine send the site link
//! the observations the boot services would. Shared by tests/runner.rs
//! and benches/growth.rs.

use std::collections::HashMap;

use jiff::Timestamp;
use vaquero_engine::observe::Observed;
use vaquero_engine::{EngineBootState, Observation, ObservationKind};
use vaquero_ipxe::{BootState, Current};
use vaquero_lom::FakeDriver;

/// Every machine that booted from the network since the last call (what
/// `seen` remembers) sends `boot`'s observations, in order, for its
/// current attempt.
pub fn boot(
    fakes: &HashMap<String, FakeDriver>,
    state: &EngineBootState,
    observer: &tokio::sync::mpsc::UnboundedSender<Observed>,
    seen: &mut HashMap<String, u64>,
    boot: &[(ObservationKind, &str)],
) {
    for (name, f) in fakes {
        // Boots, not power calls: a call is recorded before its boot
        // happens, and a machine seen between the two would never boot.
        let boots = f.boots();
        let before = seen.insert(name.clone(), boots).unwrap_or(0);
        if boots > before
            && matches!(f.booted_from(), Some(Some(o)) if o.device == vaquero_lom::BootDevice::Pxe)
            && let Current::Stage { attempt, .. } = state.current(name)
        {
            for (kind, detail) in boot {
                let o = Observation {
                    at: Timestamp::now(),
                    host: name.clone(),
                    attempt: Some(attempt),
                    kind: *kind,
                    ok: true,
                    detail: (*detail).to_owned(),
                };
                let _ = observer.send((o, None));
            }
        }
    }
}
