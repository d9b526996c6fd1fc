//! C2SP `tlog-checkpoint` bodies signed as C2SP `signed-note`s.
//!
//! A checkpoint body is three lines: origin, tree size (decimal), base64 root
//! hash. A signed note is the body, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`, where the key id is the first
//! four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key) and the Ed25519
//! signature covers the body including its final newline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::keys::{PublicKey, SecretKey, Signature};
use crate::merkle::Hash;

/// Signature algorithm byte for Ed25519 in C2SP signed notes.
const ALG_ED25519: u8 = 0x01;
/// Notes with more signature lines than this are refused (as Go's note package does).
pub const MAX_NOTE_SIGNATURES: usize = 100;
/// Largest note accepted for verification.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Why a note, key or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    KeyName(String),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    VerifierKey(String),
    #[error("the note carries no signature by {name} (key id {key_id})")]
    NoSignatureByKey { name: String, key_id: String },
    #[error("the signature by {name} does not verify: the note was altered or signed by another key")]
    BadSignature { name: String },
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::KeyName(name.to_owned()));
    }
    Ok(())
}

/// The 4-byte signed-note key id of an Ed25519 key named `name`.
pub fn note_key_id(name: &str, public_key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key.0);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A signed-note verifier: a key name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub public_key: PublicKey,
}

impl NoteVerifier {
    pub fn new(name: &str, public_key: PublicKey) -> Result<NoteVerifier, NoteError> {
        check_key_name(name)?;
        Ok(NoteVerifier { name: name.to_owned(), public_key })
    }

    pub fn key_id(&self) -> [u8; 4] {
        note_key_id(&self.name, &self.public_key)
    }

    /// The C2SP vkey text: `name+hex(key id)+base64(0x01 ‖ public key)`.
    pub fn to_vkey(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(&self.public_key.0);
        format!("{}+{}+{}", self.name, hex::encode(self.key_id()), B64.encode(bytes))
    }

    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::VerifierKey("expected name+keyid+base64key".into()));
        };
        check_key_name(name)?;
        let key = B64.decode(key_b64).map_err(|e| NoteError::VerifierKey(format!("key is not base64: {e}")))?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(NoteError::VerifierKey(
                "only Ed25519 keys (algorithm byte 0x01, 32 bytes) are supported".into(),
            ));
        }
        let public_key = PublicKey::from_bytes(&key[1..]).map_err(|e| NoteError::VerifierKey(e.to_string()))?;
        let verifier = NoteVerifier { name: name.to_owned(), public_key };
        if hex::encode(verifier.key_id()) != id_hex {
            return Err(NoteError::VerifierKey(format!(
                "key id {id_hex} does not match the key (computed {})",
                hex::encode(verifier.key_id())
            )));
        }
        Ok(verifier)
    }

    /// Verifies `note` and returns its body text. Signatures by other keys are ignored.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed(format!("larger than {MAX_NOTE_BYTES} bytes")));
        }
        let split =
            note.rfind("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("signature block must end with a newline".into()));
        }
        let my_id = self.key_id();
        let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
        if lines.len() > MAX_NOTE_SIGNATURES {
            return Err(NoteError::Malformed(format!("more than {MAX_NOTE_SIGNATURES} signatures")));
        }
        for line in lines {
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
                NoteError::Malformed(format!("signature line does not start with an em dash: {line:?}"))
            })?;
            let (name, sig_b64) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed(format!("signature line has no signature: {line:?}")))?;
            let raw =
                B64.decode(sig_b64).map_err(|_| NoteError::Malformed(format!("signature is not base64: {line:?}")))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed(format!("signature too short: {line:?}")));
            }
            if name != self.name || raw[..4] != my_id {
                continue;
            }
            let sig: [u8; 64] = raw[4..].try_into().map_err(|_| NoteError::BadSignature { name: self.name.clone() })?;
            return if self.public_key.verify(body.as_bytes(), &Signature(sig)) {
                Ok(body)
            } else {
                Err(NoteError::BadSignature { name: self.name.clone() })
            };
        }
        Err(NoteError::NoSignatureByKey { name: self.name.clone(), key_id: hex::encode(my_id) })
    }
}

