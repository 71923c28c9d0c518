//! The primitives, one per file, each with its forward and backward and the math above them.

pub mod attention;
pub mod attention_cache;
pub mod causal_conv;
pub mod cross_entropy;
pub mod embedding;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod selective_scan;
pub mod swiglu;

/// silu(x) = x * sigmoid(x).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// d silu(x) / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
#[inline]
pub fn silu_grad(x: f32) -> f32 {
    let s = 1.0 / (1.0 + (-x).exp());
    s * (1.0 + x * (1.0 - s))
}

/// softplus(x) = ln(1 + e^x), and x itself above 20 as PyTorch and mamba's kernels do.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// d softplus(x) / dx = sigmoid(x) (1 above the threshold of 20).
#[inline]
pub fn softplus_grad(x: f32) -> f32 {
    if x > 20.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}
