//! The kernel sources and their compilation: every `.cu` file under `kernels/` is embedded in
//! the binary, compiled by NVRTC (loaded at run time) for the device's architecture on first
//! use, and the PTX is cached on disk so later runs skip NVRTC.
//!
//! The cache key is the source text (with the shared `common.cuh` prepended), the target
//! architecture, the NVRTC version and the compile options: any change to one of them gives a
//! new file. The cache lives in `$SAMBA_KERNEL_CACHE`, else `$XDG_CACHE_HOME/samba-lm/kernels`,
//! else `~/.cache/samba-lm/kernels`; failing to read or write it only costs a recompilation.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::error::{CudaError, Result};

/// One `.cu` file of `kernels/` and the extern "C" entry points it defines.
#[derive(Debug)]
pub struct KernelFile {
    /// The file's stem, `kernels/<name>.cu` (a second build of a file has a name of its own).
    pub name: &'static str,
    pub source: &'static str,
    /// Every entry point of the file (checked by the compile test).
    pub entries: &'static [&'static str],
    /// Shared code placed between `common.cuh` and the file (e.g. [`PDL`]), or "".
    pub prelude: &'static str,
}

/// Prepended to every kernel file: bf16 as raw bits, loads and stores, silu, softplus and
/// warp/block reductions.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// Prepended (after [`COMMON`]) to the files whose kernels are launched with programmatic
/// dependent launch (`ops::pdl`): `pdl_wait` and `pdl_trigger` (griddepcontrol, sm_90+).
pub const PDL: &str = include_str!("../kernels/pdl.cuh");

macro_rules! kernel_file {
    ($name:literal, [$($entry:literal),* $(,)?]) => {
        kernel_file!($name, prelude = "", [$($entry),*])
    };
    ($name:literal, prelude = $prelude:expr, [$($entry:literal),* $(,)?]) => {
        KernelFile {
            name: $name,
            source: include_str!(concat!("../kernels/", $name, ".cu")),
            entries: &[$($entry),*],
            prelude: $prelude,
        }
    };
}

pub const RMSNORM: KernelFile = kernel_file!("rmsnorm", ["rmsnorm_fwd_f32", "rmsnorm_fwd_bf16"]);
pub const ROPE: KernelFile = kernel_file!(
    "rope",
    [
        "rope_fwd_f32",
        "rope_fwd_bf16",
        "rope_pos_fwd_f32",
        "rope_pos_fwd_bf16"
    ]
);
pub const EMBEDDING: KernelFile =
    kernel_file!("embedding", ["embedding_fwd_f32", "embedding_fwd_bf16"]);
pub const SWIGLU: KernelFile = kernel_file!(
    "swiglu",
    [
        "swiglu_fwd_f32",
        "swiglu_fwd_bf16",
        "swiglu_fused_fwd_f32",
        "swiglu_fused_fwd_bf16",
    ]
);
pub const CAUSAL_CONV: KernelFile = kernel_file!(
    "causal_conv",
    [
        "causal_conv1d_silu_fwd_f32",
        "causal_conv1d_silu_fwd_bf16",
        "causal_conv1d_silu_fwd_k4_f32",
        "causal_conv1d_silu_fwd_k4_bf16",
        "causal_conv1d_state_fwd_f32",
        "causal_conv1d_state_fwd_bf16",
        "causal_conv1d_update_fwd_f32",
        "causal_conv1d_update_fwd_bf16",
    ]
);
pub const SELECTIVE_SCAN: KernelFile = kernel_file!(
    "selective_scan",
    [
        "selective_scan_fwd_f32_n1",
        "selective_scan_fwd_f32_n2",
        "selective_scan_fwd_f32_n4",
        "selective_scan_fwd_f32_n8",
        "selective_scan_fwd_f32_n16",
        "selective_scan_fwd_f32_n32",
        "selective_scan_fwd_bf16_n1",
        "selective_scan_fwd_bf16_n2",
        "selective_scan_fwd_bf16_n4",
        "selective_scan_fwd_bf16_n8",
        "selective_scan_fwd_bf16_n16",
        "selective_scan_fwd_bf16_n32",
        "selective_scan_lanes_fwd_f32_n1",
        "selective_scan_lanes_fwd_f32_n2",
        "selective_scan_lanes_fwd_f32_n4",
        "selective_scan_lanes_fwd_f32_n8",
        "selective_scan_lanes_fwd_f32_n16",
        "selective_scan_lanes_fwd_f32_n32",
        "selective_scan_lanes_fwd_bf16_n1",
        "selective_scan_lanes_fwd_bf16_n2",
        "selective_scan_lanes_fwd_bf16_n4",
        "selective_scan_lanes_fwd_bf16_n8",
        "selective_scan_lanes_fwd_bf16_n16",
        "selective_scan_lanes_fwd_bf16_n32",
        "selective_scan_carry_f32",
        "selective_scan_carry_bf16",
    ]
);
pub const ATTENTION: KernelFile =
    kernel_file!("attention", ["attention_fwd_f32", "attention_fwd_bf16"]);
