// Attention of one new token per sequence (a decoding step) against its cached keys, split over
// the keys (flash-decoding): few sequences still fill the GPU, and every cached key and value is
// read once, in 16-byte vectors.
//
// Query h of sequence b sits at position p = pos[b] and sees keys j in first..=p,
// first = max(0, p - window + 1) with a window (0: none): key j < p is ring slot j % cap of
// k_cache, v_cache [batch, cap, kv_heads * head_dim]; key p is this token's own, in qkv
// [batch, 1, (heads + 2 kv_heads) head_dim] (roped, grouped-interleaved).
//
// Block (split, h, b) takes the split-th of n_split equal ranges of those keys and writes its
// partial softmax, in the scaled log domain:
//   m = max_j s_j,  l = sum_j exp(s_j - m),  acc = sum_j exp(s_j - m) v_j,  s_j = q . k_j / sqrt(hd)
// to part [batch, heads, n_split, head_dim + 2] as (acc[0..hd), m, l); an empty range writes m = -inf.
// The last block of a (sequence, kv group) to finish (counted in done [batch, kv_heads], which
// that block sets back to 0) merges the splits of each query head of the group:
//   M = max m_s,  out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s
// and then stores this token's key and value into ring slot p % cap: after every block of the
// group has read the ring, so the slot's old key, still visible to p when cap = window - 1, is
// read before it is overwritten. One kernel: no separate merge.
//
// Lanes: a key's head_dim values are read by LPK lanes, each DPL = hd / LPK consecutive values
// (vectors of 16 bytes); 32 / LPK keys per warp step. The host checks hd % (16 / sizeof(T)) == 0,
// DPL <= DEC_MAX_DPL and n_split <= DEC_MAX_SPLITS.
#define DEC_WARPS 4
#define DEC_MAX_DPL 8
#ifndef DEC_UNROLL  // warp steps whose key loads are in flight together
#define DEC_UNROLL 4
#endif
#define DEC_MAX_SPLITS 1024
#ifndef DEC_MERGE_LOADS  // splits whose partial values the merge loads at once
#define DEC_MERGE_LOADS 16
#endif

// A load that skips L1: partial results written by other blocks of this kernel.
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

