//! The loop learns: a tiny model trained for a short run on a few KB of English, read as bytes,
//! gets well below the corpus's unigram entropy (what a model that ignores context can reach).

mod common;

use common::tiny_backend;
use samba_train::batches::split_held_out;
use samba_train::{MemoryValidation, MemoryWindows, StopReason, TrainOptions, Trainer};

/// English text: a license from the system when there is one, else generated sentences.
fn corpus() -> Vec<u8> {
    for path in [
        "/usr/share/common-licenses/GPL-3",
        "/usr/share/common-licenses/Apache-2.0",
    ] {
        if let Ok(text) = std::fs::read(path) {
            if text.len() > 10_000 {
                return text[..24_000.min(text.len())].to_vec();
            }
        }
    }
    let (subjects, verbs, objects) = (
        [
            "the cat",
            "a dog",
            "my friend",
            "the old man",
            "every child",
        ],
        ["sees", "likes", "finds", "carries", "remembers"],
        [
            "the ball",
            "a red box",
            "the garden",
            "some bread",
            "the river",
        ],
    );
    let mut text = String::new();
    let mut x = 12345u64;
    while text.len() < 20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = |k: u32| ((x >> (33 + k * 5)) % 5) as usize;
        text.push_str(&format!(
            "{} {} {}. ",
            subjects[pick(0)],
            verbs[pick(1)],
            objects[pick(2)]
        ));
    }
    text.into_bytes()
}

/// H = -sum p(b) ln p(b) over the byte frequencies, in nats.
fn unigram_entropy(tokens: &[u32]) -> f64 {
    let mut counts = [0usize; 256];
    tokens.iter().for_each(|&t| counts[t as usize] += 1);
    let n = tokens.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

#[test]
fn loss_falls_well_below_the_unigram_entropy() {
    let tokens: Vec<u32> = corpus().into_iter().map(u32::from).collect();
    let entropy = unigram_entropy(&tokens);
    let (train, held_out) = split_held_out(tokens, 0.1);
    let options = TrainOptions {
        steps: 300,
        seq_len: 32,
        batch_tokens: 512,
        micro_batch: 16,
        lr: 1e-2,
        warmup: Some(10),
        save_every: 0,
        eval_every: 300,
        eval_windows: 4,
        keep_last: 1,
        ..TrainOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let source = MemoryWindows::new(train, options.seq_len, options.seed).unwrap();
    let mut t = Trainer::new(dir.path(), options, tiny_backend(256), source).unwrap();
    t.set_validation(&mut MemoryValidation::new(held_out))
        .unwrap();
    let outcome = t.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Finished);
    let train_loss = outcome.last_loss.unwrap();
    let val = outcome.last_validation.unwrap();
    eprintln!(
        "unigram entropy {entropy:.3} nats; last training loss {train_loss:.3}; validation {val:?}"
    );
    assert!(
        train_loss < 0.7 * entropy,
        "training loss {train_loss:.3} is not well below the unigram entropy {entropy:.3}"
    );
    assert!(
        val[0].loss < 0.75 * entropy,
        "validation loss {:.3} is not well below the unigram entropy {entropy:.3}",
        val[0].loss
    );
}
