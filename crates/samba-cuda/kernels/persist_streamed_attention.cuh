// The decoding attention as a phase of the persistent decoding kernel (kernels/decode_persistent.cu;
// its shared parts: kernels/persist_core.cuh), its keys and values streamed through the
// shared-memory ring like weights (kind PERSIST_STREAMED_ATTENTION; the default,
// SAMBA_PERSIST_ATTENTION=own runs the attention as a kernel of its own: src/model/persistent.rs).
// Its first version was correct on the H200 but its phase took ~19 us at 1K context, slower than
// the kernel of its own; the second (key p, the scores and the merge reworked; STREAM_ATT_WARP=0
// now) was correct on an H100 and faster than the kernel there, its phase still ~18 us; the warp
// path (below, the default) was correct on two other H100s, the phase as long, the step slower
// there than with the kernel of its own, until the ring was aligned (its streamed entries' dense
// phases had run ~2 us longer each): then the fastest (docs/gpu.md, session 9)
//
// The decoding attention as a kernel of its own costs the step a launch boundary per attention
// layer (~22 us each on Samba-1.3B: the kernel, the persistent kernel's tail and relaunch). As a
// phase of the persistent kernel, with attention_decode_fwd's arguments (the host sets n_split =
// B, the blocks per kv group, and a partials buffer for them):
//   block b < kv_heads B takes kv group g = b / B and the c = b % B-th of B equal ranges of the
//   keys query position p sees (first..=p, first = max(0, p - window + 1) with a window), every
//   query head of the group at once;
//   its producer copies the range's cached keys and values (rows of k_cache, v_cache at KV
//   cache slot j % cap) into the ring, a stage of up to keys_per_stage() keys at a time:
//   [K rows | V rows]. They do not depend on the token, so they stream before the barrier like weights;
//   its consumers, after the barrier, stage q (scaled by 1 / sqrt(hd)), and per stage update
//   the online softmax of each query head i over the stage's keys r (with 8 lanes per (i, r)):
//     s_ir = q_i . k_r,  m' = max(m, max_r s_ir),  p_ir = exp(s_ir - m'),
//     l = l exp(m - m') + sum_r p_ir,  acc_i = acc_i exp(m - m') + sum_r p_ir v_r;
//   the block that holds key p takes it from qkv (this token's, roped) after its stages;
//   each block writes (acc_i, m_i, l_i) to part [heads, B, hd + 2]; the group's last block to
//   finish (counted in done[g], which it sets back to 0) merges the B ranges of each head as
//   attention_decode_merge does (16 ranges' values requested at once), stores the output (T) and
//   this token's key and value into KV cache slot p % cap: after every block of the group has
//   read its stages. With merge_next() (PERSIST_HEADS, SAMBA_PERSIST_ATTENTION=stream-heads) the
//   phase ends with the partials: out_proj, split by heads, merges them and stores k, v
//   (kernels/decode_persistent.cu: persist_heads_merge).
// Scratch (f32, in the input row's shared memory): qkv's row of the group [qpg hd | k_p hd | v_p
// hd] (q scaled), acc [qpg hd], s [qpg kps], m, l, alpha [qpg], then the merge's weights and l's
// [B] (stream_att_scratch_floats; the host sizes the input row's memory for it).
#define STREAM_ATT_MAX_KEYS 64        // keys per stage at most
#define STREAM_ATT_MERGE_NEXT 13      // the argument the host sets when the next op merges (below)
#define STREAM_ATT_STAGE_BYTES 16384  // a stage's K and V rows at most (the host sizes the scratch)

// STREAM_ATT_READY (an experiment, off; the host's switch SAMBA_PERSIST_ATT_READY=1 sets the
// counters: src/model/attention_ready.rs): the phase starts per kv group. The qkv + RoPE op right
// before it adds one to the counter of each group its block's units meet (persist_rope_ready,
// kernels/decode_persistent.cu), and group g's blocks here arrive at the grid barrier without
// waiting for it and wait instead until counter g reaches its contributors (the host counted
// them) times the steps so far: their qkv rows are written, whatever the other groups' blocks do.
#ifndef STREAM_ATT_READY
#define STREAM_ATT_READY 0
#endif
#define STREAM_ATT_READY_ARG 14    // the counters (after the merge's flag; 0: the grid barrier)
#define STREAM_ATT_READY_STRIDE 16  // words from a group's counter to the next (a line each)
#if STREAM_ATT_READY
__shared__ u64 stream_att_epoch;  // the steps run before this launch (set with the launch's state)
#endif

