//! Finite-difference checks of the whole model's backward pass, for every layout, on sequences
//! longer than twice the window so the window edge is crossed.

use samba_cpu::testing::{check_gradient, random_vec};
use samba_cpu::{BatchShape, CpuModel};
use samba_model::init::init_params;
use samba_model::preset::preset_with_layout;
use samba_model::{Config, Layout, ParamLayout};

/// The tiny preset, with weights perturbed away from the init so every path carries signal
/// (the init zeroes nothing, but norms at exactly 1 and D at exactly 1 would hide some bugs).
fn model(layout: Layout, tweak: impl FnOnce(&mut Config)) -> CpuModel {
    let mut config = preset_with_layout("tiny", layout).expect("tiny preset");
    config.vocab = 29;
    tweak(&mut config);
    let layout = ParamLayout::new(&config);
    let mut params = init_params(&layout, 11);
    let noise = random_vec(params.len(), 12, 0.3);
    params.iter_mut().zip(noise).for_each(|(p, n)| *p += n);
    CpuModel::new(config, params)
}

fn check_model(name: &str, model: &CpuModel) {
    let shape = BatchShape {
        batch: 2,
        seq: 2 * model.config.window + 3,
    };
    let tokens: Vec<u32> = (0..shape.rows() + 1)
        .map(|i| ((i * 7 + 3) % model.config.vocab) as u32)
        .collect();
    let (inputs, targets) = (&tokens[..shape.rows()], &tokens[1..]);
    let (_, grads) = model.loss_and_grad(inputs, targets, shape).expect("loss");
    let mut probe = CpuModel::new(model.config.clone(), model.params.clone());
    for spec in &model.layout.tensors {
        let range = spec.range();
        let x = model.params[range.clone()].to_vec();
        let loss = |values: &[f32]| {
            probe.params[range.clone()].copy_from_slice(values);
            let mut acts = probe.activations(shape);
            probe.forward(&mut acts, inputs).expect("forward");
            probe.loss(&mut acts, targets).expect("loss") as f64
        };
        check_gradient(
            &format!("{name}: {}", spec.name),
            &x,
            &grads[range.clone()],
            loss,
            6,
            1e-2,
            3e-2,
        );
        probe.params[range.clone()].copy_from_slice(&x);
    }
}

#[test]
fn samba_gradient_matches_finite_differences() {
    check_model("samba", &model(Layout::Samba, |_| {}));
}

#[test]
fn samba_nope_mqa_gradient_matches_finite_differences() {
    check_model(
        "samba-nope-mqa",
        &model(Layout::Samba, |c| {
            c.rope_base = None;
            c.kv_heads = 1;
        }),
    );
}

#[test]
fn mamba_swa_mlp_gradient_matches_finite_differences() {
    check_model(
        "mamba-swa-mlp",
        &model(Layout::MambaSwaMlp, |c| c.n_layer = 2),
    );
}

#[test]
fn mamba_mlp_gradient_matches_finite_differences() {
    check_model("mamba-mlp", &model(Layout::MambaMlp, |c| c.n_layer = 2));
}

#[test]
fn mamba_gradient_matches_finite_differences() {
    check_model("mamba", &model(Layout::Mamba, |c| c.n_layer = 2));
}

#[test]
fn llama_gradient_matches_finite_differences() {
    check_model("llama", &model(Layout::Llama, |c| c.n_layer = 2));
}

#[test]
fn llama_swa_gradient_matches_finite_differences() {
    check_model("llama-swa", &model(Layout::LlamaSwa, |c| c.n_layer = 2));
}

#[test]
fn mlp2_swa_mlp_gradient_matches_finite_differences() {
    check_model("mlp2-swa-mlp", &model(Layout::Mlp2SwaMlp, |_| {}));
}
