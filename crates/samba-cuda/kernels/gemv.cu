// Dense layers over a few rows (a decoding step): out[r, o] = sum_i inp[r, i] w[o, i] for
// r < rows <= GEMV_MAX_ROWS. Such a product reads every weight once and is bound by memory
// bandwidth; a GEMM library tiles for many rows and wastes most of that bandwidth here.
//
// One warp per output feature o at a time: the lanes stream the weight row in 16-byte vectors
// (coalesced), multiply with the matching vectors of each input row (small, cached) and reduce by
// shuffles. w [out, in] (T, 16-byte aligned rows: the host checks in % (16 / sizeof(T)) == 0 and
// the addresses); inp [rows, inp_stride] (T); out [rows, out_stride] in T (gemv_fwd) or f32
// (gemv_f32out: `accumulate` adds to what is there: the residual stream).
#define GEMV_MAX_ROWS 4
#define GEMV_WARPS 8

template <typename T>
__device__ __forceinline__ void gemv_ld8(float* dst, const T* src);
template <>
__device__ __forceinline__ void gemv_ld8<bf16_t>(float* dst, const bf16_t* src) {
    const uint4 v = *reinterpret_cast<const uint4*>(src);
    const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        dst[2 * i] = __uint_as_float(w[i] << 16);
        dst[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
template <>
__device__ __forceinline__ void gemv_ld8<float>(float* dst, const float* src) {
    const float4 a = *reinterpret_cast<const float4*>(src);
    const float4 b = *reinterpret_cast<const float4*>(src + 4);
    dst[0] = a.x; dst[1] = a.y; dst[2] = a.z; dst[3] = a.w;
    dst[4] = b.x; dst[5] = b.y; dst[6] = b.z; dst[7] = b.w;
}

// Sums of one warp over its output o, per row; every lane gets them.
template <typename T>
__device__ __forceinline__ void gemv_dot(float* acc, const T* __restrict__ inp, int inp_stride,
                                         const T* __restrict__ wr, int rows, int in_features) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r) acc[r] = 0.0f;
    // 8 values per lane per step (one 16-byte vector of bf16, two of f32); in % 8 == 0 (host).
#pragma unroll 4
    for (int i = lane * 8; i < in_features; i += 32 * 8) {
        float wv[8];
        gemv_ld8(wv, wr + i);
#pragma unroll
        for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
            if (r < rows) {
                float xv[8];
                gemv_ld8(xv, inp + (long)r * inp_stride + i);
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[r] += wv[j] * xv[j];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r) acc[r] = warp_sum(acc[r]);
}

template <typename T>
__device__ void gemv_fwd(T* out, int out_stride, const T* inp, int inp_stride, const T* w, int rows,
                         int in_features, int out_features) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = blockIdx.x * GEMV_WARPS + warp; o < out_features; o += gridDim.x * GEMV_WARPS) {
        float acc[GEMV_MAX_ROWS];
        gemv_dot(acc, inp, inp_stride, w + (long)o * in_features, rows, in_features);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < GEMV_MAX_ROWS; ++r)
                if (r < rows) st(out + (long)r * out_stride + o, acc[r]);
        }
    }
}

template <typename T>
__device__ void gemv_f32out(float* out, int out_stride, const T* inp, int inp_stride, const T* w, int rows,
                            int in_features, int out_features, int accumulate) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = blockIdx.x * GEMV_WARPS + warp; o < out_features; o += gridDim.x * GEMV_WARPS) {
        float acc[GEMV_MAX_ROWS];
        gemv_dot(acc, inp, inp_stride, w + (long)o * in_features, rows, in_features);
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
                if (r < rows) {
                    float* p = out + (long)r * out_stride + o;
                    *p = accumulate ? *p + acc[r] : acc[r];
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) gemv_fwd_f32(float* out, int out_stride, const float* inp,
                                                                int inp_stride, const float* w, int rows,
                                                                int in_features, int out_features) {
    gemv_fwd(out, out_stride, inp, inp_stride, w, rows, in_features, out_features);
}
extern "C" __global__ void __launch_bounds__(256) gemv_fwd_bf16(bf16_t* out, int out_stride, const bf16_t* inp,
                                                                 int inp_stride, const bf16_t* w, int rows,
                                                                 int in_features, int out_features) {
    gemv_fwd(out, out_stride, inp, inp_stride, w, rows, in_features, out_features);
}
extern "C" __global__ void __launch_bounds__(256) gemv_f32out_f32(float* out, int out_stride, const float* inp,
                                                                   int inp_stride, const float* w, int rows,
                                                                   int in_features, int out_features,
                                                                   int accumulate) {
    gemv_f32out(out, out_stride, inp, inp_stride, w, rows, in_features, out_features, accumulate);
}
extern "C" __global__ void __launch_bounds__(256) gemv_f32out_bf16(float* out, int out_stride, const bf16_t* inp,
                                                                    int inp_stride, const bf16_t* w, int rows,
                                                                    int in_features, int out_features,
                                                                    int accumulate) {
    gemv_f32out(out, out_stride, inp, inp_stride, w, rows, in_features, out_features, accumulate);
}
