//! The HTTP API (axum): `POST /run`, `GET /computations`, `GET|DELETE
//! /computations/{id}`, `POST /computations/{id}/attestation`, `GET
//! /computations/{id}/policy` (`?format=cocos|corim`), `GET /events`
//! (newline-delimited JSON, optionally following), `GET /health`, `GET /metrics`.
//! Errors are JSON `{"error": "..."}` with a status that says what kind.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::runtime::{ApiError, ApiErrorKind, Manager, RunRequest, VmSummary};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.kind() {
            ApiErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ApiErrorKind::Conflict => StatusCode::CONFLICT,
            ApiErrorKind::NotFound => StatusCode::NOT_FOUND,
            ApiErrorKind::Capacity => StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The router.
pub fn router(m: Arc<Manager>) -> Router {
    Router::new()
        .route("/run", post(run))
        .route("/computations", get(list))
        .route("/computations/{id}", get(one).delete(remove))
        .route("/computations/{id}/attestation", post(attest))
        .route("/computations/{id}/policy", get(policy))
        .route("/events", get(events))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(crate::listen::read_body_within))
        .with_state(m)
}

async fn run(State(m): State<Arc<Manager>>, body: Bytes) -> Result<Response, ApiError> {
    let req: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?
    };
    let r = m.run(req).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn list(State(m): State<Arc<Manager>>) -> Json<Vec<VmSummary>> {
    Json(m.list().iter().map(|v| Manager::describe(v)).collect())
}

async fn one(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
) -> Result<Json<VmSummary>, ApiError> {
    let vm = m.get(&id)?;
    Ok(Json(Manager::describe(&vm)))
}

async fn remove(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    m.stop(&id, "DELETE /computations").await?;
    Ok(Json(json!({"computation_id": id, "stopped": true})))
}

async fn attest(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    let nonce = v
        .get("nonce")
        .and_then(Value::as_str)
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| ApiError::BadRequest("expected {\"nonce\": \"<hex>\"}".into()))?;
    m.attest(&id, nonce).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"computation_id": id, "requested": true})),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
struct PolicyQuery {
    format: Option<String>,
}

/// The launch's reference values: by default the summary with `cocos_policy` (JSON)
/// and `corim` (base64); `?format=cocos` the cocos policy JSON alone,
/// `?format=corim` the CoRIM bytes (`application/rim+cbor`).
async fn policy(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    q: Result<Query<PolicyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    let Query(q) = q.map_err(bad_query)?;
    let a = m.attestation_policy(&id)?;
    let no_tee = || {
        ApiError::Refused(crate::release::ReleaseError::Invalid {
            path: id.clone(),
            why: "this launch has no TEE measurement, so it has no reference values".into(),
        })
    };
    match q.format.as_deref() {
        None | Some("json") => {
            let mut v =
                serde_json::to_value(&a.summary).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let (Some(o), Some(d)) = (v.as_object_mut(), &a.documents) {
                let cocos: Value = serde_json::from_slice(&d.cocos_json)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                o.insert("cocos_policy".into(), cocos);
                o.insert(
                    "corim".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(&d.corim)
                        .into(),
                );
            }
            Ok(Json(v).into_response())
        }
        Some("cocos") => {
            let d = a.documents.ok_or_else(no_tee)?;
            Ok(([(header::CONTENT_TYPE, "application/json")], d.cocos_json).into_response())
        }
        Some("corim") => {
            let d = a.documents.ok_or_else(no_tee)?;
            Ok(([(header::CONTENT_TYPE, "application/rim+cbor")], d.corim).into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "format={other}: expected json, cocos or corim"
        ))),
    }
}

#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    #[serde(default)]
    from: u64,
    computation_id: Option<String>,
    #[serde(default)]
    follow: bool,
}

async fn events(
    State(m): State<Arc<Manager>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let rx = crate::events::watch(&m, q.from, q.computation_id, q.follow);
    let body = ReceiverStream::new(rx).map(|w| {
        // A store error ends the stream with a last line that says so.
        let line = match w {
            Ok(ev) => ev.json_line(),
            Err(why) => {
                axum::body::Bytes::from(format!("{}\n", json!({"kind": "error", "error": why})))
            }
        };
        Ok::<_, std::convert::Infallible>(line)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// A query string that does not parse: the JSON error every other error is.
fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("query: {}", e.body_text()))
}

async fn health(State(m): State<Arc<Manager>>) -> Response {
    let counts = m
        .store()
        .outbox()
        .and_then(|o| Ok((o, m.store().outbox_len()?)));
    let mut v = serde_json::Map::new();
    v.insert("status".into(), json!("ok"));
    v.insert("vms".into(), json!(m.list().len()));
    v.insert("last_seq".into(), json!(*m.seq().borrow()));
    v.insert(
        "release".into(),
        json!({"name": m.release().name, "version": m.release().version}),
    );
    let code = match counts {
        Ok(_) if m.store().failure().is_some() => {
            let why = m.store().failure().unwrap_or_default();
            v.insert("status".into(), json!("degraded"));
            v.insert(
                "error".into(),
                json!(format!("the event store cannot commit ({why}); launches are refused and agent frames wait unacknowledged until it can")),
            );
            StatusCode::SERVICE_UNAVAILABLE
        }
        Ok((outbox, held)) => {
            v.insert("outbox".into(), json!(outbox));
            v.insert("held".into(), json!(held));
            StatusCode::OK
        }
        Err(e) => {
            // Not 0: an unreadable store is reported as such.
            tracing::error!("health: event store unreadable: {e}");
            v.insert("status".into(), json!("error"));
            v.insert(
                "error".into(),
                json!(format!("event store unreadable: {e}")),
            );
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (code, Json(Value::Object(v))).into_response()
}

async fn metrics(State(m): State<Arc<Manager>>) -> Response {
    match m.store().outbox() {
        Ok(n) => {
            m.metrics.outbox.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::error!("metrics: event store unreadable: {e}"),
    }
    if let Ok(b) = m.store().held_bytes() {
        m.metrics
            .store_bytes
            .set(i64::try_from(b).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.metrics.render(),
    )
        .into_response()
}
