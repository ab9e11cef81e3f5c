//! The worker against a real Apache Kafka cluster (tests/support/kafka.rs;
//! version pinned in tests/kafka/pom.xml). Skipped, with the reason printed,
//! where Java or the broker's jars are missing, unless
//! `CHURN_SCORER_REQUIRE_KAFKA=1` (as in `.ci/run`).

mod support;

use std::time::Duration;

use support::kafka::KafkaCluster;

#[test]
fn harness_starts_one_node_and_three_and_controls_a_node() {
    let Some(one) = KafkaCluster::builder().start("harness") else {
        return;
    };
    eprintln!("real broker: 1 node up in {:?}", one.startup);
    drop(one);
    let Some(mut three) = KafkaCluster::builder().nodes(3).start("harness") else {
        return;
    };
    eprintln!("real broker: 3 nodes up in {:?}", three.startup);
    three.kill(2);
    three.restart(2);
    three.pause(3);
    three.resume(3);
    let took = three.stop(1, Duration::from_secs(30));
    eprintln!("node 1 stopped in {took:?}");
}
