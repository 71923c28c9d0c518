//! The decoding step as persistent kernels (kernels/decode_persistent.cu): the fused step's
//! ~100 kernels run as phases of a grid resident on every SM, separated by grid-wide barriers
//! instead of kernel boundaries. In each block a producer warp streams the block's share of every
//! dense layer's weights into a ring of shared memory with bulk copies, as far ahead as the ring
//! has room, across the barriers (weights do not depend on the token); four consumer warps wait
//! at the barriers and compute. So the DRAM keeps streaming while the phases' dependent work (the
//! barrier, the input row, the epilogue) runs. The decoding attention runs as a phase too, its
//! keys streamed through the ring (streamed_attention.rs), so Samba-1.3B's step is two persistent
//! launches instead of 102 kernels (SAMBA_PERSIST_ATTENTION=own runs each attention as a kernel of
//! its own between two persistent launches instead: 10 launches and 9 attention kernels).
//!
//! The table of phases is recorded, not written by hand: the fused step (fused.rs) runs once with
//! the device recording its launches (ops/pdl.rs) inside a stream capture, so nothing runs. Every
//! launch of the step must be one the persistent kernel knows ([`OpKind`]), with 128-thread
//! blocks and dense layers of one row (batch 1); a step with any other kernel (a sublayer the
//! fused kernels do not cover) leaves a non-empty capture. Either way the decoding step falls back
//! to a CUDA graph of the fused kernels.
//! Where the step allows it, Mamba's x_proj is taken out of the table and folded into in_proj's
//! phase (xproj_fold.rs): one phase less per Mamba layer.
//! Like a captured graph, the table holds the addresses of the activations, the state and the
//! weights, so it serves every later step of the same (activations, state) pair.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{sys, CudaFunction, DevicePtr, LaunchConfig};

use super::attention_ready;
use super::fc2_fold::{fc2_sites, Fc2Fold};
use super::heads_out_proj::{heads_sites, HeadsOutProj, HeadsSite, MERGE_NEXT_ARG};
use super::ll_inputs::{self, Writer};
use super::plan::CudaActivations;
use super::state::CudaDecodeState;
use super::streamed_attention::{StreamedShape, PARTIALS_ARG, POS_ARG, SPLITS_ARG};
use super::xproj_fold::{fold_sites, transposed_stride, XProjFold};
use super::CudaModel;
use crate::compile::{KernelFile, ATTENTION_DECODE, DECODE_PERSISTENT, DECODE_PERSISTENT_HEADS};
use crate::error::{driver, CudaError, Result};
use crate::ops::entry;
use crate::ops::pdl::{self, Args, RecordedLaunch};
use crate::{Buffer, Elem};

/// Threads of a recorded op's block (a virtual block of the persistent kernel), and the producer
/// warp beside the consumer threads (kernels/persist_core.cuh: PERSIST_VBLOCK; the kernel's
/// block size, PERSIST_CONSUMERS + 32, is read from its launch bounds, so a define may change it).
const VBLOCK: u32 = 128;
const PRODUCER: u32 = 32;
/// The most blocks per SM the shared memory is split between: as many as the kernel's registers
/// allow (PERSIST_MIN_BLOCKS, 2 by default: two producers and rings per SM).
const BLOCKS_PER_SM: usize = 4;
/// Arguments an op carries (kernels/persist_core.cuh: PERSIST_MAX_ARGS).
const MAX_ARGS: usize = 20;
const OP_WORDS: usize = 4 + MAX_ARGS;
/// The most ops one persistent launch runs: its table is copied into shared memory at the start
/// (kernels/decode_persistent.cu), so a longer run of ops is cut into several launches.
const MAX_LAUNCH_OPS: usize = 48;
/// A stage's bytes at most, unless one unit is larger (kernels/persist_core.cuh:
/// PERSIST_STAGE_BYTES).
const STAGE_BYTES: usize = 16384;

/// The kernels the persistent step runs, with the number of arguments of each entry point
/// (kernels/persist_core.cuh: PERSIST_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum OpKind {
    Embedding = 1,
    Gemv = 2,
    GemvSwiglu = 3,
    GemvRope = 4,
    GemvConv = 5,
    ScanStep = 6,
    Attention = 7,
    Positions = 8,
    /// The decoding attention as a phase with its keys streamed (streamed_attention.rs):
    /// attention_decode_fwd's
    /// arguments, recorded as Attention and converted.
    StreamedAttention = 9,
    /// The streamed attention's out_proj split by heads, merging its partials
    /// (heads_out_proj.rs): recorded as a GEMV and converted.
    GemvHeads = 10,
}

impl OpKind {
    fn of(what: &str) -> Option<OpKind> {
        Some(match what {
            "embedding_residual_fwd" => OpKind::Embedding,
            "gemv_fwd" => OpKind::Gemv,
            "gemv_swiglu_fwd" => OpKind::GemvSwiglu,
            "gemv_rope_fwd" => OpKind::GemvRope,
            "gemv_conv_fwd" => OpKind::GemvConv,
            "mamba_scan_step_fwd" => OpKind::ScanStep,
            "attention_decode_fwd" => OpKind::Attention,
            "positions_advance" => OpKind::Positions,
            _ => return None,
        })
    }

    fn args(self) -> usize {
        match self {
            OpKind::Embedding => 6,
            OpKind::Gemv => 13,
            OpKind::GemvSwiglu => 12,
            OpKind::GemvRope => 17,
            OpKind::GemvConv => 16,
            OpKind::ScanStep => 13,
            OpKind::Attention => 13,
            OpKind::Positions => 3,
            OpKind::StreamedAttention => 14,
            OpKind::GemvHeads => super::heads_out_proj::ARGS,
        }
    }
}

/// What the ring and the staging need of a dense op (kernels/decode_persistent.cu:
/// `PersistDense`): its input row's length, its units, and weight rows per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DenseShape {
    input: usize,
    units: usize,
    rows_per_unit: usize,
    /// Floats per unit kept after its sums (a SwiGLU's act, which a folded fc2 reads).
    kept_per_unit: usize,
}

impl DenseShape {
    /// The shape of a recorded op (None for the kinds that are not dense layers).
    fn of(kind: OpKind, args: &[u64]) -> Option<DenseShape> {
        let arg = |i: usize| args[i] as u32 as usize;
        let (input, units, rows_per_unit) = match kind {
            OpKind::Gemv => (arg(10), arg(11), 1),
            OpKind::GemvSwiglu => (arg(9), arg(10), 2),
            OpKind::GemvRope => (arg(14), arg(15) / 2, 2),
            OpKind::GemvConv => (arg(14), 2 * arg(5), 1),
            _ => return None,
        };
        Some(DenseShape {
            input,
            units,
            rows_per_unit,
            kept_per_unit: usize::from(kind == OpKind::GemvSwiglu),
        })
    }

    /// `units` units of one row of `input` elements each, keeping nothing after their sums (the
    /// folds' stages, the heads op, the scratch the input row's memory must hold).
    fn rows(input: usize, units: usize) -> DenseShape {
        DenseShape {
            input,
            units,
            rows_per_unit: 1,
            kept_per_unit: 0,
        }
    }

