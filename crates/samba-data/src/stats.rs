//! `data stats`: what a prepared data folder holds (documents, tokens, bytes per token, the
//! most frequent tokens), read back from the shards themselves rather than trusted from the
//! index alone.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::index::{DataIndex, SkippedSummary, Split};
use crate::reader::TokenShards;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone, Serialize)]
pub struct SplitStats {
    pub split: Split,
    pub shards: usize,
    pub documents: u64,
    pub tokens: u64,
    pub text_bytes: u64,
    /// UTF-8 bytes of text per token (EOS included in the tokens).
    pub bytes_per_token: f64,
    /// EOS tokens found in the shards: equals `documents` in a sound folder.
    pub eos_found: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenCount {
    pub id: u32,
    pub count: u64,
    /// The token's string, when the tokenizer could be loaded.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataStats {
    pub dir: PathBuf,
    pub dtype: String,
    pub vocab_size: usize,
    pub tokenizer_sha256: String,
    pub sources: usize,
    pub splits: Vec<SplitStats>,
    pub skipped: SkippedSummary,
    /// Distinct token ids that occur at least once.
    pub distinct_tokens: usize,
    /// Entropy of the token frequencies, -sum p ln p (nats): the loss of a model that knows only
    /// how often each token occurs. exp of it is that model's perplexity, the baseline a
    /// language model must beat.
    pub unigram_entropy_nats: f64,
    pub unigram_perplexity: f64,
    pub top_tokens: Vec<TokenCount>,
}

/// Count everything in `dir`; `tokenizer` (if given) names the top tokens.
pub fn compute(dir: &Path, top: usize, tokenizer: Option<&TextTokenizer>) -> Result<DataStats> {
    let index = DataIndex::load(dir)?;
    let vocab = index.tokenizer.vocab_size.max(1);
    let eos = index.tokenizer.eos_id;
    let mut counts = vec![0u64; vocab];
    let mut splits = Vec::new();
    for split in [Split::Train, Split::Val] {
        let shards = TokenShards::open(dir, split)?;
        // Per-shard histograms in parallel, then summed: [vocab] each.
        let hist = (0..shards.shard_lens().len())
            .into_par_iter()
            .map(|s| -> Result<Vec<u64>> {
                let mut h = vec![0u64; vocab];
                for t in shards.shard_tokens(s)? {
                    // An id beyond the vocabulary would be a corrupt shard; count it as the last.
                    h[(t as usize).min(vocab - 1)] += 1;
                }
                Ok(h)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut eos_found = 0;
        for h in hist {
            eos_found += h.get(eos as usize).copied().unwrap_or(0);
            for (c, x) in counts.iter_mut().zip(h) {
                *c += x;
            }
        }
        let s = index.split(split);
        splits.push(SplitStats {
            split,
            shards: s.shards.len(),
            documents: s.documents,
            tokens: s.tokens,
            text_bytes: s.text_bytes,
            bytes_per_token: s.text_bytes as f64 / s.tokens.max(1) as f64,
            eos_found,
        });
    }
    let distinct_tokens = counts.iter().filter(|&&c| c > 0).count();
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let unigram_entropy_nats: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.ln()
        })
        .sum();
    let mut order: Vec<u32> = (0..vocab as u32)
        .filter(|&i| counts[i as usize] > 0)
        .collect();
    order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    let top_tokens = order
        .into_iter()
        .take(top)
        .map(|id| TokenCount {
            id,
            count: counts[id as usize],
            text: tokenizer.and_then(|t| t.token_text(id)),
        })
        .collect();
    Ok(DataStats {
        dir: dir.to_path_buf(),
        dtype: index.dtype.name().to_string(),
        vocab_size: index.tokenizer.vocab_size,
        tokenizer_sha256: index.tokenizer.sha256.clone(),
        sources: index.sources.len(),
        splits,
        skipped: index.skipped.clone(),
        distinct_tokens,
        unigram_entropy_nats,
        unigram_perplexity: unigram_entropy_nats.exp(),
        top_tokens,
    })
}

impl fmt::Display for DataStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.dir.display())?;
        writeln!(
            f,
            "  {} shards, vocab {} (tokenizer {}), {} source files",
            self.dtype,
            self.vocab_size,
            self.tokenizer_sha256
                .get(..12)
                .unwrap_or(&self.tokenizer_sha256),
            self.sources
        )?;
        writeln!(
            f,
            "  {:<6} {:>7} {:>10} {:>14} {:>14} {:>10}",
            "split", "shards", "documents", "tokens", "text bytes", "bytes/tok"
        )?;
        for s in &self.splits {
            writeln!(
                f,
                "  {:<6} {:>7} {:>10} {:>14} {:>14} {:>10.3}{}",
                s.split.name(),
                s.shards,
                s.documents,
                s.tokens,
                s.text_bytes,
                s.bytes_per_token,
                if s.eos_found == s.documents {
                    String::new()
                } else {
                    format!(
                        "  (found {} EOS tokens: the shards do not match the index)",
                        s.eos_found
                    )
                }
            )?;
        }
        let kinds: Vec<String> = self
            .skipped
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  skipped {} items{}",
            self.skipped.total,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({}; see {})", kinds.join(", "), self.skipped.file)
            }
        )?;
        writeln!(
            f,
            "  unigram entropy {:.3} nats/token (perplexity {:.1}: the baseline a model must beat)",
            self.unigram_entropy_nats, self.unigram_perplexity
        )?;
        writeln!(
            f,
            "  {} distinct tokens used; most frequent:",
            self.distinct_tokens
        )?;
        let total: u64 = self.splits.iter().map(|s| s.tokens).sum();
        for t in &self.top_tokens {
            writeln!(
                f,
                "    {:>7} {:>12} {:>6.2}%  {}",
                t.id,
                t.count,
                100.0 * t.count as f64 / total.max(1) as f64,
                t.text
                    .as_deref()
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
