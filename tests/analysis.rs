//! The analysts' tools end to end: `backtest` figures checked against
//! brute-force definitions, no leak from after the cutoff, and `fit` on
//! generated journeys with planted effects.

use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use churn_analysis::backtest::{Backtest, run_backtest};
use churn_analysis::fit::{FitOptions, FitOutcome, model_toml, run_fit};
use churn_analysis::labels::Labels;
use churn_analysis::metrics::{average_precision, groups_descending, roc_auc, top_share};
use churn_core::event::parse_timestamp_ms;
use churn_core::model::RiskModel;
use churn_generate::{GenerateConfig, Generator, Vocabulary};

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

/// Brute-force ROC AUC: every (churned, retained) pair, a tie worth one half.
fn brute_auc(items: &[(f64, bool)]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for &(sp, yp) in items {
        for &(sn, yn) in items {
            if yp && !yn {
                pairs += 1.0;
                if sp > sn {
                    wins += 1.0;
                } else if sp == sn {
                    wins += 0.5;
                }
            }
        }
    }
    wins / pairs
}

/// Brute-force lift at the top `percent` %: each customer's chance of being
/// among the top n when ties are broken at random, summed over the churned.
fn brute_lift(items: &[(f64, bool)], percent: u64) -> f64 {
    let n_all = items.len() as u64;
    let n = (n_all * percent).div_ceil(100).max(1) as f64;
    let mut expected = 0.0;
    for &(s, y) in items {
        if !y {
            continue;
        }
        let above = items.iter().filter(|x| x.0 > s).count() as f64;
        let tied = items.iter().filter(|x| x.0 == s).count() as f64;
        expected += ((n - above) / tied).clamp(0.0, 1.0);
    }
    let positives = items.iter().filter(|x| x.1).count() as f64;
    (expected / n) / (positives / n_all as f64)
}

/// Average precision without ties: mean over churned customers of the
/// precision at their rank.
fn brute_ap_without_ties(items: &[(f64, bool)]) -> f64 {
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut hits, mut sum) = (0.0, 0.0);
    for (k, &(_, y)) in sorted.iter().enumerate() {
        if y {
            hits += 1.0;
            sum += hits / (k as f64 + 1.0);
        }
    }
    sum / hits
}

#[test]
fn ranking_metrics_agree_with_brute_force_including_ties() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for case in 0..200 {
        let n = rng.random_range(2..120);
        // Few distinct scores in some cases: many ties; −∞ as for customers without events.
        let levels = if case % 2 == 0 { 5 } else { 1000 };
        let items: Vec<(f64, bool)> = (0..n)
            .map(|_| {
                let s = if rng.random_bool(0.05) {
                    f64::NEG_INFINITY
                } else {
                    f64::from(rng.random_range(0..levels))
                };
                (s, rng.random_bool(0.3))
            })
            .collect();
        let pos = items.iter().filter(|x| x.1).count();
        if pos == 0 || pos == n {
            assert_eq!(roc_auc(&items), None);
            continue;
        }
        let auc = roc_auc(&items).expect("both classes");
        assert!((auc - brute_auc(&items)).abs() < 1e-9, "case {case}");
        let groups = groups_descending(&items);
        for p in [1, 5, 10, 50] {
            let lift = top_share(&groups, p).lift.expect("positives");
            assert!(
                (lift - brute_lift(&items, p as u64)).abs() < 1e-9,
                "case {case} top {p}%"
            );
        }
        let distinct: std::collections::BTreeSet<u64> =
            items.iter().map(|x| x.0.to_bits()).collect();
        if distinct.len() == n {
            let ap = average_precision(&groups).expect("positives");
            assert!(
                (ap - brute_ap_without_ties(&items)).abs() < 1e-9,
                "case {case}"
            );
        }
    }
}

fn generated(
    customers: u32,
    seed: u64,
    vocabulary: Vocabulary,
) -> (Vec<u8>, Vec<(String, bool)>, i64) {
    let config = GenerateConfig {
        customers,
        seed,
        days: 120,
        cutoff_days: 90,
        vocabulary,
        ..GenerateConfig::default()
    };
    let mut generator = Generator::new(config).expect("valid config");
    let labels: Vec<(String, bool)> = generator
        .labels()
        .map(|l| (l.customer_id, l.churned))
        .collect();
    let mut events = Vec::new();
    generator.write_jsonl(&mut events).expect("in memory");
    (events, labels, generator.cutoff_ms())
}

fn labels_of(all: &[(String, bool)], keep: impl Fn(usize) -> bool) -> Labels {
    Labels::from_pairs(
        all.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, (id, c))| (id.as_str(), *c)),
    )
}