    /// The most units one of `blocks` blocks takes (units [b n / G, (b + 1) n / G)).
    fn units_per_block(&self, blocks: usize) -> usize {
        self.units.div_ceil(blocks)
    }

    /// Units of a chunk of the dynamic pool (kernels/decode_persistent.cu: `PersistDense::chunk`,
    /// compiled in with PERSIST_POOL): a stage's worth, at most a quarter of a block's share.
    fn pool_chunk(&self, elem: usize, blocks: usize) -> usize {
        let fit = (STAGE_BYTES / self.unit_bytes(elem)).max(1);
        fit.min(self.units_per_block(blocks).div_ceil(CONSUMER_WARPS))
            .max(1)
    }

    /// Bytes of one unit in the ring (rows at a 16-byte aligned stride).
    fn unit_bytes(&self, elem: usize) -> usize {
        self.rows_per_unit * (self.input * elem).next_multiple_of(16)
    }

    /// Bytes of the largest stage the producer copies at once (whole units, up to STAGE_BYTES
    /// unless one unit is larger, at most a block's share): the ring must hold one.
    fn stage_bytes(&self, elem: usize, blocks: usize) -> usize {
        let unit = self.unit_bytes(elem);
        unit * (STAGE_BYTES / unit).clamp(1, self.units_per_block(blocks).max(1))
    }
}

/// The ring's alignment in the shared window (kernels/decode_persistent.cu: PERSIST_RING_ALIGN).
const RING_ALIGN: usize = 128;

/// The kernel's dynamic shared memory: the input row, the sums of a block's units, the ring, and
/// the launch's table (`launch_ops` rows at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SharedLayout {
    input_bytes: usize,
    sums: usize,
    ring_bytes: usize,
    table_bytes: usize,
}

impl SharedLayout {
    /// Splits `dynamic` bytes for the dense ops `shapes` run by `blocks` blocks, launches of at
    /// most `launch_ops` ops.
    fn plan(
        shapes: &[DenseShape],
        launch_ops: usize,
        elem: usize,
        blocks: usize,
        dynamic: usize,
    ) -> Result<SharedLayout> {
        let table_bytes = launch_ops * OP_WORDS * size_of::<u64>();
        let input_bytes = shapes
            .iter()
            .map(|d| (d.input * elem).next_multiple_of(16))
            .max()
            .unwrap_or(0);
        // (a block's units and what they keep, or the four consumer warps' chunks of the dynamic
        // pool)
        let sums = shapes
            .iter()
            .map(|d| {
                (d.units_per_block(blocks) * (d.rows_per_unit + d.kept_per_unit))
                    .max(CONSUMER_WARPS * d.pool_chunk(elem, blocks) * d.rows_per_unit)
            })
            .max()
            .unwrap_or(0)
            .next_multiple_of(4);
        let stage = shapes
            .iter()
            .map(|d| d.stage_bytes(elem, blocks))
            .max()
            .unwrap_or(0);
        let ring_bytes = dynamic.saturating_sub(input_bytes + 4 * sums + table_bytes) / 16 * 16;
        let layout = SharedLayout {
            input_bytes,
            sums,
            ring_bytes,
            table_bytes,
        };
        // (a ring smaller than a stage would never have room for it: the producer would wait)
        if layout.usable_ring() < stage.max(16) {
            return Err(unsupported(format!(
                "{dynamic} bytes of shared memory per block leave {} for the weights' ring, less than a stage of {stage} bytes",
                layout.usable_ring()
            )));
        }
        Ok(layout)
    }

    /// The ring's bytes the kernel can use whatever the shared window's offset: it starts the ring
    /// on a RING_ALIGN-byte boundary, up to RING_ALIGN - 16 bytes past where it was.
    fn usable_ring(&self) -> usize {
        self.ring_bytes.saturating_sub(RING_ALIGN - 16)
    }

    fn total(&self) -> usize {
        self.input_bytes + 4 * self.sums + self.ring_bytes + self.table_bytes
    }
}

/// The launches of a step, in order.
enum Segment {
    /// Ops [first, first + count) of the table, as one persistent launch.
    Phases { first: usize, count: usize },
    /// A recorded launch run as its own kernel (the decoding attention).
    Kernel {
        function: CudaFunction,
        cfg: LaunchConfig,
        args: Args,
        what: &'static str,
    },
}

/// Adds op `index` of the table to the last persistent launch, or starts a new one after a kernel
/// of its own or a launch of MAX_LAUNCH_OPS ops.
fn push_op(segments: &mut Vec<Segment>, index: usize) {
    match segments.last_mut() {
        Some(Segment::Phases { count, .. }) if *count < MAX_LAUNCH_OPS => *count += 1,
        _ => segments.push(Segment::Phases {
            first: index,
            count: 1,
        }),
    }
}

/// The op that runs as a kernel of its own between persistent launches where
/// SAMBA_PERSIST_ATTENTION=own, or where an attention launch cannot run as a streamed phase
/// (streamed_attention.rs: `StreamedShape::of`); with SAMBA_PERSIST_ATTENTION=1 the persistent
/// kernel runs its body as virtual blocks, one at a time (the attention's shared arrays serve one).
const OWN_KERNEL: &str = "attention_decode_fwd";

/// Where the decoding attention runs (SAMBA_PERSIST_ATTENTION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttentionPlace {
    /// `own`: a kernel of its own between two persistent launches.
    OwnKernel,
    /// `1`: its kernel's body as virtual blocks (measured slower: its registers spill the dense
    /// phases).
    VirtualBlocks,
    /// The default (or `stream`): a phase with its keys and values streamed through the ring.
    /// The fastest on an H100 since the ring is 128-byte aligned (1.314 against 1.333 ms with
    /// the attention as its own kernel: docs/gpu.md, session 9).
    Streamed,
    /// `stream-heads`: streamed, and its out_proj split by heads takes its merge
    /// (heads_out_proj.rs; measured slower: 1.433 ms).
    StreamedHeads,
}

impl AttentionPlace {
    /// Whether the attention runs as a streamed phase (its entry: decode_persistent_streamed).
    fn streams(self) -> bool {
        matches!(
            self,
            AttentionPlace::Streamed | AttentionPlace::StreamedHeads
        )
    }

    fn from_env() -> Result<AttentionPlace> {
        Self::parse(std::env::var("SAMBA_PERSIST_ATTENTION").ok().as_deref())
    }

    /// SAMBA_PERSIST_ATTENTION's value (unset or empty: the default).
    fn parse(value: Option<&str>) -> Result<AttentionPlace> {
        match value.unwrap_or("") {
            "" | "stream" => Ok(AttentionPlace::Streamed),
            "own" => Ok(AttentionPlace::OwnKernel),
            "1" => Ok(AttentionPlace::VirtualBlocks),
            "stream-heads" => Ok(AttentionPlace::StreamedHeads),
            other => Err(unsupported(format!(
                "SAMBA_PERSIST_ATTENTION={other:?}: expected stream (the default), own, 1 or stream-heads"
            ))),
        }
    }
}

