//! HTTP routes: `/metrics`, `/healthz`, `/readyz` and
//! `GET /v1/customers/{id}[?as_of=RFC3339]`. The routes own no state; they
//! read the worker through its [`WorkerShared`] handle.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::offline::parse_date_arg;
use crate::worker::WorkerShared;

#[derive(Clone)]
struct AppState {
    shared: Arc<WorkerShared>,
    bearer_token: Option<Arc<str>>,
}

/// Builds the router. With `bearer_token`, `/v1` requires
/// `Authorization: Bearer <token>`; the operational endpoints stay open.
pub fn router(shared: Arc<WorkerShared>, bearer_token: Option<String>) -> Router {
    let state = AppState {
        shared,
        bearer_token: bearer_token.map(Arc::from),
    };
    let v1 = Router::new()
        .route("/v1/customers/{id}", get(customer))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so response time does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.shared.metrics().render(),
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

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.shared.is_ready();
    let body = Readiness {
        ready,
        partitions: state
            .shared
            .partition_status()
            .into_iter()
            .map(|(partition, live)| PartitionReadiness {
                partition,
                live,
                restore_progress: state
                    .shared
                    .metrics()
                    .partition_restore_progress
                    .with_label_values(&[&partition.to_string()])
                    .get(),
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct CustomerQuery {
    as_of: Option<String>,
}

async fn customer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<CustomerQuery>,
) -> Response {
    let as_of = match query.as_of.as_deref().map(parse_date_arg).transpose() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("as_of: {e}")),
    };
    let shared = Arc::clone(&state.shared);
    // Scoring takes read locks the pipeline also takes: keep it off the async workers.
    let view = tokio::task::spawn_blocking(move || shared.lookup(&id, as_of)).await;
    match view {
        Ok(Some(view)) => {
            let mut body = serde_json::to_value(&view).unwrap_or_default();
            label_reasons(&mut body, state.shared.model());
            Json(body).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown customer (not in this instance's partitions)",
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed"),
    }
}

/// Adds each reason's `label` (the model file's, or the default) next to its `factor`.
fn label_reasons(body: &mut serde_json::Value, model: &crate::model::RiskModel) {
    if let Some(reasons) = body.get_mut("reasons").and_then(|r| r.as_array_mut()) {
        for reason in reasons {
            let label = reason
                .get("factor")
                .and_then(|f| f.as_str())
                .map(|f| model.label(f));
            if let (Some(label), Some(obj)) = (label, reason.as_object_mut()) {
                obj.insert("label".into(), serde_json::Value::String(label));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RiskModel;
    use crate::telemetry::Metrics;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(token: Option<&str>) -> Router {
        let shared = WorkerShared::new(Arc::new(RiskModel::default_model()), Metrics::new());
        router(shared, token.map(String::from))
    }

    async fn get_status(app: Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::get(uri);
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
    async fn operational_endpoints_answer() {
        let (s, body) = get_status(app(None), "/healthz", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, "ok\n");
        let (s, _) = get_status(app(None), "/readyz", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "not joined yet");
        let (s, body) = get_status(app(None), "/metrics", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("churn_scorer_events_consumed_total"));
    }

    #[test]
    fn v1_reasons_carry_labels() {
        let model = RiskModel::default_model();
        let mut body =
            serde_json::json!({"reasons": [{"factor": "event:payment_failed", "points": 12.0}]});
        label_reasons(&mut body, &model);
        assert_eq!(body["reasons"][0]["label"], "Payment failed");
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
