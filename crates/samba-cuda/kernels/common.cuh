// Shared by every kernel file: prepended to each .cu source before NVRTC compiles it, so the
// kernels need no CUDA headers at all (bf16 is handled as raw bits).
//
// Storage types: `float` (f32) and `bf16_t` (bfloat16 as its 16 raw bits). Every kernel is a
// template over its storage type T, loads with `ld`, computes in f32 and stores with `st`; each
// file instantiates `<name>_f32` and `<name>_bf16` as extern "C" entry points.

// No math.h under NVRTC without headers: infinity and NaN from their bits.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define SAMBA_NAN __int_as_float(0x7fc00000)

typedef unsigned short bf16_t;
typedef unsigned int u32;

// bf16 -> f32 is exact: the bf16 bits are the top half of the f32.
__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const bf16_t* p) { return __uint_as_float(((u32)*p) << 16); }

// f32 -> bf16 rounds to nearest, ties to even (NaN stays NaN), as torch and half::bf16 do.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16_t* p, float v) { *p = f32_to_bf16(v); }

// v as it reads back after being stored in T (a fused kernel rounds where the unfused path
// stores an intermediate).
template <typename T>
__device__ __forceinline__ float stored(float v);
template <>
__device__ __forceinline__ float stored<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ float stored<bf16_t>(float v) {
    const bf16_t b = f32_to_bf16(v);
    return ld(&b);
}

// silu(x) = x * sigmoid(x) = x / (1 + e^-x)
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// softplus(x) = ln(1 + e^x), and x itself above 20 (as PyTorch and mamba's kernels do)
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The threads of a whole block, as a group that reductions run over (a kernel body that may run
// as part of a block takes its grid object instead: thread(), threads(), sync(); pdl.cuh).
struct WholeBlock {
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x; }
    __device__ __forceinline__ unsigned threads() const { return blockDim.x; }
    __device__ __forceinline__ void sync() const { __syncthreads(); }
};

// Sum / max over the group's threads (a multiple of 32, at most 1024, whole warps); every thread
// gets the result. `scratch` is 32 floats of shared memory.
template <typename Group>
__device__ __forceinline__ float group_sum(const Group& grp, float v, float* scratch) {
    const int lane = grp.thread() & 31, warp = grp.thread() >> 5, warps = grp.threads() >> 5;
    v = warp_sum(v);
    grp.sync();
    if (lane == 0) scratch[warp] = v;
    grp.sync();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
template <typename Group>
__device__ __forceinline__ float group_max(const Group& grp, float v, float* scratch) {
    const int lane = grp.thread() & 31, warp = grp.thread() >> 5, warps = grp.threads() >> 5;
    v = warp_max(v);
    grp.sync();
    if (lane == 0) scratch[warp] = v;
    grp.sync();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return group_sum(WholeBlock{}, v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return group_max(WholeBlock{}, v, scratch); }
