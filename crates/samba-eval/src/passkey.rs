//! Passkey retrieval (the paper's Section 4.2, after Mohtashami & Jaggi's Landmark Attention):
//! a 5-digit pass key hidden at a chosen depth in repeated filler sentences, the question at
//! the end; the model must continue "The pass key is" with the key.
//!
//! A prompt is built from separately tokenized pieces, so its length in tokens is exact:
//!
//! ```text
//! [intro][filler ... ][key sentence][filler ...][question]      answer: " 12345"
//!        <- before -->              <-- after -->
//! ```
//!
//! before + after = length - |intro| - |key sentence| - |question| filler tokens, the filler
//! being the sentences below cycled; `before` is the sentence boundary nearest to
//! depth * (before + after), so the key sits at the requested depth of the filler to within
//! one filler sentence (depth 0: right after the intro; 1: right before the question). The
//! last filler sentence may be cut to make the length exact.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samba_data::TextTokenizer;
use samba_runtime::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::scoring::greedy_decode;

pub const INTRO: &str = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there.";
pub const FILLER: [&str; 5] = [
    " The grass is green.",
    " The sky is blue.",
    " The sun is yellow.",
    " Here we go.",
    " There and back again.",
];
pub const QUESTION: &str = "\nWhat is the pass key? The pass key is";

pub fn key_sentence(key: &str) -> String {
    format!(" The pass key is {key}. Remember it. {key} is the pass key.")
}

/// The pieces of a prompt, tokenized once per tokenizer.
pub struct PasskeyTokens {
    intro: Vec<u32>,
    filler: Vec<Vec<u32>>,
    question: Vec<u32>,
}

impl PasskeyTokens {
    pub fn new(tokenizer: &TextTokenizer) -> Result<PasskeyTokens> {
        Ok(PasskeyTokens {
            intro: tokenizer.encode(INTRO)?,
            filler: FILLER
                .iter()
                .map(|s| tokenizer.encode(s))
                .collect::<Result<_, _>>()?,
            question: tokenizer.encode(QUESTION)?,
        })
    }

