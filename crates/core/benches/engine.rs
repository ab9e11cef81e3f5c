//! Engine throughput on a realistic mix of generated events.
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`
//! (`-- alert_json` for the cost of building and serialising one alert).
//! Targets: apply+score on parsed events ≥ 5 M events/s per core;
//! parse+apply+score from JSON bytes ≥ 1 M events/s.
//!
//! The events are a time-ordered sample (every 14th line) of 100 k
//! generated customers over 180 days, so customers carry realistic state
//! (several event types, months of history). Each measured iteration is one
//! event; the store stays warm and the sample is replayed in a cycle, each
//! pass shifted later so that events stay in time order. `engine_1k_hot`
//! repeats the benches with 1 k customers whose state stays in cache: the
//! difference between the two is the cost of memory.

use std::hint::black_box;
use std::time::{Duration, Instant};

use churn_core::alert::Alert;
use churn_core::engine::{AlertCause, AlertDecision, AlertKind, ApplyOutcome, CustomerStore};
use churn_core::event::{CustomerEvent, parse_event};
use churn_core::model::RiskModel;
use churn_generate::{GenerateConfig, Generator};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CUSTOMERS: u32 = 100_000;
const SAMPLE_EVERY: usize = 14;
/// The generator's default period: replays shift by it so time keeps moving forward.
const PERIOD_MS: i64 = 180 * 86_400_000;

/// Generated JSON lines, stored back to back.
struct Lines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }
}

/// Every `every`-th line of `customers` generated customers, in time order.
fn sample(customers: u32, every: usize) -> Lines {
    let mut generator = Generator::new(GenerateConfig {
        customers,
        ..GenerateConfig::default()
    })
    .expect("valid config");
    let mut lines = Lines {
        bytes: Vec::new(),
        ends: Vec::new(),
    };
    let mut n = 0_usize;
    while let Some(e) = generator.next_event() {
        if n.is_multiple_of(every) {
            lines.bytes.extend_from_slice(e.line);
            lines.ends.push(lines.bytes.len());
        }
        n += 1;
    }
    lines
}

fn warm_store(model: &RiskModel, events: &[CustomerEvent<'_>]) -> CustomerStore {
    let mut store = CustomerStore::new();
    for e in events {
        store.apply(model, e, None, true);
    }
    store
}

/// Replays `events` in a cycle, one event per iteration, each pass shifted
/// one period later than the last, so every event is newer than its
/// customer's state: the live worker's in-order path.
struct Replay {
    cursor: usize,
    shift: i64,
}

impl Replay {
    fn new() -> Self {
        // The warm-up pass already applied the events once, unshifted.
        Replay {
            cursor: 0,
            shift: PERIOD_MS,
        }
    }

    #[inline]
    fn next(&mut self, len: usize) -> (usize, i64) {
        let at = (self.cursor, self.shift);
        self.cursor += 1;
        if self.cursor == len {
            self.cursor = 0;
            self.shift += PERIOD_MS;
        }
        at
    }
}

fn bench_apply(c: &mut Criterion, name: &str, model: &RiskModel, lines: &Lines) {
    let events: Vec<CustomerEvent<'_>> = lines
        .iter()
        .map(|l| parse_event(l).expect("generated lines are valid"))
        .collect();
    let raw: Vec<&[u8]> = lines.iter().collect();
    let customers = warm_store(model, &events).len();
    eprintln!(
        "{name}: {} events of {customers} customers, {:.0} bytes/line",
        events.len(),
        lines.bytes.len() as f64 / events.len() as f64
    );

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));

    let mut store = warm_store(model, &events);
    let mut replay = Replay::new();
    group.bench_function("apply_score_parsed", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (i, shift) = replay.next(events.len());
                let mut event = events[i].clone();
                event.timestamp_ms += shift;
                black_box(store.apply(model, &event, None, true));
            }
            start.elapsed()
        })
    });

    let mut store = warm_store(model, &events);
    let mut replay = Replay::new();
    group.bench_function("parse_apply_score_json", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (i, shift) = replay.next(raw.len());
                if let Ok(mut event) = parse_event(raw[i]) {
                    event.timestamp_ms += shift;
                    black_box(store.apply(model, &event, None, true));
                }
            }
            start.elapsed()
        })
    });

    // The parts on their own, to show where the time goes.
    let mut cursor = 0_usize;
    group.bench_function("parse_only", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(parse_event(black_box(raw[cursor])).is_ok());
                cursor = (cursor + 1) % raw.len();
            }
            start.elapsed()
        })
    });

    // Scoring a silent customer (a timer firing, or `score`): every decay is computed.
    let store = warm_store(model, &events);
    let states: Vec<_> = store.iter().map(|(_, s)| s.clone()).collect();
    let as_of = events.last().map_or(0, |e| e.timestamp_ms) + 86_400_000;
    let mut cursor = 0_usize;
    group.bench_function("risk_in_silence", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(states[cursor].risk(model, black_box(as_of)));
                cursor = (cursor + 1) % states.len();
            }
            start.elapsed()
        })
    });

    // An alert as the worker builds it on its hot path: explain, labels and
    // summary, serialised into a reused buffer (crates/worker/src/partition.rs).
    let ids: Vec<String> = store.iter().map(|(id, _)| id.to_string()).collect();
    let mut buffer = Vec::with_capacity(1 << 16);
    let mut cursor = 0_usize;
    group.bench_function("alert_json", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let state = &states[cursor];
                let decision = AlertDecision {
                    kind: AlertKind::AtRisk,
                    risk_score: 80.0,
                    previous_score: 70.0,
                    threshold: 75.0,
                    event_time_ms: as_of,
                    cause: AlertCause::Inactivity,
                    segment: 0,
                };
                let explanation = state.explain(model, as_of);
                let alert = Alert::new(&ids[cursor], &decision, &explanation, model);
                buffer.clear();
                serde_json::to_writer(&mut buffer, &alert).expect("serialises");
                black_box(buffer.len());
                cursor = (cursor + 1) % states.len();
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let model = RiskModel::default_model();
    // The realistic case: 100 k customers, far more state than the CPU caches hold.
    bench_apply(c, "engine_100k", &model, &sample(CUSTOMERS, SAMPLE_EVERY));
    // The same mix with 1 k customers, whose state stays in cache: the compute cost alone.
    bench_apply(c, "engine_1k_hot", &model, &sample(1_000, 1));

    // A sanity figure outside criterion: one straight pass into an empty store.
    let lines = sample(CUSTOMERS, SAMPLE_EVERY);
    let events: Vec<CustomerEvent<'_>> = lines
        .iter()
        .map(|l| parse_event(l).expect("generated lines are valid"))
        .collect();
    let start = Instant::now();
    let mut store = CustomerStore::new();
    let mut scored = 0_u64;
    for e in &events {
        if let ApplyOutcome::Scored { .. } = store.apply(&model, e, None, true) {
            scored += 1;
        }
    }
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    eprintln!(
        "cold pass: {scored} events into an empty store in {elapsed:?} = {:.2} M events/s",
        scored as f64 / elapsed.as_secs_f64() / 1e6
    );
}

criterion_group!(engine, benches);
criterion_main!(engine);
