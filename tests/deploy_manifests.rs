//! Checks the deployment files against the code, so that a renamed metric,
//! a broken query or a forgotten probe fails `cargo test` rather than a
//! dashboard or a pager at night.
//!
//! - every metric named in deploy/prometheus/rules.yml, rules_test.yml and
//!   the Grafana dashboard exists in `telemetry::Metrics`;
//! - every dashboard query is valid PromQL (`promtool check rules`);
//! - every alert is documented, labelled and unit-tested both ways;
//! - docker-compose.yml, the Dockerfile and deploy/k8s keep the invariants
//!   the worker relies on (probes, drain time, partitions, replicas).
//!
//! No YAML crate is a dependency: the YAML files are read line by line with
//! the small helpers at the bottom, which understand exactly the subset these
//! files use (block mappings and lists, plain/quoted/block scalars).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use churn_worker::telemetry::{METRIC_PREFIX, Metrics};

const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";
const DASHBOARD: &str = "deploy/grafana/dashboards/churn-scorer.json";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const COMPOSE: &str = "docker-compose.yml";
const DOCKERFILE: &str = "Dockerfile";
const DEPLOYMENT: &str = "deploy/k8s/deployment.yaml";
const CONFIGMAP: &str = "deploy/k8s/configmap.yaml";
const SCALED_OBJECT: &str = "deploy/k8s/keda-scaledobject.yaml";
const DOCS: &str = "docs/deployment.md";

/// Series names Prometheus adds itself and the rules may use.
const PROMETHEUS_OWN_SERIES: &[&str] = &["up"];

// ---------------------------------------------------------------------------
// Metric names
// ---------------------------------------------------------------------------

#[test]
fn rules_reference_only_exported_metrics() {
    let known = known_series();
    let mut unknown = Vec::new();
    for expr in rule_exprs() {
        let names = metric_names_in(&expr);
        assert!(!names.is_empty(), "rule without any metric: {expr}");
        unknown.extend(
            names
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(|n| format!("{n}  (in `{expr}`)")),
        );
    }
    assert!(
        unknown.is_empty(),
        "{RULES} uses unknown metrics:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn rule_tests_feed_only_exported_metrics() {
    let known = known_series();
    let text = read(RULES_TEST);
    let series = yaml_values(&text, "series");
    assert!(!series.is_empty(), "{RULES_TEST} has no input series");
    let unknown: Vec<_> = series
        .iter()
        .map(|s| s.split('{').next().unwrap_or_default().trim().to_string())
        .filter(|name| !known.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "{RULES_TEST} feeds unknown metrics: {unknown:?}"
    );
}

#[test]
fn dashboard_references_only_exported_metrics() {
    let known = known_series();
    let mut unknown = Vec::new();
    for query in dashboard_queries() {
        let names = metric_names_in(&query.promql);
        assert!(
            !names.is_empty(),
            "{}: query without any metric: {}",
            query.panel,
            query.promql
        );
        unknown.extend(
            names
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(|n| format!("{n}  (panel \"{}\")", query.panel)),
        );
    }
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} uses unknown metrics:\n{}",
        unknown.join("\n")
    );
}

/// The design rule "a new metric appears in the dashboard": every metric
/// family the worker exports is charted by at least one panel.
#[test]
fn dashboard_charts_every_metric() {
    let used: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names_in(&q.promql))
        .map(|n| family(&n).to_string())
        .collect();
    let missing: BTreeSet<String> = Metrics::new()
        .metric_names()
        .iter()
        .map(|n| family(n).to_string())
        .filter(|f| !used.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a panel in {DASHBOARD}: {missing:?}"
    );
}

#[test]
fn the_tokenizer_finds_metric_names_and_nothing_else() {
    let expr = r#"sum by (job, le) (rate(churn_scorer_a_bucket{le=~"60(\\.0)?", x="churn_scorer_not_me"}[$__rate_interval] offset 1d))
        / on (job) group_left (kind) churn_scorer:rec:rate5m > bool 0.5e3 or absent(up{job="x"}) and time() - 5m"#;
    assert_eq!(
        metric_names_in(expr),
        ["churn_scorer_a_bucket", "churn_scorer:rec:rate5m", "up"]
    );
    assert_eq!(
        metric_names_in("churn_scorer_typo_total"),
        ["churn_scorer_typo_total"]
    );
}