/// Signs `body` (which must end in a newline and hold no blank line) as a one-signature note.
pub fn sign_note(name: &str, key: &SecretKey, body: &str) -> Result<String, NoteError> {
    check_key_name(name)?;
    if !body.ends_with('\n') || body.contains("\n\n") || body.is_empty() {
        return Err(NoteError::Malformed("body must be non-empty, end with a newline and hold no blank line".into()));
    }
    let mut raw = note_key_id(name, &key.public_key()).to_vec();
    raw.extend_from_slice(&key.sign(body.as_bytes()).0);
    Ok(format!("{body}\n\u{2014} {name} {}\n", B64.encode(raw)))
}

/// A tlog checkpoint: "the log `origin` has `size` entries and root `root`".
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses a checkpoint body. Extension lines are refused: tidemark writes none.
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let err = |m: &str| NoteError::Checkpoint(m.to_owned());
        let lines: Vec<&str> = body.strip_suffix('\n').ok_or_else(|| err("no final newline"))?.split('\n').collect();
        if lines.len() != 3 {
            return Err(err("expected exactly three lines: origin, size, root"));
        }
        let size: u64 = lines[1].parse().map_err(|_| err("size is not a decimal number"))?;
        if size.to_string() != lines[1] {
            return Err(err("size has leading zeros or a sign"));
        }
        let root: Hash = B64
            .decode(lines[2])
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err("root is not 32 bytes of base64"))?;
        if lines[0].is_empty() {
            return Err(err("empty origin"));
        }
        Ok(Checkpoint { origin: lines[0].to_owned(), size, root })
    }

    pub fn sign(&self, key: &SecretKey) -> Result<String, NoteError> {
        sign_note(&self.origin, key, &self.body())
    }

    /// Verifies a signed checkpoint note with `verifier` and parses it. The
    /// origin must equal the verifier's key name.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint::parse_body(verifier.open(note)?)?;
        if checkpoint.origin != verifier.name {
            return Err(NoteError::Checkpoint(format!(
                "origin {:?} is not the ledger key's name {:?}",
                checkpoint.origin, verifier.name
            )));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key of the C2SP signed-note specification.
    const SPEC_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const SPEC_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SPEC_TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SPEC_NOTE_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn spec_key() -> SecretKey {
        let raw = B64.decode(SPEC_SKEY_B64).unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        SecretKey::from_seed("PeterNeumann", raw[1..].try_into().unwrap())
    }

    #[test]
    fn spec_example_key_id_vkey_and_signature() {
        let key = spec_key();
        let verifier = NoteVerifier::new("PeterNeumann", key.public_key()).unwrap();
        assert_eq!(hex::encode(verifier.key_id()), "c74f20a3");
        assert_eq!(verifier.to_vkey(), SPEC_VKEY);
        assert_eq!(NoteVerifier::from_vkey(SPEC_VKEY).unwrap(), verifier);
        let note = sign_note("PeterNeumann", &key, SPEC_TEXT).unwrap();
        assert_eq!(note, format!("{SPEC_TEXT}\n{SPEC_NOTE_SIG}"));
        assert_eq!(verifier.open(&note).unwrap(), SPEC_TEXT);
    }

    #[test]
    fn checkpoint_sign_open_and_tamper() {
        let key = SecretKey::from_seed("ledger", [7; 32]);
        let cp = Checkpoint { origin: "tidemark.test/ledger".into(), size: 42, root: [9; 32] };
        let note = cp.sign(&key).unwrap();
        let verifier = NoteVerifier::new("tidemark.test/ledger", key.public_key()).unwrap();
        assert_eq!(Checkpoint::open(&note, &verifier).unwrap(), cp);
        let tampered = note.replace("\n42\n", "\n43\n");
        assert_eq!(Checkpoint::open(&tampered, &verifier), Err(NoteError::BadSignature { name: cp.origin.clone() }));
        let other = NoteVerifier::new("tidemark.test/ledger", SecretKey::from_seed("x", [8; 32]).public_key()).unwrap();
        assert!(matches!(Checkpoint::open(&note, &other), Err(NoteError::NoSignatureByKey { .. })));
    }

    #[test]
    fn checkpoint_body_is_strict() {
        assert!(Checkpoint::parse_body("o\n012\nAAAA\n").is_err());
        assert!(Checkpoint::parse_body("o\n1\nroot\nextra\n").is_err());
        let cp = Checkpoint { origin: "o".into(), size: 0, root: crate::merkle::empty_root() };
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
    }
}
