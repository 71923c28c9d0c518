// Dense layers of a decoding step: a few input rows (r < rows <= GEMV_MAX_ROWS) against a weight
// matrix w [n_out, in] (T) that is streamed from memory once,
//
//   y[r, o] = sum_i xin[r, i] w[o, i]
//
// with the elementwise work around the product done in the same kernel (no kernel of its own,
// no round trip of the activations through memory).
//
// Input (the prologue: staged once per block into shared memory, in T, exactly as the unfused
// path stores it):
//   plain    xin = inp [rows, inp_stride] (T)
//   RMSNorm  xin = x * rstd * norm_w,  rstd = 1 / sqrt(mean_i x^2 + eps),  x [rows, in] f32 (the
//            residual stream; every block recomputes the sums of squares: a row is 2304 floats)
// Output (the epilogue, per unit of one or two weight rows):
//   gemv_fwd         out = y (T), out = y (f32), or out += y (f32: the residual stream)
//   gemv_swiglu_fwd  act[r, j] = silu(y[r, j]) * y[r, hidden + j]       units: rows (j, hidden + j)
//                    of the stacked [w1; w2]; gate and up rounded to T first, as when stored
//   gemv_rope_fwd    qkv = y with every q and k head rotated (GPT-NeoX halves) at position pos[r]:
//                      qkv[i] = a c - b s,  qkv[i + hd/2] = b c + a s,  a = y[i], b = y[i + hd/2]
//                    units: rows (i, i + hd/2) of a head; v heads are stored as they are
//   gemv_conv_fwd    Mamba's in_proj [x_in | z] = y: z into xz, x_in through one step of the
//                    depthwise causal conv + SiLU (the conv state [batch, d_conv - 1, E] shifted in
//                    place, as causal_conv1d_update_fwd does) into u
//
// Work. A unit's weight rows are cut into k_split slices of consecutive 16-byte vectors (k_split
// > 1 for few units of long rows); a warp takes one slice of one unit, its lanes striding over
// the vectors in chunks of GEMV_VECS per lane, and the warp's chunks, over all its units, form
// one stream with two chunks in flight: after using a chunk the warp requests the one two steps
// ahead into the same registers (double buffering). What a unit's store needs (x for +=, cos and
// sin, the conv state and weights) is requested a unit ahead, and lane r stores row r. The
// k_split warps of a unit meet at a named barrier of their own and add their sums in a fixed
// order (no split-K reduction kernel; the same result every run). The host sizes the grid so
// every warp has the same number of units and the grid is resident at once.
// Prologue: the first two chunks of weights are requested before the wait for the work before
// (pdl_wait with programmatic dependent launch, SAMBA_PDL=1; the grid-wide barrier in the
// persistent step), so they stream while that work finishes; then the input is staged.
// Weights that are not 16-byte vectors (in % (16 / sizeof(T)) != 0, or an unaligned matrix) take
// a scalar path with the same arithmetic.
#define GEMV_MAX_ROWS 4
#define GEMV_WARPS 4
#define GEMV_THREADS (32 * GEMV_WARPS)
#ifndef GEMV_VECS  // 16-byte weight vectors per lane per chunk (SAMBA_NVRTC_DEFINES may set it)
#define GEMV_VECS 6
#endif
#ifndef GEMV_MIN_BLOCKS  // blocks per SM the registers are budgeted for
#define GEMV_MIN_BLOCKS 4
#endif
#ifndef GEMV_STAGE_REGS  // 16-byte input vectors per thread staged in registers
#define GEMV_STAGE_REGS 8
#endif
#define GEMV_CONV_MAX_K 4

template <typename T>
struct GemvVec;
template <>
struct GemvVec<bf16_t> {
    static constexpr int N = 8;
};
template <>
struct GemvVec<float> {
    static constexpr int N = 4;
};

