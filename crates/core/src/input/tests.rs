use std::borrow::Cow;

use super::*;
use crate::event::parse_timestamp_ms;

fn format(name: &str, mapping: Option<&str>) -> InputFormat {
    InputFormat::from_settings(Some(name), mapping.map(|m| (m, "test mapping")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode<'a>(f: &'a InputFormat, line: &'a str) -> Result<Option<CustomerEvent<'a>>, DecodeError> {
    f.decode(line.as_bytes(), &MessageContext::default())
}

fn ms(text: &str) -> i64 {
    parse_timestamp_ms(text).expect("valid")
}

#[test]
fn segment_track_page_and_identify_calls_read_as_events() {
    let seg = format(
        "segment",
        Some(r#"rename = { "Order Completed" = "purchase" }"#),
    );
    let track = r#"{"type":"track","userId":"u1","event":"Order Completed","timestamp":"2025-03-01T10:15:00.250Z","properties":{"revenue":49.9,"plan":"pro"}}"#;
    let e = decode(&seg, track).expect("valid").expect("admitted");
    assert_eq!(e.customer_id, "u1");
    assert!(matches!(e.customer_id, Cow::Borrowed(_)));
    assert_eq!(e.event_type, "purchase");
    assert!(
        matches!(e.event_type, Cow::Borrowed(_)),
        "renamed from the mapping"
    );
    assert_eq!(e.timestamp_ms, ms("2025-03-01T10:15:00.250Z"));
    assert_eq!(e.amount, Some(49.9));
    assert_eq!(e.property("plan").as_deref(), Some("pro"));

    let page = r#"{"type":"page","anonymousId":"anon-7","name":"Pricing","timestamp":"2025-03-01T10:16:00Z","properties":{"path":"/pricing"}}"#;
    let e = decode(&seg, page).expect("valid").expect("admitted");
    assert_eq!(
        (e.customer_id.as_ref(), e.event_type.as_ref()),
        ("anon-7", "page")
    );
    assert_eq!(e.amount, None);

    let identify = r#"{"type":"identify","userId":"u1","traits":{"plan":"free"},"timestamp":"2025-03-01T10:17:00Z"}"#;
    let e = decode(&seg, identify).expect("valid").expect("admitted");
    assert_eq!(e.event_type, "identify");
    assert_eq!(
        e.property("plan").as_deref(),
        Some("free"),
        "traits are the properties"
    );

    let alias = r#"{"type":"alias","userId":"u1","previousId":"anon-7","timestamp":"2025-03-01T10:18:00Z"}"#;
    assert_eq!(decode(&seg, alias), Ok(None), "the preset leaves alias out");
}

#[test]
fn cloudevents_structured_events_read_subject_type_time_and_data_amount() {
    let ce = format("cloudevents", None);
    let line = r#"{"specversion":"1.0","type":"com.example.order.completed","source":"/shop","id":"A234-1234-1234","time":"2025-03-01T10:15:00+01:00","subject":"cust-9","datacontenttype":"application/json","data":{"amount":12.5,"plan":"pro"}}"#;
    let e = decode(&ce, line).expect("valid").expect("admitted");
    assert_eq!(e.customer_id, "cust-9");
    assert_eq!(e.event_type, "com.example.order.completed");
    assert_eq!(e.timestamp_ms, ms("2025-03-01T09:15:00Z"));
    assert_eq!(e.amount, Some(12.5));
    assert_eq!(e.property("plan").as_deref(), Some("pro"));
}

#[test]
fn epoch_milliseconds_and_cents_scale_into_the_native_units() {
    let app = format(
        "mapped",
        Some(
            r#"
customer_id = "/user/id"
event_type = "/name"
timestamp = "/ts"
timestamp_encoding = "epoch_ms"
amount = "/price_cents"
amount_scale = 0.01
"#,
        ),
    );
    let e = decode(
        &app,
        r#"{"user":{"id":"c-1"},"name":"purchase","ts":1740824100250,"price_cents":1999}"#,
    )
    .expect("valid")
    .expect("admitted");
    assert_eq!(e.customer_id, "c-1");
    assert_eq!(e.timestamp_ms, 1_740_824_100_250);
    // Exactly the double a native amount of 19.99 reads as (1999 × 0.01 is
    // 19.990000000000002).
    assert_eq!(e.amount, Some(19.99));
    let quoted = decode(
        &app,
        r#"{"user":{"id":"c-1"},"name":"x","ts":"1740824100250"}"#,
    )
    .expect("valid")
    .expect("admitted");
    assert_eq!(
        quoted.timestamp_ms, 1_740_824_100_250,
        "numeric strings too"
    );
    for (encoding, value, want) in [
        ("epoch_s", "1740824100", 1_740_824_100_000),
        ("epoch_s", "1740824100.25", 1_740_824_100_250),
        ("epoch_us", "1740824100250999", 1_740_824_100_250),
    ] {
        let f = format(
            "mapped",
            Some(&format!(
                "customer_id = \"/c\"\nevent_type = \"/t\"\ntimestamp = \"/ts\"\ntimestamp_encoding = \"{encoding}\""
            )),
        );
        let line = format!(r#"{{"c":"a","t":"x","ts":{value}}}"#);
        let e = f
            .decode(line.as_bytes(), &MessageContext::default())
            .expect("valid")
            .expect("admitted");
        assert_eq!(e.timestamp_ms, want, "{encoding} {value}");
    }
}

#[test]
fn local_times_read_in_the_mapping_offset() {
    let spec = "customer_id = \"/c\"\nevent_type = \"/t\"\ntimestamp = \"/ts\"\ntimestamp_encoding = \"iso8601_local\"\n";
    let f = format("mapped", Some(&format!("{spec}timezone = \"+01:00\"")));
    let e = decode(&f, r#"{"c":"a","t":"x","ts":"2025-03-01 10:15:00"}"#)
        .expect("valid")
        .expect("admitted");
    assert_eq!(e.timestamp_ms, ms("2025-03-01T09:15:00Z"));
    let with_offset = decode(&f, r#"{"c":"a","t":"x","ts":"2025-03-01T10:15:00Z"}"#)
        .expect("valid")
        .expect("admitted");
    assert_eq!(with_offset.timestamp_ms, ms("2025-03-01T10:15:00Z"));
    let missing = InputFormat::from_settings(Some("mapped"), Some((spec, "m")))
        .expect_err("iso8601_local needs a timezone");
    assert!(missing.to_string().contains("timezone"), "{missing}");
    let named = InputFormat::from_settings(
        Some("mapped"),
        Some((&format!("{spec}timezone = \"Europe/Paris\""), "m")),
    )
    .expect_err("names are not supported");
    assert!(named.to_string().contains("fixed UTC offset"), "{named}");
}

#[test]
fn failures_name_the_source_but_keep_the_fixed_reason_label() {
    let seg = format("segment", None);
    let err = decode(
        &seg,
        r#"{"type":"track","event":"x","timestamp":"2025-03-01T10:15:00Z"}"#,
    )
    .expect_err("no user");
    assert_eq!(err.reason(), "missing_field");
    assert_eq!(
        err.reason_with_source(),
        "missing_field: /userId or /anonymousId"
    );
    let err = decode(
        &seg,
        r#"{"type":"track","userId":7,"event":"x","timestamp":"2025-03-01T10:15:00Z"}"#,
    )
    .expect_err("numeric id");
    assert_eq!(err.reason_with_source(), "bad_customer_id: /userId");
    let err = decode(
        &seg,
        r#"{"type":"track","userId":"u","event":"x","timestamp":"2025-03-01T10:15:00Z","properties":{"revenue":"9"}}"#,
    )
    .expect_err("string revenue");
    assert_eq!(err.reason_with_source(), "bad_amount: /properties/revenue");
    let err = decode(
        &seg,
        r#"{"type":"track","userId":"u","event":"x","timestamp":"2025-03-01T10:15:00"}"#,
    )
    .expect_err("no offset");
    assert_eq!(err.reason_with_source(), "bad_timestamp: /timestamp");
    assert!(err.to_string().contains("no UTC offset"), "{err}");
    for (line, reason) in [
        ("{", "malformed_json"),
        ("[1]", "not_an_object"),
        (
            r#"{"userId":"a","userId":"b","event":"x","timestamp":"2025-03-01T10:15:00Z"}"#,
            "duplicate_field",
        ),
    ] {
        assert_eq!(
            decode(&seg, line).map_err(|e| e.reason()),
            Err(reason),
            "{line}"
        );
    }
    // The native format's failures carry no source: the label alone.
    let err = decode(&InputFormat::Churn, "{}").expect_err("empty");
    assert_eq!(err.reason_with_source(), "missing_field");
}

#[test]
fn the_message_key_timestamp_and_headers_are_sources() {
    struct Headers;
    impl HeaderLookup for Headers {
        fn header(&self, name: &str) -> Option<&[u8]> {
            (name == "event-time").then_some(b"1740824100250".as_slice())
        }
    }
    let key_and_time = format(
        "mapped",
        Some(
            "customer_id = [\"/user\", \"@key\"]\nevent_type = \"/t\"\ntimestamp = \"@timestamp\"",
        ),
    );
    let cx = MessageContext {
        key: Some(b"from-key"),
        timestamp_ms: Some(1_740_824_100_000),
        headers: None,
    };
    let e = key_and_time
        .decode(br#"{"t":"login"}"#, &cx)
        .expect("valid")
        .expect("admitted");
    assert_eq!(e.customer_id, "from-key");
    assert_eq!(e.timestamp_ms, 1_740_824_100_000);
    let e = key_and_time
        .decode(br#"{"user":"in-body","t":"login"}"#, &cx)
        .expect("valid")
        .expect("admitted");
    assert_eq!(e.customer_id, "in-body", "sources are tried in order");
    let err = key_and_time
        .decode(br#"{"t":"login"}"#, &MessageContext::default())
        .expect_err("a file has no key");
    assert_eq!(err.reason_with_source(), "missing_field: /user or @key");

    let header = format(
        "mapped",
        Some(
            "customer_id = \"/c\"\nevent_type = \"/t\"\ntimestamp = \"@header:event-time\"\ntimestamp_encoding = \"epoch_ms\"",
        ),
    );
    let cx = MessageContext {
        headers: Some(&Headers),
        ..MessageContext::default()
    };
    let e = header
        .decode(br#"{"c":"a","t":"x"}"#, &cx)
        .expect("valid")
        .expect("admitted");
    assert_eq!(e.timestamp_ms, 1_740_824_100_250);
}

#[test]
fn include_and_exclude_match_the_source_type_before_rename() {
    let f = format(
        "mapped",
        Some(
            r#"
customer_id = "/c"
event_type = "/t"
timestamp = "/ts"
include = ["Order Completed", "Signed In"]
exclude = ["Signed In"]
rename = { "Order Completed" = "purchase" }
"#,
        ),
    );
    let line = |t: &str| format!(r#"{{"c":"a","t":"{t}","ts":"2025-03-01T10:15:00Z"}}"#);
    let read = |t: &str| {
        let l = line(t);
        f.decode(l.as_bytes(), &MessageContext::default())
            .map(|e| e.map(|e| e.event_type.into_owned()))
    };
    assert_eq!(read("Order Completed"), Ok(Some("purchase".into())));
    assert_eq!(read("Signed In"), Ok(None), "excluded wins over included");
    assert_eq!(read("Page Viewed"), Ok(None), "not included");
}

#[test]
fn nested_pointers_follow_objects_arrays_and_escapes() {
    let f = format(
        "mapped",
        Some(
            r#"
customer_id = "/a~1b/ids/1"
event_type = "/ev~0t"
timestamp = "/ts"
"#,
        ),
    );
    let e = decode(
        &f,
        r#"{"a/b":{"ids":["x","second"]},"ev~t":"login","ts":"2025-03-01T10:15:00Z"}"#,
    )
    .expect("valid")
    .expect("admitted");
    assert_eq!(
        (e.customer_id.as_ref(), e.event_type.as_ref()),
        ("second", "login")
    );
    let err = decode(
        &f,
        r#"{"a/b":{"ids":["x"]},"ev~t":"login","ts":"2025-03-01T10:15:00Z"}"#,
    )
    .expect_err("index out of range");
    assert_eq!(err.reason_with_source(), "missing_field: /a~1b/ids/1");
}

#[test]
fn bad_mappings_are_refused_with_the_reason() {
    let cases = [
        (Some("mapped"), None, "needs a mapping"),
        (
            Some("churn"),
            Some("customer_id = \"/c\""),
            "needs input format",
        ),
        (Some("avro"), None, "unknown input format `avro`"),
        (
            Some("mapped"),
            Some("customer_id = \"c\"\nevent_type = \"/t\"\ntimestamp = \"/ts\""),
            "not a JSON pointer",
        ),
        (
            Some("mapped"),
            Some("event_type = \"/t\"\ntimestamp = \"/ts\""),
            "`customer_id` is required",
        ),
        (
            Some("segment"),
            Some("customer = \"/c\""),
            "unknown field `customer`",
        ),
        (Some("segment"), Some("amount_scale = 0"), "amount_scale"),
        (
            Some("segment"),
            Some("timestamp_encoding = \"epoch_ns\""),
            "unknown variant",
        ),
    ];
    for (fmt, mapping, want) in cases {
        let err = InputFormat::from_settings(fmt, mapping.map(|m| (m, "m.toml"))).expect_err(want);
        assert!(err.to_string().contains(want), "{err} should say {want}");
    }
    // A mapping alone means the `mapped` format.
    let f = InputFormat::from_settings(
        None,
        Some((
            "customer_id = \"/c\"\nevent_type = \"/t\"\ntimestamp = \"/ts\"",
            "m",
        )),
    )
    .expect("valid");
    assert_eq!(f.name(), "mapped");
    assert_eq!(
        InputFormat::from_settings(None, None),
        Ok(InputFormat::Churn)
    );
}

#[test]
fn every_preset_parses_and_compiles() {
    for (name, _) in PRESETS {
        let spec = MappingSpec::preset(name).unwrap_or_else(|| panic!("{name} parses"));
        Mapping::compile(name, spec).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The native schema written as a mapping reads every line exactly as the
/// native parser does: same event, or the same reason.
#[test]
fn the_native_mapping_agrees_with_the_native_parser() {
    let mapped = format("mapped", Some(include_str!("presets/churn.toml")));
    let lines = [
        r#"{"customer_id":"c-1","event_type":"purchase","timestamp":"2024-03-01T10:00:00+01:00","amount":12.5,"properties":{"sku":"x"},"extra":1}"#,
        r#"{"customer_id":"c\u00e9","event_type":"login","timestamp":"2024-03-01T10:00:00Z"}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":null,"properties":null}"#,
        "{not json",
        "",
        "[1,2]",
        "42",
        r#"{"customer_id":"a","customer_id":"b","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"customer_id":7,"event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"a\u0000b","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"a","event_type":["x"],"timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01"}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":1704067200}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":-1}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":1e999}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","amount":"3"}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z","properties":[1]}"#,
        r#"{"customer_id":"a","event_type":"x","timestamp":"2024-01-01T00:00:00Z"} {}"#,
        r#"{"customer_id":"\ud800","event_type":"x","timestamp":"2024-01-01T00:00:00Z"}"#,
    ];
    for line in lines {
        let native = parse_event(line.as_bytes()).map_err(|e| e.reason());
        let via_mapping = decode(&mapped, line)
            .map(|e| e.expect("the native mapping excludes nothing"))
            .map_err(|e| e.reason());
        assert_eq!(via_mapping, native, "{line}");
    }
}

#[test]
fn a_native_timestamp_without_an_offset_says_so() {
    let err = crate::event::parse_event(
        br#"{"customer_id":"a","event_type":"x","timestamp":"2025-03-01T10:00:00"}"#,
    )
    .expect_err("no offset");
    let text = err.to_string();
    assert!(
        text.contains("timestamp has no UTC offset")
            && text.contains("add Z or +HH:MM")
            && text.contains("iso8601_local"),
        "{text}"
    );
    assert!(!text.contains("premature end of input"), "{text}");
    // Other bad timestamps keep chrono's description.
    let other = parse_timestamp_ms("2025-02-30T10:00:00Z").expect_err("no such day");
    assert!(!other.to_string().contains("no UTC offset"), "{other}");
}

#[test]
fn inspection_counts_outcomes_vocabulary_time_range_and_suggests_renames() {
    let seg = format("segment", Some(r#"rename = { "Signed In" = "login" }"#));
    let model = crate::model::RiskModel::default_model();
    let mut inspection = inspect::Inspection::new(&seg, &model);
    let lines = [
        r#"{"type":"track","userId":"u1","event":"Order Completed","timestamp":"2025-03-01T10:00:00Z","properties":{"revenue":10}}"#,
        r#"{"type":"track","userId":"u2","event":"Order Completed","timestamp":"2025-03-02T10:00:00Z"}"#,
        r#"{"type":"track","userId":"u1","event":"Signed In","timestamp":"2025-03-03T10:00:00Z"}"#,
        r#"{"type":"page","userId":"u1","name":"Home","timestamp":"2025-02-28T10:00:00Z"}"#,
        r#"{"type":"alias","userId":"u1","previousId":"a","timestamp":"2025-03-01T10:00:00Z"}"#,
        r#"{"type":"track","event":"Order Completed","timestamp":"2025-03-01T10:00:00Z"}"#,
        r#"{"type":"track","userId":"u3","event":"Order Completed","timestamp":"2025-03-01T10:00:00"}"#,
        "not json",
    ];
    for l in lines {
        inspection.add(l.as_bytes(), &MessageContext::default());
    }
    let r = inspection.finish();
    assert_eq!(
        (r.messages, r.mapped, r.excluded, r.failed, r.customers),
        (8, 4, 1, 3, 2)
    );
    let failures: Vec<(&str, Option<&str>, u64)> = r
        .failures
        .iter()
        .map(|f| (f.reason, f.source.as_deref(), f.count))
        .collect();
    assert!(failures.contains(&("missing_field", Some("/userId or /anonymousId"), 1)));
    assert!(failures.contains(&("bad_timestamp", Some("/timestamp"), 1)));
    assert!(failures.contains(&("malformed_json", None, 1)));
    let types: Vec<(&str, &str, u64, &str)> = r
        .event_types
        .iter()
        .map(|t| {
            (
                t.source_type.as_str(),
                t.event_type.as_str(),
                t.count,
                t.status,
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("Order Completed", "Order Completed", 2, "not_named"),
            ("Signed In", "login", 1, "named"),
            ("alias", "alias", 1, "excluded"),
            ("page", "page", 1, "not_named"),
        ]
    );
    assert_eq!(
        r.first_event_at.as_deref(),
        Some("2025-02-28T10:00:00.000Z")
    );
    assert_eq!(r.last_event_at.as_deref(), Some("2025-03-03T10:00:00.000Z"));
    assert_eq!(
        r.suggested_rename
            .get("Order Completed")
            .map(String::as_str),
        Some("purchase")
    );
    assert!(!r.suggested_rename.contains_key("page"));
    assert!(r.model_types_not_seen.contains(&"purchase".to_string()));
    assert!(!r.model_types_not_seen.contains(&"login".to_string()));
    assert!(r.mapping.contains("Signed In"), "{}", r.mapping);
}

#[test]
fn suggestions_read_the_words_of_any_naming_style() {
    let model = crate::model::RiskModel::default_model();
    let types: Vec<String> = model.kinds().iter().map(|k| k.name.clone()).collect();
    for (source, want) in [
        ("com.example.order.completed", Some("purchase")),
        ("Invoice Payment Failed", Some("payment_failed")),
        ("SUPPORT_TICKET", Some("support_ticket")),
        ("Subscription Canceled", Some("subscription_cancelled")),
        ("Page Viewed", None),
    ] {
        assert_eq!(
            inspect::suggest_model_type(source, &types),
            want,
            "{source}"
        );
    }
}
