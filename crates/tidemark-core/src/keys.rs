//! Ed25519 keys, actor ids and event signatures.
//!
//! An *actor id* names an event's signer: the first 16 bytes of
//! blake3(public key), in lowercase hex. Randomness is an input: keys are
//! made from a 32-byte seed the caller supplies.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Domain separation prefix of every event signature.
pub const EVENT_SIGNATURE_CONTEXT: &[u8] = b"tidemark-event-v1\n";

/// Why a key, id or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("invalid public key: {0}")]
    PublicKey(String),
    #[error("invalid signature encoding: {0}")]
    Signature(String),
    #[error("invalid actor id {0:?}: expected 32 lowercase hex characters")]
    ActorId(String),
    #[error("invalid key file: {0}")]
    KeyFile(String),
}

/// The id of an event's signer: blake3(public key)[..16].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct ActorId(pub [u8; 16]);

impl ActorId {
    pub fn of(public_key: &PublicKey) -> ActorId {
        let digest = blake3::hash(&public_key.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_bytes()[..16]);
        ActorId(id)
    }

    pub fn parse(s: &str) -> Result<ActorId, KeyError> {
        let mut id = [0u8; 16];
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(KeyError::ActorId(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut id).map_err(|_| KeyError::ActorId(s.to_owned()))?;
        Ok(ActorId(id))
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

impl Serialize for ActorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ActorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ActorId::parse(&s).map_err(serde::de::Error::custom)
    }
}

crate::string_schema!(ActorId, "^[0-9a-f]{32}$", "first 16 bytes of blake3(public key), hex");

/// An Ed25519 public key (32 bytes; base64 in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| KeyError::PublicKey(format!("expected 32 bytes, got {}", bytes.len())))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|e| KeyError::PublicKey(e.to_string()))?;
        if key.is_weak() {
            return Err(KeyError::PublicKey("a small-order (weak) key cannot be trusted".into()));
        }
        Ok(PublicKey(arr))
    }

    pub fn from_base64(s: &str) -> Result<PublicKey, KeyError> {
        let bytes = B64.decode(s).map_err(|e| KeyError::PublicKey(format!("not base64: {e}")))?;
        PublicKey::from_bytes(&bytes)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn actor_id(&self) -> ActorId {
        ActorId::of(self)
    }

    /// The dalek verifying key. Construction already checked the point.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_bytes(&self.0).expect("PublicKey is only built from valid points")
    }

    /// Verifies one signature over `message` (strict: rejects small-order keys and malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.verifying_key().verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

crate::string_schema!(
    PublicKey,
    "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
    "Ed25519 public key, 32 bytes, standard base64"
);

/// An Ed25519 signature (64 bytes; base64 in JSON).
#[derive(Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn from_base64(s: &str) -> Result<Signature, KeyError> {
        let bytes = B64.decode(s).map_err(|e| KeyError::Signature(format!("not base64: {e}")))?;
        let arr: [u8; 64] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Signature(format!("expected 64 bytes, got {}", bytes.len())))?;
        Ok(Signature(arr))
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Signature::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

crate::string_schema!(Signature, "^[A-Za-z0-9+/]{85}[AQgw]==$", "Ed25519 signature, 64 bytes, standard base64");

/// A private signing key with the human name it was created under.
pub struct SecretKey {
    pub name: String,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, {})", self.name, self.actor_id())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    r#type: String,
    name: String,
    actor: ActorId,
    public_key: PublicKey,
    secret_key: String,
}

/// The public half of a key file, as `tidemark key new` writes it next to the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    pub r#type: String,
    pub name: String,
    pub actor: ActorId,
    pub public_key: PublicKey,
}

const SECRET_KEY_FILE_TYPE: &str = "tidemark-secret-key-v1";
const PUBLIC_KEY_FILE_TYPE: &str = "tidemark-public-key-v1";