// ---------------------------------------------------------------------------
// Query validity and dashboard shape
// ---------------------------------------------------------------------------

/// Every dashboard query, with Grafana's variables replaced, is valid PromQL:
/// they are written as recording rules and checked by `promtool check rules`
/// together with rules.yml.
#[test]
fn dashboard_queries_are_valid_promql() {
    if Command::new("promtool").arg("--version").output().is_err() {
        println!(
            "SKIPPED: promtool is not installed (Debian package `prometheus`); CI installs it"
        );
        return;
    }
    let variables = dashboard_variables();
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        let promql = substitute_grafana_variables(&query.promql, &variables);
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&promql).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboard_queries.yml");
    std::fs::write(&path, &rules).expect("write temp rules");
    let output = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .arg(repo_path(RULES))
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool rejects a dashboard query (dashboard:query_N = the Nth query) or rules.yml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dashboard_has_enough_panels_on_the_provisioned_datasource() {
    let dashboard = dashboard();
    let datasource_uid = yaml_values(&read(DATASOURCES), "uid")
        .into_iter()
        .next()
        .expect("the datasource has a uid");
    let panels = all_panels(&dashboard);
    let charts: Vec<_> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(charts.len() >= 10, "only {} panels", charts.len());

    let mut ids = BTreeSet::new();
    for panel in &charts {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64()),
            "duplicate panel id in \"{title}\""
        );
        assert!(panel["gridPos"].is_object(), "\"{title}\" has no gridPos");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "\"{title}\" has no query");
        for ds in
            std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            assert_eq!(
                ds["uid"],
                datasource_uid.as_str(),
                "\"{title}\": datasource not referenced by uid"
            );
        }
    }
    assert_eq!(dashboard["uid"], "churn-scorer");
}

// ---------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------

#[test]
fn every_alert_is_labelled_annotated_and_has_a_runbook() {
    let rules = read(RULES);
    let docs = read(DOCS);
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| github_anchor(l.trim_start_matches('#')))
        .collect();
    let alerts = list_items(&rules, "alert");
    assert!(
        alerts.len() >= 8,
        "expected at least 8 alerts, found {}",
        alerts.len()
    );
    for item in alerts {
        let name = first(&item, "alert");
        let severity = first(&item, "severity");
        assert!(
            ["critical", "warning"].contains(&severity.as_str()),
            "{name}: severity must be critical or warning, is {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(!first(&item, key).is_empty(), "{name}: no {key} annotation");
        }
        let runbook = first(&item, "runbook_url");
        let (doc, anchor) = runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url without #anchor"));
        assert_eq!(doc, DOCS, "{name}: runbook_url must point into {DOCS}");
        assert!(
            anchors.contains(anchor),
            "{name}: {DOCS} has no heading for #{anchor}"
        );
    }
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let rules = read(RULES);
    let tests = read(RULES_TEST);
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in list_items(&tests, "alertname") {
        let name = first(&case, "alertname");
        if first(&case, "exp_alerts") == "[]" {
            silent.insert(name);
        } else {
            firing.insert(name);
        }
    }
    for alert in yaml_values(&rules, "alert") {
        assert!(
            firing.contains(&alert),
            "{RULES_TEST}: no case where {alert} fires"
        );
        assert!(
            silent.contains(&alert),
            "{RULES_TEST}: no case where {alert} stays silent"
        );
    }
}

// ---------------------------------------------------------------------------
// Compose, image, Kubernetes
// ---------------------------------------------------------------------------

#[test]
fn compose_file_has_the_stack_and_no_version_key() {
    let compose = read(COMPOSE);
    let top_level: Vec<&str> = compose
        .lines()
        .filter(|l| !l.starts_with([' ', '#']) && !l.trim().is_empty())
        .collect();
    assert!(
        !top_level.iter().any(|l| l.starts_with("version:")),
        "the Compose spec has no `version:` key"
    );
    let services = child_keys(&compose, "services");
    for service in [
        "kafka",
        "kafka-init",
        "churn-scorer",
        "generator",
        "prometheus",
        "grafana",
    ] {
        assert!(
            services.contains(&service.to_string()),
            "service {service} missing: {services:?}"
        );
    }
}

