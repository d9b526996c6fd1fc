//! Routes and handlers. [`ROUTES`] lists every route; a test checks it
//! against `schemas/openapi.json`.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::api::VerifyLine;
use tidemark_core::{ActorId, Kind, SignedEvent, Timestamp};
use tidemark_store::{AppendError, EntryFilter, Ledger, Refusal, StoreError};

use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::writer::{KnownKeys, WriteError, WriteRequest};
use crate::{MAX_BODY_BYTES, MAX_EVENTS_PER_REQUEST, REQUEST_TIMEOUT};

/// Every route: (method, path as in the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("post", "/v1/events"),
    ("get", "/v1/entries"),
    ("get", "/v1/entries/{seq}"),
    ("get", "/v1/checkpoint"),
    ("get", "/v1/proof/inclusion"),
    ("get", "/v1/proof/consistency"),
    ("get", "/v1/keys"),
    ("get", "/v1/ledger-key"),
    ("get", "/v1/verify"),
    ("get", "/v1/export"),
    ("get", "/v1/custody"),
    ("get", "/v1/audit"),
    ("get", "/v1/recovery-points"),
    ("get", "/v1/plan"),
    ("get", "/v1/pg/files"),
    ("get", "/v1/s3/manifest"),
    ("get", "/v1/s3/keys"),
    ("get", "/v1/groups/{group}"),
    ("get", "/v1/groups/{group}/recovery-points"),
    ("get", "/v1/groups/{group}/plan"),
    ("get", "/v1/groups/{group}/timeline"),
    ("get", "/metrics"),
];

/// Largest page of entries one read returns.
pub const MAX_PAGE_ENTRIES: usize = 10_000;
const DEFAULT_PAGE_ENTRIES: usize = 1000;

#[derive(Clone)]
pub struct AppState {
    pub(crate) ledger: Arc<RwLock<Ledger>>,
    writes: SyncSender<WriteRequest>,
    metrics: Arc<Metrics>,
    known: KnownKeys,
    pub(crate) clock: fn() -> Timestamp,
    /// One full verification or export at a time.
    long_reads: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        ledger: Arc<RwLock<Ledger>>,
        writes: SyncSender<WriteRequest>,
        metrics: Arc<Metrics>,
        known: KnownKeys,
        clock: fn() -> Timestamp,
    ) -> AppState {
        AppState { ledger, writes, metrics, known, clock, long_reads: Arc::new(tokio::sync::Semaphore::new(1)) }
    }
}

pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/v1/entries", get(entries))
        .route("/v1/entries/{seq}", get(entry))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/v1/proof/inclusion", get(inclusion))
        .route("/v1/proof/consistency", get(consistency))
        .route("/v1/keys", get(keys))
        .route("/v1/ledger-key", get(ledger_key))
        .route("/v1/verify", get(verify))
        .route("/v1/export", get(export))
        .route("/v1/custody", get(custody))
        .route("/v1/audit", get(audit))
        .route("/v1/recovery-points", get(recovery_points))
        .route("/v1/plan", get(plan))
        .route("/v1/pg/files", get(pg_files))
        .route("/v1/s3/manifest", get(s3_manifest))
        .route("/v1/s3/keys", get(s3_keys))
        .route("/v1/groups/{group}", get(group_info))
        .route("/v1/groups/{group}/recovery-points", get(group_points))
        .route("/v1/groups/{group}/plan", get(group_plan))
        .route("/v1/groups/{group}/timeline", get(group_timeline))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_reader));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/events", post(post_events))
        .merge(reads)
        .merge(crate::ui::router(state.clone()))
        .layer(middleware::from_fn(limit_header_bytes))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Refuses a declared Content-Length over the limit before reading any of it.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost: every error answer is a problem document, whichever layer made it.
        .layer(middleware::map_response(crate::problem::problemize))
        .with_state(state)
}

async fn no_such_route(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route {}; the API is described in schemas/openapi.json", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "The method is not allowed here",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Refuses requests whose headers add up to more than [`crate::MAX_HEADER_BYTES`]
/// (hyper's buffer limit alone lets somewhat larger heads through).
async fn limit_header_bytes(request: Request, next: Next) -> Response {
    let bytes: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if bytes > crate::MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "The request headers are too large",
            format!("{bytes} bytes of headers; the limit is {}", crate::MAX_HEADER_BYTES),
        )
        .into_response();
    }
    next.run(request).await
}

