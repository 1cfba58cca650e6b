//! The waiter queue of one lock: clients blocked on it, in arrival order.
//!
//! The server, not the client, holds the queue, so no client polls. Each waiter has an
//! id (its ticket) and a payload (what it waits for, e.g. read or write). Waiters leave
//! from the front when granted, or from anywhere when they time out, disconnect or are
//! unblocked; whoever is at the front is served next.

use std::collections::VecDeque;

pub type WaiterId = u64;

#[derive(Debug, Clone)]
pub struct WaitQueue<T> {
    entries: VecDeque<(WaiterId, T)>,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue { entries: VecDeque::new() }
    }
}

impl<T> WaitQueue<T> {
    /// Queues a waiter at the back. Ids must be unique within the queue.
    pub fn push(&mut self, id: WaiterId, what: T) {
        debug_assert!(!self.contains(id), "waiter {id} queued twice");
        self.entries.push_back((id, what));
    }

    /// Removes a waiter wherever it is; false when it was not queued (already granted
    /// or removed), which callers may see more than once for the same waiter.
    pub fn remove(&mut self, id: WaiterId) -> bool {
        match self.entries.iter().position(|(w, _)| *w == id) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn front(&self) -> Option<(WaiterId, &T)> {
        self.entries.front().map(|(id, what)| (*id, what))
    }

    pub fn is_front(&self, id: WaiterId) -> bool {
        self.entries.front().is_some_and(|(w, _)| *w == id)
    }

    pub fn contains(&self, id: WaiterId) -> bool {
        self.entries.iter().any(|(w, _)| *w == id)
    }

    /// The waiters in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (WaiterId, &T)> {
        self.entries.iter().map(|(id, what)| (*id, what))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<T>(q: &WaitQueue<T>) -> Vec<WaiterId> {
        q.iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let mut q = WaitQueue::default();
        for id in [7, 3, 9] {
            q.push(id, ());
        }
        assert_eq!(ids(&q), vec![7, 3, 9]);
        assert!(q.is_front(7));
        assert!(q.remove(7));
        assert!(q.is_front(3));
    }

    #[test]
    fn a_waiter_leaving_from_the_middle_keeps_the_order_of_the_rest() {
        let mut q = WaitQueue::default();
        for id in 1..=5 {
            q.push(id, id * 10);
        }
        assert!(q.remove(3));
        assert_eq!(ids(&q), vec![1, 2, 4, 5]);
        assert_eq!(q.front(), Some((1, &10)));
        assert!(q.remove(5));
        assert_eq!(ids(&q), vec![1, 2, 4]);
    }

    #[test]
    fn removing_twice_or_an_unknown_waiter_is_harmless() {
        let mut q = WaitQueue::default();
        q.push(1, ());
        assert!(q.remove(1));
        assert!(!q.remove(1));
        assert!(!q.remove(42));
        assert!(q.is_empty());
        assert_eq!(q.front(), None);
        assert!(!q.is_front(1));
    }

    #[test]
    fn a_thousand_waiters_leave_in_any_order_without_disturbing_the_front() {
        let mut q = WaitQueue::default();
        for id in 0..1000 {
            q.push(id, ());
        }
        // Every odd waiter disconnects; the evens keep their order.
        for id in (1..1000u64).rev().filter(|id| id % 2 == 1) {
            assert!(q.remove(id));
        }
        assert_eq!(q.len(), 500);
        assert_eq!(ids(&q), (0..1000).step_by(2).collect::<Vec<_>>());
    }
}