#[test]
fn compose_topics_keep_state_partitions_equal_to_input_partitions() {
    let compose = read(COMPOSE);
    let input = compose_partitions(&compose, "customer-events");
    let state = compose_partitions(&compose, "churn-scorer-state");
    assert_eq!(
        input, state,
        "customer-events and churn-scorer-state need the same partition count"
    );
    let state_line = compose
        .lines()
        .find(|l| l.contains("--topic churn-scorer-state"))
        .unwrap_or_default();
    assert!(
        state_line.contains("cleanup.policy=compact"),
        "the state changelog must be compacted"
    );
}

#[test]
fn dockerfile_runs_the_worker_as_non_root_with_a_healthcheck() {
    let dockerfile = read(DOCKERFILE);
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, r)| r)
        .unwrap_or_default();
    assert!(
        runtime.contains("HEALTHCHECK") && runtime.contains("/healthz"),
        "no HEALTHCHECK on /healthz"
    );
    assert!(runtime.contains("EXPOSE 9464"), "port 9464 not exposed");
    let user = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as root: USER {user}"
    );
    // Every file the build copies from the context exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                repo_path(source).exists(),
                "Dockerfile copies missing {source}: `{line}`"
            );
        }
    }
}

#[test]
fn k8s_deployment_probes_and_drains_in_time() {
    let deployment = read(DEPLOYMENT);
    let probe_path = |probe: &str| {
        let block = block_under(&deployment, probe).unwrap_or_else(|| panic!("no {probe}"));
        first(&block, "path")
    };
    assert_eq!(
        probe_path("livenessProbe"),
        "/healthz",
        "livenessProbe path"
    );
    assert_eq!(
        probe_path("readinessProbe"),
        "/readyz",
        "readinessProbe path"
    );

    let grace: u64 = first(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .expect("terminationGracePeriodSeconds is a number");
    let worker = configmap_file("worker.toml");
    let drain = toml_at(&worker, &["shutdown", "drain_timeout_secs"])
        .and_then(toml::Value::as_integer)
        .unwrap_or(30);
    assert!(drain >= 30, "unexpected drain timeout {drain}");
    assert!(
        grace > drain.unsigned_abs(),
        "terminationGracePeriodSeconds ({grace}) must exceed shutdown.drain_timeout_secs ({drain})"
    );
    for key in ["runAsNonRoot", "readOnlyRootFilesystem"] {
        assert_eq!(first(&deployment, key), "true", "{key} must be true");
    }
    assert_eq!(first(&deployment, "mountPath"), "/etc/churn-scorer");
}

#[test]
fn keda_never_scales_past_the_partition_count() {
    let scaled = read(SCALED_OBJECT);
    let number = |key: &str| -> u64 {
        first(&scaled, key)
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let (min, max) = (number("minReplicaCount"), number("maxReplicaCount"));
    let partitions = compose_partitions(&read(COMPOSE), "customer-events");
    assert!(min >= 1, "minReplicaCount must keep one consumer");
    assert!(
        max <= 6 && max <= partitions,
        "maxReplicaCount {max} > {partitions} partitions: idle consumers"
    );
    assert!(min <= max);

    let worker = configmap_file("worker.toml");
    let group = toml_at(&worker, &["kafka", "group_id"])
        .and_then(toml::Value::as_str)
        .unwrap_or("churn-scorer");
    let input = toml_at(&worker, &["topics", "input"])
        .and_then(toml::Value::as_str)
        .unwrap_or("customer-events");
    assert_eq!(first(&scaled, "consumerGroup"), group);
    assert_eq!(first(&scaled, "topic"), input);
}

#[test]
fn k8s_configmap_matches_the_repository_config() {
    let worker = configmap_file("worker.toml");
    assert_eq!(
        toml_at(&worker, &["model", "path"]).and_then(toml::Value::as_str),
        Some("/etc/churn-scorer/model.toml"),
        "worker.toml must load the mounted model"
    );
    let repo_worker: toml::Value =
        toml::from_str(&read("config/worker.toml")).expect("config/worker.toml parses");
    assert_eq!(
        toml_keys(&worker),
        toml_keys(&repo_worker),
        "{CONFIGMAP} worker.toml and config/worker.toml must set the same keys"
    );
    let model = configmap_file("model.toml");
    let repo_model: toml::Value =
        toml::from_str(&read("config/model.toml")).expect("config/model.toml parses");
    assert!(
        model == repo_model,
        "{CONFIGMAP} model.toml differs from config/model.toml: copy the file into the ConfigMap"
    );
}

// ---------------------------------------------------------------------------
// Helpers: files and metrics
// ---------------------------------------------------------------------------

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// Series a query may select: exported metrics, recording rules, `up`.
fn known_series() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = Metrics::new().metric_names().into_iter().collect();
    assert!(known.iter().all(|n| n.starts_with(METRIC_PREFIX)));
    known.extend(yaml_values(&read(RULES), "record"));
    known.extend(PROMETHEUS_OWN_SERIES.iter().map(|s| s.to_string()));
    known
}

/// `churn_scorer_x_bucket` -> `churn_scorer_x`.
fn family(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series)
}

