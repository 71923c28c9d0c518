// SwiGLU between the MLP's projections, elementwise over [rows, hidden]:
//   act = silu(gate) * up,   gate = w1 x, up = w2 x
template <typename T>
__device__ void swiglu_fwd(T* act, const T* gate, const T* up, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        st(act + i, silu(ld(gate + i)) * ld(up + i));
}

extern "C" __global__ void swiglu_fwd_f32(float* act, const float* gate, const float* up, long n) {
    swiglu_fwd(act, gate, up, n);
}
extern "C" __global__ void swiglu_fwd_bf16(bf16_t* act, const bf16_t* gate, const bf16_t* up, long n) {
    swiglu_fwd(act, gate, up, n);
}

// The same over the fused output of one GEMM with [w1; w2] (adjacent in the parameter buffer):
//   gu [rows, 2 hidden] = [gate | up] per row,  act [rows, hidden] = silu(gate) * up
template <typename T>
__device__ void swiglu_fused_fwd(T* act, const T* gu, long rows, int hidden) {
    const long n = rows * hidden;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long r = i / hidden;
        const int c = (int)(i - r * hidden);
        const T* row = gu + r * 2 * hidden;
        st(act + i, silu(ld(row + c)) * ld(row + hidden + c));
    }
}

extern "C" __global__ void swiglu_fused_fwd_f32(float* act, const float* gu, long rows, int hidden) {
    swiglu_fused_fwd(act, gu, rows, hidden);
}
extern "C" __global__ void swiglu_fused_fwd_bf16(bf16_t* act, const bf16_t* gu, long rows, int hidden) {
    swiglu_fused_fwd(act, gu, rows, hidden);
}
