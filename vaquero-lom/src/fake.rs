//! An in-memory driver with scriptable failures, for tests of whatever
//! drives power (the engine's simulation, the wrapper's retries).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::driver::{BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState};

/// One call a [`FakeDriver`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `power_state`.
    Status,
    /// `power(action)`.
    Power(PowerAction),
    /// `set_boot_device(boot)`.
    SetBoot(BootOverride),
    /// `inventory`.
    Inventory,
}

#[derive(Debug)]
struct FakeState {
    power: PowerState,
    boot: Option<BootOverride>,
    calls: Vec<FakeCall>,
    failures: VecDeque<LomError>,
    delay: Duration,
    inventory: Inventory,
    booted_from: Option<Option<BootOverride>>,
    boots: u64,
}

/// A machine that exists only in memory. Clones share the machine, so a
/// test keeps one clone to look at while the code under test drives
/// another.
///
/// ```
/// # tokio_test_block(async {
/// use vaquero_lom::{FakeDriver, LomError, PowerAction, PowerDriver, PowerState};
///
/// let fake = FakeDriver::new("rack1-pdu");
/// fake.fail_next(LomError::Busy("out of sessions".into()));
/// assert!(fake.power(PowerAction::On).await.is_err());
/// fake.power(PowerAction::On).await.unwrap();
/// assert_eq!(fake.power_state().await.unwrap(), PowerState::On);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FakeDriver {
    target: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeDriver {
    /// A machine that is off, with no boot override.
    pub fn new(target: impl Into<String>) -> Self {
        FakeDriver {
            target: target.into(),
            state: Arc::new(Mutex::new(FakeState {
                power: PowerState::Off,
                boot: None,
                calls: Vec::new(),
                failures: VecDeque::new(),
                delay: Duration::ZERO,
                inventory: Inventory::default(),
                booted_from: None,
                boots: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panic while holding this lock is a bug in a test; the state is
        // still usable for the assertions that follow.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next call (of any kind) fails with `error`; queued errors are
    /// used in order, one per call.
    pub fn fail_next(&self, error: LomError) {
        self.lock().failures.push_back(error);
    }

    /// Every call takes this long (on the tokio clock) before it answers.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Set the power state directly, as if someone pressed the button.
    pub fn set_power(&self, state: PowerState) {
        self.lock().power = state;
    }

    /// What `inventory` answers.
    pub fn set_inventory(&self, inventory: Inventory) {
        self.lock().inventory = inventory;
    }

    /// The current power state.
    pub fn power_now(&self) -> PowerState {
        self.lock().power
    }

    /// The current boot override.
    pub fn boot_now(&self) -> Option<BootOverride> {
        self.lock().boot
    }

    /// How the machine last booted: `None` if it never booted since this
    /// fake was made, `Some(None)` if it booted with no override (its own
    /// boot order), `Some(Some(o))` if it booted with override `o`.
    pub fn booted_from(&self) -> Option<Option<BootOverride>> {
        self.lock().booted_from
    }

    /// How many times the machine booted (a cycle, a reset, on from off),
    /// counted when [`booted_from`](Self::booted_from) changes: once this
    /// count has moved, `booted_from` tells that boot (or a later one).
    /// A power call is in [`calls`](Self::calls) before its boot
    /// happens, so counting calls would race the boot.
    pub fn boots(&self) -> u64 {
        self.lock().boots
    }

    /// Every call received so far, failed ones included.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    async fn call(&self, call: FakeCall) -> Result<(), LomError> {
        let delay = {
            let mut s = self.lock();
            s.calls.push(call);
            s.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match self.lock().failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PowerDriver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        self.call(FakeCall::Status).await?;
        Ok(self.lock().power)
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        self.call(FakeCall::Power(action)).await?;
        let mut s = self.lock();
        let boots = match action {
            PowerAction::On => s.power != PowerState::On,
            PowerAction::Cycle | PowerAction::Reset => true,
            PowerAction::Off | PowerAction::SoftOff => false,
        };
        s.power = match action {
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
            PowerAction::Off | PowerAction::SoftOff => PowerState::Off,
        };
        if boots {
            // The machine boots: a one-time override is used up.
            s.booted_from = Some(s.boot);
            s.boots += 1;
            if s.boot.is_some_and(|b| !b.persistent) {
                s.boot = None;
            }
        }
        Ok(())
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        self.call(FakeCall::SetBoot(boot)).await?;
        self.lock().boot = Some(boot);
        Ok(())
    }

    async fn inventory(&self) -> Result<Inventory, LomError> {
        self.call(FakeCall::Inventory).await?;
        Ok(self.lock().inventory.clone())
    }
}
