//! `tidemark.toml`: one application declared once — the ledger and the
//! keys, each component and how to reach it, the group, and what runs on
//! which schedule. Parsed strictly (an unknown field is refused with its
//! line); every problem found later is reported with the line it comes from.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::OpsError;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ledger: LedgerConfig,
    pub keys: KeysConfig,
    pub group: GroupConfig,
    #[serde(default)]
    pub postgresql: Vec<PgComponent>,
    #[serde(default)]
    pub s3: Vec<S3Component>,
    #[serde(default)]
    pub snapshot: Vec<SnapshotComponent>,
    #[serde(default)]
    pub schedule: Schedule,
    /// How scheduled restore tests pick, restore and check a recovery point.
    pub restore_test: Option<RestoreTest>,
    #[serde(default)]
    pub archive_check: ArchiveCheck,
}

/// What archive checks re-read besides every archived WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveCheck {
    /// Recorded versions of each bucket HEADed per check (a seeded sample; the seed is in each record).
    #[serde(default = "default_s3_sample")]
    pub s3_sample: u64,
    /// Re-read every present snapshot of the group (blake3 at its recorded location).
    #[serde(default = "default_true")]
    pub snapshots: bool,
}

impl Default for ArchiveCheck {
    fn default() -> ArchiveCheck {
        ArchiveCheck { s3_sample: default_s3_sample(), snapshots: true }
    }
}

fn default_s3_sample() -> u64 {
    100
}

fn default_true() -> bool {
    true
}

/// Where the ledger is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// A server's URL (`http://…`) or a ledger directory.
    pub url: String,
    /// A read token (`tidemark token issue`), given here…
    pub token: Option<String>,
    /// …or the name of an environment variable holding it.
    pub token_env: Option<String>,
    /// Where writes wait, durably, while the server cannot be reached.
    pub spool: Option<PathBuf>,
}

/// The keys that sign what the agent records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Signs positions, scans, markers, snapshots and archive checks (role `agent`).
    pub agent: PathBuf,
    /// Signs restore tests (`restore_test.selected`, `drill.completed`; role `operator`).
    pub operator: Option<PathBuf>,
}

/// The application: a group defined in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    /// The group's largest clock difference, as defined in the ledger (`2s`, `500ms`).
    pub max_skew: Option<String>,
}

/// A PostgreSQL cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgComponent {
    /// `pg:NAME`, as registered.
    pub component: String,
    /// The connection string, given here…
    pub dsn: Option<String>,
    /// …or the name of an environment variable holding it (keeps passwords out of the file).
    pub dsn_env: Option<String>,
}

/// An S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Component {
    /// `s3:NAME`, as registered.
    pub component: String,
    /// Default: the registered endpoint.
    pub endpoint: Option<String>,
    /// Default: the registered bucket.
    pub bucket: Option<String>,
    /// Default: the registered region.
    pub region: Option<String>,
    /// Path-style addressing (default: on for a registered endpoint that is not AWS).
    #[serde(default)]
    pub path_style: bool,
    /// A named profile of the AWS config files (default: the standard AWS chain).
    pub profile: Option<String>,
    /// Names of environment variables holding an access key id and secret (instead of the chain).
    pub access_key_id_env: Option<String>,
    pub secret_access_key_env: Option<String>,
}

/// A snapshot-only store: a command that writes a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotComponent {
    /// `snap:NAME`, as registered.
    pub component: String,
    /// Shell command run before each marker; it writes `file`.
    pub command: String,
    /// The snapshot file the command writes (recorded with its blake3).
    pub file: PathBuf,
}

/// How often each job runs (`1s`, `5m`, `1h`, `1d`); a job not given does not run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub positions: Option<String>,
    pub scans: Option<String>,
    pub marks: Option<String>,
    pub archive_checks: Option<String>,
    pub restore_tests: Option<String>,
}

