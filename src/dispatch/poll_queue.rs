//! The poll queue: which submitted messages to poll, and when. [`PollQueue`] lives in the
//! scheduler's memory, not in the store.
//!
//! Why not in the store: the queue is derived data. A message is polled exactly when its record
//! is `Submitted` (and the job's poll policy samples its line), and the record with its id and
//! submit time is durable before the message enters the queue. So a restart rebuilds the queue
//! from the records (the start already scans them for `Sending` ones) and nothing is lost by
//! keeping it in memory; keeping it in sled cost two log writes per message (schedule, then
//! unschedule) out of five, and a range scan per refill.
//!
//! Size: 16 bytes per message waiting for its final status (IO's processing delay × the send
//! rate in a healthy run; every submitted message after a restart, until each is polled once).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Messages waiting for a poll, earliest due first.
#[derive(Debug, Default)]
pub struct PollQueue {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl PollQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue holding `entries` (due ms since the epoch, line), in any order.
    pub fn from_entries(entries: Vec<(u64, u64)>) -> Self {
        PollQueue {
            heap: entries.into_iter().map(Reverse).collect(),
        }
    }

    /// Polls `line` at `due_ms` (ms since the epoch).
    pub fn push(&mut self, due_ms: u64, line: u64) {
        self.heap.push(Reverse((due_ms, line)));
    }

    /// Due time of the earliest poll.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// Whether a poll is due at `now_ms`.
    pub fn has_due(&self, now_ms: u64) -> bool {
        self.next_due().is_some_and(|due| due <= now_ms)
    }

    /// Takes the earliest poll if it is due at `now_ms`: (due ms, line).
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        if self.has_due(now_ms) {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no message waits for a poll.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_come_out_in_due_order_and_only_when_due() {
        let mut q = PollQueue::from_entries(vec![(300, 1), (100, 2)]);
        q.push(200, 3);
        q.push(100, 4);
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_due(), Some(100));
        assert!(!q.has_due(99));
        assert_eq!(q.pop_due(99), None);
        assert_eq!(q.pop_due(250), Some((100, 2)));
        assert_eq!(q.pop_due(250), Some((100, 4)));
        assert_eq!(q.pop_due(250), Some((200, 3)));
        assert_eq!(q.pop_due(250), None, "300 is not due at 250");
        assert_eq!(q.next_due(), Some(300));
        assert_eq!(q.pop_due(u64::MAX), Some((300, 1)));
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn a_line_pushed_again_is_polled_again() {
        // A reschedule after a pending status is a new entry; the scheduler never holds two
        // entries of one line because the old one was popped before the poll ran.
        let mut q = PollQueue::new();
        q.push(10, 7);
        assert_eq!(q.pop_due(10), Some((10, 7)));
        q.push(50, 7);
        assert_eq!(q.pop_due(49), None);
        assert_eq!(q.pop_due(50), Some((50, 7)));
    }
}
