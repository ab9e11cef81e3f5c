//! Security on a real broker: a `SASL_SSL` listener with SCRAM-SHA-512 users
//! and an mTLS listener (`ssl.client.auth=required`), both in front of
//! `StandardAuthorizer` ACLs. The worker runs with the client configurations
//! and the `kafka-acls.sh` commands of docs/deployment.md, read from that
//! page (so the page cannot drift from what was run):
//! - a SASL user and an mTLS principal with exactly the documented ACLs
//!   score the events (alerts, dead letters, state; the second restores what
//!   the first wrote);
//! - a user without WRITE on the alerts topic (bob), one without READ on
//!   the group (carol), one without any ACL on the dead-letter topic (dave)
//!   and one without READ on the input topic (erin) stop with a non-zero
//!   exit and an error naming the topic or the group and the missing
//!   operation, never waiting silently.
//!
//! One cluster for every case; carol, dave and erin run beside alice. The
//! harness's own clients and kcat use the PLAINTEXT listener, whose
//! `ANONYMOUS` principal is a super user (it also carries the node's own
//! traffic); the workers only ever use the secured listeners.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use churn_core::model::RiskModel;

use super::support::kafka::KafkaCluster;
use super::support::{DAY_MS, T0_MS, event, http_get, openssl, produce};
use super::{
    ALERTS, DLQ, INPUT, STATE, kcat_read, lines_by_partition, published_alerts, replayed_alert_ids,
    wait_for,
};

const GROUP: &str = "churn-scorer";
/// Erin's group: she must not take partitions from the others.
const ERIN_GROUP: &str = "churn-scorer-erin";
const ADMIN_PASSWORD: &str = "admin-secret";
/// The documented principal, replaced by the test's principals.
const DOC_PRINCIPAL: &str = "User:churn-scorer";
/// The mTLS client certificate's subject CN; the broker's mapping rule makes
/// it the principal `User:churn-scorer-mtls`.
const MTLS_CN: &str = "churn-scorer-mtls";
const KEY_PASSWORD: &str = "client-key-secret";

/// A CA; the broker's key and certificate for 127.0.0.1 in one PEM file (a
/// PEM keystore); a client certificate with an encrypted key, for mTLS.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=churn-scorer test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(
        dir.join("broker.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "broker.ext",
            "-out",
            "broker.crt",
        ],
    );
    // Kafka's PEM keystore: the (PKCS#8) key and the certificate chain.
    let keystore = [
        std::fs::read_to_string(dir.join("broker.key")).expect("broker key"),
        std::fs::read_to_string(dir.join("broker.crt")).expect("broker certificate"),
    ]
    .concat();
    std::fs::write(dir.join("broker.pem"), keystore).expect("keystore");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-passout",
            &format!("pass:{KEY_PASSWORD}"),
            "-subj",
            &format!("/CN={MTLS_CN}"),
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "client.pem",
        ],
    );
    let key = std::fs::read_to_string(dir.join("client.key")).expect("client key");
    assert!(key.contains("ENCRYPTED"), "the client key is encrypted");
}

/// The first fenced block of `lang` after `marker` in `page`.
fn block_after<'a>(page: &'a str, marker: &str, lang: &str) -> &'a str {
    let from = page
        .find(marker)
        .unwrap_or_else(|| panic!("docs/deployment.md has no {marker:?}"));
    let open = format!("```{lang}\n");
    let start = from
        + page[from..]
            .find(&open)
            .unwrap_or_else(|| panic!("no ```{lang} block after {marker:?}"))
        + open.len();
    let end = start + page[start..].find("```").expect("the block ends");
    &page[start..end]
}

fn deployment_doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deployment.md"))
        .expect("docs/deployment.md")
}

