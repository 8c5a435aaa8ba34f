//! The process's file-descriptor budget: raise the soft open-file limit to the hard one at start,
//! and keep a reserve that network connections never take, so storage (redb files, FAISS
//! checkpoints, the cluster-id file), the QUIC socket and the runtime always have descriptors.
//!
//! The HTTP server is the only part whose descriptor count a stranger controls, so the budget
//! is enforced there: it holds at most [`FdBudget::http_connections`] connections (see
//! `http::serve`). Storage opens a bounded number of files per shard and never competes with it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything but HTTP connections: at least this many ...
pub const MIN_RESERVE: u64 = 256;
/// ... or this fraction (1/n) of the limit, whichever is larger.
pub const RESERVE_FRACTION: u64 = 4;
/// The automatic HTTP connection cap never exceeds this (memory, not descriptors, bounds it then).
pub const MAX_AUTO_HTTP_CONNECTIONS: u64 = 16_384;
/// Below this many descriptors for HTTP the process still serves, with a warning.
const MIN_HTTP_CONNECTIONS: u64 = 64;

/// The open-file limit after [`raise_open_file_limit`] and the part of it HTTP may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft RLIMIT_NOFILE the process runs with.
    pub limit: u64,
    /// Descriptors HTTP connections never take.
    pub reserve: u64,
}

impl FdBudget {
    /// The budget of a process whose soft open-file limit is `limit`.
    pub fn for_limit(limit: u64) -> FdBudget {
        FdBudget {
            limit,
            reserve: MIN_RESERVE.max(limit / RESERVE_FRACTION),
        }
    }

    /// HTTP connections the process may hold at once by default.
    pub fn http_connections(&self) -> usize {
        let available = self.limit.saturating_sub(self.reserve);
        usize::try_from(available.clamp(MIN_HTTP_CONNECTIONS, MAX_AUTO_HTTP_CONNECTIONS))
            .unwrap_or(usize::MAX)
    }

    /// The connection cap to use: `configured`, or the default when it is 0. A configured cap
    /// above the budget is lowered to it (it would let HTTP starve storage).
    pub fn http_cap(&self, configured: usize) -> usize {
        let budget = self.http_connections();
        match configured {
            0 => budget,
            cap if cap > budget && self.limit > self.reserve => {
                tracing::warn!(
                    configured = cap,
                    budget,
                    limit = self.limit,
                    "max HTTP connections is above the open-file budget; using the budget"
                );
                budget
            }
            cap => cap,
        }
    }
}

/// The budget under the current soft open-file limit (1024 if it cannot be read).
pub fn current() -> FdBudget {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => FdBudget::for_limit(soft),
        Err(_) => FdBudget::for_limit(1024),
    }
}

/// Raises the soft open-file limit to the hard limit and returns the budget; logs both.
pub fn raise_open_file_limit() -> FdBudget {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "reading the open-file limit; assuming 1024");
            return FdBudget::for_limit(1024);
        }
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                tracing::warn!(%error, soft, hard, "raising the open-file limit");
                soft
            }
        }
    } else {
        soft
    };
    let budget = FdBudget::for_limit(limit);
    if (budget.http_connections() as u64) <= MIN_HTTP_CONNECTIONS {
        tracing::warn!(
            limit,
            "the open-file limit is very low; raise it (ulimit -n) to serve more clients"
        );
    }
    tracing::info!(
        limit,
        hard,
        reserved_for_storage = budget.reserve,
        http_connections = budget.http_connections(),
        "file-descriptor budget"
    );
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_quarter_of_the_limit_and_at_least_256() {
        let small = FdBudget::for_limit(1024);
        assert_eq!(small.reserve, 256);
        assert_eq!(small.http_connections(), 768);
        let large = FdBudget::for_limit(8192);
        assert_eq!(large.reserve, 2048);
        assert_eq!(large.http_connections(), 6144);
        assert_eq!(
            FdBudget::for_limit(1 << 20).http_connections(),
            MAX_AUTO_HTTP_CONNECTIONS as usize
        );
        // A tiny limit still serves a few connections (and warns at start).
        assert_eq!(FdBudget::for_limit(256).http_connections(), 64);
    }

    #[test]
    fn a_configured_cap_never_exceeds_the_budget() {
        let budget = FdBudget::for_limit(1024);
        assert_eq!(budget.http_cap(0), 768);
        assert_eq!(budget.http_cap(100), 100);
        assert_eq!(budget.http_cap(5000), 768);
    }
}
