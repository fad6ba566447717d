//! A short-lived, per-process cache of topic records for the publish hot path, which would
//! otherwise pay a KV round trip per POST. Writes made through this process invalidate at
//! once; changes made by other Herald processes are seen within [`FRESHNESS`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use super::topics::Topic;

/// How long a cached topic is trusted.
pub const FRESHNESS: Duration = Duration::from_secs(1);
/// Entries kept before the cache is emptied (it refills from the hot topics at once).
const MAX_ENTRIES: usize = 10_000;

/// Key `{project}.{topic}` → when it was read, and the record.
type Entries = HashMap<String, (Instant, Arc<Topic>)>;

#[derive(Clone, Default)]
pub struct TopicCache(Arc<RwLock<Entries>>);

impl TopicCache {
    pub fn get(&self, key: &str) -> Option<Arc<Topic>> {
        let map = self.0.read().expect("topic cache lock");
        map.get(key)
            .filter(|(at, _)| at.elapsed() < FRESHNESS)
            .map(|(_, t)| t.clone())
    }

    pub fn put(&self, key: String, topic: Arc<Topic>) {
        let mut map = self.0.write().expect("topic cache lock");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), topic));
    }

    pub fn invalidate(&self, key: &str) {
        self.0.write().expect("topic cache lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TopicMetadata, TopicName};

    fn topic() -> Arc<Topic> {
        Arc::new(Topic {
            name: TopicName::parse("t").unwrap(),
            metadata: TopicMetadata::default(),
            revision: 1,
        })
    }

    #[test]
    fn entries_are_served_until_invalidated() {
        let cache = TopicCache::default();
        assert!(cache.get("p.t").is_none());
        cache.put("p.t".into(), topic());
        assert_eq!(cache.get("p.t").unwrap().revision, 1);
        cache.invalidate("p.t");
        assert!(cache.get("p.t").is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let cache = TopicCache::default();
        for i in 0..(MAX_ENTRIES + 5) {
            cache.put(format!("p.t{i}"), topic());
        }
        assert!(cache.0.read().unwrap().len() <= MAX_ENTRIES);
    }
}
