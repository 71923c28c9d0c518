//! Compiles every kernel file with NVRTC for sm_90 (the H200) and sm_80, with or without a
//! GPU: a kernel that does not compile fails here. Needs libnvrtc (the CUDA toolkit, or
//! `pip install nvidia-cuda-nvrtc==13.0.88` with its lib folder on LD_LIBRARY_PATH); without it
//! the test prints a note and passes, unless SAMBA_REQUIRE_NVRTC=1 (set by CI, which installs
//! NVRTC), where a missing NVRTC fails.

use samba_cuda::compile::{
    compile_uncached, nvrtc_available, nvrtc_version, KERNEL_FILES, OPT_IN_FILES,
};

#[test]
fn every_kernel_compiles_with_nvrtc() {
    let required = std::env::var("SAMBA_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    if !nvrtc_available() {
        assert!(
            !required,
            "SAMBA_REQUIRE_NVRTC=1 but libnvrtc could not be loaded; check LD_LIBRARY_PATH"
        );
        eprintln!(
            "skipped: libnvrtc not found (set LD_LIBRARY_PATH to a folder holding libnvrtc.so.13)"
        );
        return;
    }
    let version = nvrtc_version().expect("nvrtc version");
    let mut failures = Vec::new();
    for arch in ["sm_90", "sm_80"] {
        for file in KERNEL_FILES.iter().chain(OPT_IN_FILES) {
            let t0 = std::time::Instant::now();
            match compile_uncached(file, arch) {
                Ok(ptx) => {
                    for entry in file.entries {
                        if !ptx.contains(&format!(".entry {entry}(")) {
                            failures.push(format!(
                                "{}.cu for {arch}: no entry point {entry} in the PTX",
                                file.name
                            ));
                        }
                    }
                    eprintln!(
                        "compiled kernels/{}.cu for {arch} with NVRTC {version} in {:.0} ms ({} entry points)",
                        file.name,
                        t0.elapsed().as_secs_f64() * 1e3,
                        file.entries.len()
                    );
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "kernels that do not compile:\n{}",
        failures.join("\n\n")
    );
}
