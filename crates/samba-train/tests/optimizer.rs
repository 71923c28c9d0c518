//! AdamW, clipping and the learning-rate schedule against values worked out by hand.

use samba_train::adamw::{adamw_update, clip_scale, global_norm, AdamWConfig, AdamWStep};
use samba_train::Schedule;

fn close(a: f32, b: f64, what: &str) {
    let tol = 2e-6 * b.abs().max(1e-3);
    assert!(
        (a as f64 - b).abs() <= tol,
        "{what}: got {a}, expected {b} (tolerance {tol})"
    );
}

/// Three steps of AdamW (lr 0.1, wd 0.1, betas 0.9/0.95, eps 1e-8) on two parameters:
/// p0 = 1 with gradients 0.5, -0.25, 1.0, and p1 = 2 with gradient 0 (weight decay alone).
///
/// p0, step 1: p = 1 * (1 - 0.1 * 0.1) = 0.99; m = 0.1 * 0.5 = 0.05; v = 0.05 * 0.25 = 0.0125;
///   m_hat = 0.05 / (1 - 0.9) = 0.5; v_hat = 0.0125 / (1 - 0.95) = 0.25;
///   p = 0.99 - 0.1 * 0.5 / (sqrt(0.25) + 1e-8) = 0.890000002
/// step 2: p = 0.890000002 * 0.99 = 0.881100002; m = 0.05 + 0.1 * (-0.25 - 0.05) = 0.02;
///   v = 0.0125 * 0.95 + 0.05 * 0.0625 = 0.015; m_hat = 0.02 / 0.19 = 0.1052632;
///   v_hat = 0.015 / 0.0975 = 0.1538462; p = 0.881100002 - 0.1 * 0.1052632 / 0.3922323
///   = 0.8542631
/// step 3: p = 0.8542631 * 0.99 = 0.8457204; m = 0.02 + 0.1 * (1 - 0.02) = 0.118;
///   v = 0.015 * 0.95 + 0.05 = 0.06425; m_hat = 0.118 / 0.271 = 0.4354244;
///   v_hat = 0.06425 / 0.142625 = 0.4504820; p = 0.8457204 - 0.1 * 0.4354244 / 0.6711796
///   = 0.7808459
/// p1: 2 * 0.99^t = 1.98, 1.9602, 1.940598 (m = v = 0, so the Adam term is 0 / eps = 0).
#[test]
fn adamw_matches_three_hand_computed_steps() {
    let config = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    assert_eq!(config, AdamWConfig::default());
    let mut params = vec![1.0f32, 2.0];
    let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
    let expected_p0 = [0.890000002, 0.8542630578558273, 0.7808459348967066];
    let expected_p1 = [1.98, 1.9602, 1.940598];
    let expected_m0 = [0.05, 0.02, 0.118];
    let expected_v0 = [0.0125, 0.015, 0.06425];
    for (t, g) in [0.5f32, -0.25, 1.0].into_iter().enumerate() {
        let step = AdamWStep {
            config,
            lr: 0.1,
            t: t as u64 + 1,
            grad_scale: 1.0,
        };
        adamw_update(&mut params, &[g, 0.0], &mut m, &mut v, &step);
        close(
            params[0],
            expected_p0[t],
            &format!("p0 after step {}", t + 1),
        );
        close(
            params[1],
            expected_p1[t],
            &format!("p1 after step {}", t + 1),
        );
        close(m[0], expected_m0[t], &format!("m0 after step {}", t + 1));
        close(v[0], expected_v0[t], &format!("v0 after step {}", t + 1));
    }
}

/// Gradients (3, 4) have norm 5; clipping to 1 scales them by 1 / (5 + 1e-6), so the first
/// AdamW step sees (0.6, 0.8) (minus 1e-7 relative). Adam's first step moves each parameter by
/// lr * sign(g) whatever its size (m_hat / sqrt(v_hat) = g / |g|), so check the moments:
/// m = 0.1 * g, v = 0.05 * g^2.
#[test]
fn clipping_scales_the_gradient_before_the_moments() {
    let grads = [3.0f32, 4.0];
    let norm = global_norm(&grads);
    assert_eq!(norm, 5.0);
    let scale = clip_scale(norm, 1.0);
    close(scale, 1.0 / (5.0 + 1e-6), "clip scale");
    assert_eq!(clip_scale(0.5, 1.0), 1.0, "no clipping below the limit");

    let mut params = vec![0.0f32; 2];
    let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
    let step = AdamWStep {
        config: AdamWConfig::default(),
        lr: 0.01,
        t: 1,
        grad_scale: scale,
    };
    adamw_update(&mut params, &grads, &mut m, &mut v, &step);
    close(m[0], 0.06, "m0");
    close(m[1], 0.08, "m1");
    close(v[0], 0.05 * 0.36, "v0");
    close(v[1], 0.05 * 0.64, "v1");
    close(params[0], -0.01, "p0");
}

/// Peak 1e-3, 10 warmup steps, 110 steps, final ratio 0.1 (min 1e-4):
/// step 0: 1e-3 * 1/10 = 1e-4; step 9 (end of warmup): 1e-3;
/// cosine over steps 9..=109, r = (s - 9) / 100:
/// step 34 (r = 1/4): 1e-4 + 9e-4 * (1 + cos(pi/4)) / 2 = 8.681981e-4;
/// step 59 (midpoint, r = 1/2): 1e-4 + 9e-4 / 2 = 5.5e-4; step 109 (last): 1e-4.
#[test]
fn schedule_warms_up_then_decays_to_a_tenth() {
    let s = Schedule {
        peak_lr: 1e-3,
        warmup_steps: 10,
        total_steps: 110,
        min_lr_ratio: 0.1,
    };
    let near = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    near(s.lr(0), 1e-4);
    near(s.lr(4), 5e-4);
    near(s.lr(9), 1e-3);
    near(s.lr(34), 8.681980515339464e-4);
    near(s.lr(59), 5.5e-4);
    near(s.lr(109), 1e-4);
    // Monotone: up through the warmup, down after it.
    assert!((0..9).all(|i| s.lr(i) < s.lr(i + 1)));
    assert!((9..109).all(|i| s.lr(i) > s.lr(i + 1)));
}

#[test]
fn schedule_without_warmup_starts_at_the_peak() {
    let s = Schedule {
        peak_lr: 2.0,
        warmup_steps: 0,
        total_steps: 3,
        min_lr_ratio: 0.1,
    };
    assert_eq!(s.lr(0), 2.0);
    assert!((s.lr(1) - (0.2 + 1.8 * 0.5)).abs() < 1e-12);
    assert!((s.lr(2) - 0.2).abs() < 1e-12);
}
