//! The wrapper every driver goes through: one operation at a time per BMC,
//! a global cap on operations in flight, a timeout on every attempt,
//! bounded retries with backoff for transient errors, metrics and tracing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::driver::{BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState};

/// Limits for [`Lom`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LomConfig {
    /// Operations in flight across every BMC (a site-wide cap, so a
    /// rollout does not open hundreds of BMC sessions at once).
    pub max_concurrent: usize,
    /// Attempts per operation, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled on each further retry.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// The longest one attempt may take.
    pub timeout: Duration,
}

impl Default for LomConfig {
    /// 32 operations in flight, 3 attempts, 2 s backoff up to 30 s, 60 s
    /// per attempt (Redfish resets with a task can take that long).
    fn default() -> Self {
        LomConfig {
            max_concurrent: 32,
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
        }
    }
}

impl LomConfig {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff_for(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

#[derive(Debug)]
struct Shared {
    config: LomConfig,
    global: Semaphore,
    per_bmc: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// The shared limits of every BMC operation of a process. Cheap to clone;
/// clones share the limits.
///
/// ```
/// use std::sync::Arc;
/// use vaquero_lom::{FakeDriver, Lom, LomConfig, PowerDriver};
///
/// let lom = Lom::new(LomConfig::default());
/// let machine = lom.manage(Arc::new(FakeDriver::new("pdu-1:4")));
/// assert_eq!(machine.target(), "pdu-1:4");
/// ```
#[derive(Debug, Clone)]
pub struct Lom {
    shared: Arc<Shared>,
}

impl Lom {
    /// Limits from `config`.
    pub fn new(config: LomConfig) -> Self {
        let permits = config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Lom {
            shared: Arc::new(Shared {
                config,
                global: Semaphore::new(permits),
                per_bmc: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &LomConfig {
        &self.shared.config
    }

    /// `driver`, with every operation going through these limits.
    pub fn manage(&self, driver: Arc<dyn PowerDriver>) -> Managed {
        Managed {
            lom: self.clone(),
            target: driver.target(),
            driver,
        }
    }

    fn bmc_lock(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .shared
            .per_bmc
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(target).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(target.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

/// A driver behind [`Lom`]'s limits. It is itself a [`PowerDriver`], so
/// code that drives power takes `&dyn PowerDriver` and works with a bare
/// driver in a unit test and a managed one in production.
pub struct Managed {
    lom: Lom,
    target: String,
    driver: Arc<dyn PowerDriver>,
}

impl std::fmt::Debug for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed")
            .field("kind", &self.driver.kind())
            .field("target", &self.target)
            .finish()
    }
}

impl Managed {
    /// Run `attempt` under the limits: the BMC's own lock first (so no
    /// global permit is held while waiting for a busy BMC), then a global
    /// permit per attempt, released during backoff.
    async fn run<T, F, Fut>(&self, op: &'static str, attempt: F) -> Result<T, LomError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LomError>>,
    {
        let kind = self.driver.kind();
        let span = tracing::info_span!("lom", kind, target = %self.target, op);
        async move {
            let config = &self.lom.shared.config;
            let bmc = self.lom.bmc_lock(&self.target);
            let _serial = bmc.lock().await;
            let started = Instant::now();
            let attempts = config.attempts.max(1);
            let mut n = 0;
            let result = loop {
                n += 1;
                let outcome = {
                    let _permit = self
                        .lom
                        .shared
                        .global
                        .acquire()
                        .await
                        .map_err(|_| LomError::Busy("shutting down".into()))?;
                    metrics::gauge!("vaquero_lom_operations_in_flight").increment(1.0);
                    let r = match tokio::time::timeout(config.timeout, attempt()).await {
                        Ok(r) => r,
                        Err(_) => Err(LomError::Timeout(config.timeout)),
                    };
                    metrics::gauge!("vaquero_lom_operations_in_flight").decrement(1.0);
                    r
                };
                match outcome {
                    Err(e) if e.is_transient() && n < attempts => {
                        let wait = config.backoff_for(n);
                        tracing::warn!(attempt = n, error = %e, ?wait, "BMC operation failed; retrying");
                        metrics::counter!("vaquero_lom_retries_total", "kind" => kind, "op" => op)
                            .increment(1);
                        tokio::time::sleep(wait).await;
                    }
                    other => break other,
                }
            };
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            metrics::counter!("vaquero_lom_operations_total", "kind" => kind, "op" => op, "outcome" => label)
                .increment(1);
            metrics::histogram!("vaquero_lom_operation_duration_seconds", "kind" => kind, "op" => op)
                .record(started.elapsed().as_secs_f64());
            match &result {
                Ok(_) => tracing::debug!(attempts = n, elapsed = ?started.elapsed(), "done"),
                // The caller reports the error (once): here it is a detail.
                Err(e) => tracing::debug!(attempts = n, error = %e, "BMC operation failed"),
            }
            result
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
impl PowerDriver for Managed {
    fn kind(&self) -> &'static str {
        self.driver.kind()
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        self.run("status", || self.driver.power_state()).await
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        self.run(action.name(), || self.driver.power(action)).await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        self.run("boot", || self.driver.set_boot_device(boot)).await
    }

    async fn inventory(&self) -> Result<Inventory, LomError> {
        self.run("inventory", || self.driver.inventory()).await
    }
}
