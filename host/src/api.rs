//! The local entity API (contract §4): JSON over HTTP on `api.addr`,
//! loopback by default. Every handler answers with a JSON reply; failures
//! are `{"error": {"code", "message", "details"}}` with the status the
//! contract names.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hubsync_core::EngineError;
use hubsync_core::engine::{BatchOp, Choice, NoProgress, PutOutcome};
use hubsync_core::store::Page;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::error::HostError;
use crate::node::Node;

/// Largest API request body.
const MAX_BODY: u64 = 32 << 20;

/// All local API routes, plus `/health` and `/metrics`.
pub fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let n = move || {
        let node = node.clone();
        warp::any().map(move || node.clone())
    };
    let body = || warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes());

    let health = warp::path!("health")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(n())
            .then(|node: Arc<Node>| async move {
                // The two gauges alone: a master's full status also lists
                // every node.
                let store = node.engine.store();
                let pending = node.engine.pending_changes().await.unwrap_or(0);
                let held = store.count_held().await.unwrap_or(0);
                let writes = store.write_stats();
                let mut r = Response::new(node.metrics.render(pending, held, writes).into());
                r.headers_mut().insert(
                    "content-type",
                    warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            });
    let schemas = warp::path!("api" / "v1" / "schemas")
        .and(warp::get())
        .and(n())
        .map(|node: Arc<Node>| {
            let reg = node.engine.registry();
            json_reply(
                StatusCode::OK,
                &json!({"version": reg.version().to_string(), "types": reg.type_names()}),
            )
        });
    let create = warp::path!("api" / "v1" / "entities" / String)
        .and(warp::post())
        .and(n())
        .and(body())
        .then(|ty: String, node: Arc<Node>, body: Bytes| async move {
            let (uuid, data) = match parse_json(&body).map(split_create_body) {
                Ok(Ok(v)) => v,
                Ok(Err(r)) | Err(r) => return r.reply(),
            };
            match node.engine.create(&ty, uuid, data).await {
                Ok(e) => json_reply(StatusCode::CREATED, &e.to_api_json()),
                Err(e) => engine_error(e),
            }
        });
    let put = warp::path!("api" / "v1" / "entities" / String / String)
        .and(warp::put())
        .and(n())
        .and(body())
        .then(
            |ty: String, id: String, node: Arc<Node>, body: Bytes| async move {
                let uuid = match parse_uuid(&id) {
                    Ok(u) => u,
                    Err(r) => return r.reply(),
                };
                let data = match parse_json(&body) {
                    Ok(v) => v,
                    Err(r) => return r.reply(),
                };
                match node.engine.put(&ty, uuid, data).await {
                    Ok((e, PutOutcome::Created)) => {
                        json_reply(StatusCode::CREATED, &e.to_api_json())
                    }
                    Ok((e, PutOutcome::Updated)) => json_reply(StatusCode::OK, &e.to_api_json()),
                    Err(e) => engine_error(e),
                }
            },
        );
    let get = warp::path!("api" / "v1" / "entities" / String / String)
        .and(warp::get())
        .and(n())
        .then(|ty: String, id: String, node: Arc<Node>| async move {
            let uuid = match parse_uuid(&id) {
                Ok(u) => u,
                Err(r) => return r.reply(),
            };
            match node.engine.get(&ty, uuid).await {
                Ok(e) => json_reply(StatusCode::OK, &e.to_api_json()),
                Err(e) => engine_error(e),
            }
        });
    let history = warp::path!("api" / "v1" / "entities" / String / String / "history")
        .and(warp::get())
        .and(n())
        .then(|ty: String, id: String, node: Arc<Node>| async move {
            let uuid = match parse_uuid(&id) {
                Ok(u) => u,
                Err(r) => return r.reply(),
            };
            if let Err(e) = node.engine.get(&ty, uuid).await {
                return engine_error(e);
            }
            match node.engine.store().history(uuid).await {
                Ok(h) => json_reply(StatusCode::OK, &h),
                Err(e) => engine_error(e.into()),
            }
        });
    let list = warp::path!("api" / "v1" / "entities" / String)
        .and(warp::get())
        .and(warp::query::<ListQuery>())
        .and(n())
        .then(|ty: String, q: ListQuery, node: Arc<Node>| async move {
            let limit = q.limit.unwrap_or(100).clamp(1, 1000);
            let page = Page {
                after: q.after,
                limit,
                include_deleted: q.include_deleted.unwrap_or(false),
            };
            match node.engine.list(&ty, page).await {
                Ok(items) => {
                    let next = (items.len() as u32 == limit)
                        .then(|| items.last().map(|e| e.uuid))
                        .flatten();
                    #[derive(serde::Serialize)]
                    struct Page<'a> {
                        items: Vec<hubsync_core::entity::ApiEntity<'a>>,
                        next: Option<Uuid>,
                    }
                    let items = items.iter().map(|e| e.api_view()).collect();
                    json_reply(StatusCode::OK, &Page { items, next })
                }
                Err(e) => engine_error(e),
            }
        });
    let delete = warp::path!("api" / "v1" / "entities" / String / String)
        .and(warp::delete())
        .and(n())
        .then(|ty: String, id: String, node: Arc<Node>| async move {
            let uuid = match parse_uuid(&id) {
                Ok(u) => u,
                Err(r) => return r.reply(),
            };
            match node.engine.delete(&ty, uuid).await {
                Ok(e) => json_reply(StatusCode::OK, &e.to_api_json()),
                Err(e) => engine_error(e),
            }
        });
    let batch = warp::path!("api" / "v1" / "batch")
        .and(warp::post())
        .and(n())
        .and(body())
        .then(|node: Arc<Node>, body: Bytes| async move {
            let req: BatchRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, "malformed", format!("the batch is not valid: {e}; expected {{\"operations\": [{{\"op\": \"put\"|\"delete\", \"type\", \"uuid\", \"data\"}}]}}"), vec![]),
            };
            let mut ops = Vec::with_capacity(req.operations.len());
            let mut bad = Vec::new();
            for (index, op) in req.operations.into_iter().enumerate() {
                match (op.op.as_str(), op.uuid, op.data) {
                    ("put", Some(uuid), Some(data)) => ops.push(BatchOp::Put { entity_type: op.entity_type, uuid, data }),
                    ("put", None, Some(data)) => ops.push(BatchOp::Put { entity_type: op.entity_type, uuid: Uuid::now_v7(), data }),
                    ("delete", Some(uuid), _) => ops.push(BatchOp::Delete { entity_type: op.entity_type, uuid }),
                    (other, _, _) => bad.push(json!({"index": index, "path": "", "message": format!("operation '{other}' needs {}", if other == "delete" { "a uuid" } else if other == "put" { "data" } else { "op \"put\" or \"delete\"" })})),
                }
            }
            if !bad.is_empty() {
                return error_reply(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "the batch was not applied: some operations are malformed".into(), bad);
            }
            match node.engine.batch(ops).await {
                Ok(entities) => {
                    #[derive(serde::Serialize)]
                    struct Item<'a> {
                        index: usize,
                        entity: hubsync_core::entity::ApiEntity<'a>,
                    }
                    #[derive(serde::Serialize)]
                    struct Answer<'a> {
                        results: Vec<Item<'a>>,
                    }
                    let results = entities.iter().enumerate().map(|(index, e)| Item { index, entity: e.api_view() }).collect();
                    json_reply(StatusCode::OK, &Answer { results })
                }
                Err(e) => engine_error(e),
            }
        });
    let status = warp::path!("api" / "v1" / "status")
        .and(warp::get())
        .and(n())
        .then(|node: Arc<Node>| async move {
            match node.engine.status().await {
                Ok(s) => {
                    let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
                    if let (Some(obj), Some(sync)) = (v.as_object_mut(), node.sync_state()) {
                        obj.insert(
                            "sync".into(),
                            serde_json::to_value(sync).unwrap_or(Value::Null),
                        );
                    }
                    // Contract §4: the running sync's progress, null when idle.
                    if let Some(obj) = v.as_object_mut() {
                        let progress = node.sync_state().and_then(|s| s.progress);
                        obj.insert(
                            "progress".into(),
                            serde_json::to_value(progress).unwrap_or(Value::Null),
                        );
                    }
                    json_reply(StatusCode::OK, &v)
                }
                Err(e) => engine_error(e),
            }
        });
    let sync = warp::path!("api" / "v1" / "sync")
        .and(warp::post())
        .and(n())
        .then(|node: Arc<Node>| async move {
            match node.sync_now_reported(&NoProgress).await {
                Ok(report) => json_reply(StatusCode::OK, &report),
                Err(e) => host_error(e),
            }
        });
    // The manual resolution queue (master only). "resolved" keeps the audit
    // log this route listed before the queue existed.
    let conflicts = warp::path!("api" / "v1" / "conflicts")
        .and(warp::get())
        .and(n())
        .then(|node: Arc<Node>| async move {
            let pending = match node.engine.pending_conflicts().await {
                Ok(p) => p,
                Err(e) => return engine_error(e),
            };
            match node.engine.store().audit(None, 1000).await {
                Ok(a) => json_reply(StatusCode::OK, &json!({"pending": pending, "resolved": a})),
                Err(e) => engine_error(e.into()),
            }
        });
    let conflict = warp::path!("api" / "v1" / "conflicts" / String)
        .and(warp::get())
        .and(n())
        .then(|id: String, node: Arc<Node>| async move {
            let id = match parse_uuid(&id) {
                Ok(u) => u,
                Err(r) => return r.reply(),
            };
            match node.engine.conflict(id).await {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => engine_error(e),
            }
        });
    let resolve = warp::path!("api" / "v1" / "conflicts" / String / "resolve")
        .and(warp::post())
        .and(n())
        .and(body())
        .then(|id: String, node: Arc<Node>, body: Bytes| async move {
            let id = match parse_uuid(&id) {
                Ok(u) => u,
                Err(r) => return r.reply(),
            };
            let (choice, by) = match parse_resolve(&body) {
                Ok(v) => v,
                Err(r) => return r.reply(),
            };
            let by = by.unwrap_or_else(|| "local API".to_string());
            match node.engine.resolve_conflict_manually(id, choice, &by).await {
                Ok(r) => json_reply(
                    StatusCode::OK,
                    &json!({"entity": r.entity.to_api_json(), "resolution": r.resolution}),
                ),
                Err(e) => engine_error(e),
            }
        });

    health
        .or(metrics)
        .unify()
        .or(schemas)
        .unify()
        .or(history)
        .unify()
        .or(create)
        .unify()
        .or(put)
        .unify()
        .or(get)
        .unify()
        .or(list)
        .unify()
        .or(delete)
        .unify()
        .or(batch)
        .unify()
        .or(status)
        .unify()
        .or(sync)
        .unify()
        .or(conflicts)
        .unify()
        .or(conflict)
        .unify()
        .or(resolve)
        .unify()
}

