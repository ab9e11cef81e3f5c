//! Memory per customer held in a [`CustomerStore`], measured as RSS growth.
//!
//! Run: `cargo bench --bench state_memory`. Target: ≤ 200 bytes per customer
//! at 1 M customers with about 5 events each. The figure includes everything
//! the store keeps per customer: the state, its per-type counters, the id,
//! the hash index and the inactivity timers.

use std::borrow::Cow;

use churn_core::engine::CustomerStore;
use churn_core::event::CustomerEvent;
use churn_core::model::RiskModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CUSTOMERS: u32 = 1_000_000;
const EVENTS_PER_CUSTOMER: u32 = 5;
const DAY: i64 = 86_400_000;

/// Resident set size in bytes, from /proc/self/statm (Linux only).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux on the machines this runs on uses 4 KiB pages.
    Some(pages * 4096)
}

fn main() {
    // Criterion-style arguments (`--bench`, filters) are accepted and ignored.
    let model = RiskModel::default_model();
    // Types weighted like real traffic: mostly activity, some money, a little friction.
    let types = [
        "session",
        "session",
        "login",
        "feature_used",
        "feature_used",
        "purchase",
        "renewal",
        "support_ticket",
        "email_open",
        "cart_abandoned",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let ids: Vec<String> = (0..CUSTOMERS).map(|i| format!("cust-{i:07}")).collect();
    let start_ms = 1_735_689_600_000_i64;

    let Some(before) = rss_bytes() else {
        eprintln!("state_memory: /proc/self/statm is not readable here; skipped");
        return;
    };
    let mut store = CustomerStore::new();
    let mut events = 0_u64;
    // Rounds of one event per customer, a few days apart, in time order.
    for round in 0..EVENTS_PER_CUSTOMER {
        for id in &ids {
            let kind = types[rng.random_range(0..types.len())];
            let event = CustomerEvent {
                customer_id: Cow::Borrowed(id),
                event_type: Cow::Borrowed(kind),
                timestamp_ms: start_ms + i64::from(round) * 3 * DAY + rng.random_range(0..DAY),
                amount: (kind == "purchase" || kind == "renewal")
                    .then(|| rng.random_range(5.0..200.0)),
                properties: None,
            };
            store.apply(&model, &event, None, true);
            events += 1;
        }
    }
    let Some(after) = rss_bytes() else {
        eprintln!("state_memory: /proc/self/statm is not readable here; skipped");
        return;
    };
    let per_customer = after.saturating_sub(before) as f64 / f64::from(CUSTOMERS);
    println!(
        "state_memory: {} customers, {events} events, {} timer entries, RSS +{:.1} MiB = {per_customer:.0} bytes/customer (target <= 200)",
        store.len(),
        store.timer_entries(),
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
    );
    println!(
        "state_memory: size_of::<CustomerState>() = {} bytes",
        std::mem::size_of::<churn_core::engine::CustomerState>()
    );
    // The ids were allocated before the first reading; keep them alive to the end.
    drop(ids);
}
