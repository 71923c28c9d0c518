use std::path::Path;

use samba_data::index::{TokenDtype, SKIPPED_FILE};
use samba_data::prepare::assign_split;
use samba_data::{prepare, DataError, DataIndex, PrepareConfig, Split, TextTokenizer, TokenShards};

use crate::common::*;

fn config() -> PrepareConfig {
    PrepareConfig {
        val_fraction: 0.2,
        threads: Some(2),
        ..PrepareConfig::default()
    }
}

/// All tokens of a split, shard after shard.
fn stream(dir: &Path, split: Split) -> Vec<u32> {
    let shards = TokenShards::open(dir, split).unwrap();
    (0..shards.shard_lens().len())
        .flat_map(|s| shards.shard_tokens(s).unwrap())
        .collect()
}

/// Documents of a split, decoded from the token stream cut at EOS.
fn decoded(dir: &Path, split: Split, tok: &TextTokenizer) -> Vec<String> {
    let tokens = stream(dir, split);
    assert_eq!(tokens.last(), Some(&tok.eos_id()), "a split ends with EOS");
    tokens
        .split(|&t| t == tok.eos_id())
        .filter(|d| !d.is_empty())
        .map(|d| tok.decode(d).unwrap())
        .collect()
}

#[test]
fn prepared_shards_hold_every_document_once_followed_by_eos() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 80);
    let tok_path = tokenizer_file(dir.path());
    let tok = tokenizer();
    let out = dir.path().join("data");
    let report = prepare(&[corpus], tok, &tok_path, &out, &config()).unwrap();
    let index = DataIndex::load(&out).unwrap();
    assert_eq!(index, report.index);
    assert_eq!(index.dtype, TokenDtype::U16);
    assert_eq!(index.tokenizer.sha256, tok.sha256());
    assert_eq!(index.tokenizer.vocab_size, 400);
    assert_eq!(index.train.documents + index.val.documents, 80);
    assert!(index.val.documents > 0 && index.train.documents > index.val.documents);
    assert_eq!(index.sources.len(), 23);
    assert_eq!(index.skipped.total, 0);
    let docs = documents(80);
    assert_eq!(
        index.train.text_bytes + index.val.text_bytes,
        docs.iter().map(|d| d.len() as u64).sum::<u64>()
    );
    // Files: index, skipped list, one shard per split; each shard is 2 bytes per token.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "index.json",
            SKIPPED_FILE,
            "train-00000.bin",
            "val-00000.bin"
        ]
    );
    let len = std::fs::metadata(out.join("train-00000.bin"))
        .unwrap()
        .len();
    assert_eq!(len, 2 * index.train.tokens);
    // Every document comes back, in its split, in input order.
    let mut train = decoded(&out, Split::Train, tok);
    let mut val = decoded(&out, Split::Val, tok);
    assert!(train.iter().all(|d| assign_split(d, 0.2) == Split::Train));
    assert!(val.iter().all(|d| assign_split(d, 0.2) == Split::Val));
    train.append(&mut val);
    train.sort();
    let mut want = docs;
    want.sort();
    assert_eq!(train, want);
    // No temporary folder is left beside the output.
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside.len(), 3, "{beside:?}");
}

#[test]
fn output_is_identical_for_any_thread_count_and_input_split() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 60);
    let tok_path = tokenizer_file(dir.path());
    let mut outs = Vec::new();
    for (threads, batch_bytes) in [(1, 1 << 20), (2, 300), (3, 1)] {
        let out = dir.path().join(format!("data{threads}"));
        let cfg = PrepareConfig {
            threads: Some(threads),
            batch_bytes,
            ..config()
        };
        prepare(
            std::slice::from_ref(&corpus),
            tokenizer(),
            &tok_path,
            &out,
            &cfg,
        )
        .unwrap();
        outs.push(out);
    }
    for split in [Split::Train, Split::Val] {
        let first = stream(&outs[0], split);
        for out in &outs[1..] {
            assert_eq!(stream(out, split), first);
        }
    }
}

#[test]
fn the_split_depends_only_on_the_text_and_follows_the_fraction() {
    let texts: Vec<String> = (0..20000).map(|i| format!("document number {i}")).collect();
    let val = texts
        .iter()
        .filter(|t| assign_split(t, 0.1) == Split::Val)
        .count();
    assert!((1800..2200).contains(&val), "{val} of 20000 in val at 10%");
    assert!(texts.iter().all(|t| assign_split(t, 0.0) == Split::Train));
    for t in &texts[..100] {
        assert_eq!(assign_split(t, 0.5), assign_split(&t.clone(), 0.5));
    }
}