fn rule_exprs() -> Vec<String> {
    let exprs = yaml_values(&read(RULES), "expr");
    assert!(
        exprs.len() >= 8,
        "{RULES}: expected rules, found {}",
        exprs.len()
    );
    exprs
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Panels, including those nested in collapsed rows.
fn all_panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push(panel.clone());
        out.extend(panel["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

struct Query {
    panel: String,
    promql: String,
}

/// Every PromQL expression of the dashboard: panel targets, and the metric
/// selectors of template-variable queries (`label_values(selector, label)`).
fn dashboard_queries() -> Vec<Query> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(Query {
                    panel: title.clone(),
                    promql: expr.to_string(),
                });
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
            let name = variable["name"].as_str().unwrap_or("?");
            queries.push(Query {
                panel: format!("variable ${name}"),
                promql: selector.to_string(),
            });
        }
    }
    assert!(!queries.is_empty(), "{DASHBOARD} has no queries");
    queries
}

fn dashboard_variables() -> Vec<String> {
    dashboard()["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Replaces Grafana's interval variables by durations and template variables
/// (used inside label matchers) by a match-all regex.
fn substitute_grafana_variables(promql: &str, variables: &[String]) -> String {
    let mut out = promql
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for name in variables {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    out
}

/// The metric names a PromQL expression selects, in order of appearance.
///
/// Skips strings, label matchers `{...}`, ranges `[...]`, numbers and
/// durations, Grafana `$variables`, keywords, aggregation and function names,
/// and the label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
fn metric_names_in(expr: &str) -> Vec<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        (j, chars.get(j).copied())
    };
    // Index just past the bracket matching the opening one at `start`,
    // skipping quoted strings.
    let skip_balanced = |start: usize, open: char, close: char| {
        let mut depth = 0;
        let mut j = start;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => j = skip_string(&chars, j),
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        chars.len()
    };

    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i) + 1,
            '{' => i = skip_balanced(i, '{', '}'),
            '[' => i = skip_balanced(i, '[', ']'),
            '$' => {
                i += 1;
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '{' || chars[i] == '}')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let (j, next) = next_non_space(i);
                if GROUPING.contains(&lower.as_str()) {
                    if next == Some('(') {
                        i = skip_balanced(j, '(', ')');
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || next == Some('(') {
                    // operator, aggregation or function call
                } else {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Index of the quote closing the string that opens at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut j = start + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j;
        }
        j += 1;
    }
    chars.len()
}

/// GitHub's anchor for a Markdown heading text.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `--partitions N` of the kafka-init line creating `topic`.
fn compose_partitions(compose: &str, topic: &str) -> u64 {
    let line = compose
        .lines()
        .find(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["--topic", topic])
        })
        .unwrap_or_else(|| panic!("{COMPOSE} does not create topic {topic}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "--partitions")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no --partitions for {topic}: {line}"))
}

/// A file of the ConfigMap (`data.<name>`), parsed as TOML.
fn configmap_file(name: &str) -> toml::Value {
    let configmap = read(CONFIGMAP);
    let text = yaml_values(&configmap, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{CONFIGMAP} has no {name}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{CONFIGMAP} {name}: {e}"))
}

/// Every key path of a TOML document (`section.key`), tables included.
fn toml_keys(value: &toml::Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut stack = vec![(String::new(), value)];
    while let Some((prefix, value)) = stack.pop() {
        for (key, child) in value.as_table().into_iter().flatten() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            keys.insert(path.clone());
            stack.push((path, child));
        }
    }
    keys
}

