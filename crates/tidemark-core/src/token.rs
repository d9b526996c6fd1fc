//! Read credentials: bearer tokens signed by an enrolled key.
//!
//! A token is `tmk1.<payload>.<signature>`, both parts unpadded URL-safe
//! base64. The payload is canonical JSON `{"actor":..,"expires_at":..,
//! "issued_at":..,"nonce":..}`; the signature is Ed25519 by the actor's key
//! over `"tidemark-token-v1\n" ‖ payload bytes`. The server needs no token
//! store: a token is valid while it has not expired and its key is enrolled
//! and not revoked, so revoking the key revokes all of its tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use crate::canonical::to_canonical_vec;
use crate::keys::{ActorId, PublicKey, SecretKey, Signature};
use crate::time::Timestamp;

pub const TOKEN_PREFIX: &str = "tmk1";
const TOKEN_CONTEXT: &[u8] = b"tidemark-token-v1\n";
/// Longest lifetime a token may claim.
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 90 * 24 * 3600;
/// Longest token accepted (bounds the work of parsing a header).
pub const MAX_TOKEN_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    pub actor: ActorId,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Random, so two tokens issued in the same microsecond differ.
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed token: expected tmk1.<payload>.<signature>")]
    Malformed,
    #[error("the token expired at {0}; issue a new one with `tidemark token issue`")]
    Expired(Timestamp),
    #[error("the token is not valid before {0} (check the clocks)")]
    NotYetValid(Timestamp),
    #[error("the token's lifetime exceeds the maximum of {MAX_TOKEN_LIFETIME_SECONDS} s")]
    TooLong,
    #[error("the token's signature does not verify with its actor's key")]
    BadSignature,
}

/// Issues a token for `key`, valid from `now` for `lifetime_seconds`.
pub fn issue(key: &SecretKey, now: Timestamp, lifetime_seconds: i64, nonce: [u8; 12]) -> Result<String, TokenError> {
    if !(1..=MAX_TOKEN_LIFETIME_SECONDS).contains(&lifetime_seconds) {
        return Err(TokenError::TooLong);
    }
    let claims = TokenClaims {
        actor: key.actor_id(),
        issued_at: now,
        expires_at: now.saturating_add_micros(lifetime_seconds * 1_000_000),
        nonce: hex::encode(nonce),
    };
    let payload = to_canonical_vec(&claims).expect("claims hold no floats");
    let mut message = TOKEN_CONTEXT.to_vec();
    message.extend_from_slice(&payload);
    let sig = key.sign(&message);
    Ok(format!("{TOKEN_PREFIX}.{}.{}", B64URL.encode(&payload), B64URL.encode(sig.0)))
}

/// Parses a token without checking it: the claims say whose key to check it with.
pub fn parse(token: &str) -> Result<(TokenClaims, Vec<u8>, Signature), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(TOKEN_PREFIX), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let payload = B64URL.decode(payload).map_err(|_| TokenError::Malformed)?;
    let sig: [u8; 64] = B64URL.decode(sig).ok().and_then(|s| s.try_into().ok()).ok_or(TokenError::Malformed)?;
    let claims: TokenClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    Ok((claims, payload, Signature(sig)))
}

/// Checks a parsed token against its actor's key at time `now`.
pub fn check(
    claims: &TokenClaims,
    payload: &[u8],
    sig: &Signature,
    key: &PublicKey,
    now: Timestamp,
) -> Result<(), TokenError> {
    let mut message = TOKEN_CONTEXT.to_vec();
    message.extend_from_slice(payload);
    if !key.verify(&message, sig) {
        return Err(TokenError::BadSignature);
    }
    if claims.expires_at.as_micros() - claims.issued_at.as_micros() > MAX_TOKEN_LIFETIME_SECONDS * 1_000_000 {
        return Err(TokenError::TooLong);
    }
    // Five minutes of clock skew between issuer and server.
    if claims.issued_at.as_micros() > now.as_micros() + 300_000_000 {
        return Err(TokenError::NotYetValid(claims.issued_at));
    }
    if now >= claims.expires_at {
        return Err(TokenError::Expired(claims.expires_at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_parse_check_and_refusals() {
        let key = SecretKey::from_seed("reader", [5; 32]);
        let now = Timestamp::from_unix_seconds(1_790_000_000);
        let token = issue(&key, now, 3600, [1; 12]).unwrap();
        let (claims, payload, sig) = parse(&token).unwrap();
        assert_eq!(claims.actor, key.actor_id());
        assert!(check(&claims, &payload, &sig, &key.public_key(), now).is_ok());
        let later = now.saturating_add_micros(3600 * 1_000_000);
        assert!(matches!(check(&claims, &payload, &sig, &key.public_key(), later), Err(TokenError::Expired(_))));
        let other = SecretKey::from_seed("x", [6; 32]).public_key();
        assert_eq!(check(&claims, &payload, &sig, &other, now), Err(TokenError::BadSignature));
        let mut tampered = token.clone();
        tampered.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
        assert!(
            parse(&tampered).is_err() || {
                let (c, p, s) = parse(&tampered).unwrap();
                check(&c, &p, &s, &key.public_key(), now).is_err()
            }
        );
        assert_eq!(parse("tmk1.x"), Err(TokenError::Malformed));
        assert!(issue(&key, now, MAX_TOKEN_LIFETIME_SECONDS + 1, [0; 12]).is_err());
    }
}
