//! Text to tokens for samba-lm.
//!
//! - [`sources`]: find and read documents (txt/md/rst/jsonl, gzip/zstd), reporting bad items;
//!   [`stream`] reads them on a background thread.
//! - [`tokenizer`]: byte-level BPE: train, load, encode, decode.
//! - [`prepare`]: documents to packed u16/u32 token shards plus `index.json` ([`index`]).
//! - [`reader`]: memory-mapped shards and the seeded, resumable, rank-sharded window sampler
//!   the trainer streams from.
//! - [`stats`] and [`bench`]: what a data folder holds; how fast it was made.

pub mod bench;
pub mod error;
pub mod index;
pub mod prepare;
mod progress;
pub mod reader;
pub mod sources;
pub mod stats;
pub mod stream;
pub mod tokenizer;

pub use error::{DataError, Result};
pub use index::{DataIndex, Split, TokenDtype};
pub use prepare::{prepare, PrepareConfig, PrepareReport};
pub use reader::{
    SamplerConfig, SamplerPosition, TokenShards, WindowAt, WindowOrder, WindowSampler,
};
pub use sources::{ReadOptions, SkipReason, Skipped};
pub use tokenizer::{TextTokenizer, TrainConfig};
