//! Training for samba-lm: the loop of the paper's recipe (AdamW, warmup + cosine, gradient-norm
//! clipping, gradient accumulation to a batch in tokens) written against a [`TrainBackend`], so
//! the CPU backend and the GPU backend run the same loop; resumable run-folder checkpoints;
//! metrics and validation at 1x, 2x and 4x the training length.
//!
//! - [`trainer`]: the loop; [`options`]: its settings as plain data;
//! - [`backend`]: what the loop asks of a backend, and the CPU implementation;
//! - [`adamw`], [`schedule`]: the optimizer and the learning-rate schedule;
//! - [`batches`]: where windows of tokens come from, resumably; [`data`]: the data crate's
//!   token shards as such a source;
//! - [`checkpoint`]: `RUN/checkpoints/step-NNNNNN/`, written atomically;
//! - [`metrics`]: `RUN/metrics.jsonl`; [`interrupt`]: Ctrl-C and SIGTERM.

pub mod adamw;
pub mod backend;
pub mod batches;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod interrupt;
pub mod metrics;
pub mod options;
pub mod schedule;
pub mod trainer;

pub use adamw::{AdamWConfig, AdamWStep};
pub use backend::{CpuTrainBackend, TrainBackend};
pub use batches::{BatchSource, MemoryValidation, MemoryWindows, ValidationSource};
pub use data::{ShardValidation, ShardWindows};
pub use error::TrainError;
pub use options::TrainOptions;
pub use schedule::Schedule;
pub use trainer::{StopReason, TrainOutcome, Trainer};
