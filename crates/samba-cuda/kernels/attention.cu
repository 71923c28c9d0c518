// Causal self-attention with an optional sliding window, flash style: the scores of a tile of
// queries against a tile of keys live in registers only, the softmax is computed online, and key
// tiles wholly outside the window are never visited.
//
// Per batch b, query head h (kv head g = h / (heads / kv_heads)), query t:
//   first(t) = max(0, t - window + 1)  with a window (it counts the current token), else 0
//   S_ts     = scale * q_t . k_s       for s in first(t)..=t, scale = 1 / sqrt(head_dim)
//   m_t      = max_s S_ts,  l_t = sum_s exp(S_ts - m_t)
//   O_t      = sum_s exp(S_ts - m_t) v_s / l_t,  lse_t = m_t + ln l_t
// Online over key tiles: with the running (m, l, acc) and a new tile's scores S,
//   m' = max(m, max S);  acc = acc * exp(m - m') + sum_s exp(S_s - m') v_s;  l = l exp(m - m') + sum_s exp(S_s - m')
//
// qkv [batch, seq, (heads + 2 kv_heads) head_dim], roped, grouped-interleaved layout (per kv group:
// its query heads, then k, then v); out [batch, seq, heads * head_dim]; lse [batch, heads, seq] (f32,
// may be null).
//
// With a cache (chunked prefill, decoding): the chunk of sequence b starts at absolute position
// p0 = pos0[b], query t is at p0 + t and key j (absolute) is read from the chunk (row j - p0) when
// j >= p0, else from the ring k_cache, v_cache [batch, cap, kv_heads * head_dim] at slot j % cap
// (the host guarantees every such key is still in the ring: cap >= window - 1, or cap >= every
// position for full attention). Without one (k_cache null) p0 = 0.
//
// Work: one block of 4 warps per (query tile of ATT_BQ queries, head, batch). Each warp owns
// ATT_BQ / 4 queries; for a key tile, lane j scores key j, and lane j accumulates output
// dims j, j + 32, ... (head_dim <= 32 * ATT_DPL). Shared memory (f32): Q [ATT_BQ, hd],
// K [ATT_BK, hd + 1] (padded: lanes read different rows of one column), V [ATT_BK, hd].
#define ATT_BQ 16
#define ATT_BK 32
#define ATT_WARPS 4
#define ATT_QPW (ATT_BQ / ATT_WARPS)
#define ATT_DPL 8

