//! HTTP routes: `/metrics`, `/healthz`, `/readyz`,
//! `GET /v1/customers/{id}[?as_of=RFC3339]`, and the admin operations
//! `POST /admin/reload` and `DELETE /v1/customers/{id}` (only with
//! `http.admin_token`). The routes own no state; they reach the worker
//! through its handles ([`WorkerHandles`]): the model registry for reloads,
//! the partition directory for readiness, lookups for customers and
//! erasures, the metrics registry. Until this instance has joined its group
//! and restored every partition it was assigned, a lookup it cannot answer
//! is refused with 503 `not ready` (as `/readyz` reports), not a 404. With `topics.membership`, a lookup
//! of a customer held by another instance is forwarded there
//! ([`crate::forwarding`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::config::{HttpConfig, WorkerConfig};
use crate::directory::PartitionDirectory;
use crate::forwarding::{FORWARDED_HEADER, ForwardOutcome, LookupForwarder, SERVED_BY_HEADER};
use crate::handles::WorkerHandles;
use crate::lookups::Lookups;
use crate::registry::{ModelRegistry, ReloadError};
use crate::telemetry::Metrics;
use churn_core::event::parse_date_arg;

/// How long an admin request waits for every pipeline thread to act on it
/// (each does between bursts, within milliseconds unless it is stuck).
const ADMIN_WAIT: Duration = Duration::from_secs(10);
/// How long `POST /admin/reload` waits for the model files to be read (a
/// model file reads in milliseconds; one that blocks must not hold the call).
const RELOAD_READ_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct AppState {
    registry: Arc<ModelRegistry>,
    directory: Arc<PartitionDirectory>,
    lookups: Lookups,
    metrics: Metrics,
    bearer_token: Option<Arc<str>>,
    admin_token: Option<Arc<str>>,
    /// Accepted on forwarded lookups only (`http.peer_token`).
    peer_token: Option<Arc<str>>,
    /// Set with `topics.membership`: lookups of customers held elsewhere.
    forwarder: Option<Arc<LookupForwarder>>,
}

/// Builds the router. With `http.bearer_token`, `/v1` requires
/// `Authorization: Bearer <token>` (the admin token is accepted too); the
/// operational endpoints stay open. The admin operations require
/// `http.admin_token` and answer 403 while it is not set.
pub fn router(handles: WorkerHandles, http: &HttpConfig) -> Router {
    build(handles, http, None)
}

/// The worker's router: as [`router`], and with `topics.membership` a
/// lookup of a customer held by another instance is forwarded to it
/// (`http.advertised_url` names this instance; [`crate::Worker::bind`]
/// sets it).
pub fn worker_router(handles: WorkerHandles, config: &WorkerConfig) -> Router {
    let forwarder = config.topics.membership.as_ref().map(|_| {
        Arc::new(LookupForwarder::new(
            config.http.advertised_url.clone().unwrap_or_default(),
            config.lookup.partitioner,
            Duration::from_millis(config.lookup.forward_timeout_ms),
            config.http.peer_token.as_deref(),
            handles.metrics.clone(),
        ))
    });
    build(handles, &config.http, forwarder)
}

fn build(
    handles: WorkerHandles,
    http: &HttpConfig,
    forwarder: Option<Arc<LookupForwarder>>,
) -> Router {
    let state = AppState {
        registry: handles.registry,
        directory: handles.directory,
        lookups: handles.lookups,
        metrics: handles.metrics,
        bearer_token: http.bearer_token.as_deref().map(Arc::from),
        admin_token: http.admin_token.as_deref().map(Arc::from),
        peer_token: http.peer_token.as_deref().map(Arc::from),
        forwarder,
    };
    let v1 = Router::new()
        .route("/v1/customers/{id}", get(customer).delete(erase))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/reload", post(reload))
        .merge(v1)
        .with_state(state)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.bearer_token {
        let given = bearer(&headers);
        let matches =
            |token: &str| given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        // The admin token grants reading too; the peer token only on a
        // lookup another instance forwarded (erasure also needs the admin
        // token, checked by its handler).
        let peer = headers.contains_key(FORWARDED_HEADER)
            && request.method() == axum::http::Method::GET
            && state.peer_token.as_deref().is_some_and(matches);
        if !matches(expected) && !state.admin_token.as_deref().is_some_and(matches) && !peer {
            return unauthorized();
        }
    }
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The admin token check: `None` if granted, else the refusal (403 while
/// no admin token is configured, 401 on a missing or wrong one).
fn refuse_admin(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &state.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin operations are disabled: set http.admin_token",
        ));
    };
    match bearer(headers) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => None,
        _ => Some(unauthorized()),
    }
}