#[test]
fn shards_roll_over_at_the_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 40);
    let tok_path = tokenizer_file(dir.path());
    let out = dir.path().join("data");
    let cfg = PrepareConfig {
        shard_tokens: 100,
        val_fraction: 0.0,
        ..config()
    };
    let report = prepare(&[corpus], tokenizer(), &tok_path, &out, &cfg).unwrap();
    let shards = &report.index.train.shards;
    assert!(shards.len() > 3);
    assert!(shards[..shards.len() - 1].iter().all(|s| s.tokens == 100));
    assert_eq!(shards[2].file, "train-00002.bin");
    assert!(report.index.val.shards.is_empty());
    assert_eq!(decoded(&out, Split::Train, tokenizer()).len(), 40);
}

/// A copy of the small tokenizer with `extra` filler tokens, to get past 65536 ids.
fn big_tokenizer(dir: &Path, extra: usize) -> std::path::PathBuf {
    let mut json: serde_json::Value =
        serde_json::from_str(&tokenizer().inner().to_string(false).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let base = vocab.len();
    for i in 0..extra {
        vocab.insert(format!("filler{i}"), serde_json::json!(base + i));
    }
    write(&dir.join("big.json"), json.to_string().as_bytes())
}

#[test]
fn a_vocab_too_large_for_u16_gets_u32_shards_or_an_error_when_u16_is_forced() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 12);
    let path = big_tokenizer(dir.path(), 70_000);
    let big = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(big.vocab_size(), 70_400);
    let forced = PrepareConfig {
        dtype: Some(TokenDtype::U16),
        ..config()
    };
    let err = prepare(
        std::slice::from_ref(&corpus),
        &big,
        &path,
        &dir.path().join("u16"),
        &forced,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::VocabTooLarge {
                vocab_size: 70_400,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.path().join("u16").exists());
    let out = dir.path().join("u32");
    let report = prepare(&[corpus], &big, &path, &out, &config()).unwrap();
    assert_eq!(report.index.dtype, TokenDtype::U32);
    let len = std::fs::metadata(out.join("train-00000.bin"))
        .unwrap()
        .len();
    assert_eq!(len, 4 * report.index.train.tokens);
    assert_eq!(
        decoded(&out, Split::Train, &big).len() as u64,
        report.index.train.documents
    );
}

#[test]
fn skipped_items_are_counted_in_the_index_and_listed_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 20);
    write(&corpus.join("bad/empty.txt"), b"");
    write(&corpus.join("bad/latin1.txt"), b"caf\xe9\n");
    write(
        &corpus.join("bad/lines.jsonl"),
        b"{\"text\":\"kept\"}\n{oops\n{\"title\":\"x\"}\n",
    );
    write(&corpus.join("bad/image.png"), b"\x89PNG");
    let tok_path = tokenizer_file(dir.path());
    let out = dir.path().join("data");
    let report = prepare(&[corpus], tokenizer(), &tok_path, &out, &config()).unwrap();
    let index = &report.index;
    assert_eq!(index.train.documents + index.val.documents, 21);
    assert_eq!(index.skipped.total, 5);
    let kinds: Vec<(&str, u64)> = index
        .skipped
        .by_kind
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        kinds,
        [
            ("empty", 1),
            ("malformed-json", 1),
            ("missing-text", 1),
            ("not-utf8", 1),
            ("unsupported", 1)
        ]
    );
    let listing = std::fs::read_to_string(out.join(SKIPPED_FILE)).unwrap();
    assert_eq!(listing.lines().count(), 5);
    assert!(
        listing.contains("bad/lines.jsonl:2: malformed JSON"),
        "{listing}"
    );
    assert!(
        listing.contains("bad/lines.jsonl:3: JSON object has no \"text\" field"),
        "{listing}"
    );
    assert!(
        listing.contains("bad/latin1.txt:1: not valid UTF-8"),
        "{listing}"
    );
}

#[test]
fn failures_leave_nothing_in_the_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tok_path = tokenizer_file(dir.path());
    // Only bad inputs: no documents.
    let bad = write(&dir.path().join("in/empty.txt"), b"");
    let out = dir.path().join("data");
    let err = prepare(&[bad], tokenizer(), &tok_path, &out, &config()).unwrap_err();
    assert!(
        matches!(err, DataError::NoDocuments { skipped: 1, .. }),
        "{err}"
    );
    assert!(!out.exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only in/ and tokenizer.json remain: {names:?}"
    );
    // An existing output is not touched without overwrite.
    let corpus = corpus(dir.path(), 8);
    std::fs::create_dir(&out).unwrap();
    let err = prepare(
        std::slice::from_ref(&corpus),
        tokenizer(),
        &tok_path,
        &out,
        &config(),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }));
    let overwrite = PrepareConfig {
        overwrite: true,
        ..config()
    };
    prepare(
        std::slice::from_ref(&corpus),
        tokenizer(),
        &tok_path,
        &out,
        &overwrite,
    )
    .unwrap();
    assert!(out.join("index.json").exists());
    // ... and a folder that is not a data folder is never replaced, even with overwrite.
    let home = dir.path().join("home");
    write(&home.join("precious.txt"), b"keep me");
    let err = prepare(
        std::slice::from_ref(&corpus),
        tokenizer(),
        &tok_path,
        &home,
        &overwrite,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }), "{err}");
    assert!(home.join("precious.txt").exists());
}

