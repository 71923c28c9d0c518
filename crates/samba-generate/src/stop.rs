//! When generation ends: stop strings over the streamed text, and stop token ids.
//!
//! Stop strings are matched against the *generated* text only (never the prompt), and the output
//! ends right before the earliest occurrence of any of them; the stop string itself is not
//! emitted. Because text arrives in chunks (one detokenised token at a time), a stop string can
//! straddle chunks ("Hel" + "lo STOP"). [`StopStream`] therefore holds back the longest tail of
//! the text that is the beginning of some stop string, and emits it only once the next chunk
//! shows it is not one.
//!
//! Why holding back that tail is enough: if a stop string s starts at byte p of the text, then
//! while the text has length L with p < L < p + |s|, the tail text[p..L] is a prefix of s, so at
//! least L - p bytes are held back and nothing at or after p has been emitted. Emitted text never
//! contains the start of a later match, so only the held-back tail plus the new chunk needs
//! searching, and memory stays bounded by the longest stop string plus one chunk.
//!
//! Stop tokens (end-of-text ids and the like) are checked on ids, before detokenising, by
//! [`StopTokens`]; a stop token's own text is not emitted.

use thiserror::Error;

/// A stop string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StopError {
    #[error(
        "stop string number {index} (counting from 0) is empty; an empty stop string would end \
         generation before the first token, so remove it"
    )]
    EmptyStopString { index: usize },
}

/// The set of stop strings; see the module docs for the matching rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStrings {
    stops: Vec<String>,
}

/// Where a stop string occurs in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopMatch {
    /// Byte offset of the first byte of the stop string; the output is the text before it.
    pub offset: usize,
    /// Index of the matching stop string in the list given to [`StopStrings::new`].
    pub stop_index: usize,
}

impl StopStrings {
    /// Rejects empty strings; duplicates are harmless and kept.
    pub fn new(stops: Vec<String>) -> Result<Self, StopError> {
        if let Some(index) = stops.iter().position(String::is_empty) {
            return Err(StopError::EmptyStopString { index });
        }
        Ok(Self { stops })
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    pub fn as_slice(&self) -> &[String] {
        &self.stops
    }

    /// The earliest occurrence of any stop string in `text`. When several start at the same
    /// offset, the first in the list is reported (the truncation is the same either way).
    pub fn find(&self, text: &str) -> Option<StopMatch> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(stop_index, stop)| {
                text.find(stop.as_str())
                    .map(|offset| StopMatch { offset, stop_index })
            })
            .min_by_key(|m| (m.offset, m.stop_index))
    }

    /// Length in bytes of the longest tail of `text` that is a proper prefix of some stop
    /// string: the part that must not be emitted yet, because the next chunk could complete a
    /// stop string. The tail always starts on a char boundary (it starts with the first byte of
    /// a stop string, which is not a UTF-8 continuation byte).
    pub fn partial_suffix_len(&self, text: &str) -> usize {
        let text = text.as_bytes();
        self.stops
            .iter()
            .filter_map(|stop| {
                let stop = stop.as_bytes();
                let longest = (stop.len() - 1).min(text.len());
                (1..=longest)
                    .rev()
                    .find(|&len| text.ends_with(&stop[..len]))
            })
            .max()
            .unwrap_or(0)
    }

    /// A whole (non-streamed) text cut before its first stop string, with the match if any.
    pub fn truncate<'a>(&self, text: &'a str) -> (&'a str, Option<StopMatch>) {
        match self.find(text) {
            Some(m) => (&text[..m.offset], Some(m)),
            None => (text, None),
        }
    }
}

/// What one [`StopStream::push`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStep<'a> {
    /// Text that is safe to show now; it never includes any part of a stop string.
    pub emit: &'a str,
    /// The stop string that ended generation, once one has appeared; then `emit` runs up to
    /// just before it and generation should stop.
    pub stopped: Option<&'a str>,
}

/// Incremental stop-string check over streamed text, one per generated sequence.
///
/// ```
/// use samba_generate::{StopStream, StopStrings};
/// let mut stream = StopStream::new(StopStrings::new(vec!["STOP".into()]).unwrap());
/// assert_eq!(stream.push("Hel").emit, "Hel");
/// let step = stream.push("lo ST");
/// assert_eq!((step.emit, step.stopped), ("lo ", None)); // "ST" may begin "STOP"
/// let step = stream.push("OP and more");
/// assert_eq!((step.emit, step.stopped), ("", Some("STOP")));
/// ```
#[derive(Debug, Clone)]
pub struct StopStream {
    stops: StopStrings,
    /// Text not yet known to be safe: the held-back tail, plus what `emitted` marks as returned
    /// by the last call (dropped at the start of the next one).
    pending: String,
    /// Bytes at the front of `pending` already handed out.
    emitted: usize,
    /// Index of the stop string that ended the stream.
    stopped: Option<usize>,
}

