//! `tidemark key ...`: identities and roles as events (DESIGN §5).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use tidemark_core::ActorId;
use tidemark_core::event::{EventBody, KeyEnrolled, KeyRevoked, Role};
use tidemark_core::keys::PublicKeyFile;

use crate::Global;
use crate::exit::{self, coded};
use crate::util::{self, print_json};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key pair: FILE (private, 0600) and FILE.pub (public).
    New(NewArgs),
    /// Enrol a public key with roles (signed by an admin key).
    Enroll(EnrollArgs),
    /// Revoke a key: it may sign nothing after this entry (signed by an admin key).
    Revoke(RevokeArgs),
    /// List every enrolled key with its roles and status.
    List(ListArgs),
    /// Print the ledger's checkpoint verifier key (C2SP vkey), or a key file's actor id.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct NewArgs {
    /// Human name of the key (letters, digits, . _ -).
    #[arg(long)]
    name: String,
    /// Where to write the private key; the public key goes to FILE.pub.
    #[arg(long)]
    out: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EnrollArgs {
    /// Public key file (FILE.pub from `key new`; a private key file also works).
    #[arg(long = "pub")]
    public: PathBuf,
    /// Comma-separated roles: admin, agent, operator, auditor.
    #[arg(long, value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// Admin key that signs the enrolment.
    #[arg(long)]
    signer: PathBuf,
    /// Name to enrol under (default: the name in the key file).
    #[arg(long)]
    name: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// Actor id of the key to revoke.
    #[arg(long, conflicts_with = "public", required_unless_present = "public")]
    key: Option<String>,
    /// Or its public key file.
    #[arg(long = "pub")]
    public: Option<PathBuf>,
    /// Why (kept in the log).
    #[arg(long)]
    reason: String,
    /// Admin key that signs the revocation.
    #[arg(long)]
    signer: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Print the ledger's verifier key in C2SP vkey form.
    #[arg(long, conflicts_with = "public", required_unless_present = "public")]
    ledger_key: bool,
    /// Print the actor id and public key of a key file.
    #[arg(long = "pub")]
    public: Option<PathBuf>,
    /// Print it as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::New(a) => new(a),
        KeyCommand::Enroll(a) => enroll(global, a),
        KeyCommand::Revoke(a) => revoke(global, a),
        KeyCommand::List(a) => list(global, a),
        KeyCommand::Show(a) => show(global, a),
    }
}

fn public_file_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn new(a: NewArgs) -> anyhow::Result<ExitCode> {
    tidemark_core::Name::parse(&a.name).map_err(|e| coded(exit::USAGE, e))?;
    let pub_path = public_file_path(&a.out);
    for p in [&a.out, &pub_path] {
        if p.exists() {
            return Err(coded(exit::USAGE, format!("{} already exists; refusing to overwrite a key", p.display())));
        }
    }
    let key = util::new_key(&a.name);
    tidemark_store::write_secret_key_file(&a.out, &key)?;
    std::fs::write(&pub_path, key.public_file().to_file_text())
        .with_context(|| format!("writing {}", pub_path.display()))?;
    if a.json {
        print_json(&json!({
            "actor": key.actor_id().to_string(),
            "name": a.name,
            "public_key": key.public_key().to_base64(),
            "private_key_file": a.out.display().to_string(),
            "public_key_file": pub_path.display().to_string(),
        }));
        return Ok(exit::ok());
    }
    println!("actor {}", key.actor_id());
    println!("private key: {} (0600; keep it secret)", a.out.display());
    println!(
        "public key:  {} (give this to an admin: tidemark key enroll --pub {} --roles ...)",
        pub_path.display(),
        pub_path.display()
    );
    Ok(exit::ok())
}

fn read_public(path: &Path) -> anyhow::Result<PublicKeyFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    PublicKeyFile::from_file_text(&text).map_err(|e| coded(exit::USAGE, format!("{}: {e}", path.display())))
}

