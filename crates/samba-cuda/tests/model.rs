//! The whole model on the GPU against the CPU model (`samba_cpu::CpuModel`): logits of the tiny
//! preset in every layout (f32 storage within 1e-5, bf16 within 1e-2 relative) and of
//! samba-421m with random initialisation (bf16 within 1e-2); and, on the GPU alone, decoding
//! token by token and chunked prefill against one forward over the whole sequence, with the
//! states left by different chunkings equal (and equal to the CPU's).
//!
//! bf16 runs: the weights are rounded to bf16 on upload and the GPU stores its activations in
//! bf16 (the residual stream, the SSM state and the logits stay f32). The CPU reference runs on
//! the same rounded weights and rounds its activations to bf16 at the same points
//! (`ActivationStorage::Bf16`, whose doc lists them), so what is left between the two is the
//! order of the sums (a value now and then rounded to the neighbouring bf16) and the
//! tensor-core attention's bf16 softmax weights. As an estimate of the first: on the CPU,
//! nudging the weights by a few f32 ulps moved the tiny preset's logits 1e-7..4e-3 (relative L2)
//! from the reference. The distance to the CPU model with f32 activations, what the GPU's
//! rounding alone adds (4e-3..1.05e-2 on the tiny preset), is printed beside it for information.
//!
//! Error measures: f32 outputs and GPU-against-GPU comparisons, as in tests/parity.rs,
//! max |gpu - cpu| / max |cpu|; bf16 outputs against the CPU, ||gpu - cpu||_2 / ||cpu||_2 (the
//! max-relative error is printed beside it).
//! Skipped without a GPU.

use std::sync::Arc;

use half::bf16;
use samba_cpu::{ActivationStorage, BatchShape, CpuModel, DecodeState};
use samba_cuda::ops::attention::AttentionKernel;
use samba_cuda::{CudaDecodeState, CudaDevice, CudaModel, DecodeKernels, Elem, LogitRows};
use samba_model::init::init_params;
use samba_model::preset::{preset, preset_with_layout};
use samba_model::{Config, Layout, ParamLayout, Sublayer};

mod common;
use common::*;

/// Reference-initialised parameters with every 1-D tensor (norms, biases, D, A_log) perturbed,
/// so a kernel that ignored one would show.
fn params(config: &Config, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let mut p = init_params(&layout, seed);
    let noise = samba_cpu::testing::random_vec(p.len(), seed + 1, 0.2);
    for spec in &layout.tensors {
        if spec.shape.len() == 1 || spec.name.ends_with("A_log") {
            for i in spec.range() {
                p[i] += noise[i];
            }
        }
    }
    p
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    samba_cpu::testing::random_vec(n, seed, 1.0)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * vocab as f32) as usize).min(vocab - 1) as u32)
        .collect()
}

/// The CPU models a GPU model storing T is measured against, on the weights as T stores them:
/// first the reference, storing its activations as the GPU does (bf16: rounded at the GPU's
/// points, `ActivationStorage::Bf16`); for bf16 then the model with f32 activations, its
/// distance printed for information.
fn cpu_models<T: Elem>(config: &Config, p: &[f32]) -> Vec<CpuModel> {
    let model =
        |storage| CpuModel::new(config.clone(), rounded::<T>(p)).with_activation_storage(storage);
    if T::SUFFIX == "f32" {
        vec![model(ActivationStorage::F32)]
    } else {
        vec![
            model(ActivationStorage::Bf16),
            model(ActivationStorage::F32),
        ]
    }
}

fn cpu_logits(models: &[CpuModel], tokens: &[u32], shape: BatchShape) -> Vec<Vec<f32>> {
    models
        .iter()
        .map(|m| m.logits(tokens, shape).expect("cpu forward"))
        .collect()
}

