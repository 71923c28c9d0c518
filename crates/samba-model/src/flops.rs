//! Floating-point work of the model, for throughput and utilisation figures.

use crate::config::{Config, Sublayer};
use crate::layout::ParamLayout;

/// Mean number of keys a query attends to over a sequence of `seq` tokens:
/// mean_t min(t + 1, window) (window = seq for full attention).
fn mean_keys(seq: usize, window: usize) -> f64 {
    let w = window.min(seq);
    // sum_{t < w} (t + 1) + (seq - w) * w
    let total = (w * (w + 1) / 2 + (seq - w) * w) as f64;
    total / seq as f64
}

/// FLOPs of one forward pass per token over sequences of `seq` tokens: 2 per weight in every
/// matrix product (the embedding lookup is free, the output head is not), plus attention's
/// scores and weighted sum (4 * heads * head_dim per key), plus the selective scan
/// (about 9 * d_inner * d_state per token: discretise, update, read out).
pub fn forward_flops_per_token(config: &Config, seq: usize) -> f64 {
    let layout = ParamLayout::new(config);
    let d = config.d_model;
    let mut flops = 0.0f64;
    // Every 2-D weight but the embedding table is a matrix product per token.
    for t in &layout.tensors {
        if t.shape.len() == 2 && t.name != "transformer.wte.weight" && !t.name.ends_with("A_log") {
            flops += 2.0 * t.numel() as f64;
        }
    }
    if config.tied_embeddings {
        flops += 2.0 * (config.vocab * d) as f64;
    }
    let attention_per_key = 4.0 * (config.heads * config.head_dim) as f64;
    for i in 0..config.n_layer {
        for s in config.layout.sublayers(i) {
            match s {
                Sublayer::WindowAttention => {
                    flops += attention_per_key * mean_keys(seq, config.window)
                }
                Sublayer::FullAttention => flops += attention_per_key * mean_keys(seq, seq),
                Sublayer::Mamba => {
                    flops += 9.0 * (config.d_inner() * config.d_state) as f64
                        + 2.0 * (config.d_inner() * config.d_conv) as f64
                }
                Sublayer::Mlp | Sublayer::Mlp2 => {}
            }
        }
    }
    flops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_keys_counts_the_window() {
        assert_eq!(mean_keys(4, 10), 2.5); // 1 + 2 + 3 + 4
        assert_eq!(mean_keys(5, 2), 9.0 / 5.0); // 1 + 2 + 2 + 2 + 2
    }
}