/// Restore tests: a recovery point picked within a window, restored into
/// scratch locations (a PostgreSQL server, `BUCKET-drill-…` buckets,
/// snapshot copies), checked, removed, and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreTest {
    /// `latest`: the newest restorable marker in the window; `random`: one drawn with a recorded seed.
    pub pick: Pick,
    /// How far back the point may be (`1d` … `365d`).
    pub window: String,
    /// The seed of the first random pick (later picks use seed + 1, + 2 …); default: from the clock. Always recorded.
    pub seed: Option<u64>,
    /// Shell commands run against the restored endpoints (`TIDEMARK_PG_DSN`, `TIDEMARK_S3_BUCKET`, …); each must exit 0.
    #[serde(default)]
    pub checks: Vec<String>,
    /// The restore time the application must meet (`10m`); recorded as a check.
    pub target: Option<String>,
    /// Where scratch data goes (default: a new temporary directory per test).
    pub scratch: Option<PathBuf>,
    /// PostgreSQL's server binaries.
    #[serde(default = "default_pg_bin")]
    pub pg_bin: PathBuf,
    /// The user restored servers run as (PostgreSQL refuses root).
    pub run_as: Option<String>,
    /// The restored clusters' superuser.
    #[serde(default = "default_pg_user")]
    pub pg_user: String,
    /// How long WAL replay may take before the test fails.
    pub recovery_timeout: Option<String>,
}

/// Which recovery point a restore test picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    Latest,
    Random,
}

fn default_pg_bin() -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

fn default_pg_user() -> String {
    "postgres".to_owned()
}

/// A problem with the configuration, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file (none when the problem has no single place).
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A parsed file: the typed configuration and where each value stands.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Config,
    text: String,
    spans: BTreeMap<String, Range<usize>>,
}

/// Rule: `2s`, `500ms`, `1m`, `1h`, `1d`, `0` — a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "ms"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number with a unit (500ms, 2s, 1m, 1h, 1d)"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?}: too long"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Every key path's span (`postgresql.0.dsn`), for problems found after parsing.
fn collect_spans(prefix: &str, table: &toml_edit::Table, out: &mut BTreeMap<String, Range<usize>>) {
    for (key, item) in table.iter() {
        let path = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
        let span = table.key(key).and_then(|k| k.span()).or_else(|| item.span());
        if let Some(span) = span {
            out.insert(path.clone(), span);
        }
        match item {
            toml_edit::Item::Table(t) => collect_spans(&path, t, out),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let p = format!("{path}.{i}");
                    if let Some(span) = t.span() {
                        out.insert(p.clone(), span);
                    }
                    collect_spans(&p, t, out);
                }
            }
            _ => {}
        }
    }
}

impl Parsed {
    /// Parses `text` strictly: malformed TOML, an unknown field, a missing
    /// one or a wrong type is refused with its line.
    pub fn parse(text: &str) -> Result<Parsed, Problem> {
        let doc = toml_edit::Document::parse(text.to_owned())
            .map_err(|e| Problem { line: e.span().map(|s| line_of(text, s.start)), message: e.message().to_owned() })?;
        let mut spans = BTreeMap::new();
        collect_spans("", doc.as_table(), &mut spans);
        let config: Config = toml_edit::de::from_document(doc)
            .map_err(|e| Problem { line: e.span().map(|s| line_of(text, s.start)), message: e.message().to_owned() })?;
        Ok(Parsed { config, text: text.to_owned(), spans })
    }

