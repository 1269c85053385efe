//! The `Idempotency-Key` layer of `POST /v1/actions/{action}`
//! (draft-ietf-httpapi-idempotency-key-header), the same for every action:
//!
//! - the fingerprint is the SHA-256 of the action name and the canonical JSON body
//!   (object keys sorted, insignificant whitespace dropped), so a re-serialised body
//!   still matches;
//! - keys are scoped to the calling API key;
//! - the first request's final response is stored (4xx errors included) and replayed;
//!   5xx, 429 and store outages release the key instead so that a retry really runs
//!   again;
//! - same key, other body: 422 `idempotency_key_reused`; same key while the first
//!   request runs: 409 `idempotency_key_in_flight`; records live `idempotency_ttl_secs`.
//!
//! The layer knows responses only as [`StoredResponse`]s, so HTTP stays in `api`.

use std::{future::Future, time::Duration};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    apikeys::Principal,
    error::{ApiError, ErrorCode},
    store::{IdempotencyRecord, Reservation, Store, StoredResponse},
};

/// Fingerprint of an action request.
pub fn fingerprint(action: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(action.as_bytes());
    h.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        // serde_json's map is ordered by key, so this is canonical.
        Ok(v) => h.update(v.to_string().as_bytes()),
        Err(_) => h.update(body),
    }
    hex::encode(h.finalize())
}

/// A response the layer can keep for replay.
pub trait Recordable: Sized {
    /// The response, still ready to answer, and its record; `None` when it could not be
    /// read whole (the key is then released).
    fn record(self) -> impl Future<Output = (Self, Option<StoredResponse>)>;
}

/// What a request run through [`Idempotency::run_once`] answers.
#[derive(Debug)]
pub enum Outcome<R> {
    /// The action ran for this request.
    Ran(R),
    /// An earlier request with the same key and body ran it; this is its stored answer.
    Replayed(StoredResponse),
}

/// One action request under the idempotency layer: where records live, and its key if
/// it has one.
pub struct Idempotency<'a> {
    store: &'a dyn Store,
    ttl: Duration,
    claim: Option<Claim>,
}

/// A request's key, the record it names (scoped to the caller) and the request's
/// fingerprint.
struct Claim {
    key: String,
    record_key: String,
    fingerprint: String,
}

impl<'a> Idempotency<'a> {
    /// The layer for `caller` calling `action` with `body` and `key`, its records kept in
    /// `store` for `ttl`.
    pub fn new(
        store: &'a dyn Store,
        ttl: Duration,
        caller: &Principal,
        key: Option<String>,
        action: &str,
        body: &[u8],
    ) -> Self {
        let claim = key.map(|key| Claim {
            record_key: format!(
                "action:{}:{}",
                caller.id,
                hex::encode(Sha256::digest(key.as_bytes()))
            ),
            fingerprint: fingerprint(action, body),
            key,
        });
        Self { store, ttl, claim }
    }

