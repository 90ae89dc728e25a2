//! The environment lock and its run tickets against the emulator: when a scripted apply may
//! keep the plan it read before taking the lock, and when it must read again.

mod common;

use std::collections::BTreeMap;

use xtask::emulator::TestEmulator;
use xtask::engine::Ctx;
use xtask::lock::{Before, Lock, Place};

fn place() -> Place {
    Place {
        lock: "/invoice-app/test/xtask-lock".into(),
        tickets: "/invoice-app/test/xtask-runs".into(),
    }
}

fn tags() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "invoice-app-test".to_string())])
}

async fn ctx(emu: &TestEmulator) -> Ctx {
    Ctx {
        aws: common::emulator_clients(emu).await,
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        wait_timeout: std::time::Duration::from_secs(60),
        options: Default::default(),
    }
}

/// A whole run: look, take the lock with a ticket, let go.
async fn run(ctx: &Ctx) {
    let before = Before::observe(ctx, &place()).await.unwrap();
    let (lock, _) = Lock::acquire(ctx, &place(), "apply", &tags(), false, Some(before))
        .await
        .unwrap();
    lock.release(ctx, &place()).await.unwrap();
}

async fn ticket_names(ctx: &Ctx) -> Vec<String> {
    let out = ctx
        .aws
        .ssm
        .get_parameters_by_path()
        .path(place().tickets)
        .send()
        .await
        .unwrap();
    let mut names: Vec<String> = out
        .parameters()
        .iter()
        .filter_map(|p| p.name().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_environment_lets_the_plan_stand() {
    let emu = TestEmulator::start().await;
    let ctx = ctx(&emu).await;
    let before = Before::observe(&ctx, &place()).await.unwrap();
    assert_eq!(
        before,
        Before {
            held: false,
            newest_ticket: 0
        }
    );
    let (lock, acquired) = Lock::acquire(&ctx, &place(), "apply", &tags(), false, Some(before))
        .await
        .unwrap();
    assert!(acquired.undisturbed);
    lock.release(&ctx, &place()).await.unwrap();
    // The next run starts from the ticket this one took.
    let next = Before::observe(&ctx, &place()).await.unwrap();
    assert_eq!(next.newest_ticket, 1);
    assert!(!next.held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_came_and_went_after_the_reads_forces_a_reread() {
    let emu = TestEmulator::start().await;
    let ctx = ctx(&emu).await;
    run(&ctx).await;
    let mine = Before::observe(&ctx, &place()).await.unwrap();
    // Another run takes and releases the lock while this one reads.
    run(&ctx).await;
    let (lock, acquired) = Lock::acquire(&ctx, &place(), "apply", &tags(), false, Some(mine))
        .await
        .unwrap();
    assert!(
        !acquired.undisturbed,
        "ticket 2 is taken: the plan may be stale"
    );
    lock.release(&ctx, &place()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_during_the_reads_forces_a_reread() {
    let emu = TestEmulator::start().await;
    let ctx = ctx(&emu).await;
    let (other, _) = Lock::acquire(&ctx, &place(), "apply", &tags(), false, None)
        .await
        .unwrap();
    let mine = Before::observe(&ctx, &place()).await.unwrap();
    assert!(mine.held);
    let refused = Lock::acquire(&ctx, &place(), "apply", &tags(), false, Some(mine)).await;
    let err = refused.err().expect("the lock is held");
    assert!(
        format!("{err:#}").contains("environment is locked"),
        "{err:#}"
    );
    other.release(&ctx, &place()).await.unwrap();
    let (lock, acquired) = Lock::acquire(&ctx, &place(), "apply", &tags(), false, Some(mine))
        .await
        .unwrap();
    assert!(
        !acquired.undisturbed,
        "the other run may have written during the reads"
    );
    lock.release(&ctx, &place()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_look_before_the_reads_the_plan_is_read_again() {
    let emu = TestEmulator::start().await;
    let ctx = ctx(&emu).await;
    let (lock, acquired) = Lock::acquire(&ctx, &place(), "apply", &tags(), false, None)
        .await
        .unwrap();
    assert!(!acquired.undisturbed);
    lock.release(&ctx, &place()).await.unwrap();
    assert!(ticket_names(&ctx).await.is_empty(), "no ticket was taken");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_three_tickets_are_kept_and_destroy_forgets_them() {
    let emu = TestEmulator::start().await;
    let ctx = ctx(&emu).await;
    for _ in 0..5 {
        run(&ctx).await;
    }
    let names = ticket_names(&ctx).await;
    assert_eq!(
        names,
        ["000000000003", "000000000004", "000000000005"]
            .map(|n| format!("{}/{n}", place().tickets))
    );
    xtask::lock::forget_tickets(&ctx, &place()).await.unwrap();
    assert!(ticket_names(&ctx).await.is_empty());
    // Forgetting nothing is fine too.
    xtask::lock::forget_tickets(&ctx, &place()).await.unwrap();
}
