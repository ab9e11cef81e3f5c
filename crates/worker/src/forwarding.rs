//! Forwarding of `GET /v1/customers/{id}` to the instance that holds the
//! customer, when it is not held here (`topics.membership` set).
//!
//! The owner of the customer's partition (by `lookup.partitioner`) is asked
//! first; if it does not hold the customer (or the partition cannot be
//! computed), every other instance owning partitions is asked at once and
//! the first 200 wins. Every request carries [`FORWARDED_HEADER`], and a
//! request carrying it is answered from local state only, so a lookup
//! crosses at most one hop whatever the membership views say. One deadline
//! (`lookup.forward_timeout_ms`) bounds the whole search; an instance that
//! does not answer in time or at all makes the lookup fail (504/502), never
//! answer a false 404.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ownership::PartitionOwners;
use crate::partitioner::KeyPartitioner;
use crate::telemetry::Metrics;

/// Marks a forwarded lookup (its value: the URL of the instance that
/// forwarded it); such a request is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-churn-scorer-forwarded";
/// Names the instance whose state answered a forwarded lookup.
pub const SERVED_BY_HEADER: &str = "x-churn-scorer-served-by";

/// Largest answer body read from another instance (a customer view is a
/// few kilobytes).
const MAX_BODY: usize = 1 << 20;

/// What one instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAnswer {
    /// 200, with its body.
    Found(Bytes),
    /// 404: it does not hold the customer.
    NotFound,
    /// 503: it is restoring or stopping.
    Unavailable(String),
    /// Unreachable, or any other answer.
    Failed(String),
    /// No answer before the deadline.
    TimedOut,
}

impl MemberAnswer {
    fn label(&self) -> &'static str {
        match self {
            MemberAnswer::Found(_) => "found",
            MemberAnswer::NotFound => "not_found",
            MemberAnswer::Unavailable(_) => "unavailable",
            MemberAnswer::Failed(_) => "failed",
            MemberAnswer::TimedOut => "timeout",
        }
    }
}

/// The result of a search of the other instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// An instance holds the customer: its answer, relayed as is.
    Found {
        /// The instance that answered.
        url: String,
        /// Its JSON body.
        body: Bytes,
    },
    /// Every instance that could hold the customer answered 404.
    NotFound,
    /// Someone did not answer in time (504).
    TimedOut(String),
    /// Someone could not be reached or answered wrongly (502).
    Failed(String),
    /// The customer's partition has no known owner, or its owner is
    /// restoring or stopping (503: retry).
    Unavailable(String),
}

impl ForwardOutcome {
    /// The HTTP status the lookup answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardOutcome::Found { .. } => StatusCode::OK,
            ForwardOutcome::NotFound => StatusCode::NOT_FOUND,
            ForwardOutcome::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardOutcome::Failed(_) => StatusCode::BAD_GATEWAY,
            ForwardOutcome::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Combines the answers of the instances asked (none found the customer)
/// and what is known about ownership: a 404 only if nobody failed and no
/// partition that could hold the customer lacks an owner.
pub fn combine(answers: &[(String, MemberAnswer)], unowned: Option<String>) -> ForwardOutcome {
    let timed_out: Vec<&str> = answers
        .iter()
        .filter(|(_, a)| matches!(a, MemberAnswer::TimedOut))
        .map(|(url, _)| url.as_str())
        .collect();
    if !timed_out.is_empty() {
        return ForwardOutcome::TimedOut(format!(
            "no answer in time from {}",
            timed_out.join(", ")
        ));
    }
    let failed = answers.iter().find_map(|(url, a)| match a {
        MemberAnswer::Failed(why) => Some(format!("{url}: {why}")),
        _ => None,
    });
    if let Some(why) = failed {
        return ForwardOutcome::Failed(why);
    }
    let unavailable = answers.iter().find_map(|(url, a)| match a {
        MemberAnswer::Unavailable(why) => Some(format!("{url}: {why}")),
        _ => None,
    });
    match unavailable.or(unowned) {
        Some(why) => ForwardOutcome::Unavailable(why),
        None => ForwardOutcome::NotFound,
    }
}

/// Asks the other instances for a customer not held locally.
pub struct LookupForwarder {
    client: Client<HttpConnector, Empty<Bytes>>,
    self_url: String,
    partitioner: KeyPartitioner,
    timeout: Duration,
    /// `Authorization` sent with every forwarded request
    /// (`http.peer_token`): the caller's own never leaves the instance.
    peer_authorization: Option<HeaderValue>,
    metrics: Metrics,
}

impl LookupForwarder {
    /// A forwarder for the instance reached at `self_url`.
    pub fn new(
        self_url: String,
        partitioner: KeyPartitioner,
        timeout: Duration,
        peer_token: Option<&str>,
        metrics: Metrics,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        LookupForwarder {
            client: Client::builder(TokioExecutor::new()).build(connector),
            self_url,
            partitioner,
            timeout,
            // A token that is not a valid header value is sent as none; the
            // configuration cannot hold one (it comes from TOML or env text).
            peer_authorization: peer_token
                .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            metrics,
        }
    }

