//! The `score` command, run as the real binary on a corpus of bad lines
//! mixed with good ones: bad lines are reported and skipped without touching
//! the good customers' scores.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_churn-scorer");

fn good(id: &str, kind: &str, ts: &str, amount: Option<&str>) -> Vec<u8> {
    let amount = amount.map_or(String::new(), |a| format!(r#","amount":{a}"#));
    format!(r#"{{"customer_id":"{id}","event_type":"{kind}","timestamp":"{ts}"{amount}}}"#)
        .into_bytes()
}

fn good_lines() -> Vec<Vec<u8>> {
    vec![
        good("alice", "login", "2025-03-01T09:00:00Z", None),
        good(
            "alice",
            "purchase",
            "2025-03-01T09:05:00.250Z",
            Some("49.90"),
        ),
        good("bob", "support_ticket", "2025-03-02T10:00:00+02:00", None),
        good("bob", "complaint", "2025-03-03T11:00:00Z", None),
        good("carol", "feature_used", "2025-03-04T12:00:00Z", None),
        good("alice", "mystery_type", "2025-03-05T08:00:00Z", None),
        good("dave", "renewal", "2025-03-06T00:00:00Z", Some("0")),
        good("bob", "session", "2025-03-10T10:00:00Z", None),
    ]
}

/// Bad lines with the reason label each must be reported with.
fn bad_lines() -> Vec<(Vec<u8>, &'static str)> {
    let long_id = "x".repeat(500);
    let ok_rest = r#""event_type":"login","timestamp":"2025-03-01T00:00:00Z""#;
    vec![
        (br#"{"customer_id":"alice","#.to_vec(), "malformed_json"),
        (b"not json at all".to_vec(), "malformed_json"),
        (b"\0\0\0\0".to_vec(), "malformed_json"),
        (
            [
                &br#"{"customer_id":"al"#[..],
                b"\0",
                br#"ice","event_type":"login","timestamp":"2025-03-01T00:00:00Z"}"#,
            ]
            .concat(),
            "malformed_json",
        ),
        (
            [
                &br#"{"customer_id":""#[..],
                b"\xff\xfe",
                br#"","event_type":"login","timestamp":"2025-03-01T00:00:00Z"}"#,
            ]
            .concat(),
            "malformed_json",
        ),
        (
            format!(r#"{{"customer_id":"alice",{ok_rest},"amount":1e999}}"#).into_bytes(),
            "bad_amount",
        ),
        (
            format!(r#"{{"customer_id":"bob",{ok_rest},"amount":-5}}"#).into_bytes(),
            "bad_amount",
        ),
        (
            format!(r#"{{"customer_id":"bob",{ok_rest},"amount":"12"}}"#).into_bytes(),
            "bad_amount",
        ),
        (
            format!(r#"{{"customer_id":"{long_id}",{ok_rest}}}"#).into_bytes(),
            "bad_customer_id",
        ),
        (
            format!(r#"{{"customer_id":"",{ok_rest}}}"#).into_bytes(),
            "bad_customer_id",
        ),
        (
            br#"{"customer_id":"alice","event_type":"login","timestamp":"2025-02-30T10:00:00Z"}"#
                .to_vec(),
            "bad_timestamp",
        ),
        (
            br#"{"customer_id":"alice","event_type":"login","timestamp":"2025-03-01 10:00:00"}"#
                .to_vec(),
            "bad_timestamp",
        ),
        (
            br#"{"customer_id":"alice","event_type":"login","timestamp":1740823200}"#.to_vec(),
            "bad_timestamp",
        ),
        (b"[1,2,3]".to_vec(), "not_an_object"),
        (br#"["customer_id","alice"]"#.to_vec(), "not_an_object"),
        (br#""just a string""#.to_vec(), "not_an_object"),
        (b"42".to_vec(), "not_an_object"),
        (b"{}".to_vec(), "missing_field"),
        (
            br#"{"customer_id":"alice","timestamp":"2025-03-01T00:00:00Z"}"#.to_vec(),
            "missing_field",
        ),
        (
            format!(r#"{{"customer_id":"a","customer_id":"b",{ok_rest}}}"#).into_bytes(),
            "duplicate_field",
        ),
        (
            br#"{"customer_id":"carol","event_type":7,"timestamp":"2025-03-01T00:00:00Z"}"#
                .to_vec(),
            "bad_event_type",
        ),
        (
            format!(r#"{{"customer_id":"carol",{ok_rest},"properties":[1]}}"#).into_bytes(),
            "bad_properties",
        ),
    ]
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(bytes).expect("write stdin");
    }
    child.wait_with_output().expect("the binary runs")
}

fn write_file(dir: &TempDir, name: &str, lines: &[Vec<u8>]) -> String {
    let path = dir.path().join(name);
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    std::fs::write(&path, bytes).expect("write corpus");
    path.to_str().expect("utf-8 temp path").to_string()
}

/// Good and bad lines interleaved (plus a blank line, which is skipped but
/// still numbered), with the 1-based number and reason of each bad line.
fn mixed() -> (Vec<Vec<u8>>, Vec<(u64, &'static str)>) {
    let mut lines = Vec::new();
    let mut expected = Vec::new();
    let mut good = good_lines().into_iter();
    for (i, (bad, reason)) in bad_lines().into_iter().enumerate() {
        if i % 3 == 0
            && let Some(g) = good.next()
        {
            lines.push(g);
        }
        if i == 5 {
            lines.push(Vec::new());
        }
        lines.push(bad);
        expected.push((lines.len() as u64, reason));
    }
    lines.extend(good);
    (lines, expected)
}

#[test]
fn bad_lines_are_reported_and_do_not_change_good_scores() {
    let dir = TempDir::new().expect("temp dir");
    let (lines, expected) = mixed();
    let mixed_path = write_file(&dir, "mixed.jsonl", &lines);
    let good_path = write_file(&dir, "good.jsonl", &good_lines());

    let out = run(&["score", "--events", &mixed_path], None);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = run(&["score", "--events", &good_path], None);
    assert!(clean.status.success());
    assert!(!clean.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&clean.stdout),
        "good customers score the same with and without the bad lines"
    );
    assert_eq!(out.stdout, clean.stdout);

    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8 even for non-UTF-8 input");
    let report: Vec<&str> = stderr.lines().collect();
    for (line, reason) in &expected {
        let prefix = format!("line {line}: {reason}: ");
        assert!(
            report.iter().any(|l| l.starts_with(&prefix)),
            "no report `{prefix}…` in:\n{stderr}"
        );
    }
    assert_eq!(
        report.iter().filter(|l| l.starts_with("line ")).count(),
        expected.len(),
        "one report per bad line:\n{stderr}"
    );
    let summary = report.last().expect("a summary line");
    assert!(summary.starts_with("summary: "), "{summary}");
    assert!(
        summary.contains(&format!("read={}", lines.len()))
            && summary.contains(&format!("accepted={}", good_lines().len()))
            && summary.contains(&format!("rejected={}", expected.len())),
        "{summary}"
    );
    assert!(summary.contains("malformed_json=5"), "{summary}");
    // No report line may carry the raw 500-byte id or raw control bytes.
    assert!(report.iter().all(|l| l.len() < 400), "reports stay short");
}

#[test]
fn strict_mode_stops_at_the_first_bad_line() {
    let dir = TempDir::new().expect("temp dir");
    let (lines, expected) = mixed();
    let path = write_file(&dir, "mixed.jsonl", &lines);
    let out = run(&["score", "--events", &path, "--strict"], None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no scores after a strict failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (first_line, first_reason) = expected[0];
    assert!(
        stderr.contains(&format!("line {first_line}:")) && stderr.contains(first_reason),
        "{stderr}"
    );
    let (second_line, _) = expected[1];
    assert!(
        !stderr.contains(&format!("line {second_line}:")),
        "{stderr}"
    );
}

#[test]
fn as_of_ignores_later_events_and_counts_them() {
    let dir = TempDir::new().expect("temp dir");
    let path = write_file(&dir, "good.jsonl", &good_lines());
    let out = run(
        &[
            "score",
            "--events",
            &path,
            "--as-of",
            "2025-03-03T11:00:00Z",
        ],
        None,
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let scores: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ids: Vec<&str> = scores
        .iter()
        .filter_map(|s| s["customer_id"].as_str())
        .collect();
    // carol and dave have only later events; the boundary event (bob's complaint) counts.
    assert_eq!(ids, ["alice", "bob"]);
    assert_eq!(scores[0]["events"], 2);
    assert_eq!(scores[1]["events"], 2);
    assert_eq!(scores[1]["last_event_at"], "2025-03-03T11:00:00.000Z");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ignored_after_as_of=4"), "{stderr}");
    assert!(
        stderr.contains("as_of=2025-03-03T11:00:00.000Z"),
        "{stderr}"
    );

    let bad = run(&["score", "--events", &path, "--as-of", "yesterday"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--as-of"));
}

#[test]
fn standard_input_scores_like_a_file() {
    let dir = TempDir::new().expect("temp dir");
    let (lines, _) = mixed();
    let path = write_file(&dir, "mixed.jsonl", &lines);
    let from_file = run(&["score", "--events", &path], None);
    let bytes = std::fs::read(&path).expect("read back");
    let from_stdin = run(&["score", "--events", "-"], Some(&bytes));
    assert!(from_stdin.status.success());
    assert_eq!(from_stdin.stdout, from_file.stdout);
    assert_eq!(from_stdin.stderr, from_file.stderr);
}

#[test]
fn generated_data_scores_and_reports_its_bad_lines() {
    let dir = TempDir::new().expect("temp dir");
    let events = dir.path().join("events.jsonl");
    let labels = dir.path().join("labels.csv");
    let generated = Command::new(BIN)
        .args([
            "generate",
            "--customers",
            "40",
            "--days",
            "60",
            "--invalid-rate",
            "0.02",
        ])
        .arg("--out")
        .arg(&events)
        .arg("--labels")
        .arg(&labels)
        .output()
        .expect("generate runs");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let labels = std::fs::read_to_string(&labels).expect("labels written");
    assert_eq!(labels.lines().next(), Some("customer_id,churned"));
    assert_eq!(labels.lines().count(), 41);

    let out = run(
        &["score", "--events", events.to_str().expect("UTF-8 path")],
        None,
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reports = stderr.lines().filter(|l| l.starts_with("line ")).count();
    assert!(reports > 0, "{stderr}");
    let summary = stderr.lines().last().expect("summary");
    assert!(
        summary.contains(&format!("rejected={reports}")),
        "{summary}"
    );
    assert!(summary.contains("customers=40"), "{summary}");
}

/// `score` shows what alerts and `/v1` show: each reason's label next to
/// its code, and the summary of the reasons that raised the risk.
#[test]
fn score_shows_labels_and_the_summary() {
    let lines: Vec<u8> = [
        good("erin", "session", "2025-03-01T09:00:00Z", None),
        good("erin", "payment_failed", "2025-03-02T09:00:00Z", None),
        good("erin", "payment_failed", "2025-03-02T09:10:00Z", None),
        good("erin", "complaint", "2025-03-03T09:00:00Z", None),
    ]
    .join(&b'\n');
    let out = run(
        &["score", "--events", "-", "--as-of", "2025-04-20"],
        Some(&lines),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().expect("a line"))
            .expect("json");
    let reasons = line["reasons"].as_array().expect("reasons");
    for r in reasons {
        let label = r["label"]
            .as_str()
            .unwrap_or_else(|| panic!("no label: {r}"));
        assert!(!label.is_empty() && !label.contains('{'), "{label}");
    }
    let payment = reasons
        .iter()
        .find(|r| r["factor"] == "event:payment_failed")
        .expect("payment reason");
    assert_eq!(payment["label"], "Payment failed (2× recently)");
    let summary: Vec<&str> = line["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    let raising: Vec<&str> = reasons
        .iter()
        .filter(|r| r["points"].as_f64().is_some_and(|p| p >= 0.05))
        .take(3)
        .filter_map(|r| r["label"].as_str())
        .collect();
    assert_eq!(summary, raising, "{line}");
    assert!(
        summary.contains(&"No activity for 48 days"),
        "silence with its numbers: {summary:?}"
    );
}
