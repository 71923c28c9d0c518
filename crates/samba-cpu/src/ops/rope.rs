//! Rotary position embedding, GPT-NeoX half-split, over the whole head dim of every q and k head
//! of the fused qkv buffer (v is not rotated), at absolute positions.
//!
//! The cos/sin tables are computed in f32 and rounded to bf16, as the reference does even for
//! f32 models, so its logits are reproduced only with the same rounding. A consequence: a
//! rounded (cos, sin) pair is not exactly a rotation (cos^2 + sin^2 != 1), so [`rope_bwd`] is
//! the transpose of [`rope_fwd`], not its inverse.

use super::attention::QkvDims;
use rayon::prelude::*;

/// cos and sin of angle(pos, i) = pos * theta_i, theta_i = 1 / base^(2i / head_dim), for the
/// absolute positions start..start + len and i in 0..head_dim / 2; both [len, head_dim / 2],
/// rounded to bf16 (stored as f32).
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub head_dim: usize,
    pub start: usize,
    pub len: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

impl RopeTable {
    /// The table for positions start..start + len. Everything is computed in f32 in the
    /// reference's order (theta from an f32 power, angle = pos as f32 * theta, f32 cos and sin),
    /// then cos and sin are rounded to bf16.
    pub fn new(base: f32, head_dim: usize, start: usize, len: usize) -> RopeTable {
        assert!(
            head_dim > 0 && head_dim % 2 == 0,
            "RopeTable: head_dim ({head_dim}) must be even and positive"
        );
        let half = head_dim / 2;
        let theta: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in start..start + len {
            for th in &theta {
                let angle = pos as f32 * th;
                cos.push(round_bf16(angle.cos()));
                sin.push(round_bf16(angle.sin()));
            }
        }
        RopeTable {
            head_dim,
            start,
            len,
            cos,
            sin,
        }
    }

    /// cos table [len, head_dim / 2] (bf16 values in f32).
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// sin table [len, head_dim / 2] (bf16 values in f32).
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }
}

// Forward, for one head x = [x1 | x2] (halves of head_dim) of token t, c = cos[t], s = sin[t]:
//   out1 = x1 * c - x2 * s
//   out2 = x2 * c + x1 * s
// Backward: the Jacobian is [[c, -s], [s, c]] per pair, so the gradient is its transpose
//   dx1 = dout1 * c + dout2 * s
//   dx2 = dout2 * c - dout1 * s
// i.e. the same rotation with sin negated (rotation by -angle).

/// Rotates every head of one token: `sign` = 1 is the forward, -1 the transpose.
fn rotate_row(row: &mut [f32], cos: &[f32], sin: &[f32], dims: QkvDims, sign: f32) {
    let hd = dims.head_dim;
    let half = hd / 2;
    let k_heads = (0..dims.kv_heads).map(|g| dims.k_col(g));
    for col in (0..dims.heads).map(|h| dims.q_col(h)).chain(k_heads) {
        let (x1, x2) = row[col..col + hd].split_at_mut(half);
        for i in 0..half {
            let (c, s) = (cos[i], sign * sin[i]);
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c - b * s;
            x2[i] = b * c + a * s;
        }
    }
}

fn rotate(qkv: &mut [f32], table: &RopeTable, dims: QkvDims, sign: f32, name: &str) {
    dims.assert_valid();
    let QkvDims {
        batch,
        seq,
        head_dim,
        ..
    } = dims;
    assert_eq!(table.head_dim, head_dim, "{name}: table head_dim");
    assert!(
        seq <= table.len,
        "{name}: seq ({seq}) longer than the table ({})",
        table.len
    );
    assert_eq!(qkv.len(), batch * seq * dims.qkv_dim(), "{name}: qkv shape");
    if seq == 0 {
        return;
    }
    let half = head_dim / 2;
    qkv.par_chunks_mut(dims.qkv_dim())
        .enumerate()
        .for_each(|(bt, row)| {
            let t = bt % seq;
            let (cos, sin) = (
                &table.cos[t * half..][..half],
                &table.sin[t * half..][..half],
            );
            rotate_row(row, cos, sin, dims, sign);
        });
}

/// Applies RoPE in place to every q and k head (not v) of `qkv` [batch, seq, qkv_dim]; token t
/// of each sequence is at absolute position `table.start + t` (so seq <= table.len).
pub fn rope_fwd(qkv: &mut [f32], table: &RopeTable, dims: QkvDims) {
    rotate(qkv, table, dims, 1.0, "rope_fwd");
}