/// A request without the local API's token.
#[derive(Debug)]
pub struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// Lets a request through when the API has no token, or when it carries
/// `Authorization: Bearer <token>`; `GET /health` is always open. Tokens are
/// compared as SHA-256 digests, so the comparison time says nothing about
/// the secret.
pub fn authorized(
    token: Option<String>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let expected = Arc::new(token.map(|t| crate::auth::token_hash(t.trim())));
    warp::path::full()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |path: warp::path::FullPath, header: Option<String>| {
            let expected = expected.clone();
            async move {
                let Some(expected) = expected.as_deref() else {
                    return Ok(());
                };
                let given = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(|t| crate::auth::token_hash(t.trim()));
                if path.as_str() == "/health" || given.as_deref() == Some(expected) {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Turns rejections (no route, wrong method, body too large) into JSON.
pub async fn recover(r: warp::Rejection) -> Result<Response, Infallible> {
    let (status, code, message) = if r.find::<Unauthorized>().is_some() {
        (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this local API requires `Authorization: Bearer <token>` ([api].token)".to_string(),
        )
    } else if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_string(),
        )
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is too large".to_string(),
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("invalid query string: {e}"),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required".to_string(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Checked after the rejections above: a route with the same path but
        // another method always adds one, and must not hide why the route
        // that did match refused (e.g. a bad query string on a list).
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, "malformed", format!("{r:?}"))
    };
    Ok(error_reply(status, code, message, vec![]))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    after: Option<Uuid>,
    include_deleted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    operations: Vec<BatchItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    op: String,
    #[serde(rename = "type")]
    entity_type: String,
    uuid: Option<Uuid>,
    data: Option<Value>,
}

/// `POST /api/v1/conflicts/{id}/resolve`: `{"take": "local"|"remote"}`,
/// `{"take": "version", "version": ID}` or `{"data": {…}}`, each with an
/// optional `"by"` (who decided; recorded in the audit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    take: Option<String>,
    version: Option<String>,
    data: Option<Value>,
    by: Option<String>,
}