    /// The longest filler sentence in tokens: how far from the requested depth the key may sit.
    pub fn max_sentence_tokens(&self) -> usize {
        self.filler.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// One prompt with its pass key.
#[derive(Debug, Clone)]
pub struct PasskeySample {
    /// The prompt: exactly the requested length.
    pub tokens: Vec<u32>,
    /// " 12345" tokenized: what should follow the prompt.
    pub answer: Vec<u32>,
    pub key: String,
    /// Requested depth, 0..=1.
    pub depth: f64,
    /// Index in `tokens` of the key sentence's first token.
    pub key_position: usize,
    /// Filler tokens before and after the key sentence.
    pub filler_before: usize,
    pub filler_after: usize,
}

/// The first `n` tokens of the cycled filler sentences, and the sentence boundaries
/// (token offsets, 0 included) it passes.
fn filler_tokens(pieces: &PasskeyTokens, n: usize) -> (Vec<u32>, Vec<usize>) {
    let mut out = Vec::with_capacity(n + pieces.max_sentence_tokens());
    let mut boundaries = vec![0];
    if pieces.filler.iter().all(Vec::is_empty) {
        return (out, boundaries);
    }
    for sentence in pieces.filler.iter().cycle() {
        if out.len() >= n {
            break;
        }
        out.extend_from_slice(sentence);
        boundaries.push(out.len());
    }
    out.truncate(n);
    (out, boundaries)
}

/// A prompt of exactly `length` tokens with `key` at `depth` (0..=1) of the filler.
pub fn passkey_sample(
    pieces: &PasskeyTokens,
    tokenizer: &TextTokenizer,
    length: usize,
    depth: f64,
    key: u32,
) -> Result<PasskeySample> {
    if !(0.0..=1.0).contains(&depth) {
        return Err(EvalError::Options(format!(
            "passkey depth {depth} is outside 0..=1"
        )));
    }
    let key = key.to_string();
    let key_tokens = tokenizer.encode(&key_sentence(&key))?;
    let fixed = pieces.intro.len() + key_tokens.len() + pieces.question.len();
    if length < fixed {
        return Err(EvalError::Options(format!(
            "passkey length {length} is too short: the intro, key sentence and question alone take {fixed} tokens"
        )));
    }
    let filler = length - fixed;
    // Both halves come from one filler stream: before is cut at a sentence boundary and the
    // stream continues after the key.
    let (stream, boundaries) = filler_tokens(pieces, filler);
    let target = depth * filler as f64;
    let before = boundaries
        .iter()
        .copied()
        .filter(|&b| b <= filler)
        .min_by(|a, b| {
            (*a as f64 - target)
                .abs()
                .total_cmp(&(*b as f64 - target).abs())
        })
        .unwrap_or(0);
    let mut tokens = Vec::with_capacity(length);
    tokens.extend_from_slice(&pieces.intro);
    tokens.extend_from_slice(&stream[..before]);
    let key_position = tokens.len();
    tokens.extend_from_slice(&key_tokens);
    tokens.extend_from_slice(&stream[before..]);
    tokens.extend_from_slice(&pieces.question);
    debug_assert_eq!(tokens.len(), length);
    Ok(PasskeySample {
        tokens,
        answer: tokenizer.encode(&format!(" {key}"))?,
        key,
        depth,
        key_position,
        filler_before: before,
        filler_after: filler - before,
    })
}

/// Digits of every key ([`random_key`]).
pub const KEY_DIGITS: usize = 5;

/// A random 5-digit key.
pub fn random_key(rng: &mut impl Rng) -> u32 {
    rng.random_range(10_000..100_000)
}

/// `count` fine-tuning texts of `length` tokens each (prompt and answer together, when
/// tokenized piece by piece as here), each with a random key at a random depth. Returns the
/// texts ready for `{"text": ...}` JSON lines.
pub fn passkey_training_texts(
    tokenizer: &TextTokenizer,
    length: usize,
    count: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let pieces = PasskeyTokens::new(tokenizer)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let key = random_key(&mut rng);
            let depth = rng.random_range(0.0..=1.0);
            let answer = tokenizer.encode(&format!(" {key}"))?.len();
            let prompt_len = length.checked_sub(answer).ok_or_else(|| {
                EvalError::Options(format!(
                    "passkey length {length} is shorter than the answer"
                ))
            })?;
            let s = passkey_sample(&pieces, tokenizer, prompt_len, depth, key)?;
            let mut ids = s.tokens;
            ids.extend_from_slice(&s.answer);
            Ok(tokenizer.decode(&ids)?)
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct PasskeyOptions {
    pub lengths: Vec<usize>,
    /// Depths 0, 1/(depths-1), ..., 1.
    pub depths: usize,
    /// Keys per (length, depth).
    pub keys: usize,
    pub seed: u64,
    pub chunk: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyTrial {
    pub key: String,
    pub key_position: usize,
    pub output: String,
    pub correct: bool,
    /// Digits of the key the output has in their places ([`digits_correct`]).
    #[serde(default)]
    pub digits_correct: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyCell {
    pub length: usize,
    pub depth: f64,
    pub accuracy: f64,
    /// The fraction of the keys' digits retrieved in place (chance: 0.1).
    #[serde(default)]
    pub digit_accuracy: f64,
    pub trials: Vec<PasskeyTrial>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyReport {
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    /// accuracy[length index][depth index].
    pub accuracy: Vec<Vec<f64>>,
    /// Mean accuracy per length.
    pub accuracy_by_length: Vec<f64>,
    /// Mean fraction of digits retrieved in place per length (chance: 0.1).
    #[serde(default)]
    pub digit_accuracy_by_length: Vec<f64>,
    pub cells: Vec<PasskeyCell>,
}

/// The `n` depths 0..=1, evenly spaced (one depth: 0.5).
pub fn depth_grid(n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![0.5],
        _ => (0..n).map(|i| i as f64 / (n - 1) as f64).collect(),
    }
}

/// Is `output` (the decoded continuation) the key? Leading spaces are ignored, and the key
/// must not run on into more digits.
pub fn is_correct(output: &str, key: &str) -> bool {
    let digits: String = output
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits == key
}

/// How many of the key's digits the output has in their places (leading spaces ignored): a
/// graded measure for models that retrieve part of a key (chance: a tenth of the digits).
pub fn digits_correct(output: &str, key: &str) -> usize {
    output
        .trim_start()
        .chars()
        .zip(key.chars())
        .filter(|(o, k)| o == k)
        .count()
}

/// Greedy retrieval of `keys` random keys at every (length, depth); `on_trial()` after each.
pub fn evaluate_passkey(
    model: &Engine,
    tokenizer: &TextTokenizer,
    options: &PasskeyOptions,
    mut on_trial: impl FnMut(),
) -> Result<PasskeyReport> {
    let pieces = PasskeyTokens::new(tokenizer)?;
    let depths = depth_grid(options.depths);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut cells = Vec::new();
    let mut accuracy = Vec::new();
    let mut digit_accuracy = Vec::new();
    for &length in &options.lengths {
        let mut row = Vec::new();
        let mut digit_row = Vec::new();
        for &depth in &depths {
            let mut trials = Vec::new();
            for _ in 0..options.keys {
                let key = random_key(&mut rng);
                let s = passkey_sample(&pieces, tokenizer, length, depth, key)?;
                // Two tokens beyond the answer show whether the model runs on into more digits.
                let out = greedy_decode(model, &s.tokens, s.answer.len() + 2, options.chunk, None)?;
                let output = tokenizer.decode(&out)?;
                trials.push(PasskeyTrial {
                    correct: is_correct(&output, &s.key),
                    digits_correct: digits_correct(&output, &s.key),
                    key: s.key,
                    key_position: s.key_position,
                    output,
                });
                on_trial();
            }
            let n = trials.len().max(1) as f64;
            let acc = trials.iter().filter(|t| t.correct).count() as f64 / n;
            let digits: usize = trials.iter().map(|t| t.digits_correct).sum();
            row.push(acc);
            let digit_acc = digits as f64 / (n * KEY_DIGITS as f64);
            digit_row.push(digit_acc);
            cells.push(PasskeyCell {
                length,
                depth,
                accuracy: acc,
                digit_accuracy: digit_acc,
                trials,
            });
        }
        accuracy.push(row);
        digit_accuracy.push(digit_row);
    }
    let mean = |r: &Vec<f64>| r.iter().sum::<f64>() / r.len().max(1) as f64;
    let accuracy_by_length = accuracy.iter().map(mean).collect();
    let digit_accuracy_by_length = digit_accuracy.iter().map(mean).collect();
    Ok(PasskeyReport {
        lengths: options.lengths.clone(),
        depths,
        accuracy,
        accuracy_by_length,
        digit_accuracy_by_length,
        cells,
    })
}