pub const ATTENTION_MMA: KernelFile = kernel_file!(
    "attention_mma",
    [
        "attention_mma_fwd_bf16_hd64",
        "attention_mma_fwd_bf16_hd128"
    ]
);
pub const ATTENTION_DECODE: KernelFile = kernel_file!(
    "attention_decode",
    prelude = PDL,
    ["attention_decode_fwd_f32", "attention_decode_fwd_bf16"]
);
pub const CROSS_ENTROPY: KernelFile = kernel_file!(
    "cross_entropy",
    ["cross_entropy_fwd_f32", "cross_entropy_fwd_bf16"]
);
pub const RESIDUAL: KernelFile = kernel_file!(
    "residual",
    prelude = PDL,
    [
        "embedding_residual_fwd_f32",
        "embedding_residual_fwd_bf16",
        "residual_rmsnorm_fwd_f32",
        "residual_rmsnorm_fwd_bf16",
    ]
);
pub const GEMV: KernelFile = kernel_file!(
    "gemv",
    prelude = PDL,
    [
        "gemv_fwd_f32",
        "gemv_fwd_bf16",
        "gemv_swiglu_fwd_f32",
        "gemv_swiglu_fwd_bf16",
        "gemv_rope_fwd_f32",
        "gemv_rope_fwd_bf16",
        "gemv_conv_fwd_f32",
        "gemv_conv_fwd_bf16",
    ]
);
pub const MAMBA_DECODE: KernelFile = kernel_file!(
    "mamba_decode",
    prelude = PDL,
    ["mamba_scan_step_fwd_f32", "mamba_scan_step_fwd_bf16"]
);
pub const STATE: KernelFile = kernel_file!(
    "state",
    prelude = PDL,
    [
        "kv_cache_write_f32",
        "kv_cache_write_bf16",
        "positions_advance"
    ]
);
/// The files the persistent kernel takes in its prelude (the bodies of the step's kernels, entry
/// points and all), after `extra` (defines).
macro_rules! decode_persistent_prelude {
    ($extra:literal) => {
        concat!(
            $extra,
            include_str!("../kernels/pdl.cuh"),
            "\n// ---- kernels/residual.cu\n",
            include_str!("../kernels/residual.cu"),
            "\n// ---- kernels/state.cu\n",
            include_str!("../kernels/state.cu"),
            "\n// ---- kernels/gemv.cu\n",
            include_str!("../kernels/gemv.cu"),
            "\n// ---- kernels/mamba_decode.cu\n",
            include_str!("../kernels/mamba_decode.cu"),
            // two key steps in flight, not four: the registers the persistent kernel has beside
            // the other bodies (ptxas -v: 0-64 bytes of spills at 168 registers, against 304 with
            // four)
            "\n#ifndef DEC_UNROLL\n#define DEC_UNROLL 2\n#endif\n",
            "\n// ---- kernels/attention_decode.cu\n",
            include_str!("../kernels/attention_decode.cu"),
            "\n// ---- kernels/persist_core.cuh\n",
            include_str!("../kernels/persist_core.cuh"),
            "\n// ---- kernels/persist_streamed_attention.cuh\n",
            include_str!("../kernels/persist_streamed_attention.cuh"),
        )
    };
}

/// The whole decoding step as one persistent kernel: the bodies of the step's kernels (their
/// files in the prelude, entry points and all) run as virtual blocks of one grid.
pub const DECODE_PERSISTENT: KernelFile = kernel_file!(
    "decode_persistent",
    prelude = decode_persistent_prelude!(""),
    [
        "decode_persistent_f32",
        "decode_persistent_bf16",
        "decode_persistent_attention_f32",
        "decode_persistent_attention_bf16",
        "decode_persistent_streamed_f32",
        "decode_persistent_streamed_bf16"
    ]
);

/// The streamed entries of the persistent kernel with the attention's out_proj split by heads
/// compiled in (PERSIST_HEADS: opt-in, SAMBA_PERSIST_ATTENTION=stream-heads; a module of its own,
/// so the other entries keep their registers).
pub const DECODE_PERSISTENT_HEADS: KernelFile = KernelFile {
    name: "decode_persistent_heads",
    source: DECODE_PERSISTENT.source,
    entries: &[
        "decode_persistent_streamed_f32",
        "decode_persistent_streamed_bf16",
    ],
    prelude: decode_persistent_prelude!("#define PERSIST_HEADS 1\n"),
};

/// Kernel files that only opt-in paths load (not compiled up front by `load_all_kernels`; the
/// compile test covers them).
pub const OPT_IN_FILES: &[&KernelFile] = &[&DECODE_PERSISTENT_HEADS];

/// Every kernel file, in the order `CudaDevice::load_all_kernels` loads them.
pub const KERNEL_FILES: &[&KernelFile] = &[
    &RMSNORM,
    &ROPE,
    &EMBEDDING,
    &SWIGLU,
    &CAUSAL_CONV,
    &SELECTIVE_SCAN,
    &ATTENTION,
    &ATTENTION_MMA,
    &ATTENTION_DECODE,
    &CROSS_ENTROPY,
    &RESIDUAL,
    &STATE,
    &GEMV,
    &MAMBA_DECODE,
    &DECODE_PERSISTENT,
];

