//! Heap allocations per event of the live worker, whole process: the real
//! `churn-scorer bench` run (embedded broker, bare consumer, worker) under a
//! counting global allocator, for each stream shape.
//!
//! `cargo bench --bench alloc [-- EVENTS]` (default 200,000 events, 8
//! partitions, no latency phase). Counts Rust heap allocations of every
//! thread during the worker phase (pipeline threads, the group thread,
//! rdkafka's Rust callbacks, the benchmark's own polling); librdkafka's C
//! allocations and the mock broker's are not seen by a Rust allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use churn_devtools::bench::{ALLOCATIONS, BenchOptions, run_bench};
use churn_generate::Shape;

struct Counting;

static COUNT: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let events = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(200_000);
    let _ = ALLOCATIONS.set(|| COUNT.load(Ordering::Relaxed));
    for shape in [Shape::Journeys, Shape::Sparse, Shape::Mixed] {
        let options = BenchOptions {
            events,
            partitions: 8,
            latency_secs: 0.0,
            shape,
            ..BenchOptions::default()
        };
        match run_bench(&options) {
            Ok(r) => {
                let a = r.worker_allocations.unwrap_or(0);
                println!(
                    "{shape:<8} {events} events: {a} allocations in the worker phase, {:.2} per event \
                     ({:.3} alerts, {:.3} state records per event)",
                    a as f64 / events as f64,
                    r.alerts as f64 / events as f64,
                    r.state_records as f64 / events as f64,
                );
            }
            Err(e) => {
                eprintln!("{shape}: {e}");
                std::process::exit(1);
            }
        }
    }
}
