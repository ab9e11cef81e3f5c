//! The input-format options every event reader takes (`--input-format`,
//! `--mapping`), and `churn-scorer inspect`: how a sample of a topic or a
//! file reads with them.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use churn_core::input::inspect::{InspectReport, Inspection};
use churn_core::input::{FORMATS, HeaderLookup, InputFormat, MessageContext};
use churn_core::model::RiskModel;
use churn_worker::config::{Overrides, WorkerConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// `--input-format` and `--mapping`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InputArgs {
    /// How event lines are written: churn (the native schema, default), segment,
    /// cloudevents, or mapped (with --mapping). See docs/events.md, "Input formats".
    #[arg(long, value_parser = FORMATS.to_vec())]
    pub input_format: Option<String>,
    /// A mapping file (TOML) laid over the format's preset (`rename`, pointers...);
    /// alone, it implies --input-format mapped.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
}

impl InputArgs {
    /// The decoder these options describe (the native format without them).
    pub fn format(&self) -> Result<InputFormat> {
        InputFormat::load(self.input_format.as_deref(), self.mapping.as_deref())
            .context("input format (--input-format, --mapping)")
    }

    fn given(&self) -> bool {
        self.input_format.is_some() || self.mapping.is_some()
    }
}

/// `churn-scorer inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Read a JSON-lines file (`-` for standard input) instead of a topic.
    #[arg(long, conflicts_with_all = ["bootstrap_servers", "topic"])]
    file: Option<String>,
    /// Worker configuration (TOML): its [input] settings, Kafka properties
    /// (security) and `topics.input`; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Topic to sample (default: `topics.input`).
    #[arg(long)]
    topic: Option<String>,
    /// Messages read from the end of each partition (no consumer group is joined,
    /// no offset committed).
    #[arg(long, default_value_t = 1000)]
    sample: u64,
    /// Seconds to wait for the sample before reporting what was read.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(flatten)]
    input: InputArgs,
    /// Model whose vocabulary the event types are compared with; the built-in default when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `inspect`.
pub fn inspect(args: InspectArgs) -> Result<()> {
    let model = match &args.model {
        Some(p) => RiskModel::load(p).with_context(|| format!("loading model {}", p.display()))?,
        None => RiskModel::default_model(),
    };
    let config = match &args.config {
        Some(p) => Some(
            WorkerConfig::load(
                Some(p),
                &Overrides {
                    bootstrap_servers: args.bootstrap_servers.clone(),
                    http_addr: None,
                },
            )
            .with_context(|| format!("configuration {}", p.display()))?,
        ),
        None => None,
    };
    let format = match &config {
        Some(c) if !args.input.given() => c.input.decoder.clone(),
        _ => args.input.format()?,
    };
    let mut inspection = Inspection::new(&format, &model);
    let mut notes = Vec::new();
    if let Some(file) = &args.file {
        let input: Box<dyn BufRead> = if file == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(BufReader::new(
                std::fs::File::open(file).with_context(|| format!("opening {file}"))?,
            ))
        };
        inspect_lines(input, args.sample, &mut inspection)?;
    } else {
        anyhow::ensure!(
            args.bootstrap_servers.is_some() || args.config.is_some(),
            "inspect reads --file FILE, or a topic: --bootstrap-servers HOST:PORT --topic NAME \
             (or --config with kafka.bootstrap_servers and topics.input)"
        );
        let config = match config {
            Some(c) => c,
            None => WorkerConfig::load(
                None,
                &Overrides {
                    bootstrap_servers: args.bootstrap_servers.clone(),
                    http_addr: None,
                },
            )?,
        };
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| config.topics.input.clone());
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        if let Some(note) = sample_topic(&config, &topic, args.sample, deadline, &mut inspection)? {
            notes.push(note);
        }
    }
    let report = inspection.finish();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&report, &mut out)?;
    }
    out.flush()?;
    for note in notes {
        eprintln!("warning: {note}");
    }
    Ok(())
}

/// The first `limit` non-blank lines of `input`.
fn inspect_lines(input: impl BufRead, limit: u64, inspection: &mut Inspection<'_>) -> Result<()> {
    let mut seen = 0;
    churn_core::offline::for_each_line(input, |_, line| -> std::io::Result<()> {
        if seen < limit && !line.iter().all(u8::is_ascii_whitespace) {
            seen += 1;
            inspection.add(line, &MessageContext::default());
        }
        Ok(())
    })
    .context("reading events")
}

struct KafkaHeaders<'a>(&'a BorrowedHeaders);

impl HeaderLookup for KafkaHeaders<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|h| h.key == name).and_then(|h| h.value)
    }
}

