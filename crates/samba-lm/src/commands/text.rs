//! Text to token ids with a model folder's tokenizer.json.

use std::path::Path;

use anyhow::Result;
use samba_data::TextTokenizer;

/// Tokenizes `text` with the tokenizer at `path`.
pub fn encode(path: &Path, text: &str) -> Result<Vec<u32>> {
    let tokenizer = TextTokenizer::from_file(path)?;
    Ok(tokenizer.encode(text)?)
}
