//! Listing a bucket the way S3 does: keys in UTF-8 byte order, narrowed by a prefix, rolled up into
//! common prefixes by a delimiter, paged by a marker. This module is the pure part: a state machine
//! fed with batches of keys in order, so the index can drive it with range queries and tests can
//! drive it with a `BTreeMap`.
//!
//! A marker (v1 `marker`, v2 `start-after` or a continuation token) excludes everything up to and
//! including itself, and a common prefix that sorts at or before the marker is not listed again:
//! that is how a page ending on a common prefix resumes after it.

/// One object as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Epoch milliseconds.
    pub last_modified: i64,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    /// Rolls keys up into common prefixes; an empty delimiter is no delimiter.
    pub delimiter: Option<String>,
    /// List only what sorts after this (exclusive).
    pub marker: Option<String>,
    /// At most this many objects and common prefixes together.
    pub max_keys: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListEntry>,
    pub common_prefixes: Vec<String>,
    /// More entries follow this page.
    pub truncated: bool,
    /// The last key or common prefix of the page, to resume after (set when truncated).
    pub next_marker: Option<String>,
}

/// Bytes no UTF-8 string contains: `prefix + [0xFF]` sorts after every key that starts with `prefix`.
const AFTER_ALL: u8 = 0xFF;

/// The exclusive upper bound of the keys that start with `prefix`.
pub fn prefix_upper_bound(prefix: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(prefix.len() + 1);
    v.extend_from_slice(prefix);
    v.push(AFTER_ALL);
    v
}

/// The listing state machine. Call [`Lister::next_fetch`] for where the next batch starts (keys
/// strictly greater than it, at least the prefix, below [`Lister::upper`]), [`Lister::feed`] the batch,
/// repeat until `next_fetch` is `None`, then [`Lister::finish`].
#[derive(Debug)]
pub struct Lister {
    query: ListQuery,
    upper: Vec<u8>,
    /// Exclusive lower bound of what has not been looked at yet.
    seek: Vec<u8>,
    /// A common prefix whose remaining keys are to be skipped.
    skipping: Option<String>,
    page: ListPage,
    last: Option<String>,
    done: bool,
}

impl Lister {
    /// Starts a listing.
    pub fn new(mut query: ListQuery) -> Self {
        if query.delimiter.as_deref() == Some("") {
            query.delimiter = None;
        }
        let upper = prefix_upper_bound(query.prefix.as_bytes());
        let seek = query.marker.as_deref().unwrap_or("").as_bytes().to_vec();
        let done = query.max_keys == 0;
        Self {
            query,
            upper,
            seek,
            skipping: None,
            page: ListPage::default(),
            last: None,
            done,
        }
    }

    /// How many keys a batch should hold: enough to fill the page and see whether more follow.
    pub fn batch_size(&self) -> usize {
        (self.query.max_keys + 1).clamp(100, 1001)
    }

    /// The prefix every listed key starts with.
    pub fn prefix(&self) -> &[u8] {
        self.query.prefix.as_bytes()
    }

    /// The exclusive upper bound of the keys to fetch.
    pub fn upper(&self) -> &[u8] {
        &self.upper
    }

    /// The exclusive lower bound of the next batch, or `None` when the page is complete.
    pub fn next_fetch(&self) -> Option<&[u8]> {
        (!self.done).then_some(self.seek.as_slice())
    }

    fn full(&self) -> bool {
        self.page.objects.len() + self.page.common_prefixes.len() >= self.query.max_keys
    }

    /// The common prefix `key` rolls up into, if any.
    fn group_of(&self, key: &str) -> Option<String> {
        let delimiter = self.query.delimiter.as_deref()?;
        let rest = key.get(self.query.prefix.len()..)?;
        let at = rest.find(delimiter)?;
        Some(key[..self.query.prefix.len() + at + delimiter.len()].to_string())
    }

    /// Takes the next batch of keys (in order, as asked for by [`Lister::next_fetch`]); a batch
    /// shorter than `requested` means the keys are exhausted.
    pub fn feed(&mut self, batch: Vec<ListEntry>, requested: usize) {
        let exhausted = batch.len() < requested;
        for entry in batch {
            if self.done {
                return;
            }
            if entry.key.as_bytes() <= self.seek.as_slice() {
                continue;
            }
            if let Some(group) = &self.skipping {
                if entry.key.starts_with(group.as_str()) {
                    continue;
                }
                self.skipping = None;
            }
            if let Some(group) = self.group_of(&entry.key) {
                let before_marker = self
                    .query
                    .marker
                    .as_deref()
                    .is_some_and(|m| group.as_bytes() <= m.as_bytes());
                if !before_marker {
                    if self.full() {
                        self.page.truncated = true;
                        self.done = true;
                        return;
                    }
                    self.page.common_prefixes.push(group.clone());
                    self.last = Some(group.clone());
                }
                self.seek = prefix_upper_bound(group.as_bytes());
                self.skipping = Some(group);
            } else {
                if self.full() {
                    self.page.truncated = true;
                    self.done = true;
                    return;
                }
                self.seek = entry.key.as_bytes().to_vec();
                self.last = Some(entry.key.clone());
                self.page.objects.push(entry);
            }
        }
        if exhausted {
            self.done = true;
        }
    }

