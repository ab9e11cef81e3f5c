//! Elastic scale-out: members join, leave and crash while a steady stream is
//! consumed, with librdkafka's default poll timeouts and cooperative
//! rebalancing. Measures the longest group-wide pause, checks that partitions
//! that stay are not restored, and checks the final state against a replay.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::*;

const PARTITIONS: i32 = 6;

/// Worker configuration for these tests: librdkafka's default timeouts,
/// except a 10 s session. The mock coordinator holds every join for the
/// group's session timeout less 1 s (a real broker completes it as soon as
/// every member has rejoined), so the default 45 s would make each hand-over
/// take most of a minute here without saying anything about the worker.
fn group_config(bootstrap: &str) -> churn_worker::config::WorkerConfig {
    let mut c = worker_config(bootstrap);
    c.kafka
        .consumer
        .insert("session.timeout.ms".into(), "10000".into());
    c
}

fn restores(w: &RunningWorker) -> u64 {
    w.metrics().state_restore_seconds.get_sample_count()
}

/// Samples the group-wide consumed count every 100 ms, with how many events
/// had been fed by then.
struct Sampler {
    fed: Arc<AtomicUsize>,
    /// (when, consumed, fed)
    samples: Vec<(Instant, u64, u64)>,
    /// Last count read from a process member (kept once it is gone).
    process_count: u64,
}

impl Sampler {
    fn sample(&mut self, a: &RunningWorker, b: Option<&RunningWorker>, c: Option<&WorkerProcess>) {
        if let Some(c) = c {
            self.process_count = c.metric("churn_scorer_events_consumed_total") as u64;
        }
        let total = a.metrics().events_consumed.get()
            + b.map_or(0, |b| b.metrics().events_consumed.get())
            + self.process_count;
        let fed = self.fed.load(Ordering::Acquire) as u64;
        self.samples.push((Instant::now(), total, fed));
    }

    fn run_for(
        &mut self,
        d: Duration,
        a: &RunningWorker,
        b: Option<&RunningWorker>,
        c: Option<&WorkerProcess>,
    ) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.sample(a, b, c);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Samples until `done` holds; returns how long that took.
    fn run_until(
        &mut self,
        limit: Duration,
        a: &RunningWorker,
        b: Option<&RunningWorker>,
        c: Option<&WorkerProcess>,
        done: impl Fn() -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "not done within {limit:?}");
            self.sample(a, b, c);
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// The longest stretch so far in which the consumed count did not move
    /// although events were waiting (a stretch with nothing to read is no
    /// pause).
    fn longest_pause(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut since: Option<(Instant, u64)> = None;
        for &(t, n, fed) in &self.samples {
            match since {
                Some((t0, n0)) if n == n0 && fed > n => longest = longest.max(t - t0),
                _ => since = Some((t, n)),
            }
        }
        longest
    }
}

/// A steady stream of `lines` into the input topic, `per_tick` events every
/// 100 ms, keyed by customer, on a thread of its own.
struct Feed {
    stop: Arc<AtomicBool>,
    fed: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Feed {
    fn start(bootstrap: &str, lines: &[String], per_tick: usize) -> Feed {
        let stop = Arc::new(AtomicBool::new(false));
        let fed = Arc::new(AtomicUsize::new(0));
        let (lines, bootstrap) = (lines.to_vec(), bootstrap.to_string());
        let (stop_flag, fed_count) = (Arc::clone(&stop), Arc::clone(&fed));
        let thread = std::thread::spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .create()
                .expect("producer");
            for chunk in lines.chunks(per_tick) {
                if stop_flag.load(Ordering::Acquire) {
                    break;
                }
                for line in chunk {
                    let v: serde_json::Value = serde_json::from_str(line).expect("json");
                    let key = v["customer_id"].as_str().expect("id").to_string();
                    producer
                        .send(BaseRecord::to("customer-events").key(&key).payload(line))
                        .map_err(|(e, _)| e)
                        .expect("queued");
                }
                fed_count.fetch_add(chunk.len(), Ordering::AcqRel);
                producer.poll(Duration::from_millis(100));
            }
            producer.flush(Duration::from_secs(30)).expect("flushed");
        });
        Feed { stop, fed, thread }
    }

    /// Stops the stream; returns how many events were fed (all delivered).
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("feeder");
        self.fed.load(Ordering::Acquire)
    }
}

