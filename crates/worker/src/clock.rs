//! The worker's one reading of wall time (at the bottom of the module order).

/// Milliseconds since the Unix epoch, from the system clock: the one place
/// the worker reads wall time (skew bound, idle rule, restored clocks).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
