//! `churn-scorer bench --bootstrap-servers` on a real broker (issue 25,
//! throughput): the rounds run on topics of the run's own, created through
//! the admin API on a cluster that never creates topics by itself, and the
//! run deletes them at the end, also when it fails half-way.
//!
//! The figures themselves are measured with `benches/real_broker.sh` and
//! recorded in docs/performance.md; this test asserts no timing, so it
//! overlaps with the other scenarios.

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

/// Topics on the cluster whose name is one a `bench` run gives its own.
fn bench_topics(bootstrap: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("metadata client");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| t.starts_with("churn-bench-"))
        .collect()
}

/// Runs `bench` against `bootstrap` with `args`, at most `limit_secs`.
fn bench(bootstrap: &str, args: &[&str], limit_secs: u32) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg(limit_secs.to_string())
        .arg(BIN)
        .args(["bench", "--bootstrap-servers", bootstrap])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("churn-scorer runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two rounds (bare consumer, kcat, worker) and a short latency phase on a
/// few thousand events: the report is complete, the worker ran on the topics
/// the run created (its own startup check refuses a missing topic, a
/// partition mismatch and a state topic that is not compacted), and nothing
/// of the run is left on the cluster; a run that fails after creating its
/// topics deletes them too.
#[test]
fn bench_on_an_external_broker_creates_and_deletes_its_topics() {
    let Some(cluster) =
        KafkaCluster::builder().start("bench_on_an_external_broker_creates_and_deletes_its_topics")
    else {
        return;
    };
    let bootstrap = cluster.bootstrap();
    // A topic of someone else's, which the run must leave alone.
    cluster.create_topics(&[(INPUT, 2, &[])]);

    let common = [
        "--events",
        "3000",
        "--customers",
        "300",
        "--partitions",
        "4",
        "--shape",
        "sparse",
    ];
    let mut args = common.to_vec();
    args.extend(["--rounds", "2", "--kcat", "--latency-secs", "1"]);
    let (ok, stdout, stderr) = bench(&bootstrap, &args, 300);
    assert!(ok, "bench failed:\n{stdout}\n{stderr}");
    for line in [
        "round 2 ",
        "bare consumer ",
        "kcat (read only) ",
        "worker / kcat ",
        "worker, committed ",
        "latency @ ",
    ] {
        assert!(
            stdout.contains(line),
            "no `{line}` in the report:\n{stdout}"
        );
    }
    // Input, alerts, dead letters, state; alerts, dead letters and state
    // again for round 2.
    assert!(
        stderr.contains(&format!("created on {bootstrap}: churn-bench-"))
            && stderr.contains("-state\n")
            && stderr.contains("-state-round2"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("deleted 7 of the run's 7 topics on {bootstrap}")),
        "{stderr}"
    );
    assert_eq!(bench_topics(&bootstrap), Vec::<String>::new(), "{stderr}");
    assert!(cluster.topic_exists(INPUT), "another topic was touched");

    // Failing after its topics exist: no such Python worker script.
    let mut args = common.to_vec();
    args.extend([
        "--latency-secs",
        "0",
        "--python-worker",
        "/nonexistent/python_worker.py",
    ]);
    let (ok, stdout, stderr) = bench(&bootstrap, &args, 300);
    assert!(!ok, "bench succeeded without its Python worker:\n{stdout}");
    assert!(
        stderr.contains("python worker: reading 3000 events")
            && stderr.contains(&format!("deleting the benchmark's topics on {bootstrap}")),
        "{stderr}"
    );
    assert!(!stderr.contains("could not delete"), "{stderr}");
    assert_eq!(bench_topics(&bootstrap), Vec::<String>::new(), "{stderr}");
    assert!(cluster.topic_exists(INPUT), "another topic was touched");
}
