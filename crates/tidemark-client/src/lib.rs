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
    Refused { status: u16, detail: String, problem: Value },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("spool {path}: {detail}")]
    Spool { path: PathBuf, detail: String },
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

/// A ledger server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(WRITE_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Client { base: url.trim_end_matches('/').to_owned(), agent: config.into(), token }
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
            let problem: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
            let detail = problem.get("detail").and_then(Value::as_str).map(str::to_owned).unwrap_or(body);
            return Err(ClientError::Refused { status, detail, problem });
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
        if reply.results.len() != events.len() {
            return Err(ClientError::Protocol(format!("{} results for {} events", reply.results.len(), events.len())));
        }
        Ok(reply.results)
    }

    /// GET a read endpoint with the bearer token; returns the body text.
    pub fn get(&self, path_and_query: &str) -> Result<String, ClientError> {
        let mut request = self.agent.get(&format!("{}{path_and_query}", self.base));
        if let Some(t) = &self.token {
            request = request.header("authorization", &format!("Bearer {t}"));
        }
        let response = request.call().map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }
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
