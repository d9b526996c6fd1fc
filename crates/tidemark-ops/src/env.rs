//! What the outside world gives orchestration: the time and fresh event ids.

use tidemark_core::event::{Draft, EventBody};
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};

use crate::OpsError;

/// The clock and the id generator, injected (the CLI passes the system's).
pub trait Env: Sync {
    fn now(&self) -> Timestamp;
    fn new_event_id(&self) -> EventId;

    /// A new event of `body` signed by `key`: the typed way to record a
    /// fact (a body that breaks its rules, or an event over the size
    /// limit, is refused here, before anything is sent).
    fn sign(&self, key: &SecretKey, body: EventBody) -> Result<SignedEvent, OpsError> {
        Draft { id: self.new_event_id(), occurred_at: self.now(), body }.sign(key).map_err(OpsError::BadEvent)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A fixed clock that ticks a microsecond per reading, and counting ids.
    pub struct FixedEnv {
        pub micros: AtomicU64,
        pub ids: AtomicU64,
    }

    impl FixedEnv {
        pub fn at(t: Timestamp) -> FixedEnv {
            FixedEnv { micros: AtomicU64::new(t.as_micros() as u64), ids: AtomicU64::new(1) }
        }
    }

    impl Env for FixedEnv {
        fn now(&self) -> Timestamp {
            Timestamp::from_micros(self.micros.fetch_add(1, Ordering::Relaxed) as i64)
        }

        fn new_event_id(&self) -> EventId {
            let n = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut random = [0u8; 10];
            random[2..].copy_from_slice(&n.to_be_bytes());
            EventId::new_v7(1_790_000_000_000, random)
        }
    }
}

#[cfg(test)]
mod tests {
    use tidemark_core::event::{EventBody, KeyRevoked};

    use super::testing::FixedEnv;
    use super::*;

    #[test]
    fn an_event_takes_its_time_and_id_from_the_env_and_breaks_no_body_rule() {
        let env = FixedEnv::at(Timestamp::from_unix_seconds(1_790_000_000));
        let key = SecretKey::from_seed("admin", [1; 32]);
        let body = |reason: &str| EventBody::KeyRevoked(KeyRevoked { key: key.actor_id(), reason: reason.into() });
        let signed = env.sign(&key, body("rotated")).unwrap();
        assert_eq!(signed.event.occurred_at, Timestamp::from_unix_seconds(1_790_000_000));
        assert_eq!(signed.event.actor, key.actor_id());
        assert!(key.public_key().verify(&signed.event.signing_message(), &signed.sig));
        let refused = env.sign(&key, body("")).unwrap_err();
        assert!(matches!(refused, OpsError::BadEvent(_)), "{refused}");
    }
}
