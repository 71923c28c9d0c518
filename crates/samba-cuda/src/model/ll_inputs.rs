//! Plain GEMVs read their input as tagged words instead of waiting at the grid barrier after the
//! op that wrote it (an experiment, off: SAMBA_PERSIST_LL=1, or =act for fc2 alone, with the
//! kernels' PERSIST_LL=1; kernels/persist_core.cuh: PERSIST_LL): fc2 the SwiGLU's act, out_proj
//! the scan step's y or the streamed attention's output.
//!
//! In the persistent step every op waits at a grid barrier for the op before it: the last block's
//! release, its count landing, the polls that see it, and then the input's load, each a round
//! trip to L2 (session 11 measured the barriers' waits at ~0.2 ms of the H100's ~1.28 ms step).
//! Here the writer stores each element of its output a second time, as a 32-bit word holding its
//! bf16 bits below a tag that names the op that wrote it, and the GEMV's blocks load the words
//! and load again those whose tag is not yet the one they expect: one round trip when the data
//! are there, as NCCL's low-latency protocol does. The GEMV arrives at its barrier later, with
//! the next op's, so the barrier counts stay the same.
//!
//! What the barrier also ordered is ordered by the data or by the barriers that stay: fc2 adds
//! into the residual only after it read every block's act, which each block wrote after it read
//! the residual for the SwiGLU's RMSNorm; out_proj's residual was last read (by the conv's or the
//! qkv's RMSNorm) before the scan's or the attention's barrier, which stay; the inputs themselves
//! are next written ops later, after other barriers. (The scan and the attention keep their own
//! barriers: the scan's input is a sum of every block's reductions, and the attention's barrier
//! orders its partials, shared between layers.)
//!
//! The words are one buffer of u32 for every site (as the activations are one buffer per kind),
//! as long as the longest input, zeroed when the step is recorded (a tag is never zero) and owned
//! by the recorded step, whose barrier count the tags are made from.

/// The argument of a reader's table row that points at the words, and of a SwiGLU's row (past
/// their kernels' own: gemv_fwd has 13, gemv_swiglu_fwd 12; kernels/persist_core.cuh:
/// PERSIST_LL_ACT).
pub(crate) const LL_IN_ARG: usize = 14;
/// The scan step's and the streamed attention's (past theirs, and the args the host adds:
/// PERSIST_SCAN_* 13, 14, 16, the attention's merge flag 13 and group counters 14;
/// kernels/persist_core.cuh: PERSIST_LL_OUT).
pub(crate) const LL_OUT_ARG: usize = 18;

/// gemv_fwd's arguments read here (kernels/gemv.cu: its entry's order): its input, its norm's
/// residual (0: none), the rows and the input's length.
const GEMV_INPUT: usize = 3;
const GEMV_NORM: usize = 5;
const GEMV_ROWS: usize = 9;
const GEMV_IN: usize = 10;

/// The ops whose output a GEMV may read as tagged words, by their table kind (persistent.rs:
/// OpKind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// gemv_swiglu_fwd: act (arg 0) of `hidden` (arg 10), rows (arg 8).
    Swiglu = 0,
    /// scan_step_fwd: y (arg 0) of d_inner (arg 10).
    Scan = 1,
    /// attention_decode_fwd, as a streamed phase: its output (arg 0), heads (7) x head_dim (9).
    Attention = 2,
}

impl Writer {
    /// Where its output is and its length, from its arguments; None where it is not one row.
    fn output(self, arg: impl Fn(usize) -> u64) -> Option<(u64, usize)> {
        let low = |i: usize| arg(i) as u32 as usize;
        match self {
            Writer::Swiglu => (low(8) == 1).then(|| (arg(0), low(10))),
            Writer::Scan => Some((arg(0), low(10))),
            Writer::Attention => Some((arg(0), low(7) * low(9))),
        }
    }
    /// The argument of its row that points at the words.
    pub fn arg(self) -> usize {
        match self {
            Writer::Swiglu => LL_IN_ARG,
            Writer::Scan | Writer::Attention => LL_OUT_ARG,
        }
    }
}

