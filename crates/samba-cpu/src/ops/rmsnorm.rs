//! RMSNorm without bias: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).

use rayon::prelude::*;

/// out, x [rows, dim]; w [dim]; rstd [rows] is saved for the backward pass.
pub fn rmsnorm_fwd(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let dim = w.len();
    assert_eq!(x.len(), out.len(), "rmsnorm_fwd: sizes");
    assert_eq!(x.len(), rstd.len() * dim, "rmsnorm_fwd: rows");
    out.par_chunks_mut(dim)
        .zip(rstd.par_iter_mut())
        .zip(x.par_chunks(dim))
        .for_each(|((o, r), x)| {
            let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
            *r = 1.0 / (mean_sq + eps).sqrt();
            for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                *o = x * *r * w;
            }
        });
}

/// Backward of out = xhat * w with xhat = x * rstd:
///   dw += sum_rows dout * xhat
///   dxhat = dout * w
///   dx += rstd * (dxhat - xhat * mean(dxhat * xhat))
/// (rstd depends on x: d rstd / dx_i = -rstd^3 x_i / dim, which gives the mean term.)
pub fn rmsnorm_bwd(
    dx: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
) {
    let dim = w.len();
    assert_eq!(x.len(), rstd.len() * dim, "rmsnorm_bwd: rows");
    assert_eq!(dx.len(), x.len(), "rmsnorm_bwd: dx size");
    assert_eq!(dout.len(), x.len(), "rmsnorm_bwd: dout size");
    assert_eq!(dw.len(), dim, "rmsnorm_bwd: dw size");
    // dw is a reduction over rows: per-chunk partial sums, added in a fixed order.
    const ROWS_PER_TASK: usize = 64;
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(dim * ROWS_PER_TASK)
        .zip(dout.par_chunks(dim * ROWS_PER_TASK))
        .zip(x.par_chunks(dim * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, dout), x), rstd)| {
            let mut dw_part = vec![0.0f32; dim];
            for (((dx, dout), x), r) in dx
                .chunks_mut(dim)
                .zip(dout.chunks(dim))
                .zip(x.chunks(dim))
                .zip(rstd)
            {
                let mut mean = 0.0f32;
                for i in 0..dim {
                    let xhat = x[i] * r;
                    dw_part[i] += dout[i] * xhat;
                    mean += dout[i] * w[i] * xhat;
                }
                mean /= dim as f32;
                for i in 0..dim {
                    dx[i] += r * (dout[i] * w[i] - x[i] * r * mean);
                }
            }
            dw_part
        })
        .collect();
    for part in partials {
        dw.iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    #[test]
    fn rmsnorm_fwd_matches_definition() {
        let x = [3.0f32, -4.0];
        let w = [1.0f32, 2.0];
        let mut out = [0.0; 2];
        let mut rstd = [0.0; 1];
        rmsnorm_fwd(&mut out, &mut rstd, &x, &w, 0.0);
        // mean(x^2) = 12.5, rstd = 1/sqrt(12.5)
        let r = 1.0 / 12.5f32.sqrt();
        assert!((rstd[0] - r).abs() < 1e-7);
        assert!((out[0] - 3.0 * r).abs() < 1e-6 && (out[1] + 8.0 * r).abs() < 1e-6);
    }

    #[test]
    fn rmsnorm_bwd_matches_finite_differences() {
        let (rows, dim) = (70, 9); // more rows than one task, so partials are reduced
        let x = random_vec(rows * dim, 1, 2.0);
        let w: Vec<f32> = random_vec(dim, 2, 0.5).iter().map(|v| v + 1.0).collect();
        let probe = random_vec(rows * dim, 3, 1.0);
        let mut rstd = vec![0.0; rows];
        let mut out = vec![0.0; rows * dim];
        rmsnorm_fwd(&mut out, &mut rstd, &x, &w, 1e-5);
        let mut dx = vec![0.0; rows * dim];
        let mut dw = vec![0.0; dim];
        rmsnorm_bwd(&mut dx, &mut dw, &probe, &x, &w, &rstd);
        let loss = |x: &[f32], w: &[f32]| {
            let mut out = vec![0.0; rows * dim];
            let mut rstd = vec![0.0; rows];
            rmsnorm_fwd(&mut out, &mut rstd, x, w, 1e-5);
            dot(&out, &probe)
        };
        check_gradient("rmsnorm x", &x, &dx, |v| loss(v, &w), 100, 1e-2, 5e-3);
        check_gradient("rmsnorm w", &w, &dw, |v| loss(&x, v), dim, 1e-2, 5e-3);
    }
}
