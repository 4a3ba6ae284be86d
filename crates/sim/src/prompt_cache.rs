//! The simulated provider-side prompt cache (the `prompt_cache` knob): what makes the
//! simulator report cached prompt tokens the way a real provider's *automatic* prefix cache
//! does, so that routing decisions (which deployment a conversation goes to) show up in
//! cached-token counts and cost.
//!
//! The rules are OpenAI's documented ones: a prompt is cached by prefix; a request reuses the
//! longest prefix an earlier request to the same model *on the same server* sent within the
//! cache lifetime; nothing is cached below 1,024 tokens, and the cached part grows in
//! 128-token increments. Prefixes are taken at message boundaries (the request's leading
//! block — tools, and the system prompt in the formats that keep it apart — then each
//! message), which is where a conversation's turns extend each other.
//!
//! Each simulator instance owns one cache ([`PromptCache`] in `server::Shared`), so two
//! instances behave like two deployments that do not share a cache. Memory is bounded: at most
//! [`MAX_PREFIXES`] remembered prefixes, the least recently used evicted first; prefixes
//! shorter than [`MIN_CACHED_TOKENS`] can never be reported and are not remembered.
//!
//! A prefix is identified by a 64-bit hash chained over the model name and the JSON of each
//! segment (structure and text, not its serialisation), so two prompts share a prefix exactly
//! when they begin with the same segments.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Prompts shorter than this are never cached (OpenAI: "caching is enabled for prompts
/// containing 1024 tokens or more").
pub(crate) const MIN_CACHED_TOKENS: u64 = 1024;
/// The cached part is a multiple of this ("cache hits occur in increments of 128 tokens").
pub(crate) const CACHE_INCREMENT: u64 = 128;
/// Bound on remembered prefixes per simulator instance.
pub(crate) const MAX_PREFIXES: usize = 10_000;

/// The prefixes of one prompt at its message boundaries: for each boundary, the hash of
/// everything up to it and its length in prompt tokens (as the format reports usage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PromptPrefixes {
    boundaries: Vec<Boundary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Boundary {
    hash: u64,
    tokens: u64,
}

impl PromptPrefixes {
    /// The prefixes of a prompt of `total` tokens (what the format reports as prompt
    /// tokens) sent to `model`: first the leading block `head` (tools, system — whatever the
    /// format counts outside its messages), then each message of `messages`, whose tokens
    /// `message_tokens` gives with its per-turn framing. The head's tokens are what `total`
    /// leaves after the messages and the `priming` tokens, so the boundaries always agree
    /// with the reported usage.
    pub(crate) fn new(
        model: &str,
        head: &[Option<&Value>],
        messages: &[Value],
        message_tokens: impl Fn(&Value) -> u64,
        priming: u64,
        total: u64,
    ) -> Self {
        let per_message: Vec<u64> = messages.iter().map(message_tokens).collect();
        let in_messages: u64 = per_message.iter().sum();
        let head_tokens = total.saturating_sub(priming).saturating_sub(in_messages);

        let mut h = DefaultHasher::new();
        model.hash(&mut h);
        let mut boundaries = Vec::with_capacity(messages.len() + 1);
        let mut tokens = head_tokens;
        for v in head {
            match v {
                Some(v) => hash_value(v, &mut h),
                None => 0u8.hash(&mut h),
            }
        }
        if head_tokens > 0 {
            boundaries.push(Boundary {
                hash: h.finish(),
                tokens,
            });
        }
        for (m, t) in messages.iter().zip(per_message) {
            // A separator, so a message is never confused with part of its neighbour.
            0xA5u8.hash(&mut h);
            hash_value(m, &mut h);
            tokens += t;
            boundaries.push(Boundary {
                hash: h.finish(),
                tokens,
            });
        }
        PromptPrefixes { boundaries }
    }
}