fn gpu_logits<T: Elem>(model: &CudaModel<T>, tokens: &[u32], shape: BatchShape) -> Vec<f32> {
    let mut acts = model
        .activations(shape, LogitRows::All)
        .expect("activations");
    let dev = model.device();
    dev.fill(&mut acts.logits, f32::NAN).expect("poison logits");
    model.forward(&mut acts, tokens).expect("gpu forward");
    acts.logits_f32(dev).expect("download logits")
}

/// Two whole-model results computed in different orders (GPU against CPU, or two GPU paths whose
/// GEMMs pick different kernels): f32 max-relative within 1e-5, bf16 norm-wise within 1e-2.
fn whole_model<T: Elem>(name: &str, shape: &str, gpu: &[f32], cpu: &[f32]) {
    if T::SUFFIX == "f32" {
        expect(name, T::SUFFIX, shape, gpu, cpu, F32_TOL);
    } else {
        expect_l2(name, T::SUFFIX, shape, gpu, cpu, BF16_TOL);
    }
}

/// A GPU result against the results of the [`cpu_models`], in their order: the reference's
/// checked as [`whole_model`], the f32-activation model's printed for information.
fn against_cpu<T: Elem>(name: &str, shape: &str, gpu: &[f32], cpu: &[Vec<f32>]) {
    whole_model::<T>(name, shape, gpu, &cpu[0]);
    for plain in &cpu[1..] {
        println!(
            "PARITY {name:<24} {:<5} {shape:<44} rel_l2  {:9.2e}  (information: f32 activations)",
            T::SUFFIX,
            rel_err_l2(gpu, plain)
        );
    }
}

fn logits_case<T: Elem>(
    dev: &Arc<CudaDevice>,
    name: &str,
    config: &Config,
    p: &[f32],
    shape: BatchShape,
    seed: u64,
) {
    let tokens = random_tokens(shape.rows(), config.vocab, seed);
    let cpu = cpu_logits(&cpu_models::<T>(config, p), &tokens, shape);
    let model = CudaModel::<T>::new(dev.clone(), config.clone(), p).expect("upload model");
    let gpu = gpu_logits(&model, &tokens, shape);
    let what = format!("b{} s{}", shape.batch, shape.seq);
    against_cpu::<T>(&format!("logits {name}"), &what, &gpu, &cpu);
}

#[test]
fn tiny_logits_match_cpu_for_every_layout() {
    let Some(dev) = device() else { return };
    let s = seed("tiny logits");
    let shape = BatchShape { batch: 2, seq: 21 };
    for (i, layout) in Layout::ALL.into_iter().enumerate() {
        let config = preset_with_layout("tiny", layout).expect("preset");
        let p = params(&config, s + i as u64);
        let name = format!("tiny {layout}");
        logits_case::<f32>(dev, &name, &config, &p, shape, s + 100 + i as u64);
        logits_case::<bf16>(dev, &name, &config, &p, shape, s + 200 + i as u64);
    }
    all_passed();
}

#[test]
fn samba_421m_logits_match_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("samba-421m logits");
    let config = preset("samba-421m").expect("preset");
    let p = init_params(&ParamLayout::new(&config), s);
    let shape = BatchShape { batch: 1, seq: 40 };
    let tokens = random_tokens(shape.rows(), config.vocab, s + 1);
    // bf16 (the tensor-core attention and the SIMT one) against the CPU on rounded weights
    // (the tensor-core kernel also rounds its softmax weights, which the CPU does not).
    let cpu = cpu_logits(&cpu_models::<bf16>(&config, &p), &tokens, shape);
    let mut model = CudaModel::<bf16>::new(dev.clone(), config.clone(), &p).expect("upload");
    for kernel in [AttentionKernel::TensorCore, AttentionKernel::Simt] {
        model.attention_kernel = kernel;
        let gpu = gpu_logits(&model, &tokens, shape);
        against_cpu::<bf16>(
            &format!("logits samba-421m {kernel:?}"),
            "b1 s40 random init",
            &gpu,
            &cpu,
        );
    }
    drop(model);
    // f32 storage: printed for information (a deep stack of f32 GEMMs summed in another order).
    let cpu = CpuModel::new(config.clone(), p.clone())
        .logits(&tokens, shape)
        .expect("cpu forward");
    let model = CudaModel::<f32>::new(dev.clone(), config, &p).expect("upload");
    let gpu = gpu_logits(&model, &tokens, shape);
    println!(
        "PARITY {:<24} {:<5} {:<44} rel_err {:9.2e}  (information)",
        "logits samba-421m",
        "f32",
        "b1 s40 random init",
        rel_err(&gpu, &cpu)
    );
    all_passed();
}

