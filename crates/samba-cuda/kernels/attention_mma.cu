// Causal (sliding-window) attention on the tensor cores, for bf16 storage: the same function as
// attention_fwd in attention.cu (window, GQA, keys from a ring cache before the chunk), computed
// FlashAttention-2 style with mma.sync m16n8k16 (bf16 in, f32 accumulate):
//
//   per key tile:  S = Q K^T (tensor cores, f32)       masked outside [first(t), t]
//                  m' = max(m, rowmax S),  P = exp2(S * scale * log2 e - m'),  l = l 2^(m - m') + rowsum P
//                  O = O 2^(m - m') + P V   (P rounded to bf16, tensor cores)
//   end:           out = O / l,  lse = (m + log2 l) ln 2
//
// Block: 4 warps, 64 queries of one (head, batch), 16 per warp; key tiles of 64 through shared
// memory, double-buffered with cp.async (the next tile loads while this one is used); keys beyond
// the last query or outside the window of the block's first query are never loaded.
// Fragments (PTX ISA, mma.m16n8k16): with g = lane / 4, c = lane % 4,
//   A (16x16, row-major): {A[g][2c..], A[g+8][2c..], A[g][2c+8..], A[g+8][2c+8..]}
//   B (16x8, column-major): {B[2c..][g], B[2c+8..][g]}
//   C (16x8, f32): {C[g][2c], C[g][2c+1], C[g+8][2c], C[g+8][2c+1]}
// so Q's A fragments are read straight from global memory (once), K's B fragments from K[key][dim]
// rows in shared memory (32-bit loads), the S accumulators of two adjacent 8-key tiles are P's A
// fragment as they stand, and V's B fragments come from V[key][dim] rows by ldmatrix.trans.
// Shared-memory rows are padded to HD + 8 values, so both fragment reads are free of bank conflicts.
//
// qkv [batch, seq, (heads + 2 kv_heads) HD] (roped, grouped-interleaved); out [batch, seq, heads HD];
// lse [batch, heads, seq] (f32, may be null); k_cache, v_cache [batch, cap, kv_heads HD] and pos0
// [batch] as in attention.cu (k_cache null: no cache, p0 = 0).
#define MMA_BQ 64
#define MMA_BK 64
#define MMA_THREADS 128

__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
// 16 bytes global -> shared, asynchronously; src_bytes = 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// c += a b for one 16x8x16 tile.
__device__ __forceinline__ void mma_16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// Two f32 -> bf16x2 (round to nearest even), `lo` in the low half (the lower index).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

