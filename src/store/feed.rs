//! The subscriptions feed's journal: one entry per applied feed day, `f/<day u32 BE>` (days
//! since the feed's first day), so a sync interrupted by a crash resumes after the last day it
//! applied. An entry keeps the day's keys until a snapshot of the set covers the day; then only
//! its counts stay ([`FeedDayRecord::pruned`]).
//!
//! Encoding: version (1) · flags (bit 0: pruned) · subscriptions u32 LE · unsubscriptions u32 LE
//! · the keys (10 bytes each), subscriptions first, when not pruned.

use super::{sled_err, Store, StoreError};

const VERSION: u8 = 1;
const PRUNED: u8 = 1;
/// Bytes of a subscriber key.
pub const FEED_KEY_LEN: usize = 10;

/// One feed day as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedDayRecord {
    /// Days since the feed's first day.
    pub day: u32,
    /// Subscriptions of the day (empty once pruned).
    pub subscriptions: Vec<[u8; FEED_KEY_LEN]>,
    /// Unsubscriptions of the day (empty once pruned).
    pub unsubscriptions: Vec<[u8; FEED_KEY_LEN]>,
    /// How many subscriptions the day had.
    pub subscription_count: u32,
    /// How many unsubscriptions the day had.
    pub unsubscription_count: u32,
    /// The keys were dropped: a snapshot covers this day.
    pub pruned: bool,
}

impl FeedDayRecord {
    /// A day with its keys.
    pub fn new(
        day: u32,
        subscriptions: Vec<[u8; FEED_KEY_LEN]>,
        unsubscriptions: Vec<[u8; FEED_KEY_LEN]>,
    ) -> FeedDayRecord {
        FeedDayRecord {
            day,
            subscription_count: subscriptions.len() as u32,
            unsubscription_count: unsubscriptions.len() as u32,
            subscriptions,
            unsubscriptions,
            pruned: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let keys = if self.pruned {
            0
        } else {
            self.subscriptions.len() + self.unsubscriptions.len()
        };
        let mut v = Vec::with_capacity(10 + keys * FEED_KEY_LEN);
        v.push(VERSION);
        v.push(if self.pruned { PRUNED } else { 0 });
        v.extend_from_slice(&self.subscription_count.to_le_bytes());
        v.extend_from_slice(&self.unsubscription_count.to_le_bytes());
        if !self.pruned {
            for k in self.subscriptions.iter().chain(&self.unsubscriptions) {
                v.extend_from_slice(k);
            }
        }
        v
    }

    fn decode(day: u32, v: &[u8]) -> Result<FeedDayRecord, String> {
        if v.len() < 10 {
            return Err("short feed day entry".to_owned());
        }
        if v[0] != VERSION {
            return Err(format!("feed day entry version {}", v[0]));
        }
        let pruned = v[1] & PRUNED != 0;
        let subs = u32::from_le_bytes(v[2..6].try_into().expect("4 bytes"));
        let unsubs = u32::from_le_bytes(v[6..10].try_into().expect("4 bytes"));
        let body = &v[10..];
        let mut rec = FeedDayRecord {
            day,
            subscriptions: Vec::new(),
            unsubscriptions: Vec::new(),
            subscription_count: subs,
            unsubscription_count: unsubs,
            pruned,
        };
        if pruned {
            if !body.is_empty() {
                return Err("pruned feed day with keys".to_owned());
            }
            return Ok(rec);
        }
        let want = (subs as usize + unsubs as usize) * FEED_KEY_LEN;
        if body.len() != want {
            return Err(format!(
                "feed day keys: {} bytes, expected {want}",
                body.len()
            ));
        }
        let mut keys = body
            .chunks_exact(FEED_KEY_LEN)
            .map(|c| c.try_into().expect("10 bytes"));
        rec.subscriptions = keys.by_ref().take(subs as usize).collect();
        rec.unsubscriptions = keys.collect();
        Ok(rec)
    }
}

fn feed_key(day: u32) -> [u8; 6] {
    let mut k = [b'f', b'/', 0, 0, 0, 0];
    k[2..].copy_from_slice(&day.to_be_bytes());
    k
}

fn corrupt(day: u32, reason: String) -> StoreError {
    StoreError::Corrupt {
        key: format!("feed day {day}"),
        reason,
    }
}

impl Store {
    /// Writes feed days atomically, then flushes: they are durable when this returns.
    pub async fn put_feed_days(&self, days: &[FeedDayRecord]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for d in days {
            batch.insert(&feed_key(d.day), d.encode());
        }
        self.tree
            .apply_batch(batch)
            .map_err(sled_err("write feed days"))?;
        self.flush().await
    }