async fn healthz(State(s): State<AppState>) -> Response {
    let size = s.metrics.tree_size.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({"status": "ok", "tree_size": size})).into_response()
}

/// The bearer token's actor, when it is enrolled, unrevoked and the token holds.
async fn require_reader(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Problem::unauthorized(
            "send `Authorization: Bearer <token>`; issue one with `tidemark token issue --key KEY`",
        )
        .into_response();
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Problem::unauthorized("the Authorization header must be `Bearer <token>`").into_response();
    };
    if let Err(p) = check_token(&s, token) {
        return p.into_response();
    }
    next.run(request).await
}

/// Rule: a token holds when it parses, its key is enrolled and unrevoked,
/// its signature is the key's and it has not expired; then its claims.
pub(crate) fn check_token(s: &AppState, token: &str) -> Result<tidemark_core::token::TokenClaims, Problem> {
    let (claims, payload, sig) =
        tidemark_core::token::parse(token.trim()).map_err(|e| Problem::unauthorized(e.to_string()))?;
    let record = s.ledger.read().expect("ledger lock").registry().get(&claims.actor).cloned();
    let Some(record) = record else {
        return Err(Problem::unauthorized(format!("the token's key {} is not enrolled", claims.actor)));
    };
    if let Some(at) = record.revoked_at_seq {
        return Err(Problem::unauthorized(format!("the token's key {} was revoked at entry {at}", claims.actor)));
    }
    tidemark_core::token::check(&claims, &payload, &sig, &record.public_key, (s.clock)())
        .map_err(|e| Problem::unauthorized(e.to_string()))?;
    Ok(claims)
}

/// Body: one signed event, a JSON array of them, or NDJSON (one per line).
fn parse_events(headers: &HeaderMap, body: &[u8]) -> Result<Vec<SignedEvent>, Problem> {
    let text = std::str::from_utf8(body).map_err(|_| Problem::bad_request("the body is not UTF-8"))?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson") || v.starts_with("application/jsonl"));
    let values: Vec<Value> = if ndjson {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Problem::bad_request(format!("line {}: malformed JSON: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?
    } else {
        match serde_json::from_str(text).map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))? {
            Value::Array(items) => items,
            single => vec![single],
        }
    };
    if values.is_empty() {
        return Err(Problem::bad_request("the request holds no events"));
    }
    if values.len() > MAX_EVENTS_PER_REQUEST {
        let e = AppendError {
            index: 0,
            id: None,
            reason: Refusal::BatchTooLarge { count: values.len(), max: MAX_EVENTS_PER_REQUEST },
        };
        return Err(Problem::refused(&e));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            SignedEvent::from_value(v).map_err(|e| Problem::refused(&AppendError { index, id: None, reason: e.into() }))
        })
        .collect()
}

async fn post_events(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let received = Instant::now();
    let events = match parse_events(&headers, &body) {
        Ok(e) => e,
        Err(p) => {
            s.metrics.refused(p.code);
            return p.into_response();
        }
    };
    let state = s.clone();
    // Signature verification (CPU) and the wait for the writer happen off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let digested = {
            let known = state.known.read().expect("known keys lock");
            Ledger::digest(events.clone(), &|a| known.get(a).copied())
        };
        let (reply, answer) = std::sync::mpsc::channel();
        let request = WriteRequest { events, digested: Some(digested), received, reply };
        if state.writes.send(request).is_err() {
            return Err(WriteError::Storage("the server is shutting down".into()));
        }
        answer.recv().unwrap_or_else(|_| Err(WriteError::Storage("the writer stopped".into())))
    })
    .await;
    match outcome {
        Ok(Ok(results)) => {
            let tree_size = s.metrics.tree_size.load(std::sync::atomic::Ordering::Relaxed);
            Json(json!({"results": results, "tree_size": tree_size})).into_response()
        }
        Ok(Err(WriteError::Refused(e))) => Problem::refused(&e).into_response(),
        Ok(Err(WriteError::Storage(detail))) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The ledger cannot accept writes now", detail)
                .into_response()
        }
        Err(e) => Problem::internal(e.to_string()).into_response(),
    }
}

pub(crate) fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::NoSuchEntry { .. } => Problem::not_found(e.to_string()),
        StoreError::NotFound(d) => Problem::not_found(d),
        StoreError::BadRequest(d) => Problem::bad_request(d),
        other => Problem::internal(other.to_string()),
    }
}

