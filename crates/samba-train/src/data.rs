//! The data crate's token shards as a [`BatchSource`] and a [`ValidationSource`]: training
//! windows through its seeded, resumable `WindowSampler` (the sampler's position is the data
//! position a checkpoint saves), validation windows read in order from the validation split.

use std::path::{Path, PathBuf};

use samba_data::{SamplerConfig, SamplerPosition, Split, TokenShards, WindowOrder, WindowSampler};

use crate::batches::{BatchSource, ValidationSource};
use crate::error::{Result, TrainError};

fn data_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Data(e.to_string())
}

/// Shuffled training windows of a prepared data folder.
pub struct ShardWindows {
    dir: PathBuf,
    sampler: WindowSampler,
}

impl ShardWindows {
    /// Opens the train split of `dir` (checked against its index) for windows of
    /// `seq_len + 1` tokens in the order given by `seed`.
    pub fn open(dir: &Path, seq_len: usize, seed: u64) -> Result<ShardWindows> {
        let shards = TokenShards::open(dir, Split::Train).map_err(data_error)?;
        let config = SamplerConfig {
            seq_len,
            seed,
            rank: 0,
            world: 1,
            order: WindowOrder::Shuffled,
        };
        Ok(ShardWindows {
            dir: dir.to_path_buf(),
            sampler: WindowSampler::new(shards, config).map_err(data_error)?,
        })
    }
}

impl BatchSource for ShardWindows {
    fn seq_len(&self) -> usize {
        self.sampler.config().seq_len
    }

    fn next_windows(&mut self, out: &mut [u32]) -> Result<()> {
        let window = self.seq_len() + 1;
        if out.len() % window != 0 {
            return Err(data_error(format!(
                "a batch buffer of {} tokens is not a whole number of {window}-token windows",
                out.len()
            )));
        }
        for row in out.chunks_exact_mut(window) {
            self.sampler.next_window(row).map_err(data_error)?;
        }
        Ok(())
    }

    fn position(&self) -> serde_json::Value {
        serde_json::to_value(self.sampler.position()).expect("a sampler position serialises")
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<()> {
        let position: SamplerPosition = serde_json::from_value(position.clone())
            .map_err(|e| data_error(format!("not a data position of a shard folder: {e}")))?;
        let shards = TokenShards::open(&self.dir, Split::Train).map_err(data_error)?;
        self.sampler = WindowSampler::resume(shards, &position).map_err(data_error)?;
        Ok(())
    }
}

/// The validation split of a prepared data folder, read in order from its start.
pub struct ShardValidation {
    dir: PathBuf,
}

impl ShardValidation {
    pub fn new(dir: &Path) -> ShardValidation {
        ShardValidation {
            dir: dir.to_path_buf(),
        }
    }
}

impl ValidationSource for ShardValidation {
    fn windows(&mut self, seq_len: usize, max_count: usize) -> Result<Vec<u32>> {
        let shards = TokenShards::open(&self.dir, Split::Val).map_err(data_error)?;
        let config = SamplerConfig {
            seq_len,
            seed: 0,
            rank: 0,
            world: 1,
            order: WindowOrder::Sequential,
        };
        let mut sampler = WindowSampler::new(shards, config).map_err(data_error)?;
        let count = (sampler.windows_per_rank() as usize).min(max_count);
        sampler.next_batch(count).map_err(data_error)
    }
}
