//! The server side of the CLI (`serve`) and the client side: writes through
//! a server, the spool, tokens and remote reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tidemark_client::{Client, ClientError, Spool};
use tidemark_store::LedgerPaths;

use crate::exit::{self, coded};
use crate::ledger_cmds::{self, InitArgs};
use crate::{Global, util};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; put TLS in front for anything else).
    #[arg(long, default_value = tidemark_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Checkpoint origin when the ledger is created on first start.
    #[arg(long)]
    origin: Option<String>,
    /// Seconds a client has to send its request head (slow-client limit).
    #[arg(long, default_value_t = tidemark_server::HEADER_READ_TIMEOUT.as_secs(), hide = true)]
    header_read_timeout_secs: u64,
}

pub fn serve(global: &Global, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let dir = global.dir()?;
    let ledger = if LedgerPaths::new(&dir).db.exists() {
        util::open_ledger(global)?
    } else {
        ledger_cmds::create_ledger(
            &dir,
            InitArgs { origin: a.origin, admin_name: "admin".into(), admin_key_out: None, json: false },
        )?
    };
    tidemark_server::serve(
        ledger,
        tidemark_server::ServeOptions {
            listen: a.listen,
            clock: util::now,
            header_read_timeout: std::time::Duration::from_secs(a.header_read_timeout_secs.max(1)),
        },
    )?;
    Ok(exit::ok())
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a bearer token for reads, signed by KEY (any enrolled, unrevoked key).
    Issue {
        #[arg(long)]
        key: PathBuf,
        /// Lifetime in hours (at most 90 days).
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
        /// Print the token with its actor and expiry as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn token(c: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Issue { key, ttl_hours, json } = c;
    let key = util::read_key(&key)?;
    let now = util::now();
    let ttl = ttl_hours.saturating_mul(3600);
    let token = tidemark_core::token::issue(&key, now, ttl, util::random_bytes())
        .map_err(|e| coded(exit::USAGE, e.to_string()))?;
    if json {
        let (claims, _, _) = tidemark_core::token::parse(&token).map_err(|e| coded(exit::FAILURE, e.to_string()))?;
        util::print_json(
            &serde_json::json!({"token": token, "actor": claims.actor.to_string(), "issued_at": claims.issued_at.to_string(), "expires_at": claims.expires_at.to_string()}),
        );
    } else {
        println!("{token}");
    }
    Ok(exit::ok())
}

#[derive(Subcommand)]
pub enum SpoolCommand {
    /// Deliver every spooled batch to the server, oldest first.
    Flush {
        /// `{"delivered_events","delivered_batches","rejected":[{"path","reason"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// List spooled batches.
    List {
        /// A JSON array of the batch files, oldest first.
        #[arg(long)]
        json: bool,
    },
}

fn spool_dir(global: &Global) -> anyhow::Result<Spool> {
    let dir = global.spool.as_ref().ok_or_else(|| coded(exit::USAGE, "pass --spool DIR (or set TIDEMARK_SPOOL)"))?;
    Ok(Spool::open(dir)?)
}

pub fn spool(global: &Global, c: SpoolCommand) -> anyhow::Result<ExitCode> {
    let spool = spool_dir(global)?;
    match c {
        SpoolCommand::List { json } => {
            let pending = spool.pending()?;
            if json {
                util::print_json(&pending.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
            } else {
                for p in pending {
                    println!("{}", p.display());
                }
            }
        }
        SpoolCommand::Flush { json } => {
            let url = global.url().ok_or_else(|| coded(exit::USAGE, "spool flush needs --ledger URL of a server"))?;
            let client = Client::new(url, global.token.clone());
            let report = spool
                .flush(&client)
                .map_err(|e| coded(exit::FAILURE, format!("{e}; undelivered batches stay in the spool")))?;
            if json {
                let rejected: Vec<serde_json::Value> = report
                    .rejected
                    .iter()
                    .map(|(p, r)| serde_json::json!({"path": p.display().to_string(), "reason": r}))
                    .collect();
                util::print_json(&serde_json::json!({"delivered_events": report.events,
                    "delivered_batches": report.batches, "rejected": rejected}));
            } else {
                println!("delivered {} events in {} batches", report.events, report.batches);
                for (path, reason) in &report.rejected {
                    eprintln!("refused for good, moved to {}: {reason}", path.display());
                }
            }
            if !report.rejected.is_empty() {
                return Ok(ExitCode::from(exit::REFUSED));
            }
        }
    }
    Ok(exit::ok())
}

/// A refusal by the server (its detail names the offending event).
#[derive(Debug)]
pub struct RemoteRefusal {
    pub detail: String,
}

impl std::fmt::Display for RemoteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for RemoteRefusal {}

/// Before a write through a server: what is already spooled is delivered
/// first, so order holds (said on stderr). An error means nothing new may be
/// sent yet; a retryable one means the new events belong in the spool too.
pub fn deliver_spool_first(spool: &Spool, client: &Client) -> Result<(), ClientError> {
    say_delivered(&spool.flush(client)?);
    Ok(())
}

/// What a spool delivery did, on stderr.
pub fn say_delivered(report: &tidemark_client::FlushReport) {
    if report.batches > 0 {
        eprintln!("tidemark: delivered {} spooled events first", report.events);
    }
    for (path, reason) in &report.rejected {
        eprintln!("tidemark: a spooled batch was refused for good, moved to {}: {reason}", path.display());
    }
}

/// A client error as the CLI reports it: a refused credential or request
/// is a usage error (exit 2) with the server's own words.
pub fn client_err(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused { status: 401, detail, .. } => {
            coded(exit::USAGE, format!("{detail} (pass --token or set TIDEMARK_TOKEN)"))
        }
        ClientError::Refused { status: 400 | 404, detail, .. } => coded(exit::USAGE, detail),
        other => other.into(),
    }
}
