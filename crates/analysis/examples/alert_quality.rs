//! Alert figures of model files on a generated stream, measured as
//! `tests/alert_quality.rs` measures the default (issue 13's definition):
//! the share of customers ever alerted, and the precision and recall of the
//! customers alerted from two weeks after the slowdown began.
//!
//! ```sh
//! cargo run --release -p churn-analysis --example alert_quality -- \
//!     sparse 20000 config/model.toml tests/fixtures/model-default-2026.11.toml
//! ```
//! (`-` as a model file: the built-in default.)

use std::error::Error;

use churn_analysis::alerts::alert_quality;
use churn_analysis::labels::Labels;
use churn_core::model::RiskModel;
use churn_generate::{GenerateConfig, Generator, Shape};

const DAY_MS: i64 = 86_400_000;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, customers, models @ ..] = args.as_slice() else {
        return Err("usage: alert_quality sparse|mixed|journeys CUSTOMERS MODEL.toml...".into());
    };
    let shape: Shape = shape.parse().map_err(|e| format!("shape: {e}"))?;
    let config = GenerateConfig {
        customers: customers.parse()?,
        seed: 13,
        shape,
        ..GenerateConfig::default()
    };
    let mut generator = Generator::new(config.clone())?;
    let pairs: Vec<(String, bool)> = generator
        .labels()
        .map(|l| (l.customer_id, l.churned))
        .collect();
    let labels = Labels::from_pairs(pairs.iter().map(|(id, c)| (id.as_str(), *c)));
    let mut events = Vec::new();
    generator.write_jsonl(&mut events)?;
    let window = config.start_ms + (i64::from(Shape::slowdown_day(config.days)) + 14) * DAY_MS;
    println!("model\tever_alerted\tprecision\trecall");
    for path in models {
        let model = if path == "-" {
            RiskModel::default_model()
        } else {
            RiskModel::from_toml(&std::fs::read_to_string(path)?)?
        };
        let q = alert_quality(
            &model,
            events.split(|b| *b == b'\n').filter(|l| !l.is_empty()),
            &labels,
            0,
            window,
        );
        let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        println!(
            "{path}\t{:.3}\t{}\t{}",
            q.ever_alerted,
            show(q.precision),
            show(q.recall)
        );
    }
    Ok(())
}
