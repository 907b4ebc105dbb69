//! The token cache: one token per [`TokenKey`], reused until shortly before it
//! expires, and one request in flight per key.
//!
//! Why single-flight: an agent that fans out (an orchestrator starting twenty
//! sub-tasks at once) would otherwise send twenty identical token requests
//! the moment its token expires, each audited, each signed. Here each key has
//! an async mutex: the first caller fetches while holding it, and the callers
//! queued behind it find the fresh token when they get the lock. A failure is
//! shared the same way: callers that were already waiting when a fetch failed
//! get its error instead of each trying again (a flight counter, read before
//! waiting, tells them a flight ended while they waited).
//!
//! Why a margin: a token that is valid when sent can expire before the
//! resource server checks it. A token is reused only until `margin` before
//! its expiry; the margin is at most half the token's lifetime, so short
//! tokens are still reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mandate_types::UnixTime;

use crate::token::{AccessToken, TokenKey};
use crate::Error;

/// Most keys kept; past it, entries with no usable token are dropped.
pub const MAX_ENTRIES: usize = 1024;

#[derive(Default)]
struct Slot {
    /// Flights finished, for waiters to notice one ended while they queued.
    flights: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<(AccessToken, UnixTime)>,
    /// The last flight's error, with the flight number it ended.
    failed: Option<(u64, Error)>,
}

#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<Slot>>>,
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            // A poisoned map only loses sharing, never correctness.
            return Arc::new(Slot::default());
        };
        if slots.len() >= MAX_ENTRIES && !slots.contains_key(key) {
            // Keep entries that are busy or hold a token; drop the rest.
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.state.try_lock().map_or(true, |st| st.token.is_some())
            });
            if slots.len() >= MAX_ENTRIES {
                slots.clear();
            }
        }
        Arc::clone(slots.entry(key.clone()).or_default())
    }

    /// Drops the token for `key`, so that the next call fetches a new one.
    pub(crate) async fn invalidate(&self, key: &TokenKey) {
        let slot = self.slot(key);
        slot.state.lock().await.token = None;
    }

    /// The cached token for `key`, or the result of `fetch`, which runs at
    /// most once at a time per key. `now` is read after the lock is taken.
    pub(crate) async fn get_or_fetch<F, Fut>(
        &self,
        key: &TokenKey,
        now: impl Fn() -> UnixTime,
        margin: i64,
        fetch: F,
    ) -> Result<AccessToken, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, Error>>,
    {
        let slot = self.slot(key);
        let seen = slot.flights.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if let Some((token, refresh_at)) = &state.token {
            if now() < *refresh_at {
                return Ok(token.clone());
            }
        }
        if let Some((flight, error)) = &state.failed {
            if *flight > seen {
                return Err(error.clone());
            }
        }
        let result = fetch().await;
        let flight = slot.flights.load(Ordering::Acquire) + 1;
        match &result {
            Ok(token) => {
                let refresh_at = match (token.expires_at, token.lifetime) {
                    (Some(exp), Some(life)) => exp - margin.min(life / 2),
                    // No expires_in: use it for this call only.
                    _ => UnixTime::MIN,
                };
                state.token = Some((token.clone(), refresh_at));
                state.failed = None;
            }
            Err(e) => {
                state.token = None;
                state.failed = Some((flight, e.clone()));
            }
        }
        slot.flights.store(flight, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use crate::token::{TokenKind, TokenType};
    use crate::OAuthError;

    fn token(now: UnixTime, life: i64) -> AccessToken {
        AccessToken {
            token: format!("t{now}"),
            token_type: TokenType::Bearer,
            expires_at: Some(now + life),
            lifetime: Some(life),
            scope: None,
            issued_token_type: None,
        }
    }

    fn key(r: &str) -> TokenKey {
        TokenKey::new(Some(r), None, TokenKind::ClientCredentials)
    }

    #[tokio::test]
    async fn reuses_until_the_margin_then_refetches() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let clock = AtomicU64::new(1000);
        let now = || clock.load(Ordering::SeqCst) as i64;
        let r = key("r");
        let get = || {
            cache.get_or_fetch(&r, now, 30, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(token(now(), 900))
            })
        };
        let a = get().await.unwrap();
        let b = get().await.unwrap();
        assert_eq!(a.secret(), b.secret());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.store(1000 + 900 - 31, Ordering::SeqCst);
        get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "still outside the margin");
        clock.store(1000 + 900 - 30, Ordering::SeqCst);
        let c = get().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "inside the margin: refetched"
        );
        assert_ne!(a.secret(), c.secret());
        // Another key is another entry; invalidation forces a fetch.
        cache
            .get_or_fetch(&key("other"), now, 30, || async { Ok(token(now(), 10)) })
            .await
            .unwrap();
        cache.invalidate(&key("r")).await;
        get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn short_tokens_get_half_their_lifetime() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let clock = AtomicU64::new(0);
        let now = || clock.load(Ordering::SeqCst) as i64;
        let r = key("r");
        let get = || {
            cache.get_or_fetch(&r, now, 30, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(token(now(), 20))
            })
        };
        get().await.unwrap();
        clock.store(9, Ordering::SeqCst);
        get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.store(10, Ordering::SeqCst);
        get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    // One thread: a caller's arrival count and its read of the flight
    // counter happen in one poll with nothing in between. On two threads the
    // OS could stop a caller between the two while the flight ends, and that
    // caller, rightly, starts a flight of its own (CI saw 3 flights once).
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_callers_share_one_flight_and_its_failure() {
        const N: usize = 16;
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        for fail in [true, false] {
            let arrived = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..N)
                .map(|_| {
                    let (cache, calls, arrived) = (cache.clone(), calls.clone(), arrived.clone());
                    tokio::spawn(async move {
                        // Counted in the same poll that reads the flight
                        // counter, so N arrivals mean N callers queued.
                        arrived.fetch_add(1, Ordering::SeqCst);
                        let fetch = || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            while arrived.load(Ordering::SeqCst) < N {
                                tokio::task::yield_now().await;
                            }
                            if fail {
                                Err(Error::OAuth(OAuthError {
                                    status: 503,
                                    error: "temporarily_unavailable".into(),
                                    error_description: None,
                                }))
                            } else {
                                Ok(token(0, 900))
                            }
                        };
                        cache.get_or_fetch(&key("r"), || 0, 30, fetch).await
                    })
                })
                .collect();
            let results = futures_join(tasks).await;
            assert!(results.iter().all(|r| r.is_ok() != fail), "fail={fail}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one flight per burst");
    }

    async fn futures_join(
        tasks: Vec<tokio::task::JoinHandle<Result<AccessToken, Error>>>,
    ) -> Vec<Result<AccessToken, Error>> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
