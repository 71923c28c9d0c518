//! `data prepare`: documents in, packed token shards out.
//!
//! Pipeline: one thread reads and decompresses files in order and hands over batches of
//! documents; a rayon pool tokenizes each batch in parallel (ordered collect, so the output is
//! the same for any thread count); the main thread appends EOS to each document and writes it to
//! the train or val shard stream. Everything goes to a hidden temporary folder beside the
//! output, which is renamed into place only when the index is written: an interrupted or failed
//! run leaves nothing half-written under the output name.
//!
//! The split is decided per document by a hash of its text: u = SHA-256(text)[0..8] / 2^64 and
//! the document goes to validation iff u < val_fraction. It depends on nothing but the text, so
//! it is the same across runs, file orders and thread counts, and exact duplicates never
//! straddle the split.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::index::{
    DataIndex, ShardEntry, SkippedSummary, Split, SplitIndex, TokenDtype, TokenizerRef,
    FORMAT_NAME, FORMAT_VERSION, SKIPPED_FILE,
};
use crate::sources::{count_skipped, discover, ReadOptions, Skipped};
use crate::stream::DocumentStream;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone)]
pub struct PrepareConfig {
    /// Fraction of documents that go to the validation split, in [0, 1).
    pub val_fraction: f64,
    /// Tokenizer threads; `None` for one per core.
    pub threads: Option<usize>,
    /// Shard width; `None` picks the narrowest that fits the vocabulary.
    pub dtype: Option<TokenDtype>,
    /// Tokens per shard file before a new one is started.
    pub shard_tokens: u64,
    pub read: ReadOptions,
    /// Text handed to the tokenizer pool at a time.
    pub batch_bytes: usize,
    pub progress: bool,
    /// Replace an existing output folder (only once the new one is complete).
    pub overwrite: bool,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            val_fraction: 0.01,
            threads: None,
            dtype: None,
            // 2^27 tokens: 256 MiB per u16 shard.
            shard_tokens: 1 << 27,
            read: ReadOptions::default(),
            batch_bytes: 8 << 20,
            progress: false,
            overwrite: false,
        }
    }
}

/// What a run produced: the index as written, every skipped item, and timing.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub index: DataIndex,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

impl PrepareReport {
    /// Text throughput in MB/s (10^6 bytes of document text per second).
    pub fn mb_per_s(&self) -> f64 {
        let bytes = self.index.train.text_bytes + self.index.val.text_bytes;
        bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// Which split a document belongs to (see the module doc).
pub fn assign_split(text: &str, val_fraction: f64) -> Split {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable as f64, uniform in [0, 1).
    let u = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    if u < val_fraction {
        Split::Val
    } else {
        Split::Train
    }
}

/// Appends tokens to one split's shard files, starting a new file every `shard_tokens`.
struct ShardWriter {
    dir: PathBuf,
    split: Split,
    dtype: TokenDtype,
    shard_tokens: u64,
    file: Option<BufWriter<File>>,
    index: SplitIndex,
    bytes: Vec<u8>,
}

impl ShardWriter {
    fn new(dir: &Path, split: Split, dtype: TokenDtype, shard_tokens: u64) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            split,
            dtype,
            shard_tokens,
            file: None,
            index: SplitIndex::default(),
            bytes: Vec::new(),
        }
    }

    fn write_document(&mut self, tokens: &[u32], text_bytes: usize) -> Result<()> {
        self.index.documents += 1;
        self.index.text_bytes += text_bytes as u64;
        let mut rest = tokens;
        while !rest.is_empty() {
            let room = match self.index.shards.last() {
                Some(last) if self.file.is_some() && last.tokens < self.shard_tokens => {
                    self.shard_tokens - last.tokens
                }
                _ => {
                    self.start_shard()?;
                    self.shard_tokens
                }
            };
            let take = rest.len().min(room as usize);
            self.write_tokens(&rest[..take])?;
            rest = &rest[take..];
        }
        Ok(())
    }

    fn start_shard(&mut self) -> Result<()> {
        self.finish_shard()?;
        let name = self.split.shard_file(self.index.shards.len());
        let path = self.dir.join(&name);
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        self.file = Some(BufWriter::with_capacity(1 << 20, file));
        self.index.shards.push(ShardEntry {
            file: name,
            tokens: 0,
        });
        Ok(())
    }

