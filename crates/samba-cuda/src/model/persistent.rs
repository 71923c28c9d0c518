//! The decoding step as persistent kernels (kernels/decode_persistent.cu): the fused step's
//! ~100 kernels run as phases of a grid resident on every SM, separated by grid-wide barriers
//! instead of kernel boundaries. Each phase requests its first weights before it waits at its
//! barrier, so the weights keep streaming across phases; no phase pays a launch, a ramp and a
//! tail of its own. The decoding attention runs as its own kernel between two persistent launches
//! (in the same function its registers made the dense layers spill), so Samba-1.3B's step is 10
//! persistent launches and 9 attention kernels instead of 102 kernels.
//!
//! The table of phases is recorded, not written by hand: the fused step (fused.rs) runs once with
//! the device recording its launches (ops/pdl.rs) inside a stream capture, so nothing runs. Every
//! launch of the step must be one the persistent kernel knows ([`OpKind`]), with 128-thread
//! blocks and dense layers of one row (batch 1); a step with any other kernel (a sublayer the
//! fused kernels do not cover) leaves a non-empty capture. Either way the decoding step falls back
//! to a CUDA graph of the fused kernels.
//! Like a captured graph, the table holds the addresses of the activations, the state and the
//! weights, so it serves every later step of the same (activations, state) pair.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{sys, CudaFunction, DevicePtr, LaunchConfig};

use super::plan::CudaActivations;
use super::state::CudaDecodeState;
use super::CudaModel;
use crate::compile::{ATTENTION_DECODE, DECODE_PERSISTENT};
use crate::error::{driver, CudaError, Result};
use crate::ops::entry;
use crate::ops::gemv::GEMV_MAX_ROWS;
use crate::ops::pdl::{self, Args, RecordedLaunch};
use crate::{Buffer, Elem};

const THREADS: u32 = 128;
/// Arguments an op carries (kernels/decode_persistent.cu: PERSIST_MAX_ARGS).
const MAX_ARGS: usize = 20;
const OP_WORDS: usize = 4 + MAX_ARGS;
/// Shared memory a kernel may take without the opt-in attribute, and what it opts in to.
const DEFAULT_SMEM: usize = 48 * 1024;
const MAX_SMEM: usize = 160 * 1024;
/// Static shared memory of the kernel (the GEMV reductions, the op words, the barrier's state;
/// a bound, so the dynamic part is sized against the rest of the 227 KiB).
const STATIC_SMEM: usize = 16 * 1024;

/// The kernels the persistent step runs, with the number of arguments of each entry point
/// (kernels/decode_persistent.cu: PERSIST_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum OpKind {
    Embedding = 1,
    Gemv = 2,
    GemvSwiglu = 3,
    GemvRope = 4,
    GemvConv = 5,
    ScanStep = 6,
    Positions = 8,
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
            OpKind::Positions => 3,
        }
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

/// The kernel that runs recorded launches of `what` on their own, if any.
const OWN_KERNEL: &str = "attention_decode_fwd";

/// The recorded step of one (activations, state) pair, ready to launch.
pub(crate) struct PersistentStep {
    function: CudaFunction,
    /// [ops, OP_WORDS]: kind, grid x, y, z, arguments.
    table: Buffer<u64>,
    segments: Vec<Segment>,
    /// The barrier counter (kernels/decode_persistent.cu), never reset: each launch starts
    /// where the last one left it (`barriers` of them so far, per block).
    counter: Buffer<u64>,
    barriers: u64,
    blocks: u32,
    shared_mem_bytes: u32,
    pub state_id: u64,
    pub rope_generation: u64,
}