    /// Runs the action (`run`, given the key to pass upstream) at most once per key:
    /// without a key it just runs; with one it claims the key, replays what an earlier
    /// request stored or refuses while that request still runs, and records the result.
    pub async fn run_once<R, Fut>(
        self,
        run: impl FnOnce(Option<String>) -> Fut,
    ) -> Result<Outcome<R>, ApiError>
    where
        R: Recordable,
        Fut: Future<Output = R>,
    {
        let (store, ttl) = (self.store, self.ttl);
        let Some(Claim {
            key,
            record_key,
            fingerprint: fp,
        }) = self.claim
        else {
            return Ok(Outcome::Ran(run(None).await));
        };
        match store.idempotency_reserve(&record_key, &fp, ttl).await? {
            Reservation::Existing(record) if record.fingerprint != fp => Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request; use a new key for a new request",
            )),
            Reservation::Existing(IdempotencyRecord { response: None, .. }) => Err(ApiError::new(
                ErrorCode::IdempotencyKeyInFlight,
                "a request with this Idempotency-Key is still running; retry shortly",
            )
            .with_retry_after(1)),
            Reservation::Existing(IdempotencyRecord {
                response: Some(stored),
                ..
            }) => Ok(Outcome::Replayed(stored)),
            Reservation::Reserved => {
                let (response, stored) = run(Some(key)).await.record().await;
                let settled = match stored {
                    // A retryable answer (408, 429, 5xx) is not final: a retry must really run again.
                    Some(stored) if !crate::upstream::is_retryable(stored.status) => {
                        let record = IdempotencyRecord {
                            fingerprint: fp,
                            response: Some(stored),
                        };
                        store.idempotency_complete(&record_key, &record, ttl).await
                    }
                    _ => store.idempotency_release(&record_key).await,
                };
                if let Err(e) = settled {
                    tracing::warn!(error = %e, "could not record the idempotent response");
                }
                Ok(Outcome::Ran(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::memory::MemoryStore;

    /// A response that is only a status.
    #[derive(Debug, PartialEq)]
    struct Status(u16);

    impl Recordable for Status {
        async fn record(self) -> (Status, Option<StoredResponse>) {
            let stored = StoredResponse {
                status: self.0,
                headers: vec![],
                body: String::new(),
            };
            (self, Some(stored))
        }
    }

    fn caller(id: &str) -> Principal {
        Principal {
            id: id.into(),
            name: id.into(),
            scopes: Default::default(),
        }
    }

    /// Runs `action` with `body` as `who` under `key`, answering `status`; counts runs.
    async fn call(
        store: &MemoryStore,
        runs: &AtomicUsize,
        who: &str,
        key: Option<&str>,
        body: &str,
        status: u16,
    ) -> Result<Outcome<Status>, ApiError> {
        let ttl = Duration::from_secs(60);
        let once = Idempotency::new(
            store,
            ttl,
            &caller(who),
            key.map(str::to_string),
            "a",
            body.as_bytes(),
        );
        once.run_once(|_| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Status(status)
        })
        .await
    }

    #[tokio::test]
    async fn a_final_answer_is_replayed_and_a_retryable_one_runs_again() {
        let (store, runs) = (MemoryStore::new(0), AtomicUsize::new(0));
        let first = call(&store, &runs, "k1", Some("x"), "{}", 201).await;
        assert!(matches!(first, Ok(Outcome::Ran(Status(201)))));
        let again = call(&store, &runs, "k1", Some("x"), "{ }", 500).await;
        assert!(matches!(
            again,
            Ok(Outcome::Replayed(StoredResponse { status: 201, .. }))
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        for status in [503, 429] {
            call(
                &store,
                &runs,
                "k1",
                Some(&format!("y{status}")),
                "{}",
                status,
            )
            .await
            .ok();
            let retry = call(&store, &runs, "k1", Some(&format!("y{status}")), "{}", 200).await;
            assert!(matches!(retry, Ok(Outcome::Ran(Status(200)))), "{status}");
        }
    }

    #[tokio::test]
    async fn keys_are_per_caller_and_a_reused_key_with_another_body_is_refused() {
        let (store, runs) = (MemoryStore::new(0), AtomicUsize::new(0));
        call(&store, &runs, "k1", Some("x"), r#"{"a":1}"#, 200)
            .await
            .ok();
        let other = call(&store, &runs, "k2", Some("x"), r#"{"a":2}"#, 200).await;
        assert!(matches!(other, Ok(Outcome::Ran(_))));
        let reused = call(&store, &runs, "k1", Some("x"), r#"{"a":2}"#, 200).await;
        assert_eq!(
            reused.err().map(|e| e.code),
            Some(ErrorCode::IdempotencyKeyReused)
        );
    }

    #[tokio::test]
    async fn a_key_still_running_is_refused_and_no_key_always_runs() {
        let (store, runs) = (MemoryStore::new(0), AtomicUsize::new(0));
        let ttl = Duration::from_secs(60);
        let fp = fingerprint("a", b"{}");
        let record_key = format!("action:k1:{}", hex::encode(Sha256::digest(b"x")));
        store.idempotency_reserve(&record_key, &fp, ttl).await.ok();
        let busy = call(&store, &runs, "k1", Some("x"), "{}", 200).await;
        assert_eq!(
            busy.err().map(|e| e.code),
            Some(ErrorCode::IdempotencyKeyInFlight)
        );
        for _ in 0..2 {
            call(&store, &runs, "k1", None, "{}", 200).await.ok();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_but_not_the_action() {
        let a = fingerprint("x", br#"{"a":1,"b":"two"}"#);
        let b = fingerprint("x", b"{ \"b\": \"two\",\n \"a\": 1 }");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("y", br#"{"a":1,"b":"two"}"#));
        assert_ne!(a, fingerprint("x", br#"{"a":2,"b":"two"}"#));
    }
}