impl SecretKey {
    /// Builds a key from 32 bytes of seed the caller drew from a CSPRNG.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> SecretKey {
        SecretKey { name: name.to_owned(), signing: SigningKey::from_bytes(&seed) }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn actor_id(&self) -> ActorId {
        self.public_key().actor_id()
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// The key file text (JSON). Callers write it with 0600 permissions.
    pub fn to_file_text(&self) -> String {
        let file = SecretKeyFile {
            r#type: SECRET_KEY_FILE_TYPE.into(),
            name: self.name.clone(),
            actor: self.actor_id(),
            public_key: self.public_key(),
            secret_key: B64.encode(self.signing.to_bytes()),
        };
        serde_json::to_string_pretty(&file).expect("key file serialises") + "\n"
    }

    pub fn public_file(&self) -> PublicKeyFile {
        PublicKeyFile {
            r#type: PUBLIC_KEY_FILE_TYPE.into(),
            name: self.name.clone(),
            actor: self.actor_id(),
            public_key: self.public_key(),
        }
    }

    pub fn from_file_text(text: &str) -> Result<SecretKey, KeyError> {
        let file: SecretKeyFile = serde_json::from_str(text)
            .map_err(|e| KeyError::KeyFile(format!("not a tidemark secret key file: {e}")))?;
        if file.r#type != SECRET_KEY_FILE_TYPE {
            return Err(KeyError::KeyFile(format!("type is {:?}, expected {SECRET_KEY_FILE_TYPE:?}", file.r#type)));
        }
        let seed: [u8; 32] = B64
            .decode(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KeyError::KeyFile("secret_key must be 32 bytes of base64".into()))?;
        let key = SecretKey::from_seed(&file.name, seed);
        if key.public_key() != file.public_key || key.actor_id() != file.actor {
            return Err(KeyError::KeyFile("public_key or actor does not match secret_key: the file is damaged".into()));
        }
        Ok(key)
    }
}

impl PublicKeyFile {
    /// Reads a public key file; a secret key file is accepted too (its public half is used).
    pub fn from_file_text(text: &str) -> Result<PublicKeyFile, KeyError> {
        if let Ok(secret) = SecretKey::from_file_text(text) {
            return Ok(secret.public_file());
        }
        let file: PublicKeyFile = serde_json::from_str(text)
            .map_err(|e| KeyError::KeyFile(format!("not a tidemark public key file: {e}")))?;
        if file.r#type != PUBLIC_KEY_FILE_TYPE {
            return Err(KeyError::KeyFile(format!("type is {:?}, expected {PUBLIC_KEY_FILE_TYPE:?}", file.r#type)));
        }
        if file.public_key.actor_id() != file.actor {
            return Err(KeyError::KeyFile("actor does not match public_key: the file is damaged".into()));
        }
        Ok(file)
    }

    pub fn to_file_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("key file serialises") + "\n"
    }
}

/// The bytes an event signature covers: the context line, then the canonical event.
pub fn event_signing_message(canonical_event: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(EVENT_SIGNATURE_CONTEXT.len() + canonical_event.len());
    message.extend_from_slice(EVENT_SIGNATURE_CONTEXT);
    message.extend_from_slice(canonical_event);
    message
}

/// Verifies many (message, signature, key) triples at once. `true` only if all hold.
/// On `false`, call [`PublicKey::verify`] per item to find the culprit.
pub fn verify_batch(messages: &[&[u8]], signatures: &[Signature], keys: &[PublicKey]) -> bool {
    if messages.is_empty() {
        return true;
    }
    let sigs: Vec<ed25519_dalek::Signature> =
        signatures.iter().map(|s| ed25519_dalek::Signature::from_bytes(&s.0)).collect();
    let vks: Vec<VerifyingKey> = keys.iter().map(PublicKey::verifying_key).collect();
    // Batch verification accepts what single strict verification might refuse
    // (small-order keys are refused at enrolment; see PublicKey::from_bytes) so
    // the batch is a fast path and disagreements fall back to strict checks.
    ed25519_dalek::verify_batch(messages, &sigs, &vks).is_ok()
}

/// The positions of the signatures that do not verify, in order: one batch
/// verification first (the fast path), and only when it fails, strict
/// single verification of each (the batch may accept what strict checks
/// refuse, and a failed batch does not say which signature is bad). The
/// one signature check of appends, `verify` and `verify-export`.
pub fn failing_signatures(messages: &[&[u8]], signatures: &[Signature], keys: &[PublicKey]) -> Vec<usize> {
    if verify_batch(messages, signatures, keys) {
        return Vec::new();
    }
    (0..messages.len()).filter(|&i| !keys[i].verify(messages[i], &signatures[i])).collect()
}

/// The first signature that does not verify (see [`failing_signatures`]).
pub fn first_failing_signature(messages: &[&[u8]], signatures: &[Signature], keys: &[PublicKey]) -> Option<usize> {
    if verify_batch(messages, signatures, keys) {
        return None;
    }
    (0..messages.len()).find(|&i| !keys[i].verify(messages[i], &signatures[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_names_exactly_the_bad_signatures() {
        let keys: Vec<SecretKey> = (1..=4).map(key).collect();
        let msgs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let pubs: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert!(failing_signatures(&refs, &sigs, &pubs).is_empty());
        sigs.swap(1, 3);
        assert_eq!(failing_signatures(&refs, &sigs, &pubs), vec![1, 3]);
        assert_eq!(first_failing_signature(&refs, &sigs, &pubs), Some(1));
    }

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed("test", [n; 32])
    }

    #[test]
    fn actor_id_is_blake3_prefix() {
        let k = key(1);
        let pk = k.public_key();
        assert_eq!(k.actor_id().to_string(), hex::encode(&blake3::hash(&pk.0).as_bytes()[..16]));
        assert_eq!(ActorId::parse(&k.actor_id().to_string()).unwrap(), k.actor_id());
        assert!(ActorId::parse(&k.actor_id().to_string().to_uppercase()).is_err());
    }

    #[test]
    fn key_file_round_trip_and_damage_detected() {
        let k = key(2);
        let text = k.to_file_text();
        let back = SecretKey::from_file_text(&text).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let damaged = text.replace(&k.actor_id().to_string(), &key(3).actor_id().to_string());
        assert!(SecretKey::from_file_text(&damaged).is_err());
        let public = PublicKeyFile::from_file_text(&k.public_file().to_file_text()).unwrap();
        assert_eq!(public.public_key, k.public_key());
    }

    #[test]
    fn batch_and_single_verification_agree() {
        let keys: Vec<SecretKey> = (1..=5).map(key).collect();
        let msgs: Vec<Vec<u8>> = (0..5).map(|i| event_signing_message(format!("{{\"n\":{i}}}").as_bytes())).collect();
        let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert!(verify_batch(&refs, &sigs, &pks));
        let mut bad = sigs.clone();
        bad[3].0[0] ^= 1;
        assert!(!verify_batch(&refs, &bad, &pks));
        assert!(!pks[3].verify(refs[3], &bad[3]));
        assert!(pks[2].verify(refs[2], &bad[2]));
    }
}
