//! Operators' commands to a site's control loop ([`crate::control`]), the
//! handle that sends them ([`Commands`]) and why one was not carried out
//! ([`CommandFailure`]). Plain types: the API, the runner and programs that
//! embed the engine name them without the control loop.

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Approve the waiting rollout (`None`: whichever waits).
    Approve(Option<u64>),
    /// Reprovision exactly these hosts, without approval, under their
    /// workflows' policies.
    Reprovision {
        /// The hosts.
        hosts: Vec<String>,
        /// Skip the site's reboot windows.
        now: bool,
    },
    /// Start no new host; hosts in flight finish.
    Pause,
    /// Start hosts again.
    Resume,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandFailure {
    /// It names something the site does not have (a host).
    #[error("{0}")]
    NotFound(String),
    /// It does not fit the site's state (nothing waits for approval, a
    /// `never_provision` host).
    #[error("{0}")]
    Refused(String),
    /// The store failed; nothing was changed.
    #[error("store: {0}")]
    Store(String),
    /// The control loop is stopping.
    #[error("the control loop is stopping")]
    Stopping,
}

/// A command and where its answer goes.
pub type CommandMsg = (
    Command,
    tokio::sync::oneshot::Sender<Result<String, CommandFailure>>,
);

/// Sends operators' commands to a site's control loop, each answered by
/// the loop: the typed way in for the API and for programs that embed
/// the engine.
#[derive(Debug, Clone)]
pub struct Commands(tokio::sync::mpsc::Sender<CommandMsg>);

impl Commands {
    /// A handle, and the receiver the control loop reads its commands
    /// from (at most `capacity` wait).
    pub fn channel(capacity: usize) -> (Commands, tokio::sync::mpsc::Receiver<CommandMsg>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (Commands(tx), rx)
    }

    /// Carries out `cmd`: what was done, or why not
    /// ([`CommandFailure::Stopping`] when the loop is gone).
    pub async fn send(&self, cmd: Command) -> Result<String, CommandFailure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .send((cmd, tx))
            .await
            .map_err(|_| CommandFailure::Stopping)?;
        rx.await.map_err(|_| CommandFailure::Stopping)?
    }
}
