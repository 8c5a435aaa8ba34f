//! The table of a server's open connections and the choice of which to close when it is full:
//! the HTTP front door and the QUIC server both keep one.
//!
//! A connection is *busy* while a request on it is being handled, from the moment the request
//! has been read whole (headers and body) to its answer, and *idle* otherwise: waiting for a
//! request, receiving one (slowly, perhaps), or kept alive between requests. Closing an idle
//! connection never interrupts work: nothing of a request happens before it is read whole.
//! When a new connection arrives and every slot is taken, the idle connection to close is one
//! that never completed a request, least recently active first (an idle or trickling stranger),
//! and only then a kept-alive client's; a busy connection is never chosen. With no idle
//! connection the newcomer is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One open connection's state, shared by its task, its requests and the table.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Tick of the last request start or end (ordering only).
    last_active: AtomicU64,
    /// Fired when the table chose this connection to close.
    pub evicted: CancellationToken,
    /// Fired when the connection is gone (its server called [`Connections::release`]).
    pub closed: CancellationToken,
}

impl Slot {
    /// Whether a request is being handled on this connection now.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }
}

/// Marks a request in flight on a slot until dropped (also when the request is cancelled).
pub struct Busy {
    slot: Arc<Slot>,
    table: Arc<Connections>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.served.store(true, Ordering::Release);
        self.slot
            .last_active
            .store(self.table.tick(), Ordering::Release);
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Connections::admit`] did with a new connection.
pub enum Admission {
    /// Admitted; `evicted` is the idle connection told to close to make room, if any (its
    /// `closed` fires once it is gone: an HTTP server waits for that, so that descriptors
    /// never run ahead of the bound).
    Admitted {
        slot: Arc<Slot>,
        evicted: Option<Arc<Slot>>,
    },
    /// Every slot holds a request in flight.
    Full,
}

/// The open connections, at most `max`.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    clock: AtomicU64,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        })
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::AcqRel)
    }

    /// Takes a slot for a new connection, closing an idle one if the table is full.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let slot = Arc::new(Slot {
            id: self.tick(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_active: AtomicU64::new(self.tick()),
            evicted: CancellationToken::new(),
            closed: CancellationToken::new(),
        });
        let mut open = self.open.lock();
        let mut evicted = None;
        if open.len() >= self.max {
            match Self::evict(&mut open) {
                Some(victim) => evicted = Some(victim),
                None => return Admission::Full,
            }
        }
        open.insert(slot.id, slot.clone());
        Admission::Admitted { slot, evicted }
    }

    /// Tells one idle connection to close (when the process ran out of descriptors).
    pub fn evict_one(&self) -> Option<Arc<Slot>> {
        Self::evict(&mut self.open.lock())
    }

    fn evict(open: &mut HashMap<u64, Arc<Slot>>) -> Option<Arc<Slot>> {
        let victim = open.remove(&Self::victim(open)?)?;
        victim.evicted.cancel();
        Some(victim)
    }

    /// The idle connection to close: never served before served, then least recently active.
    fn victim(open: &HashMap<u64, Arc<Slot>>) -> Option<u64> {
        open.values()
            .filter(|slot| !slot.busy())
            .min_by_key(|slot| {
                (
                    slot.served.load(Ordering::Acquire),
                    slot.last_active.load(Ordering::Acquire),
                )
            })
            .map(|slot| slot.id)
    }

    /// Marks a request in flight on `slot` until the returned guard drops.
    pub fn begin(self: &Arc<Self>, slot: &Arc<Slot>) -> Busy {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.last_active.store(self.tick(), Ordering::Release);
        Busy {
            slot: slot.clone(),
            table: self.clone(),
        }
    }

    /// Forgets a closed connection (already forgotten if it was evicted) and fires its `closed`.
    pub fn release(&self, slot: &Slot) {
        self.open.lock().remove(&slot.id);
        slot.closed.cancel();
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(table: &Arc<Connections>) -> (Arc<Slot>, bool) {
        match table.admit() {
            Admission::Admitted { slot, evicted } => (slot, evicted.is_some()),
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn a_full_table_closes_the_stranger_idle_longest_and_never_a_busy_connection() {
        let table = Connections::new(3);
        let (client, _) = admitted(&table);
        // The client completes a request: a kept-alive connection, idle now.
        drop(table.begin(&client));
        let (stranger_a, _) = admitted(&table);
        let (stranger_b, _) = admitted(&table);
        // Full: the newcomer evicts the stranger that has waited longest, not the client.
        let (newcomer, evicted) = admitted(&table);
        assert!(evicted);
        assert!(stranger_a.evicted.is_cancelled());
        assert!(!client.evicted.is_cancelled() && !stranger_b.evicted.is_cancelled());
        assert_eq!(table.len(), 3);
        // Busy connections are never chosen; with every other one busy, the client goes.
        let _b = table.begin(&stranger_b);
        let _n = table.begin(&newcomer);
        let (_, evicted) = admitted(&table);
        assert!(evicted && client.evicted.is_cancelled());
        // Now everything but the last newcomer is busy; once it is too, a newcomer is refused.
        let open: Vec<_> = table.open.lock().values().cloned().collect();
        let _guards: Vec<_> = open
            .iter()
            .filter(|slot| !slot.busy())
            .map(|slot| table.begin(slot))
            .collect();
        assert!(matches!(table.admit(), Admission::Full));
        assert!(table.evict_one().is_none());
    }

    #[test]
    fn a_released_slot_frees_its_place_and_a_dropped_request_ends_busy() {
        let table = Connections::new(1);
        let (slot, _) = admitted(&table);
        let busy = table.begin(&slot);
        assert!(slot.busy());
        assert!(matches!(table.admit(), Admission::Full));
        drop(busy);
        assert!(!slot.busy());
        table.release(&slot);
        assert!(slot.closed.is_cancelled());
        assert_eq!(table.len(), 0);
        let (_, evicted) = admitted(&table);
        assert!(!evicted);
    }
}
