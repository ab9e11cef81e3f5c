//! How old an event may be (issue 31): one `login` stamped 1970 used to pin
//! its customer's tenure at the maximum, and year 0000 was accepted. The
//! model's `[event_time]` bounds reject both, offline as live.

use churn_core::engine::CustomerStore;
use churn_core::event::{format_timestamp_ms, parse_event, parse_timestamp_ms};
use churn_core::model::{ModelError, RiskModel};
use churn_core::offline::{TimeLimit, replay, replay_alerts};

const DAY_MS: i64 = 86_400_000;

fn line(customer: &str, kind: &str, timestamp: &str) -> String {
    format!(r#"{{"customer_id":"{customer}","event_type":"{kind}","timestamp":"{timestamp}"}}"#)
}

fn ms(text: &str) -> i64 {
    parse_timestamp_ms(text).expect("valid timestamp")
}

#[test]
fn the_default_bounds_are_2000_and_five_years_behind_the_newest_event() {
    let bounds = RiskModel::default_model().event_time_bounds();
    let floor = ms("2000-01-01T00:00:00Z");
    assert_eq!(bounds.earliest_ms, floor);
    assert_eq!(bounds.max_past_age_ms, 1826 * DAY_MS);
    // The floor holds even before anything was accepted.
    for old in [
        "1970-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999Z",
    ] {
        let err = bounds.check(ms(old), None).expect_err(old);
        assert_eq!(err.reason(), "timestamp_too_old");
        assert!(err.to_string().contains("2000-01-01"), "{err}");
    }
    assert_eq!(bounds.check(floor, None), Ok(()));
    // Relative to the newest event the stream accepted.
    let newest = ms("2025-06-01T00:00:00Z");
    assert_eq!(bounds.check(newest - 1826 * DAY_MS, Some(newest)), Ok(()));
    let err = bounds
        .check(newest - 1826 * DAY_MS - 1, Some(newest))
        .expect_err("older than 5 years");
    assert_eq!(err.reason(), "timestamp_too_old");
    assert!(
        err.to_string().contains("max_past_age_days (1826)"),
        "{err}"
    );
    assert_eq!(bounds.check(newest + DAY_MS, Some(newest)), Ok(()));
}

fn with_event_time(section: &str) -> Result<RiskModel, ModelError> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/model.toml"
    ))
    .expect("the shipped model file");
    RiskModel::from_toml(&format!("{text}\n[event_time]\n{section}\n"))
}

#[test]
fn the_model_file_sets_the_bounds_and_bad_values_name_their_key() {
    let m = with_event_time("earliest = \"1990-01-01T00:00:00Z\"\nmax_past_age_days = 30")
        .expect("valid");
    let b = m.event_time_bounds();
    assert_eq!(b.earliest_ms, ms("1990-01-01T00:00:00Z"));
    assert_eq!(b.max_past_age_ms, 30 * DAY_MS);
    assert_eq!(b.check(ms("1995-01-01T00:00:00Z"), None), Ok(()));
    // One key alone keeps the other's default.
    let m = with_event_time("max_past_age_days = 10").expect("valid");
    assert_eq!(
        m.event_time_bounds().earliest_ms,
        ms("2000-01-01T00:00:00Z")
    );
    for (section, key) in [
        ("max_past_age_days = 0", "event_time.max_past_age_days"),
        ("max_past_age_days = -1", "event_time.max_past_age_days"),
        ("earliest = \"2000-01-01\"", "event_time.earliest"),
        ("earliest = \"yesterday\"", "event_time.earliest"),
    ] {
        let err = with_event_time(section).expect_err(section);
        assert!(err.to_string().contains(key), "{section}: {err}");
    }
    let err = with_event_time("max_age = 3").expect_err("unknown key");
    assert!(err.to_string().contains("event_time"), "{err}");
}

/// A customer active through 2025, plus a login stamped 1970 and one in
/// year 0000, and one of 2018 (over 5 years before the newest event).
fn history_with_bad_clocks() -> (Vec<String>, Vec<String>) {
    let mut good = Vec::new();
    for d in 0..200 {
        let t = ms("2025-01-01T00:00:00Z") + d * DAY_MS;
        good.push(line("c-1", "login", &format_timestamp_ms(t)));
        good.push(line("c-2", "session", &format_timestamp_ms(t + 1)));
    }
    let mut all = good.clone();
    all.insert(50, line("c-1", "login", "1970-01-01T00:00:00Z"));
    all.insert(120, line("c-1", "login", "0000-01-01T00:00:00Z"));
    all.insert(300, line("c-2", "login", "2018-01-01T00:00:00Z"));
    (good, all)
}

#[test]
fn offline_replays_reject_events_older_than_the_bounds() {
    let model = RiskModel::default_model();
    let (good, all) = history_with_bad_clocks();
    let run = |lines: &[String]| {
        let mut store = CustomerStore::new();
        let mut bad = Vec::new();
        let stats = replay(
            lines.join("\n").as_bytes(),
            &model,
            &mut store,
            TimeLimit::None,
            false,
            |b| bad.push((b.line, b.error.reason())),
        )
        .expect("replays");
        (store, stats, bad)
    };
    let (clean, _, none) = run(&good);
    assert!(none.is_empty());
    let (store, stats, bad) = run(&all);
    assert_eq!(
        bad,
        vec![
            (51, "timestamp_too_old"),
            (121, "timestamp_too_old"),
            (301, "timestamp_too_old")
        ]
    );
    assert_eq!(stats.rejected.get("timestamp_too_old"), Some(&3));
    let as_of = ms("2025-08-01T00:00:00Z");
    for id in ["c-1", "c-2"] {
        let (a, b) = (store.get(id).expect(id), clean.get(id).expect(id));
        assert_eq!(
            a.first_event_ms(),
            b.first_event_ms(),
            "{id}: tenure not pinned"
        );
        assert_eq!(a.events(), b.events(), "{id}");
        assert_eq!(a.risk(&model, as_of), b.risk(&model, as_of), "{id}");
    }
    // `score --strict` stops at the first one.
    let mut store = CustomerStore::new();
    let err = replay(
        all.join("\n").as_bytes(),
        &model,
        &mut store,
        TimeLimit::None,
        true,
        |_| {},
    )
    .expect_err("strict");
    assert!(err.to_string().contains("timestamp_too_old"), "{err}");
    // The stream replay (backtest's alert figures) skips them too.
    let alerts = |lines: &[String]| {
        replay_alerts(&model, lines.iter().map(|l| l.as_bytes()), 3_600_000)
            .into_iter()
            .map(|a| (a.customer_id, a.decision.event_time_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(alerts(&all), alerts(&good));
    // Without the bound, the 1970 login changes the customer's score.
    let mut pinned = CustomerStore::new();
    for l in &all[..60] {
        let e = parse_event(l.as_bytes()).expect("parses");
        pinned.apply(&model, &e, None, false);
    }
    assert_eq!(pinned.get("c-1").map(|s| s.first_event_ms()), Some(0));
}
