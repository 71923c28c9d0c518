//! What every report records besides its results, so runs can be compared later: the model,
//! the data files, the options, this crate's version and the date.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{EvalError, Result};

#[derive(Debug, Clone, Serialize)]
pub struct ReportMeta {
    /// Which evaluation: "ppl", "passkey", "phonebook", "choice".
    pub eval: String,
    pub model: PathBuf,
    pub tokenizer: Option<PathBuf>,
    /// Input files (documents, task files); empty for generated data.
    pub files: Vec<PathBuf>,
    /// The options the evaluation ran with, as given on the command line.
    pub options: serde_json::Value,
    /// Where the model ran: "cpu", or "cuda:0 NVIDIA H200 (bf16)" (`Engine::describe`).
    pub device: String,
    /// samba-eval's version.
    pub version: String,
    /// UTC, ISO 8601.
    pub date: String,
}

impl ReportMeta {
    pub fn new(
        eval: &str,
        model: &Path,
        tokenizer: Option<&Path>,
        files: &[PathBuf],
        options: serde_json::Value,
        device: &str,
    ) -> ReportMeta {
        ReportMeta {
            eval: eval.to_string(),
            model: model.to_path_buf(),
            tokenizer: tokenizer.map(Path::to_path_buf),
            files: files.to_vec(),
            options,
            device: device.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            date: utc_now(),
        }
    }
}

/// A report: `meta` next to the evaluation's results, flattened into one JSON object.
#[derive(Serialize)]
pub struct Report<'a, T: Serialize> {
    pub meta: &'a ReportMeta,
    pub results: &'a T,
}

/// Writes `{"meta": ..., "results": ...}` to `path` (pretty-printed).
pub fn write_report<T: Serialize>(path: &Path, meta: &ReportMeta, results: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(&Report { meta, results })
        .map_err(|e| EvalError::io(path, e))?;
    std::fs::write(path, json + "\n").map_err(|e| EvalError::io(path, e))
}

/// The current time as "YYYY-MM-DDTHH:MM:SSZ".
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
    }
}
