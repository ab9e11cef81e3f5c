//! The acknowledgement ledger: decides when a batch's state records may be
//! sent and when a partition's input offset may be stored.
//!
//! Two orderings matter for correctness after a crash or a rebalance:
//!
//! - State records feed a compacted changelog, so for any customer the last
//!   acknowledged record must be the newest one. A producer retry can reorder
//!   records that are in flight together, so only one batch's state records
//!   are in flight per partition, and only once that batch's outputs are
//!   acknowledged (its state must never be visible before its alerts are).
//! - An input offset is a promise that everything before it is durable, so a
//!   batch's offset is stored only when it and every earlier batch of its
//!   partition are fully acknowledged.
//!
//! The ledger is pure bookkeeping (no I/O, no clock), so the pipeline can call
//! it from its hot loop and tests can drive it with arbitrary call sequences.
//! Every call costs O(batches whose status changed), never O(open batches):
//! each partition keeps its open batches in a queue that is only scanned from
//! the front, and partitions with news are queued rather than searched for.

use std::collections::{BTreeMap, VecDeque};

/// Identifies one closed batch; carried alongside every record the batch
/// caused so that its acknowledgement can be attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId {
    /// Input partition whose messages formed the batch.
    pub partition: i32,
    /// Assignment epoch the batch belongs to; acknowledgements from an
    /// earlier assignment of the same partition must not count.
    pub epoch: u64,
    /// Position of the batch in its partition; increases with every batch
    /// and is never reused for the same partition, even across assignments.
    pub seq: u64,
}

#[derive(Debug)]
struct Batch {
    last_offset: Option<i64>,
    outputs_pending: u32,
    state_pending: u32,
    state_released: bool,
    /// Whether its state records are known: an unsealed batch still
    /// collects outputs and offsets until the state flush that covers them.
    sealed: bool,
}

impl Batch {
    // `state_pending` only drops after release, so zero means "no state
    // records" or "all of them acknowledged"; both count as done. An
    // unsealed batch's offsets are not covered by any state yet.
    fn is_complete(&self) -> bool {
        self.sealed && self.outputs_pending == 0 && self.state_pending == 0
    }
}

#[derive(Debug)]
struct Partition {
    epoch: u64,
    /// Seq of `batches[0]`; seqs are contiguous within one assignment, which
    /// makes lookup by id an index computation.
    front_seq: u64,
    /// Closed batches not yet complete, plus any complete ones stuck behind
    /// an incomplete one.
    batches: VecDeque<Batch>,
    /// Seq of the first batch whose state records are not all acknowledged.
    /// Advanced lazily (in `releasable_state`), so it may lag `front_seq`.
    state_cursor: u64,
    /// Highest input offset covered by the completed prefix of batches.
    committed: Option<i64>,
    /// Last offset handed out by `take_offsets`.
    reported: Option<i64>,
    unacked: usize,
    in_release_queue: bool,
    in_offset_queue: bool,
}

impl Partition {
    fn new(epoch: u64, first_seq: u64) -> Self {
        Self {
            epoch,
            front_seq: first_seq,
            batches: VecDeque::new(),
            state_cursor: first_seq,
            committed: None,
            reported: None,
            unacked: 0,
            in_release_queue: false,
            in_offset_queue: false,
        }
    }

    fn next_seq(&self) -> u64 {
        self.front_seq.saturating_add(self.batches.len() as u64)
    }

    fn batch_at(&mut self, seq: u64) -> Option<&mut Batch> {
        let index = usize::try_from(seq.checked_sub(self.front_seq)?).ok()?;
        self.batches.get_mut(index)
    }

    fn batch_mut(&mut self, id: BatchId) -> Option<&mut Batch> {
        if id.epoch != self.epoch {
            return None;
        }
        self.batch_at(id.seq)
    }

    /// Drops the completed prefix; true if there is now an offset to report.
    fn pop_complete(&mut self) -> bool {
        while self.batches.front().is_some_and(Batch::is_complete) {
            let Some(batch) = self.batches.pop_front() else {
                break;
            };
            self.front_seq = self.front_seq.saturating_add(1);
            // Taking the max keeps reported offsets monotonic even if a
            // caller hands in offsets out of order.
            if batch.last_offset > self.committed {
                self.committed = batch.last_offset;
            }
        }
        self.committed > self.reported
    }

    /// The batch whose state is next in line, if it may be sent now.
    fn take_releasable(&mut self) -> Option<u64> {
        // Batches popped from the front were complete, so their state was
        // acknowledged and the cursor may skip them.
        self.state_cursor = self.state_cursor.max(self.front_seq);
        loop {
            let seq = self.state_cursor;
            let batch = self.batch_at(seq)?;
            if !batch.sealed {
                return None;
            }
            if batch.state_pending == 0 {
                self.state_cursor = seq.saturating_add(1);
                continue;
            }
            if batch.state_released || batch.outputs_pending > 0 {
                return None;
            }
            batch.state_released = true;
            return Some(seq);
        }
    }
}

