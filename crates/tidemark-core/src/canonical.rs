//! Canonical JSON: the bytes that are signed and hashed.
//!
//! Rules (specified for other implementers in `docs/formats.md`):
//! object keys sorted by their UTF-8 bytes, no insignificant white space,
//! UTF-8 output with only `"`, `\` and control characters escaped
//! (`\b \f \n \r \t`, others as `\u00xx` lowercase), integers only (a float
//! anywhere is refused), times as RFC 3339 UTC strings with six fractional
//! digits (see [`crate::Timestamp`]).

use serde::Serialize;
use serde_json::Value;

/// Why a value has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    #[error("non-integer number at {path}: canonical JSON allows integers only")]
    Float { path: String },
    #[error("cannot serialise to JSON: {0}")]
    Serialize(String),
}

/// Serialises `value` to canonical JSON bytes.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(|e| CanonicalError::Serialize(e.to_string()))?;
    value_to_canonical_vec(&value)
}

/// Canonical bytes of an already-built JSON value.
pub fn value_to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    check_integers_only(value, &mut String::from("$"))?;
    // serde_json's default `Map` is a BTreeMap: keys come out sorted by bytes,
    // and its compact writer emits no white space.
    serde_json::to_vec(value).map_err(|e| CanonicalError::Serialize(e.to_string()))
}

/// Refuses floats (and integers outside i64/u64) anywhere in `value`.
pub fn check_integers_only(value: &Value, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Err(CanonicalError::Float { path: path.clone() }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_integers_only(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_integers_only(v, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_and_compact() {
        let v = json!({"b": 1, "a": {"z": [1, 2], "y": "é\n"}, "A": null});
        let bytes = value_to_canonical_vec(&v).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"A":null,"a":{"y":"é\n","z":[1,2]},"b":1}"#);
    }

    #[test]
    fn floats_are_refused_with_their_path() {
        let v = json!({"a": [1, {"b": 1.5}]});
        assert_eq!(value_to_canonical_vec(&v).unwrap_err(), CanonicalError::Float { path: "$.a[1].b".into() });
    }

    #[test]
    fn control_characters_escape_as_documented() {
        let v = json!("\u{1}\"\\/");
        assert_eq!(value_to_canonical_vec(&v).unwrap(), br#""\u0001\"\\/""#);
    }
}