    fn write_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        self.bytes.clear();
        match self.dtype {
            TokenDtype::U16 => {
                for &t in tokens {
                    let t = u16::try_from(t).map_err(|_| DataError::TokenOutOfRange {
                        id: t,
                        dtype: "u16",
                        max: 1 << 16,
                    })?;
                    self.bytes.extend_from_slice(&t.to_le_bytes());
                }
            }
            TokenDtype::U32 => {
                for &t in tokens {
                    self.bytes.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        let path = self.current_path();
        if let Some(file) = self.file.as_mut() {
            file.write_all(&self.bytes)
                .map_err(|e| DataError::io(&path, e))?;
        }
        if let Some(last) = self.index.shards.last_mut() {
            last.tokens += tokens.len() as u64;
        }
        self.index.tokens += tokens.len() as u64;
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.index
            .shards
            .last()
            .map_or_else(|| self.dir.clone(), |s| self.dir.join(&s.file))
    }

    fn finish_shard(&mut self) -> Result<()> {
        let path = self.current_path();
        if let Some(mut file) = self.file.take() {
            file.flush().map_err(|e| DataError::io(&path, e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<SplitIndex> {
        self.finish_shard()?;
        Ok(self.index)
    }
}

/// Removes the temporary output folder unless the run got to the final rename.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Tokenize `inputs` with `tokenizer` into shards under `out`.
pub fn prepare(
    inputs: &[PathBuf],
    tokenizer: &TextTokenizer,
    tokenizer_path: &Path,
    out: &Path,
    config: &PrepareConfig,
) -> Result<PrepareReport> {
    let start = Instant::now();
    if !(0.0..1.0).contains(&config.val_fraction) {
        return Err(DataError::Config(format!(
            "val fraction {} must be in [0, 1)",
            config.val_fraction
        )));
    }
    if config.shard_tokens == 0 || config.batch_bytes == 0 {
        return Err(DataError::Config(
            "shard tokens and batch bytes must be positive".into(),
        ));
    }
    let dtype = config
        .dtype
        .unwrap_or_else(|| TokenDtype::for_vocab(tokenizer.vocab_size()));
    dtype.check_vocab(tokenizer.vocab_size())?;
    if out.exists() {
        // Replace only what is plainly an earlier data folder (or nothing at all): `--force`
        // with a mistyped path must not delete someone's home folder.
        let replaceable = out.join(crate::index::INDEX_FILE).is_file()
            || std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
        if !config.overwrite || !replaceable {
            return Err(DataError::OutputExists {
                path: out.to_path_buf(),
            });
        }
    }

    let discovered = discover(inputs)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| DataError::io(&parent, e))?;
    let name = out
        .file_name()
        .ok_or_else(|| DataError::Config(format!("output {} has no folder name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = TempDir {
        path: parent.join(format!(".{name}.tmp-{}", std::process::id())),
        keep: false,
    };
    if tmp.path.exists() {
        std::fs::remove_dir_all(&tmp.path).map_err(|e| DataError::io(&tmp.path, e))?;
    }
    std::fs::create_dir(&tmp.path).map_err(|e| DataError::io(&tmp.path, e))?;

    let disk_bytes: u64 = discovered.files.iter().map(|f| f.disk_bytes).sum();
    let progress = crate::progress::bytes_bar(disk_bytes, config.progress);

    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = config.threads {
        pool = pool.num_threads(n.max(1));
    }
    let pool = pool.build().map_err(|e| {
        DataError::Config(format!("cannot start {:?} threads: {e}", config.threads))
    })?;

    let eos = tokenizer.eos_id();
    let mut writers = [
        ShardWriter::new(&tmp.path, Split::Train, dtype, config.shard_tokens),
        ShardWriter::new(&tmp.path, Split::Val, dtype, config.shard_tokens),
    ];
    let mut stream = DocumentStream::spawn(
        discovered.files.clone(),
        config.read,
        config.batch_bytes,
        progress.clone(),
    );
    let mut outcome: Result<()> = Ok(());
    for batch in stream.by_ref() {
        let encoded: Result<Vec<(Split, Vec<u32>)>> = pool.install(|| {
            batch
                .par_iter()
                .map(|doc| {
                    let mut ids = tokenizer.encode(&doc.text)?;
                    ids.push(eos);
                    Ok((assign_split(&doc.text, config.val_fraction), ids))
                })
                .collect()
        });
        let written = encoded.and_then(|encoded| {
            for ((split, ids), doc) in encoded.iter().zip(&batch) {
                let w = &mut writers[(*split == Split::Val) as usize];
                w.write_document(ids, doc.text.len())?;
            }
            Ok(())
        });
        if let Err(e) = written {
            outcome = Err(e);
            break;
        }
        let tokens = writers[0].index.tokens + writers[1].index.tokens;
        progress.set_message(format!("{:.1}M tokens", tokens as f64 / 1e6));
    }
    let report = stream.finish();
    progress.finish_and_clear();
    outcome?;

    let mut skipped = discovered.skipped;
    skipped.extend(report.skipped);
    let [train, val] = writers;
    let train = train.finish()?;
    let val = val.finish()?;
    if train.documents + val.documents == 0 {
        return Err(DataError::NoDocuments {
            inputs: inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            skipped: skipped.len(),
        });
    }

    let skipped_path = tmp.path.join(SKIPPED_FILE);
    let listing: String = skipped.iter().map(|s| format!("{s}\n")).collect();
    std::fs::write(&skipped_path, listing).map_err(|e| DataError::io(&skipped_path, e))?;
    let index = DataIndex {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        dtype,
        tokenizer: TokenizerRef {
            path: tokenizer_path.to_path_buf(),
            sha256: tokenizer.sha256().to_string(),
            vocab_size: tokenizer.vocab_size(),
            eos_id: tokenizer.eos_id(),
            bos_id: tokenizer.bos_id(),
            pad_id: tokenizer.pad_id(),
        },
        val_fraction: config.val_fraction,
        train,
        val,
        sources: report.sources,
        skipped: SkippedSummary {
            total: skipped.len() as u64,
            by_kind: count_skipped(&skipped),
            file: SKIPPED_FILE.into(),
        },
        created_by: format!("samba-data {}", env!("CARGO_PKG_VERSION")),
    };
    index.save(&tmp.path)?;
    index.verify(&tmp.path)?;
    move_into_place(tmp, out)?;
    Ok(PrepareReport {
        index,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Rename the finished temporary folder to `out`, replacing an old `out` only after the new
/// one is complete.
fn move_into_place(mut tmp: TempDir, out: &Path) -> Result<()> {
    if out.exists() {
        let old = tmp.path.with_extension("old");
        std::fs::rename(out, &old).map_err(|e| DataError::io(out, e))?;
        std::fs::rename(&tmp.path, out).map_err(|e| DataError::io(out, e))?;
        tmp.keep = true;
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
    } else {
        std::fs::rename(&tmp.path, out).map_err(|e| DataError::io(out, e))?;
        tmp.keep = true;
    }
    Ok(())
}
