//! `churn-scorer inspect`: how a sample of messages reads with the input
//! settings: how many map cleanly and why the others fail (per reason and
//! source), the event-type vocabulary against the model's, the time range,
//! and a suggested `rename` table. Pure: the caller feeds it messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::{InputFormat, Mapping, MappingSpec, MessageContext};
use crate::event::format_timestamp_ms;
use crate::model::RiskModel;

/// Distinct source event types counted one by one; further ones are counted together.
pub const MAX_EVENT_TYPES: usize = 1000;

/// Failures of one reason at one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCount {
    /// The stable reason label.
    pub reason: &'static str,
    /// The mapping's source that failed (`/userId`), if any.
    pub source: Option<String>,
    /// How many messages.
    pub count: u64,
    /// The first such message's error, for people.
    pub example: String,
}

/// One event type of the sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeCount {
    /// As read from the message.
    pub source_type: String,
    /// After `rename` (what the model sees).
    pub event_type: String,
    /// Messages of this type (mapped or excluded).
    pub count: u64,
    /// `named` (the model gives it points), `not_named` (activity only), or
    /// `excluded` (left out by `include`/`exclude`).
    pub status: &'static str,
}

/// What `inspect` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    /// The input format.
    pub format: String,
    /// The mapping in effect, as TOML.
    pub mapping: String,
    /// Messages read (blank lines not counted).
    pub messages: u64,
    /// Messages read as events.
    pub mapped: u64,
    /// Valid messages left out by `include`/`exclude`.
    pub excluded: u64,
    /// Messages that are not events (dead letters, live).
    pub failed: u64,
    /// Failures by reason and source, most frequent first.
    pub failures: Vec<FailureCount>,
    /// Distinct customers among the mapped events.
    pub customers: u64,
    /// The event-type vocabulary, most frequent first.
    pub event_types: Vec<TypeCount>,
    /// Messages whose type was beyond the first [`MAX_EVENT_TYPES`] distinct ones.
    pub other_event_types: u64,
    /// Event types the model names that the sample never shows.
    pub model_types_not_seen: Vec<String>,
    /// Earliest event time among the mapped events (RFC 3339).
    pub first_event_at: Option<String>,
    /// Latest event time among the mapped events (RFC 3339).
    pub last_event_at: Option<String>,
    /// Source types the model does not name, with the model type each most
    /// likely means (by name): a starting point for `rename`, to check.
    pub suggested_rename: BTreeMap<String, String>,
}

