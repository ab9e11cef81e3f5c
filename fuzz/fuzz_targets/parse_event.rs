//! Fuzzes the event parsers: the native one and the mapped one (input
//! formats). Neither may panic; every event either accepts must satisfy the
//! invariants the engine relies on; and the native schema written as a
//! mapping must read every input exactly as the native parser does.

#![no_main]

use std::sync::LazyLock;

use churn_core::event::{
    CustomerEvent, MAX_CUSTOMER_ID_BYTES, MAX_EVENT_TYPE_BYTES, format_timestamp_ms, parse_event,
    parse_timestamp_ms,
};
use churn_core::input::{InputFormat, MessageContext, PRESETS};
use libfuzzer_sys::fuzz_target;

/// The native schema as a mapping, the Segment preset, and a mapping with
/// every other kind of source (nested pointers, an array index, epoch
/// milliseconds, a scale, the message key, rename and exclude).
static MAPPED: LazyLock<[InputFormat; 3]> = LazyLock::new(|| {
    let load = |format: &str, mapping: Option<&str>| {
        InputFormat::from_settings(Some(format), mapping.map(|m| (m, "fuzz")))
            .expect("fuzz mappings are valid")
    };
    [
        load("mapped", Some(PRESETS[0].1)),
        load("segment", Some(r#"rename = { "Order Completed" = "purchase" }"#)),
        load(
            "mapped",
            Some(
                r#"
customer_id = ["/user/id", "/ids/0", "@key"]
event_type = ["/name", "/type"]
timestamp = "/ts"
timestamp_encoding = "epoch_ms"
amount = "/price/cents"
amount_scale = 0.01
properties = ["/context", "/properties"]
exclude = ["page"]
rename = { "a" = "purchase", "b~/" = "login" }
"#,
            ),
        ),
    ]
});

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
const MIN_RFC3339_MS: i64 = -62_167_219_200_000;
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

fuzz_target!(|data: &[u8]| {
    let native = parse_event(data);
    let cx = MessageContext {
        key: Some(b"key-customer"),
        timestamp_ms: Some(1_740_787_200_000),
        headers: None,
    };
    let [as_mapping, segment, other] = &*MAPPED;
    let via_mapping = as_mapping.decode(data, &cx);
    assert_eq!(
        via_mapping
            .as_ref()
            .map(|e| e.clone().expect("the native mapping excludes nothing"))
            .map_err(|e| e.reason()),
        native.as_ref().map(Clone::clone).map_err(|e| e.reason()),
        "the native mapping disagrees with the native parser"
    );
    for format in [segment, other] {
        match format.decode(data, &cx) {
            Ok(Some(event)) => check(&event),
            Ok(None) => {}
            Err(e) => {
                assert!(e.source.is_some(), "a mapped failure names its source");
            }
        }
    }
    if let Ok(event) = native {
        check(&event);
    }
});

/// The invariants every accepted event keeps, whichever parser read it.
fn check(event: &CustomerEvent<'_>) {
    let id = event.customer_id.as_ref();
    assert!(
        (1..=MAX_CUSTOMER_ID_BYTES).contains(&id.len()),
        "customer_id length {}",
        id.len()
    );
    assert!(
        !id.chars().any(char::is_control),
        "control char in customer_id"
    );
    let kind = event.event_type.as_ref();
    assert!((1..=MAX_EVENT_TYPE_BYTES).contains(&kind.len()));
    assert!(!kind.chars().any(char::is_control));
    if let Some(amount) = event.amount {
        assert!(amount.is_finite() && amount >= 0.0, "amount {amount}");
    }
    // Accepted properties are an object: reading the segment property (as a
    // model with [segments] does) must never panic, whatever is inside.
    if let Some(props) = event.properties.as_deref() {
        assert!(props.starts_with('{'), "properties {props:?}");
    }
    let _ = event.property("plan");
    // Accepted timestamps are written back (e.g. `last_event_at`) and must
    // read again as the same instant. Known gap, left to the parser's owner:
    // an offset can move a 4-digit-year time out of years 0000-9999 in UTC
    // (`0000-01-01T00:00:00+01:00`), which no RFC 3339 text can then carry;
    // seeds/parse_event/year_minus_one.json reproduces it. Checked inside
    // that range only until the parser rejects such times.
    if (MIN_RFC3339_MS..=MAX_RFC3339_MS).contains(&event.timestamp_ms) {
        let text = format_timestamp_ms(event.timestamp_ms);
        assert_eq!(
            parse_timestamp_ms(&text).ok(),
            Some(event.timestamp_ms),
            "timestamp {text}"
        );
    }
}
