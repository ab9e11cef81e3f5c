//! A real Apache Kafka cluster for the integration tests: the broker's jars
//! (resolved by `tests/kafka/resolve.sh` into `tests/kafka/lib/`, version
//! pinned in `tests/kafka/pom.xml`) run as JVM processes on 127.0.0.1, in
//! KRaft mode, each node a combined broker and controller.
//!
//! [`KafkaCluster::builder`] picks free ports, writes each node's
//! `server.properties`, formats its storage (`kafka.tools.StorageTool
//! format`), starts `kafka.Kafka`, and waits (with a deadline) until every
//! broker answers metadata requests. Tests can kill (`SIGKILL`), stop
//! (`SIGTERM`), pause (`SIGSTOP`), resume (`SIGCONT`) and restart one node by
//! id. Everything started is killed on drop, also when the test panics; the
//! nodes' logs are then printed. A node also dies with the test process
//! (`PR_SET_PDEATHSIG`), so an interrupted `cargo test` leaves no JVM behind.
//!
//! Without Java or the resolved jars, [`KafkaCluster::builder`]'s `start`
//! returns `None` after printing why (the test then passes without running);
//! with `CHURN_SCORER_REQUIRE_KAFKA=1` (set by `.ci/run`) it panics instead.
//! With `CHURN_SCORER_REAL_BROKER_SUITE_RAN=1` it returns `None` at once
//! (`.ci/run` runs the suite on its own first).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Set to `1` to make a missing Java or missing jars a test failure.
pub const REQUIRE_ENV: &str = "CHURN_SCORER_REQUIRE_KAFKA";

/// Where `tests/kafka/resolve.sh` puts the broker's jars.
pub fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/lib")
}

fn log4j_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/log4j2.properties")
}

/// The `java` to run: `$JAVA_HOME/bin/java`, else `java` on the PATH.
fn java() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    match Command::new(&candidate)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(candidate),
        Ok(s) => Err(format!("`{} -version` failed: {s}", candidate.display())),
        Err(e) => Err(format!("no `{}`: {e}", candidate.display())),
    }
}

/// Why a real broker cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if let Err(e) = java() {
        return Some(format!("{e} (install a Java 17+ runtime)"));
    }
    let lib = lib_dir();
    let has_broker = std::fs::read_dir(&lib)
        .map(|d| {
            d.filter_map(Result::ok).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("kafka_2.13-") && name.ends_with(".jar")
            })
        })
        .unwrap_or(false);
    if !has_broker {
        return Some(format!(
            "no Kafka broker jars in {} (run tests/kafka/resolve.sh)",
            lib.display()
        ));
    }
    None
}

/// Set to `1` by `.ci/run` for `cargo test` after it ran the real-broker
/// suite on its own (with more test threads: its scenarios mostly wait on
/// broker timeouts), so that the suite does not run twice.
pub const RAN_ENV: &str = "CHURN_SCORER_REAL_BROKER_SUITE_RAN";

/// `true` if the suite already ran in this CI run ([`RAN_ENV`]); says so.
pub fn already_ran(test: &str) -> bool {
    let ran = std::env::var(RAN_ENV).as_deref() == Ok("1");
    if ran {
        eprintln!("{test}: skipped here, the real-broker suite ran before ({RAN_ENV}=1)");
    }
    ran
}

/// `true` if the test may run; otherwise prints why it is skipped, or
/// panics if [`REQUIRE_ENV`] is set.
pub fn available(test: &str) -> bool {
    if already_ran(test) {
        return false;
    }
    match unavailable() {
        None => true,
        Some(why) => {
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{test}: a real Kafka broker is required ({REQUIRE_ENV}=1) but {why}");
            }
            eprintln!("{test}: SKIPPED, no real Kafka broker: {why}");
            false
        }
    }
}

