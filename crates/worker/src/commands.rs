//! What other threads ask of a pipeline thread (model reloads, erasures,
//! deletion-topic records), and the queue they are posted to. Below both the
//! pipeline (which carries commands out) and the model registry (which
//! posts reloads to every registered queue), so neither imports the other's
//! internals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

use churn_core::model::RiskModel;

/// The live model and the shadow model scored beside it, if any: swapped
/// together by a reload.
#[derive(Clone)]
pub struct ModelSet {
    /// The model whose alerts are published.
    pub live: Arc<RiskModel>,
    /// `model.shadow_path`: scored on every event too, its alerts only
    /// counted (and published to `topics.shadow_alerts`, if set).
    pub shadow: Option<Arc<RiskModel>>,
}

/// A request to a pipeline thread, carried out on it between bursts (so it
/// never waits for a lock held across polls, and applies between batches).
pub enum Command {
    /// Score with `model` from the next batch on.
    Reload {
        /// The new models, validated.
        models: ModelSet,
        /// Answered once the thread's partitions use it.
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// Erase a customer if one of the thread's partitions holds it.
    Erase {
        /// The customer.
        customer_id: String,
        /// Answered with the outcome.
        done: tokio::sync::oneshot::Sender<EraseOutcome>,
    },
    /// A deletion-topic record: erase the customer from input partition
    /// `partition` (the deletion topic's partition of the same number), if
    /// it is still ours in assignment `epoch`.
    EraseFromTopic {
        /// Input partition (= deletion topic partition).
        partition: i32,
        /// Assignment epoch the record was read for.
        epoch: u64,
        /// The record's key.
        customer_id: String,
        /// The record's offset.
        offset: i64,
    },
}

/// What an erasure did on one pipeline thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseOutcome {
    /// Input partitions the customer was removed from (more than one only
    /// if its events were misrouted); their tombstones follow with the next
    /// flush.
    pub erased: Vec<i32>,
    /// Some of the thread's partitions are still being restored, so the
    /// customer may yet appear there.
    pub restoring: bool,
}

/// One pipeline thread's inbox: commands queued by other threads, carried
/// out by the pipeline thread between bursts, and the thread to wake.
#[derive(Default)]
pub struct CommandQueue {
    /// The pipeline thread, to wake it when a partition queue fills or the
    /// worker stops.
    thread: OnceLock<Thread>,
    /// Requests from other threads (reload, erasure), carried out by the
    /// pipeline thread between bursts.
    commands: Mutex<Vec<Command>>,
    /// Set while `commands` may be non-empty: the loop checks it without a lock.
    has_commands: AtomicBool,
}

impl CommandQueue {
    /// Queues a command for the pipeline thread and wakes it.
    pub fn send(&self, command: Command) {
        if let Ok(mut queue) = self.commands.lock() {
            queue.push(command);
            self.has_commands.store(true, Ordering::Release);
        }
        self.wake();
    }

    /// The queued commands (from the pipeline thread).
    pub fn take(&self) -> Vec<Command> {
        if !self.has_commands.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.commands
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Records the pipeline thread (once, from that thread).
    pub fn set_thread(&self, thread: Thread) {
        let _ = self.thread.set(thread);
    }

    /// Wakes the pipeline thread if it is waiting for messages.
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}
