//! Where documents come from: files and folders of plain text, Markdown, reStructuredText and
//! JSON Lines (a "text" field per line), each optionally gzip- or zstd-compressed.
//!
//! One document per text file, one per JSON line. A bad item (non-UTF-8 bytes, an empty
//! document, a malformed JSON line, a line without a string "text", a line longer than
//! [`ReadOptions::max_line_bytes`], an unreadable or truncated file, an unsupported file in a
//! folder) never stops the run: it becomes a [`Skipped`] with its file and line, and is counted.
//!
//! Folders are walked recursively in sorted order (so runs are reproducible); hidden entries
//! (names starting with '.') are ignored. A file named explicitly with an unknown extension is
//! read as plain text: the user asked for it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// How the documents sit in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The whole file is one document (.txt, .md, .rst).
    Text,
    /// One JSON object per line with a string field "text" (.jsonl).
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One input file, found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: PathBuf,
    pub format: Format,
    pub compression: Compression,
    /// Size on disk (compressed), for progress.
    pub disk_bytes: u64,
}

/// A document as read: its text and where it came from (`line` is 1 for whole-file documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Index into the list of [`SourceFile`]s being read.
    pub source: usize,
    pub line: usize,
    pub text: String,
}

/// Why an item was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SkipReason {
    /// A file in a folder whose extension is none of the supported ones.
    Unsupported,
    /// Invalid UTF-8; `byte` is the offset of the first bad byte in the (decompressed) item.
    NotUtf8 {
        byte: u64,
    },
    /// Empty or whitespace-only document.
    Empty,
    MalformedJson {
        message: String,
    },
    /// A JSON line without a "text" field.
    MissingText,
    /// A JSON line whose "text" is not a string.
    TextNotString,
    /// A line longer than the limit (a minified blob, a binary file, a runaway JSON line).
    LineTooLong {
        bytes: u64,
        limit: usize,
    },
    /// The file could not be opened or decompressed (the rest of it is skipped).
    Unreadable {
        message: String,
    },
}

impl SkipReason {
    /// A short stable name, used for the counts in the summary and the index.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::Unsupported => "unsupported",
            SkipReason::NotUtf8 { .. } => "not-utf8",
            SkipReason::Empty => "empty",
            SkipReason::MalformedJson { .. } => "malformed-json",
            SkipReason::MissingText => "missing-text",
            SkipReason::TextNotString => "text-not-string",
            SkipReason::LineTooLong { .. } => "line-too-long",
            SkipReason::Unreadable { .. } => "unreadable",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Unsupported => {
                write!(
                    f,
                    "unsupported file type (want .txt .md .rst .jsonl, optionally .gz/.zst)"
                )
            }
            SkipReason::NotUtf8 { byte } => {
                write!(f, "not valid UTF-8 (first bad byte at offset {byte})")
            }
            SkipReason::Empty => write!(f, "empty document"),
            SkipReason::MalformedJson { message } => write!(f, "malformed JSON: {message}"),
            SkipReason::MissingText => write!(f, "JSON object has no \"text\" field"),
            SkipReason::TextNotString => write!(f, "JSON field \"text\" is not a string"),
            SkipReason::LineTooLong { bytes, limit } => {
                write!(
                    f,
                    "line of {bytes}+ bytes is longer than the limit of {limit} bytes"
                )
            }
            SkipReason::Unreadable { message } => write!(f, "unreadable: {message}"),
        }
    }
}

/// A skipped item: file, line (where known) and reason. Displays as `path:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// Counts of skipped items by [`SkipReason::kind`].
pub fn count_skipped(skipped: &[Skipped]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for s in skipped {
        *counts.entry(s.reason.kind().to_string()).or_insert(0) += 1;
    }
    counts
}

#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Longest accepted line in bytes, in text files and JSON Lines alike.
    pub max_line_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        // 16 MiB: far beyond any line of prose or any SlimPajama record, small enough that a
        // binary file or a minified blob is caught before it is held in memory.
        ReadOptions {
            max_line_bytes: 16 << 20,
        }
    }
}

/// The result of [`discover`]: files to read and items already skipped.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub files: Vec<SourceFile>,
    pub skipped: Vec<Skipped>,
}

