//! Which variant of a primary key a request selects ([`Variants`]): the `Vary` of the last
//! response stored under each key, so that a request asks the cache once, its variant key
//! known before it asks; and which languages the stored variants are in.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// How many primary keys [`Variants`] remembers before it starts afresh.
const VARIANTS_MAX: usize = 100_000;

/// The `Vary` of the responses stored under each primary key, so that a request's cache
/// key is known before the cache is asked.
///
/// Only keys whose last stored response had a `Vary` are here. Each gets a generation,
/// part of its variant keys: forgetting a key (an invalidation, or starting afresh when
/// full) makes every variant stored before unreachable, and they age out of the cache's
/// LRU. Generations start from the clock, so a restarted proxy never reuses one.
pub struct Variants {
    known: Mutex<HashMap<String, Known>>,
    next: AtomicU64,
    /// Primary keys with a stored partial response (a 206, under [`piece_key`]), so that
    /// only their misses ask the cache for it.
    pieces: Mutex<HashSet<String>>,
}

/// What [`Variants`] knows of one primary key.
struct Known {
    vary: String,
    generation: u64,
    /// With a `Vary: Accept-Language`, the variants stored in one language
    /// (`Content-Language`, lower-cased) and their keys, at most [`LANGUAGES_MAX`].
    languages: Vec<(String, String)>,
}

/// How many languages of one primary key [`Variants`] remembers.
const LANGUAGES_MAX: usize = 16;

impl Default for Variants {
    fn default() -> Variants {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Variants {
            known: Mutex::default(),
            next: AtomicU64::new(now),
            pieces: Mutex::default(),
        }
    }
}

impl Variants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key to ask the cache for; `None` when the response varies on `*` (it is never
    /// reused) or the variant key would be too long for the wire.
    ///
    /// Under `Vary: Accept-Language`, a request whose own variant is not known to be
    /// stored, and which prefers one language above all
    /// ([`preferred_language`](freshness::preferred_language)), asks for the variant
    /// stored in that language: the one the origin would select (RFC 9111 §4.1 lets a
    /// cache use its knowledge of a field's semantics to match).
    pub(super) fn lookup_key(
        &self,
        primary: &str,
        request_headers: &[(String, String)],
    ) -> Option<String> {
        let known = self.lock();
        let Some(known) = known.get(primary) else {
            return Some(primary.to_owned());
        };
        let key = variant_key(primary, &known.vary, known.generation, request_headers)?;
        if known.languages.is_empty() || known.languages.iter().any(|(_, k)| *k == key) {
            return Some(key);
        }
        let in_language = freshness::preferred_language(request_headers).and_then(|top| {
            known
                .languages
                .iter()
                .find(|(language, _)| *language == top)
        });
        Some(in_language.map_or(key, |(_, k)| k.clone()))
    }

    /// Remembers that the variant stored under `key` is in `content_language`, when the
    /// primary key varies by Accept-Language only and that is one language tag.
    pub(super) fn learn_language(&self, primary: &str, key: &str, content_language: Option<&str>) {
        let Some(language) = content_language
            .map(|l| l.trim_matches([' ', '\t']).to_ascii_lowercase())
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        else {
            return;
        };
        let mut known = self.lock();
        let Some(known) = known.get_mut(primary) else {
            return;
        };
        if !freshness::varies_by_language_only(&known.vary) {
            return;
        }
        known.languages.retain(|(l, k)| *l != language && k != key);
        if known.languages.len() >= LANGUAGES_MAX {
            known.languages.remove(0);
        }
        known.languages.push((language, key.to_owned()));
    }

    /// Records the `Vary` of a response about to be stored and gives the key to store it
    /// under (`None`: do not store). `learned` is set when the key starts varying, so the
    /// caller can remove the entry stored under the primary key.
    pub(super) fn store_key(
        &self,
        primary: &str,
        vary: Option<&str>,
        request_headers: &[(String, String)],
    ) -> (Option<String>, bool) {
        let mut known = self.lock();
        let Some(vary) = vary.filter(|v| !v.trim().is_empty()) else {
            known.remove(primary);
            return (Some(primary.to_owned()), false);
        };
        if let Some(same) = known.get(primary).filter(|k| k.vary == vary) {
            let key = variant_key(primary, vary, same.generation, request_headers);
            return (key, false);
        }
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        if known.len() >= VARIANTS_MAX {
            known.clear();
        }
        let entry = Known {
            vary: vary.to_owned(),
            generation,
            languages: Vec::new(),
        };
        let learned = known.insert(primary.to_owned(), entry).is_none();
        (
            variant_key(primary, vary, generation, request_headers),
            learned,
        )
    }

    /// Forgets `primary`'s variants (a new generation starts when it is stored again) and
    /// its partial response.
    pub fn forget(&self, primary: &str) {
        self.lock().remove(primary);
        self.lock_pieces().remove(primary);
    }

    fn lock_pieces(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn has_piece(&self, primary: &str) -> bool {
        self.lock_pieces().contains(primary)
    }

    pub(super) fn add_piece(&self, primary: &str) {
        let mut pieces = self.lock_pieces();
        if pieces.len() >= VARIANTS_MAX {
            pieces.clear();
        }
        pieces.insert(primary.to_owned());
    }

    pub(super) fn forget_piece(&self, primary: &str) {
        self.lock_pieces().remove(primary);
    }

    /// Whether `primary` stores its responses under itself (no `Vary` known for it).
    pub(super) fn plain(&self, primary: &str) -> bool {
        !self.lock().contains_key(primary)
    }
}

/// `primary`, the generation and the request's Vary key, one per line: no primary key
/// holds a line break, so variant keys never meet primary ones.
pub(super) fn variant_key(
    primary: &str,
    vary: &str,
    generation: u64,
    request_headers: &[(String, String)],
) -> Option<String> {
    let selecting = freshness::vary_key(vary, request_headers)?;
    let key = format!("{primary}\n{generation:x}\n{selecting}");
    (key.len() <= MAX_KEY_LEN).then_some(key)
}