fn enroll(global: &Global, a: EnrollArgs) -> anyhow::Result<ExitCode> {
    let public = read_public(&a.public)?;
    let mut roles = a
        .roles
        .iter()
        .map(|r| Role::parse(r.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| coded(exit::USAGE, e))?;
    roles.sort();
    roles.dedup();
    let name = a.name.unwrap_or(public.name.to_string());
    let body = KeyEnrolled {
        public_key: public.public_key,
        name: tidemark_core::Name::parse(&name).map_err(|e| coded(exit::USAGE, e))?,
        roles: roles.clone(),
    };
    let appended = sign_and_append(global, &a.signer, EventBody::KeyEnrolled(body))?;
    if a.json {
        print_json(&json!({"actor": public.actor.to_string(), "name": name, "roles": roles,
                "seq": appended.map(|a| a.seq), "duplicate": appended.map(|a| a.duplicate)}));
    } else {
        println!("enrolled {} ({name}) as {} at {}", public.actor, a.roles.join(","), entry_text(appended));
    }
    Ok(exit::ok())
}

fn revoke(global: &Global, a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let actor = match (&a.key, &a.public) {
        (Some(k), _) => ActorId::parse(k).map_err(|e| coded(exit::USAGE, e.to_string()))?,
        (None, Some(p)) => read_public(p)?.actor,
        (None, None) => unreachable!("clap requires one of --key and --pub"),
    };
    let body = KeyRevoked { key: actor, reason: a.reason.clone() };
    let appended = sign_and_append(global, &a.signer, EventBody::KeyRevoked(body))?;
    if a.json {
        print_json(&json!({"actor": actor.to_string(), "reason": a.reason,
                "seq": appended.map(|a| a.seq), "duplicate": appended.map(|a| a.duplicate)}));
    } else {
        println!("revoked {actor} at {}; it may sign nothing from now on", entry_text(appended));
    }
    Ok(exit::ok())
}

/// The registry change, recorded (or spooled: then its entry is not known yet).
fn sign_and_append(
    global: &Global,
    signer: &Path,
    body: EventBody,
) -> anyhow::Result<Option<tidemark_store::Appended>> {
    let key = util::read_key(signer)?;
    match crate::pg_cmds::record_events(global, &key, vec![body])? {
        tidemark_ops::Recorded::Appended(a) => Ok(a.last().copied()),
        tidemark_ops::Recorded::Spooled { .. } => Ok(None),
    }
}

fn entry_text(appended: Option<tidemark_store::Appended>) -> String {
    match appended {
        Some(a) => util::recorded_text(&tidemark_ops::Recorded::Appended(vec![a])),
        None => "the spool (not in the ledger until delivered)".to_owned(),
    }
}

fn list(global: &Global, a: ListArgs) -> anyhow::Result<ExitCode> {
    let keys = util::open_api(global)?.keys().map_err(exit::ops_err)?;
    if a.json {
        print_json(&keys);
        return Ok(exit::ok());
    }
    println!("{:<32}  {:<20}  {:<24}  {:>8}  STATUS", "ACTOR", "NAME", "ROLES", "ENROLLED");
    for k in keys {
        let status = k.revoked_at_seq.map_or("active".to_owned(), |s| format!("revoked at {s}"));
        println!(
            "{:<32}  {:<20}  {:<24}  {:>8}  {status}",
            k.actor.to_string(),
            k.name.to_string(),
            k.roles_text(),
            k.enrolled_at_seq
        );
    }
    Ok(exit::ok())
}

fn show(global: &Global, a: ShowArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = a.public {
        let public = read_public(&p)?;
        if a.json {
            print_json(&json!({"actor": public.actor.to_string(), "name": public.name.to_string(),
                "public_key": public.public_key.to_base64()}));
            return Ok(exit::ok());
        }
        println!("actor {}", public.actor);
        println!("name {}", public.name);
        println!("public_key {}", public.public_key.to_base64());
        return Ok(exit::ok());
    }
    let vkey = util::open_api(global)?.ledger_key().map_err(exit::ops_err)?;
    if a.json {
        print_json(&json!({"ledger_key": vkey}));
    } else {
        println!("{vkey}");
    }
    Ok(exit::ok())
}