impl PersistentStep {
    /// Records the fused step of `acts` and `state` (nothing runs, nothing in them changes).
    pub fn record<T: Elem>(
        model: &CudaModel<T>,
        acts: &mut CudaActivations<T>,
        state: &mut CudaDecodeState<T>,
    ) -> Result<PersistentStep> {
        let dev = model.device();
        let widest = super::fused::widest_input(&model.config);
        let smem_budget =
            GEMV_MAX_ROWS.min(acts.shape.rows()) * widest.div_ceil(8) * 8 * size_of::<T>();
        let function = dev.function(
            &DECODE_PERSISTENT,
            &entry::<T>("decode_persistent"),
            if smem_budget + STATIC_SMEM > DEFAULT_SMEM {
                MAX_SMEM
            } else {
                0
            },
        )?;
        let per_sm = function
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem_budget, None)
            .map_err(driver("the persistent step's occupancy"))?;
        let sms = dev
            .stream()
            .context()
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("counting the SMs"))?;
        let blocks = (per_sm as usize) * (sms.max(0) as usize);
        if blocks == 0 {
            return Err(unsupported(format!(
                "no block of the persistent kernel fits an SM with {smem_budget} bytes of shared memory"
            )));
        }

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

        let mut table = Vec::with_capacity(recording.launches.len() * OP_WORDS);
        let mut segments = Vec::new();
        let mut shared = 0;
        let mut n_ops = 0;
        for l in recording.launches {
            if l.what == OWN_KERNEL {
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
            let rows = rows_arg(l.what).and_then(|i| l.args.get(i));
            if rows.is_some_and(|&r| r != 1) {
                return Err(unsupported(format!(
                    "{} of more than one row: the persistent kernel's dense layers take one (batch 1)",
                    l.what
                )));
            }
            table.extend(op_words(&l)?);
            shared = shared.max(l.shared_mem_bytes);
            match segments.last_mut() {
                Some(Segment::Phases { count, .. }) => *count += 1,
                _ => segments.push(Segment::Phases {
                    first: n_ops,
                    count: 1,
                }),
            }
            n_ops += 1;
        }
        if shared as usize > smem_budget {
            return Err(unsupported(format!(
                "an op asks for {shared} bytes of shared memory, the kernel was sized for {smem_budget}"
            )));
        }
        if n_ops == 0 {
            return Err(unsupported("the step recorded no launch".into()));
        }
        Ok(PersistentStep {
            function,
            table: dev.upload(&table)?,
            segments,
            counter: dev.zeros::<u64>(1)?,
            barriers: 0,
            blocks: blocks as u32,
            shared_mem_bytes: smem_budget as u32,
            state_id: state.id,
            rope_generation: state.rope_generation,
        })
    }

    /// Runs the recorded step once (on the device's stream; the caller uploaded the tokens).
    pub fn launch<T: Elem>(&mut self, model: &CudaModel<T>) -> Result<()> {
        let dev = model.device();
        let s = dev.stream();
        let (t_p, _g0) = self.table.device_ptr(s);
        let (c_p, _g1) = self.counter.device_ptr(s);
        for seg in &self.segments {
            match seg {
                Segment::Phases { first, count } => {
                    let args = Args::new()
                        .ptr(t_p + (first * OP_WORDS * size_of::<u64>()) as u64)
                        .i32(*count as i32)
                        .ptr(c_p)
                        .u64(self.barriers * u64::from(self.blocks))
                        .i32(POLL_NS);
                    let cfg = LaunchConfig {
                        grid_dim: (self.blocks, 1, 1),
                        block_dim: (THREADS, 1, 1),
                        shared_mem_bytes: self.shared_mem_bytes,
                    };
                    // SAFETY: arguments match decode_persistent_<T>(const u64*, int, u64*, u64,
                    // int); the table holds `count` ops of OP_WORDS words from `first`, each a
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
        Ok(())
    }
}

/// Nanoseconds a block pauses between two reads of the barrier counter. On the H200, 0, 50, 200
/// and 1000 gave the same step time (docs/gpu.md, "A persistent decoding kernel").
const POLL_NS: i32 = 100;

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

/// One launch as a row of the table.
fn op_words(l: &RecordedLaunch) -> Result<[u64; OP_WORDS]> {
    let kind = OpKind::of(l.what)
        .ok_or_else(|| unsupported(format!("{} is not an op of the persistent kernel", l.what)))?;
    if l.block != (THREADS, 1, 1) {
        return Err(unsupported(format!(
            "{} runs blocks of {:?} threads, the persistent kernel {THREADS}",
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

    /// The kinds and the table's width agree with kernels/decode_persistent.cu.
    #[test]
    fn kinds_match_the_kernel_source() {
        let source = DECODE_PERSISTENT.source;
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
            ("PERSIST_POSITIONS", OpKind::Positions),
        ] {
            assert_eq!(define(name), kind as u64, "{name}");
            assert!(kind.args() <= MAX_ARGS);
        }
        assert_eq!(define("PERSIST_MAX_ARGS") as usize, MAX_ARGS);
        assert_eq!(define("PERSIST_THREADS") as u32, THREADS);
    }
}
