//! Mamba's depthwise causal convolution fused with SiLU (`conv1d` + `act` of the reference
//! mixer): every channel is convolved over time with its own `kernel`-tap filter (d_conv = 4 in
//! Samba), seeing only the current and the previous `kernel - 1` input rows. Before t = 0 those
//! rows come from the conv state (recurrent decoding, chunked prefill) or are zero (training).

use rayon::prelude::*;

use super::{silu, silu_grad};

/// Channels per task in the backward's reduction of `dw` and `dbias` over (batch, time). A
/// constant, not derived from the thread count, so every sum runs in the same order on any pool.
const CHANNELS_PER_TASK: usize = 64;

/// Sizes of one causal convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    /// Taps per channel (d_conv).
    pub kernel: usize,
}

impl ConvDims {
    /// Elements of a conv state, [batch, kernel - 1, channels].
    pub fn state_len(&self) -> usize {
        self.batch * self.kernel.saturating_sub(1) * self.channels
    }

    fn check(&self, x: &[f32], w: &[f32], bias: &[f32]) {
        assert!(self.kernel >= 1, "causal conv: kernel must be at least 1");
        assert!(
            self.channels >= 1,
            "causal conv: channels must be at least 1"
        );
        let rows = self.batch * self.seq * self.channels;
        assert_eq!(x.len(), rows, "causal conv: x is [batch, seq, channels]");
        assert_eq!(
            w.len(),
            self.channels * self.kernel,
            "causal conv: w is [channels, 1, kernel]"
        );
        assert_eq!(bias.len(), self.channels, "causal conv: bias is [channels]");
    }
}