    /// The line of a key path (`s3.0.bucket`), or of its nearest parent that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(span) = self.spans.get(p) {
                return Some(line_of(&self.text, span.start));
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// A problem at a key path.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem { line: self.line(path), message: message.into() }
    }

    /// Rule: what the file says is coherent on its own — names of the
    /// right kind, each component once, durations that parse and are
    /// positive, one DSN source per cluster, credentials given one way, a
    /// restore test with its section, an operator key and a window of 1 to 365 days.
    pub fn rules(&self) -> Vec<Problem> {
        let c = &self.config;
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut named = |path: String, component: &str, prefix: &str, out: &mut Vec<Problem>| {
            if !component.starts_with(prefix) {
                out.push(
                    self.problem(&path, format!("{component:?}: this section's components are named {prefix}NAME")),
                );
            } else if let Err(e) = tidemark_core::ComponentId::parse(component) {
                out.push(self.problem(&path, format!("{component:?}: {e}")));
            }
            if !seen.insert(component.to_owned()) {
                out.push(self.problem(&path, format!("{component} is declared twice")));
            }
        };
        for (i, p) in c.postgresql.iter().enumerate() {
            named(format!("postgresql.{i}.component"), &p.component, "pg:", &mut out);
            if p.dsn.is_some() == p.dsn_env.is_some() {
                out.push(self.problem(
                    &format!("postgresql.{i}"),
                    format!("{}: give exactly one of dsn and dsn_env", p.component),
                ));
            }
        }
        for (i, s) in c.s3.iter().enumerate() {
            named(format!("s3.{i}.component"), &s.component, "s3:", &mut out);
            let keys = (s.access_key_id_env.is_some(), s.secret_access_key_env.is_some());
            if keys.0 != keys.1 {
                out.push(self.problem(
                    &format!("s3.{i}"),
                    format!("{}: give both access_key_id_env and secret_access_key_env, or neither", s.component),
                ));
            }
            if keys.0 && s.profile.is_some() {
                out.push(self.problem(
                    &format!("s3.{i}.profile"),
                    format!("{}: credentials come from a profile or from environment variables, not both", s.component),
                ));
            }
        }
        for (i, s) in c.snapshot.iter().enumerate() {
            named(format!("snapshot.{i}.component"), &s.component, "snap:", &mut out);
        }
        if c.ledger.token.is_some() && c.ledger.token_env.is_some() {
            out.push(self.problem("ledger.token_env", "give token or token_env, not both"));
        }
        if let Err(e) = tidemark_core::Name::parse(&c.group.name) {
            out.push(self.problem("group.name", format!("{:?}: {e}", c.group.name)));
        }
        if let Some(skew) = &c.group.max_skew
            && let Err(e) = parse_duration(skew)
        {
            out.push(self.problem("group.max_skew", e));
        }
        let every = [
            ("positions", &c.schedule.positions),
            ("scans", &c.schedule.scans),
            ("marks", &c.schedule.marks),
            ("archive_checks", &c.schedule.archive_checks),
            ("restore_tests", &c.schedule.restore_tests),
        ];
        for (name, value) in every {
            if let Some(v) = value {
                match parse_duration(v) {
                    Ok(d) if d.is_zero() => out.push(self.problem(&format!("schedule.{name}"), "must be positive")),
                    Ok(_) => {}
                    Err(e) => out.push(self.problem(&format!("schedule.{name}"), e)),
                }
            }
        }
        match (&c.schedule.restore_tests, &c.restore_test) {
            (Some(_), None) => {
                out.push(self.problem("schedule.restore_tests", "restore tests need a [restore_test] section"))
            }
            (_, Some(t)) => {
                if c.keys.operator.is_none() {
                    out.push(
                        self.problem("restore_test", "restore tests are signed by an operator key: give keys.operator"),
                    );
                }
                match parse_duration(&t.window) {
                    Ok(w) if w < Duration::from_secs(86_400) || w > Duration::from_secs(365 * 86_400) => {
                        out.push(self.problem("restore_test.window", format!("{:?}: a window of 1d to 365d", t.window)))
                    }
                    Ok(_) => {}
                    Err(e) => out.push(self.problem("restore_test.window", e)),
                }
                for (field, v) in [("target", &t.target), ("recovery_timeout", &t.recovery_timeout)] {
                    if let Some(v) = v
                        && let Err(e) = parse_duration(v)
                    {
                        out.push(self.problem(&format!("restore_test.{field}"), e));
                    }
                }
            }
            (None, None) => {}
        }
        out
    }
}