// Query position p (batch 1), read once per launch before the block's consumers start: so before
// any block can pass the barrier of the launch's position advance (block 0 runs it after every
// block arrived), whatever the producer's pace.
__shared__ int stream_att_pos;

// Where the merge's weights and l's start: after qkv's row and the larger of the block path's
// acc, s, m, l, alpha and the warp path's per-warp softmax states.
__host__ __device__ inline int stream_att_merge_at(int qpg, int hd, int kps) {
    const int block_path = qpg * hd + qpg * kps + 3 * qpg, warp_path = PERSIST_CONSUMER_WARPS * (hd + 2);
    return (qpg + 2) * hd + (block_path > warp_path ? block_path : warp_path);
}
__host__ __device__ inline int stream_att_scratch_floats(int qpg, int hd, int kps, int splits) {
    return stream_att_merge_at(qpg, hd, kps) + 2 * splits;
}

// KV cache row of key j of kv group g (batch 1): cache slot j % cap, [cap][kv_heads][hd].
__device__ __forceinline__ long stream_att_slot(int j, int g, int cap, int kv_heads, int hd) {
    return ((long)(j % cap) * kv_heads + g) * hd;
}

template <typename T>
struct StreamedAttention {
    const u64* a;  // attention_decode_fwd's arguments
    __device__ T* out() const { return (T*)a[0]; }
    __device__ float* part() const { return (float*)a[1]; }
    __device__ unsigned* done() const { return (unsigned*)a[2]; }
    __device__ const T* qkv() const { return (const T*)a[3]; }
    __device__ T* k_cache() const { return (T*)a[4]; }
    __device__ T* v_cache() const { return (T*)a[5]; }
    __device__ const int* pos() const { return (const int*)a[6]; }  // batch 1 (the host checks)
    __device__ int heads() const { return (int)a[7]; }
    __device__ int kv_heads() const { return (int)a[8]; }
    __device__ int hd() const { return (int)a[9]; }
    __device__ int cap() const { return (int)a[10]; }
    __device__ int window() const { return (int)a[11]; }
    __device__ int splits() const { return (int)a[12]; }  // B
    // (set by the host, PERSIST_HEADS only) the next op, out_proj split by heads, merges the
    // partials and stores this token's k, v: this phase ends with the partials
    __device__ bool merge_next() const { return PERSIST_HEADS && a[STREAM_ATT_MERGE_NEXT] != 0; }
    // (set by the host, STREAM_ATT_READY only) the groups' counters (STREAM_ATT_READY_STRIDE words
    // apart), then their contributors
    __device__ const u64* ready() const { return STREAM_ATT_READY ? (const u64*)a[STREAM_ATT_READY_ARG] : nullptr; }
    __device__ int qpg() const { return heads() / kv_heads(); }
    __device__ int row_bytes() const { return hd() * (int)sizeof(T); }
    __device__ int keys_per_stage() const {
        return max(1, min(STREAM_ATT_MAX_KEYS, STREAM_ATT_STAGE_BYTES / (2 * row_bytes())));
    }
    // This block's share at position p: kv group g, cached keys [j0, j1), and whether it takes
    // key p (qkv's) too; false for a block past kv_heads B.
    __device__ bool share(int p, int& g, int& j0, int& j1, bool& own) const {
        const int B = splits();
        if ((int)blockIdx.x >= kv_heads() * B) return false;
        g = (int)blockIdx.x / B;
        const int c = (int)blockIdx.x % B;
        const int first = window() > 0 ? max(0, p - window() + 1) : 0;
        const int per = (p - first + 1 + B - 1) / B;
        j0 = first + c * per;
        const int end = min(p + 1, j0 + per);
        own = j0 <= p && p < end;
        j1 = max(j0, min(end, p));
        return true;
    }
    __device__ int stages(int j0, int j1) const { return (j1 - j0 + keys_per_stage() - 1) / keys_per_stage(); }
    // Cached key j's row of kv group g (batch 1).
    __device__ long slot(int j, int g) const { return stream_att_slot(j, g, cap(), kv_heads(), hd()); }
};

