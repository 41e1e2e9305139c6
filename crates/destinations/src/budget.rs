//! How many message bytes may be between "read from the client" and "durable"
//! at once.
//!
//! The store's preparation reads a message (up to the index's limit) and
//! parses it; a message held in memory keeps its encoded record there
//! until its batch is committed. Without a bound, 100 sessions finishing
//! 25 MB messages together held 2.5 GB. Each message takes what its
//! preparation needs from the budget (at most the whole budget, so one
//! message larger than it still goes, alone) before it is prepared, keeps
//! what its prepared record still holds ([`Share::shrink`]) and gives that
//! back once it is answered. Waiters are served in arrival
//! order, so a large message is not starved by a stream of small ones.

use std::sync::{Arc, Condvar, Mutex};

/// Bytes in flight by default: small messages (the common case) never
/// wait, and peak memory stays near twice this plus the base.
pub const DEFAULT_BUDGET: u64 = 48 << 20;

/// A byte budget shared by every session of a server.
#[derive(Debug)]
pub struct ByteBudget {
    total: u64,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Debug)]
struct State {
    available: u64,
    next_ticket: u64,
    serving: u64,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: u64) -> Arc<ByteBudget> {
        let total = total.max(1);
        Arc::new(ByteBudget {
            total,
            state: Mutex::new(State {
                available: total,
                next_ticket: 0,
                serving: 0,
            }),
            turn: Condvar::new(),
        })
    }

    /// Waits (blocking the thread) until `bytes` (capped at the total) are
    /// free and every earlier caller was served, then takes them.
    pub fn take(self: &Arc<Self>, bytes: u64) -> Share {
        let bytes = bytes.clamp(1, self.total);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        while s.serving != ticket || s.available < bytes {
            s = self.turn.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.available -= bytes;
        s.serving += 1;
        drop(s);
        // The next in line may fit too.
        self.turn.notify_all();
        Share {
            budget: self.clone(),
            bytes,
        }
    }

    /// Returns bytes a share held and wakes the waiters.
    fn give_back(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.available += bytes;
        drop(s);
        self.turn.notify_all();
    }

    /// Bytes not taken now.
    pub fn available(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .available
    }
}

impl Share {
    /// Gives back all but `bytes` of the share (what is still held after a
    /// step that needed more).
    pub fn shrink(&mut self, bytes: u64) {
        let keep = bytes.min(self.bytes);
        let back = self.bytes - keep;
        if back == 0 {
            return;
        }
        self.bytes = keep;
        self.budget.give_back(back);
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_wait_in_order_and_come_back() {
        let b = ByteBudget::new(100);
        let big = b.take(1_000);
        assert_eq!(
            big.bytes, 100,
            "capped at the total: one message larger than it still goes"
        );
        drop(big);
        let a = b.take(60);
        assert_eq!(b.available(), 40);
        // A waiter for 50 blocks until `a` is given back.
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let s = b2.take(50);
            tx.send(()).unwrap();
            drop(s);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "took more than there was"
        );
        drop(a);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("served once freed");
        t.join().unwrap();
        assert_eq!(b.available(), 100);
    }

    #[test]
    fn a_shrunk_share_lets_a_waiter_in_and_gives_back_the_rest_when_dropped() {
        let b = ByteBudget::new(100);
        let mut a = b.take(90);
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let s = b2.take(50);
            tx.send(()).unwrap();
            drop(s);
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        a.shrink(10);
        assert_eq!(a.bytes(), 10);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("served once the share shrank");
        t.join().unwrap();
        a.shrink(50);
        assert_eq!(a.bytes(), 10, "a share never grows");
        assert_eq!(b.available(), 90);
        drop(a);
        assert_eq!(b.available(), 100);
    }
}
