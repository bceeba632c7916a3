//! The cap on open connections, shared by the accept loop (which takes a
//! slot per connection, and counts the connections it closes for want of
//! one) and `/metrics` (which reports them): an operator sees how close a
//! node runs to its cap before clients are turned away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of the connection cap (`--max-connections`, lowered to what
/// the open-file limit allows).
#[derive(Debug)]
pub struct ConnectionSlots {
    slots: Arc<Semaphore>,
    max: usize,
    refused: AtomicU64,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max)), max, refused: AtomicU64::new(0) }
    }

    /// A slot for a connection just accepted, held until its socket is
    /// closed; `None`, counted as refused, when every slot is taken.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok();
        if slot.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Connections closed at once for want of a slot, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionSlots;

    #[test]
    fn slots_count_what_is_open_and_what_was_refused() {
        let slots = ConnectionSlots::new(2);
        let first = slots.take().expect("a free slot");
        let second = slots.take().expect("a free slot");
        assert_eq!((slots.open(), slots.refused()), (2, 0));
        assert!(slots.take().is_none());
        assert_eq!((slots.open(), slots.refused()), (2, 1));
        drop(first);
        assert_eq!(slots.open(), 1);
        drop(second);
        assert_eq!((slots.open(), slots.max()), (0, 2));
    }
}