impl StopStream {
    pub fn new(stops: StopStrings) -> Self {
        Self {
            stops,
            pending: String::new(),
            emitted: 0,
            stopped: None,
        }
    }

    /// Adds the next chunk of generated text and returns what can be shown now. After a stop
    /// string has appeared, further chunks are ignored and emit nothing.
    pub fn push(&mut self, chunk: &str) -> StreamStep<'_> {
        if self.stopped.is_some() {
            return StreamStep {
                emit: "",
                stopped: self.stopped_string(),
            };
        }
        self.pending.drain(..self.emitted);
        self.pending.push_str(chunk);
        if let Some(m) = self.stops.find(&self.pending) {
            self.stopped = Some(m.stop_index);
            self.emitted = 0;
            let emit = &self.pending[..m.offset];
            return StreamStep {
                emit,
                stopped: Some(&self.stops.stops[m.stop_index]),
            };
        }
        self.emitted = self.pending.len() - self.stops.partial_suffix_len(&self.pending);
        StreamStep {
            emit: &self.pending[..self.emitted],
            stopped: None,
        }
    }

    /// Generation ended for another reason (token limit, stop token): the held-back tail was
    /// not a stop string after all, so it is returned for showing. Empty after a stop string.
    pub fn finish(&mut self) -> &str {
        if self.stopped.is_some() {
            return "";
        }
        self.pending.drain(..self.emitted);
        self.emitted = self.pending.len();
        &self.pending
    }

    /// The stop string that ended the stream, if any.
    pub fn stopped_string(&self) -> Option<&str> {
        self.stopped.map(|i| self.stops.stops[i].as_str())
    }
}

/// Token ids that end generation when sampled (end-of-text and the like).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopTokens {
    /// Sorted, without duplicates.
    ids: Vec<u32>,
}

