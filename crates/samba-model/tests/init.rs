//! The reference initialization (shared/SPEC.md section 3): reproducible per seed, and every
//! tensor drawn from the right distribution.

use samba_model::config::{Config, Layout};
use samba_model::init::{init_params, inverse_softplus, DEFAULT_SEED};
use samba_model::layout::{Init, ParamLayout};
use samba_model::preset::preset_with_layout;

/// The tiny preset with enough vocabulary and width for statistics to settle.
fn config(layout: Layout) -> Config {
    let mut c = preset_with_layout("tiny", layout).unwrap();
    c.vocab = 4096;
    c
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Every value of `name` in `params`.
fn values<'a>(layout: &ParamLayout, params: &'a [f32], name: &str) -> &'a [f32] {
    let id = layout
        .find(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    layout.slice(params, id)
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn same_seed_gives_identical_buffers() {
    for layout_kind in Layout::ALL {
        let layout = ParamLayout::new(&config(layout_kind));
        let a = init_params(&layout, DEFAULT_SEED);
        let b = init_params(&layout, DEFAULT_SEED);
        assert_eq!(a.len(), layout.numel);
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{layout_kind}: two runs with one seed differ");
    }
}

#[test]
fn different_seeds_give_different_random_tensors() {
    let layout = ParamLayout::new(&config(Layout::Samba));
    let a = init_params(&layout, 1);
    let b = init_params(&layout, 2);
    for t in &layout.tensors {
        let (x, y) = (&a[t.range()], &b[t.range()]);
        let equal = x.iter().zip(y).filter(|(p, q)| p == q).count();
        match t.init {
            // Deterministic tensors do not depend on the seed.
            Init::Ones | Init::ALog => assert_eq!(x, y, "{}", t.name),
            // Random ones share (almost) no value.
            _ => assert!(equal * 100 < t.numel(), "{}: {equal} equal", t.name),
        }
    }
}

#[test]
fn tensors_of_one_kind_are_not_copies_of_each_other() {
    // Each tensor has its own stream: two same-shaped tensors must not repeat each other.
    let layout = ParamLayout::new(&config(Layout::Samba));
    let params = init_params(&layout, DEFAULT_SEED);
    let w1 = values(&layout, &params, "transformer.h.0.mlp.swiglu.w1.weight");
    let w2 = values(&layout, &params, "transformer.h.0.mlp.swiglu.w2.weight");
    let w1_next = values(&layout, &params, "transformer.h.1.mlp.swiglu.w1.weight");
    assert_ne!(w1, w2);
    assert_ne!(w1, w1_next);
}

#[test]
fn embedding_is_normal_with_std_0_02() {
    for layout_kind in [Layout::Samba, Layout::Llama] {
        let layout = ParamLayout::new(&config(layout_kind));
        let params = init_params(&layout, DEFAULT_SEED);
        let wte = layout.slice(&params, layout.wte);
        let n = wte.len() as f64;
        assert_eq!(wte.len(), 4096 * 32);
        let mean = wte.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (wte.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((std - 0.02).abs() < 0.05 * 0.02, "std {std}");
        // Standard error of the mean is 0.02 / sqrt(n) ~ 5.5e-5.
        assert!(mean.abs() < 4.0 * 0.02 / n.sqrt(), "mean {mean}");
        // Normal, not uniform: about 4.6% of the values lie beyond 2 std.
        let tails = wte.iter().filter(|v| v.abs() > 0.04).count() as f64 / n;
        assert!((0.035..0.057).contains(&tails), "tails {tails}");
    }
}

/// Checks every `Init::Uniform` tensor of `layout` against U(+-scale / sqrt(fan_in)), with the
/// bound and scale given by the test (not read back from the layout) for the tensor kinds that
/// carry one. Returns how many tensors had a residual scale.
fn check_uniform(layout_kind: Layout, residual: f32) -> usize {
    let config = config(layout_kind);
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, DEFAULT_SEED);
    let (d, e, hidden) = (config.d_model, config.d_inner(), config.mlp_hidden);
    let mut scaled = 0;
    for t in &layout.tensors {
        let Init::Uniform { .. } = t.init else {
            continue;
        };
        let name = t.name.as_str();
        // Expected fan-in and scale from the name, as PyTorch and the reference define them.
        let (fan_in, scale) = if name.ends_with("out_proj.weight") {
            (e, residual)
        } else if name.ends_with("attn.proj.weight") {
            (config.heads * config.head_dim, residual)
        } else if name.ends_with("swiglu.w3.weight") {
            (t.shape[1], residual)
        } else if name.ends_with("conv1d.weight") || name.ends_with("conv1d.bias") {
            // Conv1d fan_in = in_channels / groups * kernel = 1 * d_conv.
            (config.d_conv, 1.0)
        } else if name.ends_with("x_proj.weight") {
            (e, 1.0)
        } else {
            // in_proj, attn.attn, swiglu.w1/w2, lm_head: inputs of width d.
            (d, 1.0)
        };
        if scale != 1.0 {
            scaled += 1;
        }
        if name.ends_with("swiglu.w3.weight") {
            assert!(t.shape[1] == hidden || t.shape[1] == 2 * d, "{name}");
        }
        let bound = scale / (fan_in as f32).sqrt();
        let v = &params[t.range()];
        let m = max_abs(v);
        assert!(m <= bound, "{name}: |v| reaches {m} > bound {bound}");
        // Filled: the largest draw of a few dozen or more is close to the bound; the next
        // smaller scale (sqrt(2n) vs sqrt(3n), sqrt(n) vs sqrt(2n)) is below 0.82 of it.
        assert!(m > 0.9 * bound, "{name}: max |v| {m} of bound {bound}");
        // Spread across the interval: mean ~ 0, variance ~ bound^2 / 3.
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n;
        let b = bound as f64;
        assert!(
            mean.abs() < 5.0 * b / (3.0 * n).sqrt(),
            "{name}: mean {mean}"
        );
        assert!(
            (var / (b * b / 3.0) - 1.0).abs() < 6.0 / n.sqrt(),
            "{name}: variance {var} vs {}",
            b * b / 3.0
        );
    }
    scaled
}

#[test]
fn linear_weights_are_uniform_within_1_over_sqrt_fan_in() {
    let n = 4.0f32;
    // Samba: 2 Mamba out_proj + 2 attention proj + 4 MLP w3.
    assert_eq!(check_uniform(Layout::Samba, 1.0 / (2.0 * n).sqrt()), 8);
    assert_eq!(check_uniform(Layout::Llama, 1.0 / (2.0 * n).sqrt()), 8);
    assert_eq!(check_uniform(Layout::LlamaSwa, 1.0 / (2.0 * n).sqrt()), 8);
    assert_eq!(check_uniform(Layout::MambaMlp, 1.0 / (2.0 * n).sqrt()), 8);
    // MLP2-SWA-MLP: 2 w3 of the 2d-wide MLPs + 2 attention proj + 4 MLP w3.
    assert_eq!(check_uniform(Layout::Mlp2SwaMlp, 1.0 / (2.0 * n).sqrt()), 8);
}

#[test]
fn mamba_swa_mlp_divides_residual_projections_by_sqrt_3n() {
    let n = 4.0f32;
    // Per block: Mamba out_proj, attention proj, MLP w3.
    assert_eq!(
        check_uniform(Layout::MambaSwaMlp, 1.0 / (3.0 * n).sqrt()),
        12
    );
}

#[test]
fn pure_mamba_divides_out_proj_by_sqrt_n() {
    let n = 4.0f32;
    assert_eq!(check_uniform(Layout::Mamba, 1.0 / n.sqrt()), 4);
}

#[test]
fn mamba_constants_a_log_d_and_norms() {
    for layout_kind in [Layout::Samba, Layout::MambaSwaMlp, Layout::Mamba] {
        let config = config(layout_kind);
        let layout = ParamLayout::new(&config);
        let params = init_params(&layout, DEFAULT_SEED);
        let mut a_logs = 0;
        for t in &layout.tensors {
            let v = &params[t.range()];
            if t.name.ends_with("A_log") {
                a_logs += 1;
                assert_eq!(t.shape, vec![config.d_inner(), config.d_state]);
                for (c, row) in v.chunks(config.d_state).enumerate() {
                    for (n, &a) in row.iter().enumerate() {
                        let want = ((n + 1) as f64).ln();
                        assert!(
                            (a as f64 - want).abs() < 1e-6,
                            "{}[{c}, {n}] = {a}, want {want}",
                            t.name
                        );
                    }
                }
            } else if t.name.ends_with(".D") || t.name.ends_with("norm.weight") {
                assert!(v.iter().all(|&x| x == 1.0), "{}", t.name);
            } else if t.name.contains("norm") {
                assert!(t.name.ends_with(".weight") && t.shape == vec![config.d_model]);
                assert!(v.iter().all(|&x| x == 1.0), "{}", t.name);
            }
        }
        assert!(a_logs > 0);
        assert!(layout.slice(&params, layout.ln_f).iter().all(|&x| x == 1.0));
    }
}

#[test]
fn dt_proj_bias_is_inverse_softplus_of_log_uniform_dt() {
    let mut config = config(Layout::Mamba);
    config.d_model = 256; // 512 channels per layer, 4 layers
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, DEFAULT_SEED);
    let mut log_dts = Vec::new();
    for t in layout
        .tensors
        .iter()
        .filter(|t| t.name.ends_with("dt_proj.bias"))
    {
        for &b in &params[t.range()] {
            let dt = softplus(b as f64);
            // f32 storage of the bias moves dt by a relative 1e-7 or so.
            assert!(
                (1e-3 * (1.0 - 1e-5)..=1e-1 * (1.0 + 1e-5)).contains(&dt),
                "{}: softplus({b}) = {dt}",
                t.name
            );
            log_dts.push(dt.ln());
        }
    }
    assert_eq!(log_dts.len(), 4 * 512);
    // Log-uniform on [ln 1e-3, ln 1e-1]: mean at ln 1e-2, quartiles at 1/4 and 3/4 of the range.
    let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
    let n = log_dts.len() as f64;
    let mean = log_dts.iter().sum::<f64>() / n;
    let sd = (hi - lo) / 12f64.sqrt();
    assert!(
        (mean - 1e-2f64.ln()).abs() < 4.0 * sd / n.sqrt(),
        "mean {mean}"
    );
    let below_mid = log_dts.iter().filter(|&&x| x < 1e-2f64.ln()).count() as f64 / n;
    assert!((below_mid - 0.5).abs() < 0.05, "{below_mid}");
    let lowest_quarter = log_dts
        .iter()
        .filter(|&&x| x < lo + (hi - lo) / 4.0)
        .count() as f64
        / n;
    assert!((lowest_quarter - 0.25).abs() < 0.05, "{lowest_quarter}");
}

