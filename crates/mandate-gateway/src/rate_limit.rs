//! Token buckets per key: the Agent Card endpoints' and dynamic
//! registration's per client address, and a route's per caller
//! (`rate_limit` on the route).
//!
//! Each key gets a bucket of `per_minute` tokens, refilled continuously at
//! that rate; a request takes one, and one that finds the bucket empty is
//! told how many seconds to wait (`Retry-After`). The buckets live in this
//! process: with several replicas each counts its own requests, so a caller
//! spread over `n` replicas gets up to `n` times the limit. The table is
//! bounded: past [`MAX_TRACKED`] keys it starts again empty, so a flood of
//! new keys costs memory once, not without end.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Most keys tracked before the table is reset.
pub const MAX_TRACKED: usize = 100_000;

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_minute` requests per key, with bursts of that size.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` to serve, or `Err(seconds)` to wait. The key is copied only the
    /// first time it is seen.
    pub fn check<Q>(&self, key: &Q) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let (tokens, last) = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => {
                if buckets.len() >= MAX_TRACKED {
                    buckets.clear();
                }
                buckets
                    .entry(key.to_owned())
                    .or_insert((self.per_minute, now))
            }
        };
        let refill = now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) * 60.0 / self.per_minute;
            // At most 60 s: a whole token refills within a minute.
            Err(wait.ceil().clamp(1.0, 60.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn a_burst_past_the_limit_waits_and_other_keys_do_not() {
        let l = RateLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.check(&ip).is_ok());
        assert!(l.check(&ip).is_ok());
        // Two a minute: the next token comes within 30 s.
        let wait = l.check(&ip).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(l.check(&"127.0.0.2".parse::<IpAddr>().unwrap()).is_ok());
    }

    #[test]
    fn string_keys_are_looked_up_by_str() {
        let l: RateLimiter<String> = RateLimiter::new(1);
        assert!(l.check("agent-a").is_ok());
        assert!(l.check("agent-a").is_err());
        assert!(l.check("agent-b").is_ok());
    }
}