fn enqueue(flag: &mut bool, queue: &mut Vec<i32>, partition: i32) {
    if !*flag {
        *flag = true;
        queue.push(partition);
    }
}

/// Tracks, per assigned partition, which closed batches still await
/// acknowledgements, and turns acknowledgements into state releases and
/// storable input offsets. See the module documentation for the rules.
#[derive(Debug, Default)]
pub struct AckLedger {
    partitions: BTreeMap<i32, Partition>,
    /// Partitions whose next state release may have become possible.
    release_queue: Vec<i32>,
    /// Partitions whose storable offset may have advanced.
    offset_queue: Vec<i32>,
    unacked: usize,
    /// Lowest seq a new assignment may use, so that no `BatchId` is ever
    /// handed out twice and late acknowledgements stay harmless even if the
    /// caller reuses an epoch.
    seq_floor: u64,
    failed: u64,
}

impl AckLedger {
    /// An empty ledger tracking no partitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `partition` under `epoch`, discarding anything an
    /// earlier assignment left behind (its acknowledgements will be ignored
    /// and its unreported offsets are dropped).
    pub fn assign(&mut self, partition: i32, epoch: u64) {
        self.forget(partition);
        self.partitions
            .insert(partition, Partition::new(epoch, self.seq_floor));
    }

    /// Stops tracking `partition`; returns true if it was tracked. Offsets
    /// not yet taken are dropped, so call [`take_offsets`](Self::take_offsets)
    /// first to store the final offset of a drained partition.
    pub fn revoke(&mut self, partition: i32) -> bool {
        self.forget(partition)
    }

    fn forget(&mut self, partition: i32) -> bool {
        let Some(old) = self.partitions.remove(&partition) else {
            return false;
        };
        self.unacked = self.unacked.saturating_sub(old.unacked);
        self.seq_floor = self.seq_floor.max(old.next_seq());
        // Revocations are rare, so a linear sweep beats stale queue entries
        // surviving into the next assignment.
        if old.in_release_queue {
            self.release_queue.retain(|&p| p != partition);
        }
        if old.in_offset_queue {
            self.offset_queue.retain(|&p| p != partition);
        }
        true
    }

    /// Closes a batch that caused `outputs` outputs (already being sent) and
    /// `state_records` state records (to be sent once released). `last_offset`
    /// is the last input offset the batch covers, or `None` for a batch that
    /// consumed no input (it still completes in order). Returns `None` if the
    /// partition is not tracked. Equivalent to [`record`](Self::record)
    /// followed by [`seal`](Self::seal).
    pub fn close_batch(
        &mut self,
        partition: i32,
        last_offset: Option<i64>,
        outputs: u32,
        state_records: u32,
    ) -> Option<BatchId> {
        let id = self.record(partition, last_offset, outputs)?;
        self.seal(partition, state_records);
        Some(id)
    }

    /// Adds work whose state is not flushed yet: `outputs` outputs (already
    /// being sent, tagged with the returned id) and input up to
    /// `last_offset`. They join the partition's unsealed batch (opened here
    /// if there is none); its offset is stored only after the state flush
    /// that [`seal`](Self::seal)s it is acknowledged. Returns `None` if the
    /// partition is not tracked.
    pub fn record(
        &mut self,
        partition: i32,
        last_offset: Option<i64>,
        outputs: u32,
    ) -> Option<BatchId> {
        let part = self.partitions.get_mut(&partition)?;
        if part.batches.back().is_none_or(|b| b.sealed) {
            part.batches.push_back(Batch {
                last_offset: None,
                outputs_pending: 0,
                state_pending: 0,
                state_released: false,
                sealed: false,
            });
        }
        let id = BatchId {
            partition,
            epoch: part.epoch,
            seq: part.next_seq().saturating_sub(1),
        };
        let batch = part.batches.back_mut()?;
        if let Some(offset) = last_offset {
            batch.last_offset = Some(batch.last_offset.map_or(offset, |o| o.max(offset)));
        }
        batch.outputs_pending = batch.outputs_pending.saturating_add(outputs);
        part.unacked = part.unacked.saturating_add(outputs as usize);
        self.unacked = self.unacked.saturating_add(outputs as usize);
        Some(id)
    }

    /// The state flush covering everything [`record`](Self::record)ed so
    /// far: seals the partition's unsealed batch with `state_records` state
    /// records (sent once released, tagged with the returned id). With no
    /// unsealed batch, a batch of state records alone is closed (`None` if
    /// there are none, or the partition is not tracked).
    pub fn seal(&mut self, partition: i32, state_records: u32) -> Option<BatchId> {
        let part = self.partitions.get_mut(&partition)?;
        if part.batches.back().is_none_or(|b| b.sealed) {
            if state_records == 0 {
                return None;
            }
            part.batches.push_back(Batch {
                last_offset: None,
                outputs_pending: 0,
                state_pending: 0,
                state_released: false,
                sealed: false,
            });
        }
        let id = BatchId {
            partition,
            epoch: part.epoch,
            seq: part.next_seq().saturating_sub(1),
        };
        let batch = part.batches.back_mut()?;
        batch.sealed = true;
        batch.state_pending = state_records;
        let outputs_done = batch.outputs_pending == 0;
        part.unacked = part.unacked.saturating_add(state_records as usize);
        self.unacked = self.unacked.saturating_add(state_records as usize);
        if outputs_done && state_records > 0 {
            enqueue(
                &mut part.in_release_queue,
                &mut self.release_queue,
                partition,
            );
        }
        // An empty batch at the front completes right away.
        if part.pop_complete() {
            enqueue(&mut part.in_offset_queue, &mut self.offset_queue, partition);
        }
        Some(id)
    }