/// A listener every node gets besides the inter-broker `PLAINTEXT` one and
/// the `CONTROLLER` one, e.g. `("SASL_SSL", "SASL_SSL")` or
/// `("MTLS", "SSL")`; its settings go in as broker properties
/// (`listener.name.mtls.ssl.client.auth=required`, ...).
#[derive(Debug, Clone)]
struct ExtraListener {
    name: String,
    protocol: String,
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    properties: BTreeMap<String, String>,
    listeners: Vec<ExtraListener>,
    /// SCRAM-SHA-512 users written into the storage at format time: (name, password).
    scram_users: Vec<(String, String)>,
    heap: String,
    ready_timeout: Duration,
}

impl ClusterBuilder {
    /// `n` combined broker+controller nodes (the controller quorum is all of
    /// them: 1 or 3 are sensible).
    pub fn nodes(mut self, n: usize) -> Self {
        assert!(n >= 1, "at least one node");
        self.nodes = n;
        self
    }

    /// A broker property for every node (overrides the harness's defaults,
    /// e.g. `auto.create.topics.enable`, `log.cleaner.backoff.ms`).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// An extra listener named `name` with `security_protocol`, on a free
    /// port of its own on each node; [`KafkaCluster::bootstrap_for`] gives
    /// its addresses.
    pub fn listener(mut self, name: &str, security_protocol: &str) -> Self {
        self.listeners.push(ExtraListener {
            name: name.to_ascii_uppercase(),
            protocol: security_protocol.into(),
        });
        self
    }

    /// A SCRAM-SHA-512 user, created when the storage is formatted
    /// (`StorageTool format --add-scram`): KRaft has no ZooKeeper to hold
    /// credentials before the brokers are up. The listener that
    /// authenticates with it is set up with [`ClusterBuilder::listener`]
    /// and properties (`listener.name.<name>.sasl.enabled.mechanisms`, ...).
    pub fn scram_user(mut self, name: &str, password: &str) -> Self {
        self.scram_users.push((name.into(), password.into()));
        self
    }

    /// The JVM heap of each node (`-Xmx`), default `512m`.
    pub fn heap(mut self, heap: &str) -> Self {
        self.heap = heap.into();
        self
    }

    /// Starts the cluster and waits until every broker answers metadata
    /// requests. `None` if no real broker can run here (see [`available`]).
    pub fn start(self, test: &str) -> Option<KafkaCluster> {
        if !available(test) {
            return None;
        }
        Some(KafkaCluster::start(self))
    }
}

/// A topic to create: (name, partitions, topic configs).
pub type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// One node: a combined broker and controller.
#[derive(Debug)]
struct Node {
    id: i32,
    /// Listener name -> port (`PLAINTEXT`, `CONTROLLER` and extra ones).
    ports: BTreeMap<String, u16>,
    dir: PathBuf,
    properties: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; everything in it is killed on drop.
#[derive(Debug)]
pub struct KafkaCluster {
    nodes: Vec<Node>,
    java: PathBuf,
    heap: String,
    ready_timeout: Duration,
    /// How long `start` took, from the first format to every broker answering.
    pub startup: Duration,
    // Last: removed after the nodes are killed.
    dir: tempfile::TempDir,
}

/// Free TCP ports on 127.0.0.1, all distinct (the listeners are held until
/// every port is picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding
/// (what `kafka-storage.sh random-uuid` prints). Like Kafka's own
/// `Uuid.randomUuid`, it never starts with `-`: the storage tool's argument
/// parser would read such an id as an option (one CI run in 64 failed so).
fn cluster_id() -> String {
    loop {
        let id = encode_cluster_id(rand::random());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(char::from(ALPHABET[((bits >> n) & 63) as usize]));
        }
    }
    if n > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - n)) & 63) as usize]));
    }
    out
}

