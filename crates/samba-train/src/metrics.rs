//! `RUN/metrics.jsonl`: one JSON object per line, appended as the run goes.
//!
//! - `{"kind":"train","step":12,"loss":..,"lr":..,"grad_norm":..,"tokens":..,"tokens_per_second":..,"mfu":..,"elapsed_s":..}`
//!   after every optimizer step (`step` counts completed steps, from 1);
//! - `{"kind":"val","step":12,"results":[{"seq_len":64,"loss":..,"perplexity":..}, ...]}`
//!   after each validation, one result per length (1x, 2x, 4x the training length);
//! - `{"kind":"skipped","step":12,"loss":..,"grad_norm":..,"reason":".."}` for a step whose loss
//!   or gradient was not finite (no update was made).
//!
//! A resumed run first drops the records past its checkpoint (and a line cut short by a kill),
//! so the file always describes one straight run.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_error, Result};

pub const METRICS_FILE: &str = "metrics.jsonl";

/// Perplexity at one validation length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValResult {
    pub seq_len: usize,
    /// Mean cross-entropy (nats per token).
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Train {
        step: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens: u64,
        tokens_per_second: f64,
        /// Model FLOP utilisation: 3 x forward FLOPs per token x tokens/s over the peak given.
        mfu: Option<f64>,
        elapsed_s: f64,
    },
    Val {
        step: u64,
        results: Vec<ValResult>,
    },
    Skipped {
        step: u64,
        /// `null` when not finite (JSON has no NaN or infinity).
        loss: Option<f64>,
        grad_norm: Option<f64>,
        reason: String,
    },
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. }
            | Record::Val { step, .. }
            | Record::Skipped { step, .. } => *step,
        }
    }
}

/// Appends records to a run's metrics file.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `RUN/metrics.jsonl` for appending, first keeping only the records of steps up to
    /// `keep_through` (the step a resumed run starts from; 0 for a fresh run).
    pub fn open(run: &Path, keep_through: u64) -> Result<MetricsLog> {
        let path = run.join(METRICS_FILE);
        if path.exists() {
            let kept: Vec<Record> = read_metrics(&path)?
                .into_iter()
                .filter(|r| r.step() <= keep_through)
                .collect();
            let tmp = run.join(format!(".{METRICS_FILE}.tmp-{}", std::process::id()));
            let mut text = String::new();
            for r in &kept {
                text.push_str(&serde_json::to_string(r).expect("records serialise"));
                text.push('\n');
            }
            std::fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        // One write per line: a line is either whole in the file or (after a kill mid-write)
        // a cut-off last line that readers skip.
        let mut line = serde_json::to_string(record).expect("records serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| io_error(&self.path, e))
    }
}

/// Reads every whole record of a metrics file; lines that do not parse (a line cut short by a
/// killed process) are skipped.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// Model FLOP utilisation: training costs about 3 forward passes (forward + backward at twice
/// the forward), so achieved FLOP/s = 3 * forward FLOPs per token * tokens/s.
pub fn mfu(forward_flops_per_token: f64, tokens_per_second: f64, peak_flops: f64) -> f64 {
    3.0 * forward_flops_per_token * tokens_per_second / peak_flops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_later_records_and_cut_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), 0).unwrap();
        for step in 1..=4 {
            log.append(&Record::Val {
                step,
                results: vec![],
            })
            .unwrap();
        }
        drop(log);
        let path = dir.path().join(METRICS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"kind\":\"tra");
        std::fs::write(&path, text).unwrap();
        let _log = MetricsLog::open(dir.path(), 2).unwrap();
        let steps: Vec<u64> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(Record::step)
            .collect();
        assert_eq!(steps, vec![1, 2]);
    }
}
