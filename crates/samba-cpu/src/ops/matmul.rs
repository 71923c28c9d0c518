//! Dense layers: `out = inp @ w^T` and its backward, on the `gemm` crate.
//!
//! Weights are stored as PyTorch stores `nn.Linear.weight`: [out_features, in_features].

use gemm::{gemm, Parallelism};

/// Rows and columns of a linear layer applied to `rows` input vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    /// Input vectors (batch * seq).
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// A row-major matrix operand of [`gemm_into`]: element (i, j) at `data[i * row_stride + j *
/// col_stride]`; transposes are strides, not copies.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// dst [m, n] (row-major, contiguous) = (accumulate ? dst : 0) + lhs [m, k] @ rhs [k, n].
fn gemm_into(
    dst: &mut [f32],
    accumulate: bool,
    m: usize,
    n: usize,
    k: usize,
    lhs: Operand,
    rhs: Operand,
) {
    assert_eq!(dst.len(), m * n, "gemm: destination size");
    if m == 0 || n == 0 {
        return;
    }
    let last = |o: &Operand, rows: usize, cols: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * o.row_stride + (cols - 1) * o.col_stride + 1
        }
    };
    assert!(lhs.data.len() >= last(&lhs, m, k), "gemm: lhs too small");
    assert!(rhs.data.len() >= last(&rhs, k, n), "gemm: rhs too small");
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every element gemm reads (lhs, rhs) or writes (dst)
    // inside the slices; dst is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads(),
        )
    }
}

/// out [rows, out] = inp [rows, in] @ w^T, w [out, in].
pub fn linear_fwd(out: &mut [f32], inp: &[f32], w: &[f32], dims: LinearDims) {
    let LinearDims {
        rows,
        in_features: k,
        out_features: n,
    } = dims;
    assert_eq!(inp.len(), rows * k, "linear_fwd: input size");
    assert_eq!(w.len(), n * k, "linear_fwd: weight size");
    let lhs = Operand {
        data: inp,
        row_stride: k,
        col_stride: 1,
    };
    // w^T [k, n]: element (i, j) = w[j, i].
    let rhs = Operand {
        data: w,
        row_stride: 1,
        col_stride: k,
    };
    gemm_into(out, false, rows, n, k, lhs, rhs);
}

/// Backward of `out = inp @ w^T`:
///   dinp [rows, in] += dout [rows, out] @ w [out, in]
///   dw   [out, in]  += dout^T [out, rows] @ inp [rows, in]
/// `dinp` is `None` where the input needs no gradient.
pub fn linear_bwd(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    dims: LinearDims,
) {
    let LinearDims {
        rows,
        in_features: k,
        out_features: n,
    } = dims;
    assert_eq!(dout.len(), rows * n, "linear_bwd: dout size");
    assert_eq!(inp.len(), rows * k, "linear_bwd: input size");
    assert_eq!(dw.len(), n * k, "linear_bwd: dw size");
    if let Some(dinp) = dinp {
        let lhs = Operand {
            data: dout,
            row_stride: n,
            col_stride: 1,
        };
        let rhs = Operand {
            data: w,
            row_stride: k,
            col_stride: 1,
        };
        gemm_into(dinp, true, rows, k, n, lhs, rhs);
    }
    // dout^T [n, rows]: element (i, j) = dout[j, i].
    let lhs = Operand {
        data: dout,
        row_stride: 1,
        col_stride: n,
    };
    let rhs = Operand {
        data: inp,
        row_stride: k,
        col_stride: 1,
    };
    gemm_into(dw, true, n, k, rows, lhs, rhs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    fn naive(inp: &[f32], w: &[f32], dims: LinearDims) -> Vec<f64> {
        let LinearDims {
            rows,
            in_features: k,
            out_features: n,
        } = dims;
        let mut out = vec![0.0f64; rows * n];
        for r in 0..rows {
            for j in 0..n {
                out[r * n + j] = (0..k)
                    .map(|i| inp[r * k + i] as f64 * w[j * k + i] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn linear_fwd_matches_naive_product() {
        for &(rows, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 48, 80)] {
            let dims = LinearDims {
                rows,
                in_features: k,
                out_features: n,
            };
            let inp = random_vec(rows * k, 1, 1.0);
            let w = random_vec(n * k, 2, 1.0);
            let mut out = vec![f32::NAN; rows * n];
            linear_fwd(&mut out, &inp, &w, dims);
            for (a, b) in out.iter().zip(naive(&inp, &w, dims)) {
                assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn linear_bwd_matches_finite_differences_and_accumulates() {
        let dims = LinearDims {
            rows: 6,
            in_features: 5,
            out_features: 4,
        };
        let inp = random_vec(30, 3, 1.0);
        let w = random_vec(20, 4, 1.0);
        let probe = random_vec(24, 5, 1.0);
        // Start from non-zero gradients: backward must add, not overwrite.
        let mut dinp = vec![0.5f32; 30];
        let mut dw = vec![-0.25f32; 20];
        linear_bwd(Some(&mut dinp), &mut dw, &probe, &inp, &w, dims);
        dinp.iter_mut().for_each(|v| *v -= 0.5);
        dw.iter_mut().for_each(|v| *v += 0.25);
        let loss = |inp: &[f32], w: &[f32]| {
            let mut out = vec![0.0; 24];
            linear_fwd(&mut out, inp, w, dims);
            dot(&out, &probe)
        };
        check_gradient("linear inp", &inp, &dinp, |x| loss(x, &w), 30, 1e-2, 1e-3);
        check_gradient("linear w", &w, &dw, |x| loss(&inp, x), 20, 1e-2, 1e-3);
    }
}
