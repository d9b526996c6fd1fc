//! tidemark-client: how writers reach a ledger that a server holds.
//!
//! [`Client`] speaks the HTTP API (blocking, `ureq`); [`Spool`] stores
//! signed events durably when the server cannot be reached and delivers
//! them later, in order. Event ids make re-delivery idempotent, so a batch
//! whose acknowledgement was lost is simply sent again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tidemark_core::SignedEvent;

/// How long a write may take before the server counts as unreachable.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the ledger server at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the server refused the request ({status}): {detail}")]
    Refused { status: u16, detail: String, problem: Box<Problem> },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("spool {path}: {detail}")]
    Spool { path: PathBuf, detail: String },
}

/// An RFC 9457 problem document as the server sends it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Problem {
    /// `https://tidemark.dev/problems/<code>`.
    #[serde(rename = "type", default)]
    pub problem_type: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
    /// A refused write: the offending event's position in the request, and its id.
    #[serde(default)]
    pub event_index: Option<usize>,
    #[serde(default)]
    pub event_id: Option<String>,
    /// Members particular to one answer (`reason`, `reasons` of a plan that cannot be made).
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, Value>,
}

impl ClientError {
    /// True when retrying later may succeed (network, 5xx): the events belong in the spool.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// One event's result, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Appended {
    pub seq: u64,
    pub duplicate: bool,
}

/// Entries per page when listing.
const ENTRIES_PAGE: usize = 1000;

