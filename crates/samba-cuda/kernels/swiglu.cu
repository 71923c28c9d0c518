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
