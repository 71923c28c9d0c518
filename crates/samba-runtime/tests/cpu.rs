//! The engine on the CPU: the contract of tests/common against `CpuModel`'s full forward, for
//! every layout; input errors before any work; `--device` parsing.

mod common;

use common::{config, params, suite, tokens, Tol};
use samba_cpu::{CpuError, CpuModel};
use samba_model::Layout;
use samba_runtime::{open, Device, Engine, EngineState, GpuDtype, RuntimeError};

/// f32 against f32: only the order of sums differs (the log-sum-exp in f32).
const CPU_TOL: Tol = Tol {
    max: 1e-4,
    mean: 1e-5,
};

fn engine(layout: Layout, seed: u64) -> (Engine, CpuModel) {
    let config = config(layout);
    let p = params(&config, seed);
    let engine =
        Engine::new(config.clone(), p.clone(), &Device::Cpu, GpuDtype::Bf16).expect("cpu engine");
    (engine, CpuModel::new(config, p))
}

#[test]
fn the_cpu_engine_keeps_the_contract_for_every_layout() {
    for (i, layout) in Layout::ALL.into_iter().enumerate() {
        let (engine, reference) = engine(layout, 3 + i as u64);
        assert_eq!(engine.describe(), "cpu");
        suite(&format!("cpu {layout}"), &engine, &reference, CPU_TOL);
    }
}

#[test]
fn bad_inputs_are_errors_before_any_work() {
    let (engine, _) = engine(Layout::Samba, 1);
    let vocab = engine.config().vocab;
    let mut state = engine.new_state(1, 64).expect("state");
    let doc = tokens(12, 1, vocab);

    // A bad id anywhere (here in the second chunk) leaves the state untouched.
    let mut bad = doc.clone();
    bad[9] = vocab as u32;
    let err = engine.prefill(&mut state, &bad, 4).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Input(CpuError::TokenOutOfVocab { position: 9, .. })
        ),
        "{err}"
    );
    let err = engine
        .score(&mut state, &doc[..11], &bad[1..], 4, |_| {})
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Input(CpuError::TokenOutOfVocab { .. })),
        "{err}"
    );
    assert_eq!(state.positions(), &[0], "nothing ran");

    let err = engine
        .score(&mut state, &doc[..5], &doc[1..], 4, |_| {})
        .unwrap_err();
    assert!(matches!(err, RuntimeError::TargetCount { .. }), "{err}");
    let err = engine.prefill(&mut state, &[], 4).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Input(CpuError::EmptyInput)),
        "{err}"
    );

    // Prefill and score take one sequence; a step takes one token per sequence.
    let mut two = engine.new_state(2, 64).expect("state");
    let err = engine.prefill(&mut two, &doc, 4).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Input(CpuError::BatchMismatch { .. })),
        "{err}"
    );
    let err = engine.step(&mut two, &[1]).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Input(CpuError::WrongLength { .. })),
        "{err}"
    );

    let err = two.select(&engine, &[0, 2]).unwrap_err();
    assert!(
        matches!(err, RuntimeError::NoSuchRow { row: 2, batch: 2 }),
        "{err}"
    );
    let err = EngineState::stack(&engine, Vec::new()).unwrap_err();
    assert!(matches!(err, RuntimeError::NothingToStack), "{err}");
}

#[test]
fn full_attention_refuses_to_pass_max_context() {
    let (engine, _) = engine(Layout::Llama, 2);
    let mut state = engine.new_state(1, 6).expect("state");
    let doc = tokens(6, 1, engine.config().vocab);
    engine
        .prefill(&mut state, &doc, 4)
        .expect("prefill up to the cap");
    let err = engine.step(&mut state, &[1]).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Input(CpuError::ContextFull { .. })),
        "{err}"
    );
}

#[test]
fn a_bad_parameter_count_is_an_error() {
    let config = config(Layout::Samba);
    let p = params(&config, 1);
    let err = Engine::new(config, p[1..].to_vec(), &Device::Cpu, GpuDtype::Bf16)
        .err()
        .expect("refused");
    assert!(matches!(err, RuntimeError::ParamCount { .. }), "{err}");
}

#[test]
fn device_specs_parse() {
    assert!(matches!(open("cpu"), Ok(Device::Cpu)));
    for bad in ["gpu", "cuda:", "cuda:x", "cuda0", ""] {
        let err = open(bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected auto, cpu, cuda or cuda:N"),
            "{bad}: {err}"
        );
    }
    if !samba_cuda::cuda_available() {
        assert!(matches!(open("auto"), Ok(Device::Cpu)));
        for spec in ["cuda", "cuda:0"] {
            let err = open(spec).unwrap_err();
            assert!(matches!(err, RuntimeError::OpenDevice { .. }), "{err}");
            assert!(err.to_string().contains("--device cuda:0"), "{err}");
        }
    }
    assert!(open("cuda:999").is_err());
    assert_eq!("bf16".parse::<GpuDtype>().ok(), Some(GpuDtype::Bf16));
    assert_eq!("f32".parse::<GpuDtype>().ok(), Some(GpuDtype::F32));
    let err = "f16".parse::<GpuDtype>().unwrap_err();
    assert!(err.to_string().contains("bf16 or f32"), "{err}");
}
