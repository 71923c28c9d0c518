//! The on-disk layout of prepared data: a folder of raw token shards and one `index.json`.
//!
//! ```text
//! DIR/index.json          this file's [`DataIndex`]
//! DIR/train-00000.bin     token ids, little-endian u16 (vocab <= 65536) or u32, no header
//! DIR/train-00001.bin     ...
//! DIR/val-00000.bin
//! DIR/skipped.txt         one line per skipped item: `path:line: reason`
//! ```
//!
//! Each split is one token stream cut into shards at arbitrary points: documents follow each
//! other, each ended by the tokenizer's EOS id. A shard holds exactly `tokens * width` bytes,
//! which [`DataIndex::verify`] checks before anything is read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::sources::SourceSummary;

pub const INDEX_FILE: &str = "index.json";
pub const SKIPPED_FILE: &str = "skipped.txt";
pub const FORMAT_NAME: &str = "samba-lm-token-shards";
pub const FORMAT_VERSION: u32 = 1;

/// Width of one token id in a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds ids `0..vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= TokenDtype::U16.max_vocab() as usize {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
    /// How many distinct ids fit.
    pub fn max_vocab(self) -> u64 {
        match self {
            TokenDtype::U16 => 1 << 16,
            TokenDtype::U32 => 1 << 32,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::U16 => "u16",
            TokenDtype::U32 => "u32",
        }
    }
    /// Error unless ids `0..vocab_size` fit this width.
    pub fn check_vocab(self, vocab_size: usize) -> Result<()> {
        if vocab_size as u64 > self.max_vocab() {
            return Err(DataError::VocabTooLarge {
                vocab_size,
                dtype: self.name(),
                max: self.max_vocab(),
            });
        }
        Ok(())
    }
}

impl std::str::FromStr for TokenDtype {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "u16" => Ok(TokenDtype::U16),
            "u32" => Ok(TokenDtype::U32),
            other => Err(DataError::Config(format!(
                "unknown token width {other:?}: use u16 or u32"
            ))),
        }
    }
}

/// Training or validation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
    /// File name of shard `n` of this split.
    pub fn shard_file(self, n: usize) -> String {
        format!("{}-{n:05}.bin", self.name())
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the data folder.
    pub file: String,
    pub tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndex {
    pub documents: u64,
    /// Tokens including one EOS per document.
    pub tokens: u64,
    /// UTF-8 bytes of the documents' text.
    pub text_bytes: u64,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerRef {
    /// Where the tokenizer was loaded from at preparation time.
    pub path: PathBuf,
    /// [`crate::TextTokenizer::sha256`]: a trainer checks it against the tokenizer it loads.
    pub sha256: String,
    pub vocab_size: usize,
    pub eos_id: u32,
    pub bos_id: Option<u32>,
    pub pad_id: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedSummary {
    pub total: u64,
    /// Counts by [`crate::SkipReason::kind`].
    pub by_kind: BTreeMap<String, u64>,
    /// The file in the data folder listing every skipped item.
    pub file: String,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataIndex {
    pub format: String,
    pub version: u32,
    pub dtype: TokenDtype,
    pub tokenizer: TokenizerRef,
    /// Fraction of documents (by hash of their text) in the validation split.
    pub val_fraction: f64,
    pub train: SplitIndex,
    pub val: SplitIndex,
    pub sources: Vec<SourceSummary>,
    pub skipped: SkippedSummary,
    /// `samba-data <version>`.
    pub created_by: String,
}

impl DataIndex {
    pub fn split(&self, split: Split) -> &SplitIndex {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    pub fn split_mut(&mut self, split: Split) -> &mut SplitIndex {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
        }
    }

    /// Read `dir/index.json` and check it describes shards this code can read.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        let index: DataIndex =
            serde_json::from_str(&text).map_err(|e| DataError::IndexInvalid {
                path: path.clone(),
                message: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
        if index.format != FORMAT_NAME || index.version != FORMAT_VERSION {
            return Err(DataError::IndexInvalid {
                path,
                message: format!(
                    "format {:?} version {}, expected {FORMAT_NAME:?} version {FORMAT_VERSION}",
                    index.format, index.version
                ),
            });
        }
        index.dtype.check_vocab(index.tokenizer.vocab_size)?;
        Ok(index)
    }

    /// Check that every shard file exists with exactly the size its token count implies, and
    /// that the per-split totals add up.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        let path = dir.join(INDEX_FILE);
        let mismatch = |message: String| DataError::IndexMismatch {
            path: path.clone(),
            message,
        };
        for split in [Split::Train, Split::Val] {
            let s = self.split(split);
            let sum: u64 = s.shards.iter().map(|e| e.tokens).sum();
            if sum != s.tokens {
                return Err(mismatch(format!(
                    "{split} shards hold {sum} tokens but the split lists {}",
                    s.tokens
                )));
            }
            for entry in &s.shards {
                if entry.file.contains('/')
                    || entry.file.contains('\\')
                    || entry.file.starts_with('.')
                {
                    return Err(mismatch(format!(
                        "shard name {:?} is not a plain file name",
                        entry.file
                    )));
                }
                let file = dir.join(&entry.file);
                let len = std::fs::metadata(&file)
                    .map_err(|e| mismatch(format!("{}: {e}", file.display())))?
                    .len();
                let want = entry.tokens * self.dtype.bytes() as u64;
                if len != want {
                    return Err(mismatch(format!(
                        "{} has {len} bytes, expected {} {} tokens = {want} bytes",
                        file.display(),
                        entry.tokens,
                        self.dtype.name()
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(INDEX_FILE);
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| DataError::Config(format!("cannot serialise the index: {e}")))?;
        std::fs::write(&path, json + "\n").map_err(|e| DataError::io(&path, e))
    }
}
