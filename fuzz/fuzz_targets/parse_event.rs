//! Fuzzes the event parser: it must never panic, and every event it accepts
//! must satisfy the invariants the engine relies on.

#![no_main]

use churn_scorer::event::{
    MAX_CUSTOMER_ID_BYTES, MAX_EVENT_TYPE_BYTES, format_timestamp_ms, parse_event, parse_timestamp_ms,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = parse_event(data) else {
        return;
    };
    let id = event.customer_id.as_ref();
    assert!(
        (1..=MAX_CUSTOMER_ID_BYTES).contains(&id.len()),
        "customer_id length {}",
        id.len()
    );
    assert!(!id.chars().any(char::is_control), "control char in customer_id");
    let kind = event.event_type.as_ref();
    assert!((1..=MAX_EVENT_TYPE_BYTES).contains(&kind.len()));
    assert!(!kind.chars().any(char::is_control));
    if let Some(amount) = event.amount {
        assert!(amount.is_finite() && amount >= 0.0, "amount {amount}");
    }
    // Accepted timestamps are written back (e.g. `last_event_at`) and must
    // read again as the same instant.
    let text = format_timestamp_ms(event.timestamp_ms);
    assert_eq!(
        parse_timestamp_ms(&text).ok(),
        Some(event.timestamp_ms),
        "timestamp {text}"
    );
});