/// The recorded step of one (activations, state) pair, ready to launch.
pub(crate) struct PersistentStep {
    function: CudaFunction,
    /// [ops, OP_WORDS]: kind, grid x, y, z, arguments.
    table: Buffer<u64>,
    segments: Vec<Segment>,
    /// The barrier counter (kernels/persist_core.cuh), never reset: each launch starts
    /// where the last one left it (`barriers` of them so far, per block).
    counter: Buffer<u64>,
    /// The dynamic pool's claim counts, one per table row (kernels/decode_persistent.cu:
    /// `PersistDynamic`, compiled in with PERSIST_POOL), never reset: each step adds the same
    /// amount, and `steps` (the steps run so far) says where a step starts.
    claims: Buffer<u64>,
    steps: u64,
    barriers: u64,
    blocks: u32,
    threads: u32,
    layout: SharedLayout,
    pub state_id: u64,
    pub rope_generation: u64,
    /// Mamba layers whose x_proj runs folded into in_proj's phase (xproj_fold.rs).
    pub folded_layers: usize,
    /// MLPs whose fc2 runs folded into the SwiGLU phase (fc2_fold.rs).
    pub fc2_folded_layers: usize,
    /// Attention layers run as streamed phases (streamed_attention.rs).
    pub streamed_attention_layers: usize,
    /// Attention layers whose out_proj, split by heads, merges them (heads_out_proj.rs).
    pub heads_out_proj_layers: usize,
    /// Streamed attention layers started per kv group (attention_ready.rs).
    pub attention_ready_layers: usize,
    /// The GEMVs that read their input as tagged words, per writer kind (ll_inputs.rs: `counts`).
    pub ll_sites: [usize; 3],
    /// Buffers the table's words point into besides the activations, the state and the weights,
    /// kept alive: the folded x_proj's (an `XProjFold<T>`, T erased), the folded fc2's (an
    /// `Fc2Fold<T>`), the streamed attention's partials and its groups' counters.
    _fold: Option<Box<dyn std::any::Any + Send + Sync>>,
    _fc2_fold: Option<Box<dyn std::any::Any + Send + Sync>>,
    _heads: Option<Box<dyn std::any::Any + Send + Sync>>,
    _attention_partials: Option<Buffer<f32>>,
    _attention_ready: Option<Buffer<u64>>,
    _ll_words: Option<Buffer<u32>>,
}

impl PersistentStep {
    /// Records the fused step of `acts` and `state` (nothing runs, nothing in them changes).
    pub fn record<T: Elem>(
        model: &CudaModel<T>,
        acts: &mut CudaActivations<T>,
        state: &mut CudaDecodeState<T>,
    ) -> Result<PersistentStep> {
        let dev = model.device();
        // The attention as a streamed phase (the default), as a kernel of its own between
        // launches, or as virtual blocks (opt-in: compiled in, its body costs the dense phases
        // registers: kernels/decode_persistent.cu).
        let place = AttentionPlace::from_env()?;
        let name = entry::<T>(match place {
            AttentionPlace::OwnKernel => "decode_persistent",
            AttentionPlace::VirtualBlocks => "decode_persistent_attention",
            _ => "decode_persistent_streamed",
        });
        let file = match place {
            AttentionPlace::StreamedHeads => &DECODE_PERSISTENT_HEADS,
            _ => &DECODE_PERSISTENT,
        };
        let (function, threads, dynamic, blocks) = size_grid(dev, file, &name)?;
        let attention_inside =
            place == AttentionPlace::VirtualBlocks && threads == VBLOCK + PRODUCER;
        let elem = size_of::<T>();
        // Record the fused step inside a stream capture: the recorded launches do not run, and
        // anything else the step launches lands in the capture.
        let stream = dev.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("starting to record the decoding step"))?;
        pdl::start_recording(dev, blocks);
        let ran = model.run(acts, Some(state));
        let recording = pdl::stop_recording(dev);
        let captured = stream.end_capture(CUgraphInstantiate_flags(0));
        ran?;
        if let Some(graph) = captured.map_err(driver("recording the decoding step"))? {
            let work = work_nodes(graph.cu_graph())?;
            if work > 0 {
                return Err(unsupported(format!(
                    "the step launches {work} kernel(s) or copies the persistent kernel does not run (a sublayer the fused kernels do not cover)"
                )));
            }
        }

