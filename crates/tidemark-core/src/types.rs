//! Small validated value types shared by the event bodies.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `JsonSchema` for a type that is a pattern-constrained string on the wire.
#[macro_export]
macro_rules! string_schema {
    ($ty:ty, $pattern:expr, $description:expr) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

/// Implements Display/Debug/Serialize/Deserialize for a type with `parse(&str)` and `fmt`.
macro_rules! string_wire {
    ($ty:ty) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$ty>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An event id: a UUID version 7 (time-ordered), lowercase and hyphenated on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// Builds a UUIDv7 from a Unix time in milliseconds and 10 random bytes (the caller's CSPRNG).
    pub fn new_v7(unix_ms: u64, random: [u8; 10]) -> EventId {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        b[6] = 0x70 | (b[6] & 0x0f);
        b[8] = 0x80 | (b[8] & 0x3f);
        EventId(b)
    }

    pub fn parse(s: &str) -> Result<EventId, String> {
        let bytes = s.as_bytes();
        let err = || format!("invalid event id {s:?}: expected a lowercase hyphenated UUID version 7");
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
            return Err(err());
        }
        let hex_str: String = s.chars().filter(|c| *c != '-').collect();
        if hex_str.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(&hex_str, &mut id).map_err(|_| err())?;
        if id[6] >> 4 != 7 || id[8] >> 6 != 0b10 {
            return Err(err());
        }
        Ok(EventId(id))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(f, "{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}
string_wire!(EventId);
string_schema!(
    EventId,
    "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
    "UUID version 7, chosen by the writer; the idempotency key"
);

/// A 32-byte digest (blake3 or SHA-256), lowercase hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn parse(s: &str) -> Result<Digest32, String> {
        let mut d = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("invalid digest {s:?}: expected 64 lowercase hex characters"));
        }
        hex::decode_to_slice(s, &mut d).map_err(|_| format!("invalid digest {s:?}: not hex"))?;
        Ok(Digest32(d))
    }

    pub fn blake3_of(bytes: &[u8]) -> Digest32 {
        Digest32(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
string_wire!(Digest32);
string_schema!(Digest32, "^[0-9a-f]{64}$", "32-byte digest, lowercase hex");

/// A PostgreSQL write-ahead log position, written as PostgreSQL prints it: `%X/%X`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Result<Lsn, String> {
        let err = || format!("invalid LSN {s:?}: expected HEX/HEX as PostgreSQL prints it, e.g. 0/3000028");
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(err());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}
string_wire!(Lsn);
string_schema!(Lsn, "^[0-9A-F]{1,8}/[0-9A-F]{1,8}$", "PostgreSQL LSN as %X/%X");

/// A component id: `pg:NAME`, `s3:NAME` or `snap:NAME`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct ComponentId(String);

/// Longest component, group, key or artifact name part.
pub const MAX_NAME_BYTES: usize = 128;

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        match s.split_once(':') {
            Some(("pg" | "s3" | "snap", name)) if is_name(name) => Ok(ComponentId(s.to_owned())),
            _ => Err(format!(
                "invalid component id {s:?}: expected pg:NAME, s3:NAME or snap:NAME (NAME: letters, digits, . _ -)"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_wire!(ComponentId);
string_schema!(ComponentId, "^(pg|s3|snap):[A-Za-z0-9._-]{1,128}$", "component id");

/// A plain name (keys, groups, markers): letters, digits, `.`, `_`, `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, String> {
        if is_name(s) {
            Ok(Name(s.to_owned()))
        } else {
            Err(format!("invalid name {s:?}: 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-'"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_wire!(Name);
string_schema!(Name, "^[A-Za-z0-9._-]{1,128}$", "name: letters, digits, . _ -");

/// An artifact reference: a component id, a slash, then a component-specific path
/// (`pg:main/wal/000000010000000000000003`, `s3:uploads/v/KEY@VERSION`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct ArtifactRef(String);

/// Longest artifact reference (an S3 key may be 1024 bytes, plus a version id).
pub const MAX_ARTIFACT_REF_BYTES: usize = 1600;

impl ArtifactRef {
    pub fn parse(s: &str) -> Result<ArtifactRef, String> {
        let err = || {
            format!(
                "invalid artifact reference {s:?}: expected COMPONENT/PATH, e.g. pg:main/wal/000000010000000000000003"
            )
        };
        let (component, path) = s.split_once('/').ok_or_else(err)?;
        ComponentId::parse(component).map_err(|_| err())?;
        if path.is_empty() || s.len() > MAX_ARTIFACT_REF_BYTES || s.chars().any(char::is_control) {
            return Err(err());
        }
        Ok(ArtifactRef(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn component(&self) -> &str {
        self.0.split_once('/').map_or("", |(c, _)| c)
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_wire!(ArtifactRef);
string_schema!(ArtifactRef, "^(pg|s3|snap):[A-Za-z0-9._-]{1,128}/.+$", "COMPONENT/PATH");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_layout() {
        let id = EventId::new_v7(0x0192_3456_789a, [0xff; 10]);
        let s = id.to_string();
        assert_eq!(&s[..13], "01923456-789a");
        assert_eq!(&s[14..15], "7");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(EventId::parse(&s).unwrap(), id);
        assert!(EventId::parse(&s.to_uppercase()).is_err());
        assert!(EventId::parse("01923456-789a-4fff-bfff-ffffffffffff").is_err(), "version 4 refused");
    }

    #[test]
    fn lsn_prints_like_postgres() {
        for s in ["0/3000028", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/0"] {
            assert_eq!(Lsn::parse(s).unwrap().to_string(), s);
        }
        assert!(Lsn::parse("0/").is_err());
        assert!(Lsn::parse("123456789/0").is_err());
        assert_eq!(Lsn::parse("1/0").unwrap().0, 1 << 32);
    }

    #[test]
    fn names_and_components() {
        assert!(ComponentId::parse("pg:main").is_ok());
        assert!(ComponentId::parse("mysql:main").is_err());
        assert!(ComponentId::parse("s3:").is_err());
        assert!(Name::parse("has space").is_err());
        assert_eq!(ArtifactRef::parse("s3:uploads/v/a b@1").unwrap().component(), "s3:uploads");
        assert!(ArtifactRef::parse("nocomponent").is_err());
    }
}