/// Reads the last `per_partition` messages of every partition of `topic`
/// into `inspection`: partitions assigned at their end less the sample
/// (assign, not subscribe: no consumer group is joined and nothing is
/// committed). Returns a note if the deadline cut the sample short.
fn sample_topic(
    config: &WorkerConfig,
    topic: &str,
    per_partition: u64,
    deadline: Instant,
    inspection: &mut Inspection<'_>,
) -> Result<Option<String>> {
    // The worker's own consumer properties (security, timeouts), then the
    // ones that keep a sample from touching any group: assign() never joins
    // it, and nothing is committed or stored.
    let mut client = rdkafka::ClientConfig::new();
    for (k, v) in &config.kafka.consumer {
        client.set(k, v);
    }
    client.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    client.set("group.id", format!("{}-inspect", config.kafka.group_id));
    client.set("enable.auto.commit", "false");
    client.set("enable.auto.offset.store", "false");
    client.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create().context("creating the Kafka consumer")?;
    let bootstrap = &config.kafka.bootstrap_servers;
    let left = || deadline.saturating_duration_since(Instant::now());
    let metadata = consumer
        .fetch_metadata(Some(topic), left())
        .with_context(|| format!("reading the metadata of topic {topic} from {bootstrap}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} not found at {bootstrap} (or it has no partitions)"
    );
    let mut tpl = TopicPartitionList::new();
    // (partition, last offset to read)
    let mut ends: Vec<(i32, i64)> = Vec::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, left())
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        let start = low.max(high.saturating_sub(i64::try_from(per_partition).unwrap_or(i64::MAX)));
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .context("assigning")?;
            ends.push((p, high - 1));
        }
    }
    if ends.is_empty() {
        return Ok(Some(format!("topic {topic} has no messages")));
    }
    consumer.assign(&tpl).context("assigning the partitions")?;
    while !ends.is_empty() {
        let wait = left();
        if wait.is_zero() {
            return Ok(Some(format!(
                "the deadline (--timeout) passed before the sample of {} partition(s) was read; \
                 the report covers what was read",
                ends.len()
            )));
        }
        let Some(result) = consumer.poll(wait.min(Duration::from_millis(500))) else {
            continue;
        };
        let msg = result.with_context(|| format!("reading {topic}"))?;
        let headers = msg.headers().map(KafkaHeaders);
        let cx = MessageContext {
            key: msg.key(),
            timestamp_ms: msg.timestamp().to_millis(),
            headers: headers.as_ref().map(|h| h as &dyn HeaderLookup),
        };
        inspection.add(msg.payload().unwrap_or_default(), &cx);
        let (p, offset) = (msg.partition(), msg.offset());
        ends.retain(|&(ep, last)| !(ep == p && offset >= last));
    }
    Ok(None)
}

fn write_text(r: &InspectReport, out: &mut impl Write) -> std::io::Result<()> {
    let share = |n: u64| {
        if r.messages == 0 {
            0.0
        } else {
            100.0 * n as f64 / r.messages as f64
        }
    };
    writeln!(out, "input format: {}", r.format)?;
    writeln!(
        out,
        "messages: {}  mapped: {} ({:.1} %)  excluded by the mapping: {}  failed: {} ({:.1} %)",
        r.messages,
        r.mapped,
        share(r.mapped),
        r.excluded,
        r.failed,
        share(r.failed)
    )?;
    if !r.failures.is_empty() {
        writeln!(out, "\nfailures (dead letters, live):")?;
        for f in &r.failures {
            let at = f
                .source
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {:>7}  {}{at}  e.g. {}",
                f.count, f.reason, f.example
            )?;
        }
    }
    writeln!(out, "\ncustomers: {}", r.customers)?;
    writeln!(
        out,
        "time range: {} .. {}",
        r.first_event_at.as_deref().unwrap_or("-"),
        r.last_event_at.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "\nevent types (count, as read -> as scored, status):")?;
    for t in &r.event_types {
        let arrow = if t.event_type != t.source_type {
            format!(" -> {}", t.event_type)
        } else {
            String::new()
        };
        let status = match t.status {
            "named" => "the model names it",
            "excluded" => "excluded by the mapping",
            _ => "not named by the model (counts as activity only)",
        };
        writeln!(
            out,
            "  {:>7}  {}{arrow}  [{status}]",
            t.count, t.source_type
        )?;
    }
    if r.other_event_types > 0 {
        writeln!(
            out,
            "  {:>7}  (further types not listed)",
            r.other_event_types
        )?;
    }
    if !r.model_types_not_seen.is_empty() {
        writeln!(
            out,
            "\nmodel types not seen in the sample: {}",
            r.model_types_not_seen.join(", ")
        )?;
    }
    if !r.suggested_rename.is_empty() {
        writeln!(
            out,
            "\nsuggested rename (check each; add to the mapping file given with --mapping / input.mapping):"
        )?;
        writeln!(out, "[rename]")?;
        for (from, to) in &r.suggested_rename {
            writeln!(out, "{} = {}", toml_string(from), toml_string(to))?;
        }
    }
    writeln!(out, "\nmapping in effect:")?;
    for line in r.mapping.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}