/// Which writers' readers take the tagged words: SAMBA_PERSIST_LL=1 every kind, =act the SwiGLU
/// alone, with the kernels compiled with PERSIST_LL=1 (in SAMBA_NVRTC_DEFINES: without it the
/// kernel would ignore the words and keep the barriers, and the step would say otherwise); empty
/// otherwise.
pub fn writers() -> Vec<Writer> {
    if !super::persistent::defines_contain("PERSIST_LL=1") {
        return Vec::new();
    }
    match std::env::var("SAMBA_PERSIST_LL").as_deref() {
        Ok("1") => vec![Writer::Swiglu, Writer::Scan, Writer::Attention],
        Ok("act") => vec![Writer::Swiglu],
        _ => Vec::new(),
    }
}

/// Whether any reader takes tagged words (public as `samba_cuda::model::persistent_ll_enabled`,
/// for the tests that check it took).
pub fn enabled() -> bool {
    !writers().is_empty()
}

/// The sites per writer kind (indexed by `Writer as usize`).
pub(crate) fn counts(sites: &[LlSite]) -> [usize; 3] {
    let mut n = [0; 3];
    for s in sites {
        n[s.writer as usize] += 1;
    }
    n
}

/// A GEMV that reads its input as tagged words: its table row, its writer's (the row before it),
/// the writer's kind and the input's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LlSite {
    pub writer_row: usize,
    pub reader_row: usize,
    pub writer: Writer,
    pub len: usize,
}