fn backtest(model: &RiskModel, events: &[u8], labels: &Labels, cutoff: i64) -> Backtest {
    run_backtest(model, events, labels, cutoff, false, |_| {}).expect("backtest")
}

#[test]
fn backtest_figures_match_brute_force_on_generated_data() {
    let (events, labels, cutoff) = generated(300, 3, Vocabulary::Default);
    let labels = labels_of(&labels, |_| true);
    let bt = backtest(&RiskModel::default_model(), &events, &labels, cutoff);
    let items = bt.ranking();
    let s = &bt.summary;
    assert!((s.roc_auc.expect("both classes") - brute_auc(&items)).abs() < 1e-9);
    for t in &s.top {
        let lift = t.lift.expect("positives");
        assert!((lift - brute_lift(&items, u64::from(t.percent))).abs() < 1e-9);
    }
    assert_eq!(s.counts.labelled, 300);
    assert_eq!(s.counts.scored, 300);
}

fn run(args: &[&str]) -> (String, String) {
    let out = Command::new(BIN).args(args).output().expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    (stdout, stderr)
}

#[test]
fn events_after_the_cutoff_change_nothing_but_their_counter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, labels, cutoff) = generated(200, 5, Vocabulary::Default);
    let cutoff_text = churn_core::event::format_timestamp_ms(cutoff);
    let all = dir.path().join("all.jsonl");
    let before = dir.path().join("before.jsonl");
    let labels_csv = dir.path().join("labels.csv");
    std::fs::write(&all, &events).expect("write");
    let kept: Vec<&[u8]> = events
        .split(|b| *b == b'\n')
        .filter(|line| churn_core::event::parse_event(line).is_ok_and(|e| e.timestamp_ms < cutoff))
        .collect();
    std::fs::write(&before, kept.join(&b'\n')).expect("write");
    // Labels with a header, a bad row and a customer without events.
    let mut csv = String::from("customer_id,churned\n");
    for (id, churned) in &labels {
        csv.push_str(&format!("{id},{}\n", u8::from(*churned)));
    }
    csv.push_str("broken-row\nghost,1\n");
    std::fs::write(&labels_csv, csv).expect("write");

    let report = dir.path().join("report.html");
    let args = |events: &std::path::Path| {
        vec![
            "backtest".to_string(),
            "--events".into(),
            events.display().to_string(),
            "--labels".into(),
            labels_csv.display().to_string(),
            "--cutoff".into(),
            cutoff_text.clone(),
            "--json".into(),
        ]
    };
    let mut with_report = args(&all);
    with_report.extend(["--report".to_string(), report.display().to_string()]);
    let (out_all, err_all) = run(&with_report.iter().map(String::as_str).collect::<Vec<_>>());
    let (out_before, _) = run(&args(&before).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err_all.contains(&format!("labels line {}", labels.len() + 2)),
        "{err_all}"
    );

    let mut a: serde_json::Value = serde_json::from_str(&out_all).expect("one JSON object");
    let mut b: serde_json::Value = serde_json::from_str(&out_before).expect("one JSON object");
    assert!(a["roc_auc"].as_f64().is_some_and(|v| v > 0.5));
    assert!(a["counts"]["events_ignored_after_cutoff"].as_u64() > Some(0));
    assert_eq!(b["counts"]["events_ignored_after_cutoff"], 0);
    assert_eq!(a["counts"]["labelled_without_events"], 1);
    assert_eq!(a["counts"]["label_rows_rejected"], 1);
    for v in [&mut a, &mut b] {
        v["counts"]
            .as_object_mut()
            .expect("counts")
            .remove("events_ignored_after_cutoff");
    }
    assert_eq!(a, b);

    // Thresholds from data: the table is monotone where it must be, and the
    // thresholds chosen meet their targets.
    let t = &a["thresholds"];
    let rows = t["table"].as_array().expect("threshold table");
    assert_eq!(rows.len(), 198);
    let rates: Vec<f64> = rows.iter().filter_map(|r| r["rate"].as_f64()).collect();
    assert!(
        rates.windows(2).all(|w| w[1] <= w[0]),
        "volume falls as the threshold rises"
    );
    if let Some(p) = t["for_precision"]["precision"].as_f64() {
        assert!(p >= t["target_precision"].as_f64().expect("target"));
    }
    if let Some(r) = t["for_rate"]["rate"].as_f64() {
        assert!(r <= t["target_rate"].as_f64().expect("target"));
    }

    // The report: six charts, their titles, nothing fetched from anywhere.
    let html = std::fs::read_to_string(&report).expect("report written");
    assert_eq!(html.matches("<svg").count(), 6);
    for title in [
        "Alerts by at-risk threshold",
        "ROC curve",
        "Cumulative gain",
        "Calibration by decile",
        "Score distribution by outcome",
        "Mean points by factor and outcome",
    ] {
        assert!(html.contains(title), "missing {title}");
    }
    assert!(!html.contains("src="));
    assert!(!html.contains("href=\"http"));
    assert!(!html.contains("<script"));
}

