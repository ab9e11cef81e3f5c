//! TLS and SASL are compiled in: the worker's Kafka client completes a TLS
//! handshake with a local TLS listener (`openssl s_server`, certificate
//! signed by a test CA made here), fails with an error naming the CA file
//! when given another CA, and creates SASL_SSL/SCRAM clients.
//!
//! Needs the `openssl` command (installed by `.ci/run`).

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::BaseProducer;
use support::openssl;

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
fn make_pki(dir: &Path) {
    let subj_ca = "/CN=churn-scorer test CA";
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subj_ca,
            "-keyout", "ca.key", "-out", "ca.pem",
        ],
    );
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
            "/CN=some other CA",
            "-keyout",
            "wrong-ca.key",
            "-out",
            "wrong-ca.pem",
        ],
    );
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
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

struct Server {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                // Exit (flushing its output) once the first client disconnects.
                "-naccept",
                "1",
            ])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_server starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        // No probe connection: with -naccept 1 it would use up the server.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log.lock().expect("log").contains("ACCEPT") {
            assert!(Instant::now() < deadline, "s_server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, log }
    }

    /// Everything s_server printed, once it exited (or after 3 s).
    fn output(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.log.lock().expect("log").clone()
    }
}

fn write_config(dir: &Path, name: &str, port: u16, ca: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let tls = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{ca}\"\n");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = \"127.0.0.1:{port}\"\n\
             [kafka.consumer]\n{tls}[kafka.producer]\n{tls}\
             [http]\naddr = \"127.0.0.1:0\"\n"
        ),
    )
    .expect("config");
    path
}

fn run_worker(config: &Path, wait: Duration) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new(BIN)
        .args(["run", "--connect-timeout", "20", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let deadline = Instant::now() + wait;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

#[test]
fn worker_completes_a_tls_handshake_with_the_right_ca() {
    let dir = tempfile::tempdir().expect("dir");
    make_pki(dir.path());
    let server = Server::start(dir.path());
    // `ca.pem` is relative: resolved next to the configuration file.
    let config = write_config(dir.path(), "tls.toml", server.port, "ca.pem");
    let (status, err) = run_worker(&config, Duration::from_secs(6));
    let server_log = server.output();
    // s_server is no Kafka broker: after the handshake, the worker keeps
    // waiting for a Kafka answer (still running when stopped).
    assert!(status.is_none(), "the worker kept waiting for Kafka: {err}");
    assert!(
        server_log.contains("CIPHER is"),
        "the TLS handshake completed on the server side: {server_log}"
    );
    assert!(!err.contains("certificate verify failed"), "{err}");
}

#[test]
fn wrong_ca_fails_with_an_error_naming_the_ca_file() {
    let dir = tempfile::tempdir().expect("dir");
    make_pki(dir.path());
    let server = Server::start(dir.path());
    let config = write_config(dir.path(), "tls.toml", server.port, "wrong-ca.pem");
    let started = Instant::now();
    let (status, err) = run_worker(&config, Duration::from_secs(30));
    drop(server);
    let status = status.expect("the worker stops on a certificate error");
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails fast, without waiting for the connect timeout"
    );
    let last = err.lines().last().unwrap_or_default();
    let ca = dir.path().join("wrong-ca.pem");
    assert!(last.contains(&ca.display().to_string()), "{err}");
    assert!(last.contains("ssl.ca.location"), "{err}");
    assert!(last.contains("certificate verify failed"), "{err}");
}

#[test]
fn sasl_ssl_clients_are_created_for_every_mechanism() {
    let dir = tempfile::tempdir().expect("dir");
    make_pki(dir.path());
    let ca = dir.path().join("ca.pem");
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let producer: Result<BaseProducer, _> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanisms", mechanism)
            .set("sasl.username", "churn-scorer")
            .set("sasl.password", "secret")
            .set("ssl.ca.location", ca.display().to_string())
            .set("log_level", "0")
            .create();
        assert!(producer.is_ok(), "{mechanism}: {:?}", producer.err());
    }
    let oauth: Result<BaseProducer, _> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9")
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanisms", "OAUTHBEARER")
        .set("sasl.oauthbearer.config", "principal=churn-scorer")
        .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
        .set("ssl.ca.location", ca.display().to_string())
        .set("log_level", "0")
        .create();
    assert!(oauth.is_ok(), "OAUTHBEARER: {:?}", oauth.err());
}

#[test]
fn version_lists_the_tls_and_sasl_features() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .split("builtin.features: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    for f in [
        "ssl",
        "sasl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
    ] {
        assert!(
            features
                .trim_end_matches([')', '\n'])
                .split(',')
                .any(|x| x == f),
            "{f} missing: {text}"
        );
    }
}
