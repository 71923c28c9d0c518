//! Run-folder checkpoints: everything a resumed run needs to continue bit for bit.
//!
//!   RUN/checkpoints/step-000123/model/          config.json + model.safetensors (f32), a model
//!                                               folder every other command loads
//!   RUN/checkpoints/step-000123/trainer.json    step, tokens seen, data position, RNG, options
//!   RUN/checkpoints/step-000123/optimizer.safetensors   AdamW moments m, v [n_params], f32
//!   RUN/checkpoints/latest                      "step-000123": the newest complete checkpoint
//!
//! A checkpoint is written into `.tmp-step-000123-PID/` and renamed into place when complete;
//! `latest` is written as a temporary file and renamed over the old one. A rename is atomic, so
//! a process killed at any moment (kill -9) leaves either the old or the new checkpoint behind,
//! never a half-written one under a real name; leftover temporary folders are ignored by
//! loading and removed by the next save. (Durability across a power cut would also need fsync;
//! a killed process loses nothing its writes put in the page cache.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use samba_model::checkpoint::{load_model, save_model, SaveDtype};
use samba_model::{Config, ParamLayout};
use serde::{Deserialize, Serialize};

use crate::error::{io_error, Result, TrainError};
use crate::options::TrainOptions;

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const LATEST_FILE: &str = "latest";
pub const MODEL_DIR: &str = "model";
pub const TRAINER_FILE: &str = "trainer.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FORMAT: &str = "samba-train checkpoint";
const VERSION: u32 = 1;

/// The state of a random stream (ChaCha8): enough to continue it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// The word position, a u128 written as a decimal string.
    pub word_pos: String,
}

/// `trainer.json`: the loop's state beside the model and optimizer tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub version: u32,
    /// Steps completed (skipped ones included): the next step is this one.
    pub step: u64,
    /// AdamW updates applied (skipped steps excluded): torch's state["step"].
    pub optimizer_steps: u64,
    pub tokens_seen: u64,
    pub skipped_steps: u64,
    /// Non-finite steps in a row at the time of saving.
    pub bad_in_a_row: u32,
    /// Where the training data continues, as the batch source wrote it.
    pub data_position: serde_json::Value,
    pub rng: RngState,
    pub options: TrainOptions,
}

impl TrainerState {
    pub fn new(options: TrainOptions, data_position: serde_json::Value, rng: RngState) -> Self {
        TrainerState {
            format: FORMAT.to_string(),
            version: VERSION,
            step: 0,
            optimizer_steps: 0,
            tokens_seen: 0,
            skipped_steps: 0,
            bad_in_a_row: 0,
            data_position,
            rng,
            options,
        }
    }
}

/// A checkpoint as loaded and checked.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub config: Config,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// The folder name of step `step`'s checkpoint.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

