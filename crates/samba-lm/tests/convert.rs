//! `samba-lm convert`: a model folder in another storage type scores (almost) as the original,
//! round trips exactly once in bf16, and refuses bad requests.

use std::path::Path;
use std::process::{Command, Output};

fn samba_lm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samba-lm"))
        .args(args)
        .output()
        .expect("run samba-lm")
}

fn ok(args: &[&str]) -> String {
    let out = samba_lm(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The per-token log-probabilities `score --json` reports for a fixed token list.
fn logprobs(model: &Path) -> Vec<f64> {
    let json = ok(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        "5,17,3,60,42,7,7,25,11,63",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("score --json");
    v["token_logprobs"]
        .as_array()
        .expect("token_logprobs")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn convert_to_bf16_halves_the_file_and_keeps_the_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (f32_dir, bf16_dir, back_dir) = (
        tmp.path().join("f32"),
        tmp.path().join("bf16"),
        tmp.path().join("back"),
    );
    let p = |d: &Path| d.to_str().unwrap().to_string();
    ok(&[
        "init",
        "--preset",
        "tiny",
        "--seed",
        "9",
        "--out",
        &p(&f32_dir),
    ]);
    ok(&[
        "convert",
        "--model",
        &p(&f32_dir),
        "--dtype",
        "bf16",
        "--out",
        &p(&bf16_dir),
    ]);
    ok(&[
        "convert",
        "--model",
        &p(&bf16_dir),
        "--dtype",
        "f32",
        "--out",
        &p(&back_dir),
    ]);
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len() as f64
    };
    let ratio = size(&bf16_dir) / size(&f32_dir);
    assert!(
        (0.45..0.55).contains(&ratio),
        "bf16 file is {ratio:.3} of the f32 one"
    );
    let (a, b, c) = (logprobs(&f32_dir), logprobs(&bf16_dir), logprobs(&back_dir));
    assert_eq!(a.len(), 9);
    // Rounding the weights to bf16 moves the scores a little, not much.
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst > 0.0,
        "bf16 weights scored exactly as f32 ones: not converted?"
    );
    assert!(worst < 0.05, "bf16 weights moved a log-prob by {worst}");
    // bf16 values are exact in f32: converting back changes nothing.
    assert_eq!(b, c);
}

#[test]
fn convert_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let d = dir.to_str().unwrap();
    ok(&["init", "--preset", "tiny", "--out", d]);
    for (args, needle) in [
        (
            vec!["convert", "--model", d, "--dtype", "f8", "--out", "x"],
            "--dtype 'f8'",
        ),
        (
            vec!["convert", "--model", d, "--dtype", "bf16", "--out", d],
            "input folder",
        ),
        (
            vec![
                "convert",
                "--model",
                "/nonexistent/m",
                "--dtype",
                "bf16",
                "--out",
                "y",
            ],
            "/nonexistent/m",
        ),
    ] {
        let out = samba_lm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in: {err}");
    }
}
