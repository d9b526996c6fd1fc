//! The key registry as of an entry: who may sign what (DESIGN §5).
//!
//! Pure state, advanced one event at a time in log order. Both the ledger
//! (before it writes) and every verifier (the store's `verify`, an auditor's
//! export check) run the same rules through [`Registry::admit`].

use std::collections::BTreeMap;

use crate::event::{Event, EventBody, Kind, Role};
use crate::keys::{ActorId, PublicKey};
use crate::types::Name;

/// Why a signer may not append an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("unknown key {actor}: enrol it with `tidemark key enroll` (signed by an admin) first")]
    UnknownKey { actor: ActorId },
    #[error("key {actor} ({name}) was revoked at entry {revoked_at_seq}; it may sign nothing after that")]
    RevokedKey { actor: ActorId, name: String, revoked_at_seq: u64 },
    #[error("key {actor} ({name}) has roles [{roles}], none of which may append {kind}")]
    RoleMayNotAppend { actor: ActorId, name: String, roles: String, kind: &'static str },
    #[error("the first entry must be ledger.genesis signed by its admin key")]
    GenesisFirst,
    #[error("the ledger already has its genesis; ledger.genesis is only valid as entry 0")]
    GenesisAgain,
    #[error("ledger.genesis must be signed by the admin key it names")]
    GenesisSigner,
    #[error("key {actor} is already enrolled (as {name}); revoke it and enrol a new key to change roles")]
    AlreadyEnrolled { actor: ActorId, name: String },
    #[error("cannot revoke {actor}: {reason}")]
    CannotRevoke { actor: ActorId, reason: String },
}

/// One enrolled key.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    pub actor: ActorId,
    pub public_key: PublicKey,
    pub name: Name,
    pub roles: Vec<Role>,
    pub enrolled_at_seq: u64,
    pub revoked_at_seq: Option<u64>,
}

impl KeyRecord {
    pub fn roles_text(&self) -> String {
        self.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
    }

    /// Rule: this key may append `kind` — unrevoked, with a role whose category allows it.
    pub fn may_append(&self, kind: Kind) -> Result<(), AuthError> {
        if let Some(revoked_at_seq) = self.revoked_at_seq {
            return Err(AuthError::RevokedKey { actor: self.actor, name: self.name.to_string(), revoked_at_seq });
        }
        if !self.roles.iter().any(|r| kind.category().allows(*r)) {
            return Err(AuthError::RoleMayNotAppend {
                actor: self.actor,
                name: self.name.to_string(),
                roles: self.roles_text(),
                kind: kind.name(),
            });
        }
        Ok(())
    }
}

/// Every key ever enrolled, with the ledger's own identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Registry {
    keys: BTreeMap<ActorId, KeyRecord>,
    /// (origin, ledger public key) from ledger.genesis.
    ledger: Option<(String, PublicKey)>,
}

impl Registry {
    pub fn get(&self, actor: &ActorId) -> Option<&KeyRecord> {
        self.keys.get(actor)
    }

    pub fn keys(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values()
    }

    /// The ledger's checkpoint origin and public key, once genesis is recorded.
    pub fn ledger_identity(&self) -> Option<(&str, &PublicKey)> {
        self.ledger.as_ref().map(|(o, k)| (o.as_str(), k))
    }

