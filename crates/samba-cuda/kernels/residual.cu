// The residual stream of the model, kept in f32 whatever the storage of the activations:
//
//   x_0     = wte[tokens]                         embedding_residual_fwd
//   xn_k    = RMSNorm_k(x_k)                      residual_rmsnorm_fwd (branch = null)
//   x_{k+1} = x_k + branch_k,  xn_{k+1} = RMSNorm_{k+1}(x_{k+1})
//                                                 residual_rmsnorm_fwd (branch = mixer k's output)
//
// so each sublayer's residual add is fused with the next sublayer's norm (one pass over x).

// x [rows, dim] f32 = wte[tokens[m], :] (T); an id outside the vocabulary writes NaN. Grid-stride
// over the elements (G: pdl.cuh).
template <typename T, typename G>
__device__ void embedding_residual_fwd(const G& g, float* x, const u32* tokens, const T* wte, long rows, int dim,
                                       int vocab) {
    g.wait();
    const long n = rows * dim;
    for (long i = g.block().x * (long)g.threads() + g.thread(); i < n; i += (long)g.size().x * g.threads()) {
        const long m = i / dim;
        const int c = (int)(i - m * dim);
        const u32 t = tokens[m];
        x[i] = t < (u32)vocab ? ld(wte + (long)t * dim + c) : SAMBA_NAN;
    }
}

// One block per output row r, reading row = r * row_step + row_offset of x (every row: 1, 0;
// the last token of each sequence of length seq: seq, seq - 1):
//   x[row]    += branch[row]                         (when branch is not null)
//   normed[r]  = x[row] * rstd * w,  rstd = 1 / sqrt(mean(x[row]^2) + eps)
// x [rows, dim] f32 (updated in place); branch [rows, dim] (T); normed [out rows, dim] (T); w [dim].
template <typename T>
__device__ void residual_rmsnorm_fwd(float* x, T* normed, const T* branch, const T* w, int dim, int row_step,
                                     int row_offset, float eps) {
    __shared__ float scratch[32];
    const long r = blockIdx.x;
    const long row = r * row_step + row_offset;
    float* xr = x + row * dim;
    float ss = 0.0f;
    if (branch) {
        const T* br = branch + row * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = xr[i] + ld(br + i);
            xr[i] = v;
            ss += v * v;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = xr[i];
            ss += v * v;
        }
    }
    ss = block_sum(ss, scratch);
    const float rs = 1.0f / sqrtf(ss / (float)dim + eps);
    T* out = normed + r * dim;
    // Each thread reads back only the elements it wrote above.
    for (int i = threadIdx.x; i < dim; i += blockDim.x) st(out + i, xr[i] * rs * ld(w + i));
}

extern "C" __global__ void embedding_residual_fwd_f32(float* x, const u32* tokens, const float* wte, long rows,
                                                      int dim, int vocab) {
    embedding_residual_fwd(KernelGrid{}, x, tokens, wte, rows, dim, vocab);
}
extern "C" __global__ void embedding_residual_fwd_bf16(float* x, const u32* tokens, const bf16_t* wte, long rows,
                                                       int dim, int vocab) {
    embedding_residual_fwd(KernelGrid{}, x, tokens, wte, rows, dim, vocab);
}
extern "C" __global__ void residual_rmsnorm_fwd_f32(float* x, float* normed, const float* branch, const float* w,
                                                    int dim, int row_step, int row_offset, float eps) {
    residual_rmsnorm_fwd(x, normed, branch, w, dim, row_step, row_offset, eps);
}
extern "C" __global__ void residual_rmsnorm_fwd_bf16(float* x, bf16_t* normed, const bf16_t* branch,
                                                     const bf16_t* w, int dim, int row_step, int row_offset,
                                                     float eps) {
    residual_rmsnorm_fwd(x, normed, branch, w, dim, row_step, row_offset, eps);
}
