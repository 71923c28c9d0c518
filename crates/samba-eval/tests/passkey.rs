//! The passkey generator: exact length, the key at the requested depth, the question last.

mod common;

use samba_eval::passkey::{
    depth_grid, digits_correct, is_correct, key_sentence, passkey_sample, passkey_training_texts,
    PasskeyTokens, INTRO, QUESTION,
};

#[test]
fn the_key_sits_at_the_requested_depth_and_the_length_is_exact() {
    let tok = common::tokenizer();
    let pieces = PasskeyTokens::new(&tok).expect("pieces");
    let intro = tok.encode(INTRO).expect("intro").len();
    let question = tok.encode(QUESTION).expect("question");
    let slack = pieces.max_sentence_tokens() as f64;
    for length in [200, 333, 1000] {
        for depth in depth_grid(11) {
            let key = 12345 + (length as u32) + (depth * 100.0) as u32;
            let s = passkey_sample(&pieces, &tok, length, depth, key).expect("sample");
            assert_eq!(s.tokens.len(), length, "length {length}, depth {depth}");
            let key_tokens = tok.encode(&key_sentence(&s.key)).expect("key");
            // The key sentence is where the sample says, verbatim.
            assert_eq!(s.key_position, intro + s.filler_before);
            assert_eq!(
                &s.tokens[s.key_position..s.key_position + key_tokens.len()],
                &key_tokens[..]
            );
            // ... at the requested depth of the filler, to within one filler sentence.
            let filler = length - intro - key_tokens.len() - question.len();
            assert_eq!(s.filler_before + s.filler_after, filler);
            let want = depth * filler as f64;
            assert!(
                (s.filler_before as f64 - want).abs() <= slack,
                "length {length}, depth {depth}: key after {} filler tokens, want {want} +- {slack}",
                s.filler_before
            );
            // The question ends the prompt; the answer is the key.
            assert!(s.tokens.ends_with(&question));
            assert_eq!(
                tok.decode(&s.answer).expect("decode"),
                format!(" {}", s.key)
            );
            let text = tok.decode(&s.tokens).expect("decode");
            assert!(text.starts_with(INTRO) && text.ends_with(QUESTION));
            assert_eq!(
                text.matches(&s.key).count(),
                2,
                "the key appears twice: {text}"
            );
        }
    }
}

#[test]
fn depth_zero_and_one_are_the_ends_of_the_filler() {
    let tok = common::tokenizer();
    let pieces = PasskeyTokens::new(&tok).expect("pieces");
    let first = passkey_sample(&pieces, &tok, 300, 0.0, 11111).expect("sample");
    assert_eq!(first.filler_before, 0);
    let last = passkey_sample(&pieces, &tok, 300, 1.0, 11111).expect("sample");
    assert!(last.filler_after as f64 <= pieces.max_sentence_tokens() as f64);
}

#[test]
fn too_short_a_length_or_a_bad_depth_is_refused() {
    let tok = common::tokenizer();
    let pieces = PasskeyTokens::new(&tok).expect("pieces");
    let err = passkey_sample(&pieces, &tok, 10, 0.5, 12345).unwrap_err();
    assert!(err.to_string().contains("too short"), "{err}");
    assert!(passkey_sample(&pieces, &tok, 300, 1.5, 12345).is_err());
}

#[test]
fn training_texts_hold_a_key_and_its_answer() {
    let tok = common::tokenizer();
    let texts = passkey_training_texts(&tok, 200, 4, 7).expect("texts");
    assert_eq!(texts.len(), 4);
    for text in &texts {
        let answer = text.rsplit(QUESTION).next().expect("question");
        let key = answer.trim();
        assert_eq!(key.len(), 5, "{answer}");
        assert!(text.contains(&format!("The pass key is {key}. Remember it.")));
        // Retokenizing the whole text may merge across piece boundaries: close to the length.
        let n = tok.encode(text).expect("encode").len();
        assert!(n.abs_diff(200) <= 10, "{n} tokens");
    }
}

#[test]
fn only_the_exact_key_counts() {
    assert!(is_correct(" 12345", "12345"));
    assert!(is_correct("12345. Remember", "12345"));
    assert!(!is_correct(" 123456", "12345"));
    assert!(!is_correct(" 1234", "12345"));
    assert!(!is_correct(" the key", "12345"));
}

#[test]
fn digits_count_in_their_places() {
    assert_eq!(digits_correct(" 12345", "12345"), 5);
    assert_eq!(digits_correct("12395<|eos|>", "12345"), 4);
    assert_eq!(digits_correct(" 54321", "12345"), 1); // the middle 3
    assert_eq!(digits_correct(" 2345", "12345"), 0); // shifted: nothing in place
    assert_eq!(digits_correct("", "12345"), 0);
    assert_eq!(digits_correct(" 123456789", "12345"), 5);
}
