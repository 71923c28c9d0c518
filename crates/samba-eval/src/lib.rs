//! The evaluations of samba-lm, each the instrument the paper uses to make its case:
//!
//! - [`ppl`]: perplexity of long documents streamed through the recurrent state (constant
//!   memory), by position bucket and at each requested length;
//! - [`passkey`]: a 5-digit pass key hidden at a chosen depth in filler text, retrieved by greedy
//!   decoding; the generator also writes fine-tuning data;
//! - [`phonebook`]: look a name up in a phone book of growing size;
//! - [`choice`]: zero-shot multiple choice by log-likelihood (bigbench task.json and JSONL).
//!
//! Every evaluation runs on the CPU or a GPU through [`samba_runtime::Engine`] (the queries
//! are in [`scoring`]) and returns a serializable report;
//! [`report`] adds what makes results comparable later (model, files, options, version, date),
//! and [`plot`] draws them.

pub mod choice;
pub mod error;
pub mod model;
pub mod passkey;
pub mod phonebook;
pub mod plot;
pub mod ppl;
pub mod report;
pub mod scoring;

pub use error::{EvalError, Result};
pub use model::EvalModel;
