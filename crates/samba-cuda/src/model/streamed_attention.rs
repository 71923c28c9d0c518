//! The decoding attention as a phase of the persistent step, its keys and values streamed
//! through the ring (kernels/persist_streamed_attention.cuh: `StreamedAttention`; the default,
//! SAMBA_PERSIST_ATTENTION=own runs it as a kernel of its own instead). Its first version was
//! correct on the H200 but slower than the kernel of its own; the second (session 7) was correct
//! on an H100 and faster there (1.339 against 1.372 ms); with the warp path (session 8) it was
//! correct on two other H100s and slower there (1.460 against 1.350 ms), which session 9 traced to
//! the ring's place in shared memory: 64 bytes past a 128-byte boundary in the streamed entries.
//! With the ring aligned it is the fastest (1.314 against 1.333 ms, the same H100: docs/gpu.md).
//! With SAMBA_PERSIST_ATTENTION=stream-heads its out_proj takes its merge (heads_out_proj.rs).
//!
//! As a kernel of its own between two persistent launches, the decoding attention costs
//! Samba-1.3B's step ~22 us per attention layer (the kernel, the persistent kernel's tail and its
//! relaunch: docs/gpu.md). As a phase, block b < kv_heads B takes kv group b / B and the
//! (b % B)-th of B ranges of the keys, every query head of the group; its producer streams the
//! range's cached keys and values into the ring before the barrier (they do not depend on the
//! token), and the group's last block merges the B partial softmaxes. This file decides which
//! recorded attention launches can run so and what they need: B, a partials buffer for B ranges
//! per head, and scratch in the input row's shared memory.

use super::persistent::CONSUMER_WARPS;
use crate::ops::pdl::RecordedLaunch;

/// Keys per stage at most, and a stage's K and V rows at most
/// (kernels/persist_streamed_attention.cuh: STREAM_ATT_MAX_KEYS, STREAM_ATT_STAGE_BYTES).
pub(crate) const MAX_KEYS: usize = 64;
pub(crate) const STAGE_BYTES: usize = 16384;

/// Arguments of attention_decode_fwd the host reads or sets (kernels/attention_decode.cu: its
/// entry's order): the partials buffer, the position array, and n_split (here B).
pub(crate) const PARTIALS_ARG: usize = 1;
pub(crate) const POS_ARG: usize = 6;
pub(crate) const SPLITS_ARG: usize = 12;

/// What a streamed attention op needs, from its recorded attention_decode_fwd launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamedShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// B: the blocks per kv group, each one range of the keys.
    pub splits: usize,
}

impl StreamedShape {
    /// The shape of a recorded attention_decode_fwd launch run by `blocks` blocks, if the ring
    /// attention can take it: batch 1, whole 16-byte rows of keys, a block per kv group at least.
    pub fn of(l: &RecordedLaunch, blocks: usize, elem: usize) -> Option<StreamedShape> {
        if l.what != "attention_decode_fwd" || l.args.len() != 13 || l.grid.2 != 1 {
            return None;
        }
        let arg = |i: usize| l.args[i] as u32 as usize;
        let (heads, kv_heads, head_dim) = (arg(7), arg(8), arg(9));
        let fits = kv_heads > 0
            && heads % kv_heads == 0
            && head_dim > 0
            && (head_dim * elem) % 16 == 0
            && kv_heads <= blocks;
        fits.then_some(StreamedShape {
            heads,
            kv_heads,
            head_dim,
            splits: blocks / kv_heads,
        })
    }

    /// Keys of one stage: K and V rows of at most STAGE_BYTES together, MAX_KEYS at most
    /// (kernels/persist_streamed_attention.cuh: `StreamedAttention::keys_per_stage`).
    pub fn keys_per_stage(&self, elem: usize) -> usize {
        (STAGE_BYTES / (2 * self.head_dim * elem)).clamp(1, MAX_KEYS)
    }

    /// Bytes of the largest stage (the ring must hold one).
    pub fn stage_bytes(&self, elem: usize) -> usize {
        2 * self.keys_per_stage(elem) * self.head_dim * elem
    }

    /// f32 scratch in the input row's shared memory: qkv's row of the group [(qpg + 2) hd], then
    /// the larger of the block path's acc [qpg hd], scores [qpg keys], m, l and alpha [qpg] and
    /// the warp path's per-warp states [warps (hd + 2)], then the merge's weights and l's [B]
    /// (kernels/persist_streamed_attention.cuh: `stream_att_scratch_floats`).
    pub fn scratch_floats(&self, elem: usize) -> usize {
        let qpg = self.heads / self.kv_heads;
        let hd = self.head_dim;
        let block_path = qpg * hd + qpg * self.keys_per_stage(elem) + 3 * qpg;
        let warp_path = CONSUMER_WARPS * (hd + 2);
        (qpg + 2) * hd + block_path.max(warp_path) + 2 * self.splits
    }

    /// f32 elements of the partials [heads, B, hd + 2].
    pub fn partials(&self) -> usize {
        self.heads * self.splits * (self.head_dim + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attention(heads: u64, kv_heads: u64, hd: u64, batch: u32) -> RecordedLaunch {
        let mut args = vec![0u64; 13];
        args[7] = heads;
        args[8] = kv_heads;
        args[9] = hd;
        RecordedLaunch {
            what: "attention_decode_fwd",
            grid: (4, heads as u32, batch),
            block: (128, 1, 1),
            shared_mem_bytes: 0,
            args,
        }
    }

    #[test]
    fn samba_1_3b_splits_each_head_over_14_blocks() {
        let s = StreamedShape::of(&attention(18, 18, 128, 1), 264, 2).expect("fits");
        assert_eq!(s.splits, 14);
        // 16 KB stages of K and V rows of 256 bytes: 32 keys
        assert_eq!(s.keys_per_stage(2), 32);
        assert_eq!(s.stage_bytes(2), 16384);
        // qkv's row, then the warp path's four states (larger than the block path's 163 floats)
        assert_eq!(s.scratch_floats(2), 3 * 128 + 4 * 130 + 2 * 14);
        assert_eq!(s.partials(), 18 * 14 * 130);
    }

    #[test]
    fn grouped_heads_share_a_block_and_small_heads_cap_the_stage() {
        // 4 query heads per kv group, head dim 8 in bf16: 16-byte rows, 512 would fit a stage
        let s = StreamedShape::of(&attention(8, 2, 8, 1), 264, 2).expect("fits");
        assert_eq!(s.splits, 132);
        assert_eq!(s.keys_per_stage(2), MAX_KEYS);
        assert_eq!(s.stage_bytes(2), 2 * 64 * 16);
        assert_eq!(s.scratch_floats(2), 10 * 8 + 4 * 64 + 3 * 4 + 2 * 132);
    }

    #[test]
    fn launches_it_cannot_take_stay_kernels() {
        assert_eq!(StreamedShape::of(&attention(4, 4, 128, 2), 264, 2), None); // batch 2
        assert_eq!(StreamedShape::of(&attention(4, 4, 4, 1), 264, 2), None); // 8-byte rows
        assert_eq!(StreamedShape::of(&attention(6, 4, 64, 1), 264, 2), None); // 6 heads over 4 groups
        assert_eq!(StreamedShape::of(&attention(8, 8, 64, 1), 4, 2), None); // fewer blocks than groups
        let mut other = attention(4, 4, 64, 1);
        other.what = "gemv_fwd";
        assert_eq!(StreamedShape::of(&other, 264, 2), None);
    }
}