#[test]
fn an_index_that_does_not_match_its_files_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 20);
    let tok_path = tokenizer_file(dir.path());
    let out = dir.path().join("data");
    prepare(&[corpus], tokenizer(), &tok_path, &out, &config()).unwrap();
    let shard = out.join("train-00000.bin");
    let bytes = std::fs::read(&shard).unwrap();

    // A truncated shard.
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = TokenShards::open(&out, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::IndexMismatch { .. }), "{err}");
    assert!(err.to_string().contains("train-00000.bin"), "{err}");
    std::fs::write(&shard, &bytes).unwrap();

    // A missing shard.
    std::fs::rename(&shard, out.join("moved.bin")).unwrap();
    let err = TokenShards::open(&out, Split::Val).unwrap_err();
    assert!(matches!(err, DataError::IndexMismatch { .. }), "{err}");
    std::fs::rename(out.join("moved.bin"), &shard).unwrap();

    // Totals that do not add up.
    let index_path = out.join("index.json");
    let good = std::fs::read_to_string(&index_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["train"]["tokens"] = serde_json::json!(1);
    std::fs::write(&index_path, json.to_string()).unwrap();
    assert!(matches!(
        TokenShards::open(&out, Split::Train),
        Err(DataError::IndexMismatch { .. })
    ));

    // An index that is not JSON names its line.
    std::fs::write(&index_path, "{\n  \"format\": oops\n}").unwrap();
    let err = TokenShards::open(&out, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::IndexInvalid { .. }));
    assert!(err.to_string().contains("line 2"), "{err}");

    // A vocabulary that does not fit the shard width.
    json["train"]["tokens"] =
        serde_json::from_str::<serde_json::Value>(&good).unwrap()["train"]["tokens"].clone();
    json["tokenizer"]["vocab_size"] = serde_json::json!(70000);
    std::fs::write(&index_path, json.to_string()).unwrap();
    assert!(matches!(
        TokenShards::open(&out, Split::Train),
        Err(DataError::VocabTooLarge { .. })
    ));

    std::fs::write(&index_path, good).unwrap();
    TokenShards::open(&out, Split::Train).unwrap();
}

#[test]
fn stats_read_documents_tokens_and_top_tokens_from_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path(), 40);
    let tok_path = tokenizer_file(dir.path());
    let out = dir.path().join("data");
    let report = prepare(&[corpus], tokenizer(), &tok_path, &out, &config()).unwrap();
    let stats = samba_data::stats::compute(&out, 5, Some(tokenizer())).unwrap();
    assert_eq!(stats.splits[0].documents, report.index.train.documents);
    assert_eq!(stats.splits[0].eos_found, report.index.train.documents);
    assert_eq!(stats.splits[1].eos_found, report.index.val.documents);
    assert!(stats.splits[0].bytes_per_token > 1.5);
    assert_eq!(stats.top_tokens.len(), 5);
    assert!(stats
        .top_tokens
        .windows(2)
        .all(|w| w[0].count >= w[1].count));
    assert!(stats.top_tokens[0].text.is_some());
    // The unigram entropy recomputed from the shards' tokens.
    let mut counts = std::collections::HashMap::new();
    let mut total = 0u64;
    for split in [Split::Train, Split::Val] {
        let shards = TokenShards::open(&out, split).unwrap();
        for s in 0..shards.shard_lens().len() {
            for t in shards.shard_tokens(s).unwrap() {
                *counts.entry(t).or_insert(0u64) += 1;
                total += 1;
            }
        }
    }
    let entropy: f64 = counts
        .values()
        .map(|&c| -(c as f64 / total as f64) * (c as f64 / total as f64).ln())
        .sum();
    assert!((stats.unigram_entropy_nats - entropy).abs() < 1e-9);
    assert!((stats.unigram_perplexity - entropy.exp()).abs() < 1e-6 * entropy.exp());
    assert!(entropy > 1.0 && entropy < (stats.distinct_tokens as f64).ln() + 1e-9);
    let shown = stats.to_string();
    assert!(
        shown.contains("train") && shown.contains("bytes/tok"),
        "{shown}"
    );
}
