//! The input layer's cost: the native parser against a mapping on the same
//! events (issue 28: the mapped parse within 20 % of the native one).
//!
//! Run: `cargo bench -p churn-core --bench input -- --warm-up-time 1 --measurement-time 3`.
//!
//! - `native`: `parse_event` on generated native lines;
//! - `mapped_native`: the same lines through the `churn` preset as a mapping
//!   (same bytes, same fields: the mapping machinery's own cost);
//! - `segment`: the same events as Segment track calls (with Segment's
//!   usual envelope: context, messageId, sentAt...), through the `segment`
//!   preset with a rename table: a realistic mapped message, larger.

use std::hint::black_box;

use churn_core::event::parse_event;
use churn_core::input::{InputFormat, MessageContext, PRESETS};
use churn_generate::{GenerateConfig, Generator};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn native_lines() -> Vec<Vec<u8>> {
    let mut generator = Generator::new(GenerateConfig {
        customers: 2_000,
        ..GenerateConfig::default()
    })
    .expect("valid config");
    let mut lines = Vec::new();
    while let Some(e) = generator.next_event() {
        lines.push(e.line.to_vec());
        if lines.len() == 20_000 {
            break;
        }
    }
    lines
}

fn as_segment(native: &[u8], n: usize) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(native).expect("generated JSON");
    let mut props = v
        .get("properties")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(a) = v.get("amount") {
        props["revenue"] = a.clone();
    }
    serde_json::json!({
        "type": "track",
        "userId": v["customer_id"],
        "anonymousId": format!("anon-{n}"),
        "event": format!("src {}", v["event_type"].as_str().unwrap_or("x")),
        "timestamp": v["timestamp"],
        "messageId": format!("ajs-{n:08}"),
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"}, "locale": "en-US"},
        "properties": props,
    })
    .to_string()
    .into_bytes()
}

fn benches(c: &mut Criterion) {
    let native = native_lines();
    let segment: Vec<Vec<u8>> = native
        .iter()
        .enumerate()
        .map(|(n, l)| as_segment(l, n))
        .collect();
    let mapped_native = InputFormat::from_settings(Some("mapped"), Some((PRESETS[0].1, "churn")))
        .expect("churn preset");
    let rename: String = [
        "purchase",
        "login",
        "session",
        "support_ticket",
        "payment_failed",
        "refund",
        "feature_used",
        "complaint",
        "renewal",
        "cart_abandoned",
    ]
    .iter()
    .map(|t| format!("\"src {t}\" = \"{t}\"\n"))
    .collect();
    let segment_format =
        InputFormat::from_settings(Some("segment"), Some((&format!("[rename]\n{rename}"), "b")))
            .expect("segment preset");
    let cx = MessageContext::default();

    let mut group = c.benchmark_group("input_parse");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("native", |b| {
        b.iter(|| {
            i = (i + 1) % native.len();
            black_box(parse_event(black_box(&native[i])).is_ok())
        })
    });
    let mut i = 0;
    group.bench_function("mapped_native", |b| {
        b.iter(|| {
            i = (i + 1) % native.len();
            black_box(mapped_native.decode(black_box(&native[i]), &cx).is_ok())
        })
    });
    let mut i = 0;
    group.bench_function("segment", |b| {
        b.iter(|| {
            i = (i + 1) % segment.len();
            black_box(segment_format.decode(black_box(&segment[i]), &cx).is_ok())
        })
    });
    group.finish();

    // A figure robust to a busy machine: whole passes over the 20 k lines,
    // the parsers alternated pass by pass, the fastest pass of each kept
    // (other load only ever adds time).
    let pass = |f: &dyn Fn(&[u8]) -> bool, lines: &[Vec<u8>]| {
        let start = std::time::Instant::now();
        for l in lines {
            black_box(f(black_box(l)));
        }
        start.elapsed().as_secs_f64() / lines.len() as f64 * 1e9
    };
    let native_parse = |l: &[u8]| parse_event(l).is_ok();
    let mapped_parse = |l: &[u8]| mapped_native.decode(l, &cx).is_ok();
    let segment_parse = |l: &[u8]| segment_format.decode(l, &cx).is_ok();
    let (mut best_native, mut best_mapped, mut best_segment) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..60 {
        best_native = best_native.min(pass(&native_parse, &native));
        best_mapped = best_mapped.min(pass(&mapped_parse, &native));
        best_segment = best_segment.min(pass(&segment_parse, &segment));
    }
    let mean_bytes =
        |lines: &[Vec<u8>]| lines.iter().map(Vec::len).sum::<usize>() as f64 / lines.len() as f64;
    println!(
        "fastest of 60 alternated passes, ns/event: native {best_native:.0}, \
         mapped_native {best_mapped:.0} ({:+.1} %), segment {best_segment:.0} ({:+.1} %); \
         mean message: native {:.0} bytes, segment {:.0} bytes",
        100.0 * (best_mapped / best_native - 1.0),
        100.0 * (best_segment / best_native - 1.0),
        mean_bytes(&native),
        mean_bytes(&segment)
    );
}

criterion_group!(input, benches);
criterion_main!(input);
