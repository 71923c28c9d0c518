//! The streamed attention started per kv group instead of at a grid barrier (an experiment, off:
//! SAMBA_PERSIST_ATT_READY=1 with the kernel's STREAM_ATT_READY=1).
//!
//! The streamed attention phase (streamed_attention.rs) waits at the grid barrier after the qkv +
//! RoPE phase, i.e. for every block of that phase, though kv group g's blocks read only group g's
//! rows of qkv, written by the few blocks whose share of RoPE units meets them. With this, each
//! block of the RoPE phase adds one to a counter of every group its units meet (a release), and
//! the attention's blocks of group g arrive at the barrier without waiting for it and wait
//! instead until group g's counter reaches its contributors times the steps so far (an acquire).
//! So a group starts as soon as its own rows are written, not when the phase's last block is done
//! (the timelines: the qkv + RoPE phase's last block ~1.9 us after its first, and the attention
//! staged its qkv row ~3 us after the barrier: docs/gpu.md, session 11).
//!
//! One buffer of u64 holds, per streamed attention op with its RoPE op right before it, the
//! counters of its kv groups (COUNTER_STRIDE words apart) and then their contributors (the host counts the RoPE blocks whose
//! share meets each group, the kernel's share rule: units [b n / G, (b + 1) n / G)). The counters
//! only grow (one step adds each group's contributors), so nothing is reset between steps. An
//! attention whose qkv is a plain GEMV (NoPE) keeps the grid barrier. (A step whose launches
//! failed part way, after a RoPE op ran, would leave its counters a step ahead and the next
//! steps' attention unsynchronised; a failed launch leaves the CUDA context unusable anyway, and
//! this is an experiment.)

/// The RoPE row's argument that points at the attention's counters, and the attention row's
/// (kernels/decode_persistent.cu: PERSIST_ROPE_READY; persist_streamed_attention.cuh:
/// STREAM_ATT_READY_ARG). Both are past their kernels' own arguments (gemv_rope_fwd has 17,
/// attention_decode_fwd 13 and the merge's flag).
pub(crate) const ROPE_READY_ARG: usize = 17;
pub(crate) const ATTENTION_READY_ARG: usize = 14;

/// gemv_rope_fwd's arguments read here (kernels/gemv.cu: its entry's order): the qkv row it
/// writes, head_dim, q heads per kv group, and the qkv row's length (rows: its units are pairs).
const ROPE_QKV: usize = 0;
const ROPE_HEAD_DIM: usize = 5;
const ROPE_Q_PER_KV: usize = 6;
const ROPE_ROWS: usize = 15;
/// attention_decode_fwd's: the qkv row it reads, the heads, the kv heads and head_dim.
const ATTENTION_QKV: usize = 3;
const ATTENTION_HEADS: usize = 7;
const ATTENTION_KV_HEADS: usize = 8;
const ATTENTION_HEAD_DIM: usize = 9;

/// Words from one group's counter to the next: each on a 128-byte line of its own, apart from the
/// lines the other groups' blocks add to and poll (kernels/persist_streamed_attention.cuh:
/// STREAM_ATT_READY_STRIDE).
pub(crate) const COUNTER_STRIDE: usize = 16;

/// SAMBA_PERSIST_ATT_READY=1 with the kernels compiled with STREAM_ATT_READY=1 (in
/// SAMBA_NVRTC_DEFINES): without the define the kernel would ignore the counters and keep the
/// barrier, and the step would say otherwise. (Public as
/// `samba_cuda::model::persistent_attention_ready_enabled`, for the tests that check it took.)
pub fn enabled() -> bool {
    super::persistent::switch_with_define("SAMBA_PERSIST_ATT_READY", "STREAM_ATT_READY=1")
}

/// A streamed attention op the counters serve: its table row, the RoPE op's row right before it,
/// and where its counters start in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadySite {
    pub attention_row: usize,
    pub rope_row: usize,
    pub offset: usize,
}

/// The RoPE blocks, of `blocks`, whose share of `units` units meets each of the `groups` groups
/// of `per_group` units (a block with no units meets none): the count the kernel's blocks add up to
/// in one step.
pub(crate) fn contributors(
    units: usize,
    blocks: usize,
    groups: usize,
    per_group: usize,
) -> Vec<u64> {
    let mut count = vec![0u64; groups];
    for b in 0..blocks {
        let (u0, u1) = (b * units / blocks, (b + 1) * units / blocks);
        if u1 == u0 {
            continue;
        }
        let (g0, g1) = (u0 / per_group, ((u1 - 1) / per_group).min(groups - 1));
        for c in &mut count[g0..=g1] {
            *c += 1;
        }
    }
    count
}