/// The last `lines` lines of a file, for failure output.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `kafka.Kafka` for `node`, its output appended to the node's log.
fn spawn_node(java: &Path, heap: &str, node: &mut Node) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .expect("node log file");
    let err = log.try_clone().expect("node log file");
    let mut command = Command::new(java);
    command
        .arg(format!("-Xmx{}", heap))
        .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"])
        .arg("-Djava.awt.headless=true")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            log4j_config().display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", lib_dir().display()))
        .arg("kafka.Kafka")
        .arg(&node.properties)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group, so that a signal meant for it reaches
        // everything it runs and nothing of ours.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only sets the signal this
    // child receives when the thread that spawned it exits.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    node.child = Some(command.spawn().expect("start kafka.Kafka"));
}

impl KafkaCluster {
    /// A single node with the harness's defaults.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 1,
            properties: BTreeMap::new(),
            listeners: Vec::new(),
            scram_users: Vec::new(),
            heap: "512m".into(),
            ready_timeout: Duration::from_secs(90),
        }
    }

    fn start(spec: ClusterBuilder) -> KafkaCluster {
        let started = Instant::now();
        let java = java().expect("java was found a moment ago");
        let dir = tempfile::Builder::new()
            .prefix("churn-kafka-")
            .tempdir()
            .expect("temp dir for the cluster");
        let mut names = vec!["PLAINTEXT".to_string(), "CONTROLLER".to_string()];
        names.extend(spec.listeners.iter().map(|l| l.name.clone()));
        let ports = free_ports(spec.nodes * names.len());
        let mut nodes: Vec<Node> = (0..spec.nodes)
            .map(|i| {
                let id = i as i32 + 1;
                let node_dir = dir.path().join(format!("node-{id}"));
                std::fs::create_dir_all(node_dir.join("data")).expect("node dir");
                Node {
                    id,
                    ports: names
                        .iter()
                        .enumerate()
                        .map(|(j, name)| (name.clone(), ports[i * names.len() + j]))
                        .collect(),
                    properties: node_dir.join("server.properties"),
                    log: node_dir.join("server.log"),
                    dir: node_dir,
                    child: None,
                }
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.ports["CONTROLLER"]))
            .collect::<Vec<_>>()
            .join(",");
        let replication = spec.nodes.min(3);
        let min_isr = if replication >= 3 { 2 } else { 1 };
        for node in &nodes {
            let mut props: BTreeMap<String, String> = BTreeMap::new();
            let mut set = |k: &str, v: String| {
                props.insert(k.to_string(), v);
            };
            set("process.roles", "broker,controller".into());
            set("node.id", node.id.to_string());
            set("controller.quorum.voters", voters.clone());
            set("controller.listener.names", "CONTROLLER".into());
            set("inter.broker.listener.name", "PLAINTEXT".into());
            let listeners = names
                .iter()
                .map(|name| format!("{name}://127.0.0.1:{}", node.ports[name]))
                .collect::<Vec<_>>()
                .join(",");
            let advertised = names
                .iter()
                .filter(|name| *name != "CONTROLLER")
                .map(|name| format!("{name}://127.0.0.1:{}", node.ports[name]))
                .collect::<Vec<_>>()
                .join(",");
            set("listeners", listeners);
            set("advertised.listeners", advertised);
            let mut protocols = vec![
                "PLAINTEXT:PLAINTEXT".to_string(),
                "CONTROLLER:PLAINTEXT".to_string(),
            ];
            protocols.extend(
                spec.listeners
                    .iter()
                    .map(|l| format!("{}:{}", l.name, l.protocol)),
            );
            set("listener.security.protocol.map", protocols.join(","));
            set("log.dirs", node.dir.join("data").display().to_string());
            // As managed clusters: topics are created on purpose.
            set("auto.create.topics.enable", "false".into());
            set("num.partitions", "1".into());
            set("default.replication.factor", replication.to_string());
            set("min.insync.replicas", min_isr.to_string());
            set("offsets.topic.replication.factor", replication.to_string());
            // Fewer partitions than the default 50: created faster, same semantics.
            set("offsets.topic.num.partitions", "10".into());
            set(
                "transaction.state.log.replication.factor",
                replication.to_string(),
            );
            set("transaction.state.log.min.isr", min_isr.to_string());
            set(
                "share.coordinator.state.topic.replication.factor",
                replication.to_string(),
            );
            set("share.coordinator.state.topic.min.isr", min_isr.to_string());
            // A new group's first join is not held for 3 s: tests measure joins.
            set("group.initial.rebalance.delay.ms", "0".into());
            for (k, v) in &spec.properties {
                set(k, v.clone());
            }
            let mut text = String::from("# written by tests/support/kafka.rs\n");
            for (k, v) in &props {
                let _ = writeln!(text, "{k}={v}");
            }
            std::fs::write(&node.properties, text).expect("write server.properties");
        }
        let id = cluster_id();
        let scram: Vec<String> = spec
            .scram_users
            .iter()
            .flat_map(|(name, password)| {
                [
                    "--add-scram".to_string(),
                    format!("SCRAM-SHA-512=[name={name},password={password}]"),
                ]
            })
            .collect();
        // Formatting starts a JVM per node: in parallel.
        let formats: Vec<(i32, Child)> = nodes
            .iter()
            .map(|node| {
                let child = Command::new(&java)
                    .arg("-Xmx256m")
                    .arg(format!(
                        "-Dlog4j2.configurationFile={}",
                        log4j_config().display()
                    ))
                    .arg("-cp")
                    .arg(format!("{}/*", lib_dir().display()))
                    .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
                    .arg(format!("--cluster-id={id}"))
                    .args(&scram)
                    .arg("-c")
                    .arg(&node.properties)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run kafka.tools.StorageTool");
                (node.id, child)
            })
            .collect();
        for (node, child) in formats {
            let out = child.wait_with_output().expect("kafka.tools.StorageTool");
            assert!(
                out.status.success(),
                "formatting node {node}'s storage failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let formatted = started.elapsed();
        let mut cluster = KafkaCluster {
            nodes: Vec::new(),
            java,
            heap: spec.heap,
            ready_timeout: spec.ready_timeout,
            startup: Duration::ZERO,
            dir,
        };
        for node in &mut nodes {
            spawn_node(&cluster.java, &cluster.heap, node);
        }
        cluster.nodes = nodes;
        let ids = cluster.node_ids();
        cluster.wait_for_brokers(&ids, cluster.ready_timeout);
        cluster.startup = started.elapsed();
        eprintln!(
            "Kafka: {} node(s) formatted in {formatted:?}, answering after {:?} ({})",
            cluster.nodes.len(),
            cluster.startup,
            cluster.bootstrap()
        );
        cluster
    }

    /// The node ids, 1-based.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// `bootstrap.servers` for the `PLAINTEXT` listener of every node.
    pub fn bootstrap(&self) -> String {
        self.bootstrap_for("PLAINTEXT")
    }

    /// `bootstrap.servers` for the listener named `name`.
    pub fn bootstrap_for(&self, name: &str) -> String {
        let name = name.to_ascii_uppercase();
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.ports[&name]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node's data directory (its `log.dirs`).
    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.node(id).dir.join("data")
    }

    /// The process id of a running node.
    pub fn pid(&self, id: i32) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    fn signal(&self, id: i32, signal: &str) {
        let pid = self
            .pid(id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // The node leads its own process group: signal the group.
        let status = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{pid}")])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} node {id}");
    }

    /// `kill -9` one node (no shutdown, no flush).
    pub fn kill(&mut self, id: i32) {
        self.signal(id, "KILL");
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM one node and wait (at most `limit`) for its controlled
    /// shutdown; killed at the limit. Returns how long it took.
    pub fn stop(&mut self, id: i32, limit: Duration) -> Duration {
        let started = Instant::now();
        self.signal(id, "TERM");
        let mut child = self.node_mut(id).child.take().expect("running");
        while started.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        started.elapsed()
    }

    /// SIGSTOP one node: it holds its connections and answers nothing.
    pub fn pause(&self, id: i32) {
        self.signal(id, "STOP");
    }

    /// SIGCONT a paused node.
    pub fn resume(&self, id: i32) {
        self.signal(id, "CONT");
    }

    /// Starts a node that was killed or stopped (same id, ports and data)
    /// and waits until it answers metadata requests again.
    pub fn restart(&mut self, id: i32) {
        let (java, heap) = (self.java.clone(), self.heap.clone());
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is still running");
        spawn_node(&java, &heap, node);
        self.wait_for_brokers(&[id], self.ready_timeout);
    }

    /// Waits until a metadata request lists every broker in `ids`, or
    /// panics with the nodes' logs at `timeout`.
    pub fn wait_for_brokers(&mut self, ids: &[i32], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let bootstrap = self.bootstrap();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "3")
            // Nodes come up one after the other: retry connecting often
            // rather than backing off to librdkafka's 10 s.
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "250")
            .create()
            .expect("metadata client");
        loop {
            for node in &mut self.nodes {
                if let Some(child) = node.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "Kafka node {} exited ({status}) while starting:\n{}",
                        node.id,
                        tail(&node.log, 60)
                    );
                }
            }
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
                let up: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                if ids.iter().all(|id| up.contains(id)) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "brokers {ids:?} did not answer within {timeout:?}\n{}",
                    self.logs(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of every node's log.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "----- Kafka node {} ({}) -----\n{}",
                node.id,
                node.log.display(),
                tail(&node.log, lines)
            );
        }
        out
    }

    /// Creates topics with the admin API and waits until each is visible
    /// with every partition led.
    pub fn create_topics(&self, topics: &[TopicSpec<'_>]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let replication = self.nodes.len().min(3) as i32;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(name, partitions, configs)| {
                configs.iter().fold(
                    NewTopic::new(name, *partitions, TopicReplication::Fixed(replication)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = runtime
            .block_on(admin.create_topics(new.iter(), &options))
            .expect("create topics");
        for r in results {
            if let Err((topic, e)) = r {
                panic!("creating topic {topic} failed: {e}");
            }
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client");
        let deadline = Instant::now() + Duration::from_secs(30);
        for (name, partitions, _) in topics {
            loop {
                let ready = consumer
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        let t = md.topics().iter().find(|t| t.name() == *name)?;
                        Some(
                            t.error().is_none()
                                && t.partitions().len() == *partitions as usize
                                && t.partitions().iter().all(|p| p.leader() >= 0),
                        )
                    })
                    .unwrap_or(false);
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "topic {name} never became ready");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Deletes topics with the admin API and waits until none is visible.
    pub fn delete_topics(&self, names: &[&str]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in runtime
            .block_on(admin.delete_topics(names, &options))
            .expect("delete topics")
        {
            if let Err((topic, e)) = r {
                panic!("deleting topic {topic} failed: {e}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while names.iter().any(|n| self.topic_exists(n)) {
            assert!(
                Instant::now() < deadline,
                "topics {names:?} never went away"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether `topic` exists, asked without allowing its creation.
    pub fn topic_exists(&self, topic: &str) -> bool {
        super::topic_exists(&self.bootstrap(), topic)
    }

    /// Runs a Kafka tool class (e.g. `kafka.tools.DumpLogSegments`) on the
    /// cluster's classpath; returns its stdout, panics if it fails.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let out = Command::new(&self.java)
            .arg("-Xmx256m")
            // A short-lived client: start fast rather than optimise
            // (about half the CPU of a default JVM for `kafka-acls`).
            .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                log4j_config().display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", lib_dir().display()))
            .arg(class)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {class}: {e}"));
        assert!(
            out.status.success(),
            "{class} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let pid = child.id();
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if panicking {
            eprintln!(
                "the test failed; the Kafka nodes' logs end with:\n{}",
                self.logs(80)
            );
        }
    }
}