    /// Whether `partition` has a sealed batch whose state records are not
    /// all acknowledged yet (a new flush would only queue behind it).
    pub fn state_outstanding(&self, partition: i32) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|part| part.batches.iter().any(|b| b.sealed && b.state_pending > 0))
    }

    /// Whether `partition` has work recorded but not yet sealed by a flush.
    pub fn has_unsealed(&self, partition: i32) -> bool {
        self.partitions
            .get(&partition)
            .and_then(|part| part.batches.back())
            .is_some_and(|b| !b.sealed)
    }

    /// The partition's newest batch, if its state records still wait to be
    /// released (it can then absorb a newer batch, see
    /// [`extend_last`](Self::extend_last)).
    pub fn last_waiting(&self, partition: i32) -> Option<BatchId> {
        let part = self.partitions.get(&partition)?;
        let batch = part.batches.back()?;
        (batch.sealed && !batch.state_released && batch.state_pending > 0).then(|| BatchId {
            partition,
            epoch: part.epoch,
            seq: part.next_seq().saturating_sub(1),
        })
    }

    /// Folds a newly closed batch into the partition's newest batch while
    /// that batch's state records still wait for their turn: its outputs grow
    /// by `outputs` (sent tagged with the returned id), its last offset moves
    /// to `last_offset` (if any), and its state records become
    /// `state_records` (the caller merged the new records into the waiting
    /// ones, newest per key, so there are at least as many). A customer
    /// changed in many batches while the partition waits then costs one
    /// record. Returns `None`, changing nothing, if the newest batch is not
    /// waiting (close a new batch instead).
    pub fn extend_last(
        &mut self,
        partition: i32,
        last_offset: Option<i64>,
        outputs: u32,
        state_records: u32,
    ) -> Option<BatchId> {
        let id = self.last_waiting(partition)?;
        let part = self.partitions.get_mut(&partition)?;
        let batch = part.batches.back_mut()?;
        if let Some(offset) = last_offset {
            batch.last_offset = Some(batch.last_offset.map_or(offset, |o| o.max(offset)));
        }
        let state_records = state_records.max(batch.state_pending);
        let added =
            (outputs as usize).saturating_add((state_records - batch.state_pending) as usize);
        batch.outputs_pending = batch.outputs_pending.saturating_add(outputs);
        batch.state_pending = state_records;
        part.unacked = part.unacked.saturating_add(added);
        self.unacked = self.unacked.saturating_add(added);
        Some(id)
    }

    /// Records the acknowledgement of one output of batch `id`. Returns false
    /// (and changes nothing) for an unknown partition, a stale epoch, a batch
    /// already complete, or more acknowledgements than outputs.
    pub fn output_acked(&mut self, id: BatchId) -> bool {
        let Some(part) = self.partitions.get_mut(&id.partition) else {
            return false;
        };
        let Some(batch) = part.batch_mut(id) else {
            return false;
        };
        if batch.outputs_pending == 0 {
            return false;
        }
        batch.outputs_pending -= 1;
        if batch.outputs_pending == 0 && batch.state_pending > 0 {
            enqueue(
                &mut part.in_release_queue,
                &mut self.release_queue,
                id.partition,
            );
        }
        self.acked_one(id.partition);
        true
    }

    /// Records the acknowledgement of one state record of batch `id`. Returns
    /// false (and changes nothing) for an unknown partition, a stale epoch, a
    /// batch whose state was never released, or more acknowledgements than
    /// state records.
    pub fn state_acked(&mut self, id: BatchId) -> bool {
        let Some(part) = self.partitions.get_mut(&id.partition) else {
            return false;
        };
        let Some(batch) = part.batch_mut(id) else {
            return false;
        };
        if !batch.state_released || batch.state_pending == 0 {
            return false;
        }
        batch.state_pending -= 1;
        if batch.state_pending == 0 {
            // The slot for in-flight state is free: the next batch may go.
            enqueue(
                &mut part.in_release_queue,
                &mut self.release_queue,
                id.partition,
            );
        }
        self.acked_one(id.partition);
        true
    }

    fn acked_one(&mut self, partition: i32) {
        self.unacked = self.unacked.saturating_sub(1);
        if let Some(part) = self.partitions.get_mut(&partition) {
            part.unacked = part.unacked.saturating_sub(1);
            if part.pop_complete() {
                enqueue(&mut part.in_offset_queue, &mut self.offset_queue, partition);
            }
        }
    }

    /// Counts a failed delivery of a record of batch `id`, for observability
    /// only: the caller re-sends the record and reports its acknowledgement
    /// later, so no count changes. Returns false if `id` is not an open batch.
    pub fn delivery_failed(&mut self, id: BatchId) -> bool {
        let open = self
            .partitions
            .get_mut(&id.partition)
            .and_then(|part| part.batch_mut(id))
            .is_some();
        if open {
            self.failed = self.failed.saturating_add(1);
        }
        open
    }

    /// Failed deliveries counted by [`delivery_failed`](Self::delivery_failed)
    /// since the ledger was created.
    pub fn failed_deliveries(&self) -> u64 {
        self.failed
    }

    /// Pushes onto `out` the batches whose state records may be sent now.
    /// Each batch is returned once; from then on its state records count as
    /// in flight and the caller must send all of them.
    pub fn releasable_state(&mut self, out: &mut Vec<BatchId>) {
        for partition in self.release_queue.drain(..) {
            let Some(part) = self.partitions.get_mut(&partition) else {
                continue;
            };
            part.in_release_queue = false;
            if let Some(seq) = part.take_releasable() {
                out.push(BatchId {
                    partition,
                    epoch: part.epoch,
                    seq,
                });
            }
        }
    }

    /// Pushes onto `out`, for each partition that made progress since the
    /// last call, the last input offset whose batches are all fully
    /// acknowledged (store `offset + 1` as Kafka's next offset to read).
    /// Offsets strictly increase per partition assignment.
    pub fn take_offsets(&mut self, out: &mut Vec<(i32, i64)>) {
        for partition in self.offset_queue.drain(..) {
            let Some(part) = self.partitions.get_mut(&partition) else {
                continue;
            };
            part.in_offset_queue = false;
            if let Some(offset) = part.committed
                && part.committed > part.reported
            {
                part.reported = part.committed;
                out.push((partition, offset));
            }
        }
    }

    /// True if every closed batch of `partition` is fully acknowledged (also
    /// true for a partition that is not tracked: it has no open work).
    pub fn is_drained(&self, partition: i32) -> bool {
        self.pending_batches(partition) == 0
    }

    /// Outputs and state records (released or not) still awaiting
    /// acknowledgement over all tracked partitions; the caller holds all of
    /// them in memory, so this is what the in-flight bound limits.
    pub fn unacknowledged(&self) -> usize {
        self.unacked
    }

    /// Closed batches of `partition` not yet retired, i.e. the incomplete
    /// ones and any complete ones behind them (0 if untracked).
    pub fn pending_batches(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |part| part.batches.len())
    }

    /// Tracked partitions, in ascending order.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(ledger: &mut AckLedger) -> Vec<BatchId> {
        let mut out = Vec::new();
        ledger.releasable_state(&mut out);
        out
    }

    fn offsets(ledger: &mut AckLedger) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        ledger.take_offsets(&mut out);
        out
    }

    #[test]
    fn offset_waits_for_outputs_and_state() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let b = ledger.close_batch(0, Some(10), 2, 1).unwrap();
        assert_eq!(ledger.unacknowledged(), 3);
        assert!(released(&mut ledger).is_empty());
        assert!(ledger.output_acked(b));
        assert!(released(&mut ledger).is_empty(), "one output still pending");
        assert!(ledger.output_acked(b));
        assert!(offsets(&mut ledger).is_empty());
        assert_eq!(released(&mut ledger), vec![b]);
        assert!(released(&mut ledger).is_empty(), "released only once");
        assert!(offsets(&mut ledger).is_empty());
        assert!(ledger.state_acked(b));
        assert_eq!(offsets(&mut ledger), vec![(0, 10)]);
        assert!(offsets(&mut ledger).is_empty(), "reported only once");
        assert_eq!(ledger.unacknowledged(), 0);
    }

    #[test]
    fn recorded_work_waits_for_the_flush_that_seals_it() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let a = ledger.record(0, Some(3), 1).unwrap();
        let b = ledger.record(0, Some(9), 1).unwrap();
        assert_eq!(a, b, "unflushed work joins one batch");
        assert!(ledger.output_acked(a));
        assert!(ledger.output_acked(a));
        assert!(
            offsets(&mut ledger).is_empty(),
            "acknowledged outputs alone store no offset"
        );
        assert!(released(&mut ledger).is_empty());
        assert!(ledger.has_unsealed(0));
        assert_eq!(ledger.seal(0, 2), Some(a));
        assert!(ledger.state_outstanding(0));
        assert_eq!(released(&mut ledger), vec![a]);
        assert!(ledger.state_acked(a));
        assert!(offsets(&mut ledger).is_empty(), "one state record pending");
        assert!(ledger.state_acked(a));
        assert_eq!(offsets(&mut ledger), vec![(0, 9)]);
        assert!(!ledger.state_outstanding(0));
        let c = ledger.record(0, Some(10), 1).unwrap();
        assert!(c.seq > a.seq, "a new batch after the seal");
        assert_eq!(ledger.seal(0, 0), Some(c));
        assert!(offsets(&mut ledger).is_empty(), "its output is pending");
        assert!(ledger.output_acked(c));
        assert_eq!(offsets(&mut ledger), vec![(0, 10)]);
        assert_eq!(ledger.seal(0, 0), None, "nothing to seal");
        assert!(ledger.is_drained(0));
    }

    #[test]
    fn state_of_a_flush_waits_for_every_output_it_covers() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let a = ledger.record(0, Some(1), 2).unwrap();
        ledger.seal(0, 1);
        assert!(released(&mut ledger).is_empty());
        assert!(ledger.output_acked(a));
        assert!(
            released(&mut ledger).is_empty(),
            "an alert is still in flight"
        );
        assert!(ledger.output_acked(a));
        assert_eq!(released(&mut ledger), vec![a]);
    }

    #[test]
    fn later_state_waits_for_earlier_state_ack() {
        let mut ledger = AckLedger::new();
        ledger.assign(3, 1);
        let b1 = ledger.close_batch(3, Some(1), 0, 2).unwrap();
        let b2 = ledger.close_batch(3, Some(2), 0, 1).unwrap();
        assert_eq!(released(&mut ledger), vec![b1]);
        assert!(ledger.state_acked(b1));
        assert!(
            released(&mut ledger).is_empty(),
            "b1 has a record in flight"
        );
        assert!(!ledger.state_acked(b2), "b2 was never released");
        assert!(ledger.state_acked(b1));
        assert_eq!(offsets(&mut ledger), vec![(3, 1)]);
        assert_eq!(released(&mut ledger), vec![b2]);
        assert!(ledger.state_acked(b2));
        assert_eq!(offsets(&mut ledger), vec![(3, 2)]);
    }

    #[test]
    fn state_may_overtake_earlier_outputs_but_offsets_may_not() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let b1 = ledger.close_batch(0, Some(5), 1, 0).unwrap();
        let b2 = ledger.close_batch(0, Some(6), 0, 1).unwrap();
        assert_eq!(released(&mut ledger), vec![b2]);
        assert!(ledger.state_acked(b2));
        assert!(offsets(&mut ledger).is_empty(), "b1's output is pending");
        assert_eq!(ledger.pending_batches(0), 2);
        assert!(ledger.output_acked(b1));
        assert_eq!(offsets(&mut ledger), vec![(0, 6)]);
    }

    #[test]
    fn timer_only_batches_complete_in_order() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let b1 = ledger.close_batch(0, Some(7), 1, 0).unwrap();
        let timer = ledger.close_batch(0, None, 1, 1).unwrap();
        let b3 = ledger.close_batch(0, Some(8), 0, 0).unwrap();
        assert!(ledger.output_acked(timer));
        assert_eq!(released(&mut ledger), vec![timer]);
        assert!(ledger.state_acked(timer));
        assert!(offsets(&mut ledger).is_empty(), "b1 still open");
        assert!(ledger.output_acked(b1));
        assert_eq!(offsets(&mut ledger), vec![(0, 8)]);
        assert!(!ledger.output_acked(b3), "b3 had no outputs");
        let t2 = ledger.close_batch(0, None, 0, 0).unwrap();
        assert!(t2.seq > b3.seq);
        assert!(
            offsets(&mut ledger).is_empty(),
            "a timer batch adds no offset"
        );
        assert!(ledger.is_drained(0));
    }

    #[test]
    fn empty_batches_complete_at_once() {
        let mut ledger = AckLedger::new();
        ledger.assign(1, 4);
        ledger.close_batch(1, Some(0), 0, 0).unwrap();
        ledger.close_batch(1, Some(1), 0, 0).unwrap();
        assert!(ledger.is_drained(1));
        assert_eq!(ledger.pending_batches(1), 0);
        assert!(released(&mut ledger).is_empty());
        assert_eq!(offsets(&mut ledger), vec![(1, 1)]);
    }

    #[test]
    fn empty_batch_behind_open_batch_waits() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let b1 = ledger.close_batch(0, Some(1), 1, 0).unwrap();
        ledger.close_batch(0, Some(2), 0, 0).unwrap();
        assert!(offsets(&mut ledger).is_empty());
        assert_eq!(ledger.pending_batches(0), 2);
        assert!(ledger.output_acked(b1));
        assert_eq!(offsets(&mut ledger), vec![(0, 2)]);
    }

    #[test]
    fn stale_epoch_acks_ignored_after_revoke_and_reassign() {
        let mut ledger = AckLedger::new();
        ledger.assign(2, 1);
        let old = ledger.close_batch(2, Some(50), 1, 1).unwrap();
        assert!(ledger.revoke(2));
        assert!(!ledger.revoke(2));
        assert!(!ledger.output_acked(old), "partition not tracked");
        assert_eq!(ledger.close_batch(2, Some(51), 0, 0), None);
        ledger.assign(2, 2);
        let new = ledger.close_batch(2, Some(51), 1, 0).unwrap();
        assert_eq!(new.epoch, 2);
        assert!(!ledger.output_acked(old), "stale epoch");
        assert!(!ledger.state_acked(old));
        assert!(!ledger.delivery_failed(old));
        assert_eq!(ledger.unacknowledged(), 1);
        assert!(ledger.output_acked(new));
        assert_eq!(offsets(&mut ledger), vec![(2, 51)]);
    }

    #[test]
    fn reused_epoch_still_rejects_old_batches() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let old = ledger.close_batch(0, Some(1), 1, 0).unwrap();
        ledger.assign(0, 1);
        assert_eq!(ledger.unacknowledged(), 0, "restart drops old work");
        let new = ledger.close_batch(0, Some(2), 1, 0).unwrap();
        assert_ne!(old, new);
        assert!(!ledger.output_acked(old));
        assert!(!ledger.is_drained(0));
        assert!(ledger.output_acked(new));
        assert!(ledger.is_drained(0));
    }

    #[test]
    fn is_drained_follows_open_work() {
        let mut ledger = AckLedger::new();
        assert!(ledger.is_drained(9), "untracked partitions have no work");
        ledger.assign(0, 1);
        ledger.assign(1, 1);
        assert!(ledger.is_drained(0));
        let b = ledger.close_batch(0, None, 0, 1).unwrap();
        assert!(!ledger.is_drained(0));
        assert!(ledger.is_drained(1));
        assert_eq!(released(&mut ledger), vec![b]);
        assert!(!ledger.is_drained(0));
        assert!(ledger.state_acked(b));
        assert!(ledger.is_drained(0));
        assert_eq!(ledger.partitions().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn surplus_acks_and_failures_change_no_counts() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        let b = ledger.close_batch(0, Some(3), 1, 1).unwrap();
        assert!(!ledger.state_acked(b), "state not released yet");
        assert!(ledger.delivery_failed(b));
        assert_eq!(ledger.unacknowledged(), 2);
        assert!(ledger.output_acked(b));
        assert!(!ledger.output_acked(b));
        assert_eq!(released(&mut ledger), vec![b]);
        assert!(ledger.delivery_failed(b));
        assert_eq!(ledger.failed_deliveries(), 2);
        assert!(ledger.state_acked(b));
        assert!(!ledger.state_acked(b));
        assert!(!ledger.delivery_failed(b), "batch is retired");
        assert_eq!(ledger.unacknowledged(), 0);
    }

    #[test]
    fn unreported_offsets_are_dropped_on_revoke() {
        let mut ledger = AckLedger::new();
        ledger.assign(0, 1);
        ledger.assign(1, 1);
        ledger.close_batch(0, Some(4), 0, 0).unwrap();
        ledger.close_batch(1, Some(8), 0, 0).unwrap();
        assert!(ledger.revoke(0));
        assert_eq!(offsets(&mut ledger), vec![(1, 8)]);
    }

    mod model {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const PARTITIONS: i32 = 3;

        #[derive(Debug, Clone)]
        enum Op {
            Close {
                partition: i32,
                outputs: u32,
                state: u32,
                offset_step: Option<i64>,
            },
            Extend {
                partition: i32,
                outputs: u32,
                extra_state: u32,
                offset_step: Option<i64>,
            },
            Release,
            Ack(usize),
            Fail(usize),
            Revoke(i32),
            LateAck(usize),
            Assign {
                partition: i32,
                reuse_epoch: bool,
            },
            TakeOffsets,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..PARTITIONS, 0..3u32, 0..3u32, proptest::option::of(1..4i64)).prop_map(
                    |(partition, outputs, state, offset_step)| Op::Close {
                        partition,
                        outputs,
                        state,
                        offset_step,
                    }
                ),
                2 => (0..PARTITIONS, 0..3u32, 0..3u32, proptest::option::of(1..4i64)).prop_map(
                    |(partition, outputs, extra_state, offset_step)| Op::Extend {
                        partition,
                        outputs,
                        extra_state,
                        offset_step,
                    }
                ),
                3 => Just(Op::Release),
                6 => any::<usize>().prop_map(Op::Ack),
                1 => any::<usize>().prop_map(Op::Fail),
                1 => (0..PARTITIONS).prop_map(Op::Revoke),
                1 => any::<usize>().prop_map(Op::LateAck),
                1 => (0..PARTITIONS, any::<bool>())
                    .prop_map(|(partition, reuse_epoch)| Op::Assign { partition, reuse_epoch }),
                2 => Just(Op::TakeOffsets),
            ]
        }

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Kind {
            Output,
            State,
        }

        #[derive(Debug)]
        struct RefBatch {
            id: BatchId,
            last_offset: Option<i64>,
            outputs: u32,
            state: u32,
            outputs_acked: u32,
            state_acked: u32,
            released: bool,
        }

        impl RefBatch {
            fn complete(&self) -> bool {
                self.outputs_acked == self.outputs && self.state_acked == self.state
            }
        }

        #[derive(Debug, Default)]
        struct RefPartition {
            epoch: u64,
            batches: Vec<RefBatch>,
            stored: Option<i64>,
            last_state_ack: Option<u64>,
        }

        /// The outside world: what was sent and not yet acknowledged, and
        /// what the ledger should know.
        struct Harness {
            ledger: AckLedger,
            parts: BTreeMap<i32, RefPartition>,
            last_epoch: BTreeMap<i32, u64>,
            next_epoch: u64,
            next_offset: BTreeMap<i32, i64>,
            in_flight: Vec<(BatchId, Kind)>,
            stale: Vec<(BatchId, Kind)>,
            failures: u64,
        }

        impl Harness {
            fn new() -> Self {
                let mut h = Self {
                    ledger: AckLedger::new(),
                    parts: BTreeMap::new(),
                    last_epoch: BTreeMap::new(),
                    next_epoch: 1,
                    next_offset: BTreeMap::new(),
                    in_flight: Vec::new(),
                    stale: Vec::new(),
                    failures: 0,
                };
                for p in 0..PARTITIONS {
                    h.assign(p, false);
                }
                h
            }

            fn batch(&mut self, id: BatchId) -> &mut RefBatch {
                let part = self.parts.get_mut(&id.partition).expect("tracked");
                assert_eq!(part.epoch, id.epoch);
                part.batches
                    .iter_mut()
                    .find(|b| b.id == id)
                    .expect("known batch")
            }

            fn assign(&mut self, partition: i32, reuse_epoch: bool) {
                let epoch = match self.last_epoch.get(&partition) {
                    Some(&e) if reuse_epoch => e,
                    _ => {
                        self.next_epoch += 1;
                        self.next_epoch
                    }
                };
                self.drop_in_flight(partition);
                self.last_epoch.insert(partition, epoch);
                self.parts.insert(
                    partition,
                    RefPartition {
                        epoch,
                        ..RefPartition::default()
                    },
                );
                self.ledger.assign(partition, epoch);
            }

            fn drop_in_flight(&mut self, partition: i32) {
                let (gone, kept) = self
                    .in_flight
                    .drain(..)
                    .partition(|(id, _)| id.partition == partition);
                self.in_flight = kept;
                self.stale.extend(gone);
            }

            fn apply(&mut self, op: Op) {
                match op {
                    Op::Close {
                        partition,
                        outputs,
                        state,
                        offset_step,
                    } => {
                        let last_offset = offset_step.map(|step| {
                            let next = self.next_offset.entry(partition).or_insert(0);
                            *next += step;
                            *next
                        });
                        let got = self
                            .ledger
                            .close_batch(partition, last_offset, outputs, state);
                        let Some(part) = self.parts.get_mut(&partition) else {
                            assert_eq!(got, None);
                            return;
                        };
                        let id = got.expect("tracked partition accepts batches");
                        assert_eq!((id.partition, id.epoch), (partition, part.epoch));
                        if let Some(prev) = part.batches.last() {
                            assert!(id.seq > prev.id.seq);
                        }
                        part.batches.push(RefBatch {
                            id,
                            last_offset,
                            outputs,
                            state,
                            outputs_acked: 0,
                            state_acked: 0,
                            released: false,
                        });
                        self.in_flight
                            .extend((0..outputs).map(|_| (id, Kind::Output)));
                    }
                    Op::Extend {
                        partition,
                        outputs,
                        extra_state,
                        offset_step,
                    } => {
                        let waiting = self.parts.get(&partition).and_then(|part| {
                            part.batches
                                .last()
                                .filter(|b| !b.released && b.state > b.state_acked)
                                .map(|b| (b.id, b.state))
                        });
                        let Some((expected, state)) = waiting else {
                            assert_eq!(self.ledger.last_waiting(partition), None);
                            assert_eq!(
                                self.ledger.extend_last(partition, Some(i64::MAX), 1, 9),
                                None
                            );
                            return;
                        };
                        assert_eq!(self.ledger.last_waiting(partition), Some(expected));
                        let last_offset = offset_step.map(|step| {
                            let next = self.next_offset.entry(partition).or_insert(0);
                            *next += step;
                            *next
                        });
                        let total = state + extra_state;
                        let got = self
                            .ledger
                            .extend_last(partition, last_offset, outputs, total);
                        assert_eq!(got, Some(expected));
                        let b = self.batch(expected);
                        if last_offset.is_some() {
                            b.last_offset = last_offset;
                        }
                        b.outputs += outputs;
                        b.state = total;
                        self.in_flight
                            .extend((0..outputs).map(|_| (expected, Kind::Output)));
                    }
                    Op::Release => {
                        let mut out = Vec::new();
                        self.ledger.releasable_state(&mut out);
                        for id in out {
                            self.release(id);
                        }
                    }
                    Op::Ack(sel) => {
                        if self.in_flight.is_empty() {
                            return;
                        }
                        let (id, kind) = self.in_flight.swap_remove(sel % self.in_flight.len());
                        self.ack(id, kind);
                    }
                    Op::Fail(sel) => {
                        if self.in_flight.is_empty() {
                            return;
                        }
                        let (id, _) = self.in_flight[sel % self.in_flight.len()];
                        assert!(self.ledger.delivery_failed(id));
                        self.failures += 1;
                    }
                    Op::Revoke(partition) => {
                        let tracked = self.parts.remove(&partition).is_some();
                        assert_eq!(self.ledger.revoke(partition), tracked);
                        self.drop_in_flight(partition);
                    }
                    Op::LateAck(sel) => {
                        if self.stale.is_empty() {
                            return;
                        }
                        let (id, kind) = self.stale.swap_remove(sel % self.stale.len());
                        let counted = match kind {
                            Kind::Output => self.ledger.output_acked(id),
                            Kind::State => self.ledger.state_acked(id),
                        };
                        assert!(!counted, "late ack for {id:?} counted");
                        assert!(!self.ledger.delivery_failed(id));
                    }
                    Op::Assign {
                        partition,
                        reuse_epoch,
                    } => self.assign(partition, reuse_epoch),
                    Op::TakeOffsets => {
                        let mut out = Vec::new();
                        self.ledger.take_offsets(&mut out);
                        for (i, &(partition, offset)) in out.iter().enumerate() {
                            assert!(
                                out[..i].iter().all(|&(p, _)| p != partition),
                                "partition reported twice in one call"
                            );
                            let part = self.parts.get_mut(&partition).expect("tracked");
                            // (c) strictly increasing per partition-epoch.
                            assert!(
                                part.stored < Some(offset),
                                "{offset} after {:?}",
                                part.stored
                            );
                            part.stored = Some(offset);
                        }
                    }
                }
            }

            fn release(&mut self, id: BatchId) {
                let part = self.parts.get_mut(&id.partition).expect("tracked");
                assert_eq!(part.epoch, id.epoch, "released a stale batch");
                let mut state = None;
                for b in &part.batches {
                    if b.id.seq < id.seq {
                        // Rule 1: earlier state all acknowledged.
                        assert_eq!(b.state_acked, b.state, "earlier state of {:?} open", b.id);
                    } else if b.id == id {
                        assert!(!b.released, "released twice");
                        assert!(b.state > 0, "released a batch without state");
                        assert_eq!(b.outputs_acked, b.outputs, "outputs still open");
                        state = Some(b.state);
                    } else {
                        // (b) never two batches' state in flight at once.
                        assert!(!b.released, "later batch already released");
                    }
                }
                let state = state.expect("released an unknown batch");
                self.batch(id).released = true;
                self.in_flight.extend((0..state).map(|_| (id, Kind::State)));
            }

            fn ack(&mut self, id: BatchId, kind: Kind) {
                match kind {
                    Kind::Output => {
                        assert!(self.ledger.output_acked(id));
                        self.batch(id).outputs_acked += 1;
                    }
                    Kind::State => {
                        let part = self.parts.get_mut(&id.partition).expect("tracked");
                        // (b) state acks in non-decreasing batch order.
                        assert!(part.last_state_ack <= Some(id.seq));
                        part.last_state_ack = Some(id.seq);
                        assert!(self.ledger.state_acked(id));
                        let b = self.batch(id);
                        assert!(b.released);
                        b.state_acked += 1;
                    }
                }
            }

            fn check(&self) {
                let mut unacked = 0;
                for (&p, part) in &self.parts {
                    // (a) a stored offset covers only complete batches.
                    if let Some(stored) = part.stored {
                        let covered = part
                            .batches
                            .iter()
                            .rposition(|b| b.last_offset.is_some_and(|o| o <= stored))
                            .expect("stored offset belongs to a batch");
                        assert_eq!(part.batches[covered].last_offset, Some(stored));
                        for b in &part.batches[..=covered] {
                            assert!(b.complete(), "offset {stored} stored before {b:?} done");
                        }
                    }
                    let open = part.batches.iter().position(|b| !b.complete());
                    let pending = open.map_or(0, |i| part.batches.len() - i);
                    assert_eq!(self.ledger.pending_batches(p), pending);
                    assert_eq!(self.ledger.is_drained(p), pending == 0);
                    for b in &part.batches {
                        unacked += (b.outputs - b.outputs_acked + b.state - b.state_acked) as usize;
                    }
                }
                assert_eq!(self.ledger.unacknowledged(), unacked);
                assert_eq!(self.ledger.failed_deliveries(), self.failures);
                assert!(self.ledger.partitions().eq(self.parts.keys().copied()));
            }

            fn finish(&mut self) {
                for _ in 0..10_000 {
                    self.apply(Op::Release);
                    if self.in_flight.is_empty() {
                        break;
                    }
                    while !self.in_flight.is_empty() {
                        self.apply(Op::Ack(0));
                    }
                }
                assert!(self.in_flight.is_empty());
                self.apply(Op::TakeOffsets);
                self.check();
                assert_eq!(self.ledger.unacknowledged(), 0);
                for (&p, part) in &self.parts {
                    assert!(self.ledger.is_drained(p), "partition {p} not drained");
                    let highest = part.batches.iter().filter_map(|b| b.last_offset).max();
                    assert_eq!(part.stored, highest, "partition {p}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn ledger_matches_reference(ops in proptest::collection::vec(op(), 0..200)) {
                let mut h = Harness::new();
                h.check();
                for op in ops {
                    h.apply(op);
                    h.check();
                }
                h.finish();
            }
        }
    }
}