fn leaf_value(entry: &tidemark_core::Entry) -> Value {
    serde_json::from_slice(&entry.leaf_bytes()).expect("leaf bytes are JSON")
}

#[derive(Deserialize)]
struct EntriesQuery {
    artifact: Option<String>,
    component: Option<String>,
    /// Comma-separated kinds.
    kind: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    limit: Option<usize>,
}

fn parse_time(field: &str, v: &Option<String>) -> Result<Option<Timestamp>, Problem> {
    v.as_deref()
        .map(|s| Timestamp::parse_rfc3339(s).map_err(|e| Problem::bad_request(format!("{field}: {e}"))))
        .transpose()
}

/// A component name as the ledger would accept it (`pg:`, `s3:` or `snap:` and a name).
fn check_component(c: &str) -> Result<(), Problem> {
    tidemark_core::ComponentId::parse(c).map(|_| ()).map_err(|e| Problem::bad_request(format!("component: {e}")))
}

/// A page size: 1..=[`MAX_PAGE_ENTRIES`] (default [`DEFAULT_PAGE_ENTRIES`]);
/// anything else is refused, as the OpenAPI document states.
fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    match limit {
        None => Ok(DEFAULT_PAGE_ENTRIES),
        Some(n) if (1..=MAX_PAGE_ENTRIES).contains(&n) => Ok(n),
        Some(n) => Err(Problem::bad_request(format!("limit {n} is outside 1..={MAX_PAGE_ENTRIES}"))),
    }
}