/// Decoding token by token and chunked prefill with several chunk sizes against one forward,
/// all on the GPU; the final states of every chunking against each other and the CPU's.
#[allow(clippy::too_many_arguments)]
fn decode_case<T: Elem>(
    dev: &Arc<CudaDevice>,
    name: &str,
    config: &Config,
    p: &[f32],
    batch: usize,
    seq: usize,
    chunks: &[usize],
    seed: u64,
    kernels: DecodeKernels,
) {
    let model = CudaModel::<T>::new(dev.clone(), config.clone(), p).expect("upload");
    let vocab = config.vocab;
    let tokens = random_tokens(batch * seq, vocab, seed);
    let full = gpu_logits(&model, &tokens, BatchShape { batch, seq });
    let tol = tol::<T>();
    let max_context = seq + 1;
    let label = |what: &str| format!("{name} {what}");

    // Token by token through decode_step (the captured graph from the second step on).
    let mut state = CudaDecodeState::new(&model, batch, max_context).expect("state");
    let mut acts = model
        .activations(BatchShape { batch, seq: 1 }, LogitRows::Last)
        .expect("activations");
    acts.set_decode_kernels(kernels);
    let mut stepped = vec![0.0f32; batch * seq * vocab];
    for t in 0..seq {
        let step: Vec<u32> = (0..batch).map(|b| tokens[b * seq + t]).collect();
        dev.fill(&mut acts.logits, f32::NAN).expect("poison");
        model
            .decode_step(&mut acts, &step, &mut state)
            .expect("decode step");
        let l = acts.logits_f32(dev).expect("logits");
        for b in 0..batch {
            stepped[(b * seq + t) * vocab..][..vocab].copy_from_slice(&l[b * vocab..][..vocab]);
        }
    }
    // The persistent kernel takes batch 1; a larger batch falls back to the fused graph (to the
    // unfused one with Auto).
    if matches!(kernels, DecodeKernels::Persistent | DecodeKernels::Auto) {
        assert_eq!(
            acts.persistent_active(),
            batch == 1,
            "{name} b{batch}: persistent step active {}, error: {}",
            acts.persistent_active(),
            acts.persistent_error().unwrap_or("none")
        );
    }
    // x_proj runs folded into in_proj's phase in every Mamba layer when there are two or more
    // (each layer's sums are zeroed by another's scan step), unless switched off
    if acts.persistent_active() && std::env::var("SAMBA_PERSIST_FOLD").map_or(true, |v| v != "0") {
        let mamba = (0..config.n_layer)
            .filter(|&i| config.layout.sublayers(i).contains(&Sublayer::Mamba))
            .count();
        let want = if mamba >= 2 { mamba } else { 0 };
        assert_eq!(
            acts.persistent_folded_layers(),
            want,
            "{name}: layers with x_proj folded"
        );
    }
    // By default every attention layer runs as a phase of the persistent step (stream-heads: and
    // its out_proj, split by heads, merges it; own or 1: none does)
    let place = std::env::var("SAMBA_PERSIST_ATTENTION").unwrap_or_default();
    if acts.persistent_active() {
        let attention = (0..config.n_layer)
            .flat_map(|i| config.layout.sublayers(i))
            .filter(|s| matches!(s, Sublayer::WindowAttention | Sublayer::FullAttention))
            .count();
        let streamed = if place == "own" || place == "1" {
            0
        } else {
            attention
        };
        assert_eq!(
            acts.persistent_streamed_attention_layers(),
            streamed,
            "{name}: attention layers run as streamed phases"
        );
        let heads = if place == "stream-heads" {
            attention
        } else {
            0
        };
        assert_eq!(
            acts.persistent_heads_out_proj_layers(),
            heads,
            "{name}: attention layers merged by out_proj split by heads"
        );
    }
    // SAMBA_PERSIST_ATT_READY=1 with the kernels' STREAM_ATT_READY=1: every streamed attention
    // layer starts per kv group (its RoPE op is the one right before it in every recorded step; a
    // NoPE model's qkv is a plain GEMV and keeps the barrier)
    if acts.persistent_active()
        && config.rope_base.is_some()
        && samba_cuda::model::persistent_attention_ready_enabled()
    {
        assert_eq!(
            acts.persistent_attention_ready_layers(),
            acts.persistent_streamed_attention_layers(),
            "{name}: streamed attention layers started per kv group"
        );
    }
    // SAMBA_PERSIST_LL=1 (or =act) with the kernels' PERSIST_LL=1: in bf16, the GEMV after each
    // SwiGLU (fc2), scan step and streamed attention (out_proj, unless split by heads) reads its
    // input as tagged words (=act: after the SwiGLUs only), but for those that start a launch of
    // the step (at most one per MAX_LAUNCH_OPS ops: none in the tiny layouts)
    if acts.persistent_active() && samba_cuda::model::persistent_ll_enabled() {
        let count = |f: fn(&Sublayer) -> bool| {
            (0..config.n_layer)
                .flat_map(|i| config.layout.sublayers(i))
                .filter(|s| f(s))
                .count()
        };
        let every = std::env::var("SAMBA_PERSIST_LL").is_ok_and(|v| v == "1");
        let want = [
            // (a folded fc2 is no op of its own: SAMBA_PERSIST_FC2_FOLD)
            count(|s| matches!(s, Sublayer::Mlp | Sublayer::Mlp2))
                - acts.persistent_fc2_folded_layers(),
            if every {
                count(|s| matches!(s, Sublayer::Mamba))
            } else {
                0
            },
            if every {
                acts.persistent_streamed_attention_layers()
                    - acts.persistent_heads_out_proj_layers()
            } else {
                0
            },
        ];
        let got = acts.persistent_ll_sites();
        if size_of::<T>() == 2 {
            let (w, g): (usize, usize) = (want.iter().sum(), got.iter().sum());
            assert!(
                (0..3).all(|i| got[i] <= want[i] && (want[i] == 0 || got[i] > 0)) && g + w / 8 >= w,
                "{name}: tagged inputs after SwiGLU, scan, attention: {got:?} of {want:?}"
            );
        } else {
            assert_eq!(got, [0; 3], "{name}: the tagged inputs are bf16 only");
        }
    }
    // SAMBA_PERSIST_FC2_FOLD=1: every MLP's fc2 runs folded into its SwiGLU phase
    if acts.persistent_active() && std::env::var("SAMBA_PERSIST_FC2_FOLD").is_ok_and(|v| v == "1") {
        let mlps = (0..config.n_layer)
            .flat_map(|i| config.layout.sublayers(i))
            .filter(|s| matches!(s, Sublayer::Mlp | Sublayer::Mlp2))
            .count();
        assert_eq!(
            acts.persistent_fc2_folded_layers(),
            mlps,
            "{name}: MLPs with fc2 folded"
        );
    }
    let graph = if acts.persistent_active() {
        format!(
            "persistent kernel, x_proj folded in {} layers, fc2 in {}, {} streamed attention layers ({} merged by out_proj, {} started per kv group), tagged inputs {:?}",
            acts.persistent_folded_layers(),
            acts.persistent_fc2_folded_layers(),
            acts.persistent_streamed_attention_layers(),
            acts.persistent_heads_out_proj_layers(),
            acts.persistent_attention_ready_layers(),
            acts.persistent_ll_sites()
        )
    } else if acts.graph_captured() {
        "graph".to_string()
    } else {
        format!("NO GRAPH: {}", acts.graph_error().unwrap_or("?"))
    };
    expect(
        &label("decode == forward"),
        T::SUFFIX,
        &format!("b{batch} s{seq} ({graph})"),
        &stepped,
        &full,
        tol,
    );
    let reference_state = state.flatten(dev, config).expect("flatten");

    // The CPU's state after the same tokens (weights and activations as stored).
    let cpu_states: Vec<Vec<f32>> = cpu_models::<T>(config, p)
        .iter()
        .map(|cpu| {
            let mut cpu_state = DecodeState::new(cpu, batch, max_context);
            let mut cpu_acts = cpu.activations(BatchShape { batch, seq });
            cpu.forward_with_state(&mut cpu_acts, &tokens, &mut cpu_state)
                .expect("cpu prefill");
            cpu_state.flatten()
        })
        .collect();
    against_cpu::<T>(
        &label("state == cpu state"),
        &format!("b{batch} s{seq}"),
        &reference_state,
        &cpu_states,
    );

    // Chunked prefill: logits of every chunk against the full forward, final state against
    // the token-by-token one.
    for &chunk in chunks {
        let mut state = CudaDecodeState::new(&model, batch, max_context).expect("state");
        let mut got = vec![0.0f32; batch * seq * vocab];
        let mut t0 = 0;
        while t0 < seq {
            let len = chunk.min(seq - t0);
            let part: Vec<u32> = (0..batch)
                .flat_map(|b| tokens[b * seq + t0..b * seq + t0 + len].to_vec())
                .collect();
            let mut acts = model
                .activations(BatchShape { batch, seq: len }, LogitRows::All)
                .expect("activations");
            dev.fill(&mut acts.logits, f32::NAN).expect("poison");
            model
                .forward_with_state(&mut acts, &part, &mut state)
                .expect("chunk");
            let l = acts.logits_f32(dev).expect("logits");
            for b in 0..batch {
                for t in 0..len {
                    got[(b * seq + t0 + t) * vocab..][..vocab]
                        .copy_from_slice(&l[(b * len + t) * vocab..][..vocab]);
                }
            }
            t0 += len;
        }
        expect(
            &label(&format!("chunks of {chunk}")),
            T::SUFFIX,
            &format!("b{batch} s{seq}"),
            &got,
            &full,
            tol,
        );
        // The chunk's GEMMs run on many rows, the steps' on one: in bf16 their roundings differ
        // (samba-421m: up to ~1.2e-2 max-relative on fresh seeds), so norm-wise as above.
        whole_model::<T>(
            &label(&format!("chunks of {chunk} state")),
            &format!("b{batch} s{seq}"),
            &state.flatten(dev, config).expect("flatten"),
            &reference_state,
        );
    }
}

