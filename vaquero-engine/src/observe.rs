//! Observations: what the site services saw of a host — one type for
//! DHCP, TFTP, the HTTP boot service and checkpoints, tagged with the host,
//! its boot attempt (when the service knows it) and the time.
//!
//! Observations are what an agent buffers and sends to the server, what a
//! host's boot timeline is made of, and — through
//! [`Observation::event`], the one place that does it — what the engine
//! sees as [`Event`]s.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};

/// Told once an observation is durable: spooled on an agent's disk, or
/// committed by the engine. A checkpoint's installer waits on it, and is
/// asked to retry when it is dropped untold.
pub struct Kept(Box<dyn FnOnce() + Send>);

impl Kept {
    /// Calls `told` once the observation is durable.
    pub fn new(told: impl FnOnce() + Send + 'static) -> Self {
        Kept(Box::new(told))
    }

    /// The observation is durable.
    pub fn done(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

/// An observation on its way to whoever keeps it, with who waits for it
/// to be durable, if anyone.
pub type Observed = (Observation, Option<Kept>);

/// What kind of request a site service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    /// A DHCP request (DISCOVER, REQUEST) of one of the host's NICs.
    Dhcp,
    /// A TFTP read request (the iPXE binary).
    Tftp,
    /// `boot.ipxe`, the chain script.
    Chain,
    /// The per-host iPXE script.
    Script,
    /// A file under `/files` (kernel, initrd).
    File,
    /// The unattended config.
    Config,
    /// The installed OS called its checkpoint URL.
    Checkpoint,
    /// What the acting half did to the host (set the next boot to the
    /// network, power-cycle, a job) and how it went. Timeline only: a
    /// task's result reaches the engine as its own event.
    Action,
}

impl ObservationKind {
    /// A short name for logs, metrics and the timeline.
    pub fn name(self) -> &'static str {
        match self {
            ObservationKind::Dhcp => "dhcp",
            ObservationKind::Tftp => "tftp",
            ObservationKind::Chain => "chain",
            ObservationKind::Script => "script",
            ObservationKind::File => "file",
            ObservationKind::Config => "config",
            ObservationKind::Checkpoint => "checkpoint",
            ObservationKind::Action => "action",
        }
    }
}

/// One thing a site service saw of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Observation {
    /// When it was seen.
    pub at: Timestamp,
    /// The host (the services map MACs, UUIDs, addresses and tokens to
    /// hosts through the model).
    pub host: String,
    /// The boot attempt it belongs to, when the service knows it (DHCP
    /// and TFTP do not).
    pub attempt: Option<u64>,
    /// What it was.
    pub kind: ObservationKind,
    /// Whether the request was answered with success: a refused
    /// checkpoint or a missing file is recorded in the timeline, and is
    /// no sign of progress to the engine.
    pub ok: bool,
    /// What was served or why not (the boot id, the file, the DHCP
    /// message, what the installer sent with its checkpoint).
    #[serde(default)]
    pub detail: String,
}

impl Observation {
    /// The engine event this observation is, if any: DHCP and TFTP
    /// requests say a host is netbooting; a script, a config and a
    /// checkpoint of a known attempt move its boot along. Chain scripts,
    /// files and failed requests are only part of the timeline.
    pub fn event(&self) -> Option<Event> {
        if !self.ok {
            return None;
        }
        let kind = match (self.kind, self.attempt) {
            (ObservationKind::Dhcp, _) => EventKind::Dhcp,
            (ObservationKind::Tftp, _) => EventKind::Tftp,
            (ObservationKind::Script, Some(attempt)) => EventKind::Script { attempt },
            (ObservationKind::Config, Some(attempt)) => EventKind::Config { attempt },
            (ObservationKind::Checkpoint, Some(attempt)) => EventKind::Checkpoint { attempt },
            _ => return None,
        };
        Some(Event {
            host: self.host.clone(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(kind: ObservationKind, attempt: Option<u64>, ok: bool) -> Observation {
        Observation {
            at: Timestamp::UNIX_EPOCH,
            host: "h".into(),
            attempt,
            kind,
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn observations_become_events_in_one_place() {
        use ObservationKind as K;
        let ev = |kind| {
            Some(Event {
                host: "h".into(),
                kind,
            })
        };
        assert_eq!(obs(K::Dhcp, None, true).event(), ev(EventKind::Dhcp));
        assert_eq!(obs(K::Tftp, None, true).event(), ev(EventKind::Tftp));
        assert_eq!(
            obs(K::Script, Some(3), true).event(),
            ev(EventKind::Script { attempt: 3 })
        );
        assert_eq!(
            obs(K::Config, Some(3), true).event(),
            ev(EventKind::Config { attempt: 3 })
        );
        assert_eq!(
            obs(K::Checkpoint, Some(2), true).event(),
            ev(EventKind::Checkpoint { attempt: 2 })
        );
        // Refused, or of no attempt, or only for the timeline: no event.
        assert_eq!(obs(K::Checkpoint, Some(2), false).event(), None);
        assert_eq!(obs(K::Script, None, true).event(), None);
        assert_eq!(obs(K::File, Some(1), true).event(), None);
        assert_eq!(obs(K::Chain, None, true).event(), None);
    }

    #[test]
    fn observations_round_trip_as_json() {
        let o = obs(ObservationKind::Checkpoint, Some(1), true);
        let text = serde_json::to_string(&o).unwrap_or_default();
        assert!(text.contains("\"kind\":\"checkpoint\""), "{text}");
        let back: Observation = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, o);
    }
}