        let launches = recording.launches;
        let fold = x_proj_fold(model, &launches, blocks)?;
        let fc2 = fc2_fold(model, &launches)?;
        let heads = match place {
            AttentionPlace::StreamedHeads => {
                HeadsOutProj::build(model, heads_sites(&launches, blocks, elem))?
            }
            _ => None,
        };
        let sites: &[HeadsSite] = heads.as_ref().map_or(&[], |h| h.sites());
        // (launch i: an attention that leaves its merge to out_proj; an out_proj taking it)
        let merges_later = |i: usize| sites.iter().any(|s| s.attention == i);
        let out_proj_site = |i: usize| sites.iter().position(|s| s.out_proj == i);
        let mut heads_rows = Vec::new(); // (table row, site) of the out_proj ops split by heads
        let folded = |i: usize| {
            fold.as_ref()
                .is_some_and(|f| f.sites().iter().any(|s| s.x_proj == i))
                || fc2
                    .as_ref()
                    .is_some_and(|f| f.sites().iter().any(|s| s.fc2 == i))
        };
        let mut table = Vec::with_capacity(launches.len() * OP_WORDS);
        let mut row_of = vec![None; launches.len()];
        let mut segments = Vec::new();
        let mut shapes = Vec::new();
        let mut streamed = Vec::new(); // (table row, shape) of the streamed attention ops
        let mut n_ops = 0;
        for (i, l) in launches.into_iter().enumerate() {
            if folded(i) {
                continue;
            }
            let streams = place
                .streams()
                .then(|| StreamedShape::of(&l, blocks, elem))
                .flatten();
            if let Some(shape) = streams {
                let mut row = op_words(&l)?;
                row[0] = OpKind::StreamedAttention as u64;
                row[4 + SPLITS_ARG] = shape.splits as u64;
                row[4 + MERGE_NEXT_ARG] = u64::from(merges_later(i));
                // (the partials' address is set below, once the buffer exists)
                table.extend(row);
                streamed.push((n_ops, shape));
                push_op(&mut segments, n_ops);
                n_ops += 1;
                continue;
            }
            if l.what == OWN_KERNEL && !attention_inside {
                let function = dev.function(&ATTENTION_DECODE, &entry::<T>(OWN_KERNEL), 0)?;
                segments.push(Segment::Kernel {
                    function,
                    cfg: LaunchConfig {
                        grid_dim: l.grid,
                        block_dim: l.block,
                        shared_mem_bytes: l.shared_mem_bytes,
                    },
                    args: Args::from_slots(&l.args),
                    what: l.what,
                });
                continue;
            }
            if let Some(site) = out_proj_site(i) {
                // (its arguments are set below, once the partials exist)
                let mut row = [0u64; OP_WORDS];
                row[..4].copy_from_slice(&[OpKind::GemvHeads as u64, 1, 1, 1]);
                table.extend(row);
                heads_rows.push((n_ops, site));
                push_op(&mut segments, n_ops);
                n_ops += 1;
                continue;
            }
            let rows = rows_arg(l.what).and_then(|i| l.args.get(i));
            if rows.is_some_and(|&r| r != 1) {
                return Err(unsupported(format!(
                    "{} of more than one row: the persistent kernel's dense layers take one (batch 1)",
                    l.what
                )));
            }
            let row = op_words(&l)?;
            shapes.extend(OpKind::of(l.what).and_then(|k| DenseShape::of(k, &row[4..])));
            table.extend(row);
            row_of[i] = Some(n_ops);
            push_op(&mut segments, n_ops);
            n_ops += 1;
        }
        if n_ops == 0 {
            return Err(unsupported("the step recorded no launch".into()));
        }
        // (a fold's words go into the rows of the launches it names)
        let mut set_words = |words: Vec<(usize, usize, u64)>, what: &str| -> Result<()> {
            for (launch, arg, value) in words {
                let row = row_of[launch].ok_or_else(|| {
                    unsupported(format!("{what}'s launch {launch} has no table row"))
                })?;
                table[row * OP_WORDS + 4 + arg] = value;
            }
            Ok(())
        };
        if let Some(fold) = &fold {
            set_words(fold.words(), "the folded x_proj")?;
            // the ring holds a block's rows of x_proj^T as one stage; the scan step's fallback
            // stages x_dbl's row as T where the input row goes
            let site = fold.sites()[0];
            shapes.push(DenseShape::rows(fold.stride(), 2 * site.d_inner));
        }
        if let Some(fc2) = &fc2 {
            set_words(fc2.words(), "the folded fc2")?;
            // the ring holds a stage of fc2^T's rows (whole rows, a block's hidden units at most)
            shapes.push(DenseShape::rows(fc2.stride(), fc2.sites()[0].hidden));
        }
        // The streamed attention ops share one partials buffer (each op's are read by its own
        // merge before the next attention op writes them: barriers apart), and their scratch
        // sits where the input row goes.
        let mut attention_partials = None;
        // (every streamed op reads the same position array: the kernel reads it once per launch)
        let pos_of = |row: usize| table[row * OP_WORDS + 4 + POS_ARG];
        if streamed
            .iter()
            .any(|(row, _)| pos_of(*row) != pos_of(streamed[0].0))
        {
            return Err(unsupported(
                "the streamed attention ops read different position arrays".into(),
            ));
        }
        if let Some(len) = streamed.iter().map(|(_, r)| r.partials()).max() {
            let part = dev.zeros::<f32>(len)?;
            let (part_ptr, guard) = part.device_ptr(dev.stream());
            for (row, shape) in &streamed {
                table[row * OP_WORDS + 4 + PARTIALS_ARG] = part_ptr;
                let scratch = shape.scratch_floats(elem) * size_of::<f32>();
                shapes.push(DenseShape::rows(scratch.div_ceil(elem), 1));
            }
            if let Some(h) = &heads {
                for &(row, site) in &heads_rows {
                    let args = h.args(site, part_ptr, blocks);
                    table[row * OP_WORDS + 4..][..args.len()].copy_from_slice(&args);
                    // the ring holds a stage of its rows (hd elements a row, a block's S-th of
                    // d at most), and the input row o_h and the merge's weights and l's
                    let s = h.sites()[site];
                    let (hd, split) = (s.shape.head_dim, blocks / s.shape.heads);
                    shapes.push(DenseShape::rows(hd, s.d.div_ceil(split) * blocks));
                    shapes.push(DenseShape::rows(
                        ((hd * elem).next_multiple_of(16) + 8 * s.shape.splits).div_ceil(elem),
                        1,
                    ));
                }
            }
            drop(guard);
            attention_partials = Some(part);
        }
        // The streamed attention started per kv group (attention_ready.rs; an experiment)
        let mut attention_ready = None;
        if attention_ready::enabled() {
            let rows: Vec<usize> = streamed.iter().map(|(row, _)| *row).collect();
            if let Some((sites, words)) =
                attention_ready::plan(&table, OP_WORDS, &rows, OpKind::GemvRope as u64, blocks)
            {
                let buf = dev.upload(&words)?;
                let (ptr, guard) = buf.device_ptr(dev.stream());
                for site in &sites {
                    let at = ptr + (site.offset * size_of::<u64>()) as u64;
                    table[site.rope_row * OP_WORDS + 4 + attention_ready::ROPE_READY_ARG] = at;
                    table[site.attention_row * OP_WORDS
                        + 4
                        + attention_ready::ATTENTION_READY_ARG] = at;
                }
                drop(guard);
                attention_ready = Some((buf, sites.len()));
            }
        }
        // GEMVs reading their input as tagged words (ll_inputs.rs; an experiment, bf16 only)
        let mut ll = None;
        let writers = ll_inputs::writers();
        if !writers.is_empty() && elem == 2 {
            let firsts: Vec<usize> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Phases { first, .. } => Some(*first),
                    Segment::Kernel { .. } => None,
                })
                .collect();
            let kind_of = |w: Writer| {
                (match w {
                    Writer::Swiglu => OpKind::GemvSwiglu,
                    Writer::Scan => OpKind::ScanStep,
                    Writer::Attention => OpKind::StreamedAttention,
                }) as u64
            };
            let sites = ll_inputs::plan(
                &table,
                OP_WORDS,
                &firsts,
                &writers,
                kind_of,
                OpKind::Gemv as u64,
            );
            if let Some(len) = sites.iter().map(|s| s.len).max() {
                let buf = dev.zeros::<u32>(len)?;
                let (ptr, guard) = buf.device_ptr(dev.stream());
                for site in &sites {
                    table[site.writer_row * OP_WORDS + 4 + site.writer.arg()] = ptr;
                    table[site.reader_row * OP_WORDS + 4 + ll_inputs::LL_IN_ARG] = ptr;
                }
                drop(guard);
                ll = Some((buf, ll_inputs::counts(&sites)));
            }
        }
        // (every attention that leaves its merge to out_proj ran streamed, before its out_proj)
        let merging = streamed
            .iter()
            .filter(|(row, _)| table[row * OP_WORDS + 4 + MERGE_NEXT_ARG] != 0)
            .count();
        if merging != heads_rows.len() {
            return Err(unsupported(format!(
                "{merging} streamed attention ops leave their merge to out_proj, but {} out_projs take it",
                heads_rows.len()
            )));
        }
        let launch_ops = segments
            .iter()
            .map(|s| match s {
                Segment::Phases { count, .. } => *count,
                Segment::Kernel { .. } => 0,
            })
            .max()
            .unwrap_or(0);
        let layout = SharedLayout::plan(&shapes, launch_ops, size_of::<T>(), blocks, dynamic)?;
        // (the streamed attention's stages too: a ring smaller than one would never have room)
        if let Some(stage) = streamed.iter().map(|(_, r)| r.stage_bytes(elem)).max() {
            if layout.usable_ring() < stage {
                return Err(unsupported(format!(
                    "the ring of {} bytes cannot hold the attention's stage of {stage} bytes",
                    layout.usable_ring()
                )));
            }
        }
        Ok(PersistentStep {
            function,
            table: dev.upload(&table)?,
            segments,
            counter: dev.zeros::<u64>(BARRIER_LINE)?,
            claims: dev.zeros::<u64>(n_ops)?,
            steps: 0,
            barriers: 0,
            blocks: blocks as u32,
            threads,
            layout,
            state_id: state.id,
            rope_generation: state.rope_generation,
            folded_layers: fold.as_ref().map_or(0, |f| f.sites().len()),
            fc2_folded_layers: fc2.as_ref().map_or(0, |f| f.sites().len()),
            streamed_attention_layers: streamed.len(),
            heads_out_proj_layers: heads_rows.len(),
            _fold: fold.map(|f| Box::new(f) as Box<dyn std::any::Any + Send + Sync>),
            _fc2_fold: fc2.map(|f| Box::new(f) as Box<dyn std::any::Any + Send + Sync>),
            _heads: heads.map(|h| Box::new(h) as Box<dyn std::any::Any + Send + Sync>),
            _attention_partials: attention_partials,
            attention_ready_layers: attention_ready.as_ref().map_or(0, |(_, n)| *n),
            _attention_ready: attention_ready.map(|(b, _)| b),
            ll_sites: ll.as_ref().map_or([0; 3], |(_, n)| *n),
            _ll_words: ll.map(|(b, _)| b),
        })
    }

    /// Runs the recorded step once (on the device's stream; the caller uploaded the tokens).
    pub fn launch<T: Elem>(&mut self, model: &CudaModel<T>) -> Result<()> {
        let dev = model.device();
        let s = dev.stream();
        let (t_p, _g0) = self.table.device_ptr(s);
        let (c_p, _g1) = self.counter.device_ptr(s);
        let (claims_p, _g2) = self.claims.device_ptr(s);
        for seg in &self.segments {
            match seg {
                Segment::Phases { first, count } => {
                    let args = Args::new()
                        .ptr(t_p + (first * OP_WORDS * size_of::<u64>()) as u64)
                        .i32(*count as i32)
                        .ptr(c_p)
                        .u64(self.barriers * u64::from(self.blocks))
                        .i32(POLL_NS)
                        .i32(self.layout.input_bytes as i32)
                        .i32(self.layout.sums as i32)
                        .i32(self.layout.ring_bytes as i32)
                        .ptr(claims_p + (first * size_of::<u64>()) as u64)
                        .u64(self.steps);
                    let cfg = LaunchConfig {
                        grid_dim: (self.blocks, 1, 1),
                        block_dim: (self.threads, 1, 1),
                        shared_mem_bytes: self.layout.total() as u32,
                    };
                    // SAFETY: arguments match decode_persistent_<T>(const u64*, int, u64*, u64,
                    // int, int, int, int, u64*, u64), the claims one per table row from
                    // `first`; the shared memory holds the input row, the sums,
                    // the ring as planned for every dense op of the table and the launch's
                    // `count` <= MAX_LAUNCH_OPS table rows after them (SharedLayout::plan);
                    // the table holds `count` ops of OP_WORDS words from `first`, each a
                    // launch of the step whose arguments were checked by its wrapper (ops/*.rs)
                    // and whose buffers live as long as `acts` and the state this step was
                    // recorded with (the caller replays it only for those); the grid is the
                    // resident block count at this shared memory size, as a cooperative launch
                    // needs.
                    unsafe {
                        pdl::launch_cooperative(
                            dev,
                            &self.function,
                            cfg,
                            &args,
                            "decode_persistent",
                        )
                    }?;
                    self.barriers += *count as u64 - 1;
                }
                Segment::Kernel {
                    function,
                    cfg,
                    args,
                    what,
                } => {
                    // SAFETY: the launch as its wrapper (ops/attention.rs) checked and recorded
                    // it, arguments in its entry's order, buffers alive as above.
                    unsafe { pdl::launch(dev, function, *cfg, args, what) }?;
                }
            }
        }
        self.steps += 1;
        Ok(())
    }
}

