//! Engine throughput on a realistic mix of generated events.
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`.
//! Targets: apply+score on parsed events ≥ 5 M events/s per core;
//! parse+apply+score from JSON bytes ≥ 1 M events/s.
//!
//! The events are a time-ordered sample (every 14th line) of 100 k
//! generated customers over 180 days, so customers carry realistic state
//! (several event types, months of history). Each measured iteration is one
//! event; the store stays warm and the sample is replayed in a cycle.

use std::hint::black_box;
use std::time::{Duration, Instant};

use churn_scorer::engine::{ApplyOutcome, CustomerStore};
use churn_scorer::event::{CustomerEvent, parse_event};
use churn_scorer::generate::{GenerateConfig, Generator};
use churn_scorer::model::RiskModel;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CUSTOMERS: u32 = 100_000;
const SAMPLE_EVERY: usize = 14;

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

fn sample() -> Lines {
    let mut generator = Generator::new(GenerateConfig {
        customers: CUSTOMERS,
        ..GenerateConfig::default()
    })
    .expect("valid config");
    let mut lines = Lines {
        bytes: Vec::new(),
        ends: Vec::new(),
    };
    let mut n = 0_usize;
    while let Some(e) = generator.next_event() {
        if n % SAMPLE_EVERY == 0 {
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

fn benches(c: &mut Criterion) {
    let model = RiskModel::default_model();
    let lines = sample();
    let events: Vec<CustomerEvent<'_>> = lines
        .iter()
        .map(|l| parse_event(l).expect("generated lines are valid"))
        .collect();
    let raw: Vec<&[u8]> = lines.iter().collect();
    eprintln!(
        "sample: {} events, {} customers, {:.0} bytes/line",
        events.len(),
        CUSTOMERS,
        lines.bytes.len() as f64 / events.len() as f64
    );

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));

    let mut store = warm_store(&model, &events);
    let mut cursor = 0_usize;
    group.bench_function("apply_score_parsed", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let outcome = store.apply(&model, &events[cursor], None, true);
                black_box(&outcome);
                cursor += 1;
                if cursor == events.len() {
                    cursor = 0;
                }
            }
            start.elapsed()
        })
    });

    let mut store = warm_store(&model, &events);
    let mut cursor = 0_usize;
    group.bench_function("parse_apply_score_json", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut rejected = 0_u64;
            for _ in 0..iters {
                match parse_event(raw[cursor]) {
                    Ok(event) => {
                        let outcome = store.apply(&model, &event, None, true);
                        black_box(&outcome);
                    }
                    Err(_) => rejected += 1,
                }
                cursor += 1;
                if cursor == raw.len() {
                    cursor = 0;
                }
            }
            black_box(rejected);
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

    let store = warm_store(&model, &events);
    let states: Vec<_> = store.iter().map(|(_, s)| s.clone()).collect();
    let as_of = events.last().map_or(0, |e| e.timestamp_ms);
    let mut cursor = 0_usize;
    group.bench_function("risk_only", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(states[cursor].risk(&model, black_box(as_of)));
                cursor = (cursor + 1) % states.len();
            }
            start.elapsed()
        })
    });
    group.finish();

    // A sanity figure outside criterion: one straight pass, cold store.
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
