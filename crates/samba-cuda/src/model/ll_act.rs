//! fc2 reads the SwiGLU's act as tagged words instead of waiting at the grid barrier between the
//! two phases (an experiment, off: SAMBA_PERSIST_LL=1 with the kernels' PERSIST_LL=1;
//! kernels/persist_core.cuh: PERSIST_LL).
//!
//! In the persistent step every op waits at a grid barrier for the op before it: the last block's
//! release, its count landing, the polls that see it, and then the input's load, each a round
//! trip to L2 (session 11 measured the barriers' waits at ~0.2 ms of the H100's ~1.28 ms step).
//! Here the SwiGLU stores each element of act a second time, as a 32-bit word holding its bf16
//! bits below a tag that names the op that wrote it, and fc2's blocks load the words and load
//! again those whose tag is not yet the one they expect: one round trip when the data are there,
//! as NCCL's low-latency protocol does. fc2 arrives at its barrier later, with the next op's, so
//! the barrier counts stay the same.
//!
//! What the barrier also ordered is ordered by the data: fc2 adds into the residual only after
//! it read every block's act, which each block wrote after it read the residual for the SwiGLU's
//! RMSNorm; act itself is next written by the next MLP's SwiGLU, after other ops' barriers.
//!
//! The words are one buffer of u32 for every MLP (act is one buffer too), zeroed when the step is
//! recorded (a tag is never zero) and owned by the recorded step, whose barrier count the tags
//! are made from.

/// The argument of the SwiGLU's and fc2's table rows that points at the words (past their
/// kernels' own: gemv_swiglu_fwd has 12, gemv_fwd 13; kernels/persist_core.cuh: PERSIST_LL_ACT).
pub(crate) const LL_ACT_ARG: usize = 14;

/// gemv_swiglu_fwd's arguments read here (kernels/gemv.cu: its entry's order): act, the rows and
/// the hidden units.
const SWIGLU_ACT: usize = 0;
const SWIGLU_ROWS: usize = 8;
const SWIGLU_HIDDEN: usize = 10;
/// gemv_fwd's: its input, its norm's residual (0: none), the rows and the input's length.
const GEMV_INPUT: usize = 3;
const GEMV_NORM: usize = 5;
const GEMV_ROWS: usize = 9;
const GEMV_IN: usize = 10;

/// SAMBA_PERSIST_LL=1 with the kernels compiled with PERSIST_LL=1 (in SAMBA_NVRTC_DEFINES):
/// without the define the kernel would ignore the words and keep the barrier, and the step would
/// say otherwise. (Public as `samba_cuda::model::persistent_ll_enabled`, for the tests that check
/// it took.)
pub fn enabled() -> bool {
    super::persistent::switch_with_define("SAMBA_PERSIST_LL", "PERSIST_LL=1")
}

/// An MLP whose fc2 reads the tagged act: the two table rows and act's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LlSite {
    pub swiglu_row: usize,
    pub fc2_row: usize,
    pub hidden: usize,
}

/// The MLPs of the table (rows of `op_words` words, the kind in word 0, arguments from word 4)
/// whose fc2 can read the tagged act: a SwiGLU of one row, then, in the same launch (not at the
/// first row of one: `launch_firsts`), a plain GEMV of one row reading its act without a norm,
/// act's length a multiple of 4 (the kernel loads four words at once).
pub(crate) fn plan(
    table: &[u64],
    op_words: usize,
    launch_firsts: &[usize],
    swiglu_kind: u64,
    gemv_kind: u64,
) -> Vec<LlSite> {
    let rows = table.len() / op_words;
    let kind = |row: usize| table[row * op_words];
    let arg = |row: usize, i: usize| table[row * op_words + 4 + i];
    let low = |v: u64| v as u32 as usize;
    (1..rows)
        .filter_map(|fc2| {
            let swiglu = fc2 - 1;
            let hidden = low(arg(swiglu, SWIGLU_HIDDEN));
            let linked = kind(swiglu) == swiglu_kind
                && kind(fc2) == gemv_kind
                && !launch_firsts.contains(&fc2)
                && low(arg(swiglu, SWIGLU_ROWS)) == 1
                && low(arg(fc2, GEMV_ROWS)) == 1
                && arg(fc2, GEMV_INPUT) == arg(swiglu, SWIGLU_ACT)
                && arg(fc2, GEMV_NORM) == 0
                && low(arg(fc2, GEMV_IN)) == hidden
                && hidden > 0
                && hidden % 4 == 0;
            linked.then_some(LlSite {
                swiglu_row: swiglu,
                fc2_row: fc2,
                hidden,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: usize = 24;
    const SWIGLU: u64 = 3;
    const GEMV: u64 = 2;

    fn row(kind: u64, args: &[(usize, u64)]) -> Vec<u64> {
        let mut r = vec![0u64; WORDS];
        r[0] = kind;
        for &(i, v) in args {
            r[4 + i] = v;
        }
        r
    }

    /// An MLP: act at 0x2000 (hidden 6144), fc2 adding into x at 0x1000.
    fn mlp() -> Vec<u64> {
        let mut t = row(SWIGLU, &[(0, 0x2000), (4, 0x1000), (8, 1), (10, 6144)]);
        t.extend(row(
            GEMV,
            &[(0, 0x1000), (2, 2), (3, 0x2000), (9, 1), (10, 6144)],
        ));
        t
    }

    #[test]
    fn fc2_right_after_its_swiglu_reads_the_tagged_act() {
        let mut t = row(1, &[]); // an embedding
        t.extend(mlp());
        t.extend(row(4, &[])); // a RoPE op
        t.extend(mlp());
        let sites = plan(&t, WORDS, &[0], SWIGLU, GEMV);
        assert_eq!(
            sites,
            vec![
                LlSite {
                    swiglu_row: 1,
                    fc2_row: 2,
                    hidden: 6144
                },
                LlSite {
                    swiglu_row: 4,
                    fc2_row: 5,
                    hidden: 6144
                }
            ]
        );
    }

    #[test]
    fn other_inputs_shapes_norms_and_launch_starts_keep_the_barrier() {
        // (the fc2 row's argument changed, value)
        let cases: [(usize, u64); 5] = [
            (3, 0x3000), // reads something else than act
            (5, 0x1000), // with a norm
            (9, 2),      // two rows
            (10, 6000),  // another length than hidden
            (0, 0x2000), // (unchanged shape: the control, see below)
        ];
        for (arg, value) in cases {
            let mut t = mlp();
            t[WORDS + 4 + arg] = value;
            let expect = usize::from(arg == 0);
            assert_eq!(
                plan(&t, WORDS, &[0], SWIGLU, GEMV).len(),
                expect,
                "arg {arg} = {value:#x}"
            );
        }
        // fc2 at the first row of a launch: the kernel boundary is its barrier
        assert!(plan(&mlp(), WORDS, &[0, 1], SWIGLU, GEMV).is_empty());
        // a SwiGLU of two rows, or of a length not a multiple of 4
        let mut t = mlp();
        t[4 + 8] = 2;
        assert!(plan(&t, WORDS, &[0], SWIGLU, GEMV).is_empty());
        let mut t = mlp();
        t[4 + 10] = 6142;
        t[WORDS + 4 + 10] = 6142;
        assert!(plan(&t, WORDS, &[0], SWIGLU, GEMV).is_empty());
        // a plain GEMV after another kind
        let mut t = row(4, &[(0, 0x2000)]);
        t.extend(row(GEMV, &[(3, 0x2000), (9, 1), (10, 6144)]));
        assert!(plan(&t, WORDS, &[0], SWIGLU, GEMV).is_empty());
    }
}