#[test]
fn decode_and_chunked_prefill_equal_forward_for_every_layout() {
    let Some(dev) = device() else { return };
    let s = seed("decode == forward");
    for (i, layout) in Layout::ALL.into_iter().enumerate() {
        let config = preset_with_layout("tiny", layout).expect("preset");
        let p = params(&config, s + i as u64);
        let name = format!("tiny {layout}");
        // seq 19 crosses the window (8) twice; chunks of 17+ take the parallel conv path.
        decode_case::<f32>(
            dev,
            &name,
            &config,
            &p,
            2,
            19,
            &[1, 3, 7, 19],
            s + 50,
            DecodeKernels::from_env(),
        );
        decode_case::<bf16>(
            dev,
            &name,
            &config,
            &p,
            2,
            19,
            &[3, 19],
            s + 60,
            DecodeKernels::from_env(),
        );
    }
    all_passed();
}

/// Small models with Samba-sized heads (head_dim 128 and 64, MHA and GQA) so prefill chunks run
/// on the tensor cores with a ring cache and a window that the sequence crosses.
#[test]
fn decode_and_chunked_prefill_on_tensor_cores() {
    let Some(dev) = device() else { return };
    let s = seed("tensor-core chunks");
    let base = preset("samba-421m").expect("preset");
    let small = |heads, kv_heads, head_dim, window| Config {
        n_layer: 2,
        d_model: 256,
        heads,
        kv_heads,
        head_dim,
        mlp_hidden: 512,
        window,
        dt_rank: 16,
        vocab: 512,
        ..base.clone()
    };
    for (i, config) in [small(2, 2, 128, 70), small(4, 2, 64, 50)]
        .into_iter()
        .enumerate()
    {
        let p = params(&config, s + i as u64);
        let name = format!(
            "h{}/{} hd{} w{}",
            config.heads, config.kv_heads, config.head_dim, config.window
        );
        decode_case::<bf16>(
            dev,
            &name,
            &config,
            &p,
            2,
            150,
            &[33, 64, 150],
            s + 10 + i as u64,
            DecodeKernels::from_env(),
        );
        let mut llama = config.clone();
        llama.layout = Layout::Llama;
        llama.tied_embeddings = false;
        let p = params(&llama, s + 20 + i as u64);
        decode_case::<bf16>(
            dev,
            &format!("llama {name}"),
            &llama,
            &p,
            1,
            150,
            &[64, 150],
            s + 30,
            DecodeKernels::from_env(),
        );
    }
    all_passed();
}

