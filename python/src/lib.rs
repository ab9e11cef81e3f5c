//! `churn_scorer._native`: the extension module under the `churn_scorer`
//! Python package.
//!
//! It is conversion only. Events arrive as JSON-lines bytes (or a file path)
//! and labels as CSV bytes (or a path), exactly the inputs of the
//! `churn-scorer` command line, and go through the same functions the CLI
//! calls: [`run_score`], [`run_backtest`], [`run_fit`]. Outputs go back as
//! the CLI's own text (JSON lines, the `--json` object, the model file), so
//! the numbers cannot drift from the CLI's. The Python package
//! (`churn_scorer/__init__.py`) turns DataFrames into those bytes and the
//! text into DataFrames.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use churn_analysis::backtest::{
    Backtest, DEFAULT_TARGET_PRECISION, DEFAULT_TARGET_RATE, evaluate_store, run_backtest,
    write_json, write_text,
};
use churn_analysis::fit::{
    AlertTarget, FitError, FitOptions, FitOutcome, describe, in_sample_notes, model_toml, run_fit,
};
use churn_analysis::labels::{Labels, read_labels};
use churn_analysis::report::render_html;
use churn_core::event::parse_date_arg;
use churn_core::model::{DEFAULT_MODEL_TOML, ModelError, RiskModel};
use churn_core::offline::{BadLine, ReplayError, ScoreError, ScoreOptions, run_score};

/// A bad event line: (1-based line, reason label, message).
type BadEventLine = (u64, &'static str, String);
/// A bad label row: (1-based line, message).
type BadLabelRow = (u64, String);

/// Builds an exception of the Python package's hierarchy
/// (`churn_scorer/_errors.py`), whose classes take these arguments.
fn package_error<'py>(
    py: Python<'py>,
    class: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    let made = py
        .import("churn_scorer._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(e) => e,
    }
}

fn event_error(py: Python<'_>, bad: &BadLine) -> PyErr {
    package_error(
        py,
        "EventError",
        (bad.line, bad.error.reason(), bad.error.to_string()),
    )
}

fn argument_error(py: Python<'_>, message: String) -> PyErr {
    package_error(py, "ArgumentError", (message,))
}

fn model_error(py: Python<'_>, e: ModelError) -> PyErr {
    match e {
        ModelError::Read { path, source } => {
            let kind = source.kind();
            std::io::Error::new(kind, format!("cannot read model file {path}: {source}")).into()
        }
        ModelError::Syntax { ref key, .. } | ModelError::Invalid { ref key, .. } => {
            let key = key.clone();
            package_error(py, "ModelError", (e.to_string(), key))
        }
    }
}

fn replay_error(py: Python<'_>, e: ReplayError) -> PyErr {
    match e {
        ReplayError::Io(io) => io.into(),
        ReplayError::Strict(bad) => event_error(py, &bad),
    }
}

/// Parses a date argument as the CLI's `--as-of` / `--cutoff` do.
fn date_arg(py: Python<'_>, name: &str, text: &str) -> PyResult<i64> {
    parse_date_arg(text).map_err(|e| argument_error(py, format!("{name}: {e}")))
}

/// As the CLI's check of `--alert-precision` / `--alert-rate`.
fn check_share(py: Python<'_>, name: &str, value: f64) -> PyResult<()> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(argument_error(
            py,
            format!("{name} must be a share between 0 and 1 (0.6 for 60 %), got {value}"),
        ))
    }
}

/// Events or labels: a file the Rust side streams, or bytes already built.
enum Input<'a> {
    Path(PathBuf),
    Bytes(&'a [u8]),
}

impl<'a> Input<'a> {
    fn from_py(obj: &'a Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            return Ok(Input::Bytes(bytes.as_bytes()));
        }
        Ok(Input::Path(obj.extract::<PathBuf>()?))
    }

    /// Opens the input (a file is opened anew each call: fit reads twice).
    fn open(&self, what: &str) -> std::io::Result<Box<dyn BufRead + Send + 'a>> {
        match self {
            Input::Bytes(b) => Ok(Box::new(*b)),
            Input::Path(p) => File::open(p)
                .map(|f| Box::new(BufReader::with_capacity(1 << 20, f)) as Box<dyn BufRead + Send>)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("opening {what} file {}: {e}", p.display()),
                    )
                }),
        }
    }
}

fn load_labels(input: &Input<'_>) -> std::io::Result<(Labels, Vec<BadLabelRow>)> {
    let mut bad = Vec::new();
    let labels = read_labels(input.open("labels")?, |b| {
        bad.push((b.line, b.message.clone()))
    })
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((labels, bad))
}

