//! What the trainer reads: memory-mapped shards of one split and a deterministic sampler of
//! (seq_len + 1)-token windows (inputs are the first seq_len tokens, targets the last seq_len).
//!
//! Epoch e lays a grid of windows over every shard: window k of a shard covers tokens
//! [o_e + k*seq_len, o_e + k*seq_len + seq_len] (inclusive, so neighbours share one token and
//! every token is a target once), where the offset o_e in [0, seq_len) is drawn from
//! (seed, e) so that successive epochs cut the stream at different places. The N_e windows of
//! the epoch are visited in the order of a keyed permutation of [0, N_e), computed on the fly
//! (no table, O(1) memory at any corpus size). Data-parallel worker `rank` of `world` takes
//! permuted slots rank, rank + world, ...: disjoint windows, N_e / world each, in lockstep.
//!
//! A [`SamplerPosition`] (epoch, step and the settings) is all the state there is: saving it
//! with a checkpoint and passing it to [`WindowSampler::resume`] continues with exactly the
//! windows that would have come next.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::index::{DataIndex, Split, TokenDtype};

/// The memory-mapped shards of one split, checked against the index before use.
pub struct TokenShards {
    dir: PathBuf,
    split: Split,
    index: DataIndex,
    maps: Vec<Mmap>,
    /// Tokens per shard.
    lens: Vec<u64>,
}

impl std::fmt::Debug for TokenShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenShards")
            .field("dir", &self.dir)
            .field("split", &self.split)
            .field("lens", &self.lens)
            .finish()
    }
}

impl TokenShards {
    /// Open `dir`'s `split`, after [`DataIndex::verify`] has matched every file to the index.
    pub fn open(dir: &Path, split: Split) -> Result<Self> {
        let index = DataIndex::load(dir)?;
        index.verify(dir)?;
        let mut maps = Vec::new();
        let mut lens = Vec::new();
        for entry in &index.split(split).shards {
            let path = dir.join(&entry.file);
            let file = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
            // SAFETY: the shard files are written once by `prepare` and never modified in
            // place (a new preparation replaces the folder by rename), so the mapping stays
            // valid and unchanging while we hold it.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&path, e))?;
            if map.len() as u64 != entry.tokens * index.dtype.bytes() as u64 {
                return Err(DataError::IndexMismatch {
                    path: path.clone(),
                    message: "file changed size while being opened".into(),
                });
            }
            maps.push(map);
            lens.push(entry.tokens);
        }
        Ok(TokenShards {
            dir: dir.to_path_buf(),
            split,
            index,
            maps,
            lens,
        })
    }

    pub fn index(&self) -> &DataIndex {
        &self.index
    }
    pub fn split(&self) -> Split {
        self.split
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Tokens per shard.
    pub fn shard_lens(&self) -> &[u64] {
        &self.lens
    }
    /// Tokens in the split.
    pub fn tokens(&self) -> u64 {
        self.lens.iter().sum()
    }

    /// Copy tokens [start, start + out.len()) of shard `shard` into `out`.
    pub fn read(&self, shard: usize, start: u64, out: &mut [u32]) -> Result<()> {
        let (Some(&len), Some(map)) = (self.lens.get(shard), self.maps.get(shard)) else {
            return Err(DataError::Config(format!(
                "shard {shard} does not exist ({} shards)",
                self.maps.len()
            )));
        };
        let end = start + out.len() as u64;
        if end > len {
            return Err(DataError::Config(format!(
                "tokens {start}..{end} are outside shard {shard} of {len} tokens"
            )));
        }
        match self.index.dtype {
            TokenDtype::U16 => {
                let bytes = &map[start as usize * 2..end as usize * 2];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as u32;
                }
            }
            TokenDtype::U32 => {
                let bytes = &map[start as usize * 4..end as usize * 4];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Ok(())
    }

    /// Every token of shard `shard` (for statistics).
    pub fn shard_tokens(&self, shard: usize) -> Result<Vec<u32>> {
        let mut out = vec![0u32; self.lens.get(shard).copied().unwrap_or(0) as usize];
        self.read(shard, 0, &mut out)?;
        Ok(out)
    }
}

/// Order in which an epoch's windows are visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowOrder {
    /// Random offset per epoch and a keyed permutation: for training.
    Shuffled,
    /// Offset 0 and windows in stream order, the same each epoch: for evaluation.
    Sequential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// Tokens of input per window; a window holds seq_len + 1.
    pub seq_len: usize,
    pub seed: u64,
    /// This worker, in [0, world).
    pub rank: usize,
    /// Number of data-parallel workers.
    pub world: usize,
    pub order: WindowOrder,
}

/// All the state of a [`WindowSampler`]; serialise it next to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    pub config: SamplerConfig,
    /// The split and data the position refers to, checked on resume.
    pub split: Split,
    pub tokens: u64,
    pub tokenizer_sha256: String,
    /// Epochs completed.
    pub epoch: u64,
    /// Windows this worker has taken in the current epoch.
    pub step: u64,
}

