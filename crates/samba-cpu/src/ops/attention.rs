//! Causal self-attention with an optional sliding window, read from the roped fused qkv buffer
//! (grouped-interleaved layout, see [`QkvDims`]). Written the flash-attention way, one query at
//! a time: a row of at most `window` scores per query, never the [seq, seq] score matrix; the
//! forward saves the log-sum-exp of each row so the backward can rebuild the probabilities.

use rayon::prelude::*;

/// Sizes of a fused qkv buffer [batch, seq, (heads + 2 * kv_heads) * head_dim].
///
/// The columns of one token are viewed as [kv_heads, heads / kv_heads + 2, head_dim]: kv group g
/// holds its `q_per_kv` query heads, then k_g, then v_g. Query head h = g * q_per_kv + j reads
/// kv head g = h / q_per_kv. MHA (kv_heads = heads) is [q_h, k_h, v_h] per head; MQA has
/// kv_heads = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl QkvDims {
    /// Query heads per kv head (per kv group).
    pub fn q_per_kv(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Columns of one kv group: its query heads, k_g and v_g.
    pub fn group_dim(&self) -> usize {
        (self.q_per_kv() + 2) * self.head_dim
    }

    /// Columns of one token of the fused qkv buffer: (heads + 2 * kv_heads) * head_dim.
    pub fn qkv_dim(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Columns of one token of the attention output: heads * head_dim.
    pub fn out_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// First column of query head `h` within a token's qkv row.
    pub fn q_col(&self, h: usize) -> usize {
        let q_per_kv = self.q_per_kv();
        (h / q_per_kv) * self.group_dim() + (h % q_per_kv) * self.head_dim
    }

    /// First column of key head `g` within a token's qkv row.
    pub fn k_col(&self, g: usize) -> usize {
        g * self.group_dim() + self.q_per_kv() * self.head_dim
    }

    /// First column of value head `g` within a token's qkv row.
    pub fn v_col(&self, g: usize) -> usize {
        g * self.group_dim() + (self.q_per_kv() + 1) * self.head_dim
    }

    /// Panics unless the head counts describe a valid grouping.
    pub fn assert_valid(&self) {
        assert!(self.head_dim > 0, "QkvDims: head_dim must be positive");
        assert!(
            self.kv_heads > 0 && self.heads % self.kv_heads == 0,
            "QkvDims: heads ({}) must be a positive multiple of kv_heads ({})",
            self.heads,
            self.kv_heads
        );
    }
}

/// The first key query `t` sees: keys s with s <= t and, with a window w, t - s < w (the window
/// counts the query's own token, flash-attn window_size = (w - 1, 0)).
fn first_key(t: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) => (t + 1).saturating_sub(w),
        None => 0,
    }
}