    /// Looks for `customer_id` on the other instances `owners` names (only
    /// URLs whose claims were believed: see [`crate::ownership`]);
    /// `path_and_query` is the original request's, sent with the peer token,
    /// never the caller's `Authorization`. `restoring`: this instance's
    /// partitions still being restored (a customer there is not known yet:
    /// no 404).
    pub async fn find(
        &self,
        owners: &PartitionOwners,
        customer_id: &str,
        path_and_query: &str,
        restoring: &[i32],
    ) -> ForwardOutcome {
        let deadline = Instant::now() + self.timeout;
        if owners.partition_count() == 0 {
            return ForwardOutcome::Unavailable(
                "the instances' membership is not known yet: retry".into(),
            );
        }
        let partition = self
            .partitioner
            .partition(customer_id.as_bytes(), owners.partition_count());
        let unowned = match partition {
            Some(p) if owners.owner(p).is_none() => Some(format!(
                "partition {p} has no known owner (a rebalance is moving it): retry"
            )),
            Some(_) => None,
            None => {
                let unowned = owners.unowned();
                (!unowned.is_empty()).then(|| {
                    format!("partitions {unowned:?} have no known owner (rebalancing): retry")
                })
            }
        };
        let restoring = match partition {
            Some(p) => restoring.contains(&p),
            None => !restoring.is_empty(),
        }
        .then(|| "this instance is restoring the customer's partition: retry".to_string());
        let unowned = unowned.or(restoring);
        let mut answers = Vec::new();
        // The owner of the customer's partition first: usually the only request.
        let direct = partition
            .and_then(|p| owners.owner(p))
            .filter(|url| *url != self.self_url);
        if let Some(url) = direct {
            let answer = self.ask(url, path_and_query, deadline).await;
            if let MemberAnswer::Found(body) = answer {
                return ForwardOutcome::Found {
                    url: url.to_string(),
                    body,
                };
            }
            answers.push((url.to_string(), answer));
        }
        // Then everyone else at once (misrouted events, another partitioner).
        let mut asking = JoinSet::new();
        for url in owners.members() {
            if *url == self.self_url || Some(url.as_str()) == direct {
                continue;
            }
            let request = self.request(url, path_and_query);
            let client = self.client.clone();
            let url = url.clone();
            asking.spawn(async move {
                let answer = send(client, request, deadline).await;
                (url, answer)
            });
        }
        while let Some(joined) = asking.join_next().await {
            let Ok((url, answer)) = joined else {
                continue;
            };
            self.count(&answer);
            if let MemberAnswer::Found(body) = answer {
                // The others' answers no longer matter.
                asking.abort_all();
                return ForwardOutcome::Found { url, body };
            }
            answers.push((url, answer));
        }
        combine(&answers, unowned)
    }

    async fn ask(&self, url: &str, path_and_query: &str, deadline: Instant) -> MemberAnswer {
        let request = self.request(url, path_and_query);
        let answer = send(self.client.clone(), request, deadline).await;
        self.count(&answer);
        answer
    }

    fn count(&self, answer: &MemberAnswer) {
        self.metrics
            .lookups_forwarded
            .with_label_values(&[answer.label()])
            .inc();
    }

