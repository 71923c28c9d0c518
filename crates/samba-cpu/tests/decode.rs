//! Inference with a carried state: token-by-token decoding and chunked prefill reproduce the
//! full-sequence forward for every layout, over sequences longer than twice the window.

use samba_cpu::testing::{chunked_logits, perturbed_tiny};
use samba_cpu::{BatchShape, CpuError, CpuModel, DecodeState};
use samba_model::Layout;

fn model(layout: Layout) -> CpuModel {
    perturbed_tiny(layout, |p| p)
}

/// Token of sequence b at position t.
fn token(b: usize, t: usize, vocab: usize) -> u32 {
    ((t * 13 + b * 5 + t * t) % vocab) as u32
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-5 * scale,
        "{what}: max difference {worst:e} (scale {scale})"
    );
}

fn check_layout(layout: Layout) {
    let model = model(layout);
    let (batch, seq) = (2, 2 * model.config.window + 5);
    let vocab = model.config.vocab;
    let tokens: Vec<u32> = (0..batch)
        .flat_map(|b| (0..seq).map(move |t| token(b, t, vocab)))
        .collect();
    let full = model
        .logits(&tokens, BatchShape { batch, seq })
        .expect("forward");

    let (stepwise, step_state) = chunked_logits(&model, &tokens, batch, 1, 1 << 20);
    assert_close(&format!("{layout}: token by token"), &stepwise, &full);
    assert_eq!(step_state.positions(), &[seq, seq]);
    for chunk in [3, 7, seq] {
        let (logits, state) = chunked_logits(&model, &tokens, batch, chunk, 1 << 20);
        assert_close(&format!("{layout}: chunks of {chunk}"), &logits, &full);
        assert_close(
            &format!("{layout}: state after chunks of {chunk}"),
            &state.flatten(),
            &step_state.flatten(),
        );
    }
}

#[test]
fn samba_decoding_equals_full_forward() {
    check_layout(Layout::Samba);
}

#[test]
fn mamba_swa_mlp_decoding_equals_full_forward() {
    check_layout(Layout::MambaSwaMlp);
}

#[test]
fn mamba_mlp_decoding_equals_full_forward() {
    check_layout(Layout::MambaMlp);
}

#[test]
fn mamba_decoding_equals_full_forward() {
    check_layout(Layout::Mamba);
}

#[test]
fn llama_decoding_equals_full_forward() {
    check_layout(Layout::Llama);
}

#[test]
fn llama_swa_decoding_equals_full_forward() {
    check_layout(Layout::LlamaSwa);
}

#[test]
fn mlp2_swa_mlp_decoding_equals_full_forward() {
    check_layout(Layout::Mlp2SwaMlp);
}

#[test]
fn state_size_does_not_grow_without_full_attention() {
    let model = model(Layout::Samba);
    let mut state = DecodeState::new(&model, 1, 1 << 20);
    let mut acts = model.activations(BatchShape { batch: 1, seq: 4 });
    let mut sizes = Vec::new();
    for step in 0..12 {
        model
            .forward_with_state(&mut acts, &[1, 2, 3, (step % 40) as u32], &mut state)
            .unwrap();
        sizes.push(state.bytes());
    }
    // Filled once the window is full (8 - 1 positions), constant after.
    assert!(sizes[2..].windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
}

#[test]
fn full_attention_stops_at_its_cap_with_an_error() {
    let model = model(Layout::Llama);
    let mut state = DecodeState::new(&model, 1, 10);
    let mut acts = model.activations(BatchShape { batch: 1, seq: 4 });
    model
        .forward_with_state(&mut acts, &[1, 2, 3, 4], &mut state)
        .unwrap();
    model
        .forward_with_state(&mut acts, &[1, 2, 3, 4], &mut state)
        .unwrap();
    let err = model
        .forward_with_state(&mut acts, &[1, 2, 3, 4], &mut state)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CpuError::ContextFull {
                position: 8,
                tokens: 4,
                max_context: 10
            }
        ),
        "{err}"
    );
}

#[test]
fn stacked_states_decode_like_separate_ones() {
    let model = model(Layout::Samba);
    let vocab = model.config.vocab;
    // Two prompts of different lengths, prefilled separately, then decoded as one batch.
    let prompts = [
        vec![3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5],
        vec![2u32, 7, 1, 8],
    ];
    let mut separate = Vec::new();
    let mut states = Vec::new();
    for prompt in &prompts {
        let mut s = DecodeState::new(&model, 1, 1 << 20);
        let mut acts = model.activations(BatchShape {
            batch: 1,
            seq: prompt.len(),
        });
        model.forward_with_state(&mut acts, prompt, &mut s).unwrap();
        states.push(s);
    }
    for (prompt, s) in prompts.iter().zip(&states) {
        // Reference: decode the next token alone.
        let mut alone = DecodeState::new(&model, 1, 1 << 20);
        let mut acts = model.activations(BatchShape {
            batch: 1,
            seq: prompt.len(),
        });
        model
            .forward_with_state(&mut acts, prompt, &mut alone)
            .unwrap();
        let mut step = model.activations(BatchShape { batch: 1, seq: 1 });
        model
            .forward_with_state(&mut step, &[7], &mut alone)
            .unwrap();
        separate.extend_from_slice(&step.logits);
        assert_eq!(alone.positions()[0], s.positions()[0] + 1);
    }
    let mut batch = DecodeState::stack(states);
    assert_eq!(batch.positions(), &[11, 4]);
    let mut step = model.activations(BatchShape { batch: 2, seq: 1 });
    model
        .forward_with_state(&mut step, &[7, 7], &mut batch)
        .unwrap();
    assert_close("stacked decode", &step.logits, &separate);

    // Dropping the first sequence keeps the second's state.
    batch.select(&[1]);
    assert_eq!(batch.positions(), &[5]);
    let mut one = model.activations(BatchShape { batch: 1, seq: 1 });
    model
        .forward_with_state(&mut one, &[(9 % vocab) as u32], &mut batch)
        .unwrap();
}
