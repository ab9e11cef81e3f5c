//! Lookups from any instance: two workers in one group on the mock
//! cluster, with a membership topic; each answers `/v1/customers/{id}` for
//! the customers the other holds (forwarded once, with the instances' own
//! peer token, never the caller's),
//! a 404 means no member holds the customer, and after one member leaves
//! the other answers for everyone.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use churn_core::model::RiskModel;
use churn_worker::forwarding::{FORWARDED_HEADER, SERVED_BY_HEADER};
use churn_worker::partitioner::KeyPartitioner;
use support::*;

const PARTITIONS: i32 = 4;
const MEMBERSHIP: &str = "churn-scorer-members";
const TOKEN: &str = "read-token";
const ADMIN_TOKEN: &str = "admin-token";
const PEER_TOKEN: &str = "peer-token";

fn config(bootstrap: &str) -> churn_worker::config::WorkerConfig {
    let mut c = worker_config(bootstrap);
    c.topics.membership = Some(MEMBERSHIP.into());
    c.http.bearer_token = Some(TOKEN.into());
    c.http.admin_token = Some(ADMIN_TOKEN.into());
    c.http.peer_token = Some(PEER_TOKEN.into());
    // The workers listen on 127.0.0.1; nothing else is trusted.
    c.lookup.peer_urls = vec!["http://127.0.0.1:*".into()];
    c
}

/// An answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` with the read token and `extra` headers.
fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

fn url(w: &RunningWorker) -> String {
    format!("http://{}", w.http)
}

fn forwarded(w: &RunningWorker, result: &str) -> u64 {
    w.metrics()
        .lookups_forwarded
        .with_label_values(&[result])
        .get()
}

fn forwarded_total(w: &RunningWorker) -> u64 {
    churn_worker::telemetry::FORWARD_RESULTS
        .iter()
        .map(|r| forwarded(w, r))
        .sum()
}

/// Both members' membership views name each one as the owner of exactly
/// the partitions it holds.
fn membership_settled(a: &RunningWorker, b: &RunningWorker) -> bool {
    let mut actual = BTreeMap::new();
    for w in [a, b] {
        for (p, _) in w.handles.directory.partition_status() {
            actual.insert(p, url(w));
        }
    }
    actual.len() == PARTITIONS as usize
        && [a, b]
            .iter()
            .all(|w| w.handles.directory.partition_owners().to_map() == actual)
}