/// x_proj folded into in_proj's phase (xproj_fold.rs), where the recorded step allows it, unless
/// SAMBA_PERSIST_FOLD=0: the layers whose block share of x_proj^T's rows fits one stage and whose
/// outputs a consumer thread's four each cover (kernels/decode_persistent.cu: PERSIST_FOLD_GROUPS).
fn x_proj_fold<T: Elem>(
    model: &CudaModel<T>,
    launches: &[RecordedLaunch],
    blocks: usize,
) -> Result<Option<XProjFold<T>>> {
    if std::env::var("SAMBA_PERSIST_FOLD").is_ok_and(|v| v == "0") {
        return Ok(None);
    }
    let elem = size_of::<T>();
    let sites = fold_sites(launches)
        .into_iter()
        .filter(|s| {
            // (a block's rows of x_proj^T in one stage, a consumer thread's four outputs at most)
            let per_block = (2 * s.d_inner).div_ceil(blocks);
            per_block * transposed_stride(s.n_out, elem) * elem <= STAGE_BYTES
                && s.n_out <= 4 * 32 * CONSUMER_WARPS
        })
        .collect();
    XProjFold::build(model, sites)
}

/// The MLPs' fc2 folded into their SwiGLU phases (fc2_fold.rs), where the recorded step allows it,
/// with SAMBA_PERSIST_FC2_FOLD=1 (an experiment: the kernels need PERSIST_FC2_FOLD=1 too).
fn fc2_fold<T: Elem>(
    model: &CudaModel<T>,
    launches: &[RecordedLaunch],
) -> Result<Option<Fc2Fold<T>>> {
    if !std::env::var("SAMBA_PERSIST_FC2_FOLD").is_ok_and(|v| v == "1") {
        return Ok(None);
    }
    Fc2Fold::build(model, fc2_sites(launches))
}