/// A validated model and the text it came from.
#[pyclass(module = "churn_scorer", name = "Model", frozen, from_py_object)]
#[derive(Clone)]
struct Model {
    model: RiskModel,
    /// The model file: as read, or as `fit` wrote it.
    text: String,
    /// Where it came from, as the CLI names a base model in a fitted file.
    source: String,
}

#[pymethods]
impl Model {
    /// Reads and validates a model file (TOML), as `--model` does.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path).map_err(|source| {
            model_error(
                py,
                ModelError::Read {
                    path: path.display().to_string(),
                    source,
                },
            )
        })?;
        let model = RiskModel::from_toml(&text).map_err(|e| model_error(py, e))?;
        Ok(Model {
            model,
            text,
            source: path.display().to_string(),
        })
    }

    /// The built-in default model (`config/model.toml`), used when `--model` is omitted.
    #[staticmethod]
    fn default() -> Self {
        Model {
            model: RiskModel::default_model(),
            text: DEFAULT_MODEL_TOML.to_string(),
            source: "built-in default".to_string(),
        }
    }

    /// Parses and validates a model from TOML text.
    #[staticmethod]
    #[pyo3(signature = (text, source = "model text"))]
    fn from_toml(py: Python<'_>, text: String, source: &str) -> PyResult<Self> {
        let model = RiskModel::from_toml(&text).map_err(|e| model_error(py, e))?;
        Ok(Model {
            model,
            text,
            source: source.to_string(),
        })
    }

    /// `model_version`.
    #[getter]
    fn version(&self) -> &str {
        self.model.version()
    }

    /// Where the model came from: a path, `built-in default`, or `model text`.
    #[getter]
    fn source(&self) -> &str {
        &self.source
    }

    /// The model file's text.
    fn to_toml(&self) -> &str {
        &self.text
    }

    /// The model as JSON text (the parsed file, comments dropped).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.spec()).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(version={:?}, source={:?})",
            self.model.version(),
            self.source
        )
    }
}

/// What `score` produced: the CLI's standard output, bad lines and counts.
#[pyfunction]
#[pyo3(signature = (model, events, as_of = None, strict = false))]
fn score<'py>(
    py: Python<'py>,
    model: &Model,
    events: &Bound<'py, PyAny>,
    as_of: Option<&str>,
    strict: bool,
) -> PyResult<(String, Vec<BadEventLine>, Option<String>, String)> {
    let input = Input::from_py(events)?;
    let as_of_ms = as_of.map(|t| date_arg(py, "as_of", t)).transpose()?;
    let options = ScoreOptions { as_of_ms, strict };
    let rm = &model.model;
    let result = py.detach(|| -> Result<_, ScoreError> {
        let reader = input.open("events").map_err(ReplayError::Io)?;
        let mut out = Vec::new();
        let mut report = Vec::new();
        let stats = run_score(rm, reader, &mut out, &mut report, &options)?;
        Ok((out, report, stats))
    });
    let (out, report, stats) = match result {
        Ok(r) => r,
        Err(ScoreError::Replay(e)) => return Err(replay_error(py, e)),
        Err(ScoreError::NoEvents(why)) => {
            return Err(package_error(
                py,
                "NoEventsError",
                (format!("no events scored: {why}"),),
            ));
        }
        Err(e @ ScoreError::Output(_)) => return Err(PyRuntimeError::new_err(e.to_string())),
    };
    let (bad, warning) = parse_score_report(&report);
    let out = String::from_utf8(out).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let stats =
        serde_json::to_string(&stats).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok((out, bad, warning, stats))
}

/// Splits `run_score`'s report (`line N: reason: message`, `warning: …`,
/// `summary: …`) back into its parts.
fn parse_score_report(report: &[u8]) -> (Vec<BadEventLine>, Option<String>) {
    let text = String::from_utf8_lossy(report);
    let mut bad = Vec::new();
    let mut warning = None;
    for line in text.lines() {
        if let Some(w) = line.strip_prefix("warning: ") {
            warning = Some(w.to_string());
        } else if let Some(rest) = line.strip_prefix("line ") {
            let mut parts = rest.splitn(3, ": ");
            let (Some(n), Some(reason), Some(message)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(n), Some(reason)) = (
                n.parse::<u64>(),
                churn_core::event::EventError::REASONS
                    .iter()
                    .find(|r| **r == reason),
            ) else {
                continue;
            };
            bad.push((n, *reason, message.to_string()));
        }
    }
    (bad, warning)
}