/// Windows of one epoch: the offset and where each shard's windows start in the numbering.
#[derive(Debug, Clone)]
struct EpochPlan {
    offset: u64,
    /// first[i] = windows in shards before i; first[shards] = N_e.
    first: Vec<u64>,
    key: u64,
}

/// Where a window came from: shard index and first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowAt {
    pub shard: usize,
    pub start: u64,
}

pub struct WindowSampler {
    shards: TokenShards,
    config: SamplerConfig,
    epoch: u64,
    step: u64,
    plan: EpochPlan,
}

impl WindowSampler {
    pub fn new(shards: TokenShards, config: SamplerConfig) -> Result<Self> {
        if config.seq_len == 0 {
            return Err(DataError::Config("seq_len must be at least 1".into()));
        }
        if config.world == 0 || config.rank >= config.world {
            return Err(DataError::Config(format!(
                "rank {} is not in [0, world = {})",
                config.rank, config.world
            )));
        }
        let plan = plan_epoch(&shards, &config, 0)?;
        Ok(WindowSampler {
            shards,
            config,
            epoch: 0,
            step: 0,
            plan,
        })
    }

    /// Continue exactly where `position` was taken, on the same data.
    pub fn resume(shards: TokenShards, position: &SamplerPosition) -> Result<Self> {
        let index = shards.index();
        if position.split != shards.split()
            || position.tokens != shards.tokens()
            || position.tokenizer_sha256 != index.tokenizer.sha256
        {
            return Err(DataError::Resume(format!(
                "the position was taken on the {} split of {} tokens (tokenizer {}), this is the {} split of {} tokens (tokenizer {})",
                position.split,
                position.tokens,
                short(&position.tokenizer_sha256),
                shards.split(),
                shards.tokens(),
                short(&index.tokenizer.sha256)
            )));
        }
        let mut sampler = WindowSampler::new(shards, position.config.clone())?;
        sampler.plan = plan_epoch(&sampler.shards, &sampler.config, position.epoch)?;
        if position.step > sampler.windows_per_rank() {
            return Err(DataError::Resume(format!(
                "step {} is past the {} windows of an epoch",
                position.step,
                sampler.windows_per_rank()
            )));
        }
        sampler.epoch = position.epoch;
        sampler.step = position.step;
        Ok(sampler)
    }

    pub fn position(&self) -> SamplerPosition {
        SamplerPosition {
            config: self.config.clone(),
            split: self.shards.split(),
            tokens: self.shards.tokens(),
            tokenizer_sha256: self.shards.index().tokenizer.sha256.clone(),
            epoch: self.epoch,
            step: self.step,
        }
    }

    pub fn shards(&self) -> &TokenShards {
        &self.shards
    }
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Windows this worker takes per epoch (the same for every rank).
    pub fn windows_per_rank(&self) -> u64 {
        self.plan.first.last().copied().unwrap_or(0) / self.config.world as u64
    }

