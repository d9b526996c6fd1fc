//! The committed `schemas/` are exactly what the code generates: the
//! contract other languages read is the one the parser enforces.
//! Regenerate with `cargo run -p tidemark-cli -- schemas`.

use std::path::Path;

#[test]
fn committed_schemas_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let mut stale = Vec::new();
    for (rel, text) in tidemark_core::schema::all_schemas() {
        if std::fs::read_to_string(root.join(&rel)).ok().as_deref() != Some(text.as_str()) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ disagrees with the code for {stale:?}: run `cargo run -p tidemark-cli -- schemas`"
    );
    let committed = std::fs::read_dir(root.join("events")).unwrap().count();
    assert_eq!(
        committed,
        tidemark_core::Kind::ALL.len(),
        "schemas/events holds a schema for a kind the code no longer has"
    );
}

#[test]
fn every_kind_has_a_schema_with_a_closed_body() {
    for kind in tidemark_core::Kind::ALL {
        let schema = tidemark_core::schema::event_schema(*kind);
        assert_eq!(schema["properties"]["kind"]["const"], kind.name());
        assert_eq!(schema["additionalProperties"], false);
    }
}
