//! Errors of the CUDA backend: a missing driver or device, a kernel that does not compile, a
//! failing CUDA call, and buffers whose sizes do not match the shapes of an operation.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("no CUDA driver on this machine (libcuda.so could not be loaded); run on a machine with an NVIDIA GPU and driver, or use --device cpu")]
    NoDriver,

    #[error("CUDA device {ordinal} does not exist: this machine has {count} CUDA device(s){}", if *.count == 0 { "; use --device cpu" } else { "" })]
    NoDevice { ordinal: usize, count: usize },

    #[error("NVRTC (libnvrtc.so) could not be loaded, so no kernel can be compiled; install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc` and add its lib folder to LD_LIBRARY_PATH")]
    NoNvrtc,

    #[error("cuBLAS (libcublas.so / libcublasLt.so) could not be loaded; install the CUDA toolkit's cuBLAS and add its lib folder to LD_LIBRARY_PATH")]
    NoCublas,

    #[error("the CUDA driver failed while {what}: {source}")]
    Driver {
        what: String,
        #[source]
        source: DriverError,
    },

    #[error("kernels/{file}.cu does not compile for {arch} with NVRTC {nvrtc}:\n{log}")]
    Compile {
        file: &'static str,
        arch: String,
        nvrtc: String,
        log: String,
    },

    #[error("the kernel {name} is not in kernels/{file}.cu (a name in the launch wrapper that the source lacks)")]
    MissingKernel { file: &'static str, name: String },

    #[error("cuBLAS failed while {what}: {source}")]
    Cublas {
        what: &'static str,
        #[source]
        source: CublasError,
    },

    #[error("{op}: {what} holds {found} elements, expected {expected} ({shape})")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: usize,
        found: usize,
        shape: &'static str,
    },

    #[error("{op}: {reason}")]
    Unsupported { op: &'static str, reason: String },

    /// Measuring the device's copy bandwidth or GEMM rate (the benchmarks' ceilings) failed.
    #[error("measuring the device's {what}: {reason}")]
    Ceiling { what: &'static str, reason: String },

    /// Bad input (token ids, lengths, batch, context cap): the same errors as the CPU backend.
    #[error(transparent)]
    Input(#[from] samba_cpu::CpuError),

    #[error("the parameter buffer holds {found} values but the model's layout needs {expected}")]
    ParamCount { expected: usize, found: usize },

    #[error(transparent)]
    Model(#[from] samba_model::ModelError),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// Wraps a driver error with what was being done.
pub(crate) fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> CudaError {
    let what = what.into();
    move |source| CudaError::Driver { what, source }
}

/// Checks that a buffer holds `expected` elements.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    found: usize,
    expected: usize,
    shape: &'static str,
) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(CudaError::Shape {
            op,
            what,
            expected,
            found,
            shape,
        })
    }
}

/// Rows of `width` values `stride` apart: the last row must end inside the buffer.
pub(crate) fn check_rows(
    op: &'static str,
    what: &'static str,
    len: usize,
    rows: usize,
    stride: usize,
    width: usize,
) -> Result<()> {
    let need = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    };
    if stride < width || len < need {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "{what}: {rows} rows of {width} values {stride} apart need {need} elements, the buffer holds {len}"
            ),
        });
    }
    Ok(())
}

/// A size as the `int` a kernel takes, or an error naming it.
pub(crate) fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported {
        op,
        reason: format!("{what} = {v} does not fit the kernel's 32-bit index"),
    })
}