impl StopTokens {
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Self { ids }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids in increasing order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> StopStrings {
        StopStrings::new(list.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    /// Streams `chunks` and returns (all emitted text, stop string, emit of each push).
    fn run(list: &[&str], chunks: &[&str]) -> (String, Option<String>, Vec<String>) {
        let mut stream = StopStream::new(stops(list));
        let mut out = String::new();
        let mut emits = Vec::new();
        for chunk in chunks {
            let step = stream.push(chunk);
            out.push_str(step.emit);
            emits.push(step.emit.to_string());
            if let Some(stop) = step.stopped {
                return (out, Some(stop.to_string()), emits);
            }
        }
        out.push_str(stream.finish());
        (out, None, emits)
    }

    #[test]
    fn stop_string_across_chunk_boundary() {
        let (out, stop, emits) = run(&["STOP"], &["Hel", "lo STOP", " never shown"]);
        assert_eq!(out, "Hello ");
        assert_eq!(stop.as_deref(), Some("STOP"));
        assert_eq!(emits, ["Hel", "lo "]);
    }

    #[test]
    fn stop_string_split_over_many_chunks() {
        let (out, stop, emits) = run(&["STOP"], &["Hello S", "T", "O", "P!"]);
        assert_eq!(out, "Hello ");
        assert_eq!(stop.as_deref(), Some("STOP"));
        assert_eq!(emits, ["Hello ", "", "", ""]);
    }

    #[test]
    fn partial_match_is_held_back_then_released() {
        // "ST" could begin "STOP": held; "ART" shows it does not.
        let (out, stop, emits) = run(&["STOP"], &["a ST", "ART b"]);
        assert_eq!(stop, None);
        assert_eq!(emits, ["a ", "START b"]);
        assert_eq!(out, "a START b");
    }

    #[test]
    fn held_back_tail_is_released_by_finish() {
        let mut stream = StopStream::new(stops(&["STOP"]));
        assert_eq!(stream.push("the end ST").emit, "the end ");
        assert_eq!(stream.finish(), "ST");
        assert_eq!(stream.stopped_string(), None);
    }

    #[test]
    fn overlapping_prefixes() {
        // The stop string overlaps itself: "aaab" must stop at offset 1, not be missed because
        // the first 'a' started a failed attempt.
        let (out, stop, emits) = run(&["aab"], &["a", "a", "a", "b"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("a", Some("aab")));
        assert_eq!(emits, ["", "", "a", ""]);

        // "aba" is held as a possible start; "abaaba" shows it was not, but its tail "aba" is.
        let (out, stop, emits) = run(&["abab"], &["aba", "aba", "b"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("aba", Some("abab")));
        assert_eq!(emits, ["", "aba", ""]);

        // One stop string a prefix of another: the earliest occurrence wins.
        let (out, stop, _) = run(&["</s>", "</"], &["done<", "/s>"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("done", Some("</s>")));
        let (out, stop, _) = run(&["</s>", "s>"], &["a</x s>"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("a</x ", Some("s>")));
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let (out, stop, _) = run(&["END", "\n\n"], &["one\n", "\ntwo END"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("one", Some("\n\n")));
        // Longest held tail over all stop strings: "\n" could begin "\n\n", "EN" could begin "END".
        assert_eq!(stops(&["END", "\n\n"]).partial_suffix_len("x\n"), 1);
        assert_eq!(stops(&["END", "\n\n"]).partial_suffix_len("xEN"), 2);
    }

    #[test]
    fn no_false_positives() {
        let list = ["STOP", "###"];
        let chunks = ["S", "TO", "RM ## ", "#", "# STO", "NE", " Stop stop ST0P"];
        let (out, stop, _) = run(&list, &chunks);
        assert_eq!(stop, None);
        assert_eq!(out, chunks.concat());
        assert_eq!(stops(&list).find(&out), None);
    }

    #[test]
    fn stop_at_the_very_start_emits_nothing() {
        let (out, stop, emits) = run(&["STOP"], &["STOP", "more"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("", Some("STOP")));
        assert_eq!(emits, [""]);
    }

    #[test]
    fn pushes_after_a_stop_emit_nothing() {
        let mut stream = StopStream::new(stops(&["X"]));
        assert_eq!(stream.push("aXb").emit, "a");
        let step = stream.push("more");
        assert_eq!((step.emit, step.stopped), ("", Some("X")));
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn no_stop_strings_emit_everything_at_once() {
        let (out, stop, emits) = run(&[], &["a", "bc"]);
        assert_eq!((out.as_str(), stop), ("abc", None));
        assert_eq!(emits, ["a", "bc"]);
    }

    #[test]
    fn multibyte_text_is_held_back_on_char_boundaries() {
        let (out, stop, emits) = run(&["élan"], &["café é", "l", "an"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("café ", Some("élan")));
        assert_eq!(emits[0], "café ");
        // "é" is a prefix of "élan"; the tail starts at the char boundary before it.
        assert_eq!(stops(&["élan"]).partial_suffix_len("xé"), "é".len());
        let (out, stop, _) = run(&["→"], &["a ", "→ b"]);
        assert_eq!((out.as_str(), stop.as_deref()), ("a ", Some("→")));
    }

    #[test]
    fn truncate_cuts_a_whole_text() {
        let s = stops(&["STOP", "\n\n"]);
        assert_eq!(
            s.truncate("abc\n\nSTOP"),
            (
                "abc",
                Some(StopMatch {
                    offset: 3,
                    stop_index: 1
                })
            )
        );
        assert_eq!(s.truncate("abc"), ("abc", None));
    }

    #[test]
    fn stream_matches_whole_text_truncation_for_every_split() {
        let list = ["<|end|>", "ab", "bba"];
        let text = "xx <|en <|end b bbab <|end|> tail";
        let whole = stops(&list).truncate(text).0.to_string();
        for split in 0..=text.len() {
            for split2 in split..=text.len() {
                let chunks = [&text[..split], &text[split..split2], &text[split2..]];
                let (out, _, _) = run(&list, &chunks);
                assert_eq!(out, whole, "chunks {chunks:?}");
            }
        }
    }

    #[test]
    fn empty_stop_string_is_an_error() {
        let err = StopStrings::new(vec!["ok".into(), String::new()]).unwrap_err();
        assert_eq!(err, StopError::EmptyStopString { index: 1 });
        assert!(err.to_string().contains("empty"));
    }

    #[test]
    fn stop_tokens_are_a_set() {
        let tokens = StopTokens::new([7, 2, 7, 0]);
        assert_eq!(tokens.ids(), &[0, 2, 7]);
        assert!(tokens.contains(0) && tokens.contains(2) && tokens.contains(7));
        assert!(!tokens.contains(1) && !tokens.contains(u32::MAX));
        assert!(StopTokens::default().is_empty());
        assert!(!StopTokens::default().contains(0));
    }
}