// STREAM_ATT_EVICT_FIRST (an experiment, off): the keys' and values' copies with the weights'
// evict-first L2 hint (persist_core.cuh). The KV cache's window does not fit the L2 (Samba-1.3B:
// 85 MB at 1K context, 170 MB from 2K on), so it is read from DRAM every step either way, and
// passing through L2 it evicts the state, the residual and the activations as the weights did.
#ifndef STREAM_ATT_EVICT_FIRST
#define STREAM_ATT_EVICT_FIRST 0
#endif
// The producer's part: the block's cached keys and values, stage by stage.
template <typename T>
__device__ void persist_produce_streamed_attention(const StreamedAttention<T>& at, int k, PersistStream& q,
                                                   unsigned char* ring, unsigned ring_bytes, PersistRing& rb) {
    const int lane = threadIdx.x & 31;
    int g, j0, j1;
    bool own;  // (key p is the consumers')
    if (!at.share(stream_att_pos, g, j0, j1, own)) return;
    const int kps = at.keys_per_stage(), rbytes = at.row_bytes();
    for (int s0 = j0; s0 < j1; s0 += kps) {
        const int nk = min(kps, j1 - s0);
        const unsigned bytes = (unsigned)(2 * nk * rbytes);
        const unsigned slot = q.claim(bytes, ring_bytes, rb);
        if (lane == 0 && s0 == j0) PERSIST_TL_MARK(k, 0);  // the first stage's room claimed
        unsigned char* dst = ring + q.head % ring_bytes;
        if (lane == 0) mbar_arrive_expect(&rb.full[slot], bytes);
        __syncwarp();
        for (int r = lane; r < 2 * nk; r += 32) {
            const T* src = (r < nk ? at.k_cache() : at.v_cache()) + at.slot(s0 + r % nk, g);
#if STREAM_ATT_EVICT_FIRST
            bulk_copy_evict_first(dst + (long)r * rbytes, src, (unsigned)rbytes, &rb.full[slot]);
#else
            bulk_copy(dst + (long)r * rbytes, src, (unsigned)rbytes, &rb.full[slot]);
#endif
        }
        __syncwarp();
        q.commit(bytes);
    }
}

