//! Streamed perplexity agrees with a full forward over the whole document.

mod common;

use std::path::PathBuf;

use samba_eval::ppl::{bucket_edges, evaluate_ppl, Document, PplOptions};
use samba_eval::scoring::score_tokens;
use samba_eval::EvalError;

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn streamed_scores_match_a_full_forward() {
    let model = common::model(53);
    let doc = common::tokens(40, 1, 53);
    let direct = common::direct_logprobs(&model, &doc);
    for chunk in [1, 7, 64] {
        let streamed = score_tokens(&model, &doc, chunk, |_| {}).expect("score");
        assert_eq!(streamed.len(), direct.len());
        for (i, (s, d)) in streamed.iter().zip(&direct).enumerate() {
            close(*s, *d, &format!("chunk {chunk}, position {}", i + 1));
        }
    }
}

#[test]
fn report_pools_buckets_and_lengths_like_the_direct_computation() {
    let model = common::model(53);
    let docs = vec![
        Document {
            path: PathBuf::from("a.txt"),
            tokens: common::tokens(40, 1, 53),
        },
        Document {
            path: PathBuf::from("b.txt"),
            tokens: common::tokens(25, 2, 53),
        },
    ];
    let options = PplOptions {
        lengths: vec![30, 10, 20],
        chunk: 7,
        buckets_per_octave: 1,
        max_tokens: None,
    };
    let report = evaluate_ppl(&model, &docs, &options, |_| {}).expect("ppl");
    let direct: Vec<Vec<f64>> = docs
        .iter()
        .map(|d| common::direct_logprobs(&model, &d.tokens))
        .collect();

    // Per document.
    for (r, lp) in report.documents.iter().zip(&direct) {
        let mean = -lp.iter().sum::<f64>() / lp.len() as f64;
        close(r.mean_nll, mean, "document mean nll");
        close(r.perplexity, mean.exp(), "document perplexity");
    }
    // Buckets: [1,2), [2,4), [4,8), ...; position p is logprob index p - 1.
    assert_eq!(report.buckets[0].lo, 1);
    let mut predictions = 0;
    for b in &report.buckets {
        let values: Vec<f64> = direct
            .iter()
            .flat_map(|lp| (b.lo..b.hi).filter_map(|p| lp.get(p - 1).copied()))
            .collect();
        assert_eq!(
            b.predictions as usize,
            values.len(),
            "bucket {}..{}",
            b.lo,
            b.hi
        );
        close(
            b.mean_nll,
            -values.iter().sum::<f64>() / values.len() as f64,
            "bucket",
        );
        predictions += values.len();
    }
    assert_eq!(predictions, 39 + 24);
    // Lengths, sorted: 10 and 20 pool both documents, 30 only a.txt and reports b.txt.
    let lengths: Vec<usize> = report.at_length.iter().map(|a| a.length).collect();
    assert_eq!(lengths, [10, 20, 30]);
    for a in &report.at_length {
        let used: Vec<&Vec<f64>> = direct
            .iter()
            .filter(|lp| lp.len() + 1 >= a.length)
            .collect();
        assert_eq!(a.documents, used.len());
        let sum: f64 = used
            .iter()
            .map(|lp| -lp[..a.length - 1].iter().sum::<f64>())
            .sum();
        let mean = sum / (used.len() * (a.length - 1)) as f64;
        close(a.mean_nll.expect("pooled"), mean, "length");
    }
    let at30 = &report.at_length[2];
    assert_eq!(at30.too_short, vec![(PathBuf::from("b.txt"), 25)]);
    assert!(report.at_length[0].too_short.is_empty());
}

#[test]
fn a_length_no_document_reaches_is_reported_empty() {
    let model = common::model(53);
    let docs = vec![Document {
        path: PathBuf::from("short.txt"),
        tokens: common::tokens(12, 1, 53),
    }];
    let options = PplOptions {
        lengths: vec![100],
        ..PplOptions::default()
    };
    let report = evaluate_ppl(&model, &docs, &options, |_| {}).expect("ppl");
    assert_eq!(report.at_length[0].documents, 0);
    assert_eq!(report.at_length[0].perplexity, None);
    assert_eq!(report.at_length[0].too_short.len(), 1);
}

#[test]
fn a_one_token_document_is_an_error_naming_it() {
    let model = common::model(53);
    let docs = vec![Document {
        path: PathBuf::from("tiny.txt"),
        tokens: vec![3],
    }];
    let err = evaluate_ppl(&model, &docs, &PplOptions::default(), |_| {}).unwrap_err();
    assert!(matches!(err, EvalError::DocumentTooShort { .. }));
    assert!(err.to_string().contains("tiny.txt"), "{err}");
}

#[test]
fn bucket_edges_are_log_spaced_and_cover_every_position() {
    assert_eq!(bucket_edges(20, 1), [1, 2, 4, 8, 16, 32]);
    let e = bucket_edges(1000, 2);
    assert!(e.windows(2).all(|w| w[0] < w[1]));
    assert!(*e.last().unwrap() > 1000);
}