/// Recognise `name.{txt,md,rst,jsonl}[.gz|.zst]` (`.rst.txt`, `.markdown`, `.json` lines too).
pub fn classify(path: &Path) -> Option<(Format, Compression)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, compression) = if let Some(stem) = name.strip_suffix(".gz") {
        (stem, Compression::Gzip)
    } else if let Some(stem) = name.strip_suffix(".zst") {
        (stem, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let ext = Path::new(stem).extension()?.to_str()?;
    let format = match ext {
        "txt" | "md" | "markdown" | "rst" | "text" => Format::Text,
        "jsonl" | "ndjson" => Format::Jsonl,
        _ => return None,
    };
    Some((format, compression))
}

/// Find the input files under `inputs` (files or folders), in a deterministic order.
pub fn discover(inputs: &[PathBuf]) -> Result<Discovered> {
    let mut found = Discovered::default();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::MissingInput {
                path: input.clone(),
            },
            _ => DataError::io(input, e),
        })?;
        if meta.is_dir() {
            walk(input, &mut found)?;
        } else {
            // Named explicitly: read it even with an unknown extension, as plain text.
            let (format, compression) =
                classify(input).unwrap_or((Format::Text, compression_of(input)));
            found.files.push(SourceFile {
                path: input.clone(),
                format,
                compression,
                disk_bytes: meta.len(),
            });
        }
    }
    Ok(found)
}

fn compression_of(path: &Path) -> Compression {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Compression::Gzip,
        Some("zst") => Compression::Zstd,
        _ => Compression::None,
    }
}

fn walk(dir: &Path, found: &mut Discovered) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                found.skipped.push(Skipped {
                    path,
                    line: None,
                    reason: SkipReason::Unreadable {
                        message: e.to_string(),
                    },
                });
                continue;
            }
        };
        if meta.is_dir() {
            walk(&path, found)?;
        } else if let Some((format, compression)) = classify(&path) {
            found.files.push(SourceFile {
                path,
                format,
                compression,
                disk_bytes: meta.len(),
            });
        } else {
            found.skipped.push(Skipped {
                path,
                line: None,
                reason: SkipReason::Unsupported,
            });
        }
    }
    Ok(())
}

/// Counts bytes read from disk into a progress bar.
struct Counted<R> {
    inner: R,
    progress: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

fn open(file: &SourceFile, progress: &ProgressBar) -> std::io::Result<Box<dyn BufRead>> {
    let raw = Counted {
        inner: File::open(&file.path)?,
        progress: progress.clone(),
    };
    Ok(match file.compression {
        Compression::None => Box::new(BufReader::with_capacity(1 << 16, raw)),
        // Multi-member: .dict.dz and concatenated .gz files have several gzip members.
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(raw)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 16,
            zstd::stream::read::Decoder::new(raw)?,
        )),
    })
}

/// What one call of [`read_line_bounded`] found.
enum Line {
    Eof,
    /// A line is in the buffer (without its '\n').
    Ok,
    /// The line passed the limit; it was consumed and dropped. Holds how many bytes were seen.
    TooLong(u64),
}

/// Read one line without ever holding more than `limit` bytes of it.
fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut seen: u64 = 0;
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if too_long {
                Line::TooLong(seen)
            } else if seen == 0 {
                Line::Eof
            } else {
                Line::Ok
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        seen += take as u64;
        if !too_long && buf.len() + take > limit {
            too_long = true;
            buf.clear();
        }
        if !too_long {
            buf.extend_from_slice(&chunk[..take]);
        }
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long {
                Line::TooLong(seen)
            } else {
                Line::Ok
            });
        }
    }
}

/// 1-based line number of byte offset `at` in `bytes`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    1 + bytes[..at.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Per-file totals, recorded in the index's source list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub path: PathBuf,
    pub documents: u64,
    /// UTF-8 bytes of the accepted documents.
    pub text_bytes: u64,
    pub skipped: u64,
}

