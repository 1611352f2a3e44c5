//! The wrapper every driver goes through: retries, timeouts, one
//! operation per BMC, the global cap (on tokio's paused clock).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use vaquero_lom::{
    BootDevice, BootOverride, FakeCall, FakeDriver, Lom, LomConfig, LomError, PowerAction,
    PowerDriver, PowerState,
};

fn lom(attempts: u32) -> Lom {
    Lom::new({
        let mut c = LomConfig::default();
        c.attempts = attempts;
        c.backoff = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(4);
        c.timeout = Duration::from_secs(10);
        c.max_concurrent = 4;
        c
    })
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff_others_are_not() {
    let fake = FakeDriver::new("bmc-1");
    let m = lom(3).manage(Arc::new(fake.clone()));
    fake.fail_next(LomError::Busy("no session slot".into()));
    fake.fail_next(LomError::Timeout(Duration::from_secs(1)));
    let started = tokio::time::Instant::now();
    m.power(PowerAction::Cycle).await.unwrap();
    // Backoff 1 s then 2 s.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(fake.power_now(), PowerState::On);

    // Refused credentials: one attempt, the error as it was.
    fake.fail_next(LomError::AuthFailed("bad password".into()));
    assert!(matches!(
        m.power_state().await,
        Err(LomError::AuthFailed(_))
    ));
    assert_eq!(fake.calls().len(), 4);

    // Attempts are bounded: the last transient error is returned.
    for _ in 0..3 {
        fake.fail_next(LomError::Unreachable("no route".into()));
    }
    assert!(matches!(
        m.power_state().await,
        Err(LomError::Unreachable(_))
    ));
    assert_eq!(fake.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_driver_times_out() {
    let fake = FakeDriver::new("bmc-slow");
    fake.set_delay(Duration::from_secs(3600));
    let m = lom(2).manage(Arc::new(fake.clone()));
    let started = tokio::time::Instant::now();
    assert!(matches!(
        m.set_boot_device(BootOverride::once(BootDevice::Pxe)).await,
        Err(LomError::Timeout(_))
    ));
    // Two attempts of 10 s and one backoff of 1 s.
    assert_eq!(started.elapsed(), Duration::from_secs(21));
    assert_eq!(
        fake.calls(),
        vec![
            FakeCall::SetBoot(BootOverride::once(BootDevice::Pxe)),
            FakeCall::SetBoot(BootOverride::once(BootDevice::Pxe))
        ]
    );
}

/// Counts operations in flight, per target and in all.
struct Counting {
    target: String,
    per_target: Arc<AtomicUsize>,
    per_target_max: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
    all_max: Arc<AtomicUsize>,
}

#[async_trait]
impl PowerDriver for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    fn target(&self) -> String {
        self.target.clone()
    }
    async fn power_state(&self) -> Result<PowerState, LomError> {
        let n = self.per_target.fetch_add(1, Ordering::SeqCst) + 1;
        self.per_target_max.fetch_max(n, Ordering::SeqCst);
        let a = self.all.fetch_add(1, Ordering::SeqCst) + 1;
        self.all_max.fetch_max(a, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.per_target.fetch_sub(1, Ordering::SeqCst);
        self.all.fetch_sub(1, Ordering::SeqCst);
        Ok(PowerState::On)
    }
    async fn power(&self, _: PowerAction) -> Result<(), LomError> {
        Ok(())
    }
    async fn set_boot_device(&self, _: BootOverride) -> Result<(), LomError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn one_operation_per_bmc_and_a_global_cap() {
    let lom = lom(1);
    let all = Arc::new(AtomicUsize::new(0));
    let all_max = Arc::new(AtomicUsize::new(0));
    let mut per_bmc_max = Vec::new();
    let mut tasks = Vec::new();
    for bmc in 0..10 {
        let per_target = Arc::new(AtomicUsize::new(0));
        let per_target_max = Arc::new(AtomicUsize::new(0));
        per_bmc_max.push(per_target_max.clone());
        for _ in 0..5 {
            // A new driver value per caller: serialization is by target.
            let d = Counting {
                target: format!("10.0.0.{bmc}:623"),
                per_target: per_target.clone(),
                per_target_max: per_target_max.clone(),
                all: all.clone(),
                all_max: all_max.clone(),
            };
            let m = lom.manage(Arc::new(d));
            tasks.push(tokio::spawn(async move { m.power_state().await }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), PowerState::On);
    }
    for m in per_bmc_max {
        assert_eq!(
            m.load(Ordering::SeqCst),
            1,
            "one operation at a time per BMC"
        );
    }
    assert_eq!(all_max.load(Ordering::SeqCst), 4, "the global cap");
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let c = {
        let mut c = LomConfig::default();
        c.backoff = Duration::from_secs(2);
        c.max_backoff = Duration::from_secs(30);
        c
    };
    let waits: Vec<u64> = (1..=6).map(|r| c.backoff_for(r).as_secs()).collect();
    assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
    assert_eq!(c.backoff_for(200), Duration::from_secs(30));
}