/// Whether libnvrtc can be loaded (from LD_LIBRARY_PATH or the system's library folders).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The NVRTC version as "major.minor".
pub fn nvrtc_version() -> Result<String> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints through valid pointers; the library is present.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    match status {
        cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS => Ok(format!("{major}.{minor}")),
        other => Err(CudaError::Compile {
            file: "(none)",
            arch: String::new(),
            nvrtc: "unknown".into(),
            log: format!("nvrtcVersion failed: {other:?}"),
        }),
    }
}

/// The target architecture NVRTC is asked for, from a compute capability: (9, 0) -> "sm_90".
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Options every kernel is compiled with. No fast math (precise division, square root and exp):
/// the f32 paths are compared with the CPU at 1e-5.
fn options(arch: &str) -> Vec<String> {
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    // Kernels need no CUDA header today; a folder of CUDA headers (the pip wheels' include/)
    // can be given for kernels that will.
    if let Ok(dir) = std::env::var("SAMBA_NVRTC_INCLUDE") {
        if !dir.is_empty() {
            opts.push(format!("--include-path={dir}"));
        }
    }
    // Tuning: `SAMBA_NVRTC_DEFINES="GEMV_VECS=8 GEMV_MIN_BLOCKS=3"` overrides a kernel's
    // compile-time constants (those a file guards with #ifndef) without a rebuild.
    if let Ok(defs) = std::env::var("SAMBA_NVRTC_DEFINES") {
        opts.extend(defs.split_whitespace().map(|d| format!("-D{d}")));
    }
    opts
}

/// The full source NVRTC compiles for one file.
pub fn full_source(file: &KernelFile) -> String {
    format!(
        "{COMMON}\n{}\n// ---- kernels/{}.cu\n{}",
        file.prelude, file.name, file.source
    )
}

/// 64-bit FNV-1a: a stable hash (unlike std's DefaultHasher) for cache file names.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The folder of cached PTX, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("SAMBA_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("samba-lm/kernels"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache/samba-lm/kernels"))
}

/// PTX of one file for `arch`, from the disk cache or compiled by NVRTC (and then cached).
/// Returns the PTX text and whether it came from the cache.
pub fn compile(file: &KernelFile, arch: &str) -> Result<(String, bool)> {
    let nvrtc = nvrtc_version()?;
    let source = full_source(file);
    let opts = options(arch);
    let key = fnv1a(&[&source, arch, &nvrtc, &opts.join(" ")]);
    let path =
        cache_dir().map(|d| d.join(format!("{}-{arch}-nvrtc{nvrtc}-{key:016x}.ptx", file.name)));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        if ptx.contains(".entry") {
            return Ok((ptx, true));
        }
    }
    let ptx = compile_uncached(file, arch)?;
    if let Some(p) = path {
        // Write to a unique temporary name, then rename: concurrent processes never read half a file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let written = p
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&tmp, &ptx))
            .and_then(|_| std::fs::rename(&tmp, &p));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((ptx, false))
}

/// PTX of one file for `arch`, compiled by NVRTC now (no cache read or written). The compile
/// test runs this for every file, so a kernel that does not compile fails CI.
pub fn compile_uncached(file: &KernelFile, arch: &str) -> Result<String> {
    let nvrtc = nvrtc_version()?;
    let compiled = cudarc::nvrtc::compile_ptx_with_opts(
        full_source(file),
        CompileOptions {
            options: options(arch),
            name: Some(format!("{}.cu", file.name)),
            ..Default::default()
        },
    )
    .map_err(|e| compile_error(file, arch, &nvrtc, e))?;
    Ok(compiled.to_src())
}

/// PTX as cudarc loads it.
pub(crate) fn to_ptx(text: String) -> Ptx {
    Ptx::from_src(text)
}

fn compile_error(file: &KernelFile, arch: &str, nvrtc: &str, e: CompileError) -> CudaError {
    let log = match e {
        CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    };
    CudaError::Compile {
        file: file.name,
        arch: arch.to_string(),
        nvrtc: nvrtc.to_string(),
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_is_named_in_its_source() {
        for f in KERNEL_FILES.iter().chain(OPT_IN_FILES) {
            for e in f.entries {
                assert!(
                    f.source.contains(&format!("void {e}(")) || f.source.contains(&format!("{e}(")),
                    "{e} is not defined in kernels/{}.cu",
                    f.name
                );
            }
        }
    }

    #[test]
    fn cache_keys_are_stable_and_distinguish_inputs() {
        assert_eq!(fnv1a(&["a", "b"]), fnv1a(&["a", "b"]));
        assert_ne!(fnv1a(&["ab", ""]), fnv1a(&["a", "b"]));
        assert_eq!(arch_for(9, 0), "sm_90");
    }
}
