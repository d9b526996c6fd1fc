//! JSON Schemas of the wire formats, generated from the types.
//!
//! `schemas/` in the repository holds the committed output of
//! [`all_schemas`]; a test fails when the two disagree, so the schemas are
//! always the contract the code actually enforces.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::event::{Kind, SCHEMA_VERSION};

fn header_properties(kind: Option<&str>) -> Value {
    let kind_schema = match kind {
        Some(k) => json!({"const": k}),
        None => json!({"type": "string"}),
    };
    json!({
        "v": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", "description": "UUID version 7, chosen by the writer; the idempotency key"},
        "kind": kind_schema,
        "occurred_at": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$"},
        "actor": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "first 16 bytes of blake3(signer public key), hex"},
    })
}

/// The schema of one kind's full event (header and body).
pub fn event_schema(kind: Kind) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let body = kind.body_schema(&mut generator);
    let mut props = header_properties(Some(kind.name()));
    props["body"] = body.to_value();
    let defs = generator.take_definitions(true);
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://tidemark.dev/schemas/v1/events/{}.json", kind.name()),
        "title": kind.name(),
        "description": format!("tidemark event schema v1, kind {}; signed as \"tidemark-event-v1\\n\" followed by the canonical JSON of this object", kind.name()),
        "type": "object",
        "additionalProperties": false,
        "required": ["v", "id", "kind", "occurred_at", "actor", "body"],
        "properties": props,
    });
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs.into_iter().collect());
    }
    schema
}

fn envelope(name: &str, description: &str, required: &[&str], props: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://tidemark.dev/schemas/v1/{name}.json"),
        "title": name,
        "description": description,
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": props,
    })
}

/// Every schema, as (relative file path, JSON text with a trailing newline).
pub fn all_schemas() -> Vec<(String, String)> {
    let sig = json!({"type": "string", "pattern": "^[A-Za-z0-9+/]{85}[AQgw]==$", "description": "Ed25519 signature, standard base64"});
    let event_ref = json!({"type": "object", "description": "an event; see events/<kind>.json"});
    let mut out: Vec<(String, Value)> =
        Kind::ALL.iter().map(|k| (format!("events/{}.json", k.name()), event_schema(*k))).collect();
    out.push((
        "signed-event.json".into(),
        envelope(
            "signed-event",
            "an event with its signature, as writers send it (NDJSON: one per line)",
            &["event", "sig"],
            json!({"event": event_ref, "sig": sig}),
        ),
    ));
    out.push((
        "entry.json".into(),
        envelope(
            "entry",
            "an event as the log stores it; the RFC 6962 leaf is the canonical JSON of this object",
            &["event", "recorded_at", "seq", "sig"],
            json!({
                "event": event_ref,
                "recorded_at": header_properties(None)["occurred_at"],
                "seq": {"type": "integer", "minimum": 0},
                "sig": sig,
            }),
        ),
    ));
    out.into_iter()
        .map(|(path, v)| (path, serde_json::to_string_pretty(&v).expect("schemas serialise") + "\n"))
        .collect()
}
