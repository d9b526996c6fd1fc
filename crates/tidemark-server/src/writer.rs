//! The single writer: coalesces concurrent write requests into one ledger
//! batch (one sled batch, one flush) and answers each request separately.
//!
//! Signatures are verified by the request handlers before they queue (see
//! `Ledger::digest`), so the writer only applies the registry and id rules
//! and commits. A refused request is answered and removed, and the rest of
//! the group is committed without it: one writer's bad event never fails
//! another writer's batch.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tidemark_core::event::Kind;
use tidemark_core::{ActorId, PublicKey, SignedEvent, Timestamp};
use tidemark_store::{AppendError, Appended, Digested, Ledger, MAX_BATCH_EVENTS, StoreError};

use crate::metrics::Metrics;

/// Why a write request was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(AppendError),
    #[error("the ledger could not store the batch: {0}")]
    Storage(String),
}

pub struct WriteRequest {
    pub events: Vec<SignedEvent>,
    pub digested: Option<Digested>,
    pub received: Instant,
    pub reply: Sender<Result<Vec<Appended>, WriteError>>,
}

pub type KnownKeys = Arc<RwLock<HashMap<ActorId, PublicKey>>>;

pub struct Writer {
    pub ledger: Arc<RwLock<Ledger>>,
    pub metrics: Arc<Metrics>,
    pub known: KnownKeys,
    pub clock: fn() -> Timestamp,
}

impl Writer {
    /// Runs until every sender is dropped, then returns (the ledger is flushed after every batch).
    pub fn run(self, rx: Receiver<WriteRequest>) {
        let mut carry: Option<WriteRequest> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut total = first.events.len();
            let mut group = vec![first];
            while total < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(r) if total + r.events.len() > MAX_BATCH_EVENTS => {
                        carry = Some(r);
                        break;
                    }
                    Ok(r) => {
                        total += r.events.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        tracing::info!("writer stopped: queue drained");
    }

    fn commit(&self, mut group: Vec<WriteRequest>) {
        while !group.is_empty() {
            let lens: Vec<usize> = group.iter().map(|r| r.events.len()).collect();
            let parts: Vec<Digested> = group
                .iter_mut()
                .map(|r| match r.digested.take() {
                    Some(d) => d,
                    None => {
                        let known = self.known.read().expect("known keys lock");
                        Ledger::digest(r.events.clone(), &|a| known.get(a).copied())
                    }
                })
                .collect();
            let combined = Digested::concat(parts);
            let started = Instant::now();
            let result = self.ledger.write().expect("ledger lock").append_digested(combined, (self.clock)());
            match result {
                Ok(results) => {
                    let total: usize = lens.iter().sum();
                    let new = results.iter().filter(|a| !a.duplicate).count();
                    self.metrics.batch(total);
                    self.metrics.entries_appended.fetch_add(new as u64, std::sync::atomic::Ordering::Relaxed);
                    self.metrics.duplicates.fetch_add((total - new) as u64, std::sync::atomic::Ordering::Relaxed);
                    self.after_commit(&group);
                    tracing::info!(
                        requests = group.len(),
                        events = total,
                        new,
                        commit_ms = started.elapsed().as_millis() as u64,
                        "batch committed"
                    );
                    let mut results = results.into_iter();
                    for (r, n) in group.into_iter().zip(lens) {
                        self.metrics.requests_appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.metrics.latency(r.received.elapsed().as_secs_f64());
                        let _ = r.reply.send(Ok(results.by_ref().take(n).collect()));
                    }
                    return;
                }
                Err(StoreError::Refused(e)) => {
                    let (k, local) = locate(&lens, e.index);
                    let bad = group.remove(k);
                    self.metrics.refused(e.reason.code());
                    tracing::warn!(reason = e.reason.code(), detail = %e.reason, "write request refused");
                    let _ = bad.reply.send(Err(WriteError::Refused(AppendError { index: local, ..e })));
                }
                Err(other) => {
                    tracing::error!(error = %other, "append failed");
                    for r in group {
                        self.metrics.refused("storage");
                        let _ = r.reply.send(Err(WriteError::Storage(other.to_string())));
                    }
                    return;
                }
            }
        }
    }

    fn after_commit(&self, group: &[WriteRequest]) {
        let ledger = self.ledger.read().expect("ledger lock");
        let (cp, _) = match ledger.latest_checkpoint() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the checkpoint just written");
                return;
            }
        };
        self.metrics.tree_size.store(cp.size, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .last_checkpoint_micros
            .store((self.clock)().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        let identity_changed = group
            .iter()
            .flat_map(|r| &r.events)
            .any(|e| matches!(e.event.kind(), Kind::KeyEnrolled | Kind::KeyRevoked));
        if identity_changed {
            *self.known.write().expect("known keys lock") = ledger.known_keys();
        }
    }
}

/// Which request of a group, and which event in it, a combined index names.
fn locate(lens: &[usize], mut index: usize) -> (usize, usize) {
    for (k, n) in lens.iter().enumerate() {
        if index < *n {
            return (k, index);
        }
        index -= n;
    }
    (lens.len() - 1, index)
}

#[cfg(test)]
mod tests {
    #[test]
    fn locate_maps_combined_indices_to_requests() {
        assert_eq!(super::locate(&[3, 2, 4], 0), (0, 0));
        assert_eq!(super::locate(&[3, 2, 4], 3), (1, 0));
        assert_eq!(super::locate(&[3, 2, 4], 8), (2, 3));
    }
}
