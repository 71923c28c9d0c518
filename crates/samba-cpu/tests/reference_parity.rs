//! The CPU model against fixtures from the independent PyTorch reference
//! (tools/reference/make_fixtures.py, computed in f64): logits, mean loss and the gradient of
//! every parameter, for every layout.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use samba_cpu::{BatchShape, CpuModel};
use samba_model::checkpoint::load_model;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn f32_tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let view = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture lacks {name}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// max |a - b| / max |b|: the error relative to the tensor's scale.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    assert!(scale > 0.0, "reference tensor is all zeros");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    diff / scale
}

fn check_case(case: &str) {
    let dir = fixtures().join(case);
    let model = CpuModel::from_loaded(load_model(&dir).unwrap_or_else(|e| panic!("{case}: {e}")));
    let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
    let expected = SafeTensors::deserialize(&bytes).expect("parse expected.safetensors");

    let tokens_view = expected.tensor("tokens").expect("tokens");
    let [batch, seq_plus_one] = tokens_view.shape() else {
        panic!("tokens shape")
    };
    let (batch, seq) = (*batch, seq_plus_one - 1);
    let tokens: Vec<u32> = tokens_view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u32)
        .collect();
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for row in tokens.chunks(seq + 1) {
        inputs.extend_from_slice(&row[..seq]);
        targets.extend_from_slice(&row[1..]);
    }
    let shape = BatchShape { batch, seq };
    assert!(
        seq > 2 * model.config.window,
        "{case}: the fixture must cross the window"
    );

    let mut acts = model.activations(shape);
    model.forward(&mut acts, &inputs).expect("forward");
    let loss = model.loss(&mut acts, &targets).expect("loss");
    let mut grads = vec![0.0; model.layout.numel];
    model.backward(&acts, &targets, &mut grads);

    let logits_err = relative_error(&acts.logits, &f32_tensor(&expected, "logits"));
    assert!(
        logits_err < 2e-6,
        "{case}: logits relative error {logits_err:.2e}"
    );
    let expected_loss = f32_tensor(&expected, "loss")[0];
    assert!(
        (loss - expected_loss).abs() < 1e-5 * expected_loss.abs(),
        "{case}: loss {loss} vs {expected_loss}"
    );

    let mut worst = (0.0, String::new());
    for spec in &model.layout.tensors {
        let reference = f32_tensor(&expected, &format!("grad.{}", spec.name));
        let err = relative_error(&grads[spec.range()], &reference);
        if err > worst.0 {
            worst = (err, spec.name.clone());
        }
    }
    assert!(
        worst.0 < 2e-5,
        "{case}: gradient of {} off by {:.2e} relative",
        worst.1,
        worst.0
    );
    eprintln!(
        "{case}: logits {logits_err:.1e}, worst gradient {:.1e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn samba_gqa_matches_reference() {
    check_case("samba");
}

#[test]
fn samba_mha_matches_reference() {
    check_case("samba-mha");
}

#[test]
fn samba_nope_matches_reference() {
    check_case("samba-nope");
}

#[test]
fn mamba_swa_mlp_matches_reference() {
    check_case("mamba-swa-mlp");
}

#[test]
fn mamba_mlp_matches_reference() {
    check_case("mamba-mlp");
}

#[test]
fn mamba_matches_reference() {
    check_case("mamba");
}

#[test]
fn llama_matches_reference() {
    check_case("llama");
}

#[test]
fn llama_swa_mqa_matches_reference() {
    check_case("llama-swa");
}

#[test]
fn mlp2_swa_mlp_matches_reference() {
    check_case("mlp2-swa-mlp");
}
