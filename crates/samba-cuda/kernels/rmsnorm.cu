// RMSNorm without bias, one block per row.
//   rstd[r]   = 1 / sqrt(mean_i x[r,i]^2 + eps)
//   out[r, i] = x[r, i] * rstd[r] * w[i]
// x, out [rows, dim] (storage T); w [dim] (T); rstd [rows] (f32, kept for backward).
template <typename T>
__device__ void rmsnorm_fwd(T* out, float* rstd, const T* x, const T* w, int dim, float eps) {
    __shared__ float scratch[32];
    const long row = blockIdx.x;
    const T* xr = x + row * dim;
    T* outr = out + row * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = ld(xr + i);
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / (float)dim + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) st(outr + i, ld(xr + i) * r * ld(w + i));
}

extern "C" __global__ void rmsnorm_fwd_f32(float* out, float* rstd, const float* x, const float* w,
                                           int dim, float eps) {
    rmsnorm_fwd(out, rstd, x, w, dim, eps);
}
extern "C" __global__ void rmsnorm_fwd_bf16(bf16_t* out, float* rstd, const bf16_t* x,
                                            const bf16_t* w, int dim, float eps) {
    rmsnorm_fwd(out, rstd, x, w, dim, eps);
}