#define STREAM_ATT_MERGE_LOADS 16  // ranges whose values the merge loads at once
// This token's key and value (qkv's row of kv group g: grp = [q heads | k | v]) into KV cache
// row sl (StreamedAttention::slot), by every consumer thread.
template <typename T>
__device__ void stream_att_store_kv(const T* grp, int qpg, int hd, T* k_cache, T* v_cache, long sl) {
    for (int d = threadIdx.x; d < hd; d += PERSIST_CONSUMERS) {
        k_cache[sl + d] = grp[qpg * hd + d];
        v_cache[sl + d] = grp[(qpg + 1) * hd + d];
    }
}
// One head's output from its B partial softmaxes src [B][hd + 2] (acc, m, l), as
// attention_decode_merge computes it:
//   w_r = e^(m_r - max_r m_r) (0 for a range with no key), o = (sum_r w_r acc_r) / (sum_r w_r l_r),
// stored to o (T, global or shared memory); w and ls: B floats each of shared memory. By every
// consumer thread; the partials were written by other blocks (read from L2).
template <typename T>
#if PERSIST_LL
// (ll, tag_hi: the output's tagged words too, where ll is set: PERSIST_LL)
__device__ void stream_att_merge_head(const float* src, int B, int hd, float* w, float* ls, float* scratch, T* o,
                                      u32* ll = nullptr, u32 tag_hi = 0) {
#else
__device__ void stream_att_merge_head(const float* src, int B, int hd, float* w, float* ls, float* scratch, T* o) {
#endif
    float big = -INFINITY;
    for (int r = threadIdx.x; r < B; r += PERSIST_CONSUMERS) {
        w[r] = __ldcg(src + (long)r * (hd + 2) + hd);
        ls[r] = __ldcg(src + (long)r * (hd + 2) + hd + 1);
        big = fmaxf(big, w[r]);
    }
    big = group_max(PersistConsumers{}, big, scratch);  // (its barriers publish w and ls)
    float lsum = 0.0f;
    for (int r = threadIdx.x; r < B; r += PERSIST_CONSUMERS) {
        const float wt = w[r] == -INFINITY ? 0.0f : expf(w[r] - big);
        w[r] = wt;
        lsum += wt * ls[r];
    }
    const float inv_l = 1.0f / group_sum(PersistConsumers{}, lsum, scratch);  // (and the weights)
    for (int d = threadIdx.x; d < hd; d += PERSIST_CONSUMERS) {
        // STREAM_ATT_MERGE_LOADS ranges' values requested before the first is used
        float a = 0.0f;
        for (int r0 = 0; r0 < B; r0 += STREAM_ATT_MERGE_LOADS) {
            float v[STREAM_ATT_MERGE_LOADS];
#pragma unroll
            for (int j = 0; j < STREAM_ATT_MERGE_LOADS; ++j)
                v[j] = r0 + j < B ? __ldcg(src + (long)(r0 + j) * (hd + 2) + d) : 0.0f;
#pragma unroll
            for (int j = 0; j < STREAM_ATT_MERGE_LOADS; ++j)
                if (r0 + j < B) a = fmaf(v[j], w[r0 + j], a);
        }
        st(o + d, a * inv_l);
#if PERSIST_LL
        if (ll) persist_st_ll<T>(ll + d, a * inv_l, tag_hi);
#endif
    }
}
// The consumers' part of the streamed attention: the online softmax over nk keys (K, V: rows of hd
// elements, bf16 or f32, in the ring or staged from qkv), every query head of the group; ends
// with the consumers' barrier.
template <typename KV>
__device__ void stream_att_keys(float* sc, const KV* K, const KV* V, int nk, int qpg, int hd, int kps) {
    float *q = sc, *acc = q + (qpg + 2) * hd, *s = acc + qpg * hd, *m = s + qpg * kps, *l = m + qpg, *al = l + qpg;
    // s_ir = q_i . k_r: L lanes per (i, r) (a power of two, ~16 dimensions a lane), 32 / L pairs
    // per warp at once, log2(L) shuffles each
    int L = 1;
    while (2 * L <= 32 && 2 * L * 16 <= hd) L *= 2;
    const int dpl = (hd + L - 1) / L, per_warp = 32 / L;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane / L, part = lane % L;
    for (int pr0 = warp * per_warp; pr0 < qpg * nk; pr0 += PERSIST_CONSUMER_WARPS * per_warp) {
        const int pr = pr0 + sub;  // (the loop is uniform over the warp: the shuffles)
        float dot = 0.0f;
        if (pr < qpg * nk) {
            const int i = pr / nk, r = pr % nk;
            const float* qi = q + i * hd;
            const KV* kr = K + (long)r * hd;
            for (int d = part * dpl; d < min(hd, (part + 1) * dpl); ++d) dot = fmaf(qi[d], ld(kr + d), dot);
        }
        for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (pr < qpg * nk && part == 0) s[(pr / nk) * kps + pr % nk] = dot;
    }
    persist_consumers_sync();
    // per head (a warp each): the new maximum, p_ir in place of s_ir, alpha and l
    for (int i = warp; i < qpg; i += PERSIST_CONSUMER_WARPS) {
        float mx = -INFINITY;
        for (int r = lane; r < nk; r += 32) mx = fmaxf(mx, s[i * kps + r]);
        const float mn = fmaxf(m[i], warp_max(mx));
        float sum = 0.0f;
        for (int r = lane; r < nk; r += 32) {
            const float pj = expf(s[i * kps + r] - mn);
            s[i * kps + r] = pj;
            sum += pj;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            const float alpha = expf(m[i] - mn);  // 0 before the first key (m = -inf)
            al[i] = alpha;
            l[i] = l[i] * alpha + sum;
            m[i] = mn;
        }
    }
    persist_consumers_sync();
    // acc_i = acc_i alpha_i + sum_r p_ir v_r: a thread per (i, d), eight keys' loads at a time
    for (int t = threadIdx.x; t < qpg * hd; t += PERSIST_CONSUMERS) {
        const int i = t / hd, d = t % hd;
        const float* pi = s + i * kps;
        float a = acc[t] * al[i];
#pragma unroll 8
        for (int r = 0; r < nk; ++r) a = fmaf(pi[r], ld(V + (long)r * hd + d), a);
        acc[t] = a;
    }
    persist_consumers_sync();
}

// The warp path (STREAM_ATT_WARP, the default where hd <= 32 STREAM_ATT_DJ and qpg <=
// PERSIST_CONSUMER_WARPS; the block path above otherwise): each warp keeps the online softmax of
// one query head over a slice of the keys in registers, so a stage costs one consumers' barrier
// (the ring's release) instead of three, and the scores need no shared memory. With hs =
// qpg heads and KS = PERSIST_CONSUMER_WARPS / hs slices, warp w takes head w % hs and the keys r
// = w / hs (mod KS) of every stage, lane holding dimensions lane + 32 j (j < STREAM_ATT_DJ) of its
// acc; STREAM_ATT_KB keys at once (their dot products' shuffles interleave):
//   s_r = q . k_r,  m' = max(m, max_r s_r),  l = l e^(m - m') + sum_r e^(s_r - m'),
//   acc = acc e^(m - m') + sum_r e^(s_r - m') v_r.
// At the end the warps' states of each head are combined as the merge does (weights e^(m_w - m*),
// 0 for a warp that saw no key).
#ifndef STREAM_ATT_WARP
#define STREAM_ATT_WARP 1
#endif
// STREAM_ATT_BLOCK_PATH=0 (an experiment, for timing: the streamed entries' dense phases ran
// slower than the own-kernel entry's, and code compiled in beside them changed the step's time)
// compiles the block path out; a shape that needs it then traps.
#ifndef STREAM_ATT_BLOCK_PATH
#define STREAM_ATT_BLOCK_PATH 1
#endif
#define STREAM_ATT_DJ 4  // dimensions per lane: hd <= 128
#define STREAM_ATT_KB 4  // keys a warp takes at once
struct StreamAttState {
    float m, l, acc[STREAM_ATT_DJ];
};
template <typename KV>
__device__ __forceinline__ void stream_att_warp_keys(StreamAttState& sm, const float* qi, const KV* K, const KV* V, int nk,
                                                     int hd, int ks, int KS) {
    const int lane = threadIdx.x & 31;
    float q[STREAM_ATT_DJ];
#pragma unroll
    for (int j = 0; j < STREAM_ATT_DJ; ++j) q[j] = lane + 32 * j < hd ? qi[lane + 32 * j] : 0.0f;
    for (int r0 = ks; r0 < nk; r0 += KS * STREAM_ATT_KB) {  // (uniform over the warp: the shuffles)
        float s[STREAM_ATT_KB];
#pragma unroll
        for (int b = 0; b < STREAM_ATT_KB; ++b) {
            const int r = r0 + b * KS;
            float dot = 0.0f;
            if (r < nk) {
#pragma unroll
                for (int j = 0; j < STREAM_ATT_DJ; ++j)
                    if (lane + 32 * j < hd) dot = fmaf(q[j], ld(K + (long)r * hd + lane + 32 * j), dot);
            }
            s[b] = dot;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
#pragma unroll
            for (int b = 0; b < STREAM_ATT_KB; ++b) s[b] += __shfl_xor_sync(0xffffffffu, s[b], o);
        float mx = sm.m;
#pragma unroll
        for (int b = 0; b < STREAM_ATT_KB; ++b)
            if (r0 + b * KS < nk) mx = fmaxf(mx, s[b]);
        const float alpha = expf(sm.m - mx);  // 0 before the first key (m = -inf; mx is a score)
        sm.l *= alpha;
#pragma unroll
        for (int j = 0; j < STREAM_ATT_DJ; ++j) sm.acc[j] *= alpha;
#pragma unroll
        for (int b = 0; b < STREAM_ATT_KB; ++b) {
            const int r = r0 + b * KS;
            if (r < nk) {
                const float p = expf(s[b] - mx);
                sm.l += p;
#pragma unroll
                for (int j = 0; j < STREAM_ATT_DJ; ++j)
                    if (lane + 32 * j < hd) sm.acc[j] = fmaf(p, ld(V + (long)r * hd + lane + 32 * j), sm.acc[j]);
            }
        }
        sm.m = mx;
    }
}

// Op k, the streamed attention, on the consumer warps (see persist_produce_streamed_attention);
// sc: the input row's shared memory (sc_bytes), scratch: 32 floats for the reductions.
template <typename T>
__device__ void persist_streamed_attention(const StreamedAttention<T>& at, int k, unsigned& stage, const unsigned char* ring,
                                       PersistRing& rb, float* sc, int sc_bytes, float* scratch) {
#if STREAM_ATT_READY
    if (const u64* ready = at.ready()) {
        persist_pass<false>(k);
        if (threadIdx.x == 0) {
            if ((int)blockIdx.x < at.kv_heads() * at.splits()) {  // (a block with no range waits for nothing)
                const int g = (int)blockIdx.x / at.splits();
                const u64 target = (stream_att_epoch + 1) * ready[STREAM_ATT_READY_STRIDE * at.kv_heads() + g];
                const u64 t0 = persist_now();
                while (persist_ld_acquire(ready + STREAM_ATT_READY_STRIDE * g) < target) {
                    if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
                    if (persist_now() - t0 > 1000000000ull) __trap();  // (a second: the counts disagree)
                }
            }
            PERSIST_TL(persist_tl_pass, k);
        }
        persist_consumers_sync();
    } else
#endif
    persist_pass(k);
    const int p = stream_att_pos;
    int g, j0, j1;
    bool own;
    if (!at.share(p, g, j0, j1, own)) return;
    const int qpg = at.qpg(), hd = at.hd(), kps = at.keys_per_stage(), B = at.splits();
    if (stream_att_scratch_floats(qpg, hd, kps, B) * 4 > sc_bytes) __trap();  // (the host sizes it)
    float *q = sc, *acc = q + (qpg + 2) * hd, *m = acc + qpg * hd + qpg * kps, *l = m + qpg;
    float *w = sc + stream_att_merge_at(qpg, hd, kps), *ls = w + B;  // the merge's
    // the warp path's head and key slice of this warp (active: it has a head), and its state
    const bool by_warps = STREAM_ATT_WARP && hd <= 32 * STREAM_ATT_DJ && qpg <= PERSIST_CONSUMER_WARPS;
    const int warp = (int)threadIdx.x >> 5, hs = qpg, KS = PERSIST_CONSUMER_WARPS / max(1, qpg);
    const int head = warp % hs, ks = warp / hs;
    const bool active = by_warps && ks < KS;
    if (!STREAM_ATT_BLOCK_PATH && !by_warps) __trap();  // (compiled without the path this shape needs)
    StreamAttState mine;
    mine.m = -INFINITY;
    mine.l = 0.0f;
#pragma unroll
    for (int j = 0; j < STREAM_ATT_DJ; ++j) mine.acc[j] = 0.0f;
    // qkv's row of the group, [q heads of g | k_g | v_g] (this token's), in one pass: q scaled
    const T* grp = at.qkv() + (long)g * (qpg + 2) * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int t = threadIdx.x; t < (qpg + 2) * hd; t += PERSIST_CONSUMERS) {
        const float v = ld(grp + t);
        q[t] = t < qpg * hd ? v * scale : v;
    }
    for (int t = threadIdx.x; t < qpg * hd; t += PERSIST_CONSUMERS) acc[t] = 0.0f;
    for (int i = threadIdx.x; i < qpg; i += PERSIST_CONSUMERS) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    persist_consumers_sync();
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 1);  // qkv's row staged
    const int n = at.stages(j0, j1);
    for (int i = 0; i < n; ++i) {
        const unsigned idx = stage + i, slot = idx % PERSIST_SLOTS;
        mbar_wait(&rb.full[slot], (idx / PERSIST_SLOTS) & 1);
        if (threadIdx.x == 0 && i == 0) PERSIST_TL_MARK(k, 2);  // the first stage landed
        const int nk = min(kps, j1 - (j0 + i * kps));
        const T* K = reinterpret_cast<const T*>(ring + rb.offset[slot]);
        if (by_warps) {
            if (active) stream_att_warp_keys(mine, q + head * hd, K, K + (long)nk * hd, nk, hd, ks, KS);
            persist_consumers_sync();  // every warp's reads of the stage done
        } else if (STREAM_ATT_BLOCK_PATH) {
            stream_att_keys(sc, K, K + (long)nk * hd, nk, qpg, hd, kps);  // (ends with the barrier)
        }
        if (threadIdx.x == 0) mbar_arrive(&rb.empty[slot]);
    }
    stage += n;
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 3);  // the stages done
    if (own) {
        if (by_warps) {
            if (active && ks == 0) stream_att_warp_keys(mine, q + head * hd, q + qpg * hd, q + (qpg + 1) * hd, 1, hd, 0, 1);
        } else if (STREAM_ATT_BLOCK_PATH) {
            stream_att_keys(sc, q + qpg * hd, q + (qpg + 1) * hd, 1, qpg, hd, kps);
        }
    }
    if (threadIdx.x == 0 && own) PERSIST_TL_MARK(k, 4);  // key p done
    if (by_warps) {
        // each warp's state where the block path's acc starts (the scores are not needed now);
        // then acc, m, l of each head: its KS warps' states combined
        float* ws = acc;
        const int lane = (int)threadIdx.x & 31;
        if (active) {
#pragma unroll
            for (int j = 0; j < STREAM_ATT_DJ; ++j)
                if (lane + 32 * j < hd) ws[warp * (hd + 2) + lane + 32 * j] = mine.acc[j];
            if (lane == 0) {
                ws[warp * (hd + 2) + hd] = mine.m;
                ws[warp * (hd + 2) + hd + 1] = mine.l;
            }
        }
        persist_consumers_sync();
        float* cm = q;  // (q is not needed now): per head, acc [hd], then m and l
        for (int t = threadIdx.x; t < qpg * (hd + 2); t += PERSIST_CONSUMERS) {
            const int i = t / (hd + 2), d = t % (hd + 2);
            float mx = -INFINITY;
            for (int c = 0; c < KS; ++c) mx = fmaxf(mx, ws[(i + hs * c) * (hd + 2) + hd]);
            float v = 0.0f;
            for (int c = 0; c < KS; ++c) {
                const float* wc = ws + (i + hs * c) * (hd + 2);
                const float wt = wc[hd] == -INFINITY ? 0.0f : expf(wc[hd] - mx);
                v += wt * (d == hd + 1 ? wc[hd + 1] : d < hd ? wc[d] : 0.0f);
            }
            cm[t] = d == hd ? mx : v;
        }
        persist_consumers_sync();
    }

    // this range's partial softmax of each head, then count the block done
    const int c = (int)blockIdx.x % B;
    float* part = at.part();
    for (int t = threadIdx.x; t < qpg * (hd + 2); t += PERSIST_CONSUMERS) {
        const int i = t / (hd + 2), d = t % (hd + 2);
        part[((long)(g * qpg + i) * B + c) * (hd + 2) + d] =
            by_warps ? q[t] : d < hd ? acc[i * hd + d] : d == hd ? m[i] : l[i];
    }
    if (at.merge_next()) {
        // out_proj's blocks merge the partials after the next barrier, and store this token's key
        // and value (slot p % cap may hold a key this phase reads: a window's ring has window - 1)
        if (threadIdx.x == 0) PERSIST_TL_MARK(k, 5);  // the partials written
        return;
    }
    __shared__ int stream_att_last;
    __threadfence();  // (the partials, before the count)
    persist_consumers_sync();
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 7);  // the partials written (and fenced)
    if (threadIdx.x == 0) stream_att_last = atomicAdd(at.done() + g, 1u) == (unsigned)(B - 1);
    persist_consumers_sync();
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 5);  // the partials written and counted
    if (!stream_att_last) return;
    __threadfence();  // (the other blocks' partials, after the count)
    // the group's last block: merge each head's B ranges, store the output and this token's k, v
#if PERSIST_LL
    u32* ll = sizeof(T) == 2 ? (u32*)at.a[PERSIST_LL_OUT] : nullptr;
#endif
    for (int i = 0; i < qpg; ++i) {
#if PERSIST_LL
        stream_att_merge_head(part + (long)(g * qpg + i) * B * (hd + 2), B, hd, w, ls, scratch,
                              at.out() + (long)(g * qpg + i) * hd, ll ? ll + (long)(g * qpg + i) * hd : nullptr,
                              persist_ll_tag(k) << 16);
#else
        stream_att_merge_head(part + (long)(g * qpg + i) * B * (hd + 2), B, hd, w, ls, scratch,
                              at.out() + (long)(g * qpg + i) * hd);
#endif
        persist_consumers_sync();  // w and ls serve the next head
    }
    if (at.cap() > 0) stream_att_store_kv(grp, qpg, hd, at.k_cache(), at.v_cache(), at.slot(p, g));
    if (threadIdx.x == 0) at.done()[g] = 0u;
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 6);  // the merge done
}