#[test]
fn samba_421m_decode_equals_forward() {
    let Some(dev) = device() else { return };
    let s = seed("samba-421m decode");
    let config = preset("samba-421m").expect("preset");
    let p = init_params(&ParamLayout::new(&config), s);
    decode_case::<bf16>(
        dev,
        "samba-421m",
        &config,
        &p,
        2,
        24,
        &[24],
        s + 1,
        DecodeKernels::from_env(),
    );
    all_passed();
}

/// The persistent decoding step (the fused step's kernels as phases of persistent kernels)
/// against the forward and the CPU, for every layout and samba-421m, over enough steps that its
/// barrier counter runs on across launches; at batch 1 it must have run, at batch 2 it must have
/// fallen back to the fused graph.
#[test]
fn persistent_decode_equals_forward() {
    let Some(dev) = device() else { return };
    let s = seed("persistent decode");
    for (i, layout) in Layout::ALL.into_iter().enumerate() {
        let config = preset_with_layout("tiny", layout).expect("preset");
        let p = params(&config, s + i as u64);
        let name = format!("tiny {layout} persistent");
        let k = DecodeKernels::Persistent;
        decode_case::<f32>(dev, &name, &config, &p, 1, 19, &[], s + 50, k);
        decode_case::<bf16>(dev, &name, &config, &p, 1, 19, &[], s + 60, k);
    }
    let config = preset_with_layout("tiny", Layout::Samba).expect("preset");
    let p = params(&config, s + 40);
    let k = DecodeKernels::Persistent;
    decode_case::<bf16>(dev, "tiny samba b2", &config, &p, 2, 19, &[], s + 70, k);
    // Auto: the persistent kernel at batch 1, the unfused graph at batch 2; and the unfused
    // graph at batch 1, which Auto no longer takes there.
    for (name, batch, k) in [
        ("tiny samba auto b1", 1, DecodeKernels::Auto),
        ("tiny samba auto b2", 2, DecodeKernels::Auto),
        ("tiny samba unfused b1", 1, DecodeKernels::Unfused),
    ] {
        decode_case::<bf16>(dev, name, &config, &p, batch, 19, &[], s + 80, k);
    }
    let config = preset("samba-421m").expect("preset");
    let p = init_params(&ParamLayout::new(&config), s);
    let k = DecodeKernels::Persistent;
    decode_case::<bf16>(
        dev,
        "samba-421m persistent",
        &config,
        &p,
        1,
        24,
        &[],
        s + 1,
        k,
    );
    all_passed();
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(dev) = device() else { return };
    let config = preset("tiny").expect("preset");
    let p = params(&config, 1);
    let model = CudaModel::<f32>::new(dev.clone(), config.clone(), &p).expect("upload");
    let mut acts = model
        .activations(BatchShape { batch: 1, seq: 4 }, LogitRows::All)
        .expect("activations");
    let err = model.forward(&mut acts, &[1, 2, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            samba_cuda::CudaError::Input(samba_cpu::CpuError::WrongLength { .. })
        ),
        "{err}"
    );
    let err = model.forward(&mut acts, &[1, 2, 3, 64]).unwrap_err();
    assert!(
        matches!(
            err,
            samba_cuda::CudaError::Input(samba_cpu::CpuError::TokenOutOfVocab { position: 3, .. })
        ),
        "{err}"
    );
    assert!(CudaModel::<f32>::new(dev.clone(), config.clone(), &p[1..]).is_err());
    let mut state = CudaDecodeState::new(&model, 2, 8).expect("state");
    let err = model
        .forward_with_state(&mut acts, &[1, 2, 3, 4], &mut state)
        .unwrap_err();
    assert!(
        matches!(
            err,
            samba_cuda::CudaError::Input(samba_cpu::CpuError::BatchMismatch { .. })
        ),
        "{err}"
    );
}

