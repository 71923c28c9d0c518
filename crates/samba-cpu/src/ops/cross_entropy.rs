//! Softmax cross-entropy of next-token targets, from logits.
//!
//! loss[m] = logsumexp(logits[m, :]) - logits[m, target[m]]; the model's loss is the mean.

use rayon::prelude::*;

/// logits [rows, vocab]; writes loss [rows] and lse [rows] (log-sum-exp, kept for backward and
/// for log-probabilities: log p(v) = logits[m, v] - lse[m]).
pub fn cross_entropy_fwd(
    loss: &mut [f32],
    lse: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
) {
    assert_eq!(
        logits.len(),
        targets.len() * vocab,
        "cross_entropy_fwd: sizes"
    );
    assert!(
        loss.len() == targets.len() && lse.len() == targets.len(),
        "cross_entropy_fwd: outputs"
    );
    loss.par_iter_mut()
        .zip(lse.par_iter_mut())
        .zip(logits.par_chunks(vocab).zip(targets.par_iter()))
        .for_each(|((l, s), (row, &t))| {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            *s = max + sum.ln() as f32;
            *l = *s - row[t as usize];
        });
}

/// Backward with dloss[m] = d total / d loss[m] (1 / rows for the mean):
///   dlogits[m, v] += dloss[m] * (softmax(logits[m])[v] - [v == target[m]])
pub fn cross_entropy_bwd(
    dlogits: &mut [f32],
    logits: &[f32],
    lse: &[f32],
    targets: &[u32],
    dloss: f32,
    vocab: usize,
) {
    assert_eq!(dlogits.len(), logits.len(), "cross_entropy_bwd: sizes");
    dlogits
        .par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(lse.par_iter().zip(targets.par_iter()))
        .for_each(|((d, row), (&s, &t))| {
            for (d, &v) in d.iter_mut().zip(row) {
                *d += dloss * (v - s).exp();
            }
            d[t as usize] -= dloss;
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, random_vec};

    #[test]
    fn cross_entropy_matches_definition_and_finite_differences() {
        let (rows, vocab) = (5, 11);
        let logits = random_vec(rows * vocab, 1, 4.0);
        let targets = [0u32, 10, 3, 3, 7];
        let mut loss = vec![0.0; rows];
        let mut lse = vec![0.0; rows];
        cross_entropy_fwd(&mut loss, &mut lse, &logits, &targets, vocab);
        let row = &logits[vocab..2 * vocab];
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        assert!((loss[1] as f64 - (z.ln() - row[10] as f64)).abs() < 1e-5);

        let mut dlogits = vec![0.0; rows * vocab];
        cross_entropy_bwd(
            &mut dlogits,
            &logits,
            &lse,
            &targets,
            1.0 / rows as f32,
            vocab,
        );
        let mean_loss = |x: &[f32]| {
            let mut loss = vec![0.0; rows];
            let mut lse = vec![0.0; rows];
            cross_entropy_fwd(&mut loss, &mut lse, x, &targets, vocab);
            loss.iter().map(|&v| v as f64).sum::<f64>() / rows as f64
        };
        check_gradient(
            "cross-entropy logits",
            &logits,
            &dlogits,
            mean_loss,
            55,
            1e-2,
            2e-3,
        );
    }
}