/// A failure's reason label and the source that failed.
type FailureKey = (&'static str, Option<Arc<str>>);

/// Accumulates an [`InspectReport`] message by message.
pub struct Inspection<'f> {
    format: &'f InputFormat,
    /// Reads a message's source event type (before rename/include/exclude).
    types_from: Arc<Mapping>,
    model_types: Vec<String>,
    messages: u64,
    mapped: u64,
    excluded: u64,
    /// (count, first error message) by (reason, source).
    failures: BTreeMap<FailureKey, (u64, String)>,
    customers: HashSet<String>,
    types: HashMap<String, u64>,
    other_types: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl<'f> Inspection<'f> {
    /// An empty inspection of `format` against `model`'s vocabulary.
    pub fn new(format: &'f InputFormat, model: &RiskModel) -> Self {
        let types_from = match format {
            InputFormat::Mapped(m) => Arc::clone(m),
            InputFormat::Churn => Arc::new(
                MappingSpec::preset("churn")
                    .and_then(|spec| Mapping::compile("churn", spec).ok())
                    .unwrap_or_else(|| unreachable!("the churn preset is tested to compile")),
            ),
        };
        Inspection {
            format,
            types_from,
            model_types: model.kinds().iter().map(|k| k.name.clone()).collect(),
            messages: 0,
            mapped: 0,
            excluded: 0,
            failures: BTreeMap::new(),
            customers: HashSet::new(),
            types: HashMap::new(),
            other_types: 0,
            first_ms: None,
            last_ms: None,
        }
    }

    /// Counts one message.
    pub fn add(&mut self, bytes: &[u8], cx: &MessageContext<'_>) {
        self.messages += 1;
        match self.format.decode(bytes, cx) {
            Ok(Some(event)) => {
                self.mapped += 1;
                if !self.customers.contains(event.customer_id.as_ref()) {
                    self.customers.insert(event.customer_id.to_string());
                }
                let t = event.timestamp_ms;
                self.first_ms = Some(self.first_ms.map_or(t, |m| m.min(t)));
                self.last_ms = Some(self.last_ms.map_or(t, |m| m.max(t)));
            }
            Ok(None) => self.excluded += 1,
            Err(e) => {
                let entry = self
                    .failures
                    .entry((e.reason(), e.source.clone()))
                    .or_insert_with(|| (0, e.error.to_string()));
                entry.0 += 1;
                return;
            }
        }
        if let Some(source_type) = self.types_from.source_event_type(bytes) {
            if let Some(n) = self.types.get_mut(source_type.as_ref()) {
                *n += 1;
            } else if self.types.len() < MAX_EVENT_TYPES {
                self.types.insert(source_type.into_owned(), 1);
            } else {
                self.other_types += 1;
            }
        }
    }

    /// The report.
    pub fn finish(self) -> InspectReport {
        let named: HashSet<&str> = self.model_types.iter().map(String::as_str).collect();
        let mapping = match self.format {
            InputFormat::Churn => None,
            InputFormat::Mapped(m) => Some(m),
        };
        let mut event_types: Vec<TypeCount> = self
            .types
            .iter()
            .map(|(source, &count)| {
                let (event_type, admitted) = match mapping {
                    Some(m) => (m.renamed(source).to_string(), m.admits(source)),
                    None => (source.clone(), true),
                };
                let status = if !admitted {
                    "excluded"
                } else if named.contains(event_type.as_str()) {
                    "named"
                } else {
                    "not_named"
                };
                TypeCount {
                    source_type: source.clone(),
                    event_type,
                    count,
                    status,
                }
            })
            .collect();
        event_types.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.source_type.cmp(&b.source_type))
        });
        let seen: HashSet<&str> = event_types
            .iter()
            .filter(|t| t.status == "named")
            .map(|t| t.event_type.as_str())
            .collect();
        let model_types_not_seen = self
            .model_types
            .iter()
            .filter(|t| !seen.contains(t.as_str()))
            .cloned()
            .collect();
        let suggested_rename = event_types
            .iter()
            .filter(|t| t.status == "not_named")
            .filter_map(|t| {
                suggest_model_type(&t.source_type, &self.model_types)
                    .map(|m| (t.source_type.clone(), m.to_string()))
            })
            .collect();
        let mut failures: Vec<FailureCount> = self
            .failures
            .into_iter()
            .map(|((reason, source), (count, example))| FailureCount {
                reason,
                source: source.map(|s| s.to_string()),
                count,
                example,
            })
            .collect();
        failures.sort_by_key(|f| std::cmp::Reverse(f.count));
        InspectReport {
            format: self.format.name().to_string(),
            mapping: self.format.effective_mapping().to_toml(),
            messages: self.messages,
            mapped: self.mapped,
            excluded: self.excluded,
            failed: self.messages - self.mapped - self.excluded,
            failures,
            customers: self.customers.len() as u64,
            event_types,
            other_event_types: self.other_types,
            model_types_not_seen,
            first_event_at: self.first_ms.map(format_timestamp_ms),
            last_event_at: self.last_ms.map(format_timestamp_ms),
            suggested_rename,
        }
    }
}

/// Words that mean a model type, whatever the source calls it. Each entry:
/// every word must appear in the source type's words.
const SYNONYMS: &[(&[&str], &str)] = &[
    (&["payment", "failed"], "payment_failed"),
    (&["charge", "failed"], "payment_failed"),
    (&["subscription", "cancel"], "subscription_cancelled"),
    (&["subscription", "canceled"], "subscription_cancelled"),
    (&["subscription", "cancelled"], "subscription_cancelled"),
    (&["churned"], "subscription_cancelled"),
    (&["downgrade"], "plan_downgrade"),
    (&["downgraded"], "plan_downgrade"),
    (&["unsubscribe"], "email_unsubscribe"),
    (&["unsubscribed"], "email_unsubscribe"),
    (&["cart", "abandoned"], "cart_abandoned"),
    (&["checkout", "abandoned"], "cart_abandoned"),
    (&["refund"], "refund"),
    (&["refunded"], "refund"),
    (&["ticket"], "support_ticket"),
    (&["complaint"], "complaint"),
    (&["detractor"], "nps_detractor"),
    (&["promoter"], "nps_promoter"),
    (&["renewed"], "renewal"),
    (&["renewal"], "renewal"),
    (&["order", "completed"], "purchase"),
    (&["order", "placed"], "purchase"),
    (&["checkout", "completed"], "purchase"),
    (&["purchased"], "purchase"),
    (&["purchase"], "purchase"),
    (&["signed", "in"], "login"),
    (&["logged", "in"], "login"),
    (&["login"], "login"),
    (&["session"], "session"),
    (&["application", "opened"], "session"),
    (&["app", "opened"], "session"),
    (&["feature"], "feature_used"),
];

/// The model type a source type most likely means, by its words (`Order
/// Completed`, `com.example.order.completed`, `order_completed` all read as
/// `order completed`); only a type the model names.
pub fn suggest_model_type<'m>(source: &str, model_types: &'m [String]) -> Option<&'m str> {
    let words: Vec<String> = source
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let joined = words.join("_");
    if let Some(t) = model_types.iter().find(|t| **t == joined) {
        return Some(t);
    }
    SYNONYMS
        .iter()
        .find(|(needed, target)| {
            model_types.iter().any(|t| t == target)
                && needed.iter().all(|n| words.iter().any(|w| w == n))
        })
        .and_then(|(_, target)| model_types.iter().find(|t| t == target))
        .map(String::as_str)
}