#[derive(Serialize)]
struct ReloadBody {
    model_version: String,
    previous_version: String,
    /// The shadow model's version (`model.shadow_path`), re-read too.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_version: Option<String>,
    /// Every pipeline thread confirmed it scores with the new model.
    applied: bool,
}

/// `POST /admin/reload`: re-reads the model file (as SIGHUP does).
async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = refuse_admin(&state, &headers) {
        return response;
    }
    let registry = Arc::clone(&state.registry);
    // Reads a file: off the async workers, and never waited for past
    // RELOAD_READ_WAIT (a file that blocks on read must not hold the request, nor
    // queue later ones: those are refused as busy until the read ends).
    let reading = tokio::task::spawn_blocking(move || registry.reload_model());
    let Ok(result) = tokio::time::timeout(RELOAD_READ_WAIT, reading).await else {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the model file was not read within {} s; the read goes on, and a valid model \
                 is swapped in if it ends (until then further reloads answer 409)",
                RELOAD_READ_WAIT.as_secs()
            ),
        );
    };
    match result {
        Ok(Ok(reloaded)) => {
            let deadline = tokio::time::Instant::now() + ADMIN_WAIT;
            let mut applied = true;
            for rx in reloaded.applied {
                applied &= matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(())));
            }
            Json(ReloadBody {
                model_version: reloaded.model_version,
                shadow_version: reloaded.shadow_version,
                previous_version: reloaded.previous_version,
                applied,
            })
            .into_response()
        }
        Ok(Err(e @ (ReloadError::NoModelFile | ReloadError::Busy))) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Ok(Err(e @ (ReloadError::Invalid { .. } | ReloadError::InvalidShadow { .. }))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload failed"),
    }
}

#[derive(Serialize)]
struct ErasedBody {
    customer_id: String,
    /// Input partitions it was removed from (one unless its events were misrouted).
    partitions: Vec<i32>,
    erased: bool,
}

/// `DELETE /v1/customers/{id}`: erases the customer on the pipeline thread
/// that owns its partition (every thread is asked; at most one holds it,
/// unless its events were misrouted).
async fn erase(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = refuse_admin(&state, &headers) {
        return response;
    }
    let answers = match state.lookups.erase_customer(&id) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + ADMIN_WAIT;
    let mut incomplete = false;
    let mut partitions = Vec::new();
    for rx in answers {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => {
                partitions.extend(outcome.erased);
                incomplete |= outcome.restoring;
            }
            Ok(Err(_)) | Err(_) => incomplete = true,
        }
    }
    if !partitions.is_empty() {
        partitions.sort_unstable();
        return Json(ErasedBody {
            customer_id: id,
            partitions,
            erased: true,
        })
        .into_response();
    }
    if incomplete {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not found, but some partitions are restoring or did not answer: retry",
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            "unknown customer (not in this instance's partitions)",
        )
    }
}

/// Compares without an early exit, so response time does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    partitions: Vec<PartitionReadiness>,
}

#[derive(Serialize)]
struct PartitionReadiness {
    partition: i32,
    live: bool,
    /// Fraction of the partition's changelog restored so far (1 once live).
    restore_progress: f64,
}

/// Body of a lookup refused before this instance is ready: `/readyz`'s
/// report under an `error`.
#[derive(Serialize)]
struct NotReady {
    error: &'static str,
    #[serde(flatten)]
    readiness: Readiness,
}