    /// The page.
    pub fn finish(mut self) -> ListPage {
        if self.page.truncated {
            self.page.next_marker = self.last;
        }
        self.page
    }
}

/// An opaque continuation token for a marker (hex, so any key survives query strings and XML).
pub fn encode_token(marker: &str) -> String {
    hex::encode(marker.as_bytes())
}

/// The marker of a continuation token, if the token is one of ours.
pub fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

/// Percent-encodes a key for `encoding-type=url` responses (clients decode with `unquote_plus`, so
/// `+` and space must be encoded; `/` is left alone as S3 does).
pub fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use super::*;

    fn entry(key: &str) -> ListEntry {
        ListEntry {
            key: key.to_string(),
            size: key.len() as u64,
            etag: String::new(),
            last_modified: 0,
        }
    }

    /// Drives a lister over an in-memory bucket, in batches of `batch` keys.
    fn list(keys: &BTreeMap<Vec<u8>, ListEntry>, query: ListQuery, batch: usize) -> ListPage {
        let mut lister = Lister::new(query);
        let mut fetches = 0;
        while let Some(after) = lister.next_fetch() {
            fetches += 1;
            assert!(fetches < 10_000, "the lister does not make progress");
            if after >= lister.upper() {
                lister.feed(Vec::new(), batch);
                continue;
            }
            let got: Vec<ListEntry> = keys
                .range::<[u8], _>((Bound::Excluded(after), Bound::Excluded(lister.upper())))
                .filter(|(k, _)| k.as_slice() >= lister.prefix())
                .take(batch)
                .map(|(_, v)| v.clone())
                .collect();
            lister.feed(got, batch);
        }
        lister.finish()
    }

    fn bucket(keys: &[&str]) -> BTreeMap<Vec<u8>, ListEntry> {
        keys.iter().map(|k| (k.as_bytes().to_vec(), entry(k))).collect()
    }

    fn q(prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            marker: marker.map(Into::into),
            max_keys,
        }
    }

    fn keys_of(page: &ListPage) -> Vec<&str> {
        page.objects.iter().map(|e| e.key.as_str()).collect()
    }

    /// Every page of a listing, following markers the way clients follow continuation tokens.
    fn all_pages(keys: &BTreeMap<Vec<u8>, ListEntry>, base: ListQuery, batch: usize) -> (Vec<String>, Vec<String>) {
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut query = base;
        loop {
            let page = list(keys, query.clone(), batch);
            assert!(page.objects.len() + page.common_prefixes.len() <= query.max_keys);
            objects.extend(page.objects.iter().map(|e| e.key.clone()));
            prefixes.extend(page.common_prefixes.iter().cloned());
            if !page.truncated {
                return (objects, prefixes);
            }
            query.marker = page.next_marker;
        }
    }

    #[test]
    fn prefix_and_delimiter_roll_up_into_common_prefixes() {
        let b = bucket(&[
            "a",
            "a/b",
            "a/c/d",
            "ab",
            "b/x",
            "b/y",
            "c",
            "photos/2024/x.jpg",
            "photos/y.jpg",
        ]);
        let page = list(&b, q("", Some("/"), None, 1000), 3);
        assert_eq!(keys_of(&page), ["a", "ab", "c"]);
        assert_eq!(page.common_prefixes, ["a/", "b/", "photos/"]);
        assert!(!page.truncated && page.next_marker.is_none());

        let page = list(&b, q("a/", Some("/"), None, 1000), 2);
        assert_eq!(keys_of(&page), ["a/b"]);
        assert_eq!(page.common_prefixes, ["a/c/"]);

        let page = list(&b, q("photos/", None, None, 1000), 2);
        assert_eq!(keys_of(&page), ["photos/2024/x.jpg", "photos/y.jpg"]);

        // A prefix that is not a "directory" matches by bytes.
        let page = list(&b, q("a", None, None, 1000), 2);
        assert_eq!(keys_of(&page), ["a", "a/b", "a/c/d", "ab"]);
    }

    #[test]
    fn multi_character_delimiters_work() {
        let b = bucket(&["x--1--a", "x--1--b", "x--2", "y"]);
        let page = list(&b, q("", Some("--"), None, 1000), 10);
        assert_eq!(keys_of(&page), ["y"]);
        assert_eq!(page.common_prefixes, ["x--"]);
        let page = list(&b, q("x--", Some("--"), None, 1000), 10);
        assert_eq!(keys_of(&page), ["x--2"]);
        assert_eq!(page.common_prefixes, ["x--1--"]);
    }

    #[test]
    fn pages_resume_after_the_marker_without_repeats() {
        let names: Vec<String> = (0..2500).map(|i| format!("k/{:05}", i)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let b = bucket(&refs);
        let page = list(&b, q("", None, None, 1000), 500);
        assert_eq!(page.objects.len(), 1000);
        assert!(page.truncated);
        assert_eq!(page.next_marker.as_deref(), Some("k/00999"));
        for batch in [1, 7, 1001] {
            let (objects, prefixes) = all_pages(&b, q("", None, None, 333), batch);
            assert_eq!(objects, names);
            assert!(prefixes.is_empty());
        }
        // A page that ends exactly at the last key is not truncated.
        let page = list(&b, q("", None, None, 2500), 1001);
        assert!(!page.truncated && page.objects.len() == 2500);
    }

    #[test]
    fn pages_ending_on_a_common_prefix_resume_after_it() {
        let mut keys = vec!["a", "b/1", "b/2", "b/3", "c", "d/1", "e"];
        keys.sort();
        let b = bucket(&keys);
        for max in 1..=6 {
            for batch in [1, 2, 100] {
                let (objects, prefixes) = all_pages(&b, q("", Some("/"), None, max), batch);
                assert_eq!(objects, ["a", "c", "e"], "max {max} batch {batch}");
                assert_eq!(prefixes, ["b/", "d/"], "max {max} batch {batch}");
            }
        }
        let page = list(&b, q("", Some("/"), None, 2), 100);
        assert_eq!(keys_of(&page), ["a"]);
        assert_eq!(page.common_prefixes, ["b/"]);
        assert_eq!(page.next_marker.as_deref(), Some("b/"));
    }

    #[test]
    fn start_after_excludes_the_marker_and_earlier_keys() {
        let b = bucket(&["a", "b", "c/1", "c/2", "d"]);
        assert_eq!(
            keys_of(&list(&b, q("", None, Some("b"), 1000), 10)),
            ["c/1", "c/2", "d"]
        );
        assert_eq!(
            keys_of(&list(&b, q("", None, Some("bb"), 1000), 10)),
            ["c/1", "c/2", "d"]
        );
        assert_eq!(keys_of(&list(&b, q("", None, Some("c/1"), 1000), 10)), ["c/2", "d"]);
        // With a delimiter, a common prefix at or before the marker is not listed again.
        let page = list(&b, q("", Some("/"), Some("c/1"), 1000), 10);
        assert_eq!(keys_of(&page), ["d"]);
        assert!(page.common_prefixes.is_empty());
        let page = list(&b, q("", Some("/"), Some("b"), 1000), 10);
        assert_eq!(page.common_prefixes, ["c/"]);
        // A marker past the prefix lists nothing; a marker before it changes nothing.
        assert!(list(&b, q("c/", None, Some("z"), 1000), 10).objects.is_empty());
        assert_eq!(keys_of(&list(&b, q("c/", None, Some("a"), 1000), 10)), ["c/1", "c/2"]);
    }

    #[test]
    fn order_is_utf8_bytes_not_utf16() {
        // U+FF61 is EF BD A1 in UTF-8 and sorts before U+10000 (F0 90 80 80); in UTF-16 it sorts after.
        let b = bucket(&["\u{10000}", "\u{FF61}", "z", "é", "Z", "a b", "a+b", "a%2F", "日本/語"]);
        let page = list(&b, q("", None, None, 1000), 2);
        assert_eq!(
            keys_of(&page),
            ["Z", "a b", "a%2F", "a+b", "z", "é", "日本/語", "\u{FF61}", "\u{10000}"]
        );
        let page = list(&b, q("日本", Some("/"), None, 1000), 2);
        assert_eq!(page.common_prefixes, ["日本/"]);
    }

    #[test]
    fn zero_max_keys_lists_nothing() {
        let b = bucket(&["a"]);
        let page = list(&b, q("", None, None, 0), 10);
        assert!(page.objects.is_empty() && !page.truncated);
    }

    #[test]
    fn tokens_round_trip_any_key() {
        for k in ["", "a/b", "日本 +%", "\u{10000}"] {
            assert_eq!(decode_token(&encode_token(k)).as_deref(), Some(k));
        }
        assert_eq!(decode_token("zz"), None);
        assert_eq!(decode_token("ff"), None);
    }

    #[test]
    fn url_encoding_escapes_plus_and_space() {
        assert_eq!(url_encode("a b+c/d~e.f_g-h"), "a%20b%2Bc/d~e.f_g-h");
        assert_eq!(url_encode("é"), "%C3%A9");
    }
}