/// How long a streamed read (verify, export) may wait for its response head.
pub const STREAM_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// A ledger server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// For streamed reads: no overall deadline (a whole-ledger export takes minutes).
    stream_agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(WRITE_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        let stream_config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(STREAM_HEAD_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Client {
            base: url.trim_end_matches('/').to_owned(),
            agent: config.into(),
            stream_agent: stream_config.into(),
            token,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, detail: impl ToString) -> ClientError {
        ClientError::Unreachable { url: self.base.clone(), detail: detail.to_string() }
    }

    fn answer(&self, mut response: ureq::http::Response<ureq::Body>) -> Result<String, ClientError> {
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(|e| self.unreachable(e))?;
        if status >= 500 {
            return Err(self.unreachable(format!("HTTP {status}: {body}")));
        }
        if status >= 400 {
            let problem: Problem = serde_json::from_str(&body).unwrap_or_else(|_| Problem {
                status,
                detail: body.clone(),
                ..Problem::default()
            });
            let detail = if problem.detail.is_empty() { body } else { problem.detail.clone() };
            return Err(ClientError::Refused { status, detail, problem: Box::new(problem) });
        }
        Ok(body)
    }

    /// Appends one batch (all-or-nothing) and returns each event's result.
    pub fn append(&self, events: &[SignedEvent]) -> Result<Vec<Appended>, ClientError> {
        let mut body = String::new();
        for e in events {
            body.push_str(&e.to_json_line());
            body.push('\n');
        }
        let results = self.append_ndjson(&body)?;
        if results.len() != events.len() {
            return Err(ClientError::Protocol(format!("{} results for {} events", results.len(), events.len())));
        }
        Ok(results)
    }

    /// Appends one batch already encoded as NDJSON (signed events, one per line).
    pub fn append_ndjson(&self, body: &str) -> Result<Vec<Appended>, ClientError> {
        let response = self
            .agent
            .post(&format!("{}/v1/events", self.base))
            .header("content-type", "application/x-ndjson")
            .send(body.as_bytes())
            .map_err(|e| self.unreachable(e))?;
        let text = self.answer(response)?;
        #[derive(Deserialize)]
        struct Reply {
            results: Vec<Appended>,
        }
        let reply: Reply = serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(reply.results)
    }

    /// GET a read endpoint with the bearer token; returns the body text.
    pub fn get(&self, path_and_query: &str) -> Result<String, ClientError> {
        self.get_with(path_and_query, &[])
    }

    /// GET `path` with query parameters (encoded here) and the bearer token.
    pub fn get_with(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let response = self.call(&self.agent, path, query)?;
        self.answer(response)
    }

    fn call(
        &self,
        agent: &ureq::Agent,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut request = agent.get(&format!("{}{path}", self.base));
        for (k, v) in query {
            request = request.query(*k, v);
        }
        if let Some(t) = &self.token {
            request = request.header("authorization", &format!("Bearer {t}"));
        }
        request.call().map_err(|e| self.unreachable(e))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let text = self.get_with(path, query)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
    }

    /// A streamed read: the response body as a reader (errors are read as problems first).
    fn get_stream(&self, path: &str, query: &[(&str, String)]) -> Result<impl std::io::Read + use<>, ClientError> {
        let response = self.call(&self.stream_agent, path, query)?;
        if response.status().as_u16() >= 400 {
            return Err(self.answer(response).expect_err("an error status"));
        }
        Ok(response.into_body().into_reader())
    }

    /// The key registry.
    pub fn keys(&self) -> Result<tidemark_core::api::KeyList, ClientError> {
        self.get_json("/v1/keys", &[])
    }

    /// The newest signed checkpoint note, or the one signed at `size`.
    pub fn checkpoint(&self, size: Option<u64>) -> Result<String, ClientError> {
        let query: Vec<(&str, String)> = size.map(|s| ("size", s.to_string())).into_iter().collect();
        self.get_with("/v1/checkpoint", &query)
    }

    /// The ledger's note verifier key (C2SP vkey).
    pub fn ledger_key(&self) -> Result<String, ClientError> {
        Ok(self.get("/v1/ledger-key")?.trim().to_owned())
    }

    /// One entry by sequence number.
    pub fn entry(&self, seq: u64) -> Result<tidemark_core::Entry, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            entry: Value,
        }
        let reply: Reply = self.get_json(&format!("/v1/entries/{seq}"), &[])?;
        tidemark_core::Entry::from_value(reply.entry)
            .map_err(|e| ClientError::Protocol(format!("the server sent a bad entry: {e}")))
    }

    pub fn inclusion_proof(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<tidemark_core::api::InclusionProof, ClientError> {
        let mut query = vec![("seq", seq.to_string())];
        query.extend(size.map(|s| ("size", s.to_string())));
        self.get_json("/v1/proof/inclusion", &query)
    }

    pub fn consistency_proof(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<tidemark_core::api::ConsistencyProof, ClientError> {
        let mut query = vec![("from", from.to_string())];
        query.extend(to.map(|t| ("to", t.to_string())));
        self.get_json("/v1/proof/consistency", &query)
    }

    /// The query parameters of an entry filter (without the page bounds).
    fn filter_query(f: &tidemark_core::api::EntryFilter) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        q.extend(f.artifact.clone().map(|a| ("artifact", a)));
        q.extend(f.component.clone().map(|c| ("component", c)));
        if !f.kinds.is_empty() {
            q.push(("kind", f.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")));
        }
        q.extend(f.actor.map(|a| ("actor", a.to_string())));
        q.extend(f.since.map(|t| ("since", t.to_string())));
        q.extend(f.until.map(|t| ("until", t.to_string())));
        q.extend(f.to_seq.map(|t| ("to_seq", t.to_string())));
        q
    }

    /// Every entry `filter` selects, page by page, handed to `each` in order.
    pub fn entries(
        &self,
        filter: &tidemark_core::api::EntryFilter,
        each: &mut dyn FnMut(tidemark_core::Entry) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        #[derive(Deserialize)]
        struct Page {
            entries: Vec<Value>,
            next_from_seq: Option<u64>,
        }
        let mut from = filter.from_seq.unwrap_or(0);
        let mut left = filter.limit.unwrap_or(usize::MAX);
        while left > 0 {
            let mut q = Self::filter_query(filter);
            q.push(("from_seq", from.to_string()));
            q.push(("limit", left.min(ENTRIES_PAGE).to_string()));
            let page: Page = self.get_json("/v1/entries", &q)?;
            for v in page.entries {
                let e = tidemark_core::Entry::from_value(v)
                    .map_err(|e| ClientError::Protocol(format!("the server sent a bad entry: {e}")))?;
                each(e)?;
                left -= 1;
            }
            match page.next_from_seq {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Custody rows of one artifact (every event touching it, with actors and roles).
    pub fn custody(&self, artifact: &str) -> Result<Vec<tidemark_core::api::AuditRow>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            events: Vec<tidemark_core::api::AuditRow>,
        }
        Ok(self.get_json::<Reply>("/v1/custody", &[("artifact", artifact.to_owned())])?.events)
    }

    /// Audit rows of the entries `filter` selects.
    pub fn audit(
        &self,
        filter: &tidemark_core::api::EntryFilter,
    ) -> Result<Vec<tidemark_core::api::AuditRow>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            events: Vec<tidemark_core::api::AuditRow>,
        }
        let mut q = Self::filter_query(filter);
        q.extend(filter.limit.map(|l| ("limit", l.to_string())));
        Ok(self.get_json::<Reply>("/v1/audit", &q)?.events)
    }

    /// The recovery-target query parameters (`at`, `lsn`, `restore_point`, `timeline`).
    fn target_query(target: Option<&tidemark_lineage::pg_plan::Target>) -> Vec<(&'static str, String)> {
        use tidemark_lineage::pg_plan::Target;
        let mut q = Vec::new();
        match target {
            Some(Target::Time { at, timeline }) => {
                q.push(("at", at.to_string()));
                q.extend(timeline.map(|t| ("timeline", t.to_string())));
            }
            Some(Target::Lsn { lsn, timeline }) => {
                q.push(("lsn", lsn.to_string()));
                q.extend(timeline.map(|t| ("timeline", t.to_string())));
            }
            Some(Target::RestorePoint { name }) => q.push(("restore_point", name.clone())),
            None => {}
        }
        q
    }

    /// A PostgreSQL component's report: windows, backups, holes.
    pub fn pg_report(&self, component: &str) -> Result<tidemark_lineage::pg_plan::Report, ClientError> {
        self.get_json("/v1/recovery-points", &[("component", component.to_owned())])
    }

    /// Whether one target of a PostgreSQL component is restorable, and why not.
    pub fn pg_answer(
        &self,
        component: &str,
        target: &tidemark_lineage::pg_plan::Target,
    ) -> Result<tidemark_lineage::pg_plan::Answer, ClientError> {
        let mut q = vec![("component", component.to_owned())];
        q.extend(Self::target_query(Some(target)));
        self.get_json("/v1/recovery-points", &q)
    }

    /// A PostgreSQL restore plan, or why the target is not restorable (422).
    pub fn pg_plan(
        &self,
        component: &str,
        target: &tidemark_lineage::pg_plan::Target,
        options: &tidemark_lineage::pg_plan::PlanOptions,
    ) -> Result<Result<tidemark_lineage::pg_plan::Plan, (String, tidemark_lineage::pg::NotRestorable)>, ClientError>
    {
        let mut q = vec![("component", component.to_owned())];
        q.extend(Self::target_query(Some(target)));
        q.push(("restore_command", options.restore_command.clone()));
        if options.use_recovery_target_time {
            q.push(("recovery_target_time", "true".into()));
        }
        match self.get_json("/v1/plan", &q) {
            Ok(plan) => Ok(Ok(plan)),
            Err(ClientError::Refused { status: 422, detail, problem }) => {
                let reason = serde_json::from_value(problem.extensions.get("reason").cloned().unwrap_or(Value::Null))
                    .map_err(|e| ClientError::Protocol(format!("the server's reason: {e}")))?;
                Ok(Err((detail, reason)))
            }
            Err(e) => Err(e),
        }
    }

    /// One archived file of a PostgreSQL component, if the ledger has it.
    pub fn pg_file(
        &self,
        component: &str,
        name: &str,
    ) -> Result<Option<tidemark_lineage::pg::ArchivedFile>, ClientError> {
        match self.get_json("/v1/pg/files", &[("component", component.to_owned()), ("name", name.to_owned())]) {
            Ok(f) => Ok(Some(f)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an S3 component is restorable at `at`, and why not.
    pub fn s3_answer(
        &self,
        component: &str,
        at: tidemark_core::Timestamp,
    ) -> Result<tidemark_lineage::s3::S3Answer, ClientError> {
        self.get_json("/v1/recovery-points", &[("component", component.to_owned()), ("at", at.to_string())])
    }

    /// An S3 component's manifest at `at`.
    pub fn s3_manifest(
        &self,
        component: &str,
        at: tidemark_core::Timestamp,
    ) -> Result<tidemark_lineage::s3::Manifest, ClientError> {
        self.get_json("/v1/s3/manifest", &[("component", component.to_owned()), ("at", at.to_string())])
    }

    /// A group's definition, identities and snapshots.
    pub fn group_info(&self, group: &str) -> Result<tidemark_lineage::group::GroupInfo, ClientError> {
        self.get_json(&format!("/v1/groups/{}", path_segment(group)), &[])
    }

    /// A group's markers, correlated windows, gaps and drills.
    pub fn group_report(&self, group: &str) -> Result<tidemark_lineage::group::GroupReport, ClientError> {
        self.get_json(&format!("/v1/groups/{}/recovery-points", path_segment(group)), &[])
    }

    /// A group's newest restorable point, if it has one.
    pub fn group_latest(&self, group: &str) -> Result<Option<tidemark_lineage::group::Latest>, ClientError> {
        match self
            .get_json(&format!("/v1/groups/{}/recovery-points", path_segment(group)), &[("latest", "true".into())])
        {
            Ok(l) => Ok(Some(l)),
            Err(ClientError::Refused { status: 422, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A group plan, or the reasons the point is not restorable (422).
    pub fn group_plan(
        &self,
        group: &str,
        request: &tidemark_lineage::group_plan::PlanRequest,
        options: &tidemark_lineage::pg_plan::PlanOptions,
    ) -> Result<Result<tidemark_lineage::group_plan::GroupPlan, Vec<String>>, ClientError> {
        use tidemark_lineage::group_plan::PlanRequest;
        let mut q = vec![("restore_command", options.restore_command.clone())];
        match request {
            PlanRequest::Marker(id) => q.push(("point", id.clone())),
            PlanRequest::Time(at) => q.push(("at", at.to_string())),
        }
        match self.get_json(&format!("/v1/groups/{}/plan", path_segment(group)), &q) {
            Ok(plan) => Ok(Ok(plan)),
            Err(ClientError::Refused { status: 422, detail, problem }) => Ok(Err(problem
                .extensions
                .get("reasons")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_else(|| vec![detail]))),
            Err(e) => Err(e),
        }
    }

    /// A group's timeline, `svg` or `html`.
    pub fn group_timeline(&self, group: &str, format: &str) -> Result<String, ClientError> {
        self.get_with(&format!("/v1/groups/{}/timeline", path_segment(group)), &[("format", format.to_owned())])
    }

    /// An S3 component's report (`recovery-points --component s3:…`).
    pub fn s3_report(&self, component: &str) -> Result<tidemark_lineage::s3::S3Report, ClientError> {
        self.get_json("/v1/recovery-points", &[("component", component.to_owned())])
    }

    /// One page of an S3 component's recorded key histories, after `after`.
    pub fn s3_keys(
        &self,
        component: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<tidemark_lineage::s3::KeysPage, ClientError> {
        let mut query = vec![("component", component.to_owned()), ("limit", limit.to_string())];
        query.extend(after.map(|a| ("after", a.to_owned())));
        self.get_json("/v1/s3/keys", &query)
    }

    /// One page of a PostgreSQL cluster's archived files, after `after`.
    pub fn pg_files(
        &self,
        component: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<tidemark_lineage::pg::FilesPage, ClientError> {
        let mut query = vec![("component", component.to_owned()), ("limit", limit.to_string())];
        query.extend(after.map(|a| ("after", a.to_owned())));
        self.get_json("/v1/pg/files", &query)
    }

    /// Has the server verify the whole ledger as of now (appends go on
    /// meanwhile); `progress(entries_checked, size)` sees its progress lines.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<tidemark_core::api::VerifyReport, ClientError> {
        use std::io::BufRead as _;
        use tidemark_core::api::VerifyLine;
        let reader = std::io::BufReader::new(self.get_stream("/v1/verify", &[])?);
        for line in reader.lines() {
            let line = line.map_err(|e| self.unreachable(format!("the verification stream broke off: {e}")))?;
            match serde_json::from_str::<VerifyLine>(&line)
                .map_err(|e| ClientError::Protocol(format!("verification stream: {e}")))?
            {
                VerifyLine::Progress { entries_checked, size } => progress(entries_checked, size),
                VerifyLine::Report { report } => return Ok(report),
            }
        }
        Err(self.unreachable("the verification stream ended without a report"))
    }

    /// Streams an export (a tar of `export/…`) of the ledger as of now into
    /// `out`; returns the bytes written. A stream cut short is an error.
    pub fn export(
        &self,
        selector: &tidemark_core::api::ExportSelector,
        previous_sizes: &[u64],
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, ClientError> {
        let mut query = selector.query_pairs();
        if !previous_sizes.is_empty() {
            query.push(("previous", previous_sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")));
        }
        let mut reader = self.get_stream("/v1/export", &query)?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)
                .map_err(|e| self.unreachable(format!("the export stream broke off: {e}")))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n]).map_err(|e| ClientError::Protocol(format!("writing the export: {e}")))?;
            total += n as u64;
            progress(total);
        }
    }
}

/// A value as one URL path segment (percent-encoded: unreserved characters stay).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A directory of signed batches waiting for the server, delivered oldest first.
pub struct Spool {
    dir: PathBuf,
}

/// What a flush delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    pub batches: usize,
    pub events: usize,
    /// Batches the server refused for good, moved to `rejected/` with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool, ClientError> {
        std::fs::create_dir_all(dir.join("rejected"))
            .map_err(|e| ClientError::Spool { path: dir.to_path_buf(), detail: e.to_string() })?;
        Ok(Spool { dir: dir.to_path_buf() })
    }

    fn io(&self, e: std::io::Error) -> ClientError {
        ClientError::Spool { path: self.dir.clone(), detail: e.to_string() }
    }

    fn sync_dir(&self) -> Result<(), ClientError> {
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.io(e))
    }

    /// Holds the spool's lock: one process delivers or adds at a time, so order holds.
    fn lock(&self) -> Result<std::fs::File, ClientError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(|e| self.io(e))?;
        f.lock().map_err(|e| self.io(e))?;
        Ok(f)
    }

    /// Stores a batch durably (written, fsynced, renamed, directory fsynced).
    pub fn store(&self, events: &[SignedEvent]) -> Result<PathBuf, ClientError> {
        let _lock = self.lock()?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| self.io(std::io::Error::other(e.to_string())))?;
        // Names sort by time; a later store never sorts before an earlier one on this host.
        let last = self.pending()?.last().cloned();
        let mut name = format!("{nanos:024}-{}.ndjson", hex::encode(random));
        if let Some(last) = last.and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            && name <= last
        {
            name = format!("{}-{}.ndjson", last.trim_end_matches(".ndjson"), hex::encode(random));
        }
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        for e in events {
            writeln!(f, "{}", e.to_json_line()).map_err(|e| self.io(e))?;
        }
        f.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.io(e))?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Spooled batches, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, ClientError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| self.io(e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "ndjson")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Delivers every spooled batch in order. Stops (keeping the rest) when
    /// the server is unreachable; a batch the server refuses for good is
    /// moved to `rejected/` with a `.reason` file, and delivery goes on.
    pub fn flush(&self, client: &Client) -> Result<FlushReport, ClientError> {
        let _lock = self.lock()?;
        let mut report = FlushReport::default();
        for path in self.pending()? {
            let text = std::fs::read_to_string(&path).map_err(|e| self.io(e))?;
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(SignedEvent::from_json)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Spool { path: path.clone(), detail: format!("damaged spool file: {e}") });
            let result = match events {
                Ok(events) => client.append(&events).map(|_| events.len()),
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    std::fs::remove_file(&path).map_err(|e| self.io(e))?;
                    self.sync_dir()?;
                    report.batches += 1;
                    report.events += n;
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    let name = path.file_name().expect("spool files have names").to_owned();
                    let target = self.dir.join("rejected").join(&name);
                    std::fs::rename(&path, &target).map_err(|e| self.io(e))?;
                    std::fs::write(target.with_extension("reason"), e.to_string()).map_err(|e| self.io(e))?;
                    self.sync_dir()?;
                    report.rejected.push((target, e.to_string()));
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::event::Event;
    use tidemark_core::{EventId, SecretKey, Timestamp};

    fn event(n: u64) -> SignedEvent {
        let key = SecretKey::from_seed("a", [1; 32]);
        let draft = serde_json::json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": format!("0/{n:X}"), "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
        Event::from_draft(draft, key.actor_id(), EventId::new_v7(n, [0; 10]), Timestamp::EPOCH).unwrap().sign(&key)
    }

    #[test]
    fn spooled_batches_keep_their_order_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for n in 0..20 {
            spool.store(&[event(n), event(n + 100)]).unwrap();
        }
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 20);
        for (n, p) in pending.iter().enumerate() {
            let first = std::fs::read_to_string(p).unwrap().lines().next().unwrap().to_owned();
            assert_eq!(SignedEvent::from_json(&first).unwrap(), event(n as u64));
        }
    }

    #[test]
    fn an_unreachable_server_leaves_the_spool_intact() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(&[event(1)]).unwrap();
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let client = Client::new("http://127.0.0.1:9", None);
        let err = spool.flush(&client).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(spool.pending().unwrap().len(), 1);
    }
}
