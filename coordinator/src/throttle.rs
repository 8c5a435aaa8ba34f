//! Per-index rate limits, answered with 429 TooManyRequestsException (which AWS SDKs retry).
//!
//! A token bucket per index and kind: write requests per second, vectors written or deleted per
//! second, and query/get/list requests per second. Defaults follow the service limits of S3 Vectors
//! (1,000 write requests and 2,500 vectors per second per index); 0 disables a limit.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use quiver_proto::IndexUid;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    pub write_requests_per_second: u32,
    pub write_vectors_per_second: u32,
    pub read_requests_per_second: u32,
}

impl RateLimits {
    /// The S3 Vectors service's published write limits per index; reads unlimited.
    pub const DEFAULT: RateLimits = RateLimits {
        write_requests_per_second: 1_000,
        write_vectors_per_second: 2_500,
        read_requests_per_second: 0,
    };
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::DEFAULT
    }
}

/// API requests executing at once by default; more wait briefly for a slot, then get 429.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;

/// A token bucket holding at most one second of tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, now: Instant) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.updated = now;
    }

    /// Whether `cost` tokens are available now (does not take them).
    pub fn has(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        // A single request larger than the whole bucket is admitted when the bucket is full.
        self.tokens >= cost.min(self.rate)
    }

    pub fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }
}

#[derive(Default)]
struct IndexBuckets {
    write_requests: Option<TokenBucket>,
    write_vectors: Option<TokenBucket>,
    reads: Option<TokenBucket>,
}

pub struct Throttle {
    limits: RateLimits,
    buckets: Mutex<HashMap<IndexUid, IndexBuckets>>,
}

fn throttled() -> ApiError {
    ApiError::TooManyRequests("Rate exceeded; slow down and retry".into())
}

fn bucket(slot: &mut Option<TokenBucket>, rate: u32, now: Instant) -> Option<&mut TokenBucket> {
    if rate == 0 {
        return None;
    }
    Some(slot.get_or_insert_with(|| TokenBucket::new(rate, now)))
}

impl Throttle {
    pub fn new(limits: RateLimits) -> Self {
        Throttle {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a write of `vectors` vectors to `index`, or answers 429.
    pub fn write(&self, index: IndexUid, vectors: usize) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut all = self.buckets.lock();
        let b = all.entry(index).or_default();
        let mut requests = bucket(
            &mut b.write_requests,
            self.limits.write_requests_per_second,
            now,
        );
        let mut vector_bucket = bucket(
            &mut b.write_vectors,
            self.limits.write_vectors_per_second,
            now,
        );
        let cost = vectors as f64;
        let ok = requests.as_mut().is_none_or(|r| r.has(1.0, now))
            && vector_bucket.as_mut().is_none_or(|v| v.has(cost, now));
        if !ok {
            return Err(throttled());
        }
        if let Some(r) = requests {
            r.take(1.0);
        }
        if let Some(v) = vector_bucket {
            v.take(cost);
        }
        Ok(())
    }

    /// Admits a query/get/list request on `index`, or answers 429.
    pub fn read(&self, index: IndexUid) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut all = self.buckets.lock();
        let b = all.entry(index).or_default();
        if let Some(r) = bucket(&mut b.reads, self.limits.read_requests_per_second, now) {
            if !r.has(1.0, now) {
                return Err(throttled());
            }
            r.take(1.0);
        }
        Ok(())
    }

    /// Forgets a deleted index's buckets.
    pub fn forget(&self, index: IndexUid) {
        self.buckets.lock().remove(&index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, start);
        for _ in 0..10 {
            assert!(b.has(1.0, start));
            b.take(1.0);
        }
        assert!(!b.has(1.0, start));
        assert!(b.has(1.0, start + Duration::from_millis(100)));
        // Never more than one second of tokens: a minute idle refills ten, not six hundred.
        let later = start + Duration::from_secs(60);
        assert!(b.has(10.0, later));
        b.take(10.0);
        assert!(!b.has(1.0, later));
    }

    #[test]
    fn throttle_limits_vectors_and_requests_per_index() {
        let throttle = Throttle::new(RateLimits {
            write_requests_per_second: 1_000,
            write_vectors_per_second: 1_000,
            read_requests_per_second: 0,
        });
        let a = IndexUid(1);
        assert!(throttle.write(a, 500).is_ok());
        assert!(throttle.write(a, 500).is_ok());
        assert!(matches!(
            throttle.write(a, 500),
            Err(ApiError::TooManyRequests(_))
        ));
        // Another index has its own budget; reads are unlimited.
        assert!(throttle.write(IndexUid(2), 500).is_ok());
        for _ in 0..10_000 {
            assert!(throttle.read(a).is_ok());
        }
    }

    #[test]
    fn reads_have_their_own_budget_per_index_and_a_forgotten_index_starts_full() {
        let throttle = Throttle::new(RateLimits {
            write_requests_per_second: 0,
            write_vectors_per_second: 0,
            read_requests_per_second: 5,
        });
        let (a, b) = (IndexUid(1), IndexUid(2));
        for _ in 0..5 {
            assert!(throttle.read(a).is_ok());
        }
        assert!(matches!(
            throttle.read(a),
            Err(ApiError::TooManyRequests(_))
        ));
        // Another index reads on its own budget; writes are unlimited here.
        assert!(throttle.read(b).is_ok());
        assert!(throttle.write(a, 10_000).is_ok());
        // A deleted index's buckets go: an index made anew starts with a full budget.
        throttle.forget(a);
        for _ in 0..5 {
            assert!(throttle.read(a).is_ok());
        }
        assert!(throttle.read(a).is_err());
    }
}