/// Pre-activation of one time step `t` of one sequence:
///   p[c] = bias[c] + sum_{k=0..K-1} w[c,k] * x[t-(K-1)+k, c]
/// x_b is [seq, channels]; state_b is [K-1, channels], whose row K-1+s holds input time s < 0
/// (zeros when None). The forward and the backward's recomputation share this, so both see the
/// same bits.
fn preact_row(
    p: &mut [f32],
    x_b: &[f32],
    state_b: Option<&[f32]>,
    w: &[f32],
    bias: &[f32],
    t: usize,
    dims: ConvDims,
) {
    let (ch, kernel) = (dims.channels, dims.kernel);
    let hist = kernel - 1;
    p.copy_from_slice(bias);
    for k in 0..kernel {
        // tap k reads input time s = t - hist + k, i.e. position t + k of [state; x]
        let pos = t + k;
        let src = if pos >= hist {
            Some(&x_b[(pos - hist) * ch..][..ch])
        } else {
            state_b.map(|st| &st[pos * ch..][..ch])
        };
        if let Some(src) = src {
            for ((pc, wc), xc) in p.iter_mut().zip(w.chunks_exact(kernel)).zip(src) {
                *pc += wc[k] * xc;
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// forward
//   p[b,t,c] = bias[c] + sum_{k=0..K-1} w[c,k] * x[b, t-(K-1)+k, c]
//   u[b,t,c] = silu(p[b,t,c])
// with x at negative times read from state_in (row K-1+s for time s), or zero without it.
// state_out receives the inputs at times seq-(K-1) .. seq-1, the history the next chunk needs.

/// Depthwise causal conv + SiLU. x, u: [batch, seq, channels]; w: [channels, 1, kernel] (the
/// reference's `conv1d.weight`, w[c,k] at `c * kernel + k`); bias: [channels].
/// state_in, state_out: [batch, kernel - 1, channels], the last kernel - 1 input rows before
/// t = 0 and after the sequence, oldest first. When seq < kernel - 1 the new state keeps the
/// newest rows of state_in (zeros without it), so processing a sequence in chunks with the state
/// carried gives the same u as one pass.
pub fn causal_conv1d_silu_fwd(
    u: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    dims: ConvDims,
    state_in: Option<&[f32]>,
    state_out: Option<&mut [f32]>,
) {
    dims.check(x, w, bias);
    assert_eq!(u.len(), x.len(), "causal conv: u is [batch, seq, channels]");
    if let Some(st) = state_in {
        assert_eq!(
            st.len(),
            dims.state_len(),
            "causal conv: state_in is [batch, kernel - 1, channels]"
        );
    }
    let ConvDims {
        seq,
        channels: ch,
        kernel,
        ..
    } = dims;
    let hist = kernel - 1;

    u.par_chunks_mut(ch).enumerate().for_each(|(row, u_row)| {
        let b = row / seq;
        let x_b = &x[b * seq * ch..][..seq * ch];
        let state_b = state_in.map(|st| &st[b * hist * ch..][..hist * ch]);
        preact_row(u_row, x_b, state_b, w, bias, row % seq, dims);
        for v in u_row.iter_mut() {
            *v = silu(*v);
        }
    });

    if let Some(out) = state_out {
        assert_eq!(
            out.len(),
            dims.state_len(),
            "causal conv: state_out is [batch, kernel - 1, channels]"
        );
        for (b, out_b) in out.chunks_exact_mut((hist * ch).max(1)).enumerate() {
            for (j, dst) in out_b.chunks_exact_mut(ch).enumerate() {
                // row j of the new state is input time seq - hist + j
                if seq + j >= hist {
                    dst.copy_from_slice(&x[(b * seq + seq + j - hist) * ch..][..ch]);
                } else if let Some(st) = state_in {
                    dst.copy_from_slice(&st[(b * hist + seq + j) * ch..][..ch]);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// backward (training: zero initial state). p is recomputed from x, w, bias rather than stored.
//   u = silu(p)                                  => dp[b,t,c] = du[b,t,c] * silu'(p[b,t,c])
//   p[b,t,c] += w[c,k] * x[b, t-(K-1)+k, c]      => dx[b,s,c] += sum_k w[c,k] * dp[b, s+(K-1)-k, c]
//                                                   dw[c,k]   += sum_{b,t} dp[b,t,c] * x[b, t-(K-1)+k, c]
//   p[b,t,c] = bias[c] + ...                     => dbias[c]  += sum_{b,t} dp[b,t,c]

/// Backward of [`causal_conv1d_silu_fwd`] from a zero initial state; adds into dx
/// [batch, seq, channels], dw [channels, 1, kernel] and dbias [channels]. du is
/// [batch, seq, channels]. dw and dbias are reduced over (batch, time) in a fixed order, so the
/// result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_silu_bwd(
    dx: &mut [f32],
    dw: &mut [f32],
    dbias: &mut [f32],
    du: &[f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    dims: ConvDims,
) {
    dims.check(x, w, bias);
    assert_eq!(
        du.len(),
        x.len(),
        "causal conv: du is [batch, seq, channels]"
    );
    assert_eq!(
        dx.len(),
        x.len(),
        "causal conv: dx is [batch, seq, channels]"
    );
    assert_eq!(
        dw.len(),
        w.len(),
        "causal conv: dw is [channels, 1, kernel]"
    );
    assert_eq!(dbias.len(), bias.len(), "causal conv: dbias is [channels]");
    let ConvDims {
        batch,
        seq,
        channels: ch,
        kernel,
    } = dims;
    let hist = kernel - 1;

    // dp = du * silu'(p), [batch, seq, channels]
    let mut dp = vec![0.0f32; x.len()];
    dp.par_chunks_mut(ch).enumerate().for_each(|(row, dp_row)| {
        let x_b = &x[(row / seq) * seq * ch..][..seq * ch];
        preact_row(dp_row, x_b, None, w, bias, row % seq, dims);
        for (d, g) in dp_row.iter_mut().zip(&du[row * ch..][..ch]) {
            *d = g * silu_grad(*d);
        }
    });

    // dx: input time s feeds outputs t = s + hist - k through tap k, for the t inside the sequence
    dx.par_chunks_mut(ch).enumerate().for_each(|(row, dx_row)| {
        let (b, s) = (row / seq, row % seq);
        for k in 0..kernel {
            let t = s + hist - k;
            if t >= seq {
                continue;
            }
            let dp_row = &dp[(b * seq + t) * ch..][..ch];
            for ((d, wc), g) in dx_row.iter_mut().zip(w.chunks_exact(kernel)).zip(dp_row) {
                *d += wc[k] * g;
            }
        }
    });

    // dw, dbias: each task owns a block of channels and sums over (b, t) in order
    dw.par_chunks_mut(CHANNELS_PER_TASK * kernel)
        .zip(dbias.par_chunks_mut(CHANNELS_PER_TASK))
        .enumerate()
        .for_each(|(blk, (dw_blk, db_blk))| {
            let (c0, n) = (blk * CHANNELS_PER_TASK, db_blk.len());
            let mut dw_acc = vec![0.0f32; n * kernel];
            let mut db_acc = vec![0.0f32; n];
            for b in 0..batch {
                for t in 0..seq {
                    let g = &dp[(b * seq + t) * ch + c0..][..n];
                    for (a, gc) in db_acc.iter_mut().zip(g) {
                        *a += gc;
                    }
                    for k in 0..kernel {
                        // tap k of output t read input time t - hist + k
                        if t + k < hist {
                            continue;
                        }
                        let xs = &x[(b * seq + t + k - hist) * ch + c0..][..n];
                        for ((a, gc), xc) in dw_acc.chunks_exact_mut(kernel).zip(g).zip(xs) {
                            a[k] += gc * xc;
                        }
                    }
                }
            }
            for (d, a) in dw_blk.iter_mut().zip(&dw_acc) {
                *d += a;
            }
            for (d, a) in db_blk.iter_mut().zip(&db_acc) {
                *d += a;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    /// u = silu(bias + sum_k w x) in f64 over the concatenation [state; x], straight from the
    /// definition; also returns the new state (the last kernel - 1 rows of [state; x]).
    fn naive(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        d: ConvDims,
        state: Option<&[f32]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let hist = d.kernel - 1;
        let mut u = vec![0.0; x.len()];
        let mut new_state = vec![0.0; d.state_len()];
        for b in 0..d.batch {
            // full[p, c] = input at time p - hist
            let full = |p: usize, c: usize| -> f64 {
                if p >= hist {
                    x[(b * d.seq + p - hist) * d.channels + c] as f64
                } else {
                    state.map_or(0.0, |s| s[(b * hist + p) * d.channels + c] as f64)
                }
            };
            for t in 0..d.seq {
                for c in 0..d.channels {
                    let mut p = bias[c] as f64;
                    for k in 0..d.kernel {
                        p += w[c * d.kernel + k] as f64 * full(t + k, c);
                    }
                    u[(b * d.seq + t) * d.channels + c] = p / (1.0 + (-p).exp());
                }
            }
            for j in 0..hist {
                for c in 0..d.channels {
                    new_state[(b * hist + j) * d.channels + c] = full(d.seq + j, c);
                }
            }
        }
        (u, new_state)
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(
                err <= tol * (1.0 + w.abs()),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }

    /// Rows t0..t1 of every sequence of x [batch, seq, width].
    fn time_slice(
        x: &[f32],
        batch: usize,
        seq: usize,
        width: usize,
        t0: usize,
        t1: usize,
    ) -> Vec<f32> {
        (0..batch)
            .flat_map(|b| {
                x[(b * seq + t0) * width..(b * seq + t1) * width]
                    .iter()
                    .copied()
            })
            .collect()
    }

    #[test]
    fn fwd_matches_naive() {
        for kernel in [1, 2, 4] {
            let d = ConvDims {
                batch: 2,
                seq: 7,
                channels: 5,
                kernel,
            };
            let x = random_vec(d.batch * d.seq * d.channels, 1, 1.0);
            let w = random_vec(d.channels * kernel, 2, 0.8);
            let bias = random_vec(d.channels, 3, 0.5);
            let st = random_vec(d.state_len(), 4, 1.0);
            for state in [None, Some(&st[..])] {
                let mut u = vec![0.0; x.len()];
                let mut new_state = vec![f32::NAN; d.state_len()];
                causal_conv1d_silu_fwd(&mut u, &x, &w, &bias, d, state, Some(&mut new_state));
                let (u_ref, state_ref) = naive(&x, &w, &bias, d, state);
                assert_close(&u, &u_ref, 1e-6, "u");
                assert_close(&new_state, &state_ref, 0.0, "state_out");
            }
        }
    }

    #[test]
    fn bwd_matches_finite_differences() {
        let d = ConvDims {
            batch: 2,
            seq: 7,
            channels: 5,
            kernel: 4,
        };
        let n = d.batch * d.seq * d.channels;
        let x = random_vec(n, 11, 1.0);
        let w = random_vec(d.channels * d.kernel, 12, 0.8);
        let bias = random_vec(d.channels, 13, 0.5);
        let probe = random_vec(n, 14, 1.0);
        let loss = |x: &[f32], w: &[f32], bias: &[f32]| {
            let mut u = vec![0.0; n];
            causal_conv1d_silu_fwd(&mut u, x, w, bias, d, None, None);
            dot(&u, &probe)
        };
        let (mut dx, mut dw, mut dbias) = (vec![0.0; n], vec![0.0; w.len()], vec![0.0; d.channels]);
        causal_conv1d_silu_bwd(&mut dx, &mut dw, &mut dbias, &probe, &x, &w, &bias, d);
        check_gradient("x", &x, &dx, |v| loss(v, &w, &bias), 200, 1e-3, 1e-2);
        check_gradient("w", &w, &dw, |v| loss(&x, v, &bias), 200, 1e-3, 1e-2);
        check_gradient("bias", &bias, &dbias, |v| loss(&x, &w, v), 200, 1e-3, 1e-2);

        // a second call adds the same gradients again
        let (mut dx2, mut dw2, mut dbias2) = (dx.clone(), dw.clone(), dbias.clone());
        causal_conv1d_silu_bwd(&mut dx2, &mut dw2, &mut dbias2, &probe, &x, &w, &bias, d);
        for (two, one) in [(&dx2, &dx), (&dw2, &dw), (&dbias2, &dbias)] {
            for (a, b) in two.iter().zip(one.iter()) {
                assert!(
                    (a - 2.0 * b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "bwd must add: {a} vs 2 * {b}"
                );
            }
        }
    }

    #[test]
    fn chunked_equals_one_pass() {
        let d = ConvDims {
            batch: 2,
            seq: 10,
            channels: 3,
            kernel: 4,
        };
        let x = random_vec(d.batch * d.seq * d.channels, 21, 1.0);
        let w = random_vec(d.channels * d.kernel, 22, 0.8);
        let bias = random_vec(d.channels, 23, 0.5);
        let st0 = random_vec(d.state_len(), 24, 1.0);
        for initial in [None, Some(&st0[..])] {
            let mut u_full = vec![0.0; x.len()];
            let mut st_full = vec![0.0; d.state_len()];
            causal_conv1d_silu_fwd(&mut u_full, &x, &w, &bias, d, initial, Some(&mut st_full));

            // chunks of 2 and 1 rows are shorter than the kernel's history of 3
            let mut state = initial.map(<[f32]>::to_vec);
            let mut u_chunks = vec![Vec::new(); d.batch];
            let mut t0 = 0;
            for len in [2, 1, 4, 3] {
                let dc = ConvDims { seq: len, ..d };
                let xc = time_slice(&x, d.batch, d.seq, d.channels, t0, t0 + len);
                let mut uc = vec![0.0; xc.len()];
                let mut next = vec![0.0; d.state_len()];
                causal_conv1d_silu_fwd(
                    &mut uc,
                    &xc,
                    &w,
                    &bias,
                    dc,
                    state.as_deref(),
                    Some(&mut next),
                );
                for (b, chunk) in uc.chunks_exact(len * d.channels).enumerate() {
                    u_chunks[b].extend_from_slice(chunk);
                }
                state = Some(next);
                t0 += len;
            }
            assert_eq!(t0, d.seq);
            assert_eq!(u_chunks.concat(), u_full, "chunked u");
            assert_eq!(state.unwrap(), st_full, "chunked state");
        }
    }

    #[test]
    fn results_independent_of_thread_count() {
        // 150 channels: three channel blocks in the dw reduction, the last one partial
        let d = ConvDims {
            batch: 3,
            seq: 17,
            channels: 150,
            kernel: 4,
        };
        let n = d.batch * d.seq * d.channels;
        let x = random_vec(n, 31, 1.0);
        let w = random_vec(d.channels * d.kernel, 32, 0.8);
        let bias = random_vec(d.channels, 33, 0.5);
        let du = random_vec(n, 34, 1.0);
        let run = || {
            let mut u = vec![0.0; n];
            causal_conv1d_silu_fwd(&mut u, &x, &w, &bias, d, None, None);
            let (mut dx, mut dw, mut dbias) =
                (vec![0.0; n], vec![0.0; w.len()], vec![0.0; d.channels]);
            causal_conv1d_silu_bwd(&mut dx, &mut dw, &mut dbias, &du, &x, &w, &bias, d);
            [u, dx, dw, dbias]
        };
        let global = run();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(run), global, "{threads} threads");
        }
    }
}