const RESOLVE_SHAPE: &str = "expected {\"take\": \"local\"|\"remote\"}, {\"take\": \"version\", \"version\": \"<history id>\"} or {\"data\": {…merged data…}}, with an optional \"by\"";

fn parse_resolve(body: &[u8]) -> Result<(Choice, Option<String>), BadRequest> {
    let r: ResolveRequest = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("the resolution is not valid: {e}; {RESOLVE_SHAPE}")))?;
    let choice = match (r.take.as_deref(), r.version, r.data) {
        (Some("local"), None, None) => Choice::TakeMaster,
        (Some("remote"), None, None) => Choice::TakeIncoming,
        (Some("version"), Some(v), None) => Choice::TakeVersion(parse_uuid(&v)?),
        (None, None, Some(data)) => Choice::Merged(data),
        (Some("version"), None, None) => {
            return Err(BadRequest(format!(
                "\"take\": \"version\" needs \"version\": the id of a stored version (GET /api/v1/conflicts/{{id}} lists them); {RESOLVE_SHAPE}"
            )));
        }
        (Some(other), None, None) if !["local", "remote", "version"].contains(&other) => {
            return Err(BadRequest(format!(
                "unknown choice \"{other}\"; {RESOLVE_SHAPE}"
            )));
        }
        _ => {
            return Err(BadRequest(format!(
                "give exactly one choice; {RESOLVE_SHAPE}"
            )));
        }
    };
    Ok((choice, r.by))
}

