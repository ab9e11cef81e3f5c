//! Restore benchmark: 1 M customers' state records on the changelog of an
//! embedded broker, restored the way the worker does on assignment (one
//! reader per partition, all partitions at once). Target: ≤ 5 s.
//!
//!     cargo bench --bench restore            # 1 000 000 customers, 64 partitions
//!     CUSTOMERS=200000 cargo bench --bench restore
//!
//! 64 partitions keep each under the mock broker's ~5 MiB per-partition cap.

use std::time::{Duration, Instant};

use churn_core::changelog::encode_state;
use churn_core::engine::CustomerState;
use churn_core::model::RiskModel;
use churn_devtools::broker::EmbeddedBroker;
use churn_worker::config::{Overrides, WorkerConfig};
use churn_worker::restore_partition;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() {
    let customers: usize = std::env::var("CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let partitions: i32 = 64;
    let model = RiskModel::default_model();
    let broker = EmbeddedBroker::start(1).expect("broker");
    let mut config = WorkerConfig::load_with_env(
        None,
        &Overrides {
            bootstrap_servers: Some(broker.bootstrap_servers().to_string()),
            http_addr: None,
        },
        Vec::new(),
    )
    .expect("config");
    config.topics.state = "bench-state".into();
    broker
        .create_topic(&config.topics.state, partitions)
        .expect("topic");

    // A realistic state: a handful of event types per customer.
    let mut state = CustomerState::default();
    for (i, kind) in ["login", "purchase", "session", "support_ticket"]
        .iter()
        .enumerate()
    {
        state.apply(
            &model,
            model.kind_of(kind),
            1_735_689_600_000 + i as i64 * 86_400_000,
            Some(30.0),
        );
    }
    let mut value = Vec::new();
    encode_state(&model, &state, &mut value);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    let load = Instant::now();
    for c in 0..customers {
        let key = format!("cust-{c:07}");
        let p = (c % partitions as usize) as i32;
        loop {
            match producer.send(
                BaseRecord::to(&config.topics.state)
                    .key(&key)
                    .payload(&value)
                    .partition(p),
            ) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flushed");
    println!(
        "loaded {customers} state records ({} bytes each) into {partitions} partitions in {:.1} s",
        value.len(),
        load.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let handles: Vec<_> = (0..partitions)
        .map(|p| {
            let config = config.clone();
            let model = std::sync::Arc::new(model.clone());
            std::thread::spawn(move || {
                let progress = prometheus::Gauge::new("restore_progress", "bench").expect("gauge");
                restore_partition(&config, &model, p, &progress).expect("restore")
            })
        })
        .collect();
    let restored: usize = handles
        .into_iter()
        .map(|h| h.join().expect("thread").store.len())
        .sum();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(restored, customers, "every customer restored");
    println!(
        "restored {restored} customers from {partitions} partitions in {elapsed:.2} s ({:.0} customers/s; target ≤ 5 s for 1 M)",
        restored as f64 / elapsed
    );
}