/// The documented `kafka-acls.sh` commands, as argument lists (the
/// executable and comments left out).
fn documented_acl_commands(page: &str) -> Vec<Vec<String>> {
    block_after(page, "### Minimal ACLs", "sh")
        .lines()
        .filter_map(|l| l.strip_prefix("kafka-acls.sh "))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// `args` with `from` replaced by `to` (whole arguments only).
fn replace_arg(args: &[String], from: &str, to: &str) -> Vec<String> {
    args.iter()
        .map(|a| if a == from { to.to_string() } else { a.clone() })
        .collect()
}

fn has_args(args: &[String], pair: [&str; 2]) -> bool {
    args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
}

/// A worker configuration: the documented block (`[kafka.consumer]` and
/// `[kafka.producer]`) with the test's files and user, after `[kafka]`.
fn write_config(
    dir: &Path,
    name: &str,
    bootstrap: &str,
    http_port: u16,
    documented: &str,
    user: Option<&str>,
    group: &str,
) -> PathBuf {
    let tls_dir = format!("{}/", dir.display());
    let mut block = documented.replace("/etc/churn-scorer/tls/", &tls_dir);
    if let Some(user) = user {
        block = block.replace(
            "\"sasl.username\" = \"churn-scorer\"",
            &format!("\"sasl.username\" = \"{user}\""),
        );
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\n{block}\n\
             [http]\naddr = \"127.0.0.1:{http_port}\"\n\
             [engine]\n# Alerts from event time only, as in the offline replay.\n\
             idle_timeout_secs = 86400\n"
        ),
    )
    .expect("write the worker's config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `churn-scorer run` as a process, its stderr in a file.
struct WorkerRun {
    name: &'static str,
    child: Child,
    http: std::net::SocketAddr,
    stderr: PathBuf,
}

impl WorkerRun {
    fn start(dir: &Path, name: &'static str, config: &Path, env: &[(&str, &str)]) -> WorkerRun {
        let stderr = dir.join(format!("{name}.stderr"));
        let text = std::fs::read_to_string(config).expect("config");
        let port = text
            .split("addr = \"127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("http port in the config");
        let child = Command::new(env!("CARGO_BIN_EXE_churn-scorer"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("churn-scorer runs");
        WorkerRun {
            name,
            child,
            http: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A counter or gauge from `/metrics` (summed over labels); 0 while the
    /// server is not up.
    fn metric(&self, name: &str) -> f64 {
        if std::net::TcpStream::connect_timeout(&self.http, Duration::from_millis(200)).is_err() {
            return 0.0;
        }
        let (_, body) = http_get(self.http, "/metrics", None);
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `what` holds; panics with the worker's stderr if it
    /// exits first or at `timeout`.
    fn wait_until(&mut self, what: &str, timeout: Duration, cond: impl Fn(&WorkerRun) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{}: exited ({status}) before {what}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the process to stop by itself, at most `limit` (then it is
    /// killed and the test fails): its exit status and stderr.
    fn exit_within(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.stderr());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {limit:?} (a hang, not a fatal error):\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and the exit status (bounded by the drain timeout and more).
    fn terminate(self) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        self.exit_within(Duration::from_secs(45))
    }
}

impl Drop for WorkerRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of `customers` customers per prefix over `days` days from
/// `day0`, in time order, with complaints and silence enough to raise
/// alerts.
fn events(prefixes: &[&str], customers: usize, day0: i64, days: i64) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(i64, String, Vec<u8>)> = Vec::new();
    for (prefix, c) in prefixes
        .iter()
        .flat_map(|p| (0..customers).map(move |c| (p, c)))
    {
        let id = format!("{prefix}{c:03}");
        for d in 0..days {
            let kind = match (c + d as usize) % 5 {
                0 if c % 2 == 0 => "complaint",
                1 if c % 3 == 0 => "support_ticket",
                2 => "purchase",
                _ => "login",
            };
            // Half the customers fall silent half-way: their risk rises.
            if c % 2 == 1 && d > days / 2 {
                continue;
            }
            let t = T0_MS + (day0 + d) * DAY_MS + c as i64 * 1000;
            let amount = (kind == "purchase").then_some(20.0);
            let line = event(&id, kind, t, amount);
            out.push((t, id.clone(), line.into_bytes()));
        }
    }
    out.sort_by_key(|(t, _, _)| *t);
    out.into_iter().map(|(_, id, line)| (id, line)).collect()
}

#[test]
fn sasl_scram_and_mtls_with_the_documented_acls() {
    let dir = tempfile::Builder::new()
        .prefix("churn-security-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let started = Instant::now();
    make_pki(d);
    let path = |f: &str| d.join(f).display().to_string();
    let users = [
        ("admin", ADMIN_PASSWORD),
        ("alice", "alice-secret"),
        ("bob", "bob-secret"),
        ("carol", "carol-secret"),
        ("dave", "dave-secret"),
        ("erin", "erin-secret"),
    ];
    let mut builder = KafkaCluster::builder()
        .listener("SASL_SSL", "SASL_SSL")
        .listener("MTLS", "SSL")
        .property(
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        )
        // The harness's own clients and the node itself (inter-broker and
        // controller traffic) use the PLAINTEXT listeners, as ANONYMOUS;
        // `admin` manages the ACLs over SASL_SSL. Nobody else is a super
        // user, and no ACL means no access.
        .property("super.users", "User:ANONYMOUS;User:admin")
        .property("allow.everyone.if.no.acl.found", "false")
        .property("sasl.enabled.mechanisms", "SCRAM-SHA-512")
        .property(
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        )
        .property("ssl.keystore.type", "PEM")
        .property("ssl.keystore.location", &path("broker.pem"))
        .property("ssl.truststore.type", "PEM")
        .property("ssl.truststore.location", &path("ca.pem"))
        .property("listener.name.mtls.ssl.client.auth", "required")
        .property(
            "ssl.principal.mapping.rules",
            "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        );
    for (name, password) in users {
        builder = builder.scram_user(name, password);
    }
    let Some(cluster) = builder.start("sasl_scram_and_mtls_with_the_documented_acls") else {
        return;
    };
    let plaintext = cluster.bootstrap();
    let sasl = cluster.bootstrap_for("SASL_SSL");
    let mtls = cluster.bootstrap_for("MTLS");
    cluster.create_topics(&[
        (INPUT, 2, &[]),
        (STATE, 2, &[("cleanup.policy", "compact")]),
        (ALERTS, 1, &[]),
        (DLQ, 1, &[]),
    ]);

    // The documented ACLs, by the admin over SASL_SSL: alice (SASL) and the
    // mTLS principal get all of them (the mTLS one without the optional
    // DescribeConfigs), bob all but Write on the alerts topic, carol all
    // but READ on the group, dave none on the dead-letter topic, erin
    // (in a group of her own) only DESCRIBE on the input topic.
    std::fs::write(
        d.join("admin.properties"),
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"admin\" password=\"{ADMIN_PASSWORD}\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n",
            path("ca.pem")
        ),
    )
    .expect("admin.properties");
    let page = deployment_doc();
    let documented = documented_acl_commands(&page);
    assert_eq!(
        documented.len(),
        6,
        "documented ACL commands: {documented:?}"
    );
    let mtls_principal = format!("User:{MTLS_CN}");
    let mut commands: Vec<Vec<String>> = Vec::new();
    for args in &documented {
        let alerts_write =
            has_args(args, ["--topic", ALERTS]) && has_args(args, ["--operation", "Write"]);
        let group = has_args(args, ["--group", GROUP]);
        let optional = has_args(args, ["--operation", "DescribeConfigs"]);
        let mut principals = vec!["User:alice"];
        if !optional {
            principals.push(&mtls_principal);
        }
        if !alerts_write {
            principals.push("User:bob");
        }
        if !group {
            principals.push("User:carol");
        }
        if !has_args(args, ["--topic", DLQ]) {
            principals.push("User:dave");
        }
        if !group && !has_args(args, ["--topic", INPUT]) {
            principals.push("User:erin");
        }
        let mut run: Vec<String> = Vec::new();
        for a in replace_arg(args, "$BROKERS", &sasl).into_iter().map(|a| {
            if a == "admin.properties" {
                path("admin.properties")
            } else {
                a
            }
        }) {
            if a == DOC_PRINCIPAL {
                let last = run.pop().expect("--allow-principal before the principal");
                for p in &principals {
                    run.push(last.clone());
                    run.push(p.to_string());
                }
                continue;
            }
            run.push(a);
        }
        commands.push(run);
    }
    let grant = |principal: &str, operation: &str, resource: [&str; 2]| -> Vec<String> {
        [
            "--bootstrap-server",
            &sasl,
            "--command-config",
            &path("admin.properties"),
            "--add",
            "--allow-principal",
            principal,
            "--operation",
            operation,
            resource[0],
            resource[1],
        ]
        .map(String::from)
        .to_vec()
    };
    // Bob may see the alerts topic (the start-up check passes), not write it.
    commands.push(grant("User:bob", "Describe", ["--topic", ALERTS]));
    // Erin may see the input topic, not read it; her group is hers.
    commands.push(grant("User:erin", "Describe", ["--topic", INPUT]));
    commands.push(grant("User:erin", "Read", ["--group", ERIN_GROUP]));
    std::thread::scope(|s| {
        for args in &commands {
            let cluster = &cluster;
            s.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cluster.tool("org.apache.kafka.tools.AclCommand", &args)
            });
        }
    });
    eprintln!(
        "security: cluster, certificates and {} ACL commands in {:?}",
        commands.len(),
        started.elapsed()
    );

    // Input: two rounds (one per principal) and some lines that are no events.
    // Round 2 goes on with round 1's customers (on the restored state) and
    // brings new ones.
    let first = events(&["s"], 24, 0, 30);
    let second = events(&["s", "t"], 24, 30, 20);
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("bad-1".into(), b"{not json".to_vec()),
        ("bad-2".into(), b"[1,2,3]".to_vec()),
    ];
    let mut round1 = first.clone();
    round1.extend(bad.iter().cloned());
    produce(&plaintext, INPUT, &round1);

    let sasl_block = block_after(&page, "**SASL/SCRAM over TLS**", "toml");
    let mtls_block = block_after(&page, "**mTLS**", "toml");

    // Carol: no READ on the group. Runs beside alice; joins nothing.
    let carol_config = write_config(
        d,
        "carol",
        &sasl,
        free_port(),
        sasl_block,
        Some("carol"),
        GROUP,
    );
    let carol = WorkerRun::start(
        d,
        "carol",
        &carol_config,
        &[("KAFKA_PASSWORD", "carol-secret")],
    );

    // Dave: nothing on the dead-letter topic. Refused by the start-up check.
    let dave_config = write_config(
        d,
        "dave",
        &sasl,
        free_port(),
        sasl_block,
        Some("dave"),
        GROUP,
    );
    let dave = WorkerRun::start(
        d,
        "dave",
        &dave_config,
        &[("KAFKA_PASSWORD", "dave-secret")],
    );

    // Erin: DESCRIBE but no READ on the input topic. Her fetches are refused.
    let erin_config = write_config(
        d,
        "erin",
        &sasl,
        free_port(),
        sasl_block,
        Some("erin"),
        ERIN_GROUP,
    );
    let erin = WorkerRun::start(
        d,
        "erin",
        &erin_config,
        &[("KAFKA_PASSWORD", "erin-secret")],
    );

    // Alice, SASL_SSL + SCRAM-SHA-512, the documented ACLs.
    let alice_config = write_config(
        d,
        "alice",
        &sasl,
        free_port(),
        sasl_block,
        Some("alice"),
        GROUP,
    );
    let mut alice = WorkerRun::start(
        d,
        "alice",
        &alice_config,
        &[("KAFKA_PASSWORD", "alice-secret")],
    );
    alice.wait_until("alice consumed round 1", Duration::from_secs(90), |w| {
        w.metric("churn_scorer_events_consumed_total") >= round1.len() as f64
    });

    let (status, stderr) = carol.exit_within(Duration::from_secs(60));
    eprintln!("security: carol (no READ on the group) stopped: {status}");
    assert!(
        !status.success(),
        "carol ran without READ on the group: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("security: carol's error: {last}");
    assert!(
        last.contains(&format!("group `{GROUP}`")) && last.contains("READ"),
        "carol's error names the group and READ: {stderr}"
    );

    let (status, stderr) = dave.exit_within(Duration::from_secs(60));
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("security: dave (nothing on the dead-letter topic) stopped: {status}: {last}");
    assert!(
        !status.success(),
        "dave ran without ACLs on {DLQ}: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "topic `{DLQ}` (topics.dead_letter) cannot be described"
        )) && stderr.contains("Topic authorization failed")
            && stderr.contains("needs DESCRIBE and WRITE on it"),
        "dave's error names the topic and the operations: {stderr}"
    );

    let (status, stderr) = erin.exit_within(Duration::from_secs(60));
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("security: erin (no READ on the input topic) stopped: {status}: {last}");
    assert!(
        !status.success(),
        "erin ran without READ on {INPUT}: {stderr}"
    );
    assert!(
        last.contains(&format!("lacks READ on topic `{INPUT}`")),
        "erin's error names the input topic and READ: {stderr}"
    );

    let model = RiskModel::default_model();
    let lateness_ms = churn_worker::config::EngineConfig::default().allowed_lateness_ms();
    let expect_alerts = |what: &str| {
        let by_partition = lines_by_partition(&plaintext);
        let (expected, expected_count) = replayed_alert_ids(&model, &by_partition, lateness_ms);
        assert!(
            expected.len() >= 5,
            "{what}: the data must alert: {expected:?}"
        );
        let mut published = BTreeMap::new();
        let mut count = 0;
        wait_for(what, Duration::from_secs(30), || {
            (published, count) = published_alerts(&plaintext);
            published.len() >= expected.len()
        });
        let ids: BTreeSet<String> = published.keys().cloned().collect();
        assert_eq!(
            ids, expected,
            "{what}: alert ids differ from the offline replay"
        );
        assert_eq!(count, expected_count, "{what}: alerts published twice");
        eprintln!(
            "security: {what}: {} alerts, equal to the replay",
            ids.len()
        );
        ids.len()
    };
    let alerts_after_alice = expect_alerts("alice's alerts");
    let mut dead = Vec::new();
    wait_for("the dead letters", Duration::from_secs(30), || {
        dead = kcat_read(&plaintext, DLQ);
        dead.len() >= bad.len()
    });
    let dead_keys: BTreeSet<_> = dead.iter().filter_map(|m| m.key.clone()).collect();
    assert_eq!(
        dead_keys,
        bad.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>(),
        "dead letters"
    );
    let customers: BTreeSet<String> = first.iter().map(|(k, _)| k.clone()).collect();
    wait_for(
        "a state record per customer",
        Duration::from_secs(30),
        || {
            let keys: BTreeSet<String> = kcat_read(&plaintext, STATE)
                .into_iter()
                .filter_map(|m| m.key)
                .filter(|k| !k.starts_with('\u{0}'))
                .collect();
            keys == customers
        },
    );
    let (status, stderr) = alice.terminate();
    assert!(status.success(), "alice stops cleanly: {status}\n{stderr}");

    // The mTLS principal (encrypted client key, password from the
    // environment) takes over the group: restores alice's state and scores
    // round 2 on top of it.
    produce(&plaintext, INPUT, &second);
    let mtls_config = write_config(d, "mtls", &mtls, free_port(), mtls_block, None, GROUP);
    let mut by_cert = WorkerRun::start(
        d,
        "mtls",
        &mtls_config,
        &[("KAFKA_KEY_PASSWORD", KEY_PASSWORD)],
    );
    by_cert.wait_until(
        "the mTLS worker consumed round 2",
        Duration::from_secs(90),
        |w| w.metric("churn_scorer_events_consumed_total") >= second.len() as f64,
    );
    assert_eq!(
        by_cert.metric("churn_scorer_state_restored_customers_total"),
        customers.len() as f64,
        "the mTLS worker restored alice's customers"
    );
    let alerts_total = expect_alerts("alerts after the mTLS worker");
    assert!(alerts_total > alerts_after_alice, "round 2 alerted too");
    let (status, stderr) = by_cert.terminate();
    assert!(
        status.success(),
        "the mTLS worker stops cleanly: {status}\n{stderr}"
    );
    // No DESCRIBE_CONFIGS: the compaction check is skipped, said so.
    assert!(stderr.contains("cleanup.policy"), "{stderr}");

    // Bob: every ACL but WRITE on the alerts topic; new events (after the
    // others in event time: not late) that alert.
    let third = events(&["b"], 24, 50, 30);
    produce(&plaintext, INPUT, &third);
    let (with_third, _) = replayed_alert_ids(&model, &lines_by_partition(&plaintext), lateness_ms);
    assert!(
        with_third.len() > alerts_total,
        "bob's events must alert for the test to mean anything"
    );
    let bob_config = write_config(d, "bob", &sasl, free_port(), sasl_block, Some("bob"), GROUP);
    let bob = WorkerRun::start(d, "bob", &bob_config, &[("KAFKA_PASSWORD", "bob-secret")]);
    let (status, stderr) = bob.exit_within(Duration::from_secs(90));
    assert!(
        !status.success(),
        "bob ran without WRITE on the alerts topic: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("security: bob (no WRITE on the alerts topic) stopped: {status}: {last}");
    assert!(
        last.contains(&format!("topic `{ALERTS}`")) && last.contains("WRITE"),
        "bob's error names the alerts topic and WRITE: {stderr}"
    );
    assert_eq!(
        published_alerts(&plaintext).0.len(),
        alerts_total,
        "bob published no alert"
    );
    eprintln!("security: every case done in {:?}", started.elapsed());
}