/// `POST` takes either the data itself or `{"uuid": …, "data": {…}}`.
/// A request the API cannot take, before it reaches the engine.
struct BadRequest(String);

impl BadRequest {
    fn reply(self) -> Response {
        error_reply(StatusCode::BAD_REQUEST, "malformed", self.0, vec![])
    }
}

fn split_create_body(v: Value) -> Result<(Option<Uuid>, Value), BadRequest> {
    if let Value::Object(obj) = &v
        && obj.get("data").is_some_and(Value::is_object)
        && obj.keys().all(|k| k == "uuid" || k == "data")
    {
        let uuid = match obj.get("uuid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_uuid(s)?),
            Some(_) => return Err(BadRequest("\"uuid\" must be a string".into())),
        };
        let data = obj.get("data").cloned().unwrap_or(Value::Null);
        return Ok((uuid, data));
    }
    Ok((None, v))
}

fn parse_json(body: &[u8]) -> Result<Value, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(format!("the body is not valid JSON: {e}")))
}

fn parse_uuid(s: &str) -> Result<Uuid, BadRequest> {
    Uuid::parse_str(s).map_err(|_| BadRequest(format!("'{s}' is not a uuid")))
}

pub fn json_reply<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

fn error_reply(status: StatusCode, code: &str, message: String, details: Vec<Value>) -> Response {
    let mut err = json!({"code": code, "message": message});
    if !details.is_empty() {
        err["details"] = Value::Array(details);
    }
    json_reply(status, &json!({"error": err}))
}

fn engine_error(e: EngineError) -> Response {
    let details: Vec<Value> = match &e {
        EngineError::Invalid(v) | EngineError::StillReferenced(v) => v
            .issues
            .iter()
            .map(|i| json!({"path": i.path, "message": i.message}))
            .collect(),
        EngineError::Batch(items) => items
            .iter()
            .map(|i| json!({"index": i.index, "path": i.path, "message": i.message}))
            .collect(),
        _ => vec![],
    };
    let status = match &e {
        EngineError::UnknownType { .. }
        | EngineError::NotFound { .. }
        | EngineError::UnknownNode(_)
        | EngineError::ConflictNotFound { .. }
        | EngineError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
        EngineError::AlreadyExists { .. }
        | EngineError::DuplicateNode(_)
        | EngineError::ConflictResolved { .. }
        | EngineError::IncomingVersionMissing { .. }
        | EngineError::StillReferenced(_) => StatusCode::CONFLICT,
        EngineError::Invalid(_) | EngineError::Batch(_) | EngineError::InvalidScope(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        EngineError::WrongRole { .. } | EngineError::MasterOnly { .. } => StatusCode::BAD_REQUEST,
        EngineError::Transport(_) | EngineError::Sync(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "API request failed");
    }
    error_reply(status, e.code(), e.to_string(), details)
}

fn host_error(e: HostError) -> Response {
    match e {
        HostError::Engine(e) => engine_error(e),
        other => error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
            vec![],
        ),
    }
}