fn checkpoint_error(path: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Writes a checkpoint of step `state.step` into `run` (with a copy of `tokenizer` in its model
/// folder, when given), points `latest` at it, and keeps only the newest `keep_last`
/// checkpoints. Returns the checkpoint's folder.
pub fn save_checkpoint(
    run: &Path,
    state: &TrainerState,
    config: &Config,
    params: &[f32],
    (m, v): (&[f32], &[f32]),
    tokenizer: Option<&Path>,
    keep_last: usize,
) -> Result<PathBuf> {
    let root = run.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
    let name = checkpoint_name(state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    }
    let written = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
        let layout = ParamLayout::new(config);
        save_model(
            &tmp.join(MODEL_DIR),
            config,
            &layout,
            params,
            SaveDtype::F32,
            tokenizer,
        )?;
        save_moments(&tmp.join(OPTIMIZER_FILE), m, v)?;
        let trainer = tmp.join(TRAINER_FILE);
        let json = serde_json::to_string_pretty(state).expect("trainer state serialises");
        std::fs::write(&trainer, json + "\n").map_err(|e| io_error(&trainer, e))?;
        // Saving a step that already has a checkpoint (a resumed run re-saving its start):
        // move the old one aside first, since a folder cannot be renamed over a non-empty one.
        if dir.exists() {
            let old = root.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(&dir, &old).map_err(|e| io_error(&dir, e))?;
            std::fs::rename(&tmp, &dir).map_err(|e| io_error(&dir, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &dir).map_err(|e| io_error(&dir, e))?;
        }
        write_latest(&root, &name)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    prune(&root, keep_last, &name)?;
    Ok(dir)
}

/// Points `latest` at `name` by renaming a complete temporary file over it.
fn write_latest(root: &Path, name: &str) -> Result<()> {
    let tmp = root.join(format!(".{LATEST_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, format!("{name}\n")).map_err(|e| io_error(&tmp, e))?;
    let latest = root.join(LATEST_FILE);
    std::fs::rename(&tmp, &latest).map_err(|e| io_error(&latest, e))
}

/// Removes all but the newest `keep` checkpoints (never `current`) and the temporary folders
/// and files that killed runs left behind.
fn prune(root: &Path, keep: usize, current: &str) -> Result<()> {
    let mut steps = list_checkpoints_in(root)?;
    steps.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    for (_, dir) in steps.iter().skip(keep.max(1)) {
        if dir.file_name().is_some_and(|n| n != current) {
            std::fs::remove_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
    }
    let entries = std::fs::read_dir(root).map_err(|e| io_error(root, e))?;
    let own = format!("-{}", std::process::id());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let stale = (name.starts_with(".tmp-")
            || name.starts_with(".old-")
            || name.starts_with(&format!(".{LATEST_FILE}.tmp-")))
            && !name.ends_with(&own);
        if stale {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
    Ok(())
}

fn list_checkpoints_in(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io_error(root, e))? {
        let entry = entry.map_err(|e| io_error(root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = parse_name(&name).filter(|_| entry.path().is_dir()) {
            out.push((step, entry.path()));
        }
    }
    out.sort_by_key(|(step, _)| *step);
    Ok(out)
}

/// The checkpoints of a run, oldest first, as (step, folder).
pub fn list_checkpoints(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    list_checkpoints_in(&run.join(CHECKPOINTS_DIR))
}

/// The folder `latest` points at, or `None` when the run has no checkpoint yet.
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>> {
    let root = run.join(CHECKPOINTS_DIR);
    let latest = root.join(LATEST_FILE);
    if !latest.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&latest).map_err(|e| io_error(&latest, e))?;
    let name = text.trim();
    if parse_name(name).is_none() {
        return Err(checkpoint_error(
            &latest,
            format!("holds '{name}', not the name of a checkpoint folder (step-NNNNNN)"),
        ));
    }
    Ok(Some(root.join(name)))
}

/// Loads the newest usable checkpoint of a run: the one `latest` names, or, when that one is
/// missing or damaged, the newest checkpoint that loads (each refusal is returned as a warning).
/// `None` when the run has no checkpoint at all.
pub fn load_latest(run: &Path) -> Result<Option<(Checkpoint, Vec<String>)>> {
    let mut warnings = Vec::new();
    let mut tried = Vec::new();
    match latest_checkpoint(run) {
        Ok(Some(dir)) => match load_checkpoint(&dir) {
            Ok(c) => return Ok(Some((c, warnings))),
            Err(e) => {
                warnings.push(format!("the latest checkpoint is unusable: {e}"));
                tried.push(dir);
            }
        },
        Ok(None) => {}
        Err(e) => warnings.push(e.to_string()),
    }
    let mut all = list_checkpoints(run)?;
    all.reverse();
    for (_, dir) in all {
        if tried.contains(&dir) {
            continue;
        }
        match load_checkpoint(&dir) {
            Ok(c) => {
                warnings.push(format!("continuing from {} instead", dir.display()));
                return Ok(Some((c, warnings)));
            }
            Err(e) => warnings.push(format!("skipping {e}")),
        }
    }
    if warnings.is_empty() {
        Ok(None)
    } else {
        Err(TrainError::Resume {
            run: run.display().to_string(),
            why: format!("no checkpoint loads: {}", warnings.join("; ")),
        })
    }
}

/// Loads and checks one checkpoint folder: the model folder, `trainer.json` and the moments
/// must all be present, agree with each other and hold finite values.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint> {
    if !dir.is_dir() {
        return Err(checkpoint_error(dir, "no such checkpoint folder"));
    }
    let trainer = dir.join(TRAINER_FILE);
    let text = std::fs::read_to_string(&trainer).map_err(|e| checkpoint_error(&trainer, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(&trainer, format!("not a trainer state: {e}")))?;
    if state.format != FORMAT || state.version != VERSION {
        return Err(checkpoint_error(
            &trainer,
            format!(
                "format '{}' version {}, this build reads '{FORMAT}' version {VERSION}",
                state.format, state.version
            ),
        ));
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string());
    if let Some(step) = name.as_deref().and_then(parse_name) {
        if step != state.step {
            return Err(checkpoint_error(
                &trainer,
                format!("says step {}, its folder says step {step}", state.step),
            ));
        }
    }
    let model = load_model(&dir.join(MODEL_DIR))?;
    let (m, v) = load_moments(&dir.join(OPTIMIZER_FILE), model.params.len())?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        state,
        config: model.config,
        params: model.params,
        m,
        v,
    })
}

/// Writes the AdamW moments as two f32 tensors "m" and "v" of shape [n].
fn save_moments(path: &Path, m: &[f32], v: &[f32]) -> Result<()> {
    let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|f| f.to_le_bytes()).collect() };
    let (mb, vb) = (bytes(m), bytes(v));
    let views = [("m", m.len(), &mb), ("v", v.len(), &vb)]
        .into_iter()
        .map(|(name, n, data)| {
            TensorView::new(Dtype::F32, vec![n], data)
                .map(|view| (name.to_string(), view))
                .map_err(|e| io_error(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "samba-train adamw".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| io_error(path, e))
}

/// Reads the moments back, checking names, dtype, length and finiteness.
fn load_moments(path: &Path, numel: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| {
        checkpoint_error(
            path,
            format!("not a readable safetensors file ({e}); it may be truncated"),
        )
    })?;
    let read = |name: &str| -> Result<Vec<f32>> {
        let view = tensors
            .tensor(name)
            .map_err(|_| checkpoint_error(path, format!("tensor '{name}' is missing")))?;
        if view.dtype() != Dtype::F32 || view.shape() != [numel] {
            return Err(checkpoint_error(
                path,
                format!(
                    "tensor '{name}' is {:?} {:?}, expected F32 [{numel}] (the model's parameter count)",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(checkpoint_error(
                path,
                format!("tensor '{name}' holds a non-finite value at element {i}"),
            ));
        }
        Ok(values)
    };
    Ok((read("m")?, read("v")?))
}