/// The array under `key` of a request body (`messages`, `contents`), empty when absent.
pub(crate) fn messages_of<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Feeds a JSON value's structure and content into `h` (key order included: a provider sees
/// a reordered object as different text).
fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Value::Number(n) => {
            2u8.hash(h);
            if let Some(u) = n.as_u64() {
                0u8.hash(h);
                u.hash(h);
            } else if let Some(i) = n.as_i64() {
                1u8.hash(h);
                i.hash(h);
            } else {
                2u8.hash(h);
                n.as_f64().map(f64::to_bits).hash(h);
            }
        }
        Value::String(s) => {
            3u8.hash(h);
            s.hash(h);
        }
        Value::Array(items) => {
            4u8.hash(h);
            items.len().hash(h);
            for i in items {
                hash_value(i, h);
            }
        }
        Value::Object(map) => {
            5u8.hash(h);
            map.len().hash(h);
            for (k, v) in map {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

/// The tokens a provider reports as cached when `prefix` tokens of the prompt were seen
/// before: rounded down to [`CACHE_INCREMENT`], nothing below [`MIN_CACHED_TOKENS`].
pub(crate) fn reportable(prefix: u64) -> u64 {
    if prefix < MIN_CACHED_TOKENS {
        0
    } else {
        prefix / CACHE_INCREMENT * CACHE_INCREMENT
    }
}

/// One simulator's remembered prefixes. Not thread-safe by itself: `server::Shared` keeps it
/// behind a mutex held only for the lookup-and-remember of one request.
#[derive(Debug)]
pub(crate) struct PromptCache {
    entries: HashMap<u64, Entry>,
    /// `(hash, seq)` in the order prefixes were last used, oldest first. A prefix used again
    /// gets a new `seq` and a new element; elements whose `seq` no longer matches their entry
    /// are stale and skipped (and compacted away when they pile up).
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tokens: u64,
    last_used: Instant,
    seq: u64,
}

impl Default for PromptCache {
    fn default() -> Self {
        PromptCache::with_capacity(MAX_PREFIXES)
    }
}

impl PromptCache {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        PromptCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Serves one prompt at `now`: returns the tokens reported as cached (the longest prefix
    /// remembered and used less than `ttl` ago, through [`reportable`]), then remembers every
    /// cacheable prefix of this prompt as used at `now`, as a provider's cache does after
    /// processing it. `now` must not go backwards between calls.
    pub(crate) fn serve(&mut self, prompt: &PromptPrefixes, ttl: Duration, now: Instant) -> u64 {
        self.expire(ttl, now);
        let hit = prompt
            .boundaries
            .iter()
            .rev()
            .find(|b| {
                self.entries
                    .get(&b.hash)
                    .is_some_and(|e| e.tokens == b.tokens && fresh(e, ttl, now))
            })
            .map_or(0, |b| b.tokens);
        if !ttl.is_zero() {
            for b in prompt
                .boundaries
                .iter()
                .filter(|b| b.tokens >= MIN_CACHED_TOKENS)
            {
                self.touch(b.hash, b.tokens, now);
            }
        }
        reportable(hit)
    }

    /// Remembered prefixes.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn touch(&mut self, hash: u64, tokens: u64, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            hash,
            Entry {
                tokens,
                last_used: now,
                seq,
            },
        );
        self.order.push_back((hash, seq));
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some((h, s)) => {
                    if self.entries.get(&h).is_some_and(|e| e.seq == s) {
                        self.entries.remove(&h);
                    }
                }
                None => break,
            }
        }
        // Stale elements come from reused prefixes; dropping them once they outnumber the
        // live ones keeps `order` within twice the capacity at amortised O(1) per use.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(h, s)| entries.get(h).is_some_and(|e| e.seq == *s));
        }
    }

    /// Forgets prefixes not used for `ttl`: `order` is oldest first, so they are at its front.
    fn expire(&mut self, ttl: Duration, now: Instant) {
        while let Some(&(h, s)) = self.order.front() {
            match self.entries.get(&h) {
                Some(e) if e.seq == s => {
                    if fresh(e, ttl, now) {
                        break;
                    }
                    self.entries.remove(&h);
                }
                // Stale: the prefix was used again later (or is gone).
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

fn fresh(e: &Entry, ttl: Duration, now: Instant) -> bool {
    now.saturating_duration_since(e.last_used) < ttl
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Messages of `n` tokens each (the test's own accounting).
    fn prompt(model: &str, messages: &[Value], per_message: u64) -> PromptPrefixes {
        let total = messages.len() as u64 * per_message + 3;
        PromptPrefixes::new(model, &[], messages, |_| per_message, 3, total)
    }

    fn msgs(texts: &[&str]) -> Vec<Value> {
        texts
            .iter()
            .map(|t| json!({"role": "user", "content": t}))
            .collect()
    }

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn reportable_rounds_down_from_1024() {
        assert_eq!(reportable(0), 0);
        assert_eq!(reportable(1023), 0);
        assert_eq!(reportable(1024), 1024);
        assert_eq!(reportable(1151), 1024);
        assert_eq!(reportable(1152), 1152);
        assert_eq!(reportable(5000), 4992);
    }

    #[test]
    fn boundaries_follow_messages_and_head() {
        let tools = json!([{"type": "function"}]);
        let m = msgs(&["a", "b"]);
        let p = PromptPrefixes::new("m", &[Some(&tools)], &m, |_| 10, 3, 50);
        // head = 50 - 3 - 20
        let t: Vec<u64> = p.boundaries.iter().map(|b| b.tokens).collect();
        assert_eq!(t, vec![27, 37, 47]);
        // Same prefix, same hash; a different model or head, a different one.
        let q = PromptPrefixes::new("m", &[Some(&tools)], &m[..1], |_| 10, 3, 40);
        assert_eq!(q.boundaries[1], p.boundaries[1]);
        let r = PromptPrefixes::new("m2", &[Some(&tools)], &m[..1], |_| 10, 3, 40);
        assert_ne!(r.boundaries[1].hash, p.boundaries[1].hash);
        let s = PromptPrefixes::new("m", &[None], &m[..1], |_| 10, 3, 40);
        assert_ne!(s.boundaries[1].hash, p.boundaries[1].hash);
    }

    #[test]
    fn longest_fresh_prefix_wins_and_expires() {
        let mut c = PromptCache::default();
        let t0 = Instant::now();
        let turn1 = msgs(&["sys", "q1"]);
        let turn2 = msgs(&["sys", "q1", "a1", "q2"]);
        // 600 tokens a message: turn 1 has 1200 (+3 priming).
        assert_eq!(c.serve(&prompt("m", &turn1, 600), TTL, t0), 0);
        let hit = c.serve(&prompt("m", &turn2, 600), TTL, t0 + Duration::from_secs(1));
        assert_eq!(hit, 1152);
        // Turn 3 reuses all of turn 2's prompt (2400 tokens).
        let turn3 = msgs(&["sys", "q1", "a1", "q2", "a2", "q3"]);
        let t = t0 + Duration::from_secs(299);
        assert_eq!(c.serve(&prompt("m", &turn3, 600), TTL, t), 2304);
        // Nothing used for a whole TTL is forgotten.
        let later = t + TTL;
        assert_eq!(c.serve(&prompt("m", &turn3, 600), TTL, later), 0);
        // A zero TTL caches nothing.
        let mut c = PromptCache::default();
        c.serve(&prompt("m", &turn1, 600), Duration::ZERO, t0);
        assert_eq!(c.serve(&prompt("m", &turn1, 600), Duration::ZERO, t0), 0);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn short_prefixes_are_not_remembered() {
        let mut c = PromptCache::default();
        let t0 = Instant::now();
        let p = prompt("m", &msgs(&["a", "b"]), 500);
        assert_eq!(c.serve(&p, TTL, t0), 0);
        assert_eq!(c.serve(&p, TTL, t0), 0);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut c = PromptCache::with_capacity(4);
        let t0 = Instant::now();
        let convs: Vec<Vec<Value>> = (0..6).map(|i| msgs(&[&format!("c{i}")])).collect();
        for (i, m) in convs.iter().enumerate() {
            c.serve(
                &prompt("m", m, 2000),
                TTL,
                t0 + Duration::from_millis(i as u64),
            );
            assert!(c.len() <= 4);
        }
        let at = t0 + Duration::from_secs(1);
        // The two oldest were evicted, the newest are still there.
        assert_eq!(c.serve(&prompt("m", &convs[0], 2000), TTL, at), 0);
        assert_eq!(c.serve(&prompt("m", &convs[5], 2000), TTL, at), 1920);
        // Reusing one prefix over and over keeps the bookkeeping bounded too.
        for k in 0..100 {
            c.serve(
                &prompt("m", &convs[5], 2000),
                TTL,
                at + Duration::from_millis(k),
            );
        }
        assert!(c.order.len() <= 8);
        assert_eq!(c.len(), 4);
    }
}