fn readiness(state: &AppState) -> Readiness {
    Readiness {
        ready: state.directory.is_ready(),
        partitions: state
            .directory
            .partition_status()
            .into_iter()
            .map(|(partition, live)| PartitionReadiness {
                partition,
                live,
                restore_progress: state
                    .metrics
                    .partition_restore_progress
                    .with_label_values(&[&partition.to_string()])
                    .get(),
            })
            .collect(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let body = readiness(&state);
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// 503 `not ready`, with the readiness report.
fn not_ready(state: &AppState) -> Response {
    let body = NotReady {
        error: "not ready",
        readiness: readiness(state),
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[derive(Deserialize)]
struct CustomerQuery {
    as_of: Option<String>,
}

async fn customer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<CustomerQuery>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let as_of = match query.as_of.as_deref().map(parse_date_arg).transpose() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("as_of: {e}")),
    };
    let lookups = state.lookups.clone();
    let customer_id = id.clone();
    // Scoring takes read locks the pipeline also takes: keep it off the async workers.
    let view =
        tokio::task::spawn_blocking(move || lookups.lookup_with_model(&customer_id, as_of)).await;
    match view {
        Ok(Some((view, model))) => {
            let mut body = serde_json::to_value(&view).unwrap_or_default();
            label_reasons(&mut body, &view.reasons, &model);
            Json(body).into_response()
        }
        Ok(None) => match &state.forwarder {
            // Not joined or not restored: the customer may yet appear here
            // (or, before joining, anywhere): not a 404 (issue 32).
            None if !state.directory.is_ready() => not_ready(&state),
            Some(_) if !state.directory.is_joined() => not_ready(&state),
            None => error(
                StatusCode::NOT_FOUND,
                "unknown customer (not in this instance's partitions)",
            ),
            // Asked by another instance: answer from local state only (one hop).
            Some(_) if headers.contains_key(FORWARDED_HEADER) => {
                if !state.directory.is_ready() {
                    // Some partitions are restoring (or none assigned yet).
                    not_ready(&state)
                } else {
                    error(
                        StatusCode::NOT_FOUND,
                        "unknown customer (not in this instance's partitions)",
                    )
                }
            }
            Some(forwarder) => {
                let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
                let owners = state.directory.partition_owners();
                let restoring: Vec<i32> = state
                    .directory
                    .partition_status()
                    .into_iter()
                    .filter(|(_, live)| !live)
                    .map(|(p, _)| p)
                    .collect();
                let outcome = forwarder.find(&owners, &id, path, &restoring).await;
                forwarded_response(outcome)
            }
        },
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed"),
    }
}

/// The answer to a lookup another instance was asked for.
fn forwarded_response(outcome: ForwardOutcome) -> Response {
    let status = outcome.status();
    match outcome {
        ForwardOutcome::Found { url, body } => {
            let mut response =
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&url) {
                response.headers_mut().insert(SERVED_BY_HEADER, v);
            }
            response
        }
        ForwardOutcome::NotFound => error(
            status,
            "unknown customer (no instance of the group holds it)",
        ),
        ForwardOutcome::TimedOut(why) => error(status, format!("lookup incomplete: {why}")),
        ForwardOutcome::Failed(why) => error(status, format!("lookup incomplete: {why}")),
        ForwardOutcome::Unavailable(why) => {
            error(status, format!("lookup incomplete, retry: {why}"))
        }
    }
}

/// Adds each reason's `label` (the model file's, or the default, filled
/// with the reason's quantities) next to its `factor`, and the `summary` an
/// at-risk alert would carry: `reasons` are the ones `body` was serialised from.
fn label_reasons(
    body: &mut serde_json::Value,
    reasons: &[churn_core::engine::Reason],
    model: &churn_core::model::RiskModel,
) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let summary = churn_core::alert::risk_summary(reasons, model);
    obj.insert("summary".into(), serde_json::json!(summary));
    if let Some(items) = obj.get_mut("reasons").and_then(|r| r.as_array_mut()) {
        for (item, reason) in items.iter_mut().zip(reasons) {
            if let Some(item) = item.as_object_mut() {
                let label = model.reason_label(&reason.factor, &reason.quantities);
                item.insert("label".into(), serde_json::Value::String(label));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;
    use axum::body::Body;
    use churn_core::model::RiskModel;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(token: Option<&str>) -> Router {
        admin_app(token, None)
    }

    fn admin_app(token: Option<&str>, admin: Option<&str>) -> Router {
        let handles = WorkerHandles::new(Arc::new(RiskModel::default_model()), Metrics::new());
        // Joined, no partitions: ready, so an unknown customer is a 404.
        handles.directory.set_joined();
        let http = HttpConfig {
            bearer_token: token.map(String::from),
            admin_token: admin.map(String::from),
            ..HttpConfig::default()
        };
        router(handles, &http)
    }

    async fn send(
        app: Router,
        method: &str,
        uri: &str,
        auth: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn admin_operations_need_the_admin_token() {
        for (method, uri) in [("POST", "/admin/reload"), ("DELETE", "/v1/customers/x")] {
            let (s, _) = send(admin_app(None, None), method, uri, None).await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{method} {uri} without an admin token"
            );
            let (s, _) = send(admin_app(None, Some("adm")), method, uri, None).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with no token given"
            );
            let (s, _) = send(
                admin_app(None, Some("adm")),
                method,
                uri,
                Some("Bearer nope"),
            )
            .await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with a wrong token"
            );
            let (s, _) = send(
                admin_app(Some("read"), Some("adm")),
                method,
                uri,
                Some("Bearer read"),
            )
            .await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {uri}: the read token is not admin"
            );
        }
        // Right token: no model file to re-read, no pipeline running.
        let app = admin_app(Some("read"), Some("adm"));
        let (s, _) = send(app.clone(), "POST", "/admin/reload", Some("Bearer adm")).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _) = send(app.clone(), "DELETE", "/v1/customers/x", Some("Bearer adm")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        // The admin token also reads.
        let (s, _) = send(app, "GET", "/v1/customers/x", Some("Bearer adm")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn lookups_answer_not_ready_until_joined() {
        let handles = WorkerHandles::new(Arc::new(RiskModel::default_model()), Metrics::new());
        let app = router(handles.clone(), &HttpConfig::default());
        let (s, body) = send(app.clone(), "GET", "/v1/customers/x", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "before joining: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(body["error"], "not ready");
        assert_eq!(body["ready"], false, "reported as /readyz does: {body}");
        assert!(body["partitions"].is_array(), "{body}");
        let (s, _) = send(app.clone(), "GET", "/readyz", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        handles.directory.set_joined();
        let (s, body) = send(app, "GET", "/v1/customers/x", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "ready, customer unknown: {body}");
        assert!(body.contains("unknown customer"), "{body}");
    }

    async fn get_status(app: Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        send(app, "GET", uri, auth).await
    }

    #[tokio::test]
    async fn operational_endpoints_answer() {
        let (s, body) = get_status(app(None), "/healthz", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, "ok\n");
        let (s, _) = get_status(app(None), "/readyz", None).await;
        assert_eq!(s, StatusCode::OK, "joined, no partitions to restore");
        let (s, body) = get_status(app(None), "/metrics", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("churn_scorer_events_consumed_total"));
    }

    #[test]
    fn v1_reasons_carry_labels_and_the_summary() {
        let model = RiskModel::default_model();
        let reasons = [churn_core::engine::Reason {
            factor: "event:payment_failed".into(),
            points: 12.0,
            quantities: churn_core::model::Quantities::default()
                .with(churn_core::model::placeholder::COUNT, 2.0),
        }];
        let mut body = serde_json::json!({"reasons": reasons});
        label_reasons(&mut body, &reasons, &model);
        assert_eq!(body["reasons"][0]["label"], "Payment failed (2× recently)");
        assert_eq!(
            body["summary"],
            serde_json::json!(["Payment failed (2× recently)"])
        );
    }

    #[tokio::test]
    async fn v1_requires_the_token_when_set() {
        let uri = "/v1/customers/nobody";
        let (s, _) = get_status(app(Some("s3cret")), uri, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = get_status(app(Some("s3cret")), uri, Some("Bearer wrong")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = get_status(app(Some("s3cret")), uri, Some("Bearer s3cret")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = get_status(app(None), uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = get_status(app(None), "/v1/customers/x?as_of=yesterday", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
