//! A model folder ready to evaluate: the CPU model and the tokenizer it was trained with,
//! checked against each other.

use std::path::{Path, PathBuf};

use samba_cpu::CpuModel;
use samba_data::TextTokenizer;
use samba_model::checkpoint::load_model;

use crate::error::{EvalError, Result};

pub struct EvalModel {
    pub dir: PathBuf,
    pub model: CpuModel,
    pub tokenizer: TextTokenizer,
    pub tokenizer_path: PathBuf,
}

impl EvalModel {
    /// Loads `dir` (config.json, model.safetensors) with `tokenizer` or, when `None`, the
    /// folder's tokenizer.json.
    pub fn load(dir: &Path, tokenizer: Option<&Path>) -> Result<EvalModel> {
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
        EvalModel::new(
            dir,
            CpuModel::from_loaded(loaded),
            tokenizer,
            &tokenizer_path,
        )
    }

    /// Pairs a model with a tokenizer, refusing a tokenizer whose ids the model has no
    /// embedding rows for.
    pub fn new(
        dir: &Path,
        model: CpuModel,
        tokenizer: TextTokenizer,
        tokenizer_path: &Path,
    ) -> Result<EvalModel> {
        if model.config.vocab < tokenizer.vocab_size() {
            return Err(EvalError::VocabMismatch {
                model: dir.to_path_buf(),
                model_vocab: model.config.vocab,
                tokenizer: tokenizer_path.to_path_buf(),
                tokenizer_vocab: tokenizer.vocab_size(),
            });
        }
        Ok(EvalModel {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            tokenizer_path: tokenizer_path.to_path_buf(),
        })
    }
}