/// The filter of `/v1/entries` and `/v1/audit`; `limit` is one more than
/// the page, to tell whether another page follows.
fn entry_filter(q: EntriesQuery) -> Result<EntryFilter, Problem> {
    let kinds = q
        .kind
        .as_deref()
        .map(|k| {
            k.split(',')
                .map(|name| {
                    Kind::from_name(name.trim()).ok_or_else(|| Problem::bad_request(format!("unknown kind {name:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let actor = q.actor.as_deref().map(ActorId::parse).transpose().map_err(|e| Problem::bad_request(e.to_string()))?;
    let limit = page_limit(q.limit)?;
    if let Some(c) = &q.component {
        check_component(c)?;
    }
    Ok(EntryFilter {
        artifact: q.artifact,
        component: q.component,
        kinds,
        actor,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        from_seq: q.from_seq,
        to_seq: q.to_seq,
        limit: Some(limit + 1),
    })
}

async fn entries(State(s): State<AppState>, Query(q): Query<EntriesQuery>) -> Result<Response, Problem> {
    let filter = entry_filter(q)?;
    let limit = filter.limit.unwrap_or(1) - 1;
    let ledger = s.ledger.read().expect("ledger lock");
    let mut out = Vec::new();
    ledger
        .query(&filter, |e| {
            out.push(e);
            Ok(())
        })
        .map_err(store_problem)?;
    let next_from_seq = (out.len() > limit).then(|| out[limit].seq);
    out.truncate(limit);
    let entries: Vec<Value> = out.iter().map(leaf_value).collect();
    Ok(Json(json!({"entries": entries, "next_from_seq": next_from_seq})).into_response())
}

async fn entry(State(s): State<AppState>, Path(seq): Path<u64>) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    let e = ledger.entry(seq).map_err(store_problem)?;
    let mut inclusion = ledger.inclusion_proof_document(seq, None).map_err(store_problem)?;
    let checkpoint = inclusion.checkpoint.take();
    Ok(Json(json!({"entry": leaf_value(&e), "inclusion": inclusion, "checkpoint": checkpoint})).into_response())
}

#[derive(Deserialize)]
struct SizeQuery {
    size: Option<u64>,
}

async fn checkpoint(State(s): State<AppState>, Query(q): Query<SizeQuery>) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    let note = match q.size {
        None => ledger.latest_checkpoint().map_err(store_problem)?.1,
        Some(size) => {
            ledger
                .checkpoint_at(size)
                .map_err(store_problem)?
                .ok_or_else(|| Problem::not_found(format!("no checkpoint was signed at size {size}")))?
                .1
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[derive(Deserialize)]
struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

async fn inclusion(State(s): State<AppState>, Query(q): Query<InclusionQuery>) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    Ok(Json(ledger.inclusion_proof_document(q.seq, q.size).map_err(store_problem)?).into_response())
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

async fn consistency(State(s): State<AppState>, Query(q): Query<ConsistencyQuery>) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    Ok(Json(ledger.consistency_proof_document(q.from, q.to).map_err(store_problem)?).into_response())
}

#[derive(Deserialize)]
struct CustodyQuery {
    artifact: String,
}

/// Custody and audit rows for the entries `filter` selects.
fn audit_rows(s: &AppState, filter: &EntryFilter) -> Result<Vec<tidemark_export::AuditRow>, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    let registry = ledger.registry().clone();
    let mut rows = Vec::new();
    ledger
        .query(filter, |e| {
            rows.push(tidemark_export::audit_row(&e, &registry));
            Ok(())
        })
        .map_err(store_problem)?;
    Ok(rows)
}

async fn custody(State(s): State<AppState>, Query(q): Query<CustodyQuery>) -> Result<Response, Problem> {
    let filter =
        EntryFilter { artifact: Some(q.artifact.clone()), limit: Some(MAX_PAGE_ENTRIES), ..EntryFilter::default() };
    let events = audit_rows(&s, &filter)?;
    Ok(Json(json!({"artifact": q.artifact, "events": events})).into_response())
}

async fn audit(State(s): State<AppState>, Query(q): Query<EntriesQuery>) -> Result<Response, Problem> {
    let filter = entry_filter(q)?;
    let mut events = audit_rows(&s, &filter)?;
    events.truncate(filter.limit.unwrap_or(1) - 1);
    Ok(Json(json!({"events": events})).into_response())
}

#[derive(Deserialize)]
struct TargetQuery {
    component: String,
    at: Option<String>,
    lsn: Option<String>,
    restore_point: Option<String>,
    timeline: Option<u32>,
    /// Plans: the `restore_command` PostgreSQL is to run.
    restore_command: Option<String>,
    /// Plans: offer `recovery_target_time` instead of the LSN target.
    #[serde(default)]
    recovery_target_time: bool,
}

impl TargetQuery {
    fn target(&self) -> Result<Option<tidemark_lineage::pg_plan::Target>, Problem> {
        tidemark_lineage::pg_plan::Target::from_parts(
            self.at.as_deref(),
            self.lsn.as_deref(),
            self.restore_point.as_deref(),
            self.timeline,
        )
        .map_err(Problem::bad_request)
    }
}

/// The recovery report of a component, or the answer for one target.
async fn recovery_points(State(s): State<AppState>, Query(q): Query<TargetQuery>) -> Result<Response, Problem> {
    if q.component.starts_with("s3:") {
        let at = parse_time("at", &q.at)?;
        let ledger = s.ledger.read().expect("ledger lock");
        return Ok(match at {
            Some(at) => Json(ledger.s3_answer(&q.component, at).map_err(store_problem)?).into_response(),
            None => Json(ledger.s3_report(&q.component).map_err(store_problem)?).into_response(),
        });
    }
    let target = q.target()?;
    let ledger = s.ledger.read().expect("ledger lock");
    Ok(match target {
        Some(t) => Json(ledger.pg_answer(&q.component, &t).map_err(store_problem)?).into_response(),
        None => Json(ledger.pg_report(&q.component).map_err(store_problem)?).into_response(),
    })
}

/// A restore plan; 422 with the reason when the target is not restorable.
async fn plan(State(s): State<AppState>, Query(q): Query<TargetQuery>) -> Result<Response, Problem> {
    let target = q.target()?.ok_or_else(|| Problem::bad_request("give one of at, lsn or restore_point"))?;
    let cluster = q.component.strip_prefix("pg:").unwrap_or(&q.component);
    let options = tidemark_lineage::pg_plan::PlanOptions {
        restore_command: q
            .restore_command
            .clone()
            .unwrap_or_else(|| format!("tidemark pg restore-wal --cluster {cluster} %f %p")),
        use_recovery_target_time: q.recovery_target_time,
    };
    let ledger = s.ledger.read().expect("ledger lock");
    match ledger.pg_plan(&q.component, &target, &options).map_err(store_problem)? {
        Ok(plan) => Ok(Json(plan).into_response()),
        Err(reason) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_restorable",
                "The target is not restorable",
                reason.to_string(),
            );
            p.extra = json!({"reason": reason});
            Err(p)
        }
    }
}

#[derive(Deserialize)]
struct FilesQuery {
    component: String,
    /// One file by name (a segment name or `TTTTTTTT.history`).
    name: Option<String>,
    /// Listing: names after this one.
    after: Option<String>,
    limit: Option<usize>,
}

/// Archived files as recorded: one by name, or a page of them in name order.
async fn pg_files(State(s): State<AppState>, Query(q): Query<FilesQuery>) -> Result<Response, Problem> {
    check_component(&q.component)?;
    let ledger = s.ledger.read().expect("ledger lock");
    if let Some(name) = &q.name {
        let file = ledger
            .pg_file(&q.component, name)
            .map_err(store_problem)?
            .ok_or_else(|| Problem::not_found(format!("{name} of {} is not in the ledger", q.component)))?;
        return Ok(Json(file).into_response());
    }
    let limit = page_limit(q.limit)?;
    let mut files = Vec::new();
    for f in ledger.pg_files(&q.component, q.after.as_deref()) {
        let f = f.map_err(store_problem)?;
        if files.len() == limit {
            let next_after = files.last().map(|l: &tidemark_store::pg::ArchivedFile| l.file_name.clone());
            return Ok(Json(tidemark_store::pg::FilesPage { files, next_after }).into_response());
        }
        files.push(f);
    }
    Ok(Json(tidemark_store::pg::FilesPage { files, next_after: None }).into_response())
}

#[derive(Deserialize)]
struct ManifestQuery {
    component: String,
    at: String,
}

/// The manifest at T: every line, then its summary (counts, digest, bounds).
async fn s3_manifest(State(s): State<AppState>, Query(q): Query<ManifestQuery>) -> Result<Response, Problem> {
    let at = Timestamp::parse_rfc3339(&q.at).map_err(|e| Problem::bad_request(format!("at: {e}")))?;
    let ledger = s.ledger.read().expect("ledger lock");
    let mut lines = Vec::new();
    let summary = ledger
        .s3_manifest(&q.component, at, 0, &mut |l| {
            lines.push(l.clone());
            Ok(())
        })
        .map_err(store_problem)?;
    Ok(Json(tidemark_lineage::s3::Manifest { summary, lines }).into_response())
}

#[derive(Deserialize)]
struct KeysQuery {
    component: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// Recorded key histories in key order, a page at a time (what a scanner compares a listing with).
async fn s3_keys(State(s): State<AppState>, Query(q): Query<KeysQuery>) -> Result<Response, Problem> {
    check_component(&q.component)?;
    let limit = page_limit(q.limit)?;
    use tidemark_lineage::s3::{KeyEntries, KeysPage};
    let ledger = s.ledger.read().expect("ledger lock");
    let mut keys: Vec<KeyEntries> = Vec::new();
    for item in ledger.s3_histories(&q.component, q.after.as_deref()) {
        let (key, h) = item.map_err(store_problem)?;
        if keys.len() == limit {
            let next_after = keys.last().map(|k| k.key.clone());
            return Ok(Json(KeysPage { keys, next_after }).into_response());
        }
        keys.push(KeyEntries { key, entries: h.entries });
    }
    Ok(Json(KeysPage { keys, next_after: None }).into_response())
}

async fn keys(State(s): State<AppState>) -> Response {
    let ledger = s.ledger.read().expect("ledger lock");
    let keys: Vec<_> = ledger.registry().keys().cloned().collect();
    Json(json!({"keys": keys})).into_response()
}

async fn ledger_key(State(s): State<AppState>) -> Response {
    let vkey = s.ledger.read().expect("ledger lock").note_verifier().to_vkey();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{vkey}\n")).into_response()
}

/// A body fed from a blocking task: chunks sent through a bounded channel
/// (the task waits while the client is slow), so memory stays bounded.
fn channel_body() -> (ChannelWriter, axum::body::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHANNEL_CHUNKS);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (ChannelWriter { tx, buffer: Vec::with_capacity(STREAM_CHUNK_BYTES) }, axum::body::Body::from_stream(stream))
}

/// Chunks in flight between a blocking producer and the connection.
const STREAM_CHANNEL_CHUNKS: usize = 16;
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// `std::io::Write` into a streamed response body.
pub(crate) struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(STREAM_CHUNK_BYTES)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the body with an error: the connection is cut, so the client
    /// sees a failed read, never a complete-looking stream.
    fn fail(self, e: impl std::fmt::Display) {
        fail_stream(&self.tx, e);
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= STREAM_CHUNK_BYTES {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn fail_stream(tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, e: impl std::fmt::Display) {
    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
}

/// One long read (verify or export) at a time: each uses every core.
fn long_read_permit(s: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    s.long_reads.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "Another verification or export is running",
            "one full verification or export runs at a time; retry when it has finished",
        )
        .with_retry_after(5)
    })
}

/// Verifies the ledger as of now (a snapshot: appends go on meanwhile) and
/// streams NDJSON: progress lines, then the report (`tidemark_core::api::VerifyLine`).
async fn verify(State(s): State<AppState>) -> Result<Response, Problem> {
    let permit = long_read_permit(&s)?;
    let snapshot = s.ledger.read().expect("ledger lock").snapshot();
    let (mut out, body) = channel_body();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let size = snapshot.size();
        let line = |l: &VerifyLine, out: &mut ChannelWriter| -> std::io::Result<()> {
            use std::io::Write as _;
            let mut text = serde_json::to_vec(l).expect("serialises");
            text.push(b'\n');
            out.write_all(&text)?;
            out.flush()
        };
        let mut gone = false;
        let result = snapshot.verify(&mut |done| {
            if !gone && line(&VerifyLine::Progress { entries_checked: done, size }, &mut out).is_err() {
                gone = true;
            }
        });
        match result {
            Ok(report) => {
                if !report.ok() {
                    tracing::error!(failure = ?report.failure, "verification of the live ledger failed");
                }
                let _ = line(&VerifyLine::Report { report }, &mut out);
            }
            Err(e) => out.fail(e),
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    all: bool,
    artifact: Option<String>,
    component: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Comma-separated tree sizes of checkpoints the auditor kept.
    previous: Option<String>,
}

/// Streams an export of the ledger as of now as a tar of `export/…`
/// (docs/formats.md §9), written while it is sent.
async fn export(State(s): State<AppState>, Query(q): Query<ExportQuery>) -> Result<Response, Problem> {
    let actor = q.actor.as_deref().map(ActorId::parse).transpose().map_err(|e| Problem::bad_request(e.to_string()))?;
    if let Some(c) = &q.component {
        check_component(c)?;
    }
    let selector = tidemark_core::api::ExportSelector::from_parts(
        q.all,
        q.artifact,
        q.component,
        actor,
        parse_time("since", &q.since)?,
        parse_time("until", &q.until)?,
    )
    .map_err(Problem::bad_request)?;
    let previous: Vec<u64> = match q.previous.as_deref() {
        None => Vec::new(),
        Some("") => return Err(Problem::bad_request("previous: give one or more tree sizes, comma-separated")),
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim().parse::<u64>().map_err(|_| Problem::bad_request(format!("previous: {n:?} is not a tree size")))
            })
            .collect::<Result<_, _>>()?,
    };
    let permit = long_read_permit(&s)?;
    let snapshot = s.ledger.read().expect("ledger lock").snapshot();
    if let Some(m) = previous.iter().find(|m| **m == 0) {
        return Err(Problem::bad_request(format!("previous: tree size {m}: checkpoints start at size 1")));
    }
    // A size beyond the ledger names a checkpoint that does not exist (yet).
    tidemark_export::check_previous_sizes(snapshot.size(), &previous).map_err(|e| Problem::not_found(e.to_string()))?;
    let scratch = snapshot.paths().dir.join("tmp");
    std::fs::create_dir_all(&scratch).map_err(|e| Problem::internal(format!("{}: {e}", scratch.display())))?;
    let now = (s.clock)();
    let (out, body) = channel_body();
    let on_error = out.tx.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match tidemark_export::write_export_tar(&snapshot, &selector, out, &scratch, &previous, now, &mut |_| {}) {
            Ok((summary, mut out)) => {
                use std::io::Write as _;
                match out.flush() {
                    Ok(()) => {
                        tracing::info!(selected = summary.selected, tree_size = summary.tree_size, "export streamed")
                    }
                    Err(e) => tracing::warn!(error = %e, "export stream ended early"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "export stream ended early");
                fail_stream(&on_error, e);
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

async fn metrics(State(s): State<AppState>) -> Result<Response, Problem> {
    let now = (s.clock)();
    let mut text = s.metrics.render(now.as_micros());
    // Recovery state from the projections (the newest point of each group, not a full report).
    let status = s.ledger.read().expect("ledger lock").recovery_status().map_err(store_problem)?;
    text += &crate::metrics::render_status(&status, now);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every `kind` parameter of the OpenAPI document names exactly the kinds the server knows.
    #[test]
    fn openapi_kind_patterns_name_every_kind() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
        let text = std::fs::read_to_string(path).unwrap();
        let mut names: Vec<String> = tidemark_core::Kind::ALL.iter().map(|k| k.name().replace('.', "\\.")).collect();
        names.sort();
        let one = format!("({})", names.join("|"));
        let expected = format!("^{one}(,{one})*$");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut found = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(p) = m.get("pattern").and_then(|p| p.as_str())
                        && p.contains("artifact\\.copied")
                    {
                        out.push(p.to_owned());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&doc, &mut found);
        assert!(!found.is_empty());
        for p in found {
            assert_eq!(p, expected);
        }
    }

    /// The OpenAPI document and the router list the same routes.
    #[test]
    fn openapi_document_matches_the_routes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
            .collect();
        let routed: BTreeSet<(String, String)> =
            super::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(documented, routed, "schemas/openapi.json and ROUTES disagree");
    }
}

// ---------------------------------------------------------------- groups

/// A group's definition, its components' registered identities and their snapshots.
async fn group_info(State(s): State<AppState>, Path(group): Path<String>) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    Ok(Json(ledger.group_info(&group).map_err(store_problem)?).into_response())
}

#[derive(Deserialize)]
struct GroupPointsQuery {
    #[serde(default)]
    latest: bool,
}

/// Markers and correlated windows, newest first; `?latest=true`: the newest restorable point (404 when none).
async fn group_points(
    State(s): State<AppState>,
    Path(group): Path<String>,
    Query(q): Query<GroupPointsQuery>,
) -> Result<Response, Problem> {
    let ledger = s.ledger.read().expect("ledger lock");
    if q.latest {
        return match ledger.group_latest(&group).map_err(store_problem)? {
            Some(l) => Ok(Json(l).into_response()),
            None => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_restorable",
                "No restorable point",
                format!("group {group} has no restorable recovery point yet"),
            )),
        };
    }
    Ok(Json(ledger.group_report(&group).map_err(store_problem)?).into_response())
}

#[derive(Deserialize)]
struct GroupPlanQuery {
    point: Option<String>,
    at: Option<String>,
    restore_command: Option<String>,
}

/// A group restore plan; 422 with the reasons when the point is not restorable.
async fn group_plan(
    State(s): State<AppState>,
    Path(group): Path<String>,
    Query(q): Query<GroupPlanQuery>,
) -> Result<Response, Problem> {
    use tidemark_lineage::group_plan::PlanRequest;
    let request = match (&q.point, parse_time("at", &q.at)?) {
        (Some(p), None) => PlanRequest::Marker(p.clone()),
        (None, Some(at)) => PlanRequest::Time(at),
        _ => return Err(Problem::bad_request("give exactly one of point (a marker id) or at (RFC 3339)")),
    };
    let options = tidemark_lineage::pg_plan::PlanOptions {
        restore_command: q
            .restore_command
            .clone()
            .unwrap_or_else(|| "tidemark pg restore-wal --cluster {cluster} %f %p".to_owned()),
        use_recovery_target_time: false,
    };
    let ledger = s.ledger.read().expect("ledger lock");
    match ledger.group_plan(&group, &request, &options).map_err(store_problem)? {
        Ok(plan) => Ok(Json(plan).into_response()),
        Err(reasons) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_restorable",
                "The recovery point is not restorable",
                reasons.join("; "),
            );
            p.extra = json!({"reasons": reasons});
            Err(p)
        }
    }
}

#[derive(Deserialize)]
struct TimelineQuery {
    format: Option<String>,
}

/// The timeline picture: an HTML page, or `?format=svg` for the SVG alone.
async fn group_timeline(
    State(s): State<AppState>,
    Path(group): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Response, Problem> {
    let report = s.ledger.read().expect("ledger lock").group_report(&group).map_err(store_problem)?;
    Ok(match q.format.as_deref() {
        Some("svg") => {
            ([(header::CONTENT_TYPE, "image/svg+xml")], tidemark_lineage::timeline::svg(&report)).into_response()
        }
        None | Some("html") => {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], tidemark_lineage::timeline::html(&report))
                .into_response()
        }
        Some(other) => return Err(Problem::bad_request(format!("format {other:?}: use html or svg"))),
    })
}