/// A backtest: the CLI's figures and the scored customers behind them.
#[pyclass(module = "churn_scorer", name = "BacktestRun", frozen)]
#[derive(Clone)]
struct BacktestRun {
    backtest: Backtest,
    segment_names: Vec<Option<String>>,
    #[pyo3(get)]
    bad_lines: Vec<BadEventLine>,
    #[pyo3(get)]
    bad_labels: Vec<BadLabelRow>,
}

#[pymethods]
impl BacktestRun {
    /// `backtest --json`: one JSON object and a newline.
    fn summary_json(&self) -> PyResult<String> {
        let mut out = Vec::new();
        write_json(&self.backtest.summary, &mut out)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        String::from_utf8(out).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// `backtest` without `--json`: the tables.
    fn text(&self) -> PyResult<String> {
        let mut out = Vec::new();
        write_text(&self.backtest.summary, &mut out)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        String::from_utf8(out).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// `backtest --report`: a self-contained HTML page.
    #[pyo3(signature = (title = None))]
    fn html(&self, title: Option<String>) -> PyResult<String> {
        let title =
            title.unwrap_or_else(|| format!("Backtest of {}", self.backtest.summary.model_version));
        render_html(&self.backtest, &title, &[]).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Every labelled customer, sorted by id: (id, risk at the cutoff or
    /// None without events, churned, segment name or None).
    fn customers(&self) -> Vec<(String, Option<f64>, bool, Option<String>)> {
        self.backtest
            .customers
            .iter()
            .map(|c| {
                (
                    c.customer_id.clone(),
                    c.risk_score,
                    c.churned,
                    self.segment_names
                        .get(usize::from(c.segment))
                        .cloned()
                        .flatten(),
                )
            })
            .collect()
    }

    /// The same backtest with the thresholds chosen for other targets
    /// (`--alert-precision`, `--alert-rate`).
    fn with_targets(&self, py: Python<'_>, precision: f64, rate: f64) -> PyResult<Self> {
        check_share(py, "alert_precision", precision)?;
        check_share(py, "alert_rate", rate)?;
        let mut run = self.clone();
        run.backtest.summary.thresholds.set_targets(precision, rate);
        Ok(run)
    }
}

/// Runs `churn-scorer backtest`.
#[pyfunction]
#[pyo3(signature = (model, events, labels, cutoff, alert_precision = DEFAULT_TARGET_PRECISION, alert_rate = DEFAULT_TARGET_RATE, strict = false))]
#[allow(clippy::too_many_arguments)]
fn backtest<'py>(
    py: Python<'py>,
    model: &Model,
    events: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    cutoff: &str,
    alert_precision: f64,
    alert_rate: f64,
    strict: bool,
) -> PyResult<BacktestRun> {
    let events = Input::from_py(events)?;
    let labels = Input::from_py(labels)?;
    let cutoff_ms = date_arg(py, "cutoff", cutoff)?;
    check_share(py, "alert_precision", alert_precision)?;
    check_share(py, "alert_rate", alert_rate)?;
    let rm = &model.model;
    let result = py.detach(|| -> Result<_, ReplayError> {
        let (labels, bad_labels) = load_labels(&labels)?;
        let mut bad_lines = Vec::new();
        let mut backtest = run_backtest(
            rm,
            events.open("events")?,
            &labels,
            cutoff_ms,
            strict,
            |b| bad_lines.push((b.line, b.error.reason(), b.error.to_string())),
        )
        .map_err(|e| match e {
            churn_analysis::backtest::BacktestError::Replay(r) => r,
            other => ReplayError::Io(std::io::Error::other(other.to_string())),
        })?;
        backtest
            .summary
            .thresholds
            .set_targets(alert_precision, alert_rate);
        Ok((backtest, bad_lines, bad_labels))
    });
    let (backtest, bad_lines, bad_labels) = result.map_err(|e| replay_error(py, e))?;
    let segment_names = segment_names(rm);
    Ok(BacktestRun {
        backtest,
        segment_names,
        bad_lines,
        bad_labels,
    })
}

fn segment_names(model: &RiskModel) -> Vec<Option<String>> {
    (0..=u8::MAX)
        .map(|s| model.segment_name(s).map(str::to_string))
        .take_while(Option::is_some)
        .collect()
}

/// A fit: the model file, the summary, and what an in-sample report needs.
#[pyclass(module = "churn_scorer", name = "FitRun", frozen)]
struct FitRun {
    outcome: FitOutcome,
    labels: Labels,
    cutoff_ms: i64,
    #[pyo3(get)]
    model: Model,
    /// The CLI's standard output lines before `model written to …`.
    #[pyo3(get)]
    description: Vec<String>,
    #[pyo3(get)]
    bad_lines: Vec<BadEventLine>,
    #[pyo3(get)]
    bad_labels: Vec<BadLabelRow>,
}

#[pymethods]
impl FitRun {
    /// The fit's summary as JSON.
    fn summary_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.outcome.summary)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// `fit --report`: the fitted model's in-sample report.
    fn html(&self) -> PyResult<String> {
        let result = evaluate_store(
            &self.outcome.model,
            &self.outcome.store,
            &self.labels,
            self.cutoff_ms,
            &self.outcome.replay_stats,
            None,
        );
        let title = format!(
            "Fitted model {} (in-sample)",
            self.outcome.summary.model_version
        );
        render_html(&result, &title, &in_sample_notes(&self.outcome.summary))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

/// Runs `churn-scorer fit`.
#[pyfunction]
#[pyo3(signature = (base, events, labels, cutoff, *, folds = 5, seed = 42, min_support = 20, half_life_days = 30.0, model_version = None, lambdas = None, half_life_grid = None, keep_half_lives = false, one_standard_error = false, alert_precision = None, alert_rate = None, strict = false, generated_on = None))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    base: &Model,
    events: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    cutoff: &str,
    folds: usize,
    seed: u64,
    min_support: u64,
    half_life_days: f64,
    model_version: Option<String>,
    lambdas: Option<Vec<f64>>,
    half_life_grid: Option<Vec<f64>>,
    keep_half_lives: bool,
    one_standard_error: bool,
    alert_precision: Option<f64>,
    alert_rate: Option<f64>,
    strict: bool,
    generated_on: Option<String>,
) -> PyResult<FitRun> {
    let events = Input::from_py(events)?;
    let labels = Input::from_py(labels)?;
    let cutoff_ms = date_arg(py, "cutoff", cutoff)?;
    let mut options = FitOptions::new(cutoff_ms);
    options.folds = folds;
    options.seed = seed;
    options.min_support = min_support;
    options.default_half_life_days = half_life_days;
    options.model_version = model_version;
    if let Some(l) = lambdas {
        options.lambdas = l;
    }
    options.strict = strict;
    options.one_standard_error = one_standard_error;
    let grid = half_life_grid.unwrap_or_else(|| options.half_life_grid.clone());
    if !grid.iter().all(|h| h.is_finite() && *h > 0.0) {
        return Err(argument_error(
            py,
            "half_life_grid: half-lives must be > 0 days".into(),
        ));
    }
    options.half_life_grid = if keep_half_lives { Vec::new() } else { grid };
    options.alert_target = match (alert_precision, alert_rate) {
        (Some(_), Some(_)) => {
            return Err(argument_error(
                py,
                "give alert_precision or alert_rate, not both".into(),
            ));
        }
        (Some(p), None) => {
            check_share(py, "alert_precision", p)?;
            Some(AlertTarget::Precision(p))
        }
        (None, Some(r)) => {
            check_share(py, "alert_rate", r)?;
            Some(AlertTarget::Rate(r))
        }
        (None, None) => None,
    };
    let generated_on =
        generated_on.unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
    let base_model = &base.model;
    let result = py.detach(|| -> Result<_, FitError> {
        let (labels, bad_labels) = load_labels(&labels)?;
        let mut bad_lines = Vec::new();
        let outcome = run_fit(
            || events.open("events"),
            &labels,
            base_model,
            &options,
            |b| bad_lines.push((b.line, b.error.reason(), b.error.to_string())),
        )?;
        let text = model_toml(&outcome, &generated_on, &base.source)?;
        Ok((outcome, labels, text, bad_lines, bad_labels))
    });
    let (outcome, labels, text, bad_lines, bad_labels) = match result {
        Ok(r) => r,
        Err(FitError::Replay(e)) => return Err(replay_error(py, e)),
        Err(FitError::Io(e)) => return Err(e.into()),
        Err(e @ (FitError::Option(_) | FitError::TooFewLabels { .. })) => {
            return Err(argument_error(py, e.to_string()));
        }
        Err(e) => return Err(package_error(py, "FitError", (e.to_string(),))),
    };
    let description = describe(&outcome.summary, &generated_on, &base.source);
    let model = Model {
        model: outcome.model.clone(),
        text,
        source: format!("fit of {}", base.source),
    };
    Ok(FitRun {
        outcome,
        labels,
        cutoff_ms,
        model,
        description,
        bad_lines,
        bad_labels,
    })
}

/// The Python module.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<BacktestRun>()?;
    m.add_class::<FitRun>()?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(backtest, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add("DEFAULT_TARGET_PRECISION", DEFAULT_TARGET_PRECISION)?;
    m.add("DEFAULT_TARGET_RATE", DEFAULT_TARGET_RATE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
