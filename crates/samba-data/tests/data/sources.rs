use indicatif::ProgressBar;
use samba_data::sources::{
    discover, read_file, Compression, Document, Format, ReadOptions, SkipReason,
};
use samba_data::{DataError, Skipped};

use crate::common::*;

fn read_all(paths: &[std::path::PathBuf], options: ReadOptions) -> (Vec<Document>, Vec<Skipped>) {
    let found = discover(paths).unwrap();
    let mut docs = Vec::new();
    let mut skipped = found.skipped;
    for (i, f) in found.files.iter().enumerate() {
        read_file(
            i,
            f,
            &options,
            &ProgressBar::hidden(),
            &mut |d| {
                docs.push(d);
                true
            },
            &mut skipped,
        );
    }
    (docs, skipped)
}

#[test]
fn discovers_supported_files_in_sorted_order_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("c");
    write(&root.join("b.md"), b"bee");
    write(&root.join("a.txt"), b"ay");
    write(&root.join("sub/c.rst.txt"), b"see");
    write(
        &root.join("sub/d.jsonl.zst"),
        &zstd(b"{\"text\":\"dee\"}\n"),
    );
    write(&root.join("sub/e.txt.gz"), &gzip(b"ee"));
    write(&root.join("picture.png"), b"\x89PNG");
    write(&root.join(".hidden.txt"), b"not read");
    let found = discover(std::slice::from_ref(&root)).unwrap();
    let names: Vec<String> = found
        .files
        .iter()
        .map(|f| f.path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "b.md",
            "sub/c.rst.txt",
            "sub/d.jsonl.zst",
            "sub/e.txt.gz"
        ]
    );
    assert_eq!(found.files[3].format, Format::Jsonl);
    assert_eq!(found.files[3].compression, Compression::Zstd);
    assert_eq!(found.files[4].compression, Compression::Gzip);
    assert_eq!(found.skipped.len(), 1);
    assert_eq!(found.skipped[0].reason, SkipReason::Unsupported);
    let (docs, skipped) = read_all(&[root], ReadOptions::default());
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["ay", "bee", "see", "dee", "ee"]);
    assert_eq!(skipped.len(), 1);
}

#[test]
fn gzip_zstd_and_plain_give_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(20);
    let body = jsonl(&docs);
    let plain = write(&dir.path().join("x.jsonl"), body.as_bytes());
    let gz = write(&dir.path().join("x.jsonl.gz"), &gzip(body.as_bytes()));
    let zs = write(&dir.path().join("x.jsonl.zst"), &zstd(body.as_bytes()));
    for path in [plain, gz, zs] {
        let (read, skipped) = read_all(std::slice::from_ref(&path), ReadOptions::default());
        assert!(skipped.is_empty(), "{path:?}: {skipped:?}");
        let texts: Vec<String> = read.iter().map(|d| d.text.clone()).collect();
        assert_eq!(texts, docs);
        assert_eq!(read[4].line, 5);
    }
}

#[test]
fn an_explicit_file_with_an_unknown_extension_is_read_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("README"), b"hello");
    let (docs, skipped) = read_all(&[path], ReadOptions::default());
    assert_eq!(docs.len(), 1);
    assert!(skipped.is_empty());
}

#[test]
fn non_utf8_bytes_are_skipped_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(
        &dir.path().join("bad.txt"),
        b"line one\nline two\nbad \xff byte\n",
    );
    let lines = write(
        &dir.path().join("bad.jsonl"),
        b"{\"text\":\"good\"}\n{\"text\":\"b\xc3\x28d\"}\n{\"text\":\"fine\"}\n",
    );
    let (docs, skipped) = read_all(&[text.clone(), lines.clone()], ReadOptions::default());
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["good", "fine"]);
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0].path, text);
    assert_eq!(skipped[0].line, Some(3));
    assert_eq!(skipped[0].reason, SkipReason::NotUtf8 { byte: 22 });
    assert_eq!(skipped[1].path, lines);
    assert_eq!(skipped[1].line, Some(2));
    assert_eq!(skipped[1].reason.kind(), "not-utf8");
    assert!(
        skipped[0]
            .to_string()
            .contains("bad.txt:3: not valid UTF-8"),
        "{}",
        skipped[0]
    );
}

#[test]
fn empty_documents_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(&dir.path().join("empty.txt"), b"");
    let blank = write(&dir.path().join("blank.md"), b"  \n\t\n");
    let lines = write(
        &dir.path().join("e.jsonl"),
        b"{\"text\":\"\"}\n\n{\"text\":\"ok\"}\n",
    );
    let (docs, skipped) = read_all(&[empty, blank, lines], ReadOptions::default());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].line, 3, "the blank line 2 still counts as a line");
    let kinds: Vec<(&str, Option<usize>)> =
        skipped.iter().map(|s| (s.reason.kind(), s.line)).collect();
    assert_eq!(
        kinds,
        [("empty", Some(1)), ("empty", Some(1)), ("empty", Some(1))]
    );
}

#[test]
fn malformed_json_and_missing_text_are_reported_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir.path().join("m.jsonl"),
        b"{\"text\":\"one\"}\n{\"text\": \"unterminated}\n{\"body\":\"no text\"}\n{\"text\":42}\n[\"array\"]\n{\"text\":\"two\"}\r\n",
    );
    let (docs, skipped) = read_all(&[path], ReadOptions::default());
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    let kinds: Vec<(&str, Option<usize>)> =
        skipped.iter().map(|s| (s.reason.kind(), s.line)).collect();
    assert_eq!(
        kinds,
        [
            ("malformed-json", Some(2)),
            ("missing-text", Some(3)),
            ("text-not-string", Some(4)),
            ("malformed-json", Some(5)),
        ]
    );
}

#[test]
fn a_huge_single_line_is_skipped_without_being_held() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(5000);
    let lines =
        format!("{{\"text\":\"short\"}}\n{{\"text\":\"{huge}\"}}\n{{\"text\":\"after\"}}\n");
    let jl = write(&dir.path().join("h.jsonl.gz"), &gzip(lines.as_bytes()));
    let txt = write(
        &dir.path().join("h.txt"),
        format!("fine\n{huge}\n").as_bytes(),
    );
    let options = ReadOptions {
        max_line_bytes: 1000,
    };
    let (docs, skipped) = read_all(&[jl, txt], options);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["short", "after"]);
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0].line, Some(2));
    assert_eq!(
        skipped[0].reason,
        SkipReason::LineTooLong {
            bytes: 5011,
            limit: 1000
        }
    );
    assert_eq!(skipped[1].line, Some(2));
    assert_eq!(skipped[1].reason.kind(), "line-too-long");
}

#[test]
fn a_truncated_compressed_file_keeps_what_came_before_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let body = jsonl(&documents(2000));
    let mut gz = gzip(body.as_bytes());
    gz.truncate(gz.len() / 2);
    let path = write(&dir.path().join("t.jsonl.gz"), &gz);
    let (docs, skipped) = read_all(&[path], ReadOptions::default());
    assert!(!docs.is_empty() && docs.len() < 2000);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].reason.kind(), "unreadable");
    assert!(skipped[0].line.is_some());
}

#[test]
fn a_missing_input_is_an_error_that_names_it() {
    let err = discover(&["/no/such/place".into()]).unwrap_err();
    assert!(matches!(err, DataError::MissingInput { .. }));
    assert!(err.to_string().contains("/no/such/place"));
}
