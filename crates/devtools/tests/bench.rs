//! The benchmark's bookkeeping across rounds: every round reads the whole
//! topic with each client, and a later round's worker starts from nothing
//! (its own group and output topics), so it scores and alerts as the first did.

use churn_devtools::bench::{BenchOptions, run_bench};
use churn_generate::Shape;

fn kcat_installed() -> bool {
    std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_round_reads_every_event_and_a_later_worker_starts_from_nothing() {
    let kcat = kcat_installed();
    if !kcat {
        eprintln!("kcat not installed (.ci/run installs it): measuring without it");
    }
    let options = BenchOptions {
        events: 20_000,
        customers: 2_000,
        partitions: 4,
        latency_secs: 0.0,
        shape: Shape::Sparse,
        kcat,
        rounds: 2,
        ..BenchOptions::default()
    };
    let report = run_bench(&options).expect("the benchmark runs");

    assert_eq!(report.rounds.len(), 2);
    for round in &report.rounds {
        assert_eq!(round.bare.events, options.events);
        assert_eq!(round.worker.events, options.events);
        assert_eq!(round.kcat.map(|k| k.events), kcat.then_some(options.events));
        assert!(round.worker.rate() > 0.0 && round.bare.rate() > 0.0);
    }
    // The medians are rounds' measurements, not blends of them.
    assert!(report.rounds.iter().any(|r| r.worker == report.worker));
    assert!(report.rounds.iter().any(|r| r.bare == report.bare));
    // The last round's worker alerted and wrote state: had it restored the
    // first round's changelog it would have skipped every event as seen.
    assert!(report.alerts > 0, "the last round published no alert");
    assert!(report.state_records > 0, "the last round wrote no state");
    let text = report.render(&options);
    assert!(text.contains("round 2"), "{text}");
    assert_eq!(text.contains("worker / kcat"), kcat, "{text}");
}