template <typename T>
__device__ void attention_fwd(T* out, float* lse, const T* qkv, const T* k_cache, const T* v_cache,
                              const int* pos0, int seq, int heads, int kv_heads, int head_dim, int window,
                              int cap) {
    extern __shared__ float smem[];
    const int hd = head_dim;
    float* qs = smem;                      // [ATT_BQ, hd]
    float* ks = qs + ATT_BQ * hd;          // [ATT_BK, hd + 1]
    float* vs = ks + ATT_BK * (hd + 1);    // [ATT_BK, hd]

    const int b = blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * ATT_BQ;
    const int q_last = min(q0 + ATT_BQ, seq) - 1;
    const int q_per_kv = heads / kv_heads;
    const int g = h / q_per_kv;
    const int group_dim = (q_per_kv + 2) * hd;
    const int qkv_dim = (heads + 2 * kv_heads) * hd;
    const int q_col = g * group_dim + (h % q_per_kv) * hd;
    const int k_col = g * group_dim + q_per_kv * hd;
    const int v_col = k_col + hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T* base = qkv + (long)b * seq * qkv_dim;
    const int p0 = k_cache ? pos0[b] : 0;
    const int kv_dim = kv_heads * hd;

    for (int i = threadIdx.x; i < ATT_BQ * hd; i += blockDim.x) {
        const int r = i / hd, d = i % hd, t = q0 + r;
        qs[i] = t < seq ? ld(base + (long)t * qkv_dim + q_col + d) : 0.0f;
    }

    float m[ATT_QPW], l[ATT_QPW], acc[ATT_QPW][ATT_DPL];
#pragma unroll
    for (int qi = 0; qi < ATT_QPW; ++qi) {
        m[qi] = -INFINITY;
        l[qi] = 0.0f;
#pragma unroll
        for (int k = 0; k < ATT_DPL; ++k) acc[qi][k] = 0.0f;
    }

    // Absolute key indices: the block's queries see keys k_lo..=k_hi.
    const int k_hi = p0 + q_last;
    const int k_lo = window > 0 ? max(0, p0 + q0 - window + 1) : 0;
    for (int kt = k_lo; kt <= k_hi; kt += ATT_BK) {
        __syncthreads();  // the previous tile is consumed (and Q is loaded, on the first pass)
        for (int i = threadIdx.x; i < ATT_BK * hd; i += blockDim.x) {
            const int r = i / hd, d = i % hd, s = kt + r;
            float kv = 0.0f, vv = 0.0f;
            if (s <= k_hi) {
                if (s >= p0) {
                    const T* row = base + (long)(s - p0) * qkv_dim;
                    kv = ld(row + k_col + d);
                    vv = ld(row + v_col + d);
                } else {
                    const long slot = ((long)b * cap + s % cap) * kv_dim + (long)g * hd + d;
                    kv = ld(k_cache + slot);
                    vv = ld(v_cache + slot);
                }
            }
            ks[r * (hd + 1) + d] = kv;
            vs[r * hd + d] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int qi = 0; qi < ATT_QPW; ++qi) {
            const int r = warp * ATT_QPW + qi, t = q0 + r;
            if (t >= seq) continue;  // uniform over the warp
            const int pt = p0 + t;   // the query's absolute position
            const int first = window > 0 ? max(0, pt - window + 1) : 0;
            const int s = kt + lane;
            const bool visible = s <= pt && s >= first;
            float score = -INFINITY;
            if (visible) {
                float dot = 0.0f;
                const float* qr = qs + r * hd;
                const float* kr = ks + lane * (hd + 1);
                for (int d = 0; d < hd; ++d) dot += qr[d] * kr[d];
                score = scale * dot;
            }
            const float tile_max = warp_max(score);
            if (tile_max == -INFINITY) continue;  // no visible key of this tile for query t
            const float m_new = fmaxf(m[qi], tile_max);
            const float p = visible ? expf(score - m_new) : 0.0f;
            const float alpha = expf(m[qi] - m_new);
            l[qi] = l[qi] * alpha + warp_sum(p);
            m[qi] = m_new;
#pragma unroll
            for (int k = 0; k < ATT_DPL; ++k) acc[qi][k] *= alpha;
            for (int j = 0; j < ATT_BK; ++j) {
                const float pj = __shfl_sync(0xffffffffu, p, j);
                if (pj == 0.0f) continue;  // uniform: masked or underflowed key
                const float* vr = vs + j * hd;
#pragma unroll
                for (int k = 0; k < ATT_DPL; ++k) {
                    const int d = lane + 32 * k;
                    if (d < hd) acc[qi][k] += pj * vr[d];
                }
            }
        }
    }

#pragma unroll
    for (int qi = 0; qi < ATT_QPW; ++qi) {
        const int t = q0 + warp * ATT_QPW + qi;
        if (t >= seq) continue;
        const float inv_l = 1.0f / l[qi];
        T* o = out + ((long)b * seq + t) * heads * hd + (long)h * hd;
#pragma unroll
        for (int k = 0; k < ATT_DPL; ++k) {
            const int d = lane + 32 * k;
            if (d < hd) st(o + d, acc[qi][k] * inv_l);
        }
        if (lse && lane == 0) lse[((long)b * heads + h) * seq + t] = m[qi] + logf(l[qi]);
    }
}

extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_f32(float* out, float* lse, const float* qkv, const float* k_cache, const float* v_cache,
                      const int* pos0, int seq, int heads, int kv_heads, int head_dim, int window, int cap) {
    attention_fwd(out, lse, qkv, k_cache, v_cache, pos0, seq, heads, kv_heads, head_dim, window, cap);
}
extern "C" __global__ void __launch_bounds__(128)
    attention_fwd_bf16(bf16_t* out, float* lse, const bf16_t* qkv, const bf16_t* k_cache, const bf16_t* v_cache,
                       const int* pos0, int seq, int heads, int kv_heads, int head_dim, int window, int cap) {
    attention_fwd(out, lse, qkv, k_cache, v_cache, pos0, seq, heads, kv_heads, head_dim, window, cap);
}
