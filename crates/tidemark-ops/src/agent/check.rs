//! `tidemark agent check`: the file against the ledger and the world —
//! every component registered and the one its address reaches, the group
//! defined with exactly these components, the keys enrolled with the roles
//! their jobs need, every endpoint reachable. Every problem is reported
//! (with its line), not just the first.

use tidemark_core::Kind;

use super::Agent;
use super::config::{Problem, parse_duration};
use crate::LedgerApi;
use crate::ledger::signer_may;

/// What each key signs.
const AGENT_KINDS: [Kind; 5] =
    [Kind::PgPosition, Kind::S3ScanComplete, Kind::MarkerPoint, Kind::ArtifactVerified, Kind::SnapshotTaken];

/// Every problem of the file, its own rules first, then against the
/// ledger; `reach` also connects to every database and bucket.
pub fn check(agent: &Agent, ledger: &dyn LedgerApi, reach: bool) -> Vec<Problem> {
    let p = &agent.parsed;
    let c = agent.config();
    let mut out = p.rules();
    // Keys: readable, enrolled, allowed to sign what their jobs record.
    let keys = match ledger.keys() {
        Ok(k) => Some(k),
        Err(e) => {
            out.push(p.problem("ledger.url", format!("the ledger's key registry cannot be read: {e}")));
            None
        }
    };
    let mut key_check = |path: &str, key: Result<tidemark_core::SecretKey, crate::OpsError>, kinds: &[Kind]| match key {
        Err(e) => out.push(p.problem(path, e.to_string())),
        Ok(key) => {
            if let Some(keys) = &keys {
                for k in kinds {
                    if let Err(e) = signer_may(keys.clone(), &key, *k) {
                        out.push(p.problem(path, format!("{} (it signs {})", e, k.name())));
                        break;
                    }
                }
            }
        }
    };
    key_check("keys.agent", agent.agent_key(), &AGENT_KINDS);
    if c.keys.operator.is_some() {
        key_check("keys.operator", agent.operator_key(), &[Kind::RestoreTestSelected, Kind::DrillCompleted]);
    }
    // The group: defined, with exactly the configured components and skew.
    let info = match ledger.group_info(&c.group.name) {
        Ok(i) => i,
        Err(e) => {
            out.push(p.problem("group.name", e.to_string()));
            return out;
        }
    };
    let configured: Vec<(String, String)> = c
        .postgresql
        .iter()
        .enumerate()
        .map(|(i, x)| (x.component.clone(), format!("postgresql.{i}")))
        .chain(c.s3.iter().enumerate().map(|(i, x)| (x.component.clone(), format!("s3.{i}"))))
        .chain(c.snapshot.iter().enumerate().map(|(i, x)| (x.component.clone(), format!("snapshot.{i}"))))
        .collect();
    for g in &info.definition.components {
        if !configured.iter().any(|(c, _)| c == g) {
            out.push(
                p.problem("group.name", format!("group {} has {g}, which the file does not configure", c.group.name)),
            );
        }
    }
    for (component, path) in &configured {
        if !info.definition.components.contains(component) {
            out.push(p.problem(
                &format!("{path}.component"),
                format!("{component} is not a component of group {}", c.group.name),
            ));
        }
        if !info.components.contains_key(component) {
            out.push(p.problem(&format!("{path}.component"), format!("{component} is not registered in the ledger")));
        }
    }
    if let Some(skew) = &c.group.max_skew
        && let Ok(d) = parse_duration(skew)
        && d.as_millis() as u64 != info.definition.max_skew_ms
    {
        out.push(p.problem(
            "group.max_skew",
            format!(
                "the ledger defines group {} with a max skew of {} ms, not {skew}",
                c.group.name, info.definition.max_skew_ms
            ),
        ));
    }
    // Identities and reachability.
    for (i, pg) in c.postgresql.iter().enumerate() {
        let path = format!("postgresql.{i}");
        let registered = info.components.get(&pg.component).and_then(|r| r.postgresql.clone());
        if info.components.contains_key(&pg.component) && registered.is_none() {
            out.push(p.problem(&path, format!("{} is registered, but not as a PostgreSQL cluster", pg.component)));
        }
        if !reach {
            continue;
        }
        let dsn = match agent.dsn(pg) {
            Ok(d) => d,
            Err(e) => {
                out.push(p.problem(&path, e.to_string()));
                continue;
            }
        };
        match tidemark_agents::pg_db::Db::connect(&dsn).and_then(|db| db.identity()) {
            Err(e) => out.push(p.problem(&path, format!("{}: {e}", pg.component))),
            Ok((system, _)) => {
                if let Some(r) = registered
                    && r.system_identifier != system
                {
                    out.push(p.problem(
                        &path,
                        format!(
                            "{}: the database is system {system}, but the ledger registered {}",
                            pg.component, r.system_identifier
                        ),
                    ));
                }
            }
        }
    }
    for (i, s3) in c.s3.iter().enumerate() {
        let path = format!("s3.{i}");
        let registered = info.components.get(&s3.component).and_then(|r| r.s3.clone());
        let spec = match agent.bucket(s3) {
            Ok(s) => s,
            Err(e) => {
                out.push(p.problem(&path, e.to_string()));
                continue;
            }
        };
        let resolved = match spec.resolve(registered.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                // The bucket line when the file names one (else the endpoint's, else the section's).
                let at = if s3.bucket.is_some() { format!("{path}.bucket") } else { format!("{path}.endpoint") };
                out.push(p.problem(&at, e.to_string()));
                continue;
            }
        };
        if !reach {
            continue;
        }
        match resolved.connect().and_then(|s| s.versioning(&resolved.bucket).map_err(Into::into)) {
            Err(e) => out.push(p.problem(&path, format!("{}: bucket {}: {e}", s3.component, resolved.bucket))),
            Ok(v) if v != tidemark_core::event::VersioningStatus::Enabled => out.push(p.problem(
                &path,
                format!(
                    "{}: bucket {} has versioning {}: its history cannot be recorded",
                    s3.component,
                    resolved.bucket,
                    v.name()
                ),
            )),
            Ok(_) => {}
        }
    }
    for (i, s) in c.snapshot.iter().enumerate() {
        if info.components.get(&s.component).is_some_and(|r| r.snapshot.is_none()) {
            out.push(p.problem(
                &format!("snapshot.{i}"),
                format!("{} is registered, but not as a snapshot-only store", s.component),
            ));
        }
    }
    out
}
