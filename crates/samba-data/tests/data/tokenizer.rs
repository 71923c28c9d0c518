use samba_data::{DataError, TextTokenizer, TrainConfig};

use crate::common::*;

/// A small fixed generator (SplitMix64) so the "arbitrary" strings are the same every run.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A char from a mix of ranges: ASCII with controls, Latin-1, combining marks, CJK,
    /// emoji, private use, and anything else valid.
    fn char(&mut self) -> char {
        let r = self.next();
        let c = match r % 8 {
            0 | 1 => (r >> 8) % 0x80,
            2 => 0x80 + (r >> 8) % 0x180,
            3 => 0x300 + (r >> 8) % 0x70,
            4 => 0x4e00 + (r >> 8) % 0x5000,
            5 => 0x1f300 + (r >> 8) % 0x300,
            6 => [0x20, 0x0a, 0x0d, 0x09, 0xa0, 0x3000, 0xfeff, 0xfffd][((r >> 8) % 8) as usize],
            _ => (r >> 8) % 0x110000,
        } as u32;
        char::from_u32(c).unwrap_or('\u{fffd}')
    }
}

#[test]
fn encode_decode_round_trips_arbitrary_utf8() {
    let tok = tokenizer();
    let mut gen = Gen(7);
    let mut cases: Vec<String> = vec![
        String::new(),
        " ".into(),
        "  leading and trailing spaces  ".into(),
        "\r\n\r\n\t\u{0}\u{1}".into(),
        "naïve café — “quotes” 😀👍🏽 é (e + U+0301)".into(),
        "日本語のテキストと한국어".into(),
        "<|eos|> <|bos|><|pad|> are text here".into(),
        PROSE.into(),
    ];
    for _ in 0..300 {
        let len = (gen.next() % 60) as usize;
        cases.push((0..len).map(|_| gen.char()).collect());
    }
    for text in &cases {
        let ids = tok.encode(text).unwrap();
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        assert_eq!(&tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
}

#[test]
fn special_token_strings_inside_text_are_not_special() {
    let tok = tokenizer();
    let ids = tok.encode("end <|eos|> here").unwrap();
    assert!(!ids.contains(&tok.eos_id()));
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_id(), 1);
    assert_eq!(tok.pad_id(), Some(2));
    assert_eq!(tok.decode(&[tok.eos_id()]).unwrap(), "<|eos|>");
}

#[test]
fn trained_vocabulary_has_the_requested_size_and_compresses() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 400);
    let text = &documents(1)[0];
    let ids = tok.encode(text).unwrap();
    assert!(
        ids.len() * 2 < text.len(),
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
}

#[test]
fn save_and_load_keep_the_tokenizer_and_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = tokenizer_file(dir.path());
    let loaded = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(loaded.sha256(), tokenizer().sha256());
    assert_eq!(loaded.sha256().len(), 64);
    assert_eq!(
        loaded.encode(PROSE).unwrap(),
        tokenizer().encode(PROSE).unwrap()
    );
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tokenizer.json"]);
}

#[test]
fn training_is_deterministic() {
    let docs = documents(100);
    let config = TrainConfig {
        vocab_size: 300,
        ..TrainConfig::default()
    };
    let a = TextTokenizer::train(docs.iter(), &config).unwrap();
    let b = TextTokenizer::train(docs.iter(), &config).unwrap();
    assert_eq!(a.sha256(), b.sha256());
}

#[test]
fn a_vocab_below_the_byte_alphabet_is_refused() {
    let config = TrainConfig {
        vocab_size: 100,
        ..TrainConfig::default()
    };
    let err = TextTokenizer::train(documents(3).iter(), &config).unwrap_err();
    assert!(matches!(err, DataError::Config(_)), "{err}");
}

#[test]
fn foreign_tokenizer_files_load_by_their_eos_name_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let json = tokenizer().inner().to_string(false).unwrap();
    // GPT-2 calls it <|endoftext|>.
    let gpt2 = json.replace("<|eos|>", "<|endoftext|>");
    let path = write(&dir.path().join("gpt2ish.json"), gpt2.as_bytes());
    assert_eq!(TextTokenizer::from_file(&path).unwrap().eos_id(), 1);
    let none = json.replace("<|eos|>", "<|nothing|>");
    let path = write(&dir.path().join("noeos.json"), none.as_bytes());
    assert!(matches!(
        TextTokenizer::from_file(&path),
        Err(DataError::NoEos { .. })
    ));
    let path = write(
        &dir.path().join("garbage.json"),
        b"{\"not\": \"a tokenizer\"}",
    );
    let err = TextTokenizer::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("garbage.json"), "{err}");
}
