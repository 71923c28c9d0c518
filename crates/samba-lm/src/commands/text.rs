//! Text to token ids with a model folder's tokenizer.json.

use std::path::Path;

use anyhow::{bail, Result};

/// Tokenizes `text` with the tokenizer at `path`.
pub fn encode(path: &Path, _text: &str) -> Result<Vec<u32>> {
    bail!("{}: text input needs the tokenizer support of the data crate, which this build lacks; pass --tokens", path.display())
}
