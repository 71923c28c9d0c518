//! Launching the decoding step's kernels through `cuLaunchKernelEx`, optionally with programmatic
//! dependent launch (Hopper and later): the programmatic-stream-serialization attribute lets a
//! kernel start while the one before it on the stream finishes; such kernels (kernels/pdl.cuh)
//! touch nothing the earlier kernels write before `pdl_wait`. Works inside a captured CUDA graph.
//!
//! Off by default: on the H200 the fused decoding step ran slower with it (1.75 against 1.59 ms
//! per step); `SAMBA_PDL=1` turns it on. The kernels are correct either way (the model's decoding
//! tests passed with it on).
//!
//! While a device records ([`Recording`]), these launches are recorded instead of run: the
//! persistent decoding step (model/persistent.rs) turns them into its table of ops.

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction, LaunchConfig};

use crate::error::{driver, Result};
use crate::CudaDevice;

/// The arguments of one launch, in order. Each sits in its own 8-byte slot: the driver copies
/// the parameter's size from the slot's address, and every parameter here is a device pointer,
/// an `int` or a `float` (little-endian, so the low bytes of the slot).
#[derive(Default)]
pub(crate) struct Args {
    slots: Vec<u64>,
}

impl Args {
    pub fn new() -> Args {
        Args::default()
    }

    /// A device pointer (0 for a null pointer).
    pub fn ptr(mut self, p: u64) -> Args {
        self.slots.push(p);
        self
    }

    pub fn i32(mut self, v: i32) -> Args {
        self.slots.push(v as u32 as u64);
        self
    }

    pub fn f32(mut self, v: f32) -> Args {
        self.slots.push(v.to_bits() as u64);
        self
    }

    /// The arguments of a recorded launch.
    pub fn from_slots(slots: &[u64]) -> Args {
        Args {
            slots: slots.to_vec(),
        }
    }

    /// A 64-bit integer (`long` or `unsigned long long`).
    pub fn u64(mut self, v: u64) -> Args {
        self.slots.push(v);
        self
    }
}

/// A launch recorded instead of run.
#[derive(Debug, Clone)]
pub(crate) struct RecordedLaunch {
    /// The operation's name, as the launch gave it (`gemv_fwd`, `attention_decode_fwd`, ...).
    pub what: &'static str,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
    pub args: Vec<u64>,
}

#[cfg(test)]
impl RecordedLaunch {
    /// A launch of `what` with `n` arguments, zero but for `args` (index, value): the host's
    /// pattern matching over recordings, tested without a device.
    pub(crate) fn with_args(what: &'static str, args: &[(usize, u64)], n: usize) -> RecordedLaunch {
        let mut a = vec![0u64; n];
        for &(i, v) in args {
            a[i] = v;
        }
        RecordedLaunch {
            what,
            grid: (36, 1, 1),
            block: (128, 1, 1),
            shared_mem_bytes: 0,
            args: a,
        }
    }
}

/// What a device records between [`start_recording`] and [`stop_recording`].
#[derive(Debug, Default)]
pub(crate) struct Recording {
    /// The blocks the recorded launches will run on (sizes the GEMV grids: ops/gemv.rs).
    pub blocks: usize,
    pub launches: Vec<RecordedLaunch>,
}

/// From now on the launches of this module on `dev` are recorded, not run, for a grid of
/// `blocks` resident blocks.
pub(crate) fn start_recording(dev: &CudaDevice, blocks: usize) {
    *dev.recording() = Some(Recording {
        blocks,
        launches: Vec::new(),
    });
}

/// Ends the recording and returns it (empty if none was started).
pub(crate) fn stop_recording(dev: &CudaDevice) -> Recording {
    dev.recording().take().unwrap_or_default()
}

/// The resident blocks of the grid being recorded for, while recording.
pub(crate) fn recording_blocks(dev: &CudaDevice) -> Option<usize> {
    dev.recording().as_ref().map(|r| r.blocks)
}

/// Whether kernels are launched with programmatic dependent launch (`SAMBA_PDL=1`; the
/// attribute needs compute capability 9.0, checked per device).
pub(crate) fn enabled(dev: &CudaDevice) -> bool {
    dev.compute_capability().0 >= 9 && std::env::var("SAMBA_PDL").is_ok_and(|v| v == "1")
}

/// Launches `f` on the device's stream with `args`, as a programmatic dependent launch when
/// [`enabled`].
///
/// # Safety
/// `args` must match the kernel's parameter list in number, order and type, and every pointer
/// must cover what the kernel reads and writes at this configuration. The kernel must call
/// `pdl_wait` before it touches anything but constant data (kernels/pdl.cuh).
pub(crate) unsafe fn launch(
    dev: &CudaDevice,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &Args,
    what: &'static str,
) -> Result<()> {
    if let Some(rec) = dev.recording().as_mut() {
        rec.launches.push(RecordedLaunch {
            what,
            grid: cfg.grid_dim,
            block: cfg.block_dim,
            shared_mem_bytes: cfg.shared_mem_bytes,
            args: args.slots.clone(),
        });
        return Ok(());
    }
    let mut attr =
        attribute(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
    attr.value.programmaticStreamSerializationAllowed = 1;
    launch_ex(dev, f, cfg, args, what, &mut attr, enabled(dev))
}

/// Launches `f` as a cooperative grid: every block resident at once (the driver refuses a grid
/// larger than the device holds), so blocks may wait for each other.
///
/// # Safety
/// As [`launch`]; the grid must be no larger than the blocks `f` can keep resident.
pub(crate) unsafe fn launch_cooperative(
    dev: &CudaDevice,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &Args,
    what: &'static str,
) -> Result<()> {
    let mut attr = attribute(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE);
    attr.value.cooperative = 1;
    launch_ex(dev, f, cfg, args, what, &mut attr, true)
}

/// A launch attribute of `id` with its value zeroed (the caller sets the field `id` uses).
fn attribute(id: sys::CUlaunchAttributeID) -> sys::CUlaunchAttribute {
    sys::CUlaunchAttribute {
        id,
        pad: [0; 4],
        // SAFETY: a launch attribute value is a union of plain integers; all-zero is valid.
        value: unsafe { std::mem::zeroed() },
    }
}

/// `cuLaunchKernelEx` on the device's stream, with `attr` when `with_attr`.
unsafe fn launch_ex(
    dev: &CudaDevice,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &Args,
    what: &'static str,
    attr: &mut sys::CUlaunchAttribute,
    with_attr: bool,
) -> Result<()> {
    let stream = dev.stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(driver("binding the CUDA context"))?;
    let mut params: Vec<*mut c_void> = args
        .slots
        .iter()
        .map(|s| s as *const u64 as *mut c_void)
        .collect();
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: attr,
        numAttrs: u32::from(with_attr),
    };
    // SAFETY: `config` and `attr` live across the call; `params` holds one pointer per kernel
    // parameter into `args`, which outlives the call (the driver copies the values at launch);
    // the caller promises the parameter list matches the kernel.
    sys::cuLaunchKernelEx(
        &config,
        f.cu_function(),
        params.as_mut_ptr(),
        std::ptr::null_mut(),
    )
    .result()
    .map_err(driver(format!("launching {what}")))
}