    /// The journal from `from` on, in day order.
    pub fn feed_days_from(
        &self,
        from: u32,
    ) -> impl Iterator<Item = Result<FeedDayRecord, StoreError>> + '_ {
        self.tree
            .range(feed_key(from)..=feed_key(u32::MAX))
            .map(|item| {
                let (k, v) = item.map_err(sled_err("scan feed days"))?;
                let day =
                    u32::from_be_bytes(k[2..6].try_into().map_err(|_| StoreError::Corrupt {
                        key: "feed day key".to_owned(),
                        reason: format!("{} bytes", k.len()),
                    })?);
                FeedDayRecord::decode(day, &v).map_err(|r| corrupt(day, r))
            })
    }

    /// The last day in the journal.
    pub fn feed_last_day(&self) -> Result<Option<u32>, StoreError> {
        match self
            .tree
            .scan_prefix(b"f/")
            .keys()
            .next_back()
            .transpose()
            .map_err(sled_err("scan feed days"))?
        {
            Some(k) if k.len() == 6 => Ok(Some(u32::from_be_bytes(
                k[2..6].try_into().expect("4 bytes"),
            ))),
            Some(k) => Err(StoreError::Corrupt {
                key: "feed day key".to_owned(),
                reason: format!("{} bytes", k.len()),
            }),
            None => Ok(None),
        }
    }

    /// Drops the keys of every day up to `through` (a snapshot now covers them), keeping the
    /// counts; durable when this returns.
    pub async fn prune_feed_days(&self, through: u32) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.tree.range(feed_key(0)..=feed_key(through)) {
            let (k, v) = item.map_err(sled_err("scan feed days"))?;
            let day = u32::from_be_bytes(k[2..6].try_into().expect("feed keys are 6 bytes"));
            let mut rec = FeedDayRecord::decode(day, &v).map_err(|r| corrupt(day, r))?;
            if !rec.pruned {
                rec.pruned = true;
                rec.subscriptions = Vec::new();
                rec.unsubscriptions = Vec::new();
                batch.insert(k, rec.encode());
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(sled_err("prune feed days"))?;
        self.flush().await
    }

    /// Removes the journal entries from `from` on (a re-sync of that range); durable when this
    /// returns.
    pub async fn remove_feed_days_from(&self, from: u32) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in self.tree.range(feed_key(from)..=feed_key(u32::MAX)).keys() {
            batch.remove(k.map_err(sled_err("scan feed days"))?);
        }
        self.tree
            .apply_batch(batch)
            .map_err(sled_err("remove feed days"))?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u8) -> [u8; FEED_KEY_LEN] {
        [i; FEED_KEY_LEN]
    }

    #[tokio::test]
    async fn days_round_trip_in_order_and_prune_keeps_counts() {
        let store = Store::temporary().unwrap();
        assert_eq!(store.feed_last_day().unwrap(), None);
        let days = vec![
            FeedDayRecord::new(3, vec![k(1), k(2)], vec![k(3)]),
            FeedDayRecord::new(0, vec![k(4)], vec![]),
            FeedDayRecord::new(300, vec![], vec![k(1)]),
        ];
        store.put_feed_days(&days).await.unwrap();
        assert_eq!(store.feed_last_day().unwrap(), Some(300));
        let back: Vec<_> = store.feed_days_from(0).map(Result::unwrap).collect();
        assert_eq!(
            back.iter().map(|d| d.day).collect::<Vec<_>>(),
            vec![0, 3, 300]
        );
        assert_eq!(back[1], days[0]);
        assert_eq!(store.feed_days_from(4).count(), 1);

        store.prune_feed_days(3).await.unwrap();
        let back: Vec<_> = store.feed_days_from(0).map(Result::unwrap).collect();
        assert!(back[0].pruned && back[1].pruned && !back[2].pruned);
        assert_eq!(back[1].subscription_count, 2);
        assert_eq!(back[1].unsubscription_count, 1);
        assert!(back[1].subscriptions.is_empty());
        assert_eq!(back[2].unsubscriptions, vec![k(1)]);

        store.remove_feed_days_from(3).await.unwrap();
        assert_eq!(store.feed_last_day().unwrap(), Some(0));
    }

    #[test]
    fn damaged_entries_are_refused() {
        let rec = FeedDayRecord::new(1, vec![k(1)], vec![k(2)]);
        let mut v = rec.encode();
        assert_eq!(FeedDayRecord::decode(1, &v).unwrap(), rec);
        v.pop();
        assert!(FeedDayRecord::decode(1, &v).is_err());
        assert!(FeedDayRecord::decode(1, &[9, 0, 0]).is_err());
    }
}