// A weight vector, read once: not kept in L1, and the L2 asked to fetch 256 bytes at a time.
__device__ __forceinline__ uint4 gemv_ld_weights(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

template <typename T>
__device__ __forceinline__ void gemv_unpack(float* f, uint4 v);
template <>
__device__ __forceinline__ void gemv_unpack<bf16_t>(float* f, uint4 v) {
    const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
template <>
__device__ __forceinline__ void gemv_unpack<float>(float* f, uint4 v) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
}

__device__ __forceinline__ bool gemv_aligned(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// The prologue stages the input rows into shared memory xs [rows, ldx] (T) in two halves around
// the first weight requests, so its loads (L2 hits) are queued before the weights, not behind
// them: gemv_stage_issue loads the first GEMV_STAGE_REGS 16-byte vectors per thread into
// registers, gemv_stage_finish stores them (and loads the rest, rarely any) and builds the rows.
// The flat list of vectors: plain input, rows of inp; RMSNorm, the norm weight (T) and then the
// rows of x (f32).
struct GemvStage {
    uint4 v[GEMV_STAGE_REGS];
};

// Whether the input can be staged in 16-byte vectors (else element by element, all in finish).
template <typename T>
__device__ __forceinline__ bool gemv_stage_vec(const T* inp, int inp_stride, const float* x, const T* norm_w,
                                               int in) {
    constexpr int VEC = GemvVec<T>::N;
    if (in % VEC != 0) return false;
    if (x) return gemv_aligned(x) && gemv_aligned(norm_w);
    return gemv_aligned(inp) && inp_stride % VEC == 0;
}

// Vector `id` of the flat list.
template <typename T>
__device__ __forceinline__ const uint4* gemv_stage_src(int id, const T* inp, int inp_stride, const float* x,
                                                       const T* norm_w, int in) {
    constexpr int VEC = GemvVec<T>::N;
    const int nv = in / VEC;
    if (x) {
        if (id < nv) return reinterpret_cast<const uint4*>(norm_w) + id;
        id -= nv;
        return reinterpret_cast<const uint4*>(x) + id;  // rows of x are contiguous: in / 4 vectors each
    }
    return reinterpret_cast<const uint4*>(inp + (long)(id / nv) * inp_stride) + id % nv;
}

template <typename T>
__device__ __forceinline__ int gemv_stage_count(const float* x, int rows, int in) {
    constexpr int VEC = GemvVec<T>::N;
    return x ? in / VEC + rows * (in / 4) : rows * (in / VEC);
}

template <typename T>
__device__ __forceinline__ void gemv_stage_issue(GemvStage& sg, bool vec, const T* inp, int inp_stride,
                                                 const float* x, const T* norm_w, int rows, int in) {
    if (!vec) return;
    const int n = gemv_stage_count<T>(x, rows, in);
#pragma unroll
    for (int k = 0; k < GEMV_STAGE_REGS; ++k) {
        const int id = threadIdx.x + k * blockDim.x;
        if (id < n) sg.v[k] = *gemv_stage_src(id, inp, inp_stride, x, norm_w, in);
    }
}

// Puts staged vector `id` (its 16 bytes in v) in place: plain, into xs; RMSNorm, the weight into
// row 0 of xs, and x's squares into ss[row].
template <typename T, int MR>
__device__ __forceinline__ void gemv_stage_put(T* xs, int ldx, int id, uint4 v, const float* x, int in,
                                               float (&ss)[MR]) {
    constexpr int VEC = GemvVec<T>::N;
    const int nv = in / VEC;
    if (x) {
        if (id < nv) {
            reinterpret_cast<uint4*>(xs)[id] = v;
        } else {
            const int r = (id - nv) / (in / 4);
            const float a = __uint_as_float(v.x), b = __uint_as_float(v.y), c = __uint_as_float(v.z),
                        d = __uint_as_float(v.w);
#pragma unroll
            for (int q = 0; q < MR; ++q)
                if (q == r) ss[q] += a * a + b * b + c * c + d * d;
        }
    } else {
        reinterpret_cast<uint4*>(xs + (id / nv) * ldx)[id % nv] = v;
    }
}

// Finishes the prologue: xs holds the input rows (RMSNorm: x * rstd * w, rstd = 1 / sqrt(mean
// x^2 + eps), rounded to T), followed by a barrier.
template <typename T, int MR>
__device__ void gemv_stage_finish(T* xs, int ldx, const GemvStage& sg, bool vec, const T* inp, int inp_stride,
                                  const float* x, const T* norm_w, float eps, int rows, int in) {
    __shared__ float scratch[32];
    float ss[MR];
#pragma unroll
    for (int r = 0; r < MR; ++r) ss[r] = 0.0f;
    if (vec) {
        const int n = gemv_stage_count<T>(x, rows, in);
#pragma unroll
        for (int k = 0; k < GEMV_STAGE_REGS; ++k) {
            const int id = threadIdx.x + k * blockDim.x;
            if (id < n) gemv_stage_put<T, MR>(xs, ldx, id, sg.v[k], x, in, ss);
        }
        for (int id = threadIdx.x + GEMV_STAGE_REGS * blockDim.x; id < n; id += blockDim.x)
            gemv_stage_put<T, MR>(xs, ldx, id, *gemv_stage_src(id, inp, inp_stride, x, norm_w, in), x, in, ss);
    } else if (x) {
        for (int i = threadIdx.x; i < in; i += blockDim.x) xs[i] = norm_w[i];
        for (int r = 0; r < rows; ++r)
            for (int i = threadIdx.x; i < in; i += blockDim.x) ss[r] += x[(long)r * in + i] * x[(long)r * in + i];
    } else {
        for (int r = 0; r < rows; ++r)
            for (int i = threadIdx.x; i < in; i += blockDim.x) xs[r * ldx + i] = inp[(long)r * inp_stride + i];
    }
    if (x) {
        float rs[MR];
#pragma unroll
        for (int r = 0; r < MR; ++r)
            if (r < rows) rs[r] = 1.0f / sqrtf(block_sum(ss[r], scratch) / (float)in + eps);  // uniform
        // block_sum's barriers published the weight in row 0; each element's weight is read by the
        // thread that then overwrites it (row 0 last); x is read again from L1.
        for (int i = threadIdx.x; i < in; i += blockDim.x) {
            const float nw = ld(xs + i);
#pragma unroll
            for (int r = MR - 1; r >= 0; --r)
                if (r < rows) st(xs + r * ldx + i, x[(long)r * in + i] * rs[r] * nw);
        }
    }
    __syncthreads();
}

// Requests this lane's vectors [c0 + lane + 32 k] (k < VPL, below c1) of the NR weight rows.
template <typename T, int NR, int VPL>
__device__ __forceinline__ void gemv_request(uint4 (&wv)[NR][VPL], const T* w, const long (&row)[NR], int c0,
                                             int c1, int lane) {
    constexpr int VEC = GemvVec<T>::N;
#pragma unroll
    for (int j = 0; j < NR; ++j)
#pragma unroll
        for (int k = 0; k < VPL; ++k) {
            const int v = c0 + lane + 32 * k;
            if (v < c1) wv[j][k] = gemv_ld_weights(w + row[j] + (long)v * VEC);
        }
}

// acc[j][r] += the products of the requested vectors with the staged input rows.
template <typename T, int NR, int VPL, int MR>
__device__ __forceinline__ void gemv_consume(float (&acc)[NR][MR], const uint4 (&wv)[NR][VPL],
                                             const T* xs, int ldx, int c0, int c1, int lane, int rows) {
    constexpr int VEC = GemvVec<T>::N;
#pragma unroll
    for (int k = 0; k < VPL; ++k) {
        const int v = c0 + lane + 32 * k;
        if (v < c1) {
#pragma unroll
            for (int j = 0; j < NR; ++j) {
                float wf[VEC];
                gemv_unpack<T>(wf, wv[j][k]);
#pragma unroll
                for (int r = 0; r < MR; ++r) {
                    if (r < rows) {
                        float xf[VEC];
                        gemv_unpack<T>(xf, *reinterpret_cast<const uint4*>(xs + r * ldx + v * VEC));
                        float d = 0.0f;
#pragma unroll
                        for (int e = 0; e < VEC; ++e) d = fmaf(wf[e], xf[e], d);
                        acc[j][r] += d;
                    }
                }
            }
        }
    }
}

// The same on the scalar path: elements [c0 + lane + 32 k], k < 32 * VPL... every element of
// [c0, c1) this lane strides over.
template <typename T, int NR, int MR>
__device__ __forceinline__ void gemv_consume_scalar(float (&acc)[NR][MR], const T* w,
                                                    const long (&row)[NR], const T* xs, int ldx, int c0, int c1,
                                                    int lane, int rows) {
    for (int i = c0 + lane; i < c1; i += 32) {
#pragma unroll
        for (int j = 0; j < NR; ++j) {
            const float wf = ld(w + row[j] + i);
#pragma unroll
            for (int r = 0; r < MR; ++r)
                if (r < rows) acc[j][r] += wf * ld(xs + r * ldx + i);
        }
    }
}

// The k_split warps of one unit wait for each other (named barrier 1 + slot; 0 is __syncthreads).
__device__ __forceinline__ void gemv_group_sync(int slot, int k_split) {
    asm volatile("bar.sync %0, %1;" ::"r"(1 + slot), "r"(32 * k_split) : "memory");
}

// One step of a warp's stream: chunk [c0, c0 + chunk) of unit u's slice.
struct GemvStep {
    int u, c0;
};

// Whether the unit after step s's (this warp's next) exists, so its store's inputs can be
// requested.
__device__ __forceinline__ bool nxt_unit_pre(GemvStep s, int ustep, int n_units) { return s.u + ustep < n_units; }

// The kernel body: units u < n_units; map(u, row) gives the offsets of the unit's NR weight rows;
// epi.prefetch(u, r, pre) loads what row r's store of unit u needs, epi.store(u, r, y, pre) stores
// it (both by lane r < rows).
template <typename T, int NR, typename Map, typename Epi, typename G, int MR = GEMV_MAX_ROWS>
__device__ void gemv_body(const G& g, const T* __restrict__ w, int in, int n_units, int k_split, int rows, const T* inp,
                          int inp_stride, const float* x, const T* norm_w, float eps, const Map& map,
                          const Epi& epi) {
    extern __shared__ __align__(16) unsigned char gemv_smem[];
    __shared__ float red[2][GEMV_WARPS][NR][MR];
    constexpr int VEC = GemvVec<T>::N;
    constexpr int VPL = (GEMV_VECS + NR - 1) / NR;
    using Pre = typename Epi::Pre;
    T* xs = reinterpret_cast<T*>(gemv_smem);
    const int ldx = (in + 7) & ~7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int per_block = GEMV_WARPS / k_split;  // units a block takes at a time
    const int slice = warp % k_split, slot = warp / k_split;
    const int block = g.block().x;
    const int ustep = g.size().x * per_block;
    const bool vec = in % VEC == 0 && gemv_aligned(w);
    // This warp's slice of a unit's rows: vectors (elements on the scalar path) [v0, v0 + per_slice)
    // below items, walked in chunks (one chunk per slice on the scalar path).
    const int items = vec ? in / VEC : in;
    const int per_slice = (items + k_split - 1) / k_split;
    const int v0 = slice * per_slice, v_end = min(items, v0 + per_slice);
    const int chunk = vec ? 32 * VPL : per_slice;
    const auto next = [&](GemvStep s) {
        s.c0 += chunk;
        if (s.c0 >= v0 + per_slice) {
            s.c0 = v0;
            s.u += ustep;
        }
        return s;
    };
    // Requests the chunk of step s into wv (a unit of this warp, vector path).
    const auto request = [&](uint4 (&wv)[NR][VPL], GemvStep s) {
        if (vec && s.u < n_units) {
            long row[NR];
            map(s.u, row);
            gemv_request<T, NR, VPL>(wv, w, row, s.c0, min(v_end, s.c0 + chunk), lane);
        }
    };

    // Prologue: the first two chunks of weights (they depend on nothing), then the wait for the
    // work before, then the staged input and what the first store needs.
    uint4 wa[NR][VPL], wb[NR][VPL];
    GemvStep cur = {block * per_block + slot, v0};
    request(wa, cur);
    request(wb, next(cur));
    g.wait();
    const bool svec = gemv_stage_vec(inp, inp_stride, x, norm_w, in);
    GemvStage sg;
    gemv_stage_issue(sg, svec, inp, inp_stride, x, norm_w, rows, in);
    Pre pre_cur, pre_next;
    if (cur.u < n_units && lane < rows) epi.prefetch(cur.u, lane, pre_cur);
    gemv_stage_finish<T, MR>(xs, ldx, sg, svec, inp, inp_stride, x, norm_w, eps, rows, in);
    if (block * per_block >= n_units) return;  // uniform over the block

    float acc[NR][MR];
#pragma unroll
    for (int j = 0; j < NR; ++j)
#pragma unroll
        for (int r = 0; r < MR; ++r) acc[j][r] = 0.0f;
    int parity = 0;
    // One step: use the current chunk from `cb` and request the one two steps ahead into it
    // (the next one is in flight in the other buffer); at a unit's first chunk, request what the
    // next unit's store needs; after its last chunk, reduce and store the unit. Returns false when
    // the warp's block is done (blocks stride over units together, so every warp of a block takes
    // the same steps).
    const auto run_step = [&](uint4 (&cb)[NR][VPL]) {
        const GemvStep nxt = next(cur);
        const bool unit_end = nxt.u != cur.u;
        if (cur.c0 == v0 && nxt_unit_pre(cur, ustep, n_units) && lane < rows)
            epi.prefetch(cur.u + ustep, lane, pre_next);
        if (cur.u < n_units) {
            if (vec) {
                gemv_consume<T, NR, VPL, MR>(acc, cb, xs, ldx, cur.c0, min(v_end, cur.c0 + chunk), lane, rows);
            } else {
                long row[NR];
                map(cur.u, row);
                gemv_consume_scalar<T, NR, MR>(acc, w, row, xs, ldx, cur.c0, min(v_end, cur.c0 + chunk), lane, rows);
            }
        }
        request(cb, next(nxt));
        if (unit_end) {
#pragma unroll
            for (int j = 0; j < NR; ++j)
#pragma unroll
                for (int r = 0; r < MR; ++r)
                    if (r < rows) acc[j][r] = warp_sum(acc[j][r]);
            if (k_split > 1) {
                if (lane == 0) {
#pragma unroll
                    for (int j = 0; j < NR; ++j)
#pragma unroll
                        for (int r = 0; r < MR; ++r) red[parity][warp][j][r] = acc[j][r];
                }
                gemv_group_sync(slot, k_split);
                if (slice == 0) {
#pragma unroll
                    for (int j = 0; j < NR; ++j)
#pragma unroll
                        for (int r = 0; r < MR; ++r) {
                            float t = 0.0f;
                            for (int q = 0; q < k_split; ++q) t += red[parity][warp + q][j][r];
                            acc[j][r] = t;
                        }
                }
                parity ^= 1;
            }
            if (slice == 0 && lane < rows && cur.u < n_units) {
                float y[NR];
#pragma unroll
                for (int j = 0; j < NR; ++j) {
                    y[j] = acc[j][0];
#pragma unroll
                    for (int r = 1; r < MR; ++r)
                        if (lane == r) y[j] = acc[j][r];
                }
                epi.store(cur.u, lane, y, pre_cur);
            }
#pragma unroll
            for (int j = 0; j < NR; ++j)
#pragma unroll
                for (int r = 0; r < MR; ++r) acc[j][r] = 0.0f;
            pre_cur = pre_next;
        }
        cur = nxt;
        return nxt.u - slot < n_units;
    };
    while (run_step(wa) && run_step(wb)) {
    }
}

// ---- unit maps

// One weight row per unit.
struct GemvRow {
    int in;
    __device__ void operator()(int u, long (&row)[1]) const { row[0] = (long)u * in; }
};

// Rows u and hidden + u of the stacked [w1; w2].
struct GemvGateUp {
    int in, hidden;
    __device__ void operator()(int u, long (&row)[2]) const {
        row[0] = (long)u * in;
        row[1] = (long)(u + hidden) * in;
    }
};

// Rows i and i + hd/2 of head u / (hd/2), i = u % (hd/2).
struct GemvRopePair {
    int in, head_dim;
    __device__ void operator()(int u, long (&row)[2]) const {
        const int half = head_dim / 2;
        const int o = (u / half) * head_dim + u % half;
        row[0] = (long)o * in;
        row[1] = (long)(o + half) * in;
    }
};

// ---- epilogues: prefetch(u, r, pre) and store(u, r, y, pre), by lane r < rows

struct GemvNoPre {};

// mode 0: out (T) = y; 1: out (f32) = y; 2: out (f32) += y.
template <typename T>
struct GemvStore {
    void* out;
    int stride, mode;
    struct Pre {
        float base;
    };
    __device__ void prefetch(int o, int r, Pre& pre) const {
        pre.base = mode == 2 ? static_cast<const float*>(out)[(long)r * stride + o] : 0.0f;
    }
    __device__ void store(int o, int r, const float (&y)[1], const Pre& pre) const {
        if (mode == 0) st(static_cast<T*>(out) + (long)r * stride + o, y[0]);
        else static_cast<float*>(out)[(long)r * stride + o] = mode == 2 ? pre.base + y[0] : y[0];
    }
};

template <typename T>
struct GemvSwiglu {
    T* act;
    int stride;
    using Pre = GemvNoPre;
    __device__ void prefetch(int, int, Pre&) const {}
    // (returns act as stored: the persistent step's folded fc2 reads it)
    __device__ float store(int j, int r, const float (&y)[2], const Pre&) const {
        const float v = silu(stored<T>(y[0])) * stored<T>(y[1]);
        st(act + (long)r * stride + j, v);
        return stored<T>(v);
    }
};

// qkv [rows, stride] in the grouped-interleaved layout: per kv group, q_per_kv query heads, then
// k, then v; cos_t, sin_t [positions, hd/2] (f32); pos [rows] (null: position 0).
template <typename T>
struct GemvRope {
    T* qkv;
    int stride, head_dim, q_per_kv;
    const float *cos_t, *sin_t;
    const int* pos;
    struct Pre {
        float c, s;
    };
    __device__ void prefetch(int u, int r, Pre& pre) const {
        const int half = head_dim / 2;
        const long p = pos ? (long)pos[r] : 0L;
        pre.c = cos_t[p * half + u % half];
        pre.s = sin_t[p * half + u % half];
    }
    __device__ void store(int u, int r, const float (&y)[2], const Pre& pre) const {
        const int half = head_dim / 2;
        const int head = u / half;
        T* dst = qkv + (long)r * stride + head * head_dim + u % half;
        const float a = stored<T>(y[0]), b = stored<T>(y[1]);
        if (head % (q_per_kv + 2) <= q_per_kv) {  // q heads and k, not v
            st(dst, a * pre.c - b * pre.s);
            st(dst + half, b * pre.c + a * pre.s);
        } else {
            st(dst, a);
            st(dst + half, b);
        }
    }
};

// Rows o < E: x_in = y -> u [rows, E], conv state [rows, d_conv - 1, E] (T, in place); rows o >= E:
// z = y -> xz[r, o] (xz [rows, 2E]). For one token, as causal_conv1d_update_fwd:
//   p = bias[o] + sum_{k < K-1} w[o, k] state[k, o] + w[o, K-1] x_in,   u = silu(p),
//   state <- [state[1..K-1], x_in]
template <typename T>
struct GemvConv {
    T *u, *xz, *state;
    const T *conv_w, *conv_b;
    int d_inner, d_conv;
    struct Pre {
        float hist[GEMV_CONV_MAX_K - 1], w[GEMV_CONV_MAX_K], bias;
    };
    __device__ void prefetch(int o, int r, Pre& pre) const {
        if (o >= d_inner) return;
        const T* s = state + (long)r * (d_conv - 1) * d_inner + o;
#pragma unroll
        for (int k = 0; k < GEMV_CONV_MAX_K; ++k) {
            if (k + 1 < GEMV_CONV_MAX_K) pre.hist[k] = k + 1 < d_conv ? ld(s + (long)k * d_inner) : 0.0f;
            pre.w[k] = k < d_conv ? ld(conv_w + (long)o * d_conv + k) : 0.0f;
        }
        pre.bias = ld(conv_b + o);
    }
    // Returns u's value as stored (rounded to T), or 0 for a z row.
    __device__ float store(int o, int r, const float (&y)[1], const Pre& pre) const {
        if (o >= d_inner) {
            st(xz + (long)r * 2 * d_inner + o, y[0]);
            return 0.0f;
        }
        const int hist_len = d_conv - 1;
        const float xv = stored<T>(y[0]);
        float p = pre.bias;
#pragma unroll
        for (int k = 0; k < GEMV_CONV_MAX_K; ++k) {
            if (k < hist_len) p += pre.w[k] * pre.hist[k < GEMV_CONV_MAX_K - 1 ? k : 0];
            else if (k == hist_len) p += pre.w[k] * xv;
        }
        const float uv = stored<T>(silu(p));
        st(u + (long)r * d_inner + o, uv);
        T* s = state + (long)r * hist_len * d_inner + o;
#pragma unroll
        for (int k = 0; k + 1 < GEMV_CONV_MAX_K; ++k)
            if (k + 1 < hist_len) st(s + (long)k * d_inner, pre.hist[k + 1 < GEMV_CONV_MAX_K - 1 ? k + 1 : 0]);
        if (hist_len > 0) st(s + (long)(hist_len - 1) * d_inner, xv);
        return uv;
    }
};

// ---- entry points

#define GEMV_INPUT(T) const T *inp, int inp_stride, const float *x, const T *norm_w, float eps
#define GEMV_LAUNCH __launch_bounds__(GEMV_THREADS, GEMV_MIN_BLOCKS)

template <typename T, typename G, int MR = GEMV_MAX_ROWS>
__device__ void gemv_fwd(const G& g, void* out, int out_stride, int out_mode, GEMV_INPUT(T), const T* w, int rows, int in,
                         int n_out, int k_split) {
    gemv_body<T, 1, GemvRow, GemvStore<T>, G, MR>(g, w, in, n_out, k_split, rows, inp, inp_stride, x, norm_w, eps, GemvRow{in},
                    GemvStore<T>{out, out_stride, out_mode});
}
extern "C" __global__ void GEMV_LAUNCH gemv_fwd_f32(void* out, int out_stride, int out_mode, GEMV_INPUT(float),
                                                   const float* w, int rows, int in, int n_out, int k_split) {
    gemv_fwd<float>(KernelGrid{}, out, out_stride, out_mode, inp, inp_stride, x, norm_w, eps, w, rows, in, n_out, k_split);
}
extern "C" __global__ void GEMV_LAUNCH gemv_fwd_bf16(void* out, int out_stride, int out_mode, GEMV_INPUT(bf16_t),
                                                    const bf16_t* w, int rows, int in, int n_out, int k_split) {
    gemv_fwd<bf16_t>(KernelGrid{}, out, out_stride, out_mode, inp, inp_stride, x, norm_w, eps, w, rows, in, n_out, k_split);
}

// w [2 hidden, in] = [w1; w2]; act [rows, act_stride].
template <typename T, typename G, int MR = GEMV_MAX_ROWS>
__device__ void gemv_swiglu_fwd(const G& g, T* act, int act_stride, GEMV_INPUT(T), const T* w, int rows, int in, int hidden,
                                int k_split) {
    gemv_body<T, 2, GemvGateUp, GemvSwiglu<T>, G, MR>(g, w, in, hidden, k_split, rows, inp, inp_stride, x, norm_w, eps, GemvGateUp{in, hidden},
                    GemvSwiglu<T>{act, act_stride});
}
extern "C" __global__ void GEMV_LAUNCH gemv_swiglu_fwd_f32(float* act, int act_stride, GEMV_INPUT(float),
                                                          const float* w, int rows, int in, int hidden,
                                                          int k_split) {
    gemv_swiglu_fwd<float>(KernelGrid{}, act, act_stride, inp, inp_stride, x, norm_w, eps, w, rows, in, hidden, k_split);
}
extern "C" __global__ void GEMV_LAUNCH gemv_swiglu_fwd_bf16(bf16_t* act, int act_stride, GEMV_INPUT(bf16_t),
                                                           const bf16_t* w, int rows, int in, int hidden,
                                                           int k_split) {
    gemv_swiglu_fwd<bf16_t>(KernelGrid{}, act, act_stride, inp, inp_stride, x, norm_w, eps, w, rows, in, hidden, k_split);
}

// w [n_out, in], n_out = (heads + 2 kv_heads) head_dim; qkv [rows, qkv_stride].
template <typename T, typename G, int MR = GEMV_MAX_ROWS>
__device__ void gemv_rope_fwd(const G& g, T* qkv, int qkv_stride, const float* cos_t, const float* sin_t, const int* pos,
                              int head_dim, int q_per_kv, GEMV_INPUT(T), const T* w, int rows, int in, int n_out,
                              int k_split) {
    gemv_body<T, 2, GemvRopePair, GemvRope<T>, G, MR>(g, w, in, n_out / 2, k_split, rows, inp, inp_stride, x, norm_w, eps, GemvRopePair{in, head_dim},
                    GemvRope<T>{qkv, qkv_stride, head_dim, q_per_kv, cos_t, sin_t, pos});
}
#define GEMV_ROPE_ARGS(T)                                                                                   \
    T *qkv, int qkv_stride, const float *cos_t, const float *sin_t, const int *pos, int head_dim, int q_per_kv, \
        GEMV_INPUT(T), const T *w, int rows, int in, int n_out, int k_split
extern "C" __global__ void GEMV_LAUNCH gemv_rope_fwd_f32(GEMV_ROPE_ARGS(float)) {
    gemv_rope_fwd<float>(KernelGrid{}, qkv, qkv_stride, cos_t, sin_t, pos, head_dim, q_per_kv, inp, inp_stride, x, norm_w, eps,
                         w, rows, in, n_out, k_split);
}
extern "C" __global__ void GEMV_LAUNCH gemv_rope_fwd_bf16(GEMV_ROPE_ARGS(bf16_t)) {
    gemv_rope_fwd<bf16_t>(KernelGrid{}, qkv, qkv_stride, cos_t, sin_t, pos, head_dim, q_per_kv, inp, inp_stride, x, norm_w,
                          eps, w, rows, in, n_out, k_split);
}

// w [2E, in] = in_proj; u [rows, E]; xz [rows, 2E] (only z = columns E.. are written);
// conv_state [rows, d_conv - 1, E]; conv_w [E, d_conv]; conv_b [E].
template <typename T, typename G, int MR = GEMV_MAX_ROWS>
__device__ void gemv_conv_fwd(const G& g, T* u, T* xz, T* conv_state, const T* conv_w, const T* conv_b, int d_inner,
                              int d_conv, GEMV_INPUT(T), const T* w, int rows, int in, int k_split) {
    gemv_body<T, 1, GemvRow, GemvConv<T>, G, MR>(g, w, in, 2 * d_inner, k_split, rows, inp, inp_stride, x, norm_w, eps, GemvRow{in},
                    GemvConv<T>{u, xz, conv_state, conv_w, conv_b, d_inner, d_conv});
}
#define GEMV_CONV_ARGS(T)                                                                                   \
    T *u, T *xz, T *conv_state, const T *conv_w, const T *conv_b, int d_inner, int d_conv, GEMV_INPUT(T), \
        const T *w, int rows, int in, int k_split
extern "C" __global__ void GEMV_LAUNCH gemv_conv_fwd_f32(GEMV_CONV_ARGS(float)) {
    gemv_conv_fwd<float>(KernelGrid{}, u, xz, conv_state, conv_w, conv_b, d_inner, d_conv, inp, inp_stride, x, norm_w, eps, w,
                         rows, in, k_split);
}
extern "C" __global__ void GEMV_LAUNCH gemv_conv_fwd_bf16(GEMV_CONV_ARGS(bf16_t)) {
    gemv_conv_fwd<bf16_t>(KernelGrid{}, u, xz, conv_state, conv_w, conv_b, d_inner, d_conv, inp, inp_stride, x, norm_w, eps, w,
                          rows, in, k_split);
}