/// The persistent kernel, the dynamic shared memory each block gets (the SM's shared memory split
/// between BLOCKS_PER_SM blocks, less what the driver and the kernel's static variables take), and
/// the grid: every block resident at once.
fn size_grid(
    dev: &crate::CudaDevice,
    file: &'static KernelFile,
    name: &str,
) -> Result<(CudaFunction, u32, usize, usize)> {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let ctx = dev.stream().context();
    let attr = |a: A, what: &'static str| -> Result<usize> {
        let v = ctx.attribute(a).map_err(driver(what))?;
        Ok(v.max(0) as usize)
    };
    let per_sm = attr(
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        "reading the shared memory per SM",
    )?;
    let reserved = attr(
        A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK,
        "reading the shared memory reserved per block",
    )?;
    let opt_in = attr(
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        "reading the shared memory a block may opt in to",
    )?;
    let sms = attr(
        A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        "counting the SMs",
    )?;
    let probe = dev.function(file, name, 0)?;
    let threads = probe
        .get_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
        .map_err(driver("reading the persistent kernel's block size"))?
        .max(0) as u32;
    if threads <= PRODUCER || (threads - PRODUCER) % VBLOCK != 0 {
        return Err(unsupported(format!(
            "its block of {threads} threads is not whole virtual blocks of {VBLOCK} and a producer warp"
        )));
    }
    let by_registers = probe
        .occupancy_max_active_blocks_per_multiprocessor(threads, 0, None)
        .map_err(driver("the persistent step's occupancy"))? as usize;
    let per_sm_blocks = by_registers.clamp(1, BLOCKS_PER_SM);
    let fixed = probe
        .get_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
        .map_err(driver(
            "reading the persistent kernel's static shared memory",
        ))?
        .max(0) as usize;
    let dynamic = (per_sm / per_sm_blocks)
        .saturating_sub(reserved + fixed)
        .min(opt_in.saturating_sub(fixed))
        / 16
        * 16;
    let function = dev.function(file, name, dynamic)?;
    let resident = function
        .occupancy_max_active_blocks_per_multiprocessor(threads, dynamic, None)
        .map_err(driver("the persistent step's occupancy"))? as usize;
    let blocks = resident * sms;
    if blocks == 0 {
        return Err(unsupported(format!(
            "no block of the persistent kernel fits an SM with {dynamic} bytes of shared memory"
        )));
    }
    Ok((function, threads, dynamic, blocks))
}

/// Nanoseconds a block pauses between two reads of the barrier counter. On the H200, 0, 50, 200
/// and 1000 gave the same step time (docs/gpu.md, "A persistent decoding kernel").
const POLL_NS: i32 = 100;
/// The grid barrier's counter, on a 128-byte line of its own (u64s).
const BARRIER_LINE: usize = 16;
/// The consumer warps of a block (kernels/persist_core.cuh: PERSIST_CONSUMER_WARPS): the dynamic
/// pool's chunks and the streamed attention's warp path are per warp.
pub(crate) const CONSUMER_WARPS: usize = 4;

/// Nodes of a captured graph that do work (kernels, copies, memsets; not the events a capture
/// may hold).
fn work_nodes(graph: sys::CUgraph) -> Result<usize> {
    let mut n = 0usize;
    // SAFETY: with a null array cuGraphGetNodes only writes the count; the graph is live.
    unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(driver("counting the recorded step's nodes"))?;
    if n == 0 {
        return Ok(0);
    }
    let mut nodes = vec![std::ptr::null_mut(); n];
    // SAFETY: `nodes` has room for the n nodes just counted.
    unsafe { sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &mut n) }
        .result()
        .map_err(driver("listing the recorded step's nodes"))?;
    let mut work = 0;
    for node in nodes.into_iter().take(n) {
        let mut kind = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: `node` belongs to the live graph; the call writes one enum value.
        unsafe { sys::cuGraphNodeGetType(node, &mut kind) }
            .result()
            .map_err(driver("reading a recorded node's type"))?;
        use sys::CUgraphNodeType::*;
        if matches!(
            kind,
            CU_GRAPH_NODE_TYPE_KERNEL | CU_GRAPH_NODE_TYPE_MEMCPY | CU_GRAPH_NODE_TYPE_MEMSET
        ) {
            work += 1;
        }
    }
    Ok(work)
}

/// The index of a dense layer's `rows` argument (None for other kinds).
fn rows_arg(what: &str) -> Option<usize> {
    match what {
        "gemv_fwd" => Some(9),
        "gemv_swiglu_fwd" => Some(8),
        "gemv_rope_fwd" | "gemv_conv_fwd" => Some(13),
        _ => None,
    }
}

/// An experiment's host switch: `var`=1 in the environment with the kernels compiled with
/// `define` (a word of SAMBA_NVRTC_DEFINES), as the kernel ignores the host's words without it.
pub(crate) fn switch_with_define(var: &str, define: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1") && defines_contain(define)
}

/// Whether the kernels are compiled with `define` (a word of SAMBA_NVRTC_DEFINES).
pub(crate) fn defines_contain(define: &str) -> bool {
    std::env::var("SAMBA_NVRTC_DEFINES").is_ok_and(|d| d.split_whitespace().any(|w| w == define))
}

/// Whether `l` is a gemv_fwd of one row of `input` (`input_len` long, no norm) adding into an f32
/// buffer (+=, the residual): the out_projs and fc2 the folds take (fc2_fold.rs,
/// heads_out_proj.rs).
pub(crate) fn adds_into_f32_residual(l: &RecordedLaunch, input: u64, input_len: usize) -> bool {
    let int = |i: usize| l.args[i] as u32 as usize;
    l.what == "gemv_fwd"
        && l.args.len() == 13
        && l.args[3] == input
        && l.args[5] == 0 // no norm
        && int(2) == 2 // += into f32
        && int(9) == 1 // one row
        && int(10) == input_len
}

/// A recorded gemv_fwd that `adds_into_f32_residual` takes: `input` [input_len] times
/// `weight` [n_out, input_len] added into `residual` (tests of the folds' pattern matching).
#[cfg(test)]
pub(crate) fn residual_gemv(
    residual: u64,
    input: u64,
    weight: u64,
    input_len: u64,
    n_out: u64,
) -> RecordedLaunch {
    let args = [
        (0, residual),
        (2, 2),
        (3, input),
        (8, weight),
        (9, 1),
        (10, input_len),
        (11, n_out),
    ];
    RecordedLaunch::with_args("gemv_fwd", &args, 13)
}

/// One launch as a row of the table.
fn op_words(l: &RecordedLaunch) -> Result<[u64; OP_WORDS]> {
    let kind = OpKind::of(l.what)
        .ok_or_else(|| unsupported(format!("{} is not an op of the persistent kernel", l.what)))?;
    if l.block != (VBLOCK, 1, 1) {
        return Err(unsupported(format!(
            "{} runs blocks of {:?} threads, the persistent kernel {VBLOCK}",
            l.what, l.block
        )));
    }
    if l.args.len() != kind.args() {
        return Err(unsupported(format!(
            "{} was recorded with {} arguments, its entry takes {}",
            l.what,
            l.args.len(),
            kind.args()
        )));
    }
    let mut row = [0u64; OP_WORDS];
    row[0] = kind as u64;
    row[1] = u64::from(l.grid.0);
    row[2] = u64::from(l.grid.1);
    row[3] = u64::from(l.grid.2);
    row[4..4 + l.args.len()].copy_from_slice(&l.args);
    Ok(row)
}