template <int HD>
__device__ void attention_mma_fwd(bf16_t* out, float* lse, const bf16_t* qkv, const bf16_t* k_cache,
                                  const bf16_t* v_cache, const int* pos0, int seq, int heads, int kv_heads,
                                  int window, int cap) {
    constexpr int STR = HD + 8;     // shared-memory row stride (bf16 values)
    constexpr int CHUNKS = HD / 8;  // 16-byte pieces per row
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* ks = reinterpret_cast<bf16_t*>(smem_raw);  // [2][MMA_BK][STR]
    bf16_t* vs = ks + 2 * MMA_BK * STR;                 // [2][MMA_BK][STR]

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * MMA_BQ;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    const int q_per_kv = heads / kv_heads, g = h / q_per_kv;
    const int group_dim = (q_per_kv + 2) * HD, qkv_dim = (heads + 2 * kv_heads) * HD, kv_dim = kv_heads * HD;
    const int q_col = g * group_dim + (h % q_per_kv) * HD, k_col = g * group_dim + q_per_kv * HD;
    const int v_col = k_col + HD;
    const bf16_t* base = qkv + (long)b * seq * qkv_dim;
    const int p0 = k_cache ? pos0[b] : 0;
    const int q_last = min(q0 + MMA_BQ, seq) - 1;
    const int k_hi = p0 + q_last;  // absolute keys k_lo..=k_hi
    const int k_lo = window > 0 ? max(0, p0 + q0 - window + 1) : 0;
    const int n_tiles = (k_hi - k_lo) / MMA_BK + 1;

    // This thread's two query rows (chunk indices) and their absolute positions.
    const int ra = q0 + warp * 16 + gq, rb = ra + 8;
    const int pa = p0 + ra, pb = p0 + rb;

    u32 qf[HD / 16][4];
    {
        const bool va = ra < seq, vb = rb < seq;
        const bf16_t* qa = base + (long)(va ? ra : 0) * qkv_dim + q_col + 2 * tq;
        const bf16_t* qb = base + (long)(vb ? rb : 0) * qkv_dim + q_col + 2 * tq;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            qf[kk][0] = va ? *reinterpret_cast<const u32*>(qa + kk * 16) : 0u;
            qf[kk][1] = vb ? *reinterpret_cast<const u32*>(qb + kk * 16) : 0u;
            qf[kk][2] = va ? *reinterpret_cast<const u32*>(qa + kk * 16 + 8) : 0u;
            qf[kk][3] = vb ? *reinterpret_cast<const u32*>(qb + kk * 16 + 8) : 0u;
        }
    }

    // Keys kt..kt+MMA_BK-1 into buffer buf; keys past k_hi are zeros (and masked below).
    auto load_tile = [&](int buf, int kt) {
        for (int c = tid; c < MMA_BK * CHUNKS; c += MMA_THREADS) {
            const int r = c / CHUNKS, col = (c % CHUNKS) * 8, j = kt + r;
            const bf16_t* ksrc = base;
            const bf16_t* vsrc = base;
            int bytes = 0;
            if (j <= k_hi) {
                bytes = 16;
                if (j >= p0) {
                    const bf16_t* rowp = base + (long)(j - p0) * qkv_dim;
                    ksrc = rowp + k_col + col;
                    vsrc = rowp + v_col + col;
                } else {
                    const long slot = ((long)b * cap + j % cap) * kv_dim + (long)g * HD + col;
                    ksrc = k_cache + slot;
                    vsrc = v_cache + slot;
                }
            }
            cp_async16(smem_u32(ks + (buf * MMA_BK + r) * STR + col), ksrc, bytes);
            cp_async16(smem_u32(vs + (buf * MMA_BK + r) * STR + col), vsrc, bytes);
        }
    };

    float o[HD / 8][4];
