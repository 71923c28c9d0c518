//! Shared fixtures: small corpora written to temporary folders and a small trained tokenizer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use samba_data::{TextTokenizer, TrainConfig};

/// Prose with some variety: enough for a few hundred merges.
pub const PROSE: &str = "It is a truth universally acknowledged, that a single man in possession \
of a good fortune, must be in want of a wife. However little known the feelings or views of such \
a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of \
the surrounding families, that he is considered the rightful property of some one or other of \
their daughters. Call me Ishmael. Some years ago - never mind how long precisely - having little \
or no money in my purse, and nothing particular to interest me on shore, I thought I would sail \
about a little and see the watery part of the world. In the beginning God created the heaven and \
the earth. And the earth was without form, and void; and darkness was upon the face of the deep.";

/// `n` distinct documents of a few sentences each.
pub fn documents(n: usize) -> Vec<String> {
    let sentences: Vec<&str> = PROSE.split(". ").collect();
    (0..n)
        .map(|i| {
            let a = sentences[i % sentences.len()];
            let b = sentences[(i * 7 + 3) % sentences.len()];
            format!(
                "Document {i}. {a}. {b}.\nLine two of {i}: numbers {} and {}.",
                i * 31,
                i * i
            )
        })
        .collect()
}

pub fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

pub fn jsonl(texts: &[String]) -> String {
    texts
        .iter()
        .map(|t| serde_json::json!({ "text": t, "meta": { "n": t.len() } }).to_string() + "\n")
        .collect()
}

/// A 400-token byte-level BPE trained once per test binary.
pub fn tokenizer() -> &'static TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let docs = documents(200);
        TextTokenizer::train(
            docs.iter(),
            &TrainConfig {
                vocab_size: 400,
                ..TrainConfig::default()
            },
        )
        .unwrap()
    })
}

/// The small tokenizer saved into `dir`.
pub fn tokenizer_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokenizer.json");
    tokenizer().save(&path).unwrap();
    path
}

/// A corpus folder: text, markdown, rst, jsonl, gzip and zstd files.
pub fn corpus(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("corpus");
    let docs = documents(n);
    let quarter = n / 4;
    for (i, d) in docs[..quarter].iter().enumerate() {
        let ext = ["txt", "md", "rst"][i % 3];
        write(&root.join(format!("plain/doc{i:03}.{ext}")), d.as_bytes());
    }
    write(
        &root.join("lines/a.jsonl"),
        jsonl(&docs[quarter..2 * quarter]).as_bytes(),
    );
    write(
        &root.join("lines/b.jsonl.gz"),
        &gzip(jsonl(&docs[2 * quarter..3 * quarter]).as_bytes()),
    );
    write(
        &root.join("lines/c.jsonl.zst"),
        &zstd(jsonl(&docs[3 * quarter..]).as_bytes()),
    );
    root
}