    /// Checks that `event`, to be entry `seq`, may be appended by its actor,
    /// and on success applies its effect on the registry. Returns the public
    /// key the signature must verify against. Nothing changes on error.
    pub fn admit(&mut self, seq: u64, event: &Event) -> Result<PublicKey, AuthError> {
        if let EventBody::LedgerGenesis(g) = &event.body {
            if seq != 0 {
                return Err(AuthError::GenesisAgain);
            }
            if event.actor != g.admin_public_key.actor_id() {
                return Err(AuthError::GenesisSigner);
            }
            let record = KeyRecord {
                actor: event.actor,
                public_key: g.admin_public_key,
                name: g.admin_name.clone(),
                roles: vec![Role::Admin],
                enrolled_at_seq: 0,
                revoked_at_seq: None,
            };
            self.keys.insert(event.actor, record);
            self.ledger = Some((g.origin.clone(), g.ledger_public_key));
            return Ok(g.admin_public_key);
        }
        if seq == 0 {
            return Err(AuthError::GenesisFirst);
        }
        let signer = self.keys.get(&event.actor).ok_or(AuthError::UnknownKey { actor: event.actor })?;
        signer.may_append(event.kind())?;
        let public_key = signer.public_key;
        match &event.body {
            EventBody::KeyEnrolled(k) => {
                let actor = k.public_key.actor_id();
                if let Some(existing) = self.keys.get(&actor) {
                    return Err(AuthError::AlreadyEnrolled { actor, name: existing.name.to_string() });
                }
                if self.ledger.as_ref().is_some_and(|(_, lk)| *lk == k.public_key) {
                    return Err(AuthError::AlreadyEnrolled {
                        actor,
                        name: "the ledger key, which signs only checkpoints".into(),
                    });
                }
                self.keys.insert(
                    actor,
                    KeyRecord {
                        actor,
                        public_key: k.public_key,
                        name: k.name.clone(),
                        roles: k.roles.clone(),
                        enrolled_at_seq: seq,
                        revoked_at_seq: None,
                    },
                );
            }
            EventBody::KeyRevoked(r) => {
                let target = self.keys.get(&r.key).ok_or_else(|| AuthError::CannotRevoke {
                    actor: r.key,
                    reason: "no such key is enrolled".into(),
                })?;
                if let Some(at) = target.revoked_at_seq {
                    return Err(AuthError::CannotRevoke {
                        actor: r.key,
                        reason: format!("already revoked at entry {at}"),
                    });
                }
                let is_admin = target.roles.contains(&Role::Admin);
                let other_admins = self
                    .keys
                    .values()
                    .filter(|k| k.actor != r.key && k.revoked_at_seq.is_none() && k.roles.contains(&Role::Admin))
                    .count();
                if is_admin && other_admins == 0 {
                    return Err(AuthError::CannotRevoke {
                        actor: r.key,
                        reason: "it is the last admin key; enrol another admin first or the ledger could never be administered again".into(),
                    });
                }
                self.keys.get_mut(&r.key).expect("checked above").revoked_at_seq = Some(seq);
            }
            _ => {}
        }
        Ok(public_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, KeyEnrolled, KeyRevoked, LedgerGenesis};
    use crate::keys::SecretKey;
    use crate::time::Timestamp;
    use crate::types::EventId;
    use serde_json::json;

    fn ev(actor: &SecretKey, body: EventBody) -> Event {
        Event { id: EventId::new_v7(1, [0; 10]), occurred_at: Timestamp::EPOCH, actor: actor.actor_id(), body }
    }

    fn setup() -> (Registry, SecretKey, SecretKey) {
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let ledger = SecretKey::from_seed("ledger", [2; 32]);
        let mut r = Registry::default();
        let genesis = EventBody::LedgerGenesis(LedgerGenesis {
            origin: "tidemark.test/l".into(),
            ledger_public_key: ledger.public_key(),
            admin_public_key: admin.public_key(),
            admin_name: Name::parse("admin").unwrap(),
        });
        r.admit(0, &ev(&admin, genesis)).unwrap();
        (r, admin, ledger)
    }

    fn enrol(key: &SecretKey, roles: Vec<Role>) -> EventBody {
        EventBody::KeyEnrolled(KeyEnrolled {
            public_key: key.public_key(),
            name: Name::parse(&key.name).unwrap(),
            roles,
        })
    }

    fn wal(actor: &SecretKey) -> Event {
        let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
        Event::from_draft(draft, actor.actor_id(), EventId::new_v7(1, [0; 10]), Timestamp::EPOCH).unwrap()
    }

    #[test]
    fn rule_genesis_only_first() {
        let (mut r, admin, ledger) = setup();
        let again = EventBody::LedgerGenesis(LedgerGenesis {
            origin: "x".into(),
            ledger_public_key: ledger.public_key(),
            admin_public_key: admin.public_key(),
            admin_name: Name::parse("a").unwrap(),
        });
        assert_eq!(r.admit(1, &ev(&admin, again)), Err(AuthError::GenesisAgain));
        assert_eq!(Registry::default().admit(0, &wal(&admin)), Err(AuthError::GenesisFirst));
    }

    #[test]
    fn rule_unknown_revoked_and_role() {
        let (mut r, admin, _) = setup();
        let agent = SecretKey::from_seed("agent", [3; 32]);
        let op = SecretKey::from_seed("op", [4; 32]);
        assert!(matches!(r.admit(1, &wal(&agent)), Err(AuthError::UnknownKey { .. })));
        r.admit(1, &ev(&admin, enrol(&agent, vec![Role::Agent]))).unwrap();
        r.admit(2, &ev(&admin, enrol(&op, vec![Role::Operator]))).unwrap();
        assert_eq!(r.admit(3, &wal(&agent)), Ok(agent.public_key()));
        assert!(matches!(r.admit(4, &wal(&op)), Err(AuthError::RoleMayNotAppend { kind: "pg.position", .. })));
        assert!(matches!(
            r.admit(4, &ev(&agent, enrol(&op, vec![Role::Admin]))),
            Err(AuthError::RoleMayNotAppend { .. })
        ));
        let revoke = EventBody::KeyRevoked(KeyRevoked { key: agent.actor_id(), reason: "laptop lost".into() });
        r.admit(5, &ev(&admin, revoke.clone())).unwrap();
        assert!(matches!(r.admit(6, &wal(&agent)), Err(AuthError::RevokedKey { revoked_at_seq: 5, .. })));
        assert!(matches!(r.admit(6, &ev(&admin, revoke)), Err(AuthError::CannotRevoke { .. })));
        assert!(matches!(
            r.admit(6, &ev(&admin, enrol(&agent, vec![Role::Agent]))),
            Err(AuthError::AlreadyEnrolled { .. })
        ));
    }

    #[test]
    fn rule_last_admin_cannot_be_revoked() {
        let (mut r, admin, _) = setup();
        let revoke = EventBody::KeyRevoked(KeyRevoked { key: admin.actor_id(), reason: "oops".into() });
        let before = r.clone();
        assert!(matches!(r.admit(1, &ev(&admin, revoke)), Err(AuthError::CannotRevoke { .. })));
        assert_eq!(r, before, "a refused event changes nothing");
    }
}
