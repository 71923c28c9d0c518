//! A small tokenizer and a tiny random model matched to it.
#![allow(dead_code)]

use samba_cpu::testing::random_vec;
use samba_cpu::{BatchShape, CpuModel};
use samba_data::{TextTokenizer, TrainConfig};
use samba_eval::scoring::logprob_of;
use samba_model::init::init_params;
use samba_model::preset::preset;
use samba_model::ParamLayout;
use samba_runtime::Engine;

const CORPUS: &str = "There is an important info hidden inside a lot of irrelevant text. \
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. \
What is the pass key? The pass key is 12345. Remember it. Here is a phone book: \
What is the phone number of Ada Moreno? 415-203-9981 0123456789 yes no maybe \
The quick brown fox jumps over the lazy dog.";

pub fn tokenizer() -> TextTokenizer {
    let docs = std::iter::repeat_n(CORPUS, 20);
    TextTokenizer::train(
        docs,
        &TrainConfig {
            vocab_size: 320,
            min_frequency: 2,
            max_token_length: Some(16),
        },
    )
    .expect("train tokenizer")
}

/// The tiny preset with `vocab` rows, random enough that positions matter, on the CPU.
pub fn model(vocab: usize) -> Engine {
    let mut config = preset("tiny").expect("tiny preset");
    config.vocab = vocab;
    let layout = ParamLayout::new(&config);
    let mut params = init_params(&layout, 3);
    let noise = random_vec(params.len(), 4, 0.2);
    params.iter_mut().zip(noise).for_each(|(p, n)| *p += n);
    Engine::Cpu(CpuModel::new(config, params))
}

/// log p(tokens[i + 1] | tokens[..=i]) from one full forward (no state, no chunks).
pub fn direct_logprobs(engine: &Engine, tokens: &[u32]) -> Vec<f64> {
    let Engine::Cpu(model) = engine else {
        panic!("the tests' models are on the CPU");
    };
    let vocab = model.config.vocab;
    let logits = model
        .logits(
            tokens,
            BatchShape {
                batch: 1,
                seq: tokens.len(),
            },
        )
        .expect("forward");
    (0..tokens.len() - 1)
        .map(|i| logprob_of(&logits[i * vocab..(i + 1) * vocab], tokens[i + 1]))
        .collect()
}

/// Deterministic token ids below `vocab`.
pub fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|t| ((t * 13 + seed * 7 + t * t) % vocab) as u32)
        .collect()
}