fn fit(events: &[u8], labels: &Labels, cutoff: i64, min_support: u64) -> FitOutcome {
    let mut options = FitOptions::new(cutoff);
    options.min_support = min_support;
    // Few customers (fast tests): at small penalties the weak effects are
    // noise, so search only strong ones, with three folds, and keep the
    // base model's half-lives (on 400 customers the per-type search follows
    // fold noise for rare types; tests/alert_quality.rs runs it on 20,000).
    options.folds = 3;
    options.lambdas = vec![0.3, 1.0];
    options.half_life_grid.clear();
    run_fit(
        || Ok(events),
        labels,
        &RiskModel::default_model(),
        &options,
        |_| {},
    )
    .expect("fit")
}

fn points(outcome: &FitOutcome, factor: &str) -> f64 {
    outcome
        .summary
        .factors
        .iter()
        .find(|f| f.factor == factor)
        .map(|f| f.points)
        .unwrap_or_else(|| panic!("no factor {factor}"))
}

#[test]
fn fit_recovers_planted_effects_and_beats_the_default_out_of_sample() {
    let (events, all, cutoff) = generated(800, 7, Vocabulary::Default);
    let train = labels_of(&all, |i| i % 2 == 0);
    let test = labels_of(&all, |i| i % 2 == 1);
    let outcome = fit(&events, &train, cutoff, 20);
    let fitted_types: Vec<&str> = outcome
        .summary
        .event_types
        .iter()
        .filter(|t| t.fitted)
        .map(|t| t.event_type.as_str())
        .collect();
    for named in ["complaint", "payment_failed", "purchase", "session"] {
        assert!(
            fitted_types.contains(&named),
            "{named} not fitted: {fitted_types:?}"
        );
    }
    // The generator's planted friction and engagement (docs in crates/generate/src/lib.rs).
    // `cart_abandoned` is planted per session, so its count follows activity: not checked.
    let risky = [
        "complaint",
        "payment_failed",
        "support_ticket",
        "plan_downgrade",
        "email_unsubscribe",
        "refund",
        "nps_detractor",
        "subscription_cancelled",
    ];
    let protective = [
        "purchase",
        "session",
        "login",
        "feature_used",
        "renewal",
        "nps_promoter",
    ];
    for t in fitted_types {
        let p = points(&outcome, &format!("event:{t}"));
        if risky.contains(&t) {
            assert!(p > 0.0, "{t}: {p}\n{:#?}", outcome.summary.factors);
        }
        if protective.contains(&t) {
            assert!(p < 0.0, "{t}: {p}\n{:#?}", outcome.summary.factors);
        }
    }
    assert!(outcome.summary.max_score_deviation < 1e-9);

    // The file as written loads unchanged and scores as fitted.
    let text = model_toml(&outcome, "2026-01-01", "built-in default").expect("toml");
    let loaded = RiskModel::from_toml(&text).expect("fitted model loads");
    assert_eq!(loaded.spec(), &outcome.spec);

    let fitted = backtest(&loaded, &events, &test, cutoff)
        .summary
        .roc_auc
        .expect("auc");
    let default = backtest(&RiskModel::default_model(), &events, &test, cutoff)
        .summary
        .roc_auc
        .expect("auc");
    assert!(fitted > default, "fitted {fitted} vs default {default}");
}

/// A model of recency alone: only the default model's inactivity steps.
fn recency_only() -> RiskModel {
    let mut spec = RiskModel::default_model().spec().clone();
    spec.events.clear();
    spec.score.base_points = 0.0;
    spec.frequency.points_per_event = 0.0;
    spec.trend.points = 0.0;
    spec.spend.points_per_log_amount = 0.0;
    spec.tenure.points_per_year = 0.0;
    RiskModel::from_spec(spec).expect("valid")
}

#[test]
fn fit_learns_an_unknown_vocabulary_and_beats_recency_alone() {
    let (events, all, cutoff) = generated(800, 9, Vocabulary::Custom);
    let train = labels_of(&all, |i| i % 2 == 0);
    let test = labels_of(&all, |i| i % 2 == 1);
    let outcome = fit(&events, &train, cutoff, 20);
    let default = RiskModel::default_model();
    let new_types: Vec<_> = outcome
        .summary
        .event_types
        .iter()
        .filter(|t| t.fitted && !t.in_base)
        .collect();
    assert!(new_types.len() >= 10, "{new_types:?}");
    for t in &new_types {
        assert!(default.kind_of(&t.event_type).is_none());
        let p = points(&outcome, &format!("event:{}", t.event_type));
        assert!(p != 0.0, "{}: {p}", t.event_type);
    }
    // Friction and commitment under their new names.
    assert!(points(&outcome, "event:billing_issue") > 0.0);
    assert!(points(&outcome, "event:escalation") > 0.0);
    assert!(points(&outcome, "event:invoice_paid") < 0.0);

    let fitted = backtest(&outcome.model, &events, &test, cutoff)
        .summary
        .roc_auc
        .expect("auc");
    let recency = backtest(&recency_only(), &events, &test, cutoff)
        .summary
        .roc_auc
        .expect("auc");
    assert!(fitted > recency, "fitted {fitted} vs recency {recency}");
}

