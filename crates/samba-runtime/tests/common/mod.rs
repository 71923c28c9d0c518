//! The engine's contract, checked the same way on every backend: scoring equals a full forward
//! of the CPU reference, decoding after a prefill equals scoring, a cloned state is independent,
//! and stacking and selecting keep each sequence's continuation.
#![allow(dead_code)]

use samba_cpu::testing::random_vec;
use samba_cpu::{BatchShape, CpuModel};
use samba_model::init::init_params;
use samba_model::preset::preset_with_layout;
use samba_model::{Config, Layout, ParamLayout};
use samba_runtime::{Engine, EngineState};

/// How far an engine's log-probabilities (nats) may be from the reference's.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    /// max |got - want|
    pub max: f64,
    /// mean |got - want|
    pub mean: f64,
}

/// The tiny preset in `layout` (window 8), with a small vocabulary.
pub fn config(layout: Layout) -> Config {
    let mut config = preset_with_layout("tiny", layout).expect("tiny preset");
    config.vocab = 41;
    config
}

/// Reference initialisation plus noise, so that every parameter (norms, biases, D, A_log)
/// matters.
pub fn params(config: &Config, seed: u64) -> Vec<f32> {
    let mut p = init_params(&ParamLayout::new(config), seed);
    let noise = random_vec(p.len(), seed + 1, 0.2);
    p.iter_mut().zip(noise).for_each(|(p, n)| *p += n);
    p
}

/// Deterministic token ids below `vocab`, different per `seed`.
pub fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|t| ((t * 13 + seed * 7 + t * t + seed * t) % vocab) as u32)
        .collect()
}

/// log_softmax of one row of logits, in f64.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max
        + row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// log p(tokens[i + 1] | tokens[..=i]) from one full forward of the reference (no state).
pub fn reference_logprobs(model: &CpuModel, tokens: &[u32]) -> Vec<f64> {
    let vocab = model.config.vocab;
    let logits = model
        .logits(
            tokens,
            BatchShape {
                batch: 1,
                seq: tokens.len(),
            },
        )
        .expect("reference forward");
    (0..tokens.len() - 1)
        .map(|i| log_softmax(&logits[i * vocab..(i + 1) * vocab])[tokens[i + 1] as usize])
        .collect()
}

/// Panics naming `what` when `got` is off `want` by more than `tol`; prints the errors.
pub fn compare(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert!(!want.is_empty(), "{what}: nothing to compare");
    let diffs: Vec<f64> = got.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
    let max = diffs
        .iter()
        .fold(0f64, |m, &d| if d.is_nan() { f64::NAN } else { m.max(d) });
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    println!("{what:<60} max |diff| {max:9.2e}  mean {mean:9.2e}");
    assert!(
        max <= tol.max && mean <= tol.mean,
        "{what}: max |diff| {max:.3e} (tolerance {:.1e}), mean {mean:.3e} (tolerance {:.1e})",
        tol.max,
        tol.mean
    );
}

/// Every row of a step's logits [batch, vocab] as log-probabilities.
fn rows(engine: &Engine, logits: &[f32]) -> Vec<Vec<f64>> {
    logits
        .chunks(engine.config().vocab)
        .map(log_softmax)
        .collect()
}

/// Scoring streamed in chunks of several sizes equals the reference's full forward.
pub fn score_matches_reference(name: &str, engine: &Engine, reference: &CpuModel, tol: Tol) {
    let vocab = engine.config().vocab;
    // 40 tokens: past twice the window (8), so the rings wrap.
    let doc = tokens(40, 1, vocab);
    let want = reference_logprobs(reference, &doc);
    for chunk in [1, 5, 16, 64] {
        let mut state = engine.new_state(1, doc.len()).expect("state");
        let mut seen = 0;
        let got = engine
            .score(
                &mut state,
                &doc[..doc.len() - 1],
                &doc[1..],
                chunk,
                |so_far| seen = so_far.len(),
            )
            .expect("score");
        assert_eq!(
            seen,
            got.len(),
            "{name}: on_chunk saw every log-probability"
        );
        assert_eq!(state.positions(), &[doc.len() - 1], "{name}: positions");
        compare(
            &format!("{name}: score, chunks of {chunk}"),
            &got,
            &want,
            tol,
        );
    }
}

/// Prefill then one decoding step at a time gives the log-probabilities scoring gives.
pub fn steps_match_score(name: &str, engine: &Engine, reference: &CpuModel, tol: Tol) {
    let vocab = engine.config().vocab;
    let doc = tokens(30, 2, vocab);
    let want = reference_logprobs(reference, &doc);
    let mut scored_state = engine.new_state(1, doc.len()).expect("state");
    let scored = engine
        .score(
            &mut scored_state,
            &doc[..doc.len() - 1],
            &doc[1..],
            7,
            |_| {},
        )
        .expect("score");
    let prompt = 11;
    let mut state = engine.new_state(1, doc.len()).expect("state");
    let last = engine
        .prefill(&mut state, &doc[..prompt], 4)
        .expect("prefill");
    assert_eq!(
        last.len(),
        vocab,
        "{name}: prefill returns one row of logits"
    );
    let mut got = vec![log_softmax(&last)[doc[prompt] as usize]];
    for t in prompt..doc.len() - 1 {
        let logits = engine.step(&mut state, &[doc[t]]).expect("step");
        assert_eq!(logits.len(), vocab);
        got.push(log_softmax(&logits)[doc[t + 1] as usize]);
    }
    assert_eq!(state.positions(), &[doc.len() - 1], "{name}: positions");
    compare(
        &format!("{name}: prefill + steps vs score"),
        &got,
        &scored[prompt - 1..],
        tol,
    );
    compare(
        &format!("{name}: prefill + steps vs reference"),
        &got,
        &want[prompt - 1..],
        tol,
    );
}

