//! The streamed attention's out_proj split by heads (kernels/decode_persistent.cu:
//! PERSIST_GEMV_HEADS; opt-in, SAMBA_PERSIST_ATTENTION=stream-heads).
//!
//! The streamed attention phase (streamed_attention.rs) ends, per kv group, with a count of its B
//! blocks and the last one merging their partial softmaxes: on an H100 ~12 of the phase's ~20 us
//! went there (the partials fenced, the count's round trip, the merge: docs/gpu.md). With the
//! output o = [o_0 | .. | o_{H-1}] of H heads, out_proj's x += W o is the sum over heads of
//! W_h o_h (W_h: W's columns of head h), so out_proj can take the merge instead: block b < H S
//! (S = blocks / H) merges head h = b / S from the partials after the barrier, as its input row,
//! and adds W_h o_h for its S-th of the d rows into the residual with f32 atomics (the H heads'
//! blocks add into the same rows). The attention phase then ends with its partials written; the
//! out_proj block of rows 0 of each kv group's first head stores this token's key and value
//! (after the barrier: a window's ring of window - 1 keys holds, in key p's slot, the oldest key
//! the attention phase reads). W_h's rows are the
//! block's weight rows from a copy of W laid out as [H][d][hd], made when the step is recorded
//! (10.6 MB a layer for Samba-1.3B). The order of out_proj's additions changes from run to run.

use cudarc::driver::DevicePtr;

use super::persistent::adds_into_f32_residual;
use super::streamed_attention::StreamedShape;
use super::CudaModel;
use crate::error::Result;
use crate::ops::pdl::RecordedLaunch;
use crate::{Buffer, Elem};

/// The attention's argument the host sets to 1 when out_proj merges
/// (kernels/persist_streamed_attention.cuh: STREAM_ATT_MERGE_NEXT).
pub(crate) const MERGE_NEXT_ARG: usize = 13;

/// The arguments of a PERSIST_GEMV_HEADS op, in the kernel's order (`PersistDense::heads_*`).
pub(crate) const ARGS: usize = 14;

/// One attention layer whose out_proj can take the merge: the streamed attention, then out_proj
/// of its output (one row, no norm, += into the residual).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadsSite {
    /// The launches' indices in the recording.
    pub attention: usize,
    pub out_proj: usize,
    /// out_proj's weight [d, heads hd] (a device address in the model's parameters).
    pub weight: u64,
    pub residual: u64,
    /// The attention's qkv row, KV cache, position array and cache slots (its arguments 3-6, 10).
    pub qkv: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub pos: u64,
    pub cap: usize,
    pub shape: StreamedShape,
    /// out_proj's outputs (d_model).
    pub d: usize,
}

/// The attention layers whose out_proj can merge, run by `blocks` blocks: out_proj reads the
/// attention's output whole and adds into the f32 residual, and every head has a block.
pub(crate) fn heads_sites(
    launches: &[RecordedLaunch],
    blocks: usize,
    elem: usize,
) -> Vec<HeadsSite> {
    let int = |l: &RecordedLaunch, i: usize| l.args[i] as u32 as usize;
    launches
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| {
            let [attention, out_proj] = w else {
                return None;
            };
            let shape = StreamedShape::of(attention, blocks, elem)?;
            if out_proj.what != "gemv_fwd" || out_proj.args.len() != 13 {
                return None;
            }
            let linked = adds_into_f32_residual(
                out_proj,
                attention.args[0], // the attention's output
                shape.heads * shape.head_dim,
            ) && out_proj.args[0] % 4 == 0
                && shape.heads <= blocks;
            linked.then_some(HeadsSite {
                attention: i,
                out_proj: i + 1,
                weight: out_proj.args[8],
                residual: out_proj.args[0],
                qkv: attention.args[3],
                k_cache: attention.args[4],
                v_cache: attention.args[5],
                pos: attention.args[6],
                cap: int(attention, 10),
                shape,
                d: int(out_proj, 11),
            })
        })
        .collect()
}

/// W [d, heads hd] (row-major) as [heads][d][hd]: row o of head h's block is W[o, h hd..(h + 1) hd].
pub(crate) fn by_heads<T: Copy>(w: &[T], d: usize, heads: usize, hd: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for row in w.chunks_exact(heads * hd).take(d) {
            out.extend_from_slice(&row[h * hd..(h + 1) * hd]);
        }
    }
    out
}