/// The sites of the table (rows of `op_words` words, the kind in word 0, arguments from word 4):
/// a writer of one of `writers`' kinds (`kind_of` gives each its table kind), then, in the same
/// launch (not at the first row of one: `launch_firsts`), a plain GEMV (`gemv_kind`) of one row
/// reading the writer's output without a norm, its length a multiple of 4 (the kernel loads four
/// words at once).
pub(crate) fn plan(
    table: &[u64],
    op_words: usize,
    launch_firsts: &[usize],
    writers: &[Writer],
    kind_of: impl Fn(Writer) -> u64,
    gemv_kind: u64,
) -> Vec<LlSite> {
    let rows = table.len() / op_words;
    let kind = |row: usize| table[row * op_words];
    let arg = |row: usize, i: usize| table[row * op_words + 4 + i];
    let low = |v: u64| v as u32 as usize;
    (1..rows)
        .filter_map(|reader| {
            let w = reader - 1;
            let writer = *writers.iter().find(|&&k| kind_of(k) == kind(w))?;
            let (out, len) = writer.output(|i| arg(w, i))?;
            let linked = kind(reader) == gemv_kind
                && !launch_firsts.contains(&reader)
                && low(arg(reader, GEMV_ROWS)) == 1
                && arg(reader, GEMV_INPUT) == out
                && out != 0
                && arg(reader, GEMV_NORM) == 0
                && low(arg(reader, GEMV_IN)) == len
                && len > 0
                && len % 4 == 0;
            linked.then_some(LlSite {
                writer_row: w,
                reader_row: reader,
                writer,
                len,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: usize = 24;
    const GEMV: u64 = 2;

    fn kind_of(w: Writer) -> u64 {
        match w {
            Writer::Swiglu => 3,
            Writer::Scan => 6,
            Writer::Attention => 9,
        }
    }

    fn row(kind: u64, args: &[(usize, u64)]) -> Vec<u64> {
        let mut r = vec![0u64; WORDS];
        r[0] = kind;
        for &(i, v) in args {
            r[4 + i] = v;
        }
        r
    }

    /// A GEMV of one row reading `input` [len] and adding into x at 0x1000.
    fn reader(input: u64, len: u64) -> Vec<u64> {
        row(GEMV, &[(0, 0x1000), (2, 2), (3, input), (9, 1), (10, len)])
    }

    /// An MLP: act at 0x2000 (hidden 6144), fc2 adding into x.
    fn mlp() -> Vec<u64> {
        let mut t = row(3, &[(0, 0x2000), (4, 0x1000), (8, 1), (10, 6144)]);
        t.extend(reader(0x2000, 6144));
        t
    }

    /// A scan writing y at 0x3000 (d_inner 4608), then out_proj; an attention writing 0x4000 (18
    /// heads of 128), then out_proj.
    fn mamba_and_attention() -> Vec<u64> {
        let mut t = row(6, &[(0, 0x3000), (10, 4608)]);
        t.extend(reader(0x3000, 4608));
        t.extend(row(9, &[(0, 0x4000), (7, 18), (9, 128)]));
        t.extend(reader(0x4000, 2304));
        t
    }

    const ALL: [Writer; 3] = [Writer::Swiglu, Writer::Scan, Writer::Attention];

    #[test]
    fn gemvs_right_after_their_writers_read_tagged_words() {
        let mut t = row(1, &[]); // an embedding
        t.extend(mlp());
        t.extend(mamba_and_attention());
        let sites = plan(&t, WORDS, &[0], &ALL, kind_of, GEMV);
        let got: Vec<_> = sites
            .iter()
            .map(|s| (s.writer_row, s.reader_row, s.writer, s.len))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2, Writer::Swiglu, 6144),
                (3, 4, Writer::Scan, 4608),
                (5, 6, Writer::Attention, 2304)
            ]
        );
        assert_eq!(counts(&sites), [1, 1, 1]);
        // only the kinds asked for
        let act = plan(&t, WORDS, &[0], &[Writer::Swiglu], kind_of, GEMV);
        assert_eq!(act.len(), 1);
        assert_eq!(act[0].writer, Writer::Swiglu);
        assert_eq!(
            (Writer::Swiglu.arg(), Writer::Scan.arg()),
            (LL_IN_ARG, LL_OUT_ARG)
        );
    }

    #[test]
    fn other_inputs_shapes_norms_and_launch_starts_keep_the_barrier() {
        // (the reader row's argument changed, value)
        let cases: [(usize, u64); 4] = [
            (3, 0x3000), // reads something else than act
            (5, 0x1000), // with a norm
            (9, 2),      // two rows
            (10, 6000),  // another length than hidden
        ];
        assert_eq!(plan(&mlp(), WORDS, &[0], &ALL, kind_of, GEMV).len(), 1);
        for (arg, value) in cases {
            let mut t = mlp();
            t[WORDS + 4 + arg] = value;
            assert!(
                plan(&t, WORDS, &[0], &ALL, kind_of, GEMV).is_empty(),
                "arg {arg} = {value:#x}"
            );
        }
        // the reader at the first row of a launch: the kernel boundary is its barrier
        assert!(plan(&mlp(), WORDS, &[0, 1], &ALL, kind_of, GEMV).is_empty());
        // a SwiGLU of two rows, or of a length not a multiple of 4
        let mut t = mlp();
        t[4 + 8] = 2;
        assert!(plan(&t, WORDS, &[0], &ALL, kind_of, GEMV).is_empty());
        let mut t = mlp();
        t[4 + 10] = 6142;
        t[WORDS + 4 + 10] = 6142;
        assert!(plan(&t, WORDS, &[0], &ALL, kind_of, GEMV).is_empty());
        // an attention whose heads x head_dim is not the reader's length
        let mut t = mamba_and_attention();
        t[2 * WORDS + 4 + 7] = 16;
        assert_eq!(plan(&t, WORDS, &[0], &ALL, kind_of, GEMV).len(), 1);
        // a plain GEMV after a kind that writes no words (a RoPE op)
        let mut t = row(4, &[(0, 0x2000)]);
        t.extend(reader(0x2000, 6144));
        assert!(plan(&t, WORDS, &[0], &ALL, kind_of, GEMV).is_empty());
    }
}
