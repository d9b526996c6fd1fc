//! A PostgreSQL connection (`tokio-postgres` on a small current-thread
//! runtime, so callers stay blocking): the cluster's identity, positions,
//! and restore points, each read together with the database
//! clock in one statement.

use tidemark_core::{Lsn, Timestamp};

use crate::AgentError;

/// How long connecting may take.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;

fn db_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Database(e.to_string())
}

/// One observation: LSN, timeline and database clock read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub lsn: Lsn,
    pub timeline: u32,
    pub at: Timestamp,
}

pub struct Db {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// `TTTTTTTT` of a segment file name.
fn timeline_of(walfile: &str) -> Result<u32, AgentError> {
    walfile
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| db_err(format!("bad WAL file name {walfile:?}")))
}

impl Db {
    /// Connects with a libpq-style DSN (`host=/run/postgresql port=5432 user=postgres dbname=postgres`) or URL.
    pub fn connect(dsn: &str) -> Result<Db, AgentError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(db_err)?;
        let mut config: tokio_postgres::Config = dsn.parse().map_err(db_err)?;
        config.connect_timeout(std::time::Duration::from_secs(CONNECT_TIMEOUT_SECS));
        config.application_name("tidemark");
        let (client, connection) = runtime.block_on(config.connect(tokio_postgres::NoTls)).map_err(db_err)?;
        runtime.spawn(async move {
            // Ends when the client is dropped; errors surface on the next query.
            let _ = connection.await;
        });
        Ok(Db { runtime, client })
    }

    fn one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, AgentError> {
        self.runtime.block_on(self.client.query_one(sql, params)).map_err(db_err)
    }

    /// (`system_identifier`, `wal_segment_size` in bytes).
    pub fn identity(&self) -> Result<(String, u64), AgentError> {
        let row = self.one(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()),
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
            &[],
        )?;
        Ok((row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
    }

    fn observed(row: &tokio_postgres::Row) -> Result<Observed, AgentError> {
        let lsn: String = row.get(0);
        Ok(Observed {
            lsn: Lsn::parse(&lsn).map_err(db_err)?,
            timeline: timeline_of(&row.get::<_, String>(1))?,
            at: Timestamp::from_micros(row.get::<_, i64>(2)),
        })
    }

    /// The current insert position (a record boundary: every transaction
    /// acknowledged before this call has its commit record before it), its
    /// timeline and the database clock, read in one statement. A primary only.
    pub fn position(&self) -> Result<Observed, AgentError> {
        let row = self.one(
            "SELECT l::text, pg_walfile_name(l), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
               FROM pg_current_wal_insert_lsn() AS l",
            &[],
        )?;
        Self::observed(&row)
    }

    /// Calls `pg_create_restore_point(name)`: the LSN is the end of the restore-point record.
    pub fn create_restore_point(&self, name: &str) -> Result<Observed, AgentError> {
        let row = self.one(
            "SELECT l::text, pg_walfile_name(l), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
               FROM pg_create_restore_point($1) AS l",
            &[&name],
        )?;
        Self::observed(&row)
    }

    /// `pg_is_in_recovery()`: false once a restored server has promoted.
    pub fn in_recovery(&self) -> Result<bool, AgentError> {
        Ok(self.one("SELECT pg_is_in_recovery()", &[])?.get(0))
    }

    /// `pg_last_wal_replay_lsn()`: how far a server in recovery has replayed
    /// (none before replay starts, or on a server that never recovered).
    pub fn replay_lsn(&self) -> Result<Option<Lsn>, AgentError> {
        let text: Option<String> = self.one("SELECT pg_last_wal_replay_lsn()::text", &[])?.get(0);
        Ok(text.and_then(|t| Lsn::parse(&t).ok()))
    }

    /// Completes the WAL segment holding `lsn` (`pg_switch_wal()`) and waits
    /// until the archiver reports it archived, so what was just pinned is in
    /// the archive (and the ledger, through the archive hook) when this returns.
    pub fn switch_and_wait_archived(&self, lsn: Lsn, timeout: std::time::Duration) -> Result<String, AgentError> {
        let lsn_text = lsn.to_string();
        let segment: String = self.one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&lsn_text])?.get(0);
        self.one("SELECT pg_switch_wal()::text", &[])?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let row = self.one(
                "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                &[],
            )?;
            let (archived, failed): (String, String) = (row.get(0), row.get(1));
            // A segment name is 24 hex digits; `.backup` and `.history` names say nothing about completeness.
            if archived.len() == 24 && archived.as_str() >= segment.as_str() {
                return Ok(segment);
            }
            if std::time::Instant::now() >= deadline {
                return Err(db_err(format!(
                    "WAL segment {segment} was not archived within {} s (last archived {archived:?}, last failed {failed:?}); is archive_command working?",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