#[test]
fn members_joining_leaving_and_crashing_never_stop_the_group() {
    let broker = broker(PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(400, 90, 17);

    // A steady stream, about 300 events a second, keyed by customer.
    let feed = Feed::start(&bootstrap, &lines, 30);
    let fed = Arc::clone(&feed.fed);

    let started = Instant::now();
    let a = RunningWorker::start(group_config(&bootstrap), model.clone());
    a.wait_until("a ready", Duration::from_secs(30), |a| {
        a.handles.directory.is_ready()
    });
    let mut sampler = Sampler {
        fed: Arc::clone(&fed),
        samples: Vec::new(),
        process_count: 0,
    };
    sampler.run_for(Duration::from_secs(3), &a, None, None);

    // Two members join at once: with cooperative rebalancing, the
    // partitions that stay with `a` are neither revoked nor restored, and
    // the group never stops consuming.
    let a_restores_before = restores(&a);
    let b = RunningWorker::start(group_config(&bootstrap), model.clone());
    // The same session timeout as the others: the mock holds a join for the
    // group's timeout, and a member with a shorter one would give up waiting.
    let c = WorkerProcess::start_with(&bootstrap, "\"session.timeout.ms\" = \"10000\"", "");
    let joined = sampler.run_until(Duration::from_secs(90), &a, Some(&b), Some(&c), || {
        let c_partitions = c.metric("churn_scorer_partitions_assigned") as i64;
        a.metrics().partitions_assigned.get() > 0
            && b.metrics().partitions_assigned.get() > 0
            && c_partitions > 0
            && a.metrics().partitions_assigned.get()
                + b.metrics().partitions_assigned.get()
                + c_partitions
                == i64::from(PARTITIONS)
            && b.handles.directory.is_ready()
            && a.handles.directory.is_ready()
    });
    assert_eq!(
        restores(&a),
        a_restores_before,
        "partitions that stayed with a were restored again"
    );

    // One leaves gracefully.
    b.stop().expect("b leaves cleanly");
    let left = sampler.run_until(Duration::from_secs(90), &a, None, Some(&c), || {
        a.metrics().partitions_assigned.get() + c.metric("churn_scorer_partitions_assigned") as i64
            == i64::from(PARTITIONS)
            && a.handles.directory.is_ready()
    });
    let graceful_pause = sampler.longest_pause();

    // One is killed: its partitions come back after its session expires.
    c.kill_abruptly();
    let recovered = sampler.run_until(Duration::from_secs(90), &a, None, None, || {
        a.metrics().partitions_assigned.get() == i64::from(PARTITIONS)
            && a.handles.directory.is_ready()
    });
    let sent = feed.stop();
    eprintln!(
        "scale: 2 joined in {joined:?}, 1 left in {left:?}, longest group-wide pause {graceful_pause:?}; \
         after kill -9 all partitions back in {recovered:?}; {sent} events fed over {:?}",
        started.elapsed()
    );
    assert!(
        graceful_pause <= Duration::from_secs(5),
        "the group stalled for {graceful_pause:?}"
    );

    // Everything fed is in `a`'s state exactly once.
    let as_of = T0_MS + 91 * DAY_MS;
    let expected = offline_scores(&model, &lines[..sent], as_of);
    assert_matches_offline(a.http, &expected, as_of, Duration::from_secs(120));

    // Alerts re-sent by the hand-overs are exact repeats (same id, same body).
    let alerts = read_alerts(&bootstrap, Duration::from_secs(3));
    let mut by_id: BTreeMap<&str, Vec<&churn_core::alert::Alert>> = BTreeMap::new();
    for alert in &alerts {
        by_id
            .entry(alert.alert_id.as_str())
            .or_default()
            .push(alert);
    }
    let resent: usize = by_id.values().map(|v| v.len() - 1).sum();
    for copies in by_id.values() {
        assert!(copies.iter().all(|x| *x == copies[0]), "{copies:#?}");
    }
    eprintln!(
        "scale: {} alerts, {} distinct, {resent} re-sent",
        alerts.len(),
        by_id.len()
    );
    a.stop().expect("clean stop");
}

#[test]
fn eager_rebalancing_still_hands_partitions_over() {
    let broker = broker(4);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(200, 30, 23);
    let eager = |bootstrap: &str| {
        let mut c = worker_config(bootstrap);
        c.kafka.rebalance_protocol = churn_worker::config::RebalanceProtocol::Eager;
        c
    };
    let a = RunningWorker::start(eager(&bootstrap), model.clone());
    let b = RunningWorker::start(eager(&bootstrap), model.clone());
    b.wait_until("both hold partitions", Duration::from_secs(60), |b| {
        a.metrics().partitions_assigned.get() > 0
            && b.metrics().partitions_assigned.get() > 0
            && a.handles.directory.is_ready()
            && b.handles.directory.is_ready()
    });
    produce_events(&bootstrap, "customer-events", &lines);
    b.wait_until("everything consumed", Duration::from_secs(60), |b| {
        a.metrics().events_consumed.get() + b.metrics().events_consumed.get() >= lines.len() as u64
    });
    b.stop().expect("b leaves cleanly");
    a.wait_until("a owns every partition", Duration::from_secs(60), |a| {
        a.metrics().partitions_assigned.get() == 4 && a.handles.directory.is_ready()
    });
    let as_of = T0_MS + 31 * DAY_MS;
    assert_matches_offline(
        a.http,
        &offline_scores(&model, &lines, as_of),
        as_of,
        Duration::from_secs(60),
    );
    a.stop().expect("clean stop");
}

/// The same with librdkafka's default session timeout (45 s), as deployed:
/// on the development broker each join waits most of a minute, during which
/// the members keep consuming the partitions they hold.
#[test]
fn a_member_joining_and_leaving_with_default_timeouts_never_stops_the_group() {
    let broker = broker(PARTITIONS);
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let defaults = |bootstrap: &str| {
        let mut c = worker_config(bootstrap);
        c.kafka.consumer.remove("session.timeout.ms");
        c
    };
    let lines = history(300, 150, 29);
    let feed = Feed::start(&bootstrap, &lines, 15);
    let a = RunningWorker::start(defaults(&bootstrap), model.clone());
    a.wait_until("a ready", Duration::from_secs(30), |a| {
        a.handles.directory.is_ready()
    });
    let mut sampler = Sampler {
        fed: Arc::clone(&feed.fed),
        samples: Vec::new(),
        process_count: 0,
    };
    sampler.run_for(Duration::from_secs(2), &a, None, None);
    let a_restores_before = restores(&a);
    let b = RunningWorker::start(defaults(&bootstrap), model.clone());
    let joined = sampler.run_until(Duration::from_secs(180), &a, Some(&b), None, || {
        b.metrics().partitions_assigned.get() > 0
            && a.metrics().partitions_assigned.get() + b.metrics().partitions_assigned.get()
                == i64::from(PARTITIONS)
            && a.handles.directory.is_ready()
            && b.handles.directory.is_ready()
    });
    assert_eq!(
        restores(&a),
        a_restores_before,
        "a's kept partitions were restored"
    );
    b.stop().expect("b leaves cleanly");
    let left = sampler.run_until(Duration::from_secs(180), &a, None, None, || {
        a.metrics().partitions_assigned.get() == i64::from(PARTITIONS)
            && a.handles.directory.is_ready()
    });
    let pause = sampler.longest_pause();
    let sent = feed.stop();
    eprintln!(
        "scale (default timeouts): joined in {joined:?}, left in {left:?}, \
         longest group-wide pause {pause:?}, {sent} events fed"
    );
    assert!(
        pause <= Duration::from_secs(5),
        "the group stalled for {pause:?}"
    );
    let as_of = T0_MS + 151 * DAY_MS;
    let expected = offline_scores(&model, &lines[..sent], as_of);
    assert_matches_offline(a.http, &expected, as_of, Duration::from_secs(120));
    a.stop().expect("clean stop");
}