template <typename T>
__device__ __forceinline__ void ld_vec(float* dst, const T* src, int n);
template <>
__device__ __forceinline__ void ld_vec<float>(float* dst, const float* src, int n) {
    // n is a multiple of 4 and src 16-byte aligned.
#pragma unroll
    for (int i = 0; i < DEC_MAX_DPL; i += 4) {
        if (i < n) {
            const float4 v = *reinterpret_cast<const float4*>(src + i);
            dst[i] = v.x;
            dst[i + 1] = v.y;
            dst[i + 2] = v.z;
            dst[i + 3] = v.w;
        }
    }
}
template <>
__device__ __forceinline__ void ld_vec<bf16_t>(float* dst, const bf16_t* src, int n) {
    // n is a multiple of 8 (so exactly 8 here) and src 16-byte aligned.
    if (n >= 8) {
        const uint4 v = *reinterpret_cast<const uint4*>(src);
        const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[2 * i] = __uint_as_float(w[i] << 16);
            dst[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
}

// The merge of one query head's splits into out (see the top of the file); 128 threads. Every
// load it needs first (each split's m and l, and the first DEC_MERGE_LOADS splits' values of this
// thread's first output), then the arithmetic: one round trip for up to DEC_MERGE_LOADS splits.
template <typename T, typename G>
__device__ void attention_decode_merge(const G& grid, T* out, const float* part, int b, int h, int heads, int hd,
                                       int n_split) {
    __shared__ float s_w[DEC_MAX_SPLITS], s_l[DEC_MAX_SPLITS];
    __shared__ float scratch[32];
    const float* src = part + ((long)b * heads + h) * n_split * (hd + 2);
    const int d0 = grid.thread();
    float v[DEC_MERGE_LOADS];
#pragma unroll
    for (int j = 0; j < DEC_MERGE_LOADS; ++j) v[j] = j < n_split && d0 < hd ? ld_cg(src + j * (hd + 2) + d0) : 0.0f;
    float big = -INFINITY;
    for (int s = grid.thread(); s < n_split; s += grid.threads()) {
        const float ms = ld_cg(src + s * (hd + 2) + hd);
        s_w[s] = ms;
        s_l[s] = ld_cg(src + s * (hd + 2) + hd + 1);
        big = fmaxf(big, ms);
    }
    big = group_max(grid, big, scratch);  // its barriers also publish s_w, s_l
    float l = 0.0f;
    for (int s = grid.thread(); s < n_split; s += grid.threads()) {
        const float wgt = s_w[s] == -INFINITY ? 0.0f : expf(s_w[s] - big);
        s_w[s] = wgt;
        l += wgt * s_l[s];
    }
    l = group_sum(grid, l, scratch);  // and the weights
    const float inv_l = 1.0f / l;
    T* o = out + ((long)b * heads + h) * hd;
    for (int d = d0; d < hd; d += grid.threads()) {
        float a = 0.0f;
        for (int s0 = 0; s0 < n_split; s0 += DEC_MERGE_LOADS) {
            if (s0 > 0 || d > d0) {
#pragma unroll
                for (int j = 0; j < DEC_MERGE_LOADS; ++j)
                    v[j] = s0 + j < n_split ? ld_cg(src + (s0 + j) * (hd + 2) + d) : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < DEC_MERGE_LOADS; ++j)
                if (s0 + j < n_split && s_w[s0 + j] != 0.0f) a += v[j] * s_w[s0 + j];
        }
        st(o + d, a * inv_l);
    }
    grid.sync();  // s_w, s_l and scratch are reused by the next head's merge
}

template <typename T, typename G>
__device__ void attention_decode_fwd(const G& grid, T* out, float* part, unsigned* done, const T* qkv, T* k_cache, T* v_cache,
                                     const int* pos, int heads, int kv_heads, int hd, int cap, int window,
                                     int n_split) {
    grid.wait();
    constexpr int VEC = 16 / sizeof(T);
    const uint3 blk = grid.block();
    const int split = blk.x, h = blk.y, b = blk.z;
    const int q_per_kv = heads / kv_heads, g = h / q_per_kv;
    const int group_dim = (q_per_kv + 2) * hd, qkv_dim = (heads + 2 * kv_heads) * hd, kv_dim = kv_heads * hd;
    const int q_col = g * group_dim + (h % q_per_kv) * hd, k_col = g * group_dim + q_per_kv * hd;
    const int v_col = k_col + hd;
    const int p = pos[b];
    const int first = window > 0 ? max(0, p - window + 1) : 0;
    const int n_keys = p - first + 1;
    const int per = (n_keys + n_split - 1) / n_split;
    const int j0 = first + split * per, j1 = min(p + 1, j0 + per);  // this block's keys [j0, j1)

    const int lpk = min(32, hd / VEC);  // lanes per key (a power of two: the host checks)
    const int kpw = 32 / lpk;           // keys per warp step
    const int dpl = hd / lpk;           // values per lane
    const int lane = grid.thread() & 31, warp = grid.thread() >> 5;
    const int sub = lane / lpk, d0 = (lane % lpk) * dpl;
    const T* row = qkv + (long)b * qkv_dim;
    const float scale = 1.0f / sqrtf((float)hd);

    float q[DEC_MAX_DPL], acc[DEC_MAX_DPL];
    ld_vec(q, row + q_col + d0, dpl);
#pragma unroll
    for (int i = 0; i < DEC_MAX_DPL; ++i) {
        q[i] = i < dpl ? q[i] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    // DEC_UNROLL warp steps at a time: all their key loads in flight before the first use. The
    // loop is uniform over the warp (the shuffles need every lane); a lane past j1 idles.
    for (int jw = j0 + warp * kpw * DEC_UNROLL; jw < j1; jw += DEC_WARPS * kpw * DEC_UNROLL) {
        float kv[DEC_UNROLL][DEC_MAX_DPL], vv[DEC_UNROLL][DEC_MAX_DPL], dot[DEC_UNROLL];
        const T* vr[DEC_UNROLL];
        bool valid[DEC_UNROLL];
#pragma unroll
        for (int s = 0; s < DEC_UNROLL; ++s) {
            const int j = jw + s * kpw + sub;
            valid[s] = j < j1;
            const T* kr = row + k_col;
            vr[s] = row + v_col;
            if (valid[s] && j < p) {
                const long slot = ((long)b * cap + j % cap) * kv_dim + (long)g * hd;
                kr = k_cache + slot;
                vr[s] = v_cache + slot;
            }
            ld_vec(kv[s], kr + d0, dpl);
            ld_vec(vv[s], vr[s] + d0, dpl);  // with the key: both loads in flight at once
        }
#pragma unroll
        for (int s = 0; s < DEC_UNROLL; ++s) {
            dot[s] = 0.0f;
#pragma unroll
            for (int i = 0; i < DEC_MAX_DPL; ++i)
                if (i < dpl) dot[s] += q[i] * kv[s][i];
        }
        for (int o = lpk / 2; o > 0; o >>= 1) {
#pragma unroll
            for (int s = 0; s < DEC_UNROLL; ++s) dot[s] += __shfl_xor_sync(0xffffffffu, dot[s], o);
        }
        float m_new = m;
#pragma unroll
        for (int s = 0; s < DEC_UNROLL; ++s)
            if (valid[s]) m_new = fmaxf(m_new, dot[s]);
        if (m_new == -INFINITY) continue;  // no valid key for this lane group in these steps
        const float alpha = expf(m - m_new);
        l *= alpha;
#pragma unroll
        for (int i = 0; i < DEC_MAX_DPL; ++i) acc[i] *= alpha;
#pragma unroll
        for (int s = 0; s < DEC_UNROLL; ++s) {
            if (valid[s]) {
                const float pj = expf(dot[s] - m_new);
                l += pj;
#pragma unroll
                for (int i = 0; i < DEC_MAX_DPL; ++i) acc[i] += pj * vv[s][i];
            }
        }
        m = m_new;
    }
    // Merge the warp's key groups (lanes with the same d0), then the warps, in shared memory.
    for (int o = lpk; o < 32; o <<= 1) {
        const float mo = __shfl_xor_sync(0xffffffffu, m, o);
        const float lo = __shfl_xor_sync(0xffffffffu, l, o);
        const float mn = fmaxf(m, mo);
        const float a_self = mn == -INFINITY ? 0.0f : expf(m - mn);
        const float a_other = mn == -INFINITY ? 0.0f : expf(mo - mn);
#pragma unroll
        for (int i = 0; i < DEC_MAX_DPL; ++i) {
            const float ao = __shfl_xor_sync(0xffffffffu, acc[i], o);
            acc[i] = acc[i] * a_self + ao * a_other;
        }
        l = l * a_self + lo * a_other;
        m = mn;
    }
    __shared__ float s_acc[DEC_WARPS][256];
    __shared__ float s_m[DEC_WARPS], s_l[DEC_WARPS];
    if (sub == 0) {
#pragma unroll
        for (int i = 0; i < DEC_MAX_DPL; ++i)
            if (i < dpl) s_acc[warp][d0 + i] = acc[i];
        if (lane == 0) {
            s_m[warp] = m;
            s_l[warp] = l;
        }
    }
    grid.sync();
    float big = -INFINITY;
    for (int w = 0; w < DEC_WARPS; ++w) big = fmaxf(big, s_m[w]);
    float* dst = part + (((long)b * heads + h) * n_split + split) * (hd + 2);
    for (int d = grid.thread(); d < hd; d += grid.threads()) {
        float a = 0.0f;
        if (big != -INFINITY)
            for (int w = 0; w < DEC_WARPS; ++w) a += s_acc[w][d] * expf(s_m[w] - big);
        dst[d] = a;
    }
    if (grid.thread() == 0) {
        float ls = 0.0f;
        if (big != -INFINITY)
            for (int w = 0; w < DEC_WARPS; ++w) ls += s_l[w] * expf(s_m[w] - big);
        dst[hd] = big;
        dst[hd + 1] = ls;
    }

    // Count this block done; the group's last block merges and stores the key and value.
    __shared__ bool s_last;
    __threadfence();
    grid.sync();
    unsigned* counter = done + (long)b * kv_heads + g;
    if (grid.thread() == 0) s_last = atomicAdd(counter, 1u) == (unsigned)(q_per_kv * n_split - 1);
    grid.sync();
    const bool last = s_last;
    grid.sync();  // every thread has read s_last (a next block of this body may set it: persistent step)
    if (!last) return;
    __threadfence();
    for (int hh = g * q_per_kv; hh < (g + 1) * q_per_kv; ++hh)
        attention_decode_merge(grid, out, part, b, hh, heads, hd, n_split);
    if (cap > 0) {
        const long slot = ((long)b * cap + p % cap) * kv_dim + (long)g * hd;
        for (int d = grid.thread(); d < hd; d += grid.threads()) {
            k_cache[slot + d] = row[k_col + d];
            v_cache[slot + d] = row[v_col + d];
        }
    }
    if (grid.thread() == 0) *counter = 0u;
}

#define DEC_ARGS(T)                                                                                   \
    T *out, float *part, unsigned *done, const T *qkv, T *k_cache, T *v_cache, const int *pos, int heads, \
        int kv_heads, int hd, int cap, int window, int n_split
extern "C" __global__ void __launch_bounds__(128) attention_decode_fwd_f32(DEC_ARGS(float)) {
    attention_decode_fwd(KernelGrid{}, out, part, done, qkv, k_cache, v_cache, pos, heads, kv_heads, hd, cap, window, n_split);
}
extern "C" __global__ void __launch_bounds__(128) attention_decode_fwd_bf16(DEC_ARGS(bf16_t)) {
    attention_decode_fwd(KernelGrid{}, out, part, done, qkv, k_cache, v_cache, pos, heads, kv_heads, hd, cap, window, n_split);
}