/// `CudaDecodeState::{try_clone, stack, select}` against the CPU's `DecodeState::{clone,
/// stack, select}` on the same weights: three sequences of different lengths (so different
/// positions and ring offsets, past the window), one of them a clone, stacked; a batched step;
/// a select that drops, reorders and repeats rows; another step. States (in the CPU's flatten
/// order) and logits are compared after every operation, and the clone's source is checked
/// untouched. f32 is the sharp check (1e-5); bf16, against the CPU rounding its activations as
/// the GPU does, is held to 1e-2 L2 (see the module doc), its distance to the CPU with f32
/// activations printed.
fn state_ops_case<T: Elem>(dev: &Arc<CudaDevice>, name: &str, config: &Config, p: &[f32]) {
    let vocab = config.vocab;
    let max_context = 64;
    let model = CudaModel::<T>::new(dev.clone(), config.clone(), p).expect("upload");
    let cpus = cpu_models::<T>(config, p);
    let lengths = [5, 11, 19];
    let mut gpu_states = Vec::new();
    // [CPU model][sequence]
    let mut cpu_states: Vec<Vec<DecodeState>> = cpus.iter().map(|_| Vec::new()).collect();
    for (i, &len) in lengths.iter().enumerate() {
        let tokens = random_tokens(len, vocab, 100 + i as u64);
        let shape = BatchShape { batch: 1, seq: len };
        let mut state = CudaDecodeState::new(&model, 1, max_context).expect("state");
        let mut acts = model
            .activations(shape, LogitRows::Last)
            .expect("activations");
        model
            .forward_with_state(&mut acts, &tokens, &mut state)
            .expect("gpu prefill");
        gpu_states.push(state);
        for (cpu, states) in cpus.iter().zip(&mut cpu_states) {
            let mut state = DecodeState::new(cpu, 1, max_context);
            let mut acts = cpu.activations(shape);
            cpu.forward_with_state(&mut acts, &tokens, &mut state)
                .expect("cpu prefill");
            states.push(state);
        }
    }
    let label = |what: &str| format!("{name} {what}");
    let flat = |s: &CudaDecodeState<T>| s.flatten(dev, config).expect("flatten");
    let flat_cpu =
        |hosts: &[DecodeState]| hosts.iter().map(DecodeState::flatten).collect::<Vec<_>>();

    // The middle sequence goes in as a clone; its source must not move.
    let source_before = flat(&gpu_states[1]);
    let clone = gpu_states[1].try_clone(&model).expect("clone");
    assert_eq!(clone.positions(), gpu_states[1].positions());
    expect(
        &label("try_clone state"),
        T::SUFFIX,
        "b1",
        &flat(&clone),
        &source_before,
        0.0,
    );
    let stack_in = [
        gpu_states[0].try_clone(&model).expect("clone"),
        clone,
        gpu_states[2].try_clone(&model).expect("clone"),
    ];
    let mut gpu = CudaDecodeState::stack(&model, &stack_in).expect("stack");
    // One stacked state per CPU model.
    let mut hosts: Vec<DecodeState> = cpu_states.into_iter().map(DecodeState::stack).collect();
    assert_eq!(
        gpu.positions(),
        hosts[0].positions(),
        "{name}: stacked positions"
    );
    against_cpu::<T>(&label("stack state"), "b3", &flat(&gpu), &flat_cpu(&hosts));

    let step = |gpu: &mut CudaDecodeState<T>, hosts: &mut [DecodeState], seed: u64, what: &str| {
        let batch = gpu.batch();
        let tokens = random_tokens(batch, vocab, seed);
        let shape = BatchShape { batch, seq: 1 };
        let mut acts = model
            .activations(shape, LogitRows::Last)
            .expect("activations");
        dev.fill(&mut acts.logits, f32::NAN).expect("poison");
        model
            .decode_step(&mut acts, &tokens, gpu)
            .expect("gpu step");
        let cpu_logits: Vec<Vec<f32>> = cpus
            .iter()
            .zip(hosts.iter_mut())
            .map(|(cpu, host)| {
                let mut cpu_acts = cpu.activations(shape);
                cpu.forward_with_state(&mut cpu_acts, &tokens, host)
                    .expect("cpu step");
                cpu_acts.logits
            })
            .collect();
        let b = format!("b{batch}");
        against_cpu::<T>(
            &label(&format!("{what} logits")),
            &b,
            &acts.logits_f32(dev).expect("logits"),
            &cpu_logits,
        );
        against_cpu::<T>(
            &label(&format!("{what} state")),
            &b,
            &flat(gpu),
            &flat_cpu(hosts),
        );
    };
    step(&mut gpu, &mut hosts, 7, "step after stack");
    expect(
        &label("clone source untouched"),
        T::SUFFIX,
        "b1",
        &flat(&gpu_states[1]),
        &source_before,
        0.0,
    );

    // Drop row 1, reorder, and repeat row 0 (a repeat is a run of its own).
    let keep = [2, 0, 0];
    gpu.select(&model, &keep).expect("select");
    hosts.iter_mut().for_each(|host| host.select(&keep));
    assert_eq!(
        gpu.positions(),
        hosts[0].positions(),
        "{name}: selected positions"
    );
    against_cpu::<T>(&label("select state"), "b3", &flat(&gpu), &flat_cpu(&hosts));
    step(&mut gpu, &mut hosts, 8, "step after select");
    assert!(
        gpu.select(&model, &[3]).is_err(),
        "{name}: a row outside the batch is an error"
    );
    gpu.select(&model, &[]).expect("select none");
    assert_eq!(gpu.batch(), 0);
}

#[test]
fn state_clone_stack_and_select_match_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("state clone/stack/select");
    for (i, layout) in Layout::ALL.into_iter().enumerate() {
        let config = preset_with_layout("tiny", layout).expect("preset");
        let p = params(&config, s + i as u64);
        let name = format!("tiny {layout}");
        state_ops_case::<f32>(dev, &name, &config, &p);
        state_ops_case::<bf16>(dev, &name, &config, &p);
    }
    // Full attention of different caps cannot be stacked.
    let config = preset_with_layout("tiny", Layout::Llama).expect("preset");
    let model =
        CudaModel::<f32>::new(dev.clone(), config.clone(), &params(&config, s)).expect("upload");
    let a = CudaDecodeState::new(&model, 1, 16).expect("state");
    let b = CudaDecodeState::new(&model, 1, 32).expect("state");
    assert!(CudaDecodeState::stack(&model, &[a, b]).is_err());
    assert!(CudaDecodeState::<f32>::stack(&model, &[]).is_err());
    all_passed();
}
