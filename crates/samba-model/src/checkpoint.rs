//! Model folders: `config.json` + `model.safetensors` (+ `tokenizer.json` when there is one).
//!
//! Tensors carry the reference state-dict names and shapes (shared/SPEC.md section 2). Loading
//! accepts F32, BF16 and F16 and checks every name, shape, dtype and value against the config;
//! tied embeddings are saved under both `transformer.wte.weight` and `lm_head.weight`.
//! Saving writes a whole folder beside the target and renames it into place, so a crash never
//! leaves a half-written model folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::config::Config;
use crate::error::ModelError;
use crate::layout::ParamLayout;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
const TIED_HEAD: &str = "lm_head.weight";

/// Storage type of the tensors in a saved `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    pub fn from_name(name: &str) -> Option<SaveDtype> {
        match name {
            "f32" | "F32" | "float32" => Some(SaveDtype::F32),
            "bf16" | "BF16" | "bfloat16" => Some(SaveDtype::Bf16),
            "f16" | "F16" | "float16" => Some(SaveDtype::F16),
            _ => None,
        }
    }
}

/// A model as loaded from a folder: its config, layout and flat f32 parameters.
pub struct LoadedModel {
    pub config: Config,
    pub layout: ParamLayout,
    pub params: Vec<f32>,
    /// `tokenizer.json` in the folder, when there is one.
    pub tokenizer: Option<PathBuf>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Reads and validates `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<Config, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
    Config::from_json(&text, &path.display().to_string())
}

/// Loads a model folder.
pub fn load_model(dir: &Path) -> Result<LoadedModel, ModelError> {
    if !dir.exists() {
        return Err(io_error(
            dir,
            "no such model folder (expected a directory holding config.json and model.safetensors)",
        ));
    }
    if !dir.is_dir() {
        return Err(io_error(
            dir,
            "not a model folder (expected a directory holding config.json and model.safetensors)",
        ));
    }
    let config = load_config(dir)?;
    let layout = ParamLayout::new(&config);
    let path = dir.join(WEIGHTS_FILE);
    let params = load_weights(&path, &config, &layout)?;
    let tokenizer = Some(dir.join(TOKENIZER_FILE)).filter(|p| p.is_file());
    Ok(LoadedModel {
        config,
        layout,
        params,
        tokenizer,
    })
}

/// Reads `model.safetensors` into a flat f32 buffer laid out by `layout`.
pub fn load_weights(
    path: &Path,
    config: &Config,
    layout: &ParamLayout,
) -> Result<Vec<f32>, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    // SAFETY: the file is only read; a concurrent writer could change the bytes under us, which
    // at worst yields wrong values or a parse error, never memory unsafety in safe Rust reading
    // a byte slice that stays mapped for the life of `bytes`.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
    let display = path.display().to_string();
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
        path: display.clone(),
        why: describe_unreadable(&bytes, e),
    })?;

    let expected: HashMap<&str, usize> = layout
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let tied_extra = config.tied_embeddings.then_some(TIED_HEAD);
    let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in &names {
        if !expected.contains_key(name.as_str()) && Some(name.as_str()) != tied_extra {
            return Err(ModelError::UnexpectedTensor {
                path: display,
                name: name.clone(),
            });
        }
    }

    // Every name, shape and dtype is checked before the (possibly large) buffer is allocated, so
    // a config that contradicts the file is reported as such rather than as an allocation failure.
    let mut views = Vec::with_capacity(layout.tensors.len());
    for spec in &layout.tensors {
        let view = tensors
            .tensor(&spec.name)
            .map_err(|_| ModelError::MissingTensor {
                path: display.clone(),
                name: spec.name.clone(),
                layout: config.layout.to_string(),
                n_layer: config.n_layer,
            })?;
        check_tensor(&display, &spec.name, &view, &spec.shape)?;
        views.push(view);
    }
    let wte = layout.spec(layout.wte);
    let tied_view = match tied_extra.map(|head| tensors.tensor(head)) {
        Some(Ok(view)) => {
            check_tensor(&display, TIED_HEAD, &view, &wte.shape)?;
            Some(view)
        }
        _ => None,
    };

    let mut params = vec![0.0f32; layout.numel];
    for (spec, view) in layout.tensors.iter().zip(&views) {
        read_tensor(&display, &spec.name, view, &mut params[spec.range()])?;
    }
    if let Some(view) = tied_view {
        let mut copy = vec![0.0f32; wte.numel()];
        read_tensor(&display, TIED_HEAD, &view, &mut copy)?;
        let saved = &params[wte.range()];
        if let Some(index) = (0..copy.len()).find(|&i| copy[i] != saved[i]) {
            return Err(ModelError::TiedMismatch {
                path: display,
                index,
            });
        }
    }
    Ok(params)
}

/// Explains why the safetensors parser refused `bytes`. A truncated file is the common case
/// (an interrupted copy or download): the parser only says the data does not cover the file, so
/// name the first tensor whose bytes are missing.
fn describe_unreadable(bytes: &[u8], error: safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError::{
        HeaderTooSmall, InvalidHeaderLength, MetadataIncompleteBuffer,
    };
    let why = error.to_string();
    if matches!(error, HeaderTooSmall | InvalidHeaderLength) {
        return format!(
            "{why}: the file holds only {} bytes (truncated, or not a safetensors file)",
            bytes.len()
        );
    }
    if !matches!(error, MetadataIncompleteBuffer) {
        return why;
    }
    let Some((header_len, metadata)) = header_only(bytes) else {
        return why;
    };
    let data_len = bytes.len().saturating_sub(8 + header_len);
    let mut infos: Vec<_> = metadata.tensors().into_iter().collect();
    infos.sort_by_key(|(_, info)| info.data_offsets.0);
    let needed = infos.last().map_or(0, |(_, info)| info.data_offsets.1);
    match infos
        .iter()
        .find(|(_, info)| info.data_offsets.1 > data_len)
    {
        Some((name, info)) => format!(
            "the file is truncated: tensor '{name}' needs data bytes {}..{} but the file holds \
             only {data_len} bytes of data ({needed} expected)",
            info.data_offsets.0, info.data_offsets.1
        ),
        None => format!(
            "{why}: the header describes {needed} bytes of tensor data, the file holds {data_len}"
        ),
    }
}

/// The header of a safetensors file whose data section is incomplete, and its length in bytes.
fn header_only(bytes: &[u8]) -> Option<(usize, safetensors::tensor::Metadata)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    Some((n, serde_json::from_slice(header).ok()?))
}

/// Checks a stored tensor's shape and dtype against the layout.
fn check_tensor(
    path: &str,
    name: &str,
    view: &TensorView<'_>,
    shape: &[usize],
) -> Result<(), ModelError> {
    if view.shape() != shape {
        return Err(ModelError::WrongShape {
            path: path.to_string(),
            name: name.to_string(),
            found: view.shape().to_vec(),
            expected: shape.to_vec(),
        });
    }
    match view.dtype() {
        Dtype::F32 | Dtype::BF16 | Dtype::F16 => Ok(()),
        other => Err(ModelError::WrongDtype {
            path: path.to_string(),
            name: name.to_string(),
            found: format!("{other:?}"),
        }),
    }
}

/// Converts a checked tensor to f32 into `out` and rejects non-finite values.
fn read_tensor(
    path: &str,
    name: &str,
    view: &TensorView<'_>,
    out: &mut [f32],
) -> Result<(), ModelError> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        other => {
            return Err(ModelError::WrongDtype {
                path: path.to_string(),
                name: name.to_string(),
                found: format!("{other:?}"),
            })
        }
    }
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            path: path.to_string(),
            name: name.to_string(),
            index,
        });
    }
    Ok(())
}

/// Encodes one tensor for storage. Refuses values the loader would refuse: non-finite ones, and
/// finite ones that round to infinity in the storage type (|v| > 65504 in f16), so that a saved
/// folder always loads back.
fn encode(
    path: &Path,
    name: &str,
    values: &[f32],
    dtype: SaveDtype,
) -> Result<(Dtype, Vec<u8>), ModelError> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            path: path.display().to_string(),
            name: name.to_string(),
            index,
        });
    }
    let overflow = |index: usize, type_name: &'static str| ModelError::Overflow {
        path: path.display().to_string(),
        name: name.to_string(),
        index,
        value: values[index],
        dtype: type_name,
    };
    Ok(match dtype {
        SaveDtype::F32 => (
            Dtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        SaveDtype::Bf16 => {
            let stored: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            if let Some(index) = stored.iter().position(|v| v.is_infinite()) {
                return Err(overflow(index, "BF16"));
            }
            (
                Dtype::BF16,
                stored.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        }
        SaveDtype::F16 => {
            let stored: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            if let Some(index) = stored.iter().position(|v| v.is_infinite()) {
                return Err(overflow(index, "F16"));
            }
            (
                Dtype::F16,
                stored.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        }
    })
}

/// Writes `model.safetensors` for a flat parameter buffer.
pub fn save_weights(
    path: &Path,
    config: &Config,
    layout: &ParamLayout,
    params: &[f32],
    dtype: SaveDtype,
) -> Result<(), ModelError> {
    let mut encoded: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = layout
        .tensors
        .iter()
        .map(|spec| {
            let (dt, bytes) = encode(path, &spec.name, &params[spec.range()], dtype)?;
            Ok((spec.name.clone(), spec.shape.clone(), dt, bytes))
        })
        .collect::<Result<_, ModelError>>()?;
    if config.tied_embeddings {
        let wte = layout.spec(layout.wte);
        let (dt, bytes) = encode(path, TIED_HEAD, &params[wte.range()], dtype)?;
        encoded.push((TIED_HEAD.to_string(), wte.shape.clone(), dt, bytes));
    }
    let views = encoded
        .iter()
        .map(|(name, shape, dt, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| io_error(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| io_error(path, e))
}

/// Writes a complete model folder at `dir`, atomically: the files go to a temporary sibling
/// folder that is renamed to `dir` at the end. `dir` must not exist, or be an empty folder.
pub fn save_model(
    dir: &Path,
    config: &Config,
    layout: &ParamLayout,
    params: &[f32],
    dtype: SaveDtype,
    tokenizer: Option<&Path>,
) -> Result<(), ModelError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(io_error(
                dir,
                "already exists and is not empty; choose another --out or remove it",
            ));
        }
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| io_error(dir, "not a folder name"))?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
        let config_path = tmp.join(CONFIG_FILE);
        std::fs::write(&config_path, config.to_json() + "\n")
            .map_err(|e| io_error(&config_path, e))?;
        save_weights(&tmp.join(WEIGHTS_FILE), config, layout, params, dtype)?;
        if let Some(src) = tokenizer {
            let dst = tmp.join(TOKENIZER_FILE);
            std::fs::copy(src, &dst).map_err(|e| io_error(src, e))?;
        }
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| io_error(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| io_error(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
