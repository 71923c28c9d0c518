//! A model folder ready to evaluate: the model on its device ([`Engine`]) and the tokenizer it
//! was trained with, checked against each other.

use std::path::{Path, PathBuf};

use samba_data::TextTokenizer;
use samba_model::checkpoint::load_model;
use samba_runtime::{Device, Engine, GpuDtype};

use crate::error::{EvalError, Result};

pub struct EvalModel {
    pub dir: PathBuf,
    pub engine: Engine,
    pub tokenizer: TextTokenizer,
    pub tokenizer_path: PathBuf,
}

impl EvalModel {
    /// Loads `dir` (config.json, model.safetensors) onto `device` (on a GPU stored as `dtype`)
    /// with `tokenizer` or, when `None`, the folder's tokenizer.json. The tokenizer is checked
    /// before the weights go to the device.
    pub fn load(
        dir: &Path,
        tokenizer: Option<&Path>,
        device: &Device,
        dtype: GpuDtype,
    ) -> Result<EvalModel> {
        let loaded = load_model(dir)?;
        let tokenizer_path = match (tokenizer, &loaded.tokenizer) {
            (Some(t), _) => t.to_path_buf(),
            (None, Some(t)) => t.clone(),
            (None, None) => {
                return Err(EvalError::NoTokenizer {
                    model: dir.to_path_buf(),
                })
            }
        };
        let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
        check_vocab(dir, loaded.config.vocab, &tokenizer, &tokenizer_path)?;
        let engine = Engine::from_loaded(loaded, device, dtype)?;
        EvalModel::new(dir, engine, tokenizer, &tokenizer_path)
    }

    /// Pairs a model with a tokenizer, refusing a tokenizer whose ids the model has no
    /// embedding rows for.
    pub fn new(
        dir: &Path,
        engine: Engine,
        tokenizer: TextTokenizer,
        tokenizer_path: &Path,
    ) -> Result<EvalModel> {
        check_vocab(dir, engine.config().vocab, &tokenizer, tokenizer_path)?;
        Ok(EvalModel {
            dir: dir.to_path_buf(),
            engine,
            tokenizer,
            tokenizer_path: tokenizer_path.to_path_buf(),
        })
    }
}

fn check_vocab(
    dir: &Path,
    model_vocab: usize,
    tokenizer: &TextTokenizer,
    tokenizer_path: &Path,
) -> Result<()> {
    if model_vocab < tokenizer.vocab_size() {
        return Err(EvalError::VocabMismatch {
            model: dir.to_path_buf(),
            model_vocab,
            tokenizer: tokenizer_path.to_path_buf(),
            tokenizer_vocab: tokenizer.vocab_size(),
        });
    }
    Ok(())
}