/// Read the documents of one file, handing each to `emit` and each bad item to `skipped`.
pub fn read_file(
    index: usize,
    file: &SourceFile,
    options: &ReadOptions,
    progress: &ProgressBar,
    emit: &mut dyn FnMut(Document) -> bool,
    skipped: &mut Vec<Skipped>,
) -> SourceSummary {
    let mut summary = SourceSummary {
        path: file.path.clone(),
        ..Default::default()
    };
    let before = skipped.len();
    let mut skip = |line: Option<usize>, reason: SkipReason| {
        skipped.push(Skipped {
            path: file.path.clone(),
            line,
            reason,
        })
    };
    let mut reader = match open(file, progress) {
        Ok(r) => r,
        Err(e) => {
            skip(
                None,
                SkipReason::Unreadable {
                    message: e.to_string(),
                },
            );
            summary.skipped = 1;
            return summary;
        }
    };
    let mut accept = |line: usize, text: String, summary: &mut SourceSummary| -> bool {
        summary.documents += 1;
        summary.text_bytes += text.len() as u64;
        emit(Document {
            source: index,
            line,
            text,
        })
    };
    match file.format {
        Format::Text => {
            let mut bytes = Vec::with_capacity(file.disk_bytes.min(1 << 30) as usize);
            if let Err(e) = reader.read_to_end(&mut bytes) {
                skip(
                    None,
                    SkipReason::Unreadable {
                        message: e.to_string(),
                    },
                );
            } else if let Some((line, len)) = longest_line_over(&bytes, options.max_line_bytes) {
                skip(
                    Some(line),
                    SkipReason::LineTooLong {
                        bytes: len as u64,
                        limit: options.max_line_bytes,
                    },
                );
            } else {
                match String::from_utf8(bytes) {
                    Err(e) => {
                        let at = e.utf8_error().valid_up_to();
                        skip(
                            Some(line_of(e.as_bytes(), at)),
                            SkipReason::NotUtf8 { byte: at as u64 },
                        );
                    }
                    Ok(mut text) => {
                        if text.starts_with('\u{feff}') {
                            text.drain(..'\u{feff}'.len_utf8());
                        }
                        if text.trim().is_empty() {
                            skip(Some(1), SkipReason::Empty);
                        } else {
                            accept(1, text, &mut summary);
                        }
                    }
                }
            }
        }
        Format::Jsonl => {
            let mut buf = Vec::new();
            let mut line = 0usize;
            loop {
                line += 1;
                match read_line_bounded(reader.as_mut(), &mut buf, options.max_line_bytes) {
                    Err(e) => {
                        skip(
                            Some(line),
                            SkipReason::Unreadable {
                                message: e.to_string(),
                            },
                        );
                        break;
                    }
                    Ok(Line::Eof) => break,
                    Ok(Line::TooLong(bytes)) => skip(
                        Some(line),
                        SkipReason::LineTooLong {
                            bytes,
                            limit: options.max_line_bytes,
                        },
                    ),
                    Ok(Line::Ok) => {
                        if buf.last() == Some(&b'\r') {
                            buf.pop();
                        }
                        match parse_json_line(&buf) {
                            // Blank lines separate nothing and hold nothing: not items.
                            JsonLine::Blank => {}
                            JsonLine::Text(text) => {
                                if !accept(line, text, &mut summary) {
                                    break;
                                }
                            }
                            JsonLine::Bad(reason) => skip(Some(line), reason),
                        }
                    }
                }
            }
        }
    }
    summary.skipped = (skipped.len() - before) as u64;
    summary
}

/// The first line longer than `limit`, as (1-based line, length).
fn longest_line_over(bytes: &[u8], limit: usize) -> Option<(usize, usize)> {
    if bytes.len() <= limit {
        return None;
    }
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .find(|(_, piece)| piece.len() > limit)
        .map(|(number, piece)| (number + 1, piece.len()))
}

enum JsonLine {
    Blank,
    Text(String),
    Bad(SkipReason),
}

fn parse_json_line(bytes: &[u8]) -> JsonLine {
    let s = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            return JsonLine::Bad(SkipReason::NotUtf8 {
                byte: e.valid_up_to() as u64,
            })
        }
    };
    if s.trim().is_empty() {
        return JsonLine::Blank;
    }
    let value: serde_json::Value = match serde_json::from_str(s) {
        Ok(v) => v,
        Err(e) => {
            return JsonLine::Bad(SkipReason::MalformedJson {
                message: e.to_string(),
            })
        }
    };
    let serde_json::Value::Object(mut object) = value else {
        return JsonLine::Bad(SkipReason::MalformedJson {
            message: "not a JSON object".into(),
        });
    };
    match object.remove("text") {
        None => JsonLine::Bad(SkipReason::MissingText),
        Some(serde_json::Value::String(text)) if text.trim().is_empty() => {
            JsonLine::Bad(SkipReason::Empty)
        }
        Some(serde_json::Value::String(text)) => JsonLine::Text(text),
        Some(_) => JsonLine::Bad(SkipReason::TextNotString),
    }
}