#[test]
fn fit_command_writes_a_model_that_score_and_backtest_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, labels, cutoff) = generated(300, 13, Vocabulary::Default);
    let events_path = dir.path().join("events.jsonl");
    let labels_path = dir.path().join("labels.csv");
    let model_path = dir.path().join("fitted.toml");
    let report_path = dir.path().join("fit.html");
    std::fs::write(&events_path, &events).expect("write");
    let csv: String = labels
        .iter()
        .map(|(id, c)| format!("{id},{}\n", u8::from(*c)))
        .collect();
    std::fs::write(&labels_path, csv).expect("write");
    let cutoff_text = churn_core::event::format_timestamp_ms(cutoff);
    let (out, _) = run(&[
        "fit",
        "--events",
        &events_path.display().to_string(),
        "--labels",
        &labels_path.display().to_string(),
        "--cutoff",
        &cutoff_text,
        "--out",
        &model_path.display().to_string(),
        "--folds",
        "3",
        "--min-support",
        "10",
        "--report",
        &report_path.display().to_string(),
    ]);
    assert!(out.contains("chosen by 3-fold"), "{out}");
    let text = std::fs::read_to_string(&model_path).expect("model written");
    assert!(text.starts_with("# churn-scorer model fitted"));
    assert!(text.contains("# factor"));
    let model = RiskModel::load(&model_path).expect("loads unchanged");
    assert!(model.version().starts_with("fit-"));
    assert_eq!(model.spec().score.midpoint, 0.0);
    let model_arg = model_path.display().to_string();
    let events_arg = events_path.display().to_string();
    let (scores, _) = run(&[
        "score",
        "--model",
        &model_arg,
        "--events",
        &events_arg,
        "--as-of",
        &cutoff_text,
    ]);
    assert_eq!(scores.lines().count(), 300);
    let (json, _) = run(&[
        "backtest",
        "--model",
        &model_arg,
        "--events",
        &events_arg,
        "--labels",
        &labels_path.display().to_string(),
        "--cutoff",
        &cutoff_text,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(v["roc_auc"].as_f64().is_some_and(|a| a > 0.8), "{v}");
    let html = std::fs::read_to_string(&report_path).expect("fit report");
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("In-sample"));
    // The cutoff is honoured: unparseable ones are errors, not guesses.
    assert!(parse_timestamp_ms("2025-13-01").is_err());
}

#[test]
fn fit_replaces_a_poor_half_life_and_still_scores_exactly_what_it_fitted() {
    let (events, all, cutoff) = generated(800, 11, Vocabulary::Default);
    let labels = labels_of(&all, |_| true);
    // A base whose activity types fade within a day.
    let mut spec = RiskModel::default_model().spec().clone();
    for name in ["session", "login", "feature_used"] {
        spec.events
            .get_mut(name)
            .expect("in the default")
            .half_life_days = 1.0;
    }
    let base = RiskModel::from_spec(spec).expect("valid");
    let mut options = FitOptions::new(cutoff);
    options.folds = 3;
    options.lambdas = vec![0.3, 1.0];
    options.half_life_grid = vec![30.0];
    // Any gain moves a half-life (on 400 customers the default bar of 0.002
    // keeps every one: the silence curves carry most of the ranking).
    options.half_life_min_gain = 0.0;
    let outcome = run_fit(|| Ok(&events[..]), &labels, &base, &options, |_| {}).expect("fit");
    let changed: Vec<&(String, f64)> = outcome
        .summary
        .half_lives
        .iter()
        .filter(|(t, h)| ["session", "login", "feature_used"].contains(&t.as_str()) && *h == 30.0)
        .collect();
    assert!(!changed.is_empty(), "{:?}", outcome.summary.half_lives);
    for (t, h) in &changed {
        assert_eq!(outcome.spec.events[t.as_str()].half_life_days, *h);
    }
    // The model written, with its new half-lives, scores the fitted probabilities.
    assert!(
        outcome.summary.max_score_deviation < 1e-9,
        "{}",
        outcome.summary.max_score_deviation
    );
}
