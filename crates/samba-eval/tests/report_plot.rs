//! Pictures drawn from saved reports (`plot_report_file`): a ppl report written by
//! `write_report` reads back and draws; reports without a picture or with broken results are
//! refused naming the file.

use std::path::{Path, PathBuf};

use samba_eval::plot::plot_report_file;
use samba_eval::ppl::{AtLength, Bucket, DocumentResult, PplReport};
use samba_eval::report::{write_report, ReportMeta};

fn meta(eval: &str) -> ReportMeta {
    ReportMeta::new(
        eval,
        Path::new("model"),
        None,
        &[],
        serde_json::json!({}),
        "cpu",
    )
}

fn ppl_report() -> PplReport {
    let buckets = [(1, 2, 9.0), (2, 4, 7.0), (4, 8, 6.5), (8, 16, 6.2)]
        .iter()
        .map(|&(lo, hi, nll): &(usize, usize, f64)| Bucket {
            lo,
            hi,
            predictions: (hi - lo) as u64,
            mean_nll: nll,
            perplexity: nll.exp(),
        })
        .collect();
    PplReport {
        documents: vec![DocumentResult {
            path: PathBuf::from("doc.txt"),
            tokens: 16,
            scored: 16,
            mean_nll: 6.6,
            perplexity: 6.6f64.exp(),
        }],
        buckets,
        at_length: vec![AtLength {
            length: 8,
            documents: 1,
            mean_nll: Some(7.0),
            perplexity: Some(7.0f64.exp()),
            too_short: vec![],
        }],
    }
}

#[test]
fn a_saved_ppl_report_draws_its_curve() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("ppl.json");
    write_report(&report, &meta("ppl"), &ppl_report()).unwrap();
    let out = dir.path().join("ppl.svg");
    assert_eq!(plot_report_file(&report, &out).unwrap(), "ppl");
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(
        svg.contains("<svg") && svg.len() > 1000,
        "not a picture: {svg:.200}"
    );
}

#[test]
fn reports_without_a_picture_or_with_broken_results_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.svg");
    let choice = dir.path().join("choice.json");
    write_report(&choice, &meta("choice"), &serde_json::json!({"tasks": []})).unwrap();
    let e = plot_report_file(&choice, &out).unwrap_err().to_string();
    assert!(e.contains("choice.json") && e.contains("'choice'"), "{e}");

    let broken = dir.path().join("broken.json");
    write_report(
        &broken,
        &meta("passkey"),
        &serde_json::json!({"lengths": "many"}),
    )
    .unwrap();
    let e = plot_report_file(&broken, &out).unwrap_err().to_string();
    assert!(
        e.contains("broken.json") && e.contains("eval passkey"),
        "{e}"
    );

    let missing = dir.path().join("missing.json");
    let e = plot_report_file(&missing, &out).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
    assert!(!out.exists());
}
