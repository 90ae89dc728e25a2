//! The environment lock against the emulator: one holder at a time, a refusal that names the
//! holder, `--break-lock` for a lock a dead run left, and a release that really lets go.

mod common;

use std::collections::BTreeMap;

use xtask::emulator::TestEmulator;
use xtask::engine::Ctx;
use xtask::lock::{Holder, Lock, Place};

fn place() -> Place {
    Place {
        lock: common::TEST_LOCK.into(),
    }
}

fn tags() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "invoice-app-test".to_string())])
}

/// The holder the lock parameter names, if it exists.
async fn holder(ctx: &Ctx) -> Option<Holder> {
    serde_json::from_str(&common::test_lock(&ctx.aws).await?).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_the_refusal_names_it() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let first = Lock::acquire(&ctx, &place(), "apply", &tags(), false)
        .await
        .unwrap();
    let held = holder(&ctx).await.expect("the lock names its holder");
    assert_eq!(held.command, "apply");
    assert_eq!(held.pid, std::process::id());
    assert!(!held.run.is_empty());

    let refused = Lock::acquire(&ctx, &place(), "destroy", &tags(), false).await;
    let err = format!("{:#}", refused.err().expect("the lock is held"));
    assert!(err.contains("environment is locked by"), "{err}");
    assert!(
        err.contains("`apply`"),
        "the refusal names the holder's command: {err}"
    );
    assert_eq!(
        holder(&ctx).await.unwrap().run,
        held.run,
        "the refusal changed nothing"
    );

    first.release(&ctx).await.unwrap();
    assert!(holder(&ctx).await.is_none(), "released");
    let second = Lock::acquire(&ctx, &place(), "destroy", &tags(), false)
        .await
        .unwrap();
    let next = holder(&ctx).await.unwrap();
    assert_eq!(next.command, "destroy");
    assert_ne!(next.run, held.run, "each run has its own id");
    second.release(&ctx).await.unwrap();
    // Releasing what is gone is fine.
    Lock::acquire(&ctx, &place(), "apply", &tags(), false)
        .await
        .unwrap()
        .release(&ctx)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn break_lock_takes_over_a_lock_a_dead_run_left() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    // A run that was killed: it took the lock and never released it.
    let dead = Lock::acquire(&ctx, &place(), "apply", &tags(), false)
        .await
        .unwrap();
    let dead_run = holder(&ctx).await.unwrap().run;
    std::mem::forget(dead);
    let mine = Lock::acquire(&ctx, &place(), "apply", &tags(), true)
        .await
        .unwrap();
    let now = holder(&ctx).await.unwrap();
    assert_ne!(now.run, dead_run, "the lock is this run's now");
    mine.release(&ctx).await.unwrap();
    assert!(holder(&ctx).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn hold_releases_when_the_work_fails() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let failed: anyhow::Result<()> =
        Lock::hold(&ctx, &place(), "apply", &tags(), false, None, async {
            assert!(holder(&ctx).await.is_some(), "held while working");
            anyhow::bail!("the work failed")
        })
        .await;
    assert_eq!(format!("{:#}", failed.unwrap_err()), "the work failed");
    assert!(holder(&ctx).await.is_none(), "released after the failure");
}

/// Ctrl-C while `destroy --yes` reads under the lock (one of its reads hangs): the run stops
/// before any change, says so, exits 130, and releases the lock, where a killed run would
/// leave it for `--break-lock`.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_reading_under_the_lock_releases_it() {
    use common::faults::{DropFirstAnswer, Rule};
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let hang = Rule::hold("DescribeTable", |r| r.is_operation("DescribeTable"));
    let proxy = DropFirstAnswer::start(emu.port(), vec![hang]);
    let child = common::xtask_command("test", "api.toml", proxy.port(), &["destroy", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting xtask");
    // The lock comes first; the plan then waits on the held DescribeTable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while holder(&ctx).await.is_none() || proxy.dropped() != [("DescribeTable", 1)] {
        assert!(
            std::time::Instant::now() < deadline,
            "never held the lock while a read hung"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("xtask exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted before any change"), "{stderr}");
    assert!(holder(&ctx).await.is_none(), "the lock is released");
}

/// Told that only guarded writes are left in flight, the lock goes while the work still runs.
#[tokio::test]
async fn a_freed_lock_is_released_before_the_work_ends() {
    let emu = TestEmulator::start().await;
    let ctx = common::emulator_ctx(&emu).await;
    let free = tokio::sync::Notify::new();
    let work = async {
        assert!(holder(&ctx).await.is_some(), "held while working");
        free.notify_one();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while holder(&ctx).await.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "not released while the work ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    };
    Lock::hold(&ctx, &place(), "apply", &tags(), false, Some(&free), work)
        .await
        .unwrap();
    assert!(
        holder(&ctx).await.is_none(),
        "still released after the work"
    );
}
