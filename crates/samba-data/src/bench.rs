//! Throughput of the two slow steps, tokenizer training and data preparation, in MB/s of
//! document text. Run by `samba-lm data bench`; never asserted in tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::prepare::{prepare, PrepareConfig};
use crate::sources::ReadOptions;
use crate::tokenizer::{train_on_files, TrainConfig};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub vocab_size: usize,
    pub documents: u64,
    /// UTF-8 bytes of document text read.
    pub text_bytes: u64,
    pub tokens: u64,
    pub train_seconds: f64,
    pub train_mb_per_s: f64,
    pub prepare_seconds: f64,
    pub prepare_mb_per_s: f64,
}

/// Train a tokenizer on `inputs`, then prepare them into `work/data`, timing both.
pub fn run(
    inputs: &[PathBuf],
    vocab_size: usize,
    threads: Option<usize>,
    work: &Path,
    progress: bool,
) -> Result<BenchReport> {
    std::fs::create_dir_all(work).map_err(|e| crate::DataError::io(work, e))?;
    let threads_used = threads.unwrap_or_else(rayon::current_num_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads_used)
        .build()
        .map_err(|e| {
            crate::DataError::Config(format!("cannot start {threads_used} threads: {e}"))
        })?;

    let config = TrainConfig {
        vocab_size,
        ..TrainConfig::default()
    };
    let start = Instant::now();
    let (tokenizer, read) =
        pool.install(|| train_on_files(inputs, &config, ReadOptions::default(), progress))?;
    let train_seconds = start.elapsed().as_secs_f64();
    let tokenizer_path = work.join("tokenizer.json");
    tokenizer.save(&tokenizer_path)?;

    let prepared = prepare(
        inputs,
        &tokenizer,
        &tokenizer_path,
        &work.join("data"),
        &PrepareConfig {
            threads: Some(threads_used),
            progress,
            overwrite: true,
            ..PrepareConfig::default()
        },
    )?;
    let text_bytes = read.text_bytes();
    Ok(BenchReport {
        threads: threads_used,
        vocab_size: tokenizer.vocab_size(),
        documents: read.documents(),
        text_bytes,
        tokens: prepared.index.train.tokens + prepared.index.val.tokens,
        train_seconds,
        train_mb_per_s: text_bytes as f64 / 1e6 / train_seconds.max(1e-9),
        prepare_seconds: prepared.seconds,
        prepare_mb_per_s: prepared.mb_per_s(),
    })
}