#[test]
fn inverse_softplus_inverts_softplus() {
    for y in [1e-4, 1e-3, 1e-2, 0.1, 1.0, 5.0] {
        let x = inverse_softplus(y);
        assert!((softplus(x) - y).abs() < 1e-12 * y.max(1.0), "{y}: {x}");
    }
    // softplus^-1(0.01) = ln(e^0.01 - 1).
    assert!((inverse_softplus(0.01) - (0.01f64.exp() - 1.0).ln()).abs() < 1e-12);
}

#[test]
fn dt_proj_weight_is_uniform_within_dt_rank_to_the_minus_half() {
    let mut config = config(Layout::Samba);
    config.d_model = 256;
    config.dt_rank = 16;
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, DEFAULT_SEED);
    let bound = (16f32).powf(-0.5);
    let mut count = 0;
    for t in layout
        .tensors
        .iter()
        .filter(|t| t.name.ends_with("dt_proj.weight"))
    {
        assert_eq!(t.shape, vec![512, 16]);
        let v = &params[t.range()];
        let m = max_abs(v);
        assert!(m <= bound && m > 0.99 * bound, "{}: max |v| {m}", t.name);
        let n = v.len() as f64;
        let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n;
        let want = (bound * bound / 3.0) as f64;
        assert!((var / want - 1.0).abs() < 0.05, "{}: var {var}", t.name);
        count += 1;
    }
    assert_eq!(count, 2);
}

#[test]
fn every_initial_value_is_finite() {
    for layout_kind in Layout::ALL {
        let layout = ParamLayout::new(&config(layout_kind));
        let params = init_params(&layout, 7);
        assert!(params.iter().all(|v| v.is_finite()), "{layout_kind}");
    }
}