/// Backward of [`rope_fwd`]: turns `dqkv` [batch, seq, qkv_dim], the gradient wrt the roped
/// buffer, into the gradient wrt the buffer before RoPE, in place (the transpose rotation on
/// the q and k columns; v columns pass through). Unlike the other backward functions it does
/// not add into a separate output: RoPE runs in place, so its gradient is transformed in place.
pub fn rope_bwd(dqkv: &mut [f32], table: &RopeTable, dims: QkvDims) {
    rotate(dqkv, table, dims, -1.0, "rope_bwd");
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

    fn roped(x: &[f32], table: &RopeTable, d: QkvDims) -> Vec<f32> {
        let mut y = x.to_vec();
        rope_fwd(&mut y, table, d);
        y
    }

    #[test]
    fn hand_computed_position_one() {
        // head_dim 4, base 10000: theta = [1, 10000^(-1/2) = 0.01]; at position 1
        //   cos(1)    = 0.5403..   -> bf16 0.5390625      = 69 / 128
        //   sin(1)    = 0.8414..   -> bf16 0.83984375     = 215 / 256
        //   cos(0.01) = 0.99995..  -> bf16 1
        //   sin(0.01) = 0.0099998. -> bf16 0.010009765625 = 41 / 4096
        let (c0, s0, c1, s1) = (69.0 / 128.0, 215.0 / 256.0, 1.0, 41.0 / 4096.0);
        let table = RopeTable::new(10000.0, 4, 1, 1);
        assert_eq!(table.cos(), [c0, c1]);
        assert_eq!(table.sin(), [s0, s1]);
        // One token, one q head, k and v, each x = [1, 2 | 3, 4]:
        //   out1 = x1 c - x2 s = [-1.98046875, 1.9599609375]
        //   out2 = x2 c + x1 s = [2.45703125, 4.02001953125]
        // (all exact in f32: the bf16 tables have 8-bit mantissas).
        let d = dims(1, 1, 1, 1, 4);
        let x = [1.0, 2.0, 3.0, 4.0].repeat(3);
        let y = roped(&x, &table, d);
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        assert_eq!(
            want.map(f64::from),
            [-1.98046875, 1.9599609375, 2.45703125, 4.02001953125]
        );
        assert_eq!(y[..4], want, "q head");
        assert_eq!(y[4..8], want, "k head");
        assert_eq!(y[8..], x[8..], "v must not be rotated");
    }

    #[test]
    fn position_zero_is_identity() {
        let d = dims(1, 1, 2, 2, 8);
        let x = random_vec(d.qkv_dim(), 5, 1.0);
        assert_eq!(roped(&x, &RopeTable::new(10000.0, 8, 0, 1), d), x);
    }

    #[test]
    fn v_columns_untouched() {
        let d = dims(2, 5, 4, 2, 8);
        let table = RopeTable::new(10000.0, 8, 3, 5);
        let x = random_vec(d.batch * d.seq * d.qkv_dim(), 1, 1.0);
        let y = roped(&x, &table, d);
        for (xr, yr) in x.chunks(d.qkv_dim()).zip(y.chunks(d.qkv_dim())) {
            for g in 0..d.kv_heads {
                let v = d.v_col(g)..d.v_col(g) + d.head_dim;
                assert_eq!(xr[v.clone()], yr[v]);
            }
            for h in 0..d.heads {
                let q = d.q_col(h)..d.q_col(h) + d.head_dim;
                assert_ne!(xr[q.clone()], yr[q], "q head {h} was not rotated");
            }
        }
    }

    #[test]
    fn bwd_is_transpose_of_fwd() {
        // <rope_fwd(x), g> == <x, rope_bwd(g)>
        let d = dims(2, 6, 4, 2, 8);
        let table = RopeTable::new(10000.0, 8, 2, 9);
        let x = random_vec(d.batch * d.seq * d.qkv_dim(), 2, 1.0);
        let g = random_vec(x.len(), 3, 1.0);
        let mut gx = g.clone();
        rope_bwd(&mut gx, &table, d);
        let (lhs, rhs) = (dot(&roped(&x, &table, d), &g), dot(&x, &gx));
        assert!(
            (lhs - rhs).abs() < 1e-5 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn bwd_gradient_check() {
        let d = dims(2, 5, 3, 1, 6);
        let table = RopeTable::new(10000.0, 6, 7, 5);
        let x = random_vec(d.batch * d.seq * d.qkv_dim(), 4, 1.0);
        let probe = random_vec(x.len(), 5, 1.0);
        let mut grad = probe.clone();
        rope_bwd(&mut grad, &table, d);
        check_gradient(
            "rope dqkv",
            &x,
            &grad,
            |x| dot(&roped(x, &table, d), &probe),
            x.len(),
            1e-2,
            1e-3,
        );
    }

    #[test]
    fn start_offset_matches_slice_of_table_from_zero() {
        // Tokens at positions 5..9 roped with a table starting at 5 equal the last 4 tokens of
        // positions 0..9 roped with a table starting at 0.
        let (start, seq) = (5, 4);
        let long = dims(1, start + seq, 2, 1, 8);
        let short = QkvDims { seq, ..long };
        let x = random_vec(long.seq * long.qkv_dim(), 6, 1.0);
        let y_long = roped(&x, &RopeTable::new(10000.0, 8, 0, start + seq), long);
        let tail = start * long.qkv_dim();
        let y_short = roped(&x[tail..], &RopeTable::new(10000.0, 8, start, seq), short);
        assert_eq!(y_long[tail..], y_short);
        // A table longer than seq is fine: only its first seq rows are used.
        let y_short = roped(
            &x[tail..],
            &RopeTable::new(10000.0, 8, start, seq + 3),
            short,
        );
        assert_eq!(y_long[tail..], y_short);
    }
}
