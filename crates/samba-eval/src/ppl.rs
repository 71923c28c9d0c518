//! Perplexity of long documents, streamed through the recurrent state.
//!
//! A document of T tokens gives T - 1 predictions: token t (1-based position t) predicted from
//! tokens 0..t. Two views:
//! - by position bucket: mean NLL of the predictions whose position falls in a log-spaced bucket
//!   [lo, hi), pooled over documents: does the model keep improving as the context grows?
//! - at each requested length L: the perplexity of the first L tokens (L - 1 predictions) of
//!   every document that has L tokens; documents shorter than L are listed, not padded.
//!
//! perplexity = exp(sum NLL / predictions).

use std::path::PathBuf;

use samba_runtime::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::scoring::score_tokens;

/// A tokenized document and where it came from.
pub struct Document {
    pub path: PathBuf,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PplOptions {
    /// Report cumulative perplexity at these lengths (tokens).
    pub lengths: Vec<usize>,
    /// Tokens per forward pass.
    pub chunk: usize,
    /// Buckets per doubling of the position.
    pub buckets_per_octave: usize,
    /// Score at most this many tokens of each document (None: all of it).
    pub max_tokens: Option<usize>,
}

impl Default for PplOptions {
    fn default() -> Self {
        PplOptions {
            lengths: Vec::new(),
            chunk: 512,
            buckets_per_octave: 2,
            max_tokens: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Positions lo..hi (1-based token positions, hi exclusive).
    pub lo: usize,
    pub hi: usize,
    pub predictions: u64,
    pub mean_nll: f64,
    pub perplexity: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AtLength {
    pub length: usize,
    /// Documents with at least `length` tokens, which the numbers below pool.
    pub documents: usize,
    pub mean_nll: Option<f64>,
    pub perplexity: Option<f64>,
    /// Documents shorter than `length`, with their token counts.
    pub too_short: Vec<(PathBuf, usize)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocumentResult {
    pub path: PathBuf,
    pub tokens: usize,
    /// Tokens scored (the document, or its first `max_tokens`).
    pub scored: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PplReport {
    pub documents: Vec<DocumentResult>,
    pub buckets: Vec<Bucket>,
    pub at_length: Vec<AtLength>,
}

/// Bucket edges 1 = e_0 < e_1 < ... covering positions 1..=max_position, `per_octave` per
/// doubling (rounded to whole positions, duplicates dropped).
pub fn bucket_edges(max_position: usize, per_octave: usize) -> Vec<usize> {
    let per_octave = per_octave.max(1) as f64;
    let mut edges = vec![1usize];
    let mut k = 1.0;
    while *edges.last().unwrap_or(&1) <= max_position {
        let e = 2f64.powf(k / per_octave).round() as usize;
        if e > *edges.last().unwrap_or(&0) {
            edges.push(e);
        }
        k += 1.0;
    }
    edges
}

fn ppl(sum: f64, n: u64) -> (f64, f64) {
    let mean = sum / n.max(1) as f64;
    (mean, mean.exp())
}

/// Scores every document and aggregates. `on_tokens(n)` reports n more tokens scored.
pub fn evaluate_ppl(
    model: &Engine,
    documents: &[Document],
    options: &PplOptions,
    mut on_tokens: impl FnMut(u64),
) -> Result<PplReport> {
    if options.chunk == 0 {
        return Err(EvalError::Options("--chunk must be at least 1".into()));
    }
    let scored_len = |d: &Document| {
        options
            .max_tokens
            .map_or(d.tokens.len(), |m| d.tokens.len().min(m))
    };
    let longest = documents.iter().map(scored_len).max().unwrap_or(0);
    let edges = bucket_edges(longest.saturating_sub(1), options.buckets_per_octave);
    let mut bucket_sum = vec![0.0f64; edges.len()];
    let mut bucket_n = vec![0u64; edges.len()];
    let mut lengths = options.lengths.clone();
    lengths.sort_unstable();
    lengths.dedup();
    let mut at_sum = vec![0.0f64; lengths.len()];
    let mut at_docs = vec![0usize; lengths.len()];
    let mut too_short: Vec<Vec<(PathBuf, usize)>> = vec![Vec::new(); lengths.len()];
    let mut results = Vec::new();
    for doc in documents {
        let n = scored_len(doc);
        if n < 2 {
            return Err(EvalError::DocumentTooShort {
                path: doc.path.clone(),
                tokens: doc.tokens.len(),
            });
        }
        let mut reported = 0;
        let logprobs = score_tokens(model, &doc.tokens[..n], options.chunk, |lp| {
            on_tokens((lp.len() - reported) as u64);
            reported = lp.len();
        })?;
        // logprobs[i] is the prediction of position i + 1.
        let mut bucket = 0;
        let mut cumulative = 0.0;
        let mut next_length = 0;
        for (i, lp) in logprobs.iter().enumerate() {
            let position = i + 1;
            while bucket + 1 < edges.len() && position >= edges[bucket + 1] {
                bucket += 1;
            }
            bucket_sum[bucket] -= lp;
            bucket_n[bucket] += 1;
            cumulative -= lp;
            // The first L tokens hold L - 1 predictions: positions 1..=L-1.
            while next_length < lengths.len() && lengths[next_length] <= position + 1 {
                if lengths[next_length] == position + 1 {
                    at_sum[next_length] += cumulative;
                    at_docs[next_length] += 1;
                }
                next_length += 1;
            }
        }
        for (k, &length) in lengths.iter().enumerate() {
            if doc.tokens.len() < length || (length > n) {
                too_short[k].push((doc.path.clone(), doc.tokens.len()));
            }
        }
        let (mean_nll, perplexity) = ppl(cumulative, logprobs.len() as u64);
        results.push(DocumentResult {
            path: doc.path.clone(),
            tokens: doc.tokens.len(),
            scored: n,
            mean_nll,
            perplexity,
        });
    }
    let buckets = edges
        .windows(2)
        .enumerate()
        .filter(|(k, _)| bucket_n[*k] > 0)
        .map(|(k, w)| {
            let (mean_nll, perplexity) = ppl(bucket_sum[k], bucket_n[k]);
            Bucket {
                lo: w[0],
                hi: w[1],
                predictions: bucket_n[k],
                mean_nll,
                perplexity,
            }
        })
        .collect();
    let at_length = lengths
        .iter()
        .enumerate()
        .map(|(k, &length)| {
            let predictions = at_docs[k] as u64 * (length as u64).saturating_sub(1);
            let (mean, p) = ppl(at_sum[k], predictions);
            let some = at_docs[k] > 0 && length >= 2;
            AtLength {
                length,
                documents: at_docs[k],
                mean_nll: some.then_some(mean),
                perplexity: some.then_some(p),
                too_short: std::mem::take(&mut too_short[k]),
            }
        })
        .collect();
    Ok(PplReport {
        documents: results,
        buckets,
        at_length,
    })
}
