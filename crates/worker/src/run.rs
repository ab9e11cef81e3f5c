//! The worker's threads: the group thread (consumer group membership,
//! rebalance callbacks, statistics, changelog restores, the bounded
//! shutdown) and N pipeline threads, each reading its own partitions'
//! queues and processing them.
//!
//! Every input partition's fetch queue is split from the consumer's main
//! queue once, at start (librdkafka keeps a partition queue split across
//! rebalances), and handed to the pipeline thread [`owner_of`] names, so
//! messages of a partition are only ever processed by one thread, in order,
//! and never copied. A partition the topic gained after start has no queue
//! of its own; its messages arrive on the main queue and the group thread
//! hands them to the owning core.
//!
//! Shutdown guarantee: from the moment it is asked to stop, the group thread
//! returns within `shutdown.drain_timeout_secs` + 10 s whatever the brokers
//! do: the pipeline threads stop within a poll, the drain runs once against
//! one deadline (a revoke during the close shares it), the commit is
//! asynchronous with a deadline, the consumer is closed on a thread of its
//! own with a deadline, and the producers are flushed with one. It returns
//! `Ok` only if everything was drained and committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;

use crate::commands::{CommandQueue, ModelSet};
use crate::deletions::DeletionReader;
use crate::directory::PartitionDirectory;
use crate::error::WorkerError;
use crate::group::{
    AssignmentWait, CommitOutcome, GroupContext, commit_with_deadline, log_assignment_wait,
    store_offsets,
};
use crate::kafka::{self, DeliveryContext};
use crate::membership::MembershipReader;
use crate::pipeline::{CommitResult, Core, CoreHandle, owner_of, set_paused};
use crate::preflight::preflight;
use crate::registry::ModelRegistry;
use crate::restore::{Restored, restore_partition};
use crate::sink::{LogLimiter, SinkFatal};

/// Budgets of the steps after the drain: 7 s in all, leaving room within the
/// promised 10 s for the process itself to wind down.
const COMMIT_WAIT: Duration = Duration::from_secs(2);
const LEAVE_WAIT: Duration = Duration::from_secs(1);
const CLOSE_WAIT: Duration = Duration::from_millis(2500);
const FLUSH_WAIT: Duration = Duration::from_millis(1500);
/// How long the membership tombstone may take, after everything else (the
/// 10 s promise still holds: 8 s in all).
const WITHDRAW_WAIT: Duration = Duration::from_secs(1);
/// How long the group thread waits for the pipeline threads to stop.
const PIPELINE_STOP_WAIT: Duration = Duration::from_secs(1);
/// Messages taken from one partition queue before the next queue's turn.
const BURST: usize = 64;

type Consumer0 = BaseConsumer<GroupContext>;
type Queue = rdkafka::consumer::base_consumer::PartitionQueue<GroupContext>;

/// What a pipeline thread's loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopState {
    /// Messages are flowing: poll without waiting.
    Busy,
    /// Nothing to read: wait (briefly while acknowledgements are due).
    Idle,
    /// Too much unacknowledged work: serve acknowledgements instead of reading.
    Backpressured,
}

/// Why the group thread's loop ended.
enum Stop {
    /// Shutdown was requested.
    Requested,
    /// An output sink hit a fault waiting cannot fix.
    Fatal(SinkFatal),
    /// A pipeline thread ended with an error or panicked.
    Failed(WorkerError),
}

struct RestoreDone {
    partition: i32,
    epoch: u64,
    result: Result<Restored, WorkerError>,
}

/// The changelog restores in progress, each on a thread of its own.
struct Restores {
    tx: mpsc::Sender<RestoreDone>,
    rx: mpsc::Receiver<RestoreDone>,
    running: usize,
    retry: Vec<(Instant, i32, u64)>,
}