/// The layers whose out_proj is split by heads, and their weights laid out by heads.
pub(crate) struct HeadsOutProj<T: Elem> {
    sites: Vec<HeadsSite>,
    /// [sites][heads][d][hd].
    weights: Buffer<T>,
}

impl<T: Elem> HeadsOutProj<T> {
    /// The copies of `sites`' weights (None if there are none or a weight lies outside the model's
    /// parameters).
    pub fn build(model: &CudaModel<T>, sites: Vec<HeadsSite>) -> Result<Option<HeadsOutProj<T>>> {
        if sites.is_empty() {
            return Ok(None);
        }
        let dev = model.device();
        let mut host = Vec::new();
        for s in &sites {
            let (heads, hd) = (s.shape.heads, s.shape.head_dim);
            let Some(w) = model.download_params_at(s.weight, s.d * heads * hd)? else {
                return Ok(None);
            };
            host.extend(by_heads(&w, s.d, heads, hd));
        }
        Ok(Some(HeadsOutProj {
            weights: dev.upload(&host)?,
            sites,
        }))
    }

    pub fn sites(&self) -> &[HeadsSite] {
        &self.sites
    }

    /// The arguments of site i's out_proj op (kernels/decode_persistent.cu: `PersistDense::heads_*`):
    /// the residual, the partials, B, H, S, hd, d, the weight by heads, then the attention's qkv
    /// row, KV cache, position, kv heads and cache slots.
    pub fn args(&self, i: usize, partials: u64, blocks: usize) -> [u64; ARGS] {
        let stream = self.weights.stream().clone();
        let (w, _g) = self.weights.device_ptr(&stream);
        let before: usize = self.sites[..i]
            .iter()
            .map(|s| s.d * s.shape.heads * s.shape.head_dim)
            .sum();
        let s = self.sites[i];
        [
            s.residual,
            partials,
            s.shape.splits as u64,
            s.shape.heads as u64,
            (blocks / s.shape.heads) as u64,
            s.shape.head_dim as u64,
            s.d as u64,
            w + (before * size_of::<T>()) as u64,
            s.qkv,
            s.k_cache,
            s.v_cache,
            s.pos,
            s.shape.kv_heads as u64,
            s.cap as u64,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::persistent::residual_gemv;
    use super::*;

    /// Samba-1.3B's attention and out_proj as the fused step records them: output at 0x2000, the
    /// residual at 0x1000, a window of 2048 over a ring of 2047 keys.
    fn layer() -> Vec<RecordedLaunch> {
        vec![
            RecordedLaunch::with_args(
                "attention_decode_fwd",
                &[
                    (0, 0x2000),
                    (3, 0x3000),
                    (6, 0x4000),
                    (7, 18),
                    (8, 18),
                    (9, 128),
                    (10, 2047),
                    (11, 2048),
                ],
                13,
            ),
            residual_gemv(0x1000, 0x2000, 0x9000, 2304, 2304),
        ]
    }

    #[test]
    fn an_attention_then_its_out_proj_is_a_site() {
        let sites = heads_sites(&layer(), 264, 2);
        assert_eq!(sites.len(), 1);
        let s = sites[0];
        assert_eq!(
            (s.attention, s.out_proj, s.weight, s.residual, s.d),
            (0, 1, 0x9000, 0x1000, 2304)
        );
        assert_eq!((s.shape.heads, s.shape.splits), (18, 14));
        assert_eq!((s.qkv, s.pos, s.cap), (0x3000, 0x4000, 2047));
    }

    #[test]
    fn an_out_proj_of_something_else_is_not_a_site() {
        let cases: [(usize, usize, u64); 5] = [
            (1, 3, 0x3333), // reads something else than the attention's output
            (1, 5, 0x5000), // with a norm
            (1, 2, 1),      // stores f32 instead of adding
            (1, 9, 2),      // two rows
            (1, 10, 2048),  // another input length than heads x hd
        ];
        for (which, arg, value) in cases {
            let mut l = layer();
            l[which].args[arg] = value;
            assert!(
                heads_sites(&l, 264, 2).is_empty(),
                "launch {which} arg {arg} = {value:#x}"
            );
        }
    }

    #[test]
    fn the_copy_by_heads_puts_each_heads_columns_together() {
        // W [2, 2 heads x 3]: row o = [h0: o0 o1 o2 | h1: o3 o4 o5]
        let w: Vec<u32> = (0..12).collect();
        assert_eq!(
            by_heads(&w, 2, 2, 3),
            [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11]
        );
    }
}