fn assert_window(window: Option<usize>) {
    assert!(
        window != Some(0),
        "attention: a window must count at least the current token"
    );
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// y += alpha * x
#[inline]
fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

// Forward, per batch b and query head h (kv head g = h / q_per_kv), for each query t:
//   S_ts  = scale * q_t . k_s            for s in first_key(t)..=t, scale = 1 / sqrt(head_dim)
//   m_t   = max_s S_ts
//   lse_t = m_t + ln sum_s exp(S_ts - m_t)
//   P_ts  = exp(S_ts - lse_t)            (softmax over the visible keys)
//   O_t   = sum_s P_ts v_s
//
// Backward (flash-attention; P is rebuilt from the saved lse), for the same (b, h, t):
//   O_t = sum_s P_ts v_s           so  dv_s += P_ts dO_t   and  dP_ts = dO_t . v_s
//   P_t = softmax(S_t)             so  dS_ts = P_ts (dP_ts - sum_r P_tr dP_tr)
//                                            = P_ts (dP_ts - D_t),  D_t = dO_t . O_t
//   S_ts = scale * q_t . k_s       so  dq_t += scale * sum_s dS_ts k_s
//                                      dk_s += scale * dS_ts q_t
// (D_t = sum_r P_tr dO_t . v_r = dO_t . O_t, which is why the output is saved.)

/// Causal attention with an optional sliding window.
///
/// - `qkv` [batch, seq, qkv_dim]: roped fused q, k, v in the grouped-interleaved layout;
/// - `out` [batch, seq, heads * head_dim]: head h at columns h * head_dim..(h + 1) * head_dim;
/// - `lse` [batch, heads, seq]: log-sum-exp of each query's scaled scores, kept for backward;
/// - `window`: `Some(w)` lets query t see keys t - (w - 1)..=t; `None` is full causal.
pub fn attention_fwd(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    dims: QkvDims,
    window: Option<usize>,
) {
    dims.assert_valid();
    assert_window(window);
    let QkvDims {
        batch,
        seq,
        heads,
        head_dim: hd,
        ..
    } = dims;
    let (qkv_dim, out_dim) = (dims.qkv_dim(), dims.out_dim());
    assert_eq!(qkv.len(), batch * seq * qkv_dim, "attention_fwd: qkv shape");
    assert_eq!(out.len(), batch * seq * out_dim, "attention_fwd: out shape");
    assert_eq!(lse.len(), batch * heads * seq, "attention_fwd: lse shape");
    if seq == 0 {
        return;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let row_len = window.map_or(seq, |w| w.min(seq));

    // One task per (batch, head): lse[b, h, :] is its own contiguous chunk; its output column
    // block out[b, :, h] is strided, so it is built in a [seq, head_dim] buffer and copied below.
    let per_head: Vec<Vec<f32>> = lse
        .par_chunks_mut(seq)
        .enumerate()
        .map(|(bh, lse_bh)| {
            let (b, h) = (bh / heads, bh % heads);
            let g = h / dims.q_per_kv();
            let (q_col, k_col, v_col) = (dims.q_col(h), dims.k_col(g), dims.v_col(g));
            let at = |t: usize, col: usize| &qkv[(b * seq + t) * qkv_dim + col..][..hd];
            let mut out_bh = vec![0.0f32; seq * hd];
            let mut p = Vec::with_capacity(row_len);
            for t in 0..seq {
                let q = at(t, q_col);
                let lo = first_key(t, window);
                p.clear();
                p.extend((lo..=t).map(|s| scale * dot(q, at(s, k_col))));
                let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for x in p.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                lse_bh[t] = m + sum.ln();
                let inv_sum = 1.0 / sum;
                let o = &mut out_bh[t * hd..][..hd];
                for (pi, s) in p.iter().zip(lo..=t) {
                    axpy(o, pi * inv_sum, at(s, v_col));
                }
            }
            out_bh
        })
        .collect();

    out.par_chunks_mut(out_dim)
        .enumerate()
        .for_each(|(bt, out_row)| {
            let (b, t) = (bt / seq, bt % seq);
            for (h, o) in out_row.chunks_exact_mut(hd).enumerate() {
                o.copy_from_slice(&per_head[b * heads + h][t * hd..][..hd]);
            }
        });
}

/// Backward of [`attention_fwd`]: adds into `dqkv` [batch, seq, qkv_dim] (same layout as `qkv`:
/// dq into each query head's columns, dk and dv into its kv group's k and v columns).
///
/// `dout` [batch, seq, heads * head_dim] is the gradient of `out`; `out` and `lse` are what the
/// forward returned for this `qkv`, `dims` and `window`.
///
/// Query heads of one group share k_g and v_g; each (batch, head) task writes its own
/// [seq, 3 * head_dim] buffer of (dq_h, dk from h, dv from h) and the per-head dk, dv
/// contributions are summed afterwards in head order, so the result does not depend on the
/// number of threads.
pub fn attention_bwd(
    dqkv: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    qkv: &[f32],
    dims: QkvDims,
    window: Option<usize>,
) {
    dims.assert_valid();
    assert_window(window);
    let QkvDims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim: hd,
    } = dims;
    let (qkv_dim, out_dim, q_per_kv) = (dims.qkv_dim(), dims.out_dim(), dims.q_per_kv());
    assert_eq!(qkv.len(), batch * seq * qkv_dim, "attention_bwd: qkv shape");
    assert_eq!(dqkv.len(), qkv.len(), "attention_bwd: dqkv shape");
    assert_eq!(out.len(), batch * seq * out_dim, "attention_bwd: out shape");
    assert_eq!(dout.len(), out.len(), "attention_bwd: dout shape");
    assert_eq!(lse.len(), batch * heads * seq, "attention_bwd: lse shape");
    if seq == 0 {
        return;
    }
    let scale = 1.0 / (hd as f32).sqrt();

    // Per (batch, head): [seq, 3 * head_dim] rows of [dq_h | dk_g from h | dv_g from h].
    let per_head: Vec<Vec<f32>> = (0..batch * heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / heads, bh % heads);
            let g = h / q_per_kv;
            let (q_col, k_col, v_col) = (dims.q_col(h), dims.k_col(g), dims.v_col(g));
            let at = |t: usize, col: usize| &qkv[(b * seq + t) * qkv_dim + col..][..hd];
            let out_at = |t: usize| (b * seq + t) * out_dim + h * hd;
            let lse_bh = &lse[bh * seq..][..seq];
            let mut grads = vec![0.0f32; seq * 3 * hd];
            let mut dq = vec![0.0f32; hd];
            for t in 0..seq {
                let q = at(t, q_col);
                let (o, d_o) = (&out[out_at(t)..][..hd], &dout[out_at(t)..][..hd]);
                let d_t = dot(d_o, o);
                dq.fill(0.0);
                for s in first_key(t, window)..=t {
                    let (k, v) = (at(s, k_col), at(s, v_col));
                    let p = (scale * dot(q, k) - lse_bh[t]).exp();
                    let ds = p * (dot(d_o, v) - d_t);
                    let kv_grads = &mut grads[s * 3 * hd + hd..][..2 * hd];
                    let (dk, dv) = kv_grads.split_at_mut(hd);
                    axpy(dv, p, d_o);
                    axpy(dk, scale * ds, q);
                    axpy(&mut dq, scale * ds, k);
                }
                axpy(&mut grads[t * 3 * hd..][..hd], 1.0, &dq);
            }
            grads
        })
        .collect();

    dqkv.par_chunks_mut(qkv_dim)
        .enumerate()
        .for_each(|(bt, dqkv_row)| {
            let (b, t) = (bt / seq, bt % seq);
            for g in 0..kv_heads {
                for j in 0..q_per_kv {
                    let h = g * q_per_kv + j;
                    let grads = &per_head[b * heads + h][t * 3 * hd..][..3 * hd];
                    axpy(&mut dqkv_row[dims.q_col(h)..][..hd], 1.0, &grads[..hd]);
                    axpy(
                        &mut dqkv_row[dims.k_col(g)..][..hd],
                        1.0,
                        &grads[hd..2 * hd],
                    );
                    axpy(&mut dqkv_row[dims.v_col(g)..][..hd], 1.0, &grads[2 * hd..]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    fn dims(batch: usize, seq: usize, heads: usize, kv_heads: usize, head_dim: usize) -> QkvDims {
        QkvDims {
            batch,
            seq,
            heads,
            kv_heads,
            head_dim,
        }
    }

    fn run_fwd(qkv: &[f32], d: QkvDims, window: Option<usize>) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0.0; d.batch * d.seq * d.out_dim()];
        let mut lse = vec![0.0; d.batch * d.heads * d.seq];
        attention_fwd(&mut out, &mut lse, qkv, d, window);
        (out, lse)
    }

    /// dqkv of the loss <out, dout>, starting from zero.
    fn run_bwd(qkv: &[f32], dout: &[f32], d: QkvDims, window: Option<usize>) -> Vec<f32> {
        let (out, lse) = run_fwd(qkv, d, window);
        let mut dqkv = vec![0.0; qkv.len()];
        attention_bwd(&mut dqkv, dout, &out, &lse, qkv, d, window);
        dqkv
    }

    /// Attention in f64 with the full [seq, seq] score matrix and an explicit mask, reading the
    /// grouped-interleaved layout by its definition [kv_heads, q_per_kv + 2, head_dim].
    fn naive(qkv: &[f32], d: QkvDims, window: Option<usize>) -> (Vec<f64>, Vec<f64>) {
        let (seq, hd, qpk) = (d.seq, d.head_dim, d.heads / d.kv_heads);
        let row = (d.heads + 2 * d.kv_heads) * hd;
        let get = |b: usize, t: usize, g: usize, slot: usize, i: usize| {
            qkv[(b * seq + t) * row + (g * (qpk + 2) + slot) * hd + i] as f64
        };
        let mut out = vec![0.0; d.batch * seq * d.heads * hd];
        let mut lse = vec![0.0; d.batch * d.heads * seq];
        for b in 0..d.batch {
            for h in 0..d.heads {
                let (g, j) = (h / qpk, h % qpk);
                for t in 0..seq {
                    let visible = |s: usize| s <= t && window.is_none_or(|w| t - s < w);
                    let scores: Vec<f64> = (0..seq)
                        .map(|s| {
                            let qk: f64 = (0..hd)
                                .map(|i| get(b, t, g, j, i) * get(b, s, g, qpk, i))
                                .sum();
                            if visible(s) {
                                qk / (hd as f64).sqrt()
                            } else {
                                f64::NEG_INFINITY
                            }
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    lse[(b * d.heads + h) * seq + t] = m + sum.ln();
                    for (s, x) in scores.iter().enumerate() {
                        let p = (x - m).exp() / sum;
                        for i in 0..hd {
                            out[(b * seq + t) * d.heads * hd + h * hd + i] +=
                                p * get(b, s, g, qpk + 1, i);
                        }
                    }
                }
            }
        }
        (out, lse)
    }

    #[test]
    fn column_helpers_follow_grouped_layout() {
        // heads 4, kv_heads 2, head_dim 3: per token [q0 q1 k0 v0 | q2 q3 k1 v1].
        let d = dims(1, 1, 4, 2, 3);
        assert_eq!(d.qkv_dim(), 24);
        assert_eq!(d.group_dim(), 12);
        assert_eq!(
            (0..4).map(|h| d.q_col(h)).collect::<Vec<_>>(),
            [0, 3, 12, 15]
        );
        assert_eq!(
            (d.k_col(0), d.v_col(0), d.k_col(1), d.v_col(1)),
            (6, 9, 18, 21)
        );
        // MHA: [q_h, k_h, v_h] per head.
        let d = dims(1, 1, 2, 2, 3);
        assert_eq!((d.q_col(1), d.k_col(1), d.v_col(1)), (9, 12, 15));
    }

    #[test]
    fn fwd_matches_naive_reference() {
        let (batch, seq, hd) = (2, 11, 8);
        for (heads, kv_heads) in [(4, 4), (4, 2), (4, 1)] {
            for window in [None, Some(1), Some(3), Some(4), Some(20)] {
                let d = dims(batch, seq, heads, kv_heads, hd);
                let qkv = random_vec(batch * seq * d.qkv_dim(), 7, 1.5);
                let (out, lse) = run_fwd(&qkv, d, window);
                let (out_ref, lse_ref) = naive(&qkv, d, window);
                for (name, got, want) in [("out", &out, &out_ref), ("lse", &lse, &lse_ref)] {
                    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()),
                            "{name}[{i}] heads {heads} kv {kv_heads} window {window:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn window_of_one_copies_v_and_wide_window_is_causal() {
        let d = dims(1, 6, 2, 1, 4);
        let qkv = random_vec(d.batch * d.seq * d.qkv_dim(), 3, 1.0);
        let (out, _) = run_fwd(&qkv, d, Some(1));
        for t in 0..d.seq {
            for h in 0..d.heads {
                let v = &qkv[t * d.qkv_dim() + d.v_col(0)..][..d.head_dim];
                assert_eq!(&out[t * d.out_dim() + h * d.head_dim..][..d.head_dim], v);
            }
        }
        assert_eq!(run_fwd(&qkv, d, Some(d.seq)), run_fwd(&qkv, d, None));
        assert_eq!(run_fwd(&qkv, d, Some(100)), run_fwd(&qkv, d, None));
    }

    fn gradient_check(d: QkvDims, window: Option<usize>) {
        let qkv = random_vec(d.batch * d.seq * d.qkv_dim(), 11, 1.0);
        let probe = random_vec(d.batch * d.seq * d.out_dim(), 12, 1.0);
        let dqkv = run_bwd(&qkv, &probe, d, window);
        let name = format!("attention dqkv {d:?} window {window:?}");
        check_gradient(
            &name,
            &qkv,
            &dqkv,
            |x| dot(&run_fwd(x, d, window).0, &probe),
            qkv.len(),
            1e-2,
            1e-2,
        );
    }

    #[test]
    fn bwd_gradient_check_gqa_sliding_window() {
        gradient_check(dims(2, 11, 4, 2, 8), Some(4));
    }

    #[test]
    fn bwd_gradient_check_full_causal() {
        gradient_check(dims(2, 7, 4, 2, 8), None);
        gradient_check(dims(1, 7, 3, 1, 4), None);
    }

    #[test]
    fn bwd_adds_into_dqkv() {
        let (d, window) = (dims(1, 5, 2, 1, 4), Some(2));
        let qkv = random_vec(d.batch * d.seq * d.qkv_dim(), 21, 1.0);
        let dout = random_vec(d.batch * d.seq * d.out_dim(), 22, 1.0);
        let (out, lse) = run_fwd(&qkv, d, window);
        let fresh = run_bwd(&qkv, &dout, d, window);
        let before = random_vec(qkv.len(), 23, 1.0);
        let mut after = before.clone();
        attention_bwd(&mut after, &dout, &out, &lse, &qkv, d, window);
        for ((a, b), g) in after.iter().zip(&before).zip(&fresh) {
            assert!((a - b - g).abs() < 1e-6, "{a} - {b} != {g}");
        }
    }

    #[test]
    fn results_independent_of_thread_count() {
        let (d, window) = (dims(3, 13, 4, 2, 8), Some(5));
        let qkv = random_vec(d.batch * d.seq * d.qkv_dim(), 31, 1.0);
        let dout = random_vec(d.batch * d.seq * d.out_dim(), 32, 1.0);
        let run = || (run_fwd(&qkv, d, window), run_bwd(&qkv, &dout, d, window));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let serial = pool.install(run);
        let parallel = run();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&serial.0 .0), bits(&parallel.0 .0), "out");
        assert_eq!(bits(&serial.0 .1), bits(&parallel.0 .1), "lse");
        assert_eq!(bits(&serial.1), bits(&parallel.1), "dqkv");
    }
}