#pragma unroll
    for (int dt = 0; dt < HD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
    const float sl2 = 1.4426950408889634f / sqrtf((float)HD);  // scale * log2(e)

    load_tile(0, k_lo);
    cp_async_commit();
    for (int it = 0; it < n_tiles; ++it) {
        const int kt = k_lo + it * MMA_BK, buf = it & 1;
        if (it + 1 < n_tiles) {
            load_tile(buf ^ 1, kt + MMA_BK);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16_t* kb = ks + buf * MMA_BK * STR;
        const bf16_t* vb = vs + buf * MMA_BK * STR;

        float s[MMA_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < MMA_BK / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const bf16_t* krow = kb + (nt * 8 + gq) * STR + 2 * tq;
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) {
                const u32 b0 = *reinterpret_cast<const u32*>(krow + kk * 16);
                const u32 b1 = *reinterpret_cast<const u32*>(krow + kk * 16 + 8);
                mma_16816(s[nt], qf[kk], b0, b1);
            }
        }

        // Every (query, key) of the tile visible for every row of the block: no mask needed.
        const bool full_tile =
            kt + MMA_BK - 1 <= p0 + q0 && (window == 0 || kt >= p0 + q_last - window + 1);
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < MMA_BK / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float v = s[nt][e] * sl2;
                if (!full_tile) {
                    const int j = kt + nt * 8 + 2 * tq + (e & 1);
                    const int pr = e < 2 ? pa : pb;
                    if (j > pr || (window > 0 && j <= pr - window)) v = -INFINITY;
                }
                s[nt][e] = v;
                if (e < 2) mx_a = fmaxf(mx_a, v);
                else mx_b = fmaxf(mx_b, v);
            }
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        // A row with no visible key yet keeps m = -inf: exponents from 0 give p = 0, alpha = 0.
        const float mu_a = mn_a == -INFINITY ? 0.0f : mn_a, mu_b = mn_b == -INFINITY ? 0.0f : mn_b;
        const float al_a = exp2f(m_a - mu_a), al_b = exp2f(m_b - mu_b);
        m_a = mn_a;
        m_b = mn_b;
        float rs_a = 0.0f, rs_b = 0.0f;
#pragma unroll
        for (int nt = 0; nt < MMA_BK / 8; ++nt) {
            s[nt][0] = exp2f(s[nt][0] - mu_a);
            s[nt][1] = exp2f(s[nt][1] - mu_a);
            s[nt][2] = exp2f(s[nt][2] - mu_b);
            s[nt][3] = exp2f(s[nt][3] - mu_b);
            rs_a += s[nt][0] + s[nt][1];
            rs_b += s[nt][2] + s[nt][3];
        }
        l_a = l_a * al_a + rs_a;
        l_b = l_b * al_b + rs_b;
#pragma unroll
        for (int dt = 0; dt < HD / 8; ++dt) {
            o[dt][0] *= al_a;
            o[dt][1] *= al_a;
            o[dt][2] *= al_b;
            o[dt][3] *= al_b;
        }

        // O += P V over the tile's 4 blocks of 16 keys.
        const int mat = lane >> 3, mrow = lane & 7;
#pragma unroll
        for (int kk2 = 0; kk2 < MMA_BK / 16; ++kk2) {
            const u32 pf[4] = {pack_bf16x2(s[2 * kk2][0], s[2 * kk2][1]), pack_bf16x2(s[2 * kk2][2], s[2 * kk2][3]),
                               pack_bf16x2(s[2 * kk2 + 1][0], s[2 * kk2 + 1][1]),
                               pack_bf16x2(s[2 * kk2 + 1][2], s[2 * kk2 + 1][3])};
            const bf16_t* vrow = vb + (kk2 * 16 + mrow + (mat & 1) * 8) * STR + (mat >> 1) * 8;
#pragma unroll
            for (int dt2 = 0; dt2 < HD / 16; ++dt2) {
                u32 vf[4];
                ldmatrix_x4_trans(vf, smem_u32(vrow + dt2 * 16));
                mma_16816(o[2 * dt2], pf, vf[0], vf[1]);
                mma_16816(o[2 * dt2 + 1], pf, vf[2], vf[3]);
            }
        }
        __syncthreads();  // this buffer is refilled two tiles on
    }

    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float ln2 = 0.6931471805599453f;
    if (ra < seq) {
        const float inv = 1.0f / l_a;
        bf16_t* orow = out + ((long)b * seq + ra) * heads * HD + (long)h * HD + 2 * tq;
#pragma unroll
        for (int dt = 0; dt < HD / 8; ++dt)
            *reinterpret_cast<u32*>(orow + dt * 8) = pack_bf16x2(o[dt][0] * inv, o[dt][1] * inv);
        if (lse && tq == 0) lse[((long)b * heads + h) * seq + ra] = (m_a + log2f(l_a)) * ln2;
    }
    if (rb < seq) {
        const float inv = 1.0f / l_b;
        bf16_t* orow = out + ((long)b * seq + rb) * heads * HD + (long)h * HD + 2 * tq;
#pragma unroll
        for (int dt = 0; dt < HD / 8; ++dt)
            *reinterpret_cast<u32*>(orow + dt * 8) = pack_bf16x2(o[dt][2] * inv, o[dt][3] * inv);
        if (lse && tq == 0) lse[((long)b * heads + h) * seq + rb] = (m_b + log2f(l_b)) * ln2;
    }
}

#define MMA_ARGS                                                                                           \
    bf16_t *out, float *lse, const bf16_t *qkv, const bf16_t *k_cache, const bf16_t *v_cache, const int *pos0, \
        int seq, int heads, int kv_heads, int window, int cap
extern "C" __global__ void __launch_bounds__(MMA_THREADS) attention_mma_fwd_bf16_hd64(MMA_ARGS) {
    attention_mma_fwd<64>(out, lse, qkv, k_cache, v_cache, pos0, seq, heads, kv_heads, window, cap);
}
extern "C" __global__ void __launch_bounds__(MMA_THREADS) attention_mma_fwd_bf16_hd128(MMA_ARGS) {
    attention_mma_fwd<128>(out, lse, qkv, k_cache, v_cache, pos0, seq, heads, kv_heads, window, cap);
}