    /// Fill `out` with the next window: seq_len + 1 tokens. Returns where it was taken from.
    pub fn next_window(&mut self, out: &mut [u32]) -> Result<WindowAt> {
        let window = self.config.seq_len + 1;
        if out.len() != window {
            return Err(DataError::Config(format!(
                "window buffer holds {} tokens, expected seq_len + 1 = {window}",
                out.len()
            )));
        }
        if self.step >= self.windows_per_rank() {
            self.epoch += 1;
            self.step = 0;
            self.plan = plan_epoch(&self.shards, &self.config, self.epoch)?;
        }
        let world = self.config.world as u64;
        let slot = self.step * world + self.config.rank as u64;
        let total = self.plan.first.last().copied().unwrap_or(0);
        let id = match self.config.order {
            WindowOrder::Shuffled => permute(slot, total, self.plan.key),
            WindowOrder::Sequential => slot,
        };
        // The shard whose window range holds `id`.
        let shard = self.plan.first.partition_point(|&f| f <= id) - 1;
        let k = id - self.plan.first[shard];
        let start = self.plan.offset + k * self.config.seq_len as u64;
        self.shards.read(shard, start, out)?;
        self.step += 1;
        Ok(WindowAt { shard, start })
    }

    /// The next `batch` windows as one [batch, seq_len + 1] row-major buffer.
    pub fn next_batch(&mut self, batch: usize) -> Result<Vec<u32>> {
        let window = self.config.seq_len + 1;
        let mut out = vec![0u32; batch * window];
        for row in out.chunks_exact_mut(window) {
            self.next_window(row)?;
        }
        Ok(out)
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn plan_epoch(shards: &TokenShards, config: &SamplerConfig, epoch: u64) -> Result<EpochPlan> {
    let seq = config.seq_len as u64;
    let count = |offset: u64| -> Vec<u64> {
        let mut first = Vec::with_capacity(shards.lens.len() + 1);
        let mut total = 0;
        for &len in &shards.lens {
            first.push(total);
            // Window k fits iff offset + k*seq + seq <= len - 1.
            if len > offset + seq {
                total += (len - 1 - offset) / seq;
            }
        }
        first.push(total);
        first
    };
    let key = splitmix64(config.seed ^ splitmix64(epoch.wrapping_add(0x5eed)));
    let mut offset = match config.order {
        WindowOrder::Shuffled => splitmix64(key) % seq,
        WindowOrder::Sequential => 0,
    };
    let mut first = count(offset);
    let world = config.world as u64;
    if first.last().copied().unwrap_or(0) < world && offset != 0 {
        // Tiny data: the shifted grid lost the only windows there were.
        offset = 0;
        first = count(0);
    }
    if first.last().copied().unwrap_or(0) < world {
        return Err(DataError::TooFewTokens {
            split: format!("{} (with {} workers)", shards.split, config.world),
            tokens: shards.lens.iter().copied().max().unwrap_or(0),
            window: config.seq_len + 1,
        });
    }
    Ok(EpochPlan { offset, first, key })
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, well-mixed hash of a u64, written out here so
/// that sample order never changes with a dependency's version.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed bijection of [0, n): x -> f(x), for x < n.
///
/// f is a bijection of [0, 2^b) with 2^b >= n, built from rounds of steps each invertible on
/// b-bit integers (xor with a key, multiplication by an odd number mod 2^b, x ^= x >> s);
/// "cycle walking" applies f again until the value lands below n, which keeps it a bijection
/// of [0, n) and takes fewer than two applications on average.
pub fn permute(x: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let shift = (bits / 2).max(1);
    let mut y = x;
    loop {
        for round in 0..4u64 {
            let k = splitmix64(key.wrapping_add(round));
            y ^= k & mask;
            y = y.wrapping_mul(k | 1) & mask;
            y ^= y >> shift;
        }
        if y < n {
            return y;
        }
    }
}