fn unsupported(reason: String) -> CudaError {
    CudaError::Unsupported {
        op: "the persistent decoding step",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(what: &'static str, block: u32, args: usize) -> RecordedLaunch {
        RecordedLaunch {
            what,
            grid: (7, 2, 1),
            block: (block, 1, 1),
            shared_mem_bytes: 0,
            args: (0..args as u64).map(|a| 100 + a).collect(),
        }
    }

    #[test]
    fn a_launch_becomes_kind_grid_and_arguments() {
        let row = op_words(&launch("gemv_rope_fwd", 128, 17)).expect("row");
        assert_eq!(row[0], OpKind::GemvRope as u64);
        assert_eq!(&row[1..4], &[7, 2, 1]);
        assert_eq!(row[4], 100);
        assert_eq!(row[4 + 16], 116);
        assert!(row[4 + 17..].iter().all(|&w| w == 0));
    }

    #[test]
    fn launches_the_kernel_cannot_run_are_refused() {
        for bad in [
            launch("rmsnorm_fwd", 128, 8),
            launch("gemv_fwd", 256, 13),
            launch("gemv_fwd", 128, 12),
        ] {
            let err = op_words(&bad).expect_err("refused").to_string();
            assert!(err.contains(bad.what), "{err}");
        }
    }

    #[test]
    fn dense_ops_give_their_input_units_and_rows() {
        let args = |pairs: &[(usize, u64)]| {
            let mut a = vec![0u64; MAX_ARGS];
            for &(i, v) in pairs {
                a[i] = v;
            }
            a
        };
        let shape = |input, units, rows_per_unit| DenseShape {
            input,
            units,
            rows_per_unit,
            kept_per_unit: 0,
        };
        // in_proj with the conv step: rows [x_in | z] of 2 * d_inner, one per unit
        let conv = args(&[(5, 4608), (14, 2304)]);
        assert_eq!(
            DenseShape::of(OpKind::GemvConv, &conv),
            Some(shape(2304, 9216, 1))
        );
        let plain = args(&[(10, 4608), (11, 2304)]);
        assert_eq!(
            DenseShape::of(OpKind::Gemv, &plain),
            Some(shape(4608, 2304, 1))
        );
        // [w1; w2]: a unit is a gate row and its up row
        let swiglu = args(&[(9, 2304), (10, 6144)]);
        // (its act kept after the sums, for a folded fc2)
        assert_eq!(
            DenseShape::of(OpKind::GemvSwiglu, &swiglu),
            Some(DenseShape {
                kept_per_unit: 1,
                ..shape(2304, 6144, 2)
            })
        );
        // qkv with RoPE: a unit is the two rows a rotation pairs
        let rope = args(&[(14, 2304), (15, 6912)]);
        assert_eq!(
            DenseShape::of(OpKind::GemvRope, &rope),
            Some(shape(2304, 3456, 2))
        );
        assert_eq!(DenseShape::of(OpKind::ScanStep, &plain), None);
    }

    #[test]
    fn long_runs_of_ops_are_cut_into_launches_of_at_most_max_launch_ops() {
        let mut segments = Vec::new();
        let n = 2 * MAX_LAUNCH_OPS + 5;
        for i in 0..n {
            push_op(&mut segments, i);
        }
        let launches: Vec<(usize, usize)> = segments
            .iter()
            .map(|s| match s {
                Segment::Phases { first, count } => (*first, *count),
                Segment::Kernel { .. } => unreachable!("no kernel was pushed"),
            })
            .collect();
        assert_eq!(
            launches,
            [
                (0, MAX_LAUNCH_OPS),
                (MAX_LAUNCH_OPS, MAX_LAUNCH_OPS),
                (2 * MAX_LAUNCH_OPS, 5)
            ]
        );
    }

    #[test]
    fn shared_memory_is_split_into_input_sums_ring_and_table() {
        let shapes = [
            DenseShape {
                input: 2304,
                units: 32000,
                rows_per_unit: 1,
                kept_per_unit: 0,
            },
            DenseShape {
                input: 6144,
                units: 2304,
                rows_per_unit: 1,
                kept_per_unit: 0,
            },
            DenseShape {
                input: 2304,
                units: 6144,
                rows_per_unit: 2,
                kept_per_unit: 0,
            },
        ];
        let l = SharedLayout::plan(&shapes, 10, 2, 264, 100_000).expect("fits");
        assert_eq!(l.input_bytes, 6144 * 2);
        assert_eq!(l.table_bytes, 10 * OP_WORDS * 8);
        // the head's 32000 rows over 264 blocks: 122 sums at most, rounded up to whole vectors
        assert_eq!(l.sums, 124);
        assert_eq!(l.ring_bytes % 16, 0);
        assert!(l.total() <= 100_000 && l.total() > 100_000 - 16, "{l:?}");
        // an odd input is staged and stored at a 16-byte stride
        let odd = [DenseShape {
            input: 30,
            units: 5,
            rows_per_unit: 2,
            kept_per_unit: 0,
        }];
        let l = SharedLayout::plan(&odd, 1, 4, 4, 4096).expect("fits");
        assert_eq!(l.input_bytes, 128);
        // 2 units of 2 rows a block, but room for each consumer warp's chunk of the dynamic pool
        // (a unit each: 4 warps x 2 rows)
        assert_eq!(l.sums, 8);
        // a SwiGLU keeps its act after its sums: [w1; w2] of Samba-1.3B, 24 units a block
        let swiglu = [DenseShape {
            input: 2304,
            units: 6144,
            rows_per_unit: 2,
            kept_per_unit: 1,
        }];
        let l = SharedLayout::plan(&swiglu, 1, 2, 264, 100_000).expect("fits");
        assert_eq!(l.sums, 24 * 3);
        // the largest stage: three of the head's 4608-byte rows (16 KB at most)
        let stage = shapes.iter().map(|d| d.stage_bytes(2, 264)).max();
        assert_eq!(stage, Some(3 * 4608));
        // a ring that cannot hold a stage is refused, the table counted: without the table's
        // 10 rows this one would leave 14,824 bytes, with them 12,904
        let fixed = 6144 * 2 + 4 * 124;
        let dynamic = fixed + 3 * 4608 + 1000;
        assert!(SharedLayout::plan(&shapes, 0, 2, 264, dynamic).is_ok());
        let err = SharedLayout::plan(&shapes, 10, 2, 264, dynamic).expect_err("too small");
        assert!(err.to_string().contains("ring"), "{err}");
        // a ring that holds a unit (12,288 bytes of fc2's row) but not a stage is refused too
        let err = SharedLayout::plan(&shapes, 0, 2, 264, fixed + 13_000).expect_err("too small");
        assert!(err.to_string().contains("stage"), "{err}");
        // and one that holds a stage only where the kernel need not move the ring's start to a
        // 128-byte boundary (it may move it by up to 112 bytes)
        let l = SharedLayout::plan(&shapes, 0, 2, 264, fixed + 3 * 4608 + RING_ALIGN - 16);
        assert_eq!(l.map(|l| l.usable_ring()).ok(), Some(3 * 4608));
        let err = SharedLayout::plan(&shapes, 0, 2, 264, fixed + 3 * 4608 + 32).expect_err("slack");
        assert!(err.to_string().contains("stage"), "{err}");
    }

    /// The dynamic pool's chunk (PERSIST_POOL): a stage's worth of units, at most a quarter of a
    /// block's share, at least one; the sums leave room for the four consumer warps' chunks.
    #[test]
    fn pool_chunks_are_a_stage_or_a_quarter_share() {
        let shape = |input, units, rows_per_unit| DenseShape {
            input,
            units,
            rows_per_unit,
            kept_per_unit: 0,
        };
        // Samba-1.3B bf16 on 264 blocks: the head's 4.6 KB rows, 3 to a 16 KB stage
        assert_eq!(shape(2304, 32000, 1).pool_chunk(2, 264), 3);
        // fc2's 12 KB rows and [w1; w2]'s 9 KB units: one a stage
        assert_eq!(shape(6144, 2304, 1).pool_chunk(2, 264), 1);
        assert_eq!(shape(2304, 6144, 2).pool_chunk(2, 264), 1);
        // small rows: a quarter of the block's share (7 units -> 2)
        assert_eq!(shape(32, 7 * 64, 1).pool_chunk(4, 64), 2);
        // fewer units than blocks: one
        assert_eq!(shape(32, 10, 2).pool_chunk(4, 64), 1);
        // the sums: [w1; w2]'s 24 units of 2 rows a block, larger than 4 warps' chunks of 1
        let l = SharedLayout::plan(&[shape(2304, 6144, 2)], 1, 2, 264, 200_000).expect("fits");
        assert_eq!(l.sums, 48);
    }

    #[test]
    fn attention_place_is_read_from_its_variable() {
        for (value, place) in [
            (None, AttentionPlace::Streamed),
            (Some(""), AttentionPlace::Streamed),
            (Some("stream"), AttentionPlace::Streamed),
            (Some("own"), AttentionPlace::OwnKernel),
            (Some("1"), AttentionPlace::VirtualBlocks),
            (Some("stream-heads"), AttentionPlace::StreamedHeads),
        ] {
            assert_eq!(AttentionPlace::parse(value).ok(), Some(place), "{value:?}");
        }
        let err = AttentionPlace::parse(Some("strem")).expect_err("a typo");
        assert!(err.to_string().contains("\"strem\""), "{err}");
        assert!(err.to_string().contains("own"), "{err}");
    }

    /// The kinds and the table's width agree with the kernel (kernels/persist_core.cuh and the
    /// files after it).
    #[test]
    fn kinds_match_the_kernel_source() {
        let source = format!(
            "{}\n{}",
            DECODE_PERSISTENT.prelude, DECODE_PERSISTENT.source
        );
        let define = |name: &str| -> u64 {
            let line = source
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{name} not defined"));
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        for (name, kind) in [
            ("PERSIST_EMBEDDING", OpKind::Embedding),
            ("PERSIST_GEMV", OpKind::Gemv),
            ("PERSIST_GEMV_SWIGLU", OpKind::GemvSwiglu),
            ("PERSIST_GEMV_ROPE", OpKind::GemvRope),
            ("PERSIST_GEMV_CONV", OpKind::GemvConv),
            ("PERSIST_SCAN_STEP", OpKind::ScanStep),
            ("PERSIST_ATTENTION", OpKind::Attention),
            ("PERSIST_POSITIONS", OpKind::Positions),
            ("PERSIST_STREAMED_ATTENTION", OpKind::StreamedAttention),
            ("PERSIST_GEMV_HEADS", OpKind::GemvHeads),
        ] {
            assert_eq!(define(name), kind as u64, "{name}");
            assert!(kind.args() <= MAX_ARGS);
        }
        assert_eq!(define("PERSIST_MAX_ARGS") as usize, MAX_ARGS);
        assert_eq!(define("PERSIST_STAGE_BYTES") as usize, STAGE_BYTES);
        use super::super::xproj_fold::{CONV_ARGS, FOLD_COPIES, SCAN_ARGS};
        assert_eq!(define("PERSIST_FOLD_COPIES") as usize, FOLD_COPIES);
        let conv =
            ["W", "SUMS", "N", "STRIDE"].map(|n| define(&format!("PERSIST_FOLD_{n}")) as usize);
        assert_eq!(conv, CONV_ARGS);
        let scan =
            ["SUMS", "ZERO", "STRIDE"].map(|n| define(&format!("PERSIST_SCAN_{n}")) as usize);
        assert_eq!(scan, SCAN_ARGS);
        // the fold's arguments come after the conv step's and the scan step's own
        assert!(OpKind::GemvConv.args() <= CONV_ARGS[0] && CONV_ARGS[3] < MAX_ARGS);
        assert!(OpKind::ScanStep.args() <= SCAN_ARGS[0] && SCAN_ARGS[2] < MAX_ARGS);
        use super::super::fc2_fold::{FOLD_GROUPS, SWIGLU_ARGS};
        let swiglu = ["W", "SUMS", "N", "STRIDE", "STAGED"]
            .map(|n| define(&format!("PERSIST_FOLD_{n}")) as usize);
        assert_eq!(swiglu, SWIGLU_ARGS);
        assert!(SWIGLU_ARGS
            .iter()
            .all(|&a| OpKind::GemvSwiglu.args() <= a && a < MAX_ARGS));
        assert_eq!(define("PERSIST_FOLD_GROUPS") as usize, FOLD_GROUPS);
        assert_eq!(define("STREAM_ATT_MERGE_NEXT") as usize, MERGE_NEXT_ARG);
        assert_eq!(
            define("PERSIST_ROPE_READY") as usize,
            attention_ready::ROPE_READY_ARG
        );
        assert_eq!(
            define("STREAM_ATT_READY_ARG") as usize,
            attention_ready::ATTENTION_READY_ARG
        );
        assert_eq!(
            define("STREAM_ATT_READY_STRIDE") as usize,
            attention_ready::COUNTER_STRIDE
        );
        // (the counters' words past the ops' own arguments, within the table's row)
        assert!(attention_ready::ROPE_READY_ARG >= OpKind::GemvRope.args());
        assert!(attention_ready::ATTENTION_READY_ARG >= OpKind::StreamedAttention.args());
        const {
            assert!(
                attention_ready::ROPE_READY_ARG < MAX_ARGS
                    && attention_ready::ATTENTION_READY_ARG < MAX_ARGS
            )
        };
        assert_eq!(MERGE_NEXT_ARG + 1, OpKind::StreamedAttention.args());
        assert_eq!(
            define("STREAM_ATT_MAX_KEYS") as usize,
            super::super::streamed_attention::MAX_KEYS
        );
        assert_eq!(
            define("STREAM_ATT_STAGE_BYTES") as usize,
            super::super::streamed_attention::STAGE_BYTES
        );
        assert_eq!(define("PERSIST_CONSUMERS") as u32 % VBLOCK, 0);
        assert_eq!(define("PERSIST_CONSUMERS") as usize / 32, CONSUMER_WARPS);
        assert_eq!(define("PERSIST_VBLOCK") as u32, VBLOCK);
        assert_eq!(define("PERSIST_RING_ALIGN") as usize, RING_ALIGN);
        assert!(define("PERSIST_MIN_BLOCKS") as usize <= BLOCKS_PER_SM);
    }
}