/// The sites of the table (rows of OP_WORDS words, arguments from word 4) and the buffer's
/// contents (zeroed counters, then the contributors, per site), for the streamed attention rows
/// given; None if no attention row has its RoPE op right before it with the same qkv row.
pub(crate) fn plan(
    table: &[u64],
    op_words: usize,
    attention_rows: &[usize],
    rope_kind: u64,
    blocks: usize,
) -> Option<(Vec<ReadySite>, Vec<u64>)> {
    let arg = |row: usize, i: usize| table[row * op_words + 4 + i];
    let mut sites = Vec::new();
    let mut words = Vec::new();
    for &row in attention_rows {
        let Some(rope) = row.checked_sub(1) else {
            continue;
        };
        if table[rope * op_words] != rope_kind || arg(rope, ROPE_QKV) != arg(row, ATTENTION_QKV) {
            continue;
        }
        let low = |v: u64| v as u32 as usize;
        let (hd, qpg, rows) = (
            low(arg(rope, ROPE_HEAD_DIM)),
            low(arg(rope, ROPE_Q_PER_KV)),
            low(arg(rope, ROPE_ROWS)),
        );
        let (heads, groups) = (
            low(arg(row, ATTENTION_HEADS)),
            low(arg(row, ATTENTION_KV_HEADS)),
        );
        let per_group = (qpg + 2) * hd / 2;
        // (the attention's shape is the RoPE op's: its groups' rows are the units counted)
        let same = groups > 0
            && hd == low(arg(row, ATTENTION_HEAD_DIM))
            && heads == qpg * groups
            && per_group > 0
            && groups * per_group == rows / 2;
        if !same {
            continue;
        }
        sites.push(ReadySite {
            attention_row: row,
            rope_row: rope,
            offset: words.len(),
        });
        words.extend(std::iter::repeat_n(0, groups * COUNTER_STRIDE));
        words.extend(contributors(rows / 2, blocks, groups, per_group));
    }
    (!sites.is_empty()).then_some((sites, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's rule, unit by unit: block b meets group g when one of its units is g's.
    fn brute(units: usize, blocks: usize, groups: usize, per_group: usize) -> Vec<u64> {
        (0..groups)
            .map(|g| {
                (0..blocks)
                    .filter(|&b| {
                        (b * units / blocks..(b + 1) * units / blocks).any(|u| u / per_group == g)
                    })
                    .count() as u64
            })
            .collect()
    }

    #[test]
    fn contributors_match_the_blocks_units() {
        // Samba-1.3B (18 kv groups of 3 heads' rows of 128: 192 pairs), tiny shapes, more
        // blocks than units
        for &(blocks, groups, per_group) in &[
            (264, 18, 192),
            (264, 2, 96),
            (7, 3, 5),
            (300, 2, 8),
            (132, 4, 64),
        ] {
            let units = groups * per_group;
            let c = contributors(units, blocks, groups, per_group);
            assert_eq!(
                c,
                brute(units, blocks, groups, per_group),
                "{blocks} blocks, {groups} x {per_group}"
            );
            // every block with units meets one group at least
            let with_units = (0..blocks)
                .filter(|&b| (b + 1) * units / blocks > b * units / blocks)
                .count();
            assert!(c.iter().sum::<u64>() >= with_units as u64);
        }
    }

    #[test]
    fn plan_takes_attention_rows_after_their_rope() {
        const W: usize = 24;
        const ROPE: u64 = 4;
        // row 0: RoPE of qkv 0x1000 (head_dim 4, 1 q head a group, 2 groups: 24 rows, 12 pairs);
        // row 1: attention on 0x1000 (2 kv heads); row 2: a GEMV; row 3: attention on another qkv
        let mut table = vec![0u64; 4 * W];
        table[0] = ROPE;
        table[4 + ROPE_QKV] = 0x1000;
        table[4 + ROPE_HEAD_DIM] = 4;
        table[4 + ROPE_Q_PER_KV] = 1;
        table[4 + ROPE_ROWS] = 24;
        table[W] = 9;
        table[W + 4 + ATTENTION_QKV] = 0x1000;
        table[W + 4 + ATTENTION_HEADS] = 2;
        table[W + 4 + ATTENTION_KV_HEADS] = 2;
        table[W + 4 + ATTENTION_HEAD_DIM] = 4;
        table[2 * W] = 2;
        table[3 * W] = 9;
        table[3 * W + 4 + ATTENTION_QKV] = 0x2000;
        table[3 * W + 4 + ATTENTION_KV_HEADS] = 2;
        let (sites, words) = plan(&table, W, &[1, 3], ROPE, 4).expect("row 1 has its RoPE");
        assert_eq!(
            sites,
            vec![ReadySite {
                attention_row: 1,
                rope_row: 0,
                offset: 0
            }]
        );
        // 12 pairs over 4 blocks: [0,3) [3,6) [6,9) [9,12); groups of 6: blocks 0,1 | 2,3
        let mut want = vec![0; 2 * COUNTER_STRIDE];
        want.extend([2, 2]);
        assert_eq!(words, want);
        // an attention of another head_dim, or another length of qkv: not taken
        table[W + 4 + ATTENTION_HEAD_DIM] = 8;
        assert!(plan(&table, W, &[1, 3], ROPE, 4).is_none());
        table[W + 4 + ATTENTION_HEAD_DIM] = 4;
        table[4 + ROPE_ROWS] = 26;
        assert!(plan(&table, W, &[1, 3], ROPE, 4).is_none());
    }
}