impl Restores {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Restores {
            tx,
            rx,
            running: 0,
            retry: Vec::new(),
        }
    }

    /// Starts requested restores and installs finished ones.
    fn step(
        &mut self,
        cores: &[CoreHandle],
        consumer: &Consumer0,
        config: &WorkerConfig,
        registry: &ModelRegistry,
        metrics: &Metrics,
    ) -> Result<(), WorkerError> {
        let now = Instant::now();
        let mut requests: Vec<(i32, u64)> = Vec::new();
        for handle in cores {
            let mut c = handle.lock_from_outside()?;
            requests.extend(c.restore_requests.drain(..).map(|r| (r.partition, r.epoch)));
        }
        if requests.is_empty() && self.running == 0 && self.retry.is_empty() {
            return Ok(());
        }
        self.retry.retain(|&(at, p, e)| {
            let due = at <= now;
            if due {
                requests.push((p, e));
            }
            !due
        });
        for (partition, epoch) in requests {
            let tx = self.tx.clone();
            let config = config.clone();
            // The model in use now; a reload while it runs is applied on install.
            let model = registry.current_model();
            let progress = metrics
                .partition_restore_progress
                .with_label_values(&[&partition.to_string()]);
            let spawned = std::thread::Builder::new()
                .name(format!("restore-{partition}"))
                .spawn(move || {
                    let result = restore_partition(&config, &model, partition, &progress);
                    let _ = tx.send(RestoreDone {
                        partition,
                        epoch,
                        result,
                    });
                });
            if spawned.is_ok() {
                self.running += 1;
            } else {
                self.retry
                    .push((now + Duration::from_secs(1), partition, epoch));
            }
        }
        let input = &config.topics.input;
        while let Ok(done) = self.rx.try_recv() {
            self.running = self.running.saturating_sub(1);
            match done.result {
                Ok(restored) => {
                    if let Some((applied, log_end)) = restored.input_reset {
                        metrics
                            .input_resets
                            .with_label_values(&["reset_positions"])
                            .inc();
                        tracing::error!(
                            topic = %input,
                            partition = done.partition,
                            applied,
                            log_end,
                            "the changelog records input positions past the input partition's \
                             end: the input topic was recreated or truncated; every customer's \
                             state is kept and its recorded position forgotten \
                             (state.on_input_reset = reset_positions)"
                        );
                    }
                    let owner = &cores[owner_of(done.partition, cores.len())];
                    let installed = owner.lock_from_outside()?.install_restore(
                        done.partition,
                        done.epoch,
                        restored,
                    );
                    let Some(rewind) = installed else {
                        continue;
                    };
                    tracing::debug!(
                        partition = done.partition,
                        ?rewind,
                        "restore installed; resuming"
                    );
                    if let Some(offset) = rewind
                        && let Err(e) = consumer.seek(
                            input,
                            done.partition,
                            rdkafka::Offset::Offset(offset),
                            Duration::from_secs(5),
                        )
                    {
                        tracing::error!(partition = done.partition, error = %e, "seek after restore failed");
                    }
                    if let Err(e) = set_paused(consumer, input, done.partition, false) {
                        tracing::error!(partition = done.partition, error = %e, "resume failed");
                    }
                    owner.wake();
                }
                // A missing ACL: retrying cannot help either.
                Err(e @ WorkerError::NotAuthorized { .. }) => return Err(e),
                Err(e @ WorkerError::InputTopicReset { .. }) => {
                    // Retrying cannot help, and skipping would lose events:
                    // stop, with the error saying what to do.
                    metrics.input_resets.with_label_values(&["fail"]).inc();
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(partition = done.partition, error = %e, "state restore failed; retrying in 5 s");
                    self.retry.push((
                        Instant::now() + Duration::from_secs(5),
                        done.partition,
                        done.epoch,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs the worker's pipeline until `shutdown`: this (dedicated) thread
/// becomes the group thread and starts `pipeline.threads` pipeline threads.
pub fn run_pipeline(
    config: WorkerConfig,
    metrics: Metrics,
    registry: Arc<ModelRegistry>,
    directory: Arc<PartitionDirectory>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // Exactly-once: one transactional producer per pipeline thread, its
    // `transactional.id` stable across restarts of this instance.
    let exactly_once = config.processing.exactly_once();
    let instance = kafka::instance_identity(&config);
    let producer_config = |thread: usize| {
        if exactly_once {
            kafka::transactional_producer_config(&config, &instance, thread)
        } else {
            kafka::producer_config(&config)
        }
    };
    let producer: BaseProducer<DeliveryContext> =
        producer_config(0).create_with_context(DeliveryContext::default())?;
    let Some(input_partitions) = preflight(&config, &shutdown)? else {
        tracing::info!("stopped before joining the group");
        return Ok(());
    };
    let input_topic = config.topics.input.clone();
    let drain_timeout = Duration::from_secs(config.shutdown.drain_timeout_secs);
    let threads = config.pipeline.thread_count();
    let mut producers = vec![producer];
    for thread in 1..threads {
        producers.push(producer_config(thread).create_with_context(DeliveryContext::default())?);
    }
    // Registered with the model registry, which sends them reloads and erasures.
    let cores: Arc<[CoreHandle]> = registry.start_cores(|models: ModelSet| {
        let cores: Arc<[CoreHandle]> = producers
            .into_iter()
            .map(|producer| {
                CoreHandle::new(Core::new(
                    &config,
                    models.clone(),
                    metrics.clone(),
                    Arc::clone(&registry),
                    Arc::clone(&directory),
                    producer,
                ))
            })
            .collect();
        let queues: Vec<Arc<CommandQueue>> = cores.iter().map(CoreHandle::queue).collect();
        (cores, queues)
    });
    let _registered = Registered(&registry);
    if exactly_once {
        // Before joining: fences this instance's crashed predecessor (same
        // transactional ids) and aborts its open transactions, so the
        // changelog restores below are not held up by them.
        for (thread, handle) in cores.iter().enumerate() {
            let id = kafka::transactional_id(&config, &instance, thread);
            handle.lock()?.init_transactions(&config, id.clone())?;
            tracing::info!(transactional_id = %id, "exactly-once: transactional producer ready");
        }
    }
    let context = GroupContext {
        cores: Arc::clone(&cores),
        directory: Arc::clone(&directory),
        metrics: metrics.clone(),
        input_topic: input_topic.clone(),
        drain_timeout,
        commit_log: Default::default(),
        coordinator: Default::default(),
        leave_by: Default::default(),
        exactly_once,
    };
    let consumer: Arc<Consumer0> = Arc::new(
        kafka::consumer_config(&config, &config.kafka.group_id).create_with_context(context)?,
    );
    // Before any pipeline thread starts: nothing to stop if it fails.
    let mut deletions = DeletionReader::new(&config)?;
    let mut deletion_errors = LogLimiter::default();
    let mut membership = MembershipReader::new(&config, input_partitions, &metrics)?;
    // Split before the first poll, so no message of these partitions is
    // fetched onto the main queue.
    let mut queues: Vec<Vec<(i32, Queue)>> = (0..threads).map(|_| Vec::new()).collect();
    for p in 0..i32::try_from(input_partitions).unwrap_or(i32::MAX) {
        match consumer.split_partition_queue(&input_topic, p) {
            Some(q) => queues[owner_of(p, threads)].push((p, q)),
            None => tracing::warn!(
                partition = p,
                "cannot split the partition's queue; the group thread will hand its messages over"
            ),
        }
    }
    consumer.subscribe(&[&input_topic])?;
    tracing::info!(topic = %input_topic, group = %config.kafka.group_id, threads, "subscribed");

    let stop = Arc::new(AtomicBool::new(false));
    let commit_interval =
        exactly_once.then(|| Duration::from_millis(config.processing.commit_interval_ms));
    let mut handles: Vec<JoinHandle<Result<Option<SinkFatal>, WorkerError>>> = Vec::new();
    for (i, mut mine) in queues.into_iter().enumerate() {
        let my_cores = Arc::clone(&cores);
        let my_consumer = Arc::clone(&consumer);
        let my_stop = Arc::clone(&stop);
        let topic = input_topic.clone();
        let group = config.kafka.group_id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pipeline-{i}"))
            .spawn(move || {
                let handle = &my_cores[i];
                handle.set_thread(std::thread::current());
                for (_, q) in &mut mine {
                    let cores = Arc::clone(&my_cores);
                    q.set_nonempty_callback(move || cores[i].wake());
                }
                let result = pipeline_loop(
                    handle,
                    &mine,
                    &my_consumer,
                    &topic,
                    &group,
                    &my_stop,
                    commit_interval,
                );
                // The queues hold the consumer: give them up before it closes.
                drop(mine);
                result
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::Release);
                for h in &cores[..] {
                    h.wake();
                }
                return Err(WorkerError::Http(e));
            }
        }
    }

    let mut restores = Restores::new();
    let mut consumer_errors = LogLimiter::default();
    let mut assignment_wait = AssignmentWait::new(Instant::now());
    let stopped = loop {
        if shutdown.is_cancelled() {
            break Stop::Requested;
        }
        if !directory.is_joined()
            && let Some(waited) = assignment_wait.due(Instant::now())
        {
            let coordinator = consumer.context().coordinator();
            log_assignment_wait(&config.kafka.group_id, coordinator.as_deref(), waited);
        }
        if handles.iter().any(JoinHandle::is_finished) {
            break Stop::Failed(WorkerError::PipelineStopped);
        }
        restores.step(&cores, &consumer, &config, &registry, &metrics)?;
        // A failure is retried at the next step; the partitions' positions
        // stay where they were applied.
        if let Some(d) = &mut deletions
            && let Err(e) = d.step(&cores)
            && let Some(held_back) = deletion_errors.allow(Duration::from_secs(10))
        {
            tracing::warn!(error = %e, similar_not_logged = held_back, "deletion topic reader");
        }
        // Reads claims and publishes ours when the assignment changed (a
        // rebalance callback ran in the previous poll).
        if let Some(m) = &mut membership {
            m.step(&directory, &metrics);
        }
        let timeout = if restores.running > 0 || !restores.retry.is_empty() {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(timeout) {
            Some(Ok(msg)) => {
                // A partition without a queue of its own (see the module documentation).
                let owner = &cores[owner_of(rdkafka::Message::partition(&msg), threads)];
                owner.lock_from_outside()?.process(&msg);
            }
            Some(Err(e)) => {
                metrics.consumer_errors.inc();
                // A missing ACL: librdkafka would retry forever.
                if let Some(fatal) =
                    WorkerError::from_consumer_error(&e, &config.kafka.group_id, &input_topic)
                {
                    tracing::error!(error = %e, "consumer refused: stopping");
                    break Stop::Failed(fatal);
                }
                if let Some(held_back) = consumer_errors.allow(Duration::from_secs(10)) {
                    tracing::warn!(error = %e, similar_not_logged = held_back, "consumer error");
                }
                for h in &cores[..] {
                    h.lock_from_outside()?.fetch_failed();
                }
            }
            None => {}
        }
    };

    // Commands from now on are refused (their callers see the worker stopping).
    registry.stop_cores();
    stop.store(true, Ordering::Release);
    for h in &cores[..] {
        h.wake();
    }
    let stopped = join_pipelines(handles, stopped);
    let outcome = shut_down(&cores, consumer, &input_topic, drain_timeout)?;
    // After the partitions are given up: until their new owners claim them,
    // lookups of their customers answer 503 (retry), never a false 404.
    if let Some(m) = membership {
        m.withdraw(WITHDRAW_WAIT);
    }
    match stopped {
        Stop::Fatal(SinkFatal {
            transactional_id: Some(transactional_id),
            cause,
            ..
        }) => Err(WorkerError::TransactionFatal {
            transactional_id,
            cause,
        }),
        Stop::Fatal(f) => Err(WorkerError::from_output_fault(f.topic, f.code, f.cause)),
        Stop::Failed(e) => Err(e),
        Stop::Requested if outcome.clean() => {
            tracing::info!("worker stopped: everything drained and committed");
            Ok(())
        }
        Stop::Requested => {
            tracing::error!(
                drained = outcome.drained,
                committed = outcome.committed,
                unsettled = outcome.unsettled,
                "worker stopped with work not drained or not committed; those events will be \
                 re-read after restart"
            );
            Err(WorkerError::ShutdownIncomplete {
                drained: outcome.drained,
                committed: outcome.committed,
                unsettled: outcome.unsettled,
            })
        }
    }
}

/// Takes the cores off the model registry however `run_pipeline` ends.
struct Registered<'a>(&'a ModelRegistry);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.stop_cores();
    }
}

/// Waits (bounded) for the pipeline threads to stop; a fatal output fault
/// or failure of any of them outranks a requested stop.
fn join_pipelines(
    handles: Vec<JoinHandle<Result<Option<SinkFatal>, WorkerError>>>,
    mut stopped: Stop,
) -> Stop {
    let deadline = Instant::now() + PIPELINE_STOP_WAIT;
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !h.is_finished() {
            tracing::warn!("a pipeline thread did not stop in time; leaving it behind");
            continue;
        }
        let result = h.join().unwrap_or(Err(WorkerError::PipelineStopped));
        match result {
            Ok(Some(f)) if !matches!(stopped, Stop::Fatal(_)) => {
                stopped = Stop::Fatal(f);
            }
            Err(e) if matches!(stopped, Stop::Requested | Stop::Failed(_)) => {
                stopped = Stop::Failed(e);
            }
            _ => {}
        }
    }
    stopped
}

/// One pipeline thread: reads its partition queues in bursts, processes
/// each message on its core, serves its producer's acknowledgements and
/// stores the offsets they make storable. Returns a fatal output fault, if
/// one stopped it.
fn pipeline_loop(
    handle: &CoreHandle,
    queues: &[(i32, Queue)],
    consumer: &Consumer0,
    input_topic: &str,
    group: &str,
    stop: &AtomicBool,
    commit_interval: Option<Duration>,
) -> Result<Option<SinkFatal>, WorkerError> {
    let mut state = LoopState::Idle;
    let mut next_commit = commit_interval.map(|i| Instant::now() + i);
    let mut awaiting_acks = false;
    let mut since_serve = 0_usize;
    let mut last_tick = Instant::now();
    let mut next_queue = 0_usize;
    let mut consumer_errors = LogLimiter::default();
    while !stop.load(Ordering::Acquire) {
        // Between bursts, with no batch half-processed: a reload applies
        // to whole batches.
        let commands = handle.take_commands();
        if !commands.is_empty() {
            let mut c = handle.lock()?;
            for command in commands {
                c.execute(command);
            }
        }
        state = match state {
            LoopState::Backpressured => {
                let mut c = handle.lock()?;
                c.close_all_batches();
                c.serve_deliveries(Duration::from_millis(10));
                let offsets = c.take_offsets();
                let still = c.backpressured();
                drop(c);
                store_offsets(consumer, input_topic, offsets);
                handle.step_aside();
                if still {
                    LoopState::Backpressured
                } else {
                    LoopState::Idle
                }
            }
            LoopState::Busy | LoopState::Idle => {
                let mut got = 0_usize;
                let mut pressured = false;
                let mut c = handle.lock()?;
                for k in 0..queues.len() {
                    let (_, queue) = &queues[(next_queue + k) % queues.len()];
                    for _ in 0..BURST {
                        match queue.poll(Duration::ZERO) {
                            Some(Ok(msg)) => {
                                c.process(&msg);
                                got += 1;
                            }
                            Some(Err(e)) => {
                                consumer.context().metrics.consumer_errors.inc();
                                if let Some(fatal) =
                                    WorkerError::from_consumer_error(&e, group, input_topic)
                                {
                                    tracing::error!(error = %e, "fetch refused: stopping");
                                    return Err(fatal);
                                }
                                if let Some(held_back) =
                                    consumer_errors.allow(Duration::from_secs(10))
                                {
                                    tracing::warn!(error = %e, similar_not_logged = held_back, "consumer error");
                                }
                                c.fetch_failed();
                                break;
                            }
                            None => break,
                        }
                    }
                    if c.backpressured() {
                        pressured = true;
                        break;
                    }
                }
                next_queue = next_queue.wrapping_add(1);
                if got == 0 {
                    c.close_all_batches();
                    since_serve = usize::MAX;
                }
                drop(c);
                handle.step_aside();
                since_serve = since_serve.saturating_add(got);
                if pressured {
                    LoopState::Backpressured
                } else if got > 0 {
                    LoopState::Busy
                } else {
                    LoopState::Idle
                }
            }
        };

        if since_serve >= 512 {
            since_serve = 0;
            let mut c = handle.lock()?;
            c.serve_deliveries(Duration::ZERO);
            let offsets = c.take_offsets();
            awaiting_acks = c.awaiting_acks();
            if c.backpressured() {
                state = LoopState::Backpressured;
            }
            let fatal = c.fatal();
            drop(c);
            store_offsets(consumer, input_topic, offsets);
            if fatal.is_some() {
                return Ok(fatal);
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let mut c = handle.lock()?;
            c.tick();
            awaiting_acks = c.awaiting_acks();
            if c.backpressured() {
                state = LoopState::Backpressured;
            }
        }
        // Exactly-once: the transaction is committed every commit interval.
        if let (Some(interval), Some(due)) = (commit_interval, next_commit)
            && Instant::now() >= due
        {
            let mut c = handle.lock()?;
            let result = c.commit(consumer);
            awaiting_acks = c.awaiting_acks();
            let fatal = c.fatal();
            drop(c);
            handle.step_aside();
            if result == CommitResult::Fatal || fatal.is_some() {
                return Ok(fatal);
            }
            next_commit = Some(Instant::now() + interval);
        }
        if state == LoopState::Idle {
            // Woken early when a queue fills (its non-empty callback) or on stop.
            let mut wait = if awaiting_acks {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            if let Some(due) = next_commit {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            std::thread::park_timeout(wait);
        }
    }
    Ok(None)
}

struct ShutdownOutcome {
    drained: bool,
    committed: bool,
    unsettled: usize,
}

impl ShutdownOutcome {
    fn clean(&self) -> bool {
        self.drained && self.committed && self.unsettled == 0
    }
}

/// Drains once, commits, leaves the group and flushes, each with a deadline
/// (see the module documentation). The pipeline threads have stopped.
fn shut_down(
    cores: &[CoreHandle],
    consumer: Arc<Consumer0>,
    input_topic: &str,
    drain_timeout: Duration,
) -> Result<ShutdownOutcome, WorkerError> {
    tracing::info!("shutting down: draining in-flight work");
    let deadline = Instant::now() + drain_timeout;
    let mut drained = true;
    for h in cores {
        h.lock_from_outside()?.begin_shutdown(deadline);
    }
    for h in cores {
        let mut c = h.lock_from_outside()?;
        if c.is_transactional() {
            // Drains, then commits outputs, state and offsets in the transaction.
            drained &= c.commit(&*consumer) == CommitResult::Committed;
            continue;
        }
        let all = c.partition_ids();
        drained &= c.drain(&all, deadline);
        let offsets = c.take_offsets();
        drop(c);
        store_offsets(&consumer, input_topic, offsets);
    }
    if !drained {
        tracing::warn!("drain timed out; unacknowledged events will be re-read after restart");
    }

    let committed = match commit_with_deadline(&consumer, COMMIT_WAIT) {
        CommitOutcome::Committed => true,
        CommitOutcome::TimedOut => {
            tracing::warn!(
                "final offset commit not confirmed within {} s",
                COMMIT_WAIT.as_secs()
            );
            false
        }
        CommitOutcome::Failed(cause) => {
            tracing::warn!(%cause, "final offset commit failed");
            false
        }
    };

    let leave_until = Instant::now() + LEAVE_WAIT;
    // Unsubscribing revokes our partitions, whose commit would otherwise
    // be awaited for 5 s: with the coordinator away that came on top of
    // the final commit's wait (SIGTERM with a paused broker took 39.7 s of
    // a 40 s bound, tests/real_broker/broker_faults.rs).
    if let Ok(mut leave_by) = consumer.context().leave_by.lock() {
        *leave_by = Some(leave_until);
    }
    consumer.unsubscribe();
    let any_assigned = || -> Result<bool, WorkerError> {
        for h in cores {
            if !h.lock_from_outside()?.partition_ids().is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    while Instant::now() < leave_until && any_assigned()? {
        consumer.poll(Duration::from_millis(50));
    }
    // Our partitions are drained, but librdkafka has not left the group yet:
    // with cooperative-sticky it first completes the incremental unassign,
    // whose offset commit is still in flight, and only then sends the
    // LeaveGroup. Closing now lost the leave on Apache Kafka (the
    // partitions then waited out the session timeout, as after a kill:
    // tests/real_broker/), so keep serving the consumer for the rest of
    // the leave budget.
    while Instant::now() < leave_until {
        consumer.poll(Duration::from_millis(50));
    }
    // A consumer that cannot reach its coordinator can block in close.
    let (closed_tx, closed_rx) = mpsc::channel();
    let closer = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed_tx.send(());
        });
    if closer.is_ok() && closed_rx.recv_timeout(CLOSE_WAIT).is_err() {
        tracing::warn!(
            "consumer did not close within {} s; leaving it behind",
            CLOSE_WAIT.as_secs()
        );
    }
    let flush_until = Instant::now() + FLUSH_WAIT;
    let mut unsettled = 0;
    for h in cores {
        let left = flush_until.saturating_duration_since(Instant::now());
        unsettled += h.lock_from_outside()?.flush_producer(left);
    }
    Ok(ShutdownOutcome {
        drained,
        committed,
        unsettled,
    })
}
