//! The tokenizer: byte-level BPE from the `tokenizers` crate, trained here or loaded from any
//! `tokenizer.json`.
//!
//! Byte-level means every UTF-8 string maps to tokens and back exactly: text is split by the
//! GPT-2 pattern, each byte becomes one of 256 printable characters, and merges act on those.
//! Nothing normalises the text, so `decode(encode(s)) == s` for every `s`.
//!
//! Special tokens `<|bos|>`, `<|eos|>`, `<|pad|>` take ids 0, 1, 2 of a trained vocabulary.
//! Documents are separated by `<|eos|>`, appended by the data pipeline rather than the
//! tokenizer, and special-token strings inside a document are encoded as plain text, so no
//! document can forge a document boundary.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{DataError, Result};

pub const BOS: &str = "<|bos|>";
pub const EOS: &str = "<|eos|>";
pub const PAD: &str = "<|pad|>";

/// Names that other tokenizer.json files use for the end-of-document token, tried in order.
const EOS_NAMES: [&str; 5] = [EOS, "<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"];
const BOS_NAMES: [&str; 4] = [BOS, "<s>", "<|begin_of_text|>", "<bos>"];
const PAD_NAMES: [&str; 3] = [PAD, "<pad>", "<|padding|>"];

/// The paper's vocabulary size (Llama-2's).
pub const DEFAULT_VOCAB_SIZE: usize = 32000;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Final vocabulary size, special tokens and the 256 byte symbols included.
    pub vocab_size: usize,
    /// A pair must occur this often to be merged.
    pub min_frequency: u64,
    /// Longest token in characters; `None` for no limit.
    pub max_token_length: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            vocab_size: DEFAULT_VOCAB_SIZE,
            min_frequency: 2,
            max_token_length: Some(32),
        }
    }
}

/// A loaded tokenizer plus the ids the data pipeline needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eos_id: u32,
    bos_id: Option<u32>,
    pad_id: Option<u32>,
    vocab_size: usize,
    sha256: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("eos_id", &self.eos_id)
            .field("sha256", &self.sha256)
            .finish()
    }
}

fn byte_level() -> ByteLevel {
    // No prefix space: a document is encoded as it is, so decode gives it back unchanged.
    ByteLevel::default()
        .add_prefix_space(false)
        .trim_offsets(false)
        .use_regex(true)
}

impl TextTokenizer {
    /// Train byte-level BPE on `documents` (streamed; the trainer counts words in parallel).
    pub fn train<I, S>(documents: I, config: &TrainConfig) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let specials = [BOS, EOS, PAD];
        let minimum = 256 + specials.len();
        if config.vocab_size < minimum {
            return Err(DataError::Config(format!(
                "vocab size {} is below the {minimum} that byte-level BPE needs (256 bytes + {} special tokens)",
                config.vocab_size,
                specials.len()
            )));
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(config.vocab_size)
            .min_frequency(config.min_frequency)
            .max_token_length(config.max_token_length)
            .show_progress(false)
            .special_tokens(
                specials
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(byte_level()));
        inner.with_decoder(Some(byte_level()));
        inner
            .train(&mut trainer, documents)
            .map_err(|e| DataError::Tokenize(format!("training failed: {e}")))?;
        Self::from_tokenizer(inner, Path::new("<trained>"))
    }

    /// Load any `tokenizer.json` (ours or another project's) that has an end-of-document token.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let inner: Tokenizer = json.parse().map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
        Self::from_tokenizer(inner, path)
    }

    fn from_tokenizer(mut inner: Tokenizer, origin: &Path) -> Result<Self> {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let eos_id = find(&EOS_NAMES).ok_or_else(|| DataError::NoEos {
            candidates: EOS_NAMES.join(", "),
        })?;
        let bos_id = find(&BOS_NAMES);
        let pad_id = find(&PAD_NAMES);
        // Special-token strings inside documents are text, not control tokens.
        inner.set_encode_special_tokens(true);
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let json = inner.to_string(false).map_err(|e| DataError::Tokenizer {
            path: origin.to_path_buf(),
            message: format!("cannot serialise: {e}"),
        })?;
        let sha256 = hex(&Sha256::digest(json.as_bytes()));
        Ok(TextTokenizer {
            inner,
            eos_id,
            bos_id,
            pad_id,
            vocab_size,
            sha256,
        })
    }

    /// Write `tokenizer.json` (pretty), through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| DataError::Tokenize(format!("cannot serialise: {e}")))?;
        let tmp = tmp_path(path);
        std::fs::write(&tmp, json).map_err(|e| DataError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
    }

    /// Token ids of `text`, without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are kept as their strings.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DataError::Tokenize(e.to_string()))
    }

    /// The string of one token (for statistics), if the id exists.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// One more than the largest id: the rows an embedding table needs.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }
    /// SHA-256 of the tokenizer's compact JSON: names the tokenizer in shard indexes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `dir/.name.tmp-PID` beside `path`, so that the final rename stays on one file system.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Train on the documents of `inputs` (files and folders, as [`crate::sources::discover`]
/// finds them), streaming them from a reader thread. Returns the tokenizer and what reading
/// skipped.
pub fn train_on_files(
    inputs: &[PathBuf],
    config: &TrainConfig,
    read: crate::sources::ReadOptions,
    progress: bool,
) -> Result<(TextTokenizer, crate::stream::ReadReport)> {
    use crate::sources::discover;
    use crate::stream::DocumentStream;
    let discovered = discover(inputs)?;
    let disk_bytes: u64 = discovered.files.iter().map(|f| f.disk_bytes).sum();
    let bar = crate::progress::bytes_bar(disk_bytes, progress);
    bar.set_message("reading and counting words");
    let mut stream = DocumentStream::spawn(discovered.files.clone(), read, 4 << 20, bar.clone());
    let merge_bar = bar.clone();
    let texts = stream
        .by_ref()
        .flatten()
        .map(|doc| doc.text)
        .chain(std::iter::from_fn(move || {
            merge_bar.set_message("computing BPE merges");
            None
        }));
    let trained = TextTokenizer::train(texts, config);
    let mut report = stream.finish();
    bar.finish_and_clear();
    let mut skipped = discovered.skipped;
    skipped.append(&mut report.skipped);
    report.skipped = skipped;
    if report.documents() == 0 {
        return Err(DataError::NoDocuments {
            inputs: inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            skipped: report.skipped.len(),
        });
    }
    Ok((trained?, report))
}
