//! Token embedding lookup: out[m, :] = wte[tokens[m], :] (no scaling).

use rayon::prelude::*;

/// out [rows, dim]; wte [vocab, dim]. Token ids are checked against the vocabulary by the
/// caller (the model returns a typed error for user input).
pub fn embedding_fwd(out: &mut [f32], tokens: &[u32], wte: &[f32], dim: usize) {
    assert_eq!(out.len(), tokens.len() * dim, "embedding_fwd: sizes");
    out.par_chunks_mut(dim)
        .zip(tokens.par_iter())
        .for_each(|(o, &t)| {
            let t = t as usize;
            o.copy_from_slice(&wte[t * dim..(t + 1) * dim]);
        });
}

/// Backward of the lookup: dwte[tokens[m], :] += dout[m, :]. Rows that share a token add up;
/// the work is split by columns so every element is summed in token order (deterministic).
pub fn embedding_bwd(dwte: &mut [f32], dout: &[f32], tokens: &[u32], dim: usize) {
    assert_eq!(dout.len(), tokens.len() * dim, "embedding_bwd: sizes");
    const COLS: usize = 64;
    let vocab = dwte.len() / dim;
    // View dwte by column blocks: block j holds columns [j*COLS, (j+1)*COLS) of every row.
    let blocks = dim.div_ceil(COLS);
    let updates: Vec<Vec<(usize, Vec<f32>)>> = (0..blocks)
        .into_par_iter()
        .map(|j| {
            let (c0, c1) = (j * COLS, ((j + 1) * COLS).min(dim));
            let mut rows: std::collections::BTreeMap<usize, Vec<f32>> = Default::default();
            for (m, &t) in tokens.iter().enumerate() {
                let acc = rows.entry(t as usize).or_insert_with(|| vec![0.0; c1 - c0]);
                acc.iter_mut()
                    .zip(&dout[m * dim + c0..m * dim + c1])
                    .for_each(|(a, d)| *a += d);
            }
            rows.into_iter().collect()
        })
        .collect();
    for (j, rows) in updates.into_iter().enumerate() {
        let c0 = j * COLS;
        for (t, acc) in rows {
            debug_assert!(t < vocab);
            let row = &mut dwte[t * dim + c0..t * dim + c0 + acc.len()];
            row.iter_mut().zip(acc).for_each(|(d, a)| *d += a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    #[test]
    fn embedding_gathers_and_scatters_with_repeated_tokens() {
        let (vocab, dim) = (5, 70);
        let wte = random_vec(vocab * dim, 1, 1.0);
        let tokens = [3u32, 0, 3, 4];
        let mut out = vec![0.0; tokens.len() * dim];
        embedding_fwd(&mut out, &tokens, &wte, dim);
        assert_eq!(&out[2 * dim..3 * dim], &wte[3 * dim..4 * dim]);

        let dout = random_vec(tokens.len() * dim, 2, 1.0);
        let mut dwte = vec![1.0; vocab * dim];
        embedding_bwd(&mut dwte, &dout, &tokens, dim);
        for c in 0..dim {
            assert_eq!(dwte[3 * dim + c], 1.0 + dout[c] + dout[2 * dim + c]);
            assert_eq!(dwte[dim + c], 1.0, "untouched row");
            assert_eq!(dwte[4 * dim + c], 1.0 + dout[3 * dim + c]);
        }
    }
}
