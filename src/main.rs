//! The `churn-scorer` command line: parses arguments and calls the library.
//! `anyhow` lives here only; the library returns typed errors.

use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use churn_scorer::event::parse_timestamp_ms;
use churn_scorer::model::RiskModel;
use churn_scorer::offline::{ScoreOptions, run_score};

/// Live churn-risk scoring of customer event streams.
#[derive(Parser)]
#[command(name = "churn-scorer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score every customer in a JSON-lines event file.
    Score(ScoreArgs),
}

#[derive(clap::Args)]
struct ScoreArgs {
    /// Model file (TOML); the built-in default model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// JSON-lines events, or `-` for standard input.
    #[arg(long)]
    events: String,
    /// Score at this time (RFC 3339); default: the latest event time. Later events are ignored.
    #[arg(long)]
    as_of: Option<String>,
    /// Stop with an error at the first bad line.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    churn_scorer::telemetry::init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score(args),
    }
}

fn load_model(path: Option<&PathBuf>) -> Result<RiskModel> {
    match path {
        Some(p) => RiskModel::load(p).with_context(|| format!("loading model {}", p.display())),
        None => Ok(RiskModel::default_model()),
    }
}

fn score(args: ScoreArgs) -> Result<()> {
    let model = load_model(args.model.as_ref())?;
    let as_of_ms = args
        .as_of
        .as_deref()
        .map(parse_timestamp_ms)
        .transpose()
        .context("--as-of")?;
    let options = ScoreOptions {
        as_of_ms,
        strict: args.strict,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut report = std::io::stderr().lock();
    if args.events == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading events from standard input (Ctrl-D to end)");
        }
        run_score(&model, stdin.lock(), &mut out, &mut report, &options)?;
    } else {
        let file = std::fs::File::open(&args.events)
            .with_context(|| format!("opening events file {}", args.events))?;
        run_score(&model, BufReader::new(file), &mut out, &mut report, &options)?;
    }
    Ok(())
}
