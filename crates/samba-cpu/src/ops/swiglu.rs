//! The SwiGLU nonlinearity between the MLP's projections: act = silu(gate) * up, where
//! gate = w1 x (w1 is the gate, as in xformers' SwiGLU) and up = w2 x; the MLP is w3 act.

use rayon::prelude::*;

use super::{silu, silu_grad};

/// act, gate, up [rows, hidden].
pub fn swiglu_fwd(act: &mut [f32], gate: &[f32], up: &[f32]) {
    assert!(
        act.len() == gate.len() && gate.len() == up.len(),
        "swiglu_fwd: sizes"
    );
    act.par_iter_mut()
        .zip(gate.par_iter().zip(up.par_iter()))
        .for_each(|(a, (g, u))| *a = silu(*g) * u);
}

/// Backward of act = silu(gate) * up:
///   dgate += dact * up * silu'(gate)
///   dup   += dact * silu(gate)
pub fn swiglu_bwd(dgate: &mut [f32], dup: &mut [f32], dact: &[f32], gate: &[f32], up: &[f32]) {
    let n = dact.len();
    assert!(
        dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n,
        "swiglu_bwd: sizes"
    );
    dgate
        .par_iter_mut()
        .zip(dup.par_iter_mut())
        .zip(dact.par_iter().zip(gate.par_iter().zip(up.par_iter())))
        .for_each(|((dg, du), (da, (g, u)))| {
            *dg += da * u * silu_grad(*g);
            *du += da * silu(*g);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    #[test]
    fn swiglu_matches_definition_and_finite_differences() {
        let gate = random_vec(40, 1, 3.0);
        let up = random_vec(40, 2, 3.0);
        let probe = random_vec(40, 3, 1.0);
        let mut act = vec![0.0; 40];
        swiglu_fwd(&mut act, &gate, &up);
        let g = gate[7] as f64;
        let expected = g / (1.0 + (-g).exp()) * up[7] as f64;
        assert!((act[7] as f64 - expected).abs() < 1e-5);

        let mut dgate = vec![0.0; 40];
        let mut dup = vec![0.0; 40];
        swiglu_bwd(&mut dgate, &mut dup, &probe, &gate, &up);
        let loss = |g: &[f32], u: &[f32]| {
            let mut act = vec![0.0; 40];
            swiglu_fwd(&mut act, g, u);
            dot(&act, &probe)
        };
        check_gradient(
            "swiglu gate",
            &gate,
            &dgate,
            |v| loss(v, &up),
            40,
            1e-3,
            1e-3,
        );
        check_gradient("swiglu up", &up, &dup, |v| loss(&gate, v), 40, 1e-3, 1e-3);
    }
}