/// The JSON Schema of `tidemark.toml` (the TOML document as JSON), as
/// `schemas/config/tidemark.toml.json` holds it.
pub fn json_schema() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schemas serialise");
    schema["title"] = "tidemark.toml".into();
    schema["description"] =
        "The agent's configuration: one application's ledger, keys, components, group and schedules (docs/agent.md)"
            .into();
    serde_json::to_string_pretty(&schema).expect("schemas serialise") + "\n"
}

/// Reads an environment variable a configuration names.
pub fn from_env(name: &str, what: &str) -> Result<String, OpsError> {
    std::env::var(name).map_err(|_| OpsError::Usage(format!("{what}: the environment variable {name} is not set")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ledger]
url = "http://127.0.0.1:7447"
token_env = "TIDEMARK_TOKEN"

[keys]
agent = "agent.key"

[group]
name = "app"
max_skew = "2s"

[[postgresql]]
component = "pg:main"
dsn_env = "PG_DSN"

[[s3]]
component = "s3:uploads"
path_style = true

[schedule]
positions = "1s"
scans = "2s"
"#;

    #[test]
    fn rule_a_coherent_file_has_no_problems() {
        let p = Parsed::parse(GOOD).unwrap();
        assert_eq!(p.rules(), vec![]);
        assert_eq!(p.line("s3.0.path_style"), Some(19));
        assert_eq!(p.line("postgresql.0.dsn_env"), Some(15));
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let e = Parsed::parse(&GOOD.replace("path_style = true", "path_styl = true")).unwrap_err();
        assert_eq!(e.line, Some(19), "{e}");
        assert!(e.message.contains("path_styl"), "{e}");
        let e = Parsed::parse("[ledger\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn rule_every_problem_is_said_with_its_line() {
        let bad = GOOD
            .replace("component = \"s3:uploads\"", "component = \"pg:uploads\"")
            .replace("positions = \"1s\"", "positions = \"0s\"")
            .replace("scans = \"2s\"", "scans = \"2 s\"")
            .replace("dsn_env = \"PG_DSN\"", "dsn_env = \"PG_DSN\"\ndsn = \"host=x\"");
        let p = Parsed::parse(&bad).unwrap();
        let problems: Vec<String> = p.rules().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|m| m.starts_with("line 19:") && m.contains("named s3:NAME")), "{problems:?}");
        assert!(problems.iter().any(|m| m.starts_with("line 23:") && m.contains("must be positive")), "{problems:?}");
        assert!(problems.iter().any(|m| m.starts_with("line 24:") && m.contains("unit")), "{problems:?}");
        assert!(problems.iter().any(|m| m.starts_with("line 13:") && m.contains("exactly one of dsn")), "{problems:?}");
    }

    #[test]
    fn the_annotated_example_is_coherent() {
        let p = Parsed::parse(include_str!("../../../../examples/tidemark.toml")).unwrap();
        assert_eq!(p.rules(), vec![]);
        assert_eq!(p.config.restore_test.as_ref().map(|t| t.pick), Some(Pick::Random));
        assert_eq!(p.config.s3[0].profile.as_deref(), Some("backup-reader"));
    }

    #[test]
    fn rule_a_restore_test_needs_its_section_an_operator_and_a_window_of_days() {
        let p = Parsed::parse(&GOOD.replace("scans = \"2s\"", "scans = \"2s\"\nrestore_tests = \"30s\"")).unwrap();
        assert!(p.rules().iter().any(|m| m.message.contains("need a [restore_test] section")));
        let with = format!("{GOOD}\n[restore_test]\npick = \"latest\"\nwindow = \"12h\"\n");
        let problems: Vec<String> = Parsed::parse(&with).unwrap().rules().iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|m| m.contains("operator key")), "{problems:?}");
        assert!(problems.iter().any(|m| m.contains("a window of 1d to 365d")), "{problems:?}");
    }

    #[test]
    fn rule_durations_have_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("500"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("2 s").is_err() && parse_duration("1y").is_err() && parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
