//! The device context: one GPU, one stream on it, its compiled kernels (loaded lazily, per
//! kernel file) and its cuBLAS handle; plus buffers moved between host and device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    sys::CUfunction_attribute_enum, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream,
    DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};

use crate::compile::{self, KernelFile};
use crate::error::{driver, CudaError, Result};

/// Bytes of the cuBLAS workspace.
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A buffer in device memory: `len` elements of `T`. Slices of it (`buf.slice(a..b)`,
/// `buf.slice_mut(a..b)`) are accepted wherever a buffer is.
pub type Buffer<T> = CudaSlice<T>;

/// Element types a buffer of activations or weights can hold: f32 and bf16. Kernels compute
/// in f32 whatever the storage; each kernel has an `_f32` and a `_bf16` entry point.
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    /// The suffix of the kernel entry points for this type.
    const SUFFIX: &'static str;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// Whether the CUDA driver library is present (nothing else is tried).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The number of CUDA devices, 0 without a driver.
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

/// Whether a CUDA device can be used: the driver loads and sees at least one GPU.
pub fn cuda_available() -> bool {
    device_count() > 0
}

/// One GPU with its stream, kernels and cuBLAS handle. Every operation is queued on the one
/// stream, in order; nothing waits for the GPU except `download` and `synchronize`.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    blas: OnceLock<CudaBlas>,
    /// cuBLAS's workspace, set once so that no GEMM allocates (which a captured graph forbids).
    blas_workspace: OnceLock<Buffer<u8>>,
    /// Launches recorded instead of run (ops/pdl.rs), while the persistent step records.
    recording: Mutex<Option<crate::ops::pdl::Recording>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`. Without a driver or such a device this is an error that says so,
    /// never a panic.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let count = CudaContext::device_count().map_err(driver("counting CUDA devices"))?;
        let count = count.max(0) as usize;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx =
            CudaContext::new(ordinal).map_err(driver(format!("opening CUDA device {ordinal}")))?;
        // All work goes to one stream, in order, so cudarc's per-buffer events (which order
        // work across streams) are not needed; without them no event is recorded inside a
        // captured CUDA graph.
        // SAFETY: called before any buffer of this context exists; the device uses only the
        // one stream created below.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        // A stream of our own rather than the legacy default stream, which cannot be captured
        // into a CUDA graph.
        let stream = ctx
            .new_stream()
            .map_err(driver("creating the device's stream"))?;
        Ok(CudaDevice {
            arch: compile::arch_for(compute_capability.0, compute_capability.1),
            ctx,
            stream,
            name,
            compute_capability,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            blas_workspace: OnceLock::new(),
            recording: Mutex::new(None),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// (major, minor), e.g. (9, 0) on Hopper.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// The architecture kernels are compiled for, e.g. "sm_90".
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// (free, total) device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(driver("reading free memory"))
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until all queued work is done.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver("synchronising the stream"))
    }

    /// A zero-filled buffer of `len` elements (any plain type: f32, bf16, u32 token ids).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<Buffer<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(driver(format!("allocating {len} elements")))
    }

    /// A new buffer holding `host`.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<Buffer<T>> {
        self.stream.clone_htod(host).map_err(driver(format!(
            "copying {} elements to the device",
            host.len()
        )))
    }

    /// The contents of a buffer (or a slice of one), copied to the host; waits for the GPU.
    pub fn download<T: DeviceRepr>(&self, buf: &impl DevicePtr<T>) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(buf)
            .map_err(driver("copying a buffer to the host"))
    }

    /// Overwrites every element with `value` (tests poison outputs with NaN this way, so an
    /// element a kernel fails to write shows up).
    pub fn fill<T: DeviceRepr + Clone>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        value: T,
    ) -> Result<()> {
        let host = vec![value; buf.len()];
        self.stream
            .memcpy_htod(&host, buf)
            .map_err(driver("filling a buffer"))
    }

    /// Compiles (or takes from the disk cache) and loads every kernel file now, rather than at
    /// each kernel's first use. Returns (file, came from the cache) per file.
    pub fn load_all_kernels(&self) -> Result<Vec<(&'static str, bool)>> {
        compile::KERNEL_FILES
            .iter()
            .map(|f| self.module(f).map(|(_, cached)| (f.name, cached)))
            .collect()
    }

    fn module(&self, file: &'static KernelFile) -> Result<(Arc<CudaModule>, bool)> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(file.name) {
            return Ok((m.clone(), true));
        }
        let (ptx, cached) = compile::compile(file, &self.arch)?;
        let module = self
            .ctx
            .load_module(compile::to_ptx(ptx))
            .map_err(driver(format!(
                "loading the PTX of kernels/{}.cu",
                file.name
            )))?;
        modules.insert(file.name, module.clone());
        Ok((module, cached))
    }

    /// The entry point `<base>_<suffix>` of a kernel file, loaded once. `dyn_smem` is the
    /// largest dynamic shared memory the caller will launch it with: above the default 48 KiB
    /// the function's limit is raised.
    /// The recording of launches (ops/pdl.rs), if one is under way.
    pub(crate) fn recording(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<crate::ops::pdl::Recording>> {
        self.recording.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn function(
        &self,
        file: &'static KernelFile,
        name: &str,
        dyn_smem: usize,
    ) -> Result<CudaFunction> {
        let key = format!("{}:{name}@{dyn_smem}", file.name);
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        if !file.entries.contains(&name) {
            return Err(CudaError::MissingKernel {
                file: file.name,
                name: name.to_string(),
            });
        }
        let (module, _) = self.module(file)?;
        let f = module
            .load_function(name)
            .map_err(driver(format!("loading kernel {name}")))?;
        if dyn_smem > 48 * 1024 {
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dyn_smem as i32,
            )
            .map_err(driver(format!(
                "allowing {dyn_smem} bytes of shared memory for {name}"
            )))?;
        }
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// The cuBLAS handle on this device's stream, created at first use.
    pub(crate) fn blas(&self) -> Result<&CudaBlas> {
        if let Some(b) = self.blas.get() {
            return Ok(b);
        }
        // SAFETY: only tries to dlopen the libraries by their usual names.
        let present = unsafe {
            cudarc::cublas::sys::is_culib_present() && cudarc::cublaslt::sys::is_culib_present()
        };
        if !present {
            return Err(CudaError::NoCublas);
        }
        let blas = CudaBlas::new(self.stream.clone()).map_err(|source| CudaError::Cublas {
            what: "creating the cuBLAS handle",
            source,
        })?;
        // The default math mode: f32 GEMMs stay in f32 (no TF32), so they match the CPU.
        // SAFETY: the handle is valid (just created) and the mode is a valid enum value.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        }
        .result()
        .map_err(|source| CudaError::Cublas {
            what: "setting the cuBLAS math mode",
            source,
        })?;
        // A fixed workspace (32 MiB, what cuBLAS recommends on Hopper), so GEMMs can be
        // captured into CUDA graphs.
        let workspace = match self.blas_workspace.get() {
            Some(w) => w,
            None => {
                let w = self.zeros::<u8>(BLAS_WORKSPACE_BYTES)?;
                self.blas_workspace.get_or_init(|| w)
            }
        };
        let (ws_ptr, _guard) = workspace.device_ptr(&self.stream);
        // SAFETY: the handle is valid; the workspace is a live device buffer of
        // BLAS_WORKSPACE_BYTES owned by this device, which outlives the handle's use (both are
        // dropped with the device).
        unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *blas.handle(),
                ws_ptr as *mut std::ffi::c_void,
                BLAS_WORKSPACE_BYTES,
            )
        }
        .result()
        .map_err(|source| CudaError::Cublas {
            what: "setting the cuBLAS workspace",
            source,
        })?;
        Ok(self.blas.get_or_init(|| blas))
    }
}
