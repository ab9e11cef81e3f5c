//! An embedded Kafka broker for development, demos and tests: librdkafka's
//! mock cluster, kept on a thread of its own.
//!
//! It speaks the real Kafka protocol on 127.0.0.1, so any client (kcat,
//! Python, Java) can use it. It is **not** a production broker: it keeps only
//! the most recent ~5 MiB (or 100 k batches) per partition, never compacts,
//! has no admin API, and accepts transactions without emulating
//! read_committed isolation or transactional offset commits.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

use churn_worker::config::TopicsConfig;

/// Errors of the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// librdkafka refused to create the mock cluster or a topic.
    #[error("mock broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker thread is gone.
    #[error("mock broker thread stopped")]
    Stopped,
    /// The requested port could not be bound.
    #[error("cannot listen on {addr} (set by --port): {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<(), BrokerError>>),
    SetBrokerUp(i32, bool, mpsc::Sender<Result<(), BrokerError>>),
    Advertise(i32, String, i32, mpsc::Sender<Result<(), BrokerError>>),
    SetBrokerRtt(
        i32,
        std::time::Duration,
        mpsc::Sender<Result<(), BrokerError>>,
    ),
    SetTopicError(
        String,
        rdkafka_sys::RDKafkaRespErr,
        mpsc::Sender<Result<(), BrokerError>>,
    ),
    PushRequestErrors(
        rdkafka_sys::RDKafkaApiKey,
        Vec<rdkafka_sys::RDKafkaRespErr>,
        mpsc::Sender<Result<(), BrokerError>>,
    ),
    Stop,
}