#[test]
fn each_member_answers_lookups_for_customers_the_other_owns() {
    let broker = broker(PARTITIONS);
    broker
        .create_topic(MEMBERSHIP, 1)
        .expect("membership topic");
    let bootstrap = broker.bootstrap_servers().to_string();
    let model = RiskModel::default_model();
    let lines = history(60, 20, 41);
    produce_events(&bootstrap, "customer-events", &lines);

    let a = RunningWorker::start(config(&bootstrap), model.clone());
    let b = RunningWorker::start(config(&bootstrap), model.clone());
    b.wait_until(
        "both members hold partitions, have consumed everything and agree on the membership",
        Duration::from_secs(90),
        |b| {
            a.metrics().partitions_assigned.get() > 0
                && b.metrics().partitions_assigned.get() > 0
                && a.handles.directory.is_ready()
                && b.handles.directory.is_ready()
                && a.metrics().events_consumed.get() + b.metrics().events_consumed.get()
                    >= lines.len() as u64
                && membership_settled(&a, b)
        },
    );

    // Every event is applied (each customer held by exactly one member).
    let as_of = T0_MS + 21 * DAY_MS;
    let expected = offline_scores(&model, &lines, as_of);
    let deadline = Instant::now() + Duration::from_secs(60);
    let owner_of = |id: &str| -> Option<(&RunningWorker, &RunningWorker, u32)> {
        match (
            a.handles.lookups.lookup(id, Some(as_of)),
            b.handles.lookups.lookup(id, Some(as_of)),
        ) {
            (Some(v), None) => Some((&a, &b, v.events)),
            (None, Some(v)) => Some((&b, &a, v.events)),
            _ => None,
        }
    };
    for (id, (_, events)) in &expected {
        while owner_of(id).map(|(_, _, e)| e) != Some(*events) {
            assert!(Instant::now() < deadline, "{id}: never fully applied");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Each member answers for the other's customers, with the owner's body.
    let ts = churn_core::event::format_timestamp_ms(as_of);
    let (a_found_before, b_found_before) = (forwarded(&a, "found"), forwarded(&b, "found"));
    let mut asked = BTreeMap::from([(url(&a), 0), (url(&b), 0)]);
    for (id, (score, events)) in &expected {
        let (owner, other, _) = owner_of(id).expect("held");
        let path = format!("/v1/customers/{id}?as_of={ts}");
        let direct = get(owner.http, &path, &[]);
        assert_eq!(direct.status, 200, "{id} from its owner: {}", direct.body);
        let via_other = get(other.http, &path, &[]);
        assert_eq!(
            via_other.status, 200,
            "{id} asked of the member that does not hold it: {}",
            via_other.body
        );
        assert_eq!(via_other.json(), direct.json(), "{id}: same answer");
        assert_eq!(
            via_other.headers.get(SERVED_BY_HEADER),
            Some(&url(owner)),
            "{id}: answered by its owner"
        );
        let view = via_other.json();
        assert_eq!(view["events"].as_u64(), Some(u64::from(*events)), "{id}");
        assert_close(view["risk_score"].as_f64().expect("score"), *score, id);
        // The producers' partitioner (librdkafka's default) put it where
        // the lookup computes, so the owner was asked directly.
        let partition =
            KeyPartitioner::ConsistentRandom.partition(id.as_bytes(), PARTITIONS as usize);
        assert_eq!(view["partition"].as_i64(), partition.map(i64::from), "{id}");
        *asked.entry(url(other)).or_default() += 1;
    }
    for (member, n) in &asked {
        assert!(*n > 0, "{member} was never asked for the other's customers");
    }
    assert_eq!(
        forwarded(&a, "found") - a_found_before + forwarded(&b, "found") - b_found_before,
        expected.len() as u64,
        "one forwarded request per lookup of a customer held elsewhere"
    );

    // Unknown to the whole group: 404 from both members.
    for w in [&a, &b] {
        let answer = get(w.http, "/v1/customers/nobody-at-all", &[]);
        assert_eq!(answer.status, 404, "{}", answer.body);
        assert!(answer.body.contains("no instance"), "{}", answer.body);
    }

    // A forwarded request is answered from local state only, never forwarded again.
    let (id, _) = expected
        .keys()
        .find_map(|id| {
            owner_of(id)
                .filter(|(o, _, _)| std::ptr::eq(*o, &a))
                .map(|o| (id, o))
        })
        .expect("a customer held by a");
    let before = forwarded_total(&b);
    let answer = get(
        b.http,
        &format!("/v1/customers/{id}"),
        &[(FORWARDED_HEADER, "http://elsewhere:1")],
    );
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_eq!(
        forwarded_total(&b),
        before,
        "a forwarded lookup went further"
    );

    // Without the token the lookup is refused before any forwarding.
    let (status, _) = http_get(b.http, &format!("/v1/customers/{id}"), None);
    assert_eq!(status, 401);
    assert_eq!(forwarded_total(&b), before);

    // b leaves (withdrawing its claim); a takes its partitions over and
    // answers for everyone from its own state.
    let a_url = url(&a);
    b.stop().expect("b leaves cleanly");
    a.wait_until(
        "a owns every partition and the membership says so",
        Duration::from_secs(90),
        |a| {
            let owners = a.handles.directory.partition_owners();
            a.metrics().partitions_assigned.get() == i64::from(PARTITIONS)
                && a.handles.directory.is_ready()
                && owners.members() == [a_url.clone()]
                && owners.unowned().is_empty()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, (_, events)) in &expected {
        loop {
            let answer = get(a.http, &format!("/v1/customers/{id}?as_of={ts}"), &[]);
            if answer.status == 200 && answer.json()["events"].as_u64() == Some(u64::from(*events))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} after the hand-over: {} {}",
                answer.status,
                answer.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let answer = get(a.http, "/v1/customers/nobody-at-all", &[]);
    assert_eq!(answer.status, 404, "{}", answer.body);
    a.stop().expect("clean stop");
}

/// A fake instance: accepts connections, records each request's head and
/// answers 404 like an instance without the customer.
struct FakePeer {
    url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakePeer {
    fn start(ip: &str) -> Self {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                seen.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"error":"unknown customer"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakePeer { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

/// A membership claim as anyone who can write the topic can produce it.
fn claim_record(url: &str, group: &str, partitions: &[i32]) -> (String, Vec<u8>) {
    let claim = serde_json::json!({
        "url": url,
        "group_id": group,
        "partitions": partitions,
        "claimed_at_ms": i64::MAX,
    });
    (url.to_string(), claim.to_string().into_bytes())
}

#[test]
fn forged_claims_capture_nothing_and_no_caller_credential_leaves_the_instance() {
    let broker = broker(PARTITIONS);
    broker
        .create_topic(MEMBERSHIP, 1)
        .expect("membership topic");
    let bootstrap = broker.bootstrap_servers().to_string();
    let c = config(&bootstrap);
    let group = c.kafka.group_id.clone();
    let a = RunningWorker::start(c, RiskModel::default_model());
    let a_url = url(&a);
    a.wait_until("a owns every partition", Duration::from_secs(60), |a| {
        let owners = a.handles.directory.partition_owners();
        a.handles.directory.is_ready() && owners.members() == [a_url.clone()]
    });
    // An attacker outside the allowed URLs claims everything with a claim
    // time no honest claim can beat; a listed but fake peer claims one
    // partition. Both answer whatever they are asked.
    let attacker = FakePeer::start("127.0.0.2");
    let listed = FakePeer::start("127.0.0.1");
    produce(
        &bootstrap,
        MEMBERSHIP,
        &[
            claim_record(&attacker.url, &group, &[0, 1, 2, 3]),
            claim_record(&format!("{}/steal", listed.url), &group, &[0]),
            claim_record(&listed.url, &group, &[0]),
        ],
    );
    a.wait_until("the claims are read", Duration::from_secs(30), |a| {
        a.metrics().membership_claims_rejected.get() >= 2
            && a.handles
                .directory
                .partition_owners()
                .members()
                .contains(&listed.url)
    });
    let owners = a.handles.directory.partition_owners();
    assert!(
        !owners.members().contains(&attacker.url),
        "the forged claim was believed: {:?}",
        owners.to_map()
    );
    // Lookups a forwards, with the read and with the admin token.
    for token in [TOKEN, ADMIN_TOKEN] {
        let answer = {
            let mut stream = TcpStream::connect(a.http).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            write!(
                stream,
                "GET /v1/customers/nobody-at-all HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read");
            response
        };
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    assert!(
        attacker.heads().is_empty(),
        "a request reached the unlisted URL: {:?}",
        attacker.heads()
    );
    let heads = listed.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("authorization: bearer {PEER_TOKEN}")),
            "{head}"
        );
        assert!(
            !head.contains(TOKEN) && !head.contains(ADMIN_TOKEN),
            "a caller's token left the instance: {head}"
        );
    }
    // The peer token grants lookups on a forwarded request only.
    let (status, _) = http_get(a.http, "/v1/customers/nobody-at-all", Some(PEER_TOKEN));
    assert_eq!(status, 401);
    a.stop().expect("clean stop");
}
