//! File descriptors: the open-file limit, and the share of it connections
//! may take.
//!
//! Every connection holds a descriptor, and so does every file the store
//! opens: sled's files, and the ones it opens for a moment (a blob file to
//! read, a directory and new blob files to `fdatasync` after each batch).
//! If connections could take them all, an append would fail for want of
//! one, and in `fsync` mode a failed sync stops the writer for good. So
//! connections are capped below the limit ([`connection_cap`]) and the
//! rest is kept for the store and the process (the listener, the runtime,
//! the log).

/// The least kept for everything but connections. The store keeps a
/// dozen or two files open (twice that while compaction builds a new
/// generation), and opens others for a moment, at most one at a time per
/// thread working in it: its writer and background threads, the runtime's
/// workers, and the runtime's blocking threads, of which tokio allows up to
/// 512 (though the store runs little on them). The process itself holds a
/// handful (the listener, the runtime's, the log's).
const RESERVED_AT_LEAST: u64 = 512;

/// A larger limit keeps one descriptor in this many for everything but
/// connections: a limit of 100,000 or more usually means a busy server,
/// whose store may hold more files open.
const RESERVED_ONE_IN: u64 = 10;

/// How many descriptors of `open_file_limit` are kept for everything but
/// connections: a tenth, at least [`RESERVED_AT_LEAST`], and never more than
/// half (a limit under 1,024 leaves half to each).
fn reserved(open_file_limit: u64) -> u64 {
    (open_file_limit / RESERVED_ONE_IN).max(RESERVED_AT_LEAST).min(open_file_limit / 2)
}

/// The most connections open at once: the open-file limit less what is
/// [`reserved`], or `max_connections` if that is lower; at least one.
/// Without a known limit, `max_connections` alone.
pub(super) fn connection_cap(open_file_limit: Option<u64>, max_connections: Option<u64>) -> usize {
    let available = open_file_limit.map_or(u64::MAX, |limit| limit - reserved(limit));
    let cap = max_connections.map_or(available, |max| max.min(available)).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX).min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// Each idle long-poll or SSE client holds a socket, so the default soft
/// limit of open files (often 1024) would cap them far below what memory
/// allows. Raises the soft limit to the hard limit, says so, and returns
/// the limit now in force (`None` if it cannot be read).
pub(super) fn raise_open_file_limit() -> Option<u64> {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            tracing::info!(
                soft_before = before.map(|(soft, _)| soft),
                hard = before.map(|(_, hard)| hard),
                soft_now = now,
                "open-file limit"
            );
            Some(now)
        }
        Err(error) => {
            tracing::warn!(%error, "could not raise the open-file limit");
            if before.is_none() {
                tracing::warn!("open-file limit unknown: only --max-connections caps connections");
            }
            before.map(|(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_get_the_limit_less_a_tenth_or_512() {
        assert_eq!(connection_cap(Some(20_000), None), 18_000);
        assert_eq!(connection_cap(Some(1_048_576), None), 943_719);
        assert_eq!(connection_cap(Some(4096), None), 4096 - 512);
        assert_eq!(connection_cap(Some(1024), None), 512);
    }

    #[test]
    fn a_low_limit_is_shared_half_and_half() {
        assert_eq!(connection_cap(Some(600), None), 300);
        assert_eq!(connection_cap(Some(256), None), 128);
        assert_eq!(connection_cap(Some(1), None), 1);
        assert_eq!(connection_cap(Some(0), None), 1);
    }

    #[test]
    fn max_connections_can_only_lower_the_cap() {
        assert_eq!(connection_cap(Some(20_000), Some(100)), 100);
        assert_eq!(connection_cap(Some(20_000), Some(50_000)), 18_000);
        assert_eq!(connection_cap(Some(u64::MAX), Some(7)), 7);
        assert!(connection_cap(Some(u64::MAX), None) <= tokio::sync::Semaphore::MAX_PERMITS);
        assert_eq!(connection_cap(None, Some(300)), 300);
        assert_eq!(connection_cap(None, None), tokio::sync::Semaphore::MAX_PERMITS);
    }
}
