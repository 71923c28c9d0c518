//! Attention over a chunk of new tokens that also sees the keys and values of earlier chunks,
//! kept in a [`KvCache`]: the inference path (chunked prefill and token-by-token decoding).
//!
//! With a sliding window w, a query sees at most w - 1 earlier positions, so the cache is a
//! ring of the last w - 1 keys and values and memory does not grow with the context. Full
//! attention keeps every position up to a cap.
//!
//! The arithmetic is the same as [`attention_fwd`](super::attention::attention_fwd), key by
//! key in the same order, so a chunked pass reproduces the one-shot forward.

use rayon::prelude::*;

use super::attention::QkvDims;

/// Keys and values of the last `capacity` positions of one sequence in one attention layer,
/// roped keys as the attention reads them; [len, kv_heads * head_dim] each, oldest first.
#[derive(Clone, Debug)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Ring slot of the oldest entry (0 until the ring is full).
    oldest: usize,
    len: usize,
}

impl KvCache {
    /// A cache of `kv_dim` = kv_heads * head_dim columns holding up to `capacity` positions.
    /// Storage grows as positions arrive, so a large cap costs nothing until it is used.
    pub fn new(kv_dim: usize, capacity: usize) -> KvCache {
        KvCache {
            kv_dim,
            capacity,
            keys: Vec::new(),
            values: Vec::new(),
            oldest: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by the cache's storage.
    pub fn bytes(&self) -> usize {
        (self.keys.capacity() + self.values.capacity()) * std::mem::size_of::<f32>()
    }

    /// Appends every cached key, then every value, oldest first, to `out`.
    pub fn extend_into(&self, out: &mut Vec<f32>) {
        (0..self.len).for_each(|i| out.extend_from_slice(self.get(i).0));
        (0..self.len).for_each(|i| out.extend_from_slice(self.get(i).1));
    }

    /// The i-th oldest (key, value).
    fn get(&self, i: usize) -> (&[f32], &[f32]) {
        let slot = (self.oldest + i) % self.capacity.max(1);
        let at = slot * self.kv_dim..(slot + 1) * self.kv_dim;
        (&self.keys[at.clone()], &self.values[at])
    }

    /// Appends one position, dropping the oldest when full.
    fn push(&mut self, key: &[f32], value: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        if self.len < self.capacity {
            self.keys.extend_from_slice(key);
            self.values.extend_from_slice(value);
            self.len += 1;
        } else {
            let at = self.oldest * self.kv_dim..(self.oldest + 1) * self.kv_dim;
            self.keys[at.clone()].copy_from_slice(key);
            self.values[at].copy_from_slice(value);
            self.oldest = (self.oldest + 1) % self.capacity;
        }
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Attention of a chunk of `dims.seq` new tokens of one sequence (`dims.batch` = 1).
///
/// - `qkv` [seq, qkv_dim]: the chunk's roped fused q, k, v (grouped-interleaved layout);
/// - `out` [seq, heads * head_dim];
/// - `cache`: the keys and values before the chunk; the chunk's own are appended at the end.
///
/// With n cached positions, chunk token t is key index j = n + t of the list
/// [cached..., chunk...] and sees indices first..=j, first = j + 1 - w with a window w (clamped
/// at 0), else 0. A cache of at least w - 1 positions therefore holds everything a window needs.
pub fn attention_cached_fwd(
    out: &mut [f32],
    qkv: &[f32],
    cache: &mut KvCache,
    dims: QkvDims,
    window: Option<usize>,
) {
    dims.assert_valid();
    assert_eq!(dims.batch, 1, "attention_cached_fwd: one sequence per call");
    assert!(
        window != Some(0),
        "attention: a window must count the current token"
    );
    let QkvDims {
        seq,
        heads,
        head_dim: hd,
        kv_heads,
        ..
    } = dims;
    let (qkv_dim, out_dim) = (dims.qkv_dim(), dims.out_dim());
    assert_eq!(qkv.len(), seq * qkv_dim, "attention_cached_fwd: qkv shape");
    assert_eq!(out.len(), seq * out_dim, "attention_cached_fwd: out shape");
    assert_eq!(
        cache.kv_dim,
        kv_heads * hd,
        "attention_cached_fwd: cache width"
    );
    let n = cache.len();
    let scale = 1.0 / (hd as f32).sqrt();

    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let g = h / dims.q_per_kv();
            let (q_col, k_col, v_col) = (dims.q_col(h), dims.k_col(g), dims.v_col(g));
            // Key or value of head g at index j of [cached..., chunk...].
            let key = |j: usize| -> &[f32] {
                if j < n {
                    &cache.get(j).0[g * hd..(g + 1) * hd]
                } else {
                    &qkv[(j - n) * qkv_dim + k_col..][..hd]
                }
            };
            let value = |j: usize| -> &[f32] {
                if j < n {
                    &cache.get(j).1[g * hd..(g + 1) * hd]
                } else {
                    &qkv[(j - n) * qkv_dim + v_col..][..hd]
                }
            };
            let mut out_h = vec![0.0f32; seq * hd];
            let mut p = Vec::new();
            for t in 0..seq {
                let q = &qkv[t * qkv_dim + q_col..][..hd];
                let j = n + t;
                let first = window.map_or(0, |w| (j + 1).saturating_sub(w));
                p.clear();
                p.extend((first..=j).map(|s| scale * dot(q, key(s))));
                let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for x in p.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                let inv_sum = 1.0 / sum;
                let o = &mut out_h[t * hd..][..hd];
                for (pi, s) in p.iter().zip(first..=j) {
                    let alpha = pi * inv_sum;
                    o.iter_mut()
                        .zip(value(s))
                        .for_each(|(o, v)| *o += alpha * v);
                }
            }
            out_h
        })
        .collect();

    for (t, out_row) in out.chunks_exact_mut(out_dim).enumerate() {
        for (h, o) in out_row.chunks_exact_mut(hd).enumerate() {
            o.copy_from_slice(&per_head[h][t * hd..][..hd]);
        }
    }

    let mut key = vec![0.0f32; kv_heads * hd];
    let mut value = vec![0.0f32; kv_heads * hd];
    for row in qkv.chunks_exact(qkv_dim) {
        for g in 0..kv_heads {
            key[g * hd..(g + 1) * hd].copy_from_slice(&row[dims.k_col(g)..][..hd]);
            value[g * hd..(g + 1) * hd].copy_from_slice(&row[dims.v_col(g)..][..hd]);
        }
        cache.push(&key, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::attention_fwd;
    use crate::testing::random_vec;

    /// Chunks of every size through the cache reproduce the one-shot forward exactly.
    #[test]
    fn chunked_attention_equals_one_shot() {
        let seq = 13;
        for (heads, kv_heads) in [(4, 2), (2, 2), (4, 1)] {
            for window in [Some(1), Some(4), Some(20), None] {
                let full = QkvDims {
                    batch: 1,
                    seq,
                    heads,
                    kv_heads,
                    head_dim: 4,
                };
                let qkv = random_vec(seq * full.qkv_dim(), 7, 1.5);
                let mut expected = vec![0.0; seq * full.out_dim()];
                let mut lse = vec![0.0; heads * seq];
                attention_fwd(&mut expected, &mut lse, &qkv, full, window);
                for chunk in [1, 2, 5, 13] {
                    let capacity = window.map_or(seq, |w| w - 1);
                    let mut cache = KvCache::new(kv_heads * 4, capacity);
                    let mut got = Vec::new();
                    for rows in qkv.chunks(chunk * full.qkv_dim()) {
                        let len = rows.len() / full.qkv_dim();
                        let dims = QkvDims { seq: len, ..full };
                        let mut out = vec![f32::NAN; len * full.out_dim()];
                        attention_cached_fwd(&mut out, rows, &mut cache, dims, window);
                        got.extend(out);
                    }
                    assert_eq!(
                        got, expected,
                        "heads {heads}/{kv_heads}, window {window:?}, chunk {chunk}"
                    );
                    assert!(cache.len() <= capacity);
                }
            }
        }
    }

    #[test]
    fn ring_keeps_the_last_positions() {
        let mut cache = KvCache::new(1, 3);
        for i in 0..7 {
            cache.push(&[i as f32], &[-(i as f32)]);
        }
        assert_eq!(cache.len(), 3);
        let kept: Vec<f32> = (0..3).map(|i| cache.get(i).0[0]).collect();
        assert_eq!(kept, [4.0, 5.0, 6.0]);
        assert_eq!(cache.get(2).1[0], -6.0);
        let mut none = KvCache::new(1, 0);
        none.push(&[1.0], &[1.0]);
        assert!(none.is_empty());
    }
}