/// The value at a path of table keys, if every key exists.
fn toml_at<'a>(value: &'a toml::Value, path: &[&str]) -> Option<&'a toml::Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

// ---------------------------------------------------------------------------
// Helpers: a line-based reader for the YAML subset of these files
// ---------------------------------------------------------------------------

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// If `line` is `key: rest` (optionally as a list item `- key: rest`), the
/// column of the key and the text after the colon.
fn key_value<'a>(line: &'a str, key: &str) -> Option<(usize, &'a str)> {
    let mut column = indent(line);
    let mut text = &line[column..];
    if let Some(item) = text.strip_prefix("- ") {
        let item_text = item.trim_start_matches(' ');
        column += 2 + item.len() - item_text.len();
        text = item_text;
    }
    let rest = text.strip_prefix(key)?.strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with(' ')).then_some((column, rest))
}

/// The value of every `key:` in the text, in order: plain, single- or
/// double-quoted, or a `|` / `>` block scalar (lines joined by newlines).
/// A key with nested content and no scalar yields "".
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((column, rest)) = key_value(lines[i], key) else {
            i += 1;
            continue;
        };
        i += 1;
        let rest = rest.trim();
        if rest.starts_with(['"', '\'']) {
            values.push(unquote(rest));
            continue;
        }
        let rest = strip_comment(rest);
        if rest.starts_with(['|', '>']) {
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > column) {
                block.push(lines[i]);
                i += 1;
            }
            while block.last().is_some_and(|l| l.trim().is_empty()) {
                block.pop();
            }
            let base = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| indent(l))
                .min()
                .unwrap_or(0);
            let body: Vec<&str> = block.iter().map(|l| l.get(base..).unwrap_or("")).collect();
            values.push(body.join("\n"));
        } else {
            values.push(rest.to_string());
        }
    }
    values
}

/// The first value of `key`, or "" if there is none.
fn first(text: &str, key: &str) -> String {
    yaml_values(text, key)
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn strip_comment(plain: &str) -> &str {
    let end = plain.find(" #").unwrap_or(plain.len());
    plain[..end].trim()
}

fn unquote(quoted: &str) -> String {
    let quote = quoted.chars().next().unwrap_or('"');
    let body = &quoted[1..];
    if quote == '\'' {
        // '' is an escaped quote; the first lone ' ends the scalar.
        let mut out = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(c);
        }
        return out;
    }
    let chars: Vec<char> = quoted.chars().collect();
    let end = skip_string(&chars, 0);
    let literal: String = chars[..(end + 1).min(chars.len())].iter().collect();
    serde_json::from_str(&literal).unwrap_or(literal)
}

/// The lines nested under the first `key:` (its block), if the key exists.
fn block_under(text: &str, key: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| key_value(l, key).is_some())?;
    let column = key_value(lines[start], key)?.0;
    let block: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > column)
        .copied()
        .collect();
    Some(block.join("\n"))
}

/// The keys of the mapping under the top-level `key:` (e.g. service names).
fn child_keys(text: &str, key: &str) -> Vec<String> {
    let block = block_under(text, key).unwrap_or_default();
    let column = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(indent)
        .min()
        .unwrap_or(0);
    block
        .lines()
        .filter(|l| indent(l) == column && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.trim()
                .split_once(':')
                .map(|(k, _)| k.trim_matches(['"', '\'']).to_string())
        })
        .filter(|k| !k.is_empty())
        .collect()
}

/// Every list item (`- ...` and its nested lines) that has `key` at its own
/// level, e.g. each `alert_rule_test` case for key "alertname", or each
/// alerting rule for key "alert".
fn list_items(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with("- ") {
            continue;
        }
        let dash = indent(line);
        let end = lines[start + 1..]
            .iter()
            .position(|l| !l.trim().is_empty() && indent(l) <= dash)
            .map_or(lines.len(), |p| start + 1 + p);
        let item = &lines[start..end];
        let own_level = dash + 2;
        let has_key = item.iter().enumerate().any(|(n, l)| {
            key_value(l, key).is_some_and(|(column, _)| {
                column == own_level && (n == 0 || !l.trim_start().starts_with("- "))
            })
        });
        if has_key {
            // Only this item's own level and below: nested items keep their text.
            items.push(item.join("\n"));
        }
    }
    items
}