/// A clone goes its own way: stepping it leaves the original as it was, and the original then
/// continues as the clone did.
pub fn clones_are_independent(name: &str, engine: &Engine) {
    let vocab = engine.config().vocab;
    let doc = tokens(13, 3, vocab);
    let next = tokens(4, 4, vocab);
    let mut state = engine.new_state(1, 64).expect("state");
    engine.prefill(&mut state, &doc, 5).expect("prefill");
    let before = state.flatten(engine).expect("flatten");
    let mut clone = state.try_clone(engine).expect("clone");
    assert_eq!(
        clone.flatten(engine).expect("flatten"),
        before,
        "{name}: a clone holds the same state"
    );
    let mut from_clone = Vec::new();
    for &t in &next {
        from_clone.extend(engine.step(&mut clone, &[t]).expect("step clone"));
    }
    assert_eq!(clone.positions(), &[doc.len() + next.len()]);
    assert_eq!(
        state.positions(),
        &[doc.len()],
        "{name}: original's position"
    );
    assert_eq!(
        state.flatten(engine).expect("flatten"),
        before,
        "{name}: stepping the clone changed the original"
    );
    let mut from_original = Vec::new();
    for &t in &next {
        from_original.extend(engine.step(&mut state, &[t]).expect("step original"));
    }
    let tight = Tol {
        max: 1e-5,
        mean: 1e-6,
    };
    compare(
        &format!("{name}: original after the clone vs the clone"),
        &rows(engine, &from_original).concat(),
        &rows(engine, &from_clone).concat(),
        tight,
    );
}

/// Three sequences of different lengths (so different positions and ring offsets), each
/// continued alone, against the same continued as one stacked batch, then after dropping the
/// middle one and reordering the others.
pub fn stack_and_select_keep_each_sequence(name: &str, engine: &Engine, tol: Tol) {
    let vocab = engine.config().vocab;
    let lengths = [5, 11, 19];
    let steps = 6;
    let prompts: Vec<Vec<u32>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| tokens(n, 10 + i, vocab))
        .collect();
    let next: Vec<Vec<u32>> = (0..3).map(|i| tokens(steps, 20 + i, vocab)).collect();
    let prefilled = |i: usize| -> EngineState {
        let mut s = engine.new_state(1, 64).expect("state");
        engine.prefill(&mut s, &prompts[i], 4).expect("prefill");
        s
    };
    // Alone: alone[i][k] = log-probabilities after the k-th continuation token of sequence i.
    let alone: Vec<Vec<Vec<f64>>> = (0..3)
        .map(|i| {
            let mut s = prefilled(i);
            next[i]
                .iter()
                .map(|&t| log_softmax(&engine.step(&mut s, &[t]).expect("step")))
                .collect()
        })
        .collect();

    let mut stacked = EngineState::stack(engine, (0..3).map(prefilled).collect()).expect("stack");
    assert_eq!(stacked.positions(), &lengths, "{name}: stacked positions");
    let half = steps / 2;
    for k in 0..half {
        let step: Vec<u32> = (0..3).map(|i| next[i][k]).collect();
        let got = rows(
            engine,
            &engine.step(&mut stacked, &step).expect("batched step"),
        );
        for i in 0..3 {
            compare(
                &format!("{name}: stacked row {i}, step {k}"),
                &got[i],
                &alone[i][k],
                tol,
            );
        }
    }
    // Drop sequence 1 and swap the others.
    let keep = [2, 0];
    stacked.select(engine, &keep).expect("select");
    assert_eq!(
        stacked.positions(),
        &[lengths[2] + half, lengths[0] + half],
        "{name}: selected positions"
    );
    for k in half..steps {
        let step: Vec<u32> = keep.iter().map(|&i| next[i][k]).collect();
        let got = rows(engine, &engine.step(&mut stacked, &step).expect("step"));
        for (row, &i) in keep.iter().enumerate() {
            compare(
                &format!("{name}: selected row {row} (sequence {i}), step {k}"),
                &got[row],
                &alone[i][k],
                tol,
            );
        }
    }
    // Down to one sequence, then none.
    stacked.select(engine, &[1]).expect("select one");
    assert_eq!(stacked.positions(), &[lengths[0] + steps]);
    stacked.select(engine, &[]).expect("select none");
    assert_eq!(stacked.batch(), 0);
}

/// The whole contract on one engine, for every layout is the caller's loop.
pub fn suite(name: &str, engine: &Engine, reference: &CpuModel, tol: Tol) {
    score_matches_reference(name, engine, reference, tol);
    steps_match_score(name, engine, reference, tol);
    clones_are_independent(name, engine);
    stack_and_select_keep_each_sequence(name, engine, tol);
}