    fn request(&self, url: &str, path_and_query: &str) -> Result<Request<Empty<Bytes>>, String> {
        let mut builder = Request::get(format!("{url}{path_and_query}"))
            .header(FORWARDED_HEADER, self.self_url.as_str());
        if let Some(auth) = &self.peer_authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

/// Sends one request and reads its answer, all before `deadline`.
async fn send(
    client: Client<HttpConnector, Empty<Bytes>>,
    request: Result<Request<Empty<Bytes>>, String>,
    deadline: Instant,
) -> MemberAnswer {
    let request = match request {
        Ok(r) => r,
        Err(why) => return MemberAnswer::Failed(why),
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("answer unreadable: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => MemberAnswer::TimedOut,
        Ok(Err(why)) => MemberAnswer::Failed(why),
        Ok(Ok((StatusCode::OK, body))) => MemberAnswer::Found(body),
        Ok(Ok((StatusCode::NOT_FOUND, _))) => MemberAnswer::NotFound,
        Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, body))) => {
            MemberAnswer::Unavailable(String::from_utf8_lossy(&body).into_owned())
        }
        Ok(Ok((status, _))) => MemberAnswer::Failed(format!("answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(url: &str, answer: MemberAnswer) -> (String, MemberAnswer) {
        (url.to_string(), answer)
    }

    #[test]
    fn a_404_needs_every_instance_to_say_so() {
        let all_404 = [
            a("http://a", MemberAnswer::NotFound),
            a("http://b", MemberAnswer::NotFound),
        ];
        assert_eq!(combine(&all_404, None), ForwardOutcome::NotFound);
        assert_eq!(
            combine(&[], None),
            ForwardOutcome::NotFound,
            "alone in the group"
        );
        assert_eq!(
            combine(&all_404, Some("partition 3 has no known owner".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let silent = [
            a("http://a", MemberAnswer::NotFound),
            a("http://b", MemberAnswer::TimedOut),
        ];
        let outcome = combine(&silent, None);
        assert_eq!(outcome.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(format!("{outcome:?}").contains("http://b"), "{outcome:?}");
        let refused = [
            a("http://a", MemberAnswer::Failed("unreachable".into())),
            a("http://b", MemberAnswer::Unavailable("restoring".into())),
        ];
        assert_eq!(combine(&refused, None).status(), StatusCode::BAD_GATEWAY);
        let restoring = [a("http://b", MemberAnswer::Unavailable("restoring".into()))];
        assert_eq!(
            combine(&restoring, None).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn an_unreachable_instance_is_a_502_and_a_silent_one_a_504() {
        use crate::ownership::Claim;
        // A port nobody listens on, and a listener that never answers.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
        let claims = |url: &str| {
            [Claim {
                url: url.to_string(),
                partitions: vec![0],
                position: 1,
                timestamp_ms: 1,
            }]
        };
        let forwarder = LookupForwarder::new(
            "http://self".into(),
            KeyPartitioner::ConsistentRandom,
            Duration::from_millis(300),
            None,
            Metrics::new(),
        );
        let owners = PartitionOwners::resolve(&claims(&closed_url), 1, i64::MIN);
        let outcome = forwarder.find(&owners, "c1", "/v1/customers/c1", &[]).await;
        assert_eq!(outcome.status(), StatusCode::BAD_GATEWAY, "{outcome:?}");
        let owners = PartitionOwners::resolve(&claims(&silent_url), 1, i64::MIN);
        let started = std::time::Instant::now();
        let outcome = forwarder.find(&owners, "c1", "/v1/customers/c1", &[]).await;
        assert_eq!(outcome.status(), StatusCode::GATEWAY_TIMEOUT, "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the deadline holds"
        );
        let failures = forwarder
            .metrics
            .lookups_forwarded
            .with_label_values(&["failed"])
            .get()
            + forwarder
                .metrics
                .lookups_forwarded
                .with_label_values(&["timeout"])
                .get();
        assert_eq!(failures, 2);
        drop(silent);
    }

    #[tokio::test]
    async fn no_404_while_the_customers_partition_is_restoring_here() {
        use crate::ownership::Claim;
        // This instance alone owns every partition: nobody else to ask.
        let claims = [Claim {
            url: "http://self".into(),
            partitions: vec![0, 1],
            position: 1,
            timestamp_ms: 1,
        }];
        let owners = PartitionOwners::resolve(&claims, 2, i64::MIN);
        let forwarder = LookupForwarder::new(
            "http://self".into(),
            KeyPartitioner::ConsistentRandom,
            Duration::from_millis(300),
            None,
            Metrics::new(),
        );
        let p = KeyPartitioner::ConsistentRandom
            .partition(b"c1", 2)
            .expect("partition");
        let path = "/v1/customers/c1";
        let outcome = forwarder.find(&owners, "c1", path, &[p]).await;
        assert_eq!(outcome.status(), StatusCode::SERVICE_UNAVAILABLE);
        let outcome = forwarder.find(&owners, "c1", path, &[1 - p]).await;
        assert_eq!(
            outcome,
            ForwardOutcome::NotFound,
            "another partition restores"
        );
        let outcome = forwarder.find(&owners, "c1", path, &[]).await;
        assert_eq!(outcome, ForwardOutcome::NotFound);
        // Before any claim is read nothing is known.
        let outcome = forwarder
            .find(&PartitionOwners::default(), "c1", path, &[])
            .await;
        assert_eq!(outcome.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