/// A running mock cluster. Dropping it stops the brokers.
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: u32) -> Result<Self, BrokerError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mock-broker".into())
            .spawn(move || run_cluster(brokers, ready_tx, command_rx))
            .map_err(|_| BrokerError::Stopped)?;
        let bootstrap = ready_rx.recv().map_err(|_| BrokerError::Stopped)??;
        Ok(EmbeddedBroker {
            bootstrap,
            commands,
            thread: Some(thread),
        })
    }

    /// Starts a one-broker mock cluster reachable on `127.0.0.1:port`.
    ///
    /// The mock cluster always listens on a port of its own choosing; a
    /// forwarding listener on `port` relays connections to it, and the broker
    /// advertises `port` in its metadata, so clients only ever use `port`.
    pub fn start_on_port(port: u16) -> Result<Self, BrokerError> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let listener = std::net::TcpListener::bind(addr).map_err(|e| BrokerError::Listen {
            addr: addr.to_string(),
            source: e,
        })?;
        let mut broker = Self::start(1)?;
        let target = broker.bootstrap.clone();
        let (tx, rx) = mpsc::channel();
        broker
            .commands
            .send(Command::Advertise(
                1,
                "127.0.0.1".into(),
                i32::from(port),
                tx,
            ))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)??;
        std::thread::Builder::new()
            .name("broker-port".into())
            .spawn(move || forward(listener, target))
            .map_err(|_| BrokerError::Stopped)?;
        broker.bootstrap = addr.to_string();
        Ok(broker)
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock has no admin API, so this is the only way to
    /// choose a partition count).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::CreateTopic(name.to_string(), partitions, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Creates the input, alerts, dead-letter and state topics (and the shadow
    /// alerts topic, if named) with `partitions` each.
    pub fn create_default_topics(
        &self,
        topics: &TopicsConfig,
        partitions: i32,
    ) -> Result<(), BrokerError> {
        for name in [
            &topics.input,
            &topics.alerts,
            &topics.dead_letter,
            &topics.state,
        ]
        .into_iter()
        .chain(&topics.shadow_alerts)
        {
            self.create_topic(name, partitions)?;
        }
        Ok(())
    }

    /// Takes broker `id` (1-based) down or brings it back up (outage tests).
    pub fn set_broker_up(&self, id: i32, up: bool) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::SetBrokerUp(id, up, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Delays every response of broker `id` by `rtt` (a broker that is up
    /// but stalled, as a paused process would be).
    pub fn set_broker_rtt(&self, id: i32, rtt: std::time::Duration) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::SetBrokerRtt(id, rtt, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Makes every request about `topic` fail with `error` (e.g. an
    /// authorisation failure), as `rd_kafka_mock_topic_set_error` does.
    pub fn set_topic_error(
        &self,
        topic: &str,
        error: rdkafka_sys::RDKafkaRespErr,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::SetTopicError(topic.to_string(), error, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Makes the next requests of type `api` fail with `errors`, one each
    /// (`rd_kafka_mock_push_request_errors`).
    pub fn push_request_errors(
        &self,
        api: rdkafka_sys::RDKafkaApiKey,
        errors: &[rdkafka_sys::RDKafkaRespErr],
    ) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::PushRequestErrors(api, errors.to_vec(), tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_cluster(
    brokers: u32,
    ready: mpsc::Sender<Result<String, BrokerError>>,
    commands: mpsc::Receiver<Command>,
) {
    // A client configured with test.mock.num.brokers owns the mock cluster;
    // it is !Send, so it lives and dies on this thread.
    let producer: BaseProducer = match ClientConfig::new()
        .set("test.mock.num.brokers", brokers.to_string())
        .set("log_level", "3")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let Some(cluster) = producer.client().mock_cluster() else {
        let _ = ready.send(Err(BrokerError::Stopped));
        return;
    };
    // The mock delays the first group join by 3 s; workers and tests should
    // not wait for that.
    // SAFETY: the handle is a live mock-enabled client owned by this thread,
    // and the cluster pointer it returns lives as long as that client.
    unsafe {
        let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
        if !raw.is_null() {
            rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
    }
    if ready.send(Ok(cluster.bootstrap_servers())).is_err() {
        return;
    }
    while let Ok(command) = commands.recv() {
        match command {
            Command::CreateTopic(name, partitions, reply) => {
                let _ = reply.send(
                    cluster
                        .create_topic(&name, partitions, 1)
                        .map_err(BrokerError::from),
                );
            }
            Command::SetBrokerUp(id, up, reply) => {
                let result = if up {
                    cluster.broker_up(id)
                } else {
                    cluster.broker_down(id)
                };
                let _ = reply.send(result.map_err(BrokerError::from));
            }
            Command::Advertise(id, host, port, reply) => {
                let result = match std::ffi::CString::new(host) {
                    Ok(host) => {
                        // SAFETY: as above; the cluster outlives this call and
                        // librdkafka copies the host string.
                        unsafe {
                            let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(
                                producer.client().native_ptr(),
                            );
                            if raw.is_null() {
                                Err(BrokerError::Stopped)
                            } else {
                                rdkafka_sys::rd_kafka_mock_broker_set_host_port(
                                    raw,
                                    id,
                                    host.as_ptr(),
                                    port,
                                );
                                Ok(())
                            }
                        }
                    }
                    Err(_) => Err(BrokerError::Stopped),
                };
                let _ = reply.send(result);
            }
            Command::SetBrokerRtt(id, rtt, reply) => {
                let result = cluster.broker_round_trip_time(id, rtt);
                let _ = reply.send(result.map_err(BrokerError::from));
            }
            Command::SetTopicError(topic, error, reply) => {
                let result = cluster.topic_error(&topic, error);
                let _ = reply.send(result.map_err(BrokerError::from));
            }
            Command::PushRequestErrors(api, errors, reply) => {
                cluster.request_errors(api, &errors);
                let _ = reply.send(Ok(()));
            }
            Command::Stop => break,
        }
    }
    drop(cluster);
    producer.flush(std::time::Duration::from_millis(100)).ok();
}

/// Relays every connection on `listener` to `target` (the mock broker).
fn forward(listener: std::net::TcpListener, target: String) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(upstream) = std::net::TcpStream::connect(&target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
            move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Both);
            }
        };
        std::thread::spawn(pipe(client, upstream));
        std::thread::spawn(pipe(upstream2, client2));
    }
}
