// The decoding step as persistent kernels (src/model/persistent.rs).
//
// The fused step (src/model/fused.rs) is ~100 kernels: the embedding, per sublayer two to four
// GEMVs with their elementwise work, the scan step, the decoding attention, the head and the
// position advance. Launched one by one, every kernel pays a fixed cost of ~4-5 us (the launch,
// the ramp until its first weights arrive, the tail while its last blocks finish) against the
// 2-13 us its weights take to stream at the bandwidth floor. Here a grid resident on every SM (a
// cooperative launch) runs the same ops in order, from a table the host recorded from the fused
// step's launches, with a grid-wide barrier where the kernel boundaries were.
//
// Weights do not depend on the token, so they need not wait for any barrier. Each block is a
// producer warp and PERSIST_CONSUMERS / 32 consumer warps (4 by default):
//
//   producer   walks the block's share of every dense op of the launch in order and copies its
//              weight rows into a ring of shared memory with bulk copies (cp.async.bulk, the
//              copy engine; no registers held; their lines marked to leave L2 first: read once
//              a step, they would evict what is read again), a stage of whole units at a time,
//              as far ahead as the ring has room: across the barriers, while the consumers wait
//              at them
//   consumers  for op k: pass barrier k (every block has finished op k-1), stage the op's input
//              row (RMSNorm'd if the op has one) in shared memory, then for each of the block's
//              stages of op k, warp s % warps takes stage s: waits until its bytes landed, takes
//              the dot products of its rows with the input (up to four rows per pass over the
//              input), frees the stage; then the block stores its units through the op's
//              epilogue (gemv.cu: plain, +=, SwiGLU, RoPE, conv step)
//
//   full[slot]   mbarrier: the producer's arrival with the stage's byte count; completes when
//                the copies have written them
//   empty[slot]  mbarrier: the consuming warp's arrival; the producer reuses the slot's bytes
//                after it (the ring is reclaimed in issue order)
//
// so the DRAM keeps streaming through the barriers up to the ring's size (~100 KB per block, two
// blocks per SM: ~6 us at the bandwidth floor). The other ops (the embedding, the position
// advance, and the scan step where its wide form does not fit) run as virtual blocks of their
// recorded grid on the consumer warps, with the same bodies as their own kernels (g.threads() =
// 128, g.thread(), g.sync()); the scan step's wide form is ScanStepWide below. The decoding
// attention runs, in the _streamed entries (the default), as a phase with its keys streamed
// through the ring (kernels/persist_streamed_attention.cuh), or as its own kernel between two
// launches of the plain entries, or, in the _attention entries, as virtual blocks here too
// (opt-in: its registers make the dense phases spill).
//
// Measured on the H200 (docs/gpu.md, "Weights streamed through shared memory"): the producer's
// copies run near the bandwidth floor while it issues; what is left is the phases' dependent
// work (barrier, input row, the last stage's dot products, epilogue), which fills the ring and
// stalls the producer at every phase boundary.
//
// A dense op's block share: units [b n / G, (b + 1) n / G) of its n units (a unit: one weight row,
// or the two rows its epilogue combines: [w1; w2] rows (j, hidden + j), RoPE rows (i, i + hd/2)),
// cut into stages of whole units of at most PERSIST_STAGE_BYTES (at least one unit, and at most
// an even part of the share so every consumer warp takes part). Rows sit in the ring at a 16-byte
// aligned stride; rows that are not whole 16-byte vectors in memory (in * sizeof(T) % 16, an
// unaligned matrix) are copied by the producer's lanes instead of the copy engine, and read
// element-wise.
//
// Barrier k of a launch: one 64-bit counter to which every block adds 1 per barrier; barrier k
// is passed when counter >= base + k * gridDim.x, base = the barriers of every earlier launch
// times gridDim.x (the host counts them), so nothing is reset between launches. A block with no
// work in op k still passes barrier k, and every barrier up to the last op before it exits.
// A block's writes before a barrier are ordered before its arrival by the consumers' barrier and
// the arrival's release (a red.release.gpu); the acquire read that sees the count orders the
// block's later reads after every arrival. (A seq_cst fence before a relaxed add and after the
// wait, cooperative groups' pattern, measured ~0.04 ms per step slower.)
//
// What sits between two barriers is kept short: the launch's table is copied into shared memory
// at the start (no L2 round trip to read the next op); each thread requests its first unit's
// epilogue reads (the residual for +=, cos and sin, the conv state) before the input row, so they
// land during the dot products; the scan step loads what does not depend on the op before (its
// weights, the scan state) before its barrier. Mamba's x_proj, where the host folds it
// (src/model/xproj_fold.rs), is no phase of its own: in_proj's phase adds each block's share of it
// (persist_fold; the MLP's fc2 the same way into the SwiGLU phase, an experiment compiled out:
// PERSIST_FC2_FOLD). With PERSIST_HEADS (a module of its own), the streamed attention's out_proj
// split by heads merges the attention's partials (PERSIST_GEMV_HEADS). PERSIST_TIMELINE prints,
// per op, when the blocks started and finished it.
//
// The table: [n_ops][PERSIST_OP_WORDS] u64: kind, grid x, y, z, then the kernel's arguments in
// the order of its entry point, one word each (pointers; ints and floats in the low 32 bits).
//
// Before this file (src/compile.rs): kernels/persist_core.cuh (the sizes and op kinds, the grid
// barrier, mbarriers and bulk copies, the diagnostics, the ring's bookkeeping) and
// kernels/persist_streamed_attention.cuh (the decoding attention as a phase).

// ---- a dense op, read from its table row (the arguments of gemv_fwd / gemv_swiglu_fwd /
// gemv_rope_fwd / gemv_conv_fwd, in their entries' order)

#ifndef PERSIST_FOLD_BALANCE
#define PERSIST_FOLD_BALANCE 0
#endif
// Copies of x_dbl's sums the folded x_proj's blocks spread their additions over (persist_fold).
#define PERSIST_FOLD_COPIES 8
#ifndef PERSIST_NORM_W_LATE
#define PERSIST_NORM_W_LATE 0
#endif
// fc2 folded into the SwiGLU phase (an experiment, compiled out by default: measured slower, and
// compiled in it made the streamed entries spill; see persist_fold). With it off, a SwiGLU row
// carrying the fold's arguments traps (persist_consume): fc2 would be missing from the step.
#ifndef PERSIST_FC2_FOLD
#define PERSIST_FC2_FOLD 0
#endif

// The dynamic pool (an experiment, not yet run on a GPU: SAMBA_NVRTC_DEFINES=PERSIST_POOL=percent,
// at most 50; compiled in, its code made the default entries spill, so it is compiled out by
// default). With static shares a block that streams slower than the others holds every
// phase's end (the timeline: the last block done 1.5-3 us after the mean). So the last `percent`
// of each dense op's units (whole chunks of `chunk` units) are not shared out but claimed, a
// chunk at a time, by the producers that reach them first: each producer, after its static
// stages (and x_proj's, where folded), claims chunk c = claims[k]++ - epoch (NC + G) and streams
// it as a stage whose meta is its first unit, until a claim comes back past the last chunk
// (every producer makes exactly one such claim, so a step adds NC + G to the count and `epoch`,
// the launches of this table row so far, says where it starts); then four END stages (meta -1 -
// its chunk count), one for each consumer warp. The consumer warps take the dynamic stages round
// robin as they take the static ones, each storing its chunk's units itself (its sums in its own
// part of ys), until its END.
#ifndef PERSIST_POOL
#define PERSIST_POOL 0
#endif
struct PersistDynamic {
    u64* claims;  // one count per op of the launch
    u64 epoch;
    int ys_floats;
};
__shared__ PersistDynamic persist_dyn;

template <typename T>
struct PersistDense {
    int kind;
    const T* w;
    int in, n_units, nr;  // units, and weight rows per unit
    int hidden, head_dim;  // SwiGLU, RoPE
    // the input row: inp (T), or RMSNorm(x) with norm_w and eps
    const T* inp;
    const float* x;
    const T* norm_w;
    float eps;
    const u64* a;  // the arguments (the epilogue's are read when storing)

    __device__ static bool is_dense(int kind) {
        return (kind >= PERSIST_GEMV && kind <= PERSIST_GEMV_CONV) || (PERSIST_HEADS && kind == PERSIST_GEMV_HEADS);
    }

    __device__ PersistDense(int kind_, const u64* args) : kind(kind_), a(args) {
        int first;  // the index of the input's first argument (inp)
        hidden = head_dim = 0;
        if (kind == PERSIST_GEMV) {
            first = 3;
            n_units = (int)a[11];
            nr = 1;
        } else if (kind == PERSIST_GEMV_SWIGLU) {
            first = 2;
            hidden = (int)a[10];
            n_units = hidden;
            nr = 2;
        } else if (kind == PERSIST_GEMV_ROPE) {
            first = 7;
            head_dim = (int)a[5];
            n_units = (int)a[15] / 2;
            nr = 2;
        } else if (PERSIST_HEADS && kind == PERSIST_GEMV_HEADS) {  // (no input row in memory: see heads_*)
            inp = nullptr;
            x = nullptr;
            norm_w = nullptr;
            eps = 0.0f;
            w = (const T*)a[7];
            in = (int)a[5];
            n_units = (int)a[3] * (int)a[6];
            nr = 1;
            return;
        } else {  // conv: rows [x_in | z] of in_proj, one each
            first = 7;
            n_units = 2 * (int)a[5];
            nr = 1;
        }
        inp = (const T*)a[first];
        x = (const float*)a[first + 2];
        norm_w = (const T*)a[first + 3];
        eps = __uint_as_float((u32)a[first + 4]);
        w = (const T*)a[first + 5];
        in = (int)a[first + 7];
    }

    // The offset (elements) of row j of unit u in w (gemv.cu's unit maps).
    __device__ long row(int u, int j) const {
        long r[2];
        if (kind == PERSIST_GEMV_SWIGLU) GemvGateUp{in, hidden}(u, r);
        else if (kind == PERSIST_GEMV_ROPE) GemvRopePair{in, head_dim}(u, r);
        else {
            long one[1];
            GemvRow{in}(u, one);
            return one[0];
        }
        return j ? r[1] : r[0];
    }
    // A row's bytes in the ring (16-byte aligned), and whether rows are whole aligned 16-byte vectors
    // in memory (else the producer copies them element by element).
    __device__ int row_stride() const { return (int)(((long)in * sizeof(T) + 15) & ~15L); }
    __device__ bool vec16() const { return ((long)in * sizeof(T)) % 16 == 0 && gemv_aligned(w); }

    // The op after this one folded into its phase (when the host set a[PERSIST_FOLD_*]; see
    // persist_fold): x_proj into in_proj + conv step's, fc2 into the SwiGLU's. The transposed
    // weight W^T [inputs, stride] (T, rows 16-byte aligned), the f32 sums [n] it adds into
    // (x_dbl's copies, or the residual), and this block's inputs [c0, c1) of it: the channels of
    // u among its units (those below d_inner), or its hidden units.
    __device__ bool foldable() const { return kind == PERSIST_GEMV_CONV || (PERSIST_FC2_FOLD && kind == PERSIST_GEMV_SWIGLU); }
    __device__ const T* fold_w() const { return foldable() ? (const T*)a[PERSIST_FOLD_W] : nullptr; }
    __device__ float* fold_acc() const { return (float*)a[PERSIST_FOLD_SUMS]; }
    __device__ int fold_n() const { return (int)a[PERSIST_FOLD_N]; }
    __device__ int fold_stride() const { return (int)a[PERSIST_FOLD_STRIDE]; }
    __device__ int fold_copies() const { return kind == PERSIST_GEMV_CONV ? PERSIST_FOLD_COPIES : 1; }
    // (fc2 adds into the residual the phase's own input RMSNorm(x) is read from: after every block
    // counted itself here, see persist_fold)
    __device__ u64* fold_staged() const {
        return PERSIST_FC2_FOLD && kind == PERSIST_GEMV_SWIGLU ? (u64*)a[PERSIST_FOLD_STAGED] : nullptr;
    }
    // W^T's rows a stage holds (one at least)
    __device__ int fold_rows_per_stage() const {
        return max(1, PERSIST_STAGE_BYTES / (fold_stride() * (int)sizeof(T)));
    }
    __device__ bool fold_range(int u0, int u1, int& c0, int& c1) const {
        c0 = u0;
        c1 = kind == PERSIST_GEMV_CONV ? min(u1, (int)a[5]) : u1;
        return fold_w() != nullptr && c1 > c0;
    }

    // The first unit of block b: units [b n / G, (b + 1) n / G) are block b's. With x_proj folded
    // and PERSIST_FOLD_BALANCE (an experiment: the host sizes the sums for n / G units), a unit
    // weighs its bytes, so the x units (below d_inner, each with a row of x_proj^T too) are fewer
    // per block than the z units and the blocks' streams end together.
    __device__ int first_unit(int b) const {
#if PERSIST_FOLD_BALANCE
        if (kind == PERSIST_GEMV_CONV && fold_w()) {
            const long d = (long)a[5], wz = row_stride(), wx = wz + (long)fold_stride() * (long)sizeof(T);
            const long t = (long)b * (d * (wx + wz)) / gridDim.x;
            return (int)(t < d * wx ? t / wx : d + (t - d * wx) / wz);
        }
#endif
        return (int)((long)b * (n_units - pool_units()) / gridDim.x);
    }
    // Whole units a stage holds (one at least, if a unit is larger).
    __device__ int stage_fit() const { return max(1, PERSIST_STAGE_BYTES / (nr * row_stride())); }
    // The dynamic pool: `chunk` units a chunk, NC chunks, the op's last pool_units() units.
    __device__ int chunk() const {
        const int share = (n_units + (int)gridDim.x - 1) / (int)gridDim.x;
        return max(1, min(stage_fit(), (share + PERSIST_CONSUMER_WARPS - 1) / PERSIST_CONSUMER_WARPS));
    }
    __device__ int pool_chunks() const {
        // (plain GEMVs and SwiGLU: the pool's per-chunk stores hold registers of their own, and
        // every kind's in the hot loop spilled)
        if (PERSIST_POOL <= 0 || (kind != PERSIST_GEMV && kind != PERSIST_GEMV_SWIGLU)) return 0;  // (not HEADS)
        if (fold_w()) return 0;  // (a fold takes the block's own units; the balance splits every unit)
        return (int)((long)n_units * min(PERSIST_POOL, 50) / 100) / chunk();
    }
    __device__ int pool_units() const { return pool_chunks() * chunk(); }
    // The streamed attention's out_proj split by heads (PERSIST_GEMV_HEADS; the host's choice,
    // src/model/heads_out_proj.rs): with the attention's output o = [o_0 | .. | o_{H-1}] (heads
    // of hd), out_proj's x += W o is the sum over heads h of W_h o_h, W_h = W[:, h hd, (h + 1) hd).
    // Block b < H S takes head h = b / S and rows [c d / S, (c + 1) d / S) of W_h, c = b % S (S
    // blocks a head), from a copy of W laid out as [H][d][hd] (unit h d + o is row o of W_h).
    // Its input row is o_h, merged from the attention's B partial softmaxes of head h (which the
    // attention phase leaves unmerged: persist_heads_merge), and it adds its sums into the
    // residual with atomics (the H heads' blocks add into the same rows). So the attention phase
    // ends with its partials, without the group's count, fences and merge.
    __device__ float* heads_x() const { return (float*)a[0]; }
    __device__ const float* heads_part() const { return (const float*)a[1]; }
    __device__ int heads_b() const { return (int)a[2]; }       // the attention's ranges a head
    __device__ int heads_n() const { return (int)a[3]; }       // H
    __device__ int heads_split() const { return (int)a[4]; }   // S
    __device__ int heads_d() const { return (int)a[6]; }       // d, out_proj's outputs
    // the attention's qkv row, KV cache, position, kv heads and cache slots: the block of rows 0
    // of a kv group's first head stores this token's key and value (persist_heads_merge)
    __device__ const T* heads_qkv() const { return (const T*)a[8]; }
    __device__ T* heads_k_cache() const { return (T*)a[9]; }
    __device__ T* heads_v_cache() const { return (T*)a[10]; }
    __device__ const int* heads_pos() const { return (const int*)a[11]; }
    __device__ int heads_kv() const { return (int)a[12]; }
    __device__ int heads_cap() const { return (int)a[13]; }
    // this block's head, or -1
    __device__ int heads_head() const {
        const int S = heads_split();
        return (int)blockIdx.x < heads_n() * S ? (int)blockIdx.x / S : -1;
    }
    // This block's units [u0, u1), and the units per stage.
    __device__ void share(int& u0, int& u1, int& per_stage) const {
        if (PERSIST_HEADS && kind == PERSIST_GEMV_HEADS) {
            const int h = heads_head(), S = heads_split(), d = heads_d(), c = (int)blockIdx.x % S;
            u0 = h < 0 ? 0 : h * d + (int)((long)c * d / S);
            u1 = h < 0 ? 0 : h * d + (int)((long)(c + 1) * d / S);
        } else {
            u0 = first_unit((int)blockIdx.x);
            u1 = first_unit((int)blockIdx.x + 1);
        }
        const int even = max(1, (u1 - u0 + PERSIST_CONSUMER_WARPS - 1) / PERSIST_CONSUMER_WARPS);
        per_stage = min(stage_fit(), even);
    }

    // The op's epilogue (gemv.cu), from its arguments.
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
    __device__ GemvStore<T> plain() const { return GemvStore<T>{PTR(0, void*), INT(1), INT(2)}; }
    __device__ GemvSwiglu<T> swiglu() const { return GemvSwiglu<T>{PTR(0, T*), INT(1)}; }
    __device__ GemvRope<T> rope() const {
        return GemvRope<T>{PTR(0, T*), INT(1), INT(5), INT(6), PTR(2, const float*), PTR(3, const float*),
                           PTR(4, const int*)};
    }
    __device__ GemvConv<T> conv() const {
        return GemvConv<T>{PTR(0, T*), PTR(1, T*), PTR(2, T*), PTR(3, const T*), PTR(4, const T*), INT(5), INT(6)};
    }
#undef PTR
#undef INT
};

// What a unit's store reads besides its sums (the residual for +=, cos and sin, the conv state
// and weights: gemv.cu's Pre of each epilogue), one kind at a time.
template <typename T>
union PersistPre {
    typename GemvStore<T>::Pre store;
    typename GemvRope<T>::Pre rope;
    typename GemvConv<T>::Pre conv;
};

// Requests unit u's reads (batch row 0) into pre.
template <typename T>
__device__ __forceinline__ void persist_prefetch(const PersistDense<T>& op, int u, PersistPre<T>& pre) {
    if (op.kind == PERSIST_GEMV) op.plain().prefetch(u, 0, pre.store);
    else if (op.kind == PERSIST_GEMV_ROPE) op.rope().prefetch(u, 0, pre.rope);
    else if (op.kind == PERSIST_GEMV_CONV) op.conv().prefetch(u, 0, pre.conv);
}

// Stores unit u's sums y[0..nr) with its reads pre (batch row 0); returns the conv step's u or the
// SwiGLU's act as stored (0 for the other kinds).
template <typename T>
__device__ __forceinline__ float persist_store(const PersistDense<T>& op, int u, const float* y, const PersistPre<T>& pre) {
    const float one[1] = {y[0]};
    if (op.kind == PERSIST_GEMV) {
        op.plain().store(u, 0, one, pre.store);
    } else if (PERSIST_HEADS && op.kind == PERSIST_GEMV_HEADS) {
        atomicAdd(op.heads_x() + u % op.heads_d(), y[0]);  // (the H heads' blocks add into row u % d)
    } else if (op.kind == PERSIST_GEMV_CONV) {
        return op.conv().store(u, 0, one, pre.conv);
    } else {
        const float two[2] = {y[0], y[1]};
        if (op.kind == PERSIST_GEMV_SWIGLU) return op.swiglu().store(u, 0, two, GemvNoPre{});
        op.rope().store(u, 0, two, pre.rope);
    }
    return 0.0f;
}

// ---- the producer warp

// Issues units [s0, s0 + units) of op as one stage (a copy per row; element by element where rows
// are not whole aligned 16-byte vectors), its meta (the dynamic pool's) noted before the stage can
// complete.
template <typename T>
__device__ __forceinline__ void persist_issue_units(const PersistDense<T>& op, int s0, int units, int meta,
                                                    PersistStream& q, unsigned char* ring, unsigned ring_bytes,
                                                    PersistRing& rb) {
    const int lane = threadIdx.x & 31;
    const int rs = op.row_stride(), rows = units * op.nr;
    const unsigned bytes = (unsigned)(rows * rs);
    const unsigned slot = q.claim(bytes, ring_bytes, rb);
    unsigned char* dst = ring + q.head % ring_bytes;
    if (lane == 0) rb.meta[slot] = meta;  // (released by lane 0's arrival below)
#ifdef PERSIST_PROFILE
    const long long t1 = clock64();
#endif
    if (op.vec16()) {
        // the copy engine: one copy per row; the barrier's phase completes when the bytes have
        // landed (its one arrival, lane 0's, carries the byte count)
        if (lane == 0) mbar_arrive_expect(&rb.full[slot], bytes);
        __syncwarp();
        for (int r = lane; r < rows; r += 32) {
            const int u = s0 + r / op.nr, j = r % op.nr;
            bulk_copy_weights(dst + (long)r * rs, op.w + op.row(u, j), (unsigned)rs, &rb.full[slot]);
        }
    } else {
        for (int r = 0; r < rows; ++r) {
            const T* src = op.w + op.row(s0 + r / op.nr, r % op.nr);
            T* to = reinterpret_cast<T*>(dst + (long)r * rs);
            for (int i = lane; i < op.in; i += 32) to[i] = src[i];
        }
        // The copies above are ordinary stores: visible to the consumers through the arrival's
        // release, and ordered before any later bulk copy into these bytes.
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncwarp();
        if (lane == 0) mbar_arrive(&rb.full[slot]);
    }
    __syncwarp();
#ifdef PERSIST_PROFILE
    if (lane == 0) persist_prof[PROF_ISSUE] += clock64() - t1;
#endif
    q.commit(bytes);
}

// The dynamic pool of op k (see PersistDynamic): chunks claimed until the pool is spent, each a
// stage whose meta is its first unit, then an END stage per consumer warp (meta -1 - chunks).
template <typename T>
__device__ void persist_produce_pool(const PersistDense<T>& op, int k, PersistStream& q, unsigned char* ring,
                                     unsigned ring_bytes, PersistRing& rb) {
    const int lane = threadIdx.x & 31;
    const int nc = op.pool_chunks(), chunk = op.chunk(), first = op.n_units - op.pool_units();
    int taken = 0;
    for (;;) {
        unsigned long long c = 0;
        if (lane == 0)
            c = atomicAdd((unsigned long long*)(persist_dyn.claims + k), 1ull) -
                persist_dyn.epoch * (unsigned long long)(nc + gridDim.x);
        c = __shfl_sync(0xffffffffu, c, 0);
        if (c >= (unsigned long long)nc) break;
        const int s0 = first + (int)c * chunk;
        persist_issue_units(op, s0, min(chunk, op.n_units - s0), s0, q, ring, ring_bytes, rb);
        ++taken;
    }
    for (int e = 0; e < PERSIST_CONSUMER_WARPS; ++e) {
        const unsigned slot = q.claim(0, ring_bytes, rb);
        if (lane == 0) {
            rb.meta[slot] = -1 - taken;
            mbar_arrive(&rb.full[slot]);
        }
        __syncwarp();
        q.commit(0);
    }
}

template <typename T, bool STREAMED>
__device__ void persist_produce(const u64* ops, int n_ops, unsigned char* ring, unsigned ring_bytes, PersistRing& rb) {
    const int lane = threadIdx.x & 31;
    PersistStream q{0, 0, 0, 0};
    for (int k = 0; k < n_ops; ++k) {
        const u64* d = ops + (long)k * PERSIST_OP_WORDS;
        const int kind = (int)d[0];
        if constexpr (STREAMED)
            if (kind == PERSIST_STREAMED_ATTENTION)
                persist_produce_streamed_attention<T>(StreamedAttention<T>{d + 4}, k, q, ring, ring_bytes, rb);
        if (!PersistDense<T>::is_dense(kind)) continue;
        const PersistDense<T> op(kind, d + 4);
        int u0, u1, per;
        op.share(u0, u1, per);
        for (int s0 = u0; s0 < u1; s0 += per) {
            if (s0 == u0 && lane == 0) PERSIST_TL_MARK(k, 0);  // the producer reaches the op
            persist_issue_units(op, s0, min(per, u1 - s0), 0, q, ring, ring_bytes, rb);
        }
        // The folded op's rows of W^T for the block's inputs, in stages after the op's own (x_proj's
        // fit one: the host checks; a copy per row, the lanes' in flight together: the host made
        // every row whole 16-byte vectors)
        int c0, c1;
        if (op.fold_range(u0, u1, c0, c1)) {
            const unsigned row_bytes = (unsigned)(op.fold_stride() * (int)sizeof(T));
            const int per = op.fold_rows_per_stage();
            for (int f0 = c0; f0 < c1; f0 += per) {
                const int rows = min(per, c1 - f0);
                const unsigned bytes = (unsigned)rows * row_bytes;
                const unsigned slot = q.claim(bytes, ring_bytes, rb);
                if (lane == 0) mbar_arrive_expect(&rb.full[slot], bytes);
                __syncwarp();
                for (int r = lane; r < rows; r += 32)
                    bulk_copy_weights(ring + q.head % ring_bytes + (long)r * row_bytes,
                              op.fold_w() + (long)(f0 + r) * op.fold_stride(), row_bytes, &rb.full[slot]);
                __syncwarp();
                q.commit(bytes);
            }
        }
#if PERSIST_POOL > 0
        if (op.pool_chunks() > 0) persist_produce_pool(op, k, q, ring, ring_bytes, rb);
#endif
    }
}

// ---- the consumer warps

// xs = the op's input row in T: inp, or x * rstd * norm_w, rstd = 1 / sqrt(mean x^2 + eps), each
// element rounded to T as the unfused path stores it. Every load of a part is issued before the
// first is used (a row is a few 16-byte vectors per thread: PERSIST_INPUT_VECS of them in
// registers, the rest, rarely any, element by element). The norm weight does not depend on the
// token: persist_input_prefetch loads it before the barrier.
#ifndef PERSIST_INPUT_VECS
#define PERSIST_INPUT_VECS (768 / PERSIST_CONSUMERS)  // a row of 6144 bf16 or 3072 f32
#endif
struct PersistInputRegs {
    uint4 v[PERSIST_INPUT_VECS];
};

// Vectors [threadIdx.x + k * PERSIST_CONSUMERS] of p (n of them), into r.
__device__ __forceinline__ void persist_load_vecs(PersistInputRegs& r, const void* p, int n) {
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < n) r.v[k] = reinterpret_cast<const uint4*>(p)[id];
    }
}
__device__ __forceinline__ void persist_store_vecs(void* p, const PersistInputRegs& r, int n) {
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < n) reinterpret_cast<uint4*>(p)[id] = r.v[k];
    }
}

// Whether n elements of T at p can be staged as 16-byte vectors held in registers.
template <typename T>
__device__ __forceinline__ bool persist_vec_ok(const void* p, int n) {
    return (n * (int)sizeof(T)) % 16 == 0 && gemv_aligned(p) &&
           n * (int)sizeof(T) / 16 <= PERSIST_INPUT_VECS * PERSIST_CONSUMERS;
}

template <typename T>
__device__ __forceinline__ void persist_input_prefetch(PersistInputRegs& nw, const PersistDense<T>& op) {
    if (op.x && persist_vec_ok<T>(op.norm_w, op.in)) persist_load_vecs(nw, op.norm_w, op.in * (int)sizeof(T) / 16);
}

// The input row of a PERSIST_GEMV_HEADS block: o_h, head h's output of the streamed attention,
// merged from its B partial softmaxes as the attention's own merge does and rounded to T as the
// attention stores it (stream_att_merge_head); the merge's weights and l's in xs after o_h (the
// host sizes the input row for them).
template <typename T>
__device__ void persist_heads_merge(T* xs, const PersistDense<T>& op, float* scratch) {
    const int h = op.heads_head();
    if (h < 0) return;  // (a block without units: nothing to stage)
    const int B = op.heads_b(), hd = op.in, qpg = op.heads_n() / op.heads_kv();
    // this token's key and value into KV cache slot p % cap (batch 1): after the barrier, as every
    // block of the attention phase has read its keys (that slot among them with a window's ring)
    if ((int)blockIdx.x % op.heads_split() == 0 && h % qpg == 0 && op.heads_cap() > 0) {
        const int g = h / qpg;
        const long sl = stream_att_slot(*op.heads_pos(), g, op.heads_cap(), op.heads_kv(), hd);
        stream_att_store_kv(op.heads_qkv() + (long)g * (qpg + 2) * hd, qpg, hd, op.heads_k_cache(), op.heads_v_cache(), sl);
    }
    float* w = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(xs) + (((long)hd * sizeof(T) + 15) & ~15L));
    stream_att_merge_head(op.heads_part() + (long)h * B * (hd + 2), B, hd, w, w + B, scratch, xs);
    persist_consumers_sync();
}

#if PERSIST_LL
// The tagged input (PERSIST_LL, kernels/persist_core.cuh): op k's input words, if it reads them (a
// plain GEMV of bf16 without a norm, not a launch's first op, with the host's word), and the words
// a SwiGLU op writes.
template <typename T>
__device__ __forceinline__ const u32* persist_ll_input(const PersistDense<T>& op, int k) {
    if (sizeof(T) != 2 || k == 0 || op.kind != PERSIST_GEMV || op.x) return nullptr;
    return (const u32*)op.a[PERSIST_LL_ACT];
}
template <typename T>
__device__ __forceinline__ u32* persist_ll_output(const PersistDense<T>& op) {
    return sizeof(T) == 2 && op.kind == PERSIST_GEMV_SWIGLU ? (u32*)op.a[PERSIST_LL_ACT] : nullptr;
}
__device__ __forceinline__ uint4 persist_ld_relaxed_v4(const u32* p) {
    uint4 v;
    asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ bool persist_ll_ok(const uint4& v, u32 tag) {
    return (v.x >> 16) == tag && (v.y >> 16) == tag && (v.z >> 16) == tag && (v.w >> 16) == tag;
}
// The four words at p once each carries `tag` (loaded again until then; out of line: the wait is
// the rare case, and its registers stay out of the staging's); a second without them traps (the
// tags disagree).
__device__ __noinline__ uint4 persist_ll_spin(const u32* p, u32 tag) {
    const u64 t0 = persist_now();
    uint4 v;
    do {
        if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
        if (persist_now() - t0 > 1000000000ull) __trap();
        v = persist_ld_relaxed_v4(p);
    } while (!persist_ll_ok(v, tag));
    return v;
}
// (vectors of words a thread has in flight at once: fewer than the plain row's registers, which
// the kernel's register budget, at its cap, does not spare twice)
#ifndef PERSIST_LL_VECS
#define PERSIST_LL_VECS 3
#endif
static_assert(PERSIST_LL_VECS <= PERSIST_INPUT_VECS, "the tagged staging uses the plain row's registers");
#if PERSIST_LL && PERSIST_POOL > 0
#error "PERSIST_LL: the dynamic pool's SwiGLU units write no tagged words"
#endif
// xs[0, in) = the values of the words ll[0, in) once each carries `tag` (in a multiple of 4, ll
// 16-byte aligned: the host's checks), through r (the plain input's registers). Each thread loads
// its vectors of four words at once and loads again any vector not yet written; a second without
// its words traps (the tags disagree).
template <typename T>
__device__ __forceinline__ void persist_stage_ll(T* xs, PersistInputRegs& r, const u32* ll, int in, u32 tag) {
    const int nv = in / 4;
    for (int b = 0; b < nv; b += PERSIST_LL_VECS * PERSIST_CONSUMERS) {
#pragma unroll
        for (int j = 0; j < PERSIST_LL_VECS; ++j) {
            const int id = b + threadIdx.x + j * PERSIST_CONSUMERS;
            if (id < nv) r.v[j] = persist_ld_relaxed_v4(ll + 4 * id);
        }
#pragma unroll
        for (int j = 0; j < PERSIST_LL_VECS; ++j) {
            const int id = b + threadIdx.x + j * PERSIST_CONSUMERS;
            if (id < nv) {
                if (!persist_ll_ok(r.v[j], tag)) r.v[j] = persist_ll_spin(ll + 4 * id, tag);
                uint2 v;
                v.x = (r.v[j].x & 0xffffu) | (r.v[j].y << 16);
                v.y = (r.v[j].z & 0xffffu) | (r.v[j].w << 16);
                reinterpret_cast<uint2*>(xs)[id] = v;
            }
        }
    }
}
#endif

template <typename T>
__device__ void persist_stage_input(T* xs, const PersistDense<T>& op, const PersistInputRegs& nw, float* scratch) {
    const int in = op.in;
    if (PERSIST_HEADS && op.kind == PERSIST_GEMV_HEADS) {
        persist_heads_merge(xs, op, scratch);
        return;
    }
    if (!op.x) {
        if (persist_vec_ok<T>(op.inp, in)) {
            PersistInputRegs r;
            const int n = in * (int)sizeof(T) / 16;
            persist_load_vecs(r, op.inp, n);
            persist_store_vecs(xs, r, n);
        } else {
            for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) xs[i] = op.inp[i];
        }
        persist_consumers_sync();
        return;
    }
    // xs = the norm weight; this thread's elements of x, and their squares
    const bool wvec = persist_vec_ok<T>(op.norm_w, in), xvec = persist_vec_ok<float>(op.x, in);
    const int nw_n = wvec ? in * (int)sizeof(T) / 16 : 0, nx = xvec ? in / 4 : 0;
    PersistInputRegs xr;
    persist_load_vecs(xr, op.x, nx);
    persist_store_vecs(xs, nw, nw_n);
    if (!wvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) xs[i] = op.norm_w[i];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const float4 f = reinterpret_cast<const float4&>(xr.v[k]);
        if (threadIdx.x + k * PERSIST_CONSUMERS < nx) ss += f.x * f.x + f.y * f.y + f.z * f.z + f.w * f.w;
    }
    if (!xvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) ss += op.x[i] * op.x[i];
    // (the sum's barriers also publish the weight in xs)
    const float rs = 1.0f / sqrtf(group_sum(PersistConsumers{}, ss, scratch) / (float)in + op.eps);
    // each element of x is normalised by the thread that loaded it
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < nx) {
            const float4 f = reinterpret_cast<const float4&>(xr.v[k]);
            T* o = xs + 4 * id;
            st(o + 0, f.x * rs * ld(o + 0));
            st(o + 1, f.y * rs * ld(o + 1));
            st(o + 2, f.z * rs * ld(o + 2));
            st(o + 3, f.w * rs * ld(o + 3));
        }
    }
    if (!xvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) st(xs + i, op.x[i] * rs * ld(xs + i));
    persist_consumers_sync();
}

// ys[r] = the dot products of rows [r, r + R) in the ring (a stride of rs bytes) with xs, by one
// warp (lane 0 stores): each input vector is unpacked once for the R rows. Each row's sum is one
// chain of FMAs (split into 2, 4 or 8 chains it measured slower: 1.32 ms per step against 1.28).
template <typename T, int R>
__device__ __forceinline__ void persist_dots(const unsigned char* row0, int rs, const T* xs, int in, bool vec, int lane,
                                             float* ys) {
    constexpr int VEC = GemvVec<T>::N;
    float acc[R];
#pragma unroll
    for (int j = 0; j < R; ++j) acc[j] = 0.0f;
    if (vec) {
        const uint4* xv = reinterpret_cast<const uint4*>(xs);
        const int nv = in / VEC;
#pragma unroll 2
        for (int v = lane; v < nv; v += 32) {
            float xf[VEC];
            gemv_unpack<T>(xf, xv[v]);
#pragma unroll
            for (int j = 0; j < R; ++j) {
                float wf[VEC];
                gemv_unpack<T>(wf, reinterpret_cast<const uint4*>(row0 + (long)j * rs)[v]);
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[j] = fmaf(wf[e], xf[e], acc[j]);
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            const float xf = ld(xs + i);
#pragma unroll
            for (int j = 0; j < R; ++j) acc[j] += ld(reinterpret_cast<const T*>(row0 + (long)j * rs) + i) * xf;
        }
    }
#pragma unroll
    for (int j = 0; j < R; ++j) {
        const float y = warp_sum(acc[j]);
        if (lane == 0) ys[j] = y;
    }
}

// The rows [0, rows) of a stage at base (a stride of rs bytes): their dot products with xs, by one
// warp, into ys.
template <typename T>
__device__ __forceinline__ void persist_stage_dots(const unsigned char* base, int rs, int rows, const T* xs, int in,
                                                   bool vec, int lane, float* ys) {
    int r = 0;
#ifdef PERSIST_SKIP_DOT  // timing experiments only: the stream without the arithmetic (wrong sums)
    r = rows;
#endif
    for (; r + 4 <= rows; r += 4) persist_dots<T, 4>(base + (long)r * rs, rs, xs, in, vec, lane, ys + r);
    if (r + 2 <= rows) {
        persist_dots<T, 2>(base + (long)r * rs, rs, xs, in, vec, lane, ys + r);
        r += 2;
    }
    if (r < rows) persist_dots<T, 1>(base + (long)r * rs, rs, xs, in, vec, lane, ys + r);
}


// An op folded into the phase before it (the host's choice): its product needs every element of
// its input, so as an op of its own it would wait at a grid barrier for the phase that produced
// that input. Split over the inputs instead, each block adds its inputs' part of every output,
//   acc[j] += sum_{e in [c0, c1)} W^T[e, j] v[e]
// right after it produced those v (uv: its v as stored, rounded to T), with W^T's rows [c0, c1)
// streamed into the ring in stages after the op's own, four outputs a thread (a thread holds up
// to PERSIST_FOLD_GROUPS fours: the host checks n <= 4 PERSIST_FOLD_GROUPS PERSIST_CONSUMERS;
// with fewer outputs than threads, the inputs are split between threads too), and one 16-byte
// vector reduction per four outputs at the end. The order of the additions changes from run to
// run (f32 atomics).
// - Mamba's x_proj into in_proj + conv step (src/model/xproj_fold.rs; x_dbl = x_proj u, 176 rows
//   of Samba-1.3B over 264 blocks as a phase: ~4.7 us for 0.4 us of bytes): acc is
//   PERSIST_FOLD_COPIES copies of x_dbl's f32 sums, a row of W^T (stride floats) apart, block b
//   adding into copy b % PERSIST_FOLD_COPIES (so ~16 blocks, not ~130, add to one address; on the
//   H200 the step measured the same without the additions). The scan step adds the copies after
//   the next barrier and rounds them to T as x_proj's output is stored; the previous Mamba layer's
//   scan step zeroed acc (persist_scan_zero_next).
// - The MLP's fc2 into the SwiGLU phase (src/model/fc2_fold.rs; x += fc2 act): acc is the
//   residual x itself. Every block of the phase stages RMSNorm(x) from x after the barrier, so
//   none may add into x before all have: each counts itself in fold_staged() once staged (a
//   step adds G), and a block waits for the count before its additions (~10 us later, so in
//   practice without waiting). fc2 is computed from act as stored (T), as the op would read it.
#ifndef PERSIST_FOLD_GROUPS
#if PERSIST_FC2_FOLD
#define PERSIST_FOLD_GROUPS 6
#else  // (x_proj alone: its outputs are fewer than 4 PERSIST_CONSUMERS, the host checks)
#define PERSIST_FOLD_GROUPS 1
#endif
#endif
__device__ __forceinline__ void persist_red_add_v4(float* p, float a, float b, float c, float d) {
    asm volatile("red.relaxed.gpu.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(a), "f"(b), "f"(c), "f"(d)
                 : "memory");
}
template <typename T>
__device__ void persist_fold(const PersistDense<T>& op, int nc, unsigned& stage, const unsigned char* ring,
                             PersistRing& rb, const float* uv) {
    const int n = op.fold_n(), stride = op.fold_stride(), per = op.fold_rows_per_stage();
    // virtual thread v = threadIdx.x + i PERSIST_CONSUMERS (i < PERSIST_FOLD_GROUPS): outputs
    // [4 g, 4 g + 4), g = v % groups, of the inputs e with e % splits == v / groups (176 outputs:
    // 44 groups, 2 splits, 88 threads; 2304: 576 groups, one split, 4 or 5 groups a thread)
    const int groups = (n + 3) / 4, splits = max(1, PERSIST_CONSUMERS / groups), vts = groups * splits;
    if (vts > PERSIST_FOLD_GROUPS * PERSIST_CONSUMERS) __trap();  // (the host checks n)
    float acc[PERSIST_FOLD_GROUPS][4];
#pragma unroll
    for (int i = 0; i < PERSIST_FOLD_GROUPS; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    persist_consumers_sync();  // the block's v in uv
    for (int r0 = 0; r0 < nc; r0 += per, ++stage) {
        const unsigned slot = stage % PERSIST_SLOTS;
        mbar_wait(&rb.full[slot], (stage / PERSIST_SLOTS) & 1);
        const T* wt = reinterpret_cast<const T*>(ring + rb.offset[slot]);
        const int rows = min(per, nc - r0);
#pragma unroll
        for (int i = 0; i < PERSIST_FOLD_GROUPS; ++i) {
            const int v = (int)threadIdx.x + i * PERSIST_CONSUMERS;
            if (v < vts) {
                const int j = 4 * (v % groups), sp = v / groups;  // (stride: whole 16 bytes, so j + 3 < stride)
#pragma unroll 4
                for (int r = (sp - r0 % splits + splits) % splits; r < rows; r += splits) {
                    const T* w = wt + (long)r * stride + j;
                    const float x = uv[r0 + r];
                    acc[i][0] = fmaf(ld(w + 0), x, acc[i][0]);
                    acc[i][1] = fmaf(ld(w + 1), x, acc[i][1]);
                    acc[i][2] = fmaf(ld(w + 2), x, acc[i][2]);
                    acc[i][3] = fmaf(ld(w + 3), x, acc[i][3]);
                }
            }
        }
        persist_consumers_sync();  // every read of the stage done
        if (threadIdx.x == 0) mbar_arrive(&rb.empty[slot]);
    }
    if (const u64* staged = op.fold_staged()) {
        if (threadIdx.x == 0) {
            const u64 target = (persist_dyn.epoch + 1) * (u64)gridDim.x;
            while (persist_ld_acquire(staged) < target) __nanosleep(32);
        }
        persist_consumers_sync();
    }
    float* dst = op.fold_acc() + (long)(blockIdx.x % op.fold_copies()) * stride;
#ifdef PERSIST_FOLD_SKIP_RED  // timing experiments only: the fold without its additions (wrong sums)
    return;
#endif
#pragma unroll
    for (int i = 0; i < PERSIST_FOLD_GROUPS; ++i) {
        const int v = (int)threadIdx.x + i * PERSIST_CONSUMERS;
        if (v < vts) {
            const int j = 4 * (v % groups);
            persist_red_add_v4(dst + j, acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        }
    }
}

// The dynamic pool's stages of op (see PersistDynamic), after the static units were stored: each
// warp takes every PERSIST_CONSUMER_WARPS-th stage until its END, and stores its chunks' units
// itself, their sums in its own part of ys.
template <typename T>
__device__ void persist_consume_pool(const PersistDense<T>& op, unsigned& stage, const unsigned char* ring,
                                     PersistRing& rb, const T* xs, float* ys) {
    constexpr int VEC = GemvVec<T>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int chunk = op.chunk(), rs = op.row_stride();
    const bool vec = op.in % VEC == 0;
    if (PERSIST_CONSUMER_WARPS * chunk * op.nr > persist_dyn.ys_floats) __trap();  // (the host sizes ys for it)
    persist_consumers_sync();  // every store of the static units has read its sums
    float* mine = ys + warp * chunk * op.nr;
    int chunks = 0;
    for (int j = warp;; j += PERSIST_CONSUMER_WARPS) {
        const unsigned idx = stage + j, slot = idx % PERSIST_SLOTS;
        mbar_wait(&rb.full[slot], (idx / PERSIST_SLOTS) & 1);
        const int s0 = rb.meta[slot];
        if (s0 < 0) {  // this warp's END: the pool had -1 - s0 chunks for this block
            chunks = -1 - s0;
            __syncwarp();
            if (lane == 0) mbar_arrive(&rb.empty[slot]);
            break;
        }
        const int units = min(chunk, op.n_units - s0);
        persist_stage_dots<T>(ring + rb.offset[slot], rs, units * op.nr, xs, op.in, vec, lane, mine);
        __syncwarp();
        if (lane == 0) mbar_arrive(&rb.empty[slot]);
        for (int i = lane; i < units; i += 32) {
            if (op.kind == PERSIST_GEMV) {
                typename GemvStore<T>::Pre pre;
                op.plain().prefetch(s0 + i, 0, pre);
                const float one[1] = {mine[i]};
                op.plain().store(s0 + i, 0, one, pre);
            } else {
                const float two[2] = {mine[2 * i], mine[2 * i + 1]};
                op.swiglu().store(s0 + i, 0, two, GemvNoPre{});
            }
        }
        __syncwarp();  // (mine serves the warp's next chunk)
    }
    stage += chunks + PERSIST_CONSUMER_WARPS;
}

#if STREAM_ATT_READY
// The qkv + RoPE op's units [u0, u1) stored: one more for each kv group they meet (the streamed
// attention after it waits for its group's count; persist_streamed_attention.cuh). Units are
// pairs of rows, (q heads + 2) hd / 2 of them a group. The consumers' barrier orders every
// thread's stores before thread 0's release.
template <typename T>
__device__ void persist_rope_ready(const PersistDense<T>& op, int u0, int u1) {
    persist_consumers_sync();
    if (threadIdx.x == 0 && u1 > u0) {
        u64* ready = (u64*)op.a[PERSIST_ROPE_READY];
        const int per_group = ((int)op.a[6] + 2) * op.head_dim / 2;
        for (int g = u0 / per_group; g <= (u1 - 1) / per_group; ++g)
            asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(ready + STREAM_ATT_READY_STRIDE * g)
                         : "memory");
    }
}
#endif

// Op k, a dense layer, on the consumer warps; `stage` counts the block's stages before it.
template <typename T>
__device__ void persist_consume(const PersistDense<T>& op, int k, unsigned& stage, const unsigned char* ring,
                                PersistRing& rb, T* xs, float* ys, float* scratch) {
    constexpr int VEC = GemvVec<T>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#if PERSIST_LL
    PersistInputRegs nw{};  // (zeroed: left as it was where the prefetch skips it, it lived in local memory)
#else
    PersistInputRegs nw;
#endif
    // PERSIST_NORM_W_LATE (an experiment, off): the norm weight's loads after the barrier instead
    // of before it, in case the consumers' barrier before the arrival waits for them
#if !PERSIST_NORM_W_LATE
    persist_input_prefetch(nw, op);
#endif
    if (!PERSIST_FC2_FOLD && op.kind == PERSIST_GEMV_SWIGLU && op.a[PERSIST_FOLD_W] != 0) __trap();
    PERSIST_PROF_START;
#if PERSIST_LL
    const u32* ll_in = persist_ll_input(op, k);
    if (ll_in) {
        if (threadIdx.x == 0) PERSIST_TL(persist_tl_pass, k);  // (the timeline's marks count from here)
    } else {
        persist_pass(k);
    }
#else
    persist_pass(k);
#endif
#if defined(PERSIST_TIMELINE) && defined(PERSIST_PAGE_PROBE)
    if (threadIdx.x == 0 && k < PERSIST_TL_OPS && blockIdx.x < PERSIST_TL_BLOCKS) {
        const char* in = op.x ? (const char*)op.x : (const char*)op.inp;
        if (in) {
            persist_tl_probe[k][blockIdx.x][0] = persist_probe_load(in);
            persist_tl_probe[k][blockIdx.x][1] = persist_probe_load(in + 128);
        }
    }
#endif
    PERSIST_PROF_LAP(PROF_PASS);
#if PERSIST_NORM_W_LATE
    persist_input_prefetch(nw, op);
#endif
    int u0, u1, per;
    op.share(u0, u1, per);
    // The epilogue's reads of this thread's first unit, requested before the input row's (they
    // land while it is staged and the dot products run, not on the way to the next barrier).
    PersistPre<T> pre;
#if PERSIST_LL
    // (the tagged input on a path of its own to the dot products: where the two paths met before
    // the plain staging, the norm weight's registers were live across the tagged staging, and
    // spilled)
    if (ll_in) {
        if (threadIdx.x < u1 - u0) persist_prefetch(op, u0 + threadIdx.x, pre);
        PersistInputRegs r;
        // (the barrier persist_pass would have held: the op before, e.g. the scan step, may still
        // read xs in other warps of this block)
        persist_consumers_sync();
        persist_stage_ll(xs, r, ll_in, op.in, persist_ll_tag(k - 1));
        persist_consumers_sync();
    } else
#endif
    {
        if (threadIdx.x < u1 - u0) persist_prefetch(op, u0 + threadIdx.x, pre);
        persist_stage_input(xs, op, nw, scratch);
    }
    if (threadIdx.x == 0) {
        PERSIST_TL_MARK(k, 1);  // the input row staged
        // (every consumer's read of x is done: the staging ended with their barrier)
        if (u64* staged = op.fold_staged())
            asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(staged) : "memory");
    }
    PERSIST_PROF_LAP(PROF_INPUT);
    const int rs = op.row_stride();
    const bool vec = op.in % VEC == 0;
    const int n_stages = (u1 - u0 + per - 1) / per;
    for (int s = warp; s < n_stages; s += PERSIST_CONSUMER_WARPS) {
        const unsigned idx = stage + s, slot = idx % PERSIST_SLOTS;
        PERSIST_PROF_LAP(PROF_DOT);
        mbar_wait(&rb.full[slot], (idx / PERSIST_SLOTS) & 1);
        if (threadIdx.x == 0 && s == 0) PERSIST_TL_MARK(k, 2);  // the first stage landed
        PERSIST_PROF_LAP(PROF_FULL);
        const unsigned char* base = ring + rb.offset[slot];
        const int s0 = u0 + s * per, rows = min(per, u1 - s0) * op.nr;
        persist_stage_dots<T>(base, rs, rows, xs, op.in, vec, lane, ys + (s0 - u0) * op.nr);
        __syncwarp();
        if (lane == 0) mbar_arrive(&rb.empty[slot]);
    }
    PERSIST_PROF_LAP(PROF_DOT);
    stage += n_stages;
    persist_consumers_sync();
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 3);  // every dot product done
    PERSIST_PROF_LAP(PROF_SYNC);
#if PERSIST_LL
    u32* ll_out = persist_ll_output(op);
    const u32 ll_tag = persist_ll_tag(k) << 16;
#endif
    for (int i = threadIdx.x; i < u1 - u0; i += PERSIST_CONSUMERS) {
        if (i != threadIdx.x) persist_prefetch(op, u0 + i, pre);
        const float uv = persist_store(op, u0 + i, ys + i * op.nr, pre);
#if PERSIST_LL
        if (ll_out) persist_st_ll<T>(ll_out + u0 + i, uv, ll_tag);
#endif
        // the folded op's inputs: conv's u in place of its sum (one row per unit: this thread's
        // own), SwiGLU's act after the sums (the host sizes ys for them)
        if (op.kind == PERSIST_GEMV_CONV) ys[i] = uv;
        else if (op.kind == PERSIST_GEMV_SWIGLU && op.fold_w()) ys[2 * (u1 - u0) + i] = uv;
    }
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 4);  // the units stored
#if STREAM_ATT_READY
    if (op.kind == PERSIST_GEMV_ROPE && op.a[PERSIST_ROPE_READY] != 0) persist_rope_ready(op, u0, u1);
#endif
    int c0, c1;
    if (op.fold_range(u0, u1, c0, c1))
        persist_fold(op, c1 - c0, stage, ring, rb, op.kind == PERSIST_GEMV_CONV ? ys : ys + 2 * (u1 - u0));
    if (threadIdx.x == 0) PERSIST_TL_MARK(k, 5);  // (and the folded op's part added)
#if PERSIST_POOL > 0
    if (op.pool_chunks() > 0) persist_consume_pool(op, stage, ring, rb, xs, ys);
#endif
    PERSIST_PROF_LAP(PROF_EPILOGUE);
}

// One virtual block of each other op kind: the kernel's arguments from the table, in its entry's
// order.
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
template <typename T, bool ATTENTION>
__device__ __forceinline__ void persist_other(int kind, const u64* a, const PersistentGrid& g) {
    switch (kind) {
    case PERSIST_EMBEDDING:
        embedding_residual_fwd<T>(g, PTR(0, float*), PTR(1, const u32*), PTR(2, const T*), (long)a[3], INT(4), INT(5));
        break;
    case PERSIST_POSITIONS: positions_advance_body(g, PTR(0, int*), INT(1), INT(2)); break;
#if PERSIST_HALVES == 1  // its shared arrays serve one virtual block at a time (the host checks)
    case PERSIST_ATTENTION:
        if constexpr (ATTENTION)
            attention_decode_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, unsigned*), PTR(3, const T*), PTR(4, T*),
                                PTR(5, T*), PTR(6, const int*), INT(7), INT(8), INT(9), INT(10), INT(11), INT(12));
        break;
#endif
    default: __trap();  // the host records only the kinds above (PERSIST_GEMV_HEADS: in its own module)
    }
}

// The scan step (mamba_decode.cu), its virtual blocks v0, v0 + stride, ... one after the other on
// each half of the consumers. Before barrier k, the weights, the scan state, in_proj's u and z
// are requested into L2 (prefetch: no registers held; u and z may still be being written when
// x_proj is folded into in_proj's phase, so they are loaded only after the barrier), so after it
// every virtual block's loads are L2 hits. (Run as plain virtual blocks after the
// barrier, each of the 2-3 per block waited for its DRAM reads in turn: ~9 us per scan step for
// ~0.5 us of bytes.)
template <typename T>
__device__ __forceinline__ ScanStepArgs<T> persist_scan_args(const u64* a) {
    return ScanStepArgs<T>{PTR(0, T*),       PTR(1, float*),   PTR(2, const T*), PTR(3, const T*), PTR(4, const T*),
                           INT(5),           PTR(6, const T*), PTR(7, const T*), PTR(8, const T*), PTR(9, const T*),
                           INT(10),          INT(11),          INT(12)};
}
// With x_proj folded into in_proj's phase (persist_fold), the host set a[PERSIST_SCAN_SUMS] =
// x_dbl's f32 sums (PERSIST_FOLD_COPIES copies a[PERSIST_SCAN_STRIDE] floats apart, added here
// after the barrier and rounded to T as x_proj stores its output, in place of x_dbl) and
// a[PERSIST_SCAN_ZERO] = the sums of the next folded layer: block 0 zeroes the next layer's
// copies here, between their last reads (that layer's scan step, a step ago) and their next
// additions (its in_proj phase, after more barriers). Their first use starts from zeroed memory.
__device__ __forceinline__ const float* persist_scan_sums(const u64* a) { return (const float*)a[PERSIST_SCAN_SUMS]; }
__device__ __forceinline__ float persist_scan_sum(const u64* a, int i) {
    const float* sums = persist_scan_sums(a) + i;
    const long stride = (long)a[PERSIST_SCAN_STRIDE];
    float v[PERSIST_FOLD_COPIES];
#pragma unroll
    for (int c = 0; c < PERSIST_FOLD_COPIES; ++c) v[c] = __ldcg(sums + c * stride);
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < PERSIST_FOLD_COPIES; ++c) s += v[c];
    return s;
}
__device__ __forceinline__ void persist_scan_zero_next(const u64* a) {
    float* next = (float*)a[PERSIST_SCAN_ZERO];
    const int n = PERSIST_FOLD_COPIES * (int)a[PERSIST_SCAN_STRIDE];
    if (next && blockIdx.x == 0)
        for (int i = threadIdx.x; i < n; i += PERSIST_CONSUMERS) next[i] = 0.0f;
}

template <typename T>
__device__ void persist_scan_step(const u64* d, int k, T* xs, int xs_bytes) {
    const long gx = (long)d[1], n = gx * (long)d[2] * (long)d[3];
    const long stride = (long)PERSIST_HALVES * gridDim.x;
    const long v0 = (long)PERSIST_HALVES * blockIdx.x + threadIdx.x / PERSIST_VBLOCK;
    const int t = threadIdx.x % PERSIST_VBLOCK;
    // (the arguments are read from the table where they are used: fewer registers held)
    for (long v = v0; v < n; v += stride)
        scan_step_prefetch_l2(persist_scan_args<T>(d + 4), (v % gx) * PERSIST_VBLOCK + t, (int)(v / gx));
    persist_pass(k);
    // folded x_proj: its sums as T in xs, read by the virtual blocks as x_dbl (batch 1)
    const float* sums = persist_scan_sums(d + 4);
    if (sums) {
        const ScanStepArgs<T> p = persist_scan_args<T>(d + 4);
        const int len = p.dt_rank + 2 * p.d_state;
        if (len * (int)sizeof(T) > xs_bytes || n != gx) __trap();  // (the host checks both)
        for (int i = threadIdx.x; i < len; i += PERSIST_CONSUMERS) st(xs + i, persist_scan_sum(d + 4, i));
        persist_scan_zero_next(d + 4);
        persist_consumers_sync();
    }
#pragma unroll 1
    for (long v = v0; v < n; v += stride) {
        ScanStepArgs<T> p = persist_scan_args<T>(d + 4);
        if (sums) p.x_dbl = xs;
        ScanStepItem<T> it;  // (v is uniform over a virtual block: the shuffles)
        it.weights(p, (v % gx) * PERSIST_VBLOCK + t, (int)(v / gx));
        it.state_inputs(p);
        it.token_inputs(p);
        it.finish(p);
#if PERSIST_LL
        // y's tagged words (batch 1): channel e's by the thread that stored y[e] (its n = 0), from
        // its own store
        if (u32* ll = sizeof(T) == 2 ? (u32*)d[4 + PERSIST_LL_OUT] : nullptr)
            if (it.active && it.n == 0 && it.b == 0) persist_st_ll<T>(ll + it.e, ld(p.y + it.e), persist_ll_tag(k) << 16);
#endif
    }
}

// The scan step with four states per thread (the default; SAMBA_NVRTC_DEFINES=PERSIST_SCAN_WIDE=0
// runs the virtual blocks above): the same math as mamba_decode.cu's step, with L = N / 4
// consecutive lanes per channel, lane q holding h[e, 4q..4q+4) and dt_proj's row's 16-byte vectors
// q, q + L, ...; the dot over R and the sum over n are shuffles among the L lanes. d_inner * N / 4
// threads are one per consumer thread of the grid (Samba-1.3B: 18,432 of 33,792), so every load
// that does not depend on the op before (dt_proj's row, A, D, the bias, h) is issued before the
// barrier, and after it, u and z (in_proj's outputs: with x_proj folded into in_proj's phase, the
// op right before) with x_dbl's row (dt_low | B | C), staged once per block in shared memory: one
// L2 round trip instead of one per virtual block. Measured (H200, Samba-1.3B, 2026-11-29): the
// scan phase 8.0 -> 2.3-2.6 us, the step 1.264 -> 1.191 ms.
#ifndef PERSIST_SCAN_WIDE
#define PERSIST_SCAN_WIDE 1
#endif
#define SCAN_WIDE_VECS 6  // dt_proj row vectors per lane at most

template <typename T>
struct ScanStepWide {
    int e, q;
    bool active;  // inactive lanes still take part in the shuffles
    uint4 w[SCAN_WIDE_VECS];
    float a[4], h[4];
    float dsk, bias, uu, zz;

    // Whether the step fits: batch 1; N / 4 lanes a power of two <= 32; dt_proj's rows whole,
    // aligned 16-byte vectors, at most SCAN_WIDE_VECS per lane; an aligned state; x_dbl's row in
    // xd_bytes of f32; a thread for every (channel, lane).
    __device__ static bool fits(const ScanStepArgs<T>& p, long batch, int xd_bytes) {
        const int L = p.d_state / 4, row = p.dt_rank * (int)sizeof(T);
        return batch == 1 && p.d_state % 4 == 0 && L >= 1 && L <= 32 && (L & (L - 1)) == 0 && row % 16 == 0 &&
               (row / 16 + L - 1) / L <= SCAN_WIDE_VECS && gemv_aligned(p.dt_w) && gemv_aligned(p.h) &&
               (p.dt_rank + 2 * p.d_state) * 4 <= xd_bytes && (long)p.d_inner * L <= (long)gridDim.x * PERSIST_CONSUMERS;
    }
    // Thread t of d_inner * L: everything that does not depend on the ops before.
    __device__ void load(const ScanStepArgs<T>& p, long t) {
        const int N = p.d_state, L = N / 4, nvec = p.dt_rank * (int)sizeof(T) / 16;
        e = (int)(t / L), q = (int)(t % L);
        active = e < p.d_inner;
        const uint4* row = reinterpret_cast<const uint4*>(p.dt_w + (long)e * p.dt_rank);
#pragma unroll
        for (int i = 0; i < SCAN_WIDE_VECS; ++i) {
            const int v = q + i * L;
            w[i] = active && v < nvec ? row[v] : make_uint4(0u, 0u, 0u, 0u);
        }
        dsk = bias = uu = zz = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) a[j] = h[j] = 0.0f;
        if (active) {
            const float4 hv = *reinterpret_cast<const float4*>(p.h + (long)e * N + 4 * q);
            h[0] = hv.x, h[1] = hv.y, h[2] = hv.z, h[3] = hv.w;
#pragma unroll
            for (int j = 0; j < 4; ++j) a[j] = -expf(ld(p.a_log + (long)e * N + 4 * q + j));
            dsk = ld(p.d_skip + e);
            bias = ld(p.dt_b + e);
        }
    }
    // After the barrier: in_proj's outputs.
    __device__ void load_token(const ScanStepArgs<T>& p) {
        if (active) {
            uu = ld(p.u + e);
            zz = ld(p.z + e);
        }
    }
    // The step, x_dbl's row in xd (f32: dt_low [R], B [N], C [N]).
#if PERSIST_LL
    // (ll, tag_hi: y's tagged words, PERSIST_LL)
    __device__ void finish(const ScanStepArgs<T>& p, const float* xd, u32* ll, u32 tag_hi) {
#else
    __device__ void finish(const ScanStepArgs<T>& p, const float* xd) {
#endif
        constexpr int VEC = GemvVec<T>::N;
        const int N = p.d_state, L = N / 4, nvec = p.dt_rank * (int)sizeof(T) / 16;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < SCAN_WIDE_VECS; ++i) {
            const int v = q + i * L;
            if (v < nvec) {
                float f[VEC];
                gemv_unpack<T>(f, w[i]);
#pragma unroll
                for (int c = 0; c < VEC; ++c) dot += f[c] * xd[v * VEC + c];
            }
        }
        for (int o = L / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const float delta = softplus(stored<T>(dot) + bias);
        float part = 0.0f;
        if (active) {
            const float* bn = xd + p.dt_rank + 4 * q;
            const float* cn = bn + N;
            float4 hv;
            float* hn = reinterpret_cast<float*>(&hv);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                hn[j] = expf(delta * a[j]) * h[j] + (delta * uu) * bn[j];
                part += hn[j] * cn[j];
            }
            *reinterpret_cast<float4*>(p.h + (long)e * N + 4 * q) = hv;
        }
        for (int o = L / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
#if PERSIST_LL
        if (active && q == 0) {
            const float y = (part + dsk * uu) * silu(zz);
            st(p.y + e, y);
            if (ll) persist_st_ll<T>(ll + e, y, tag_hi);
        }
#else
        if (active && q == 0) st(p.y + e, (part + dsk * uu) * silu(zz));
#endif
    }
};

// Op k, the scan step, as ScanStepWide when it fits (uniform over the grid: its arguments and the
// grid); false when it does not, and nothing ran. xd: the input row's shared memory (free between
// the dense ops).
template <typename T>
__device__ bool persist_scan_wide(const u64* d, int k, float* xd, int xd_bytes) {
    const ScanStepArgs<T> p = persist_scan_args<T>(d + 4);
    if (!ScanStepWide<T>::fits(p, (long)d[2] * (long)d[3], xd_bytes)) return false;
    ScanStepWide<T> it;
    it.load(p, (long)blockIdx.x * PERSIST_CONSUMERS + threadIdx.x);
    persist_pass(k);
    it.load_token(p);
    const float* sums = persist_scan_sums(d + 4);
    for (int i = threadIdx.x; i < p.dt_rank + 2 * p.d_state; i += PERSIST_CONSUMERS)
        xd[i] = sums ? stored<T>(persist_scan_sum(d + 4, i)) : ld(p.x_dbl + i);
    persist_scan_zero_next(d + 4);
    persist_consumers_sync();
#if PERSIST_LL
    it.finish(p, xd, sizeof(T) == 2 ? (u32*)d[4 + PERSIST_LL_OUT] : nullptr, persist_ll_tag(k) << 16);
#else
    it.finish(p, xd);
#endif
    return true;
}
#undef PTR
#undef INT

#ifndef PERSIST_RING_ALIGN  // bytes, a power of two from 16 to 128 (the host's slack for it: RING_ALIGN)
#define PERSIST_RING_ALIGN 128
#endif
// Dynamic shared memory: xs [xs_bytes] (the input row), ys [ys_floats] (a block's sums of one op),
// the ring [ring_bytes], then the table [n_ops][PERSIST_OP_WORDS]; every part 16-byte aligned, the
// ring's bytes in use PERSIST_RING_ALIGN-aligned.
template <typename T, bool ATTENTION, bool STREAMED>
__device__ void decode_persistent(const u64* ops, int n_ops, u64* count, u64 base, int poll_ns, int xs_bytes,
                                  int ys_floats, int ring_bytes, u64* claims, u64 epoch) {
    extern __shared__ __align__(16) unsigned char persist_smem[];
    __shared__ PersistRing rb;
    __shared__ float scratch[32];
    T* xs = reinterpret_cast<T*>(persist_smem);
    float* ys = reinterpret_cast<float*>(persist_smem + xs_bytes);
    unsigned char* ring = persist_smem + xs_bytes + 4 * ys_floats;
    {
        // The ring's first byte on a PERSIST_RING_ALIGN-byte boundary of the shared window (its
        // end where it was): the dynamic part starts after the entry's static shared memory, which
        // differs between entries. Measured on an H100 (docs/gpu.md, session 9): with the ring 64
        // bytes past a 128-byte boundary (the streamed entries') the step took 1.455 ms, on the
        // boundary 1.314; 48 bytes past (the own-kernel entries') 1.348, on the boundary 1.333.
        const unsigned mis = persist_smem_addr(ring) % PERSIST_RING_ALIGN;
        const int pad = mis ? PERSIST_RING_ALIGN - (int)mis : 0;
        ring += pad;
        ring_bytes -= pad;
    }
    // The launch's table, copied once: every op's row is then read from shared memory, not with a
    // round trip to L2 at the start of each op (on the critical path between two barriers).
    u64* table = reinterpret_cast<u64*>(ring + ring_bytes);
    for (int i = threadIdx.x; i < n_ops * PERSIST_OP_WORDS; i += blockDim.x) table[i] = ops[i];
    const u64* ops_in = ops;
    ops = table;
    if (threadIdx.x == 0) {
        persist_sync.count = count;
        persist_sync.base = base;
        persist_sync.passed = 0;
        persist_sync.poll_ns = poll_ns;
        persist_dyn = PersistDynamic{claims, epoch, ys_floats};
#if STREAM_ATT_READY
        stream_att_epoch = epoch;
#endif
#if PERSIST_LL
        persist_ll_ordinal = (u32)((base / gridDim.x) % 65535ull);
#endif
        for (int s = 0; s < PERSIST_SLOTS; ++s) {
            mbar_init(&rb.full[s], 1);
            mbar_init(&rb.empty[s], 1);
        }
#ifdef PERSIST_PROFILE
        for (int p = 0; p < PROF_PARTS; ++p) persist_prof[p] = 0;
#endif
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
#ifdef PERSIST_TIMELINE
    __shared__ unsigned tl_launch;
    if (threadIdx.x == 0) {
        PERSIST_TL(persist_tl_pass, 0);
        if (blockIdx.x == 0) tl_launch = atomicAdd(&persist_tl_launches, 1u);
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        if (blockIdx.x < PERSIST_TL_BLOCKS) persist_tl_smid[blockIdx.x] = sm;
    }
#endif
    if constexpr (STREAMED) {
        // every streamed attention op reads the same position array: any one sets stream_att_pos
        for (int k = threadIdx.x; k < n_ops; k += blockDim.x)
            if ((int)ops_in[(long)k * PERSIST_OP_WORDS] == PERSIST_STREAMED_ATTENTION)
                stream_att_pos = *StreamedAttention<T>{ops_in + (long)k * PERSIST_OP_WORDS + 4}.pos();
    }
    __syncthreads();
    if (threadIdx.x >= PERSIST_CONSUMERS) {
        persist_produce<T, STREAMED>(ops, n_ops, ring, (unsigned)ring_bytes, rb);
#ifdef PERSIST_PROFILE
        asm volatile("bar.sync 15, %0;" ::"n"(PERSIST_THREADS) : "memory");
#endif
        return;
    }
    unsigned stage = 0;
    for (int k = 0; k < n_ops; ++k) {
        const u64* d = ops + (long)k * PERSIST_OP_WORDS;
        const int kind = (int)d[0];
        if (PersistDense<T>::is_dense(kind)) {
            persist_consume<T>(PersistDense<T>(kind, d + 4), k, stage, ring, rb, xs, ys, scratch);
            continue;
        }
        if constexpr (STREAMED) {
            if (kind == PERSIST_STREAMED_ATTENTION) {
                PERSIST_PROF_START;
                persist_streamed_attention<T>(StreamedAttention<T>{d + 4}, k, stage, ring, rb, reinterpret_cast<float*>(xs),
                                          xs_bytes, scratch);
                PERSIST_PROF_LAP(PROF_OTHER);
                continue;
            }
        }
        if (kind == PERSIST_SCAN_STEP) {
            PERSIST_PROF_START;
#if PERSIST_SCAN_WIDE
            if (!persist_scan_wide<T>(d, k, reinterpret_cast<float*>(xs), xs_bytes))
#endif
                persist_scan_step<T>(d, k, xs, xs_bytes);
            PERSIST_PROF_LAP(PROF_OTHER);
            continue;
        }
        PersistentGrid g;
        g.dim.x = (unsigned)d[1];
        g.dim.y = (unsigned)d[2];
        g.dim.z = (unsigned)d[3];
        g.op = k;
        const long n = (long)g.dim.x * g.dim.y * g.dim.z;
        PERSIST_PROF_START;
#if PERSIST_HALVES == 1
        // The first virtual block's own wait() passes the barrier, after its loads that do not
        // depend on the earlier ops, as its kernel does before pdl_wait; a block with no virtual
        // block of this op passes it after the loop.
#else
        // Both halves of the consumers pass the barrier here (the bodies' own wait() then returns
        // at once), then each runs every other virtual block.
        persist_pass(k);
#endif
        for (long v = (long)PERSIST_HALVES * blockIdx.x + threadIdx.x / PERSIST_VBLOCK; v < n;
             v += (long)PERSIST_HALVES * gridDim.x) {
            g.blk.x = (unsigned)(v % g.dim.x);
            g.blk.y = (unsigned)((v / g.dim.x) % g.dim.y);
            g.blk.z = (unsigned)(v / ((long)g.dim.x * g.dim.y));
            persist_other<T, ATTENTION>(kind, d + 4, g);
        }
        persist_pass(k);
        PERSIST_PROF_LAP(PROF_OTHER);
    }
    PERSIST_PROF_START;
    persist_pass(n_ops - 1);
    PERSIST_PROF_LAP(PROF_PASS);
#ifdef PERSIST_TIMELINE
    // every block has arrived at every barrier; block 0 prints the ops before the last (ns)
    if (threadIdx.x == 0 && blockIdx.x == 0 && tl_launch >= PERSIST_TIMELINE_FIRST &&
        tl_launch < PERSIST_TIMELINE_FIRST + 10) {
        const int nb = min((int)gridDim.x, PERSIST_TL_BLOCKS);
        for (int k = 0; k + 1 < n_ops && k + 1 < PERSIST_TL_OPS; ++k) {
            u64 s_min = ~0ull, s_max = 0, e_min = ~0ull, e_max = 0, w_max = 0;
            double w_sum = 0.0;
            for (int b = 0; b < nb; ++b) {
                const u64 st = *(volatile u64*)&persist_tl_pass[k][b], en = *(volatile u64*)&persist_tl_arrive[k + 1][b];
                s_min = min(s_min, st), s_max = max(s_max, st), e_min = min(e_min, en), e_max = max(e_max, en);
                w_sum += (double)(en - st);
                w_max = max(w_max, en - st);
            }
            printf("PERSIST_TL launch %u op %d kind %d start_spread %llu end_first %llu end_last %llu work_mean %.0f "
                   "work_max %llu\n",
                   tl_launch, k, (int)ops[(long)k * PERSIST_OP_WORDS], s_max - s_min, e_min - s_min, e_max - s_min,
                   w_sum / nb, w_max);
            persist_tl_mean_work[k] = w_sum / nb;
            // the op's marks: those within 1 ms of the block's pass (set this launch)
            for (int i = 0; i < PERSIST_TL_MARKS; ++i) {
                double sum = 0.0, most = -1e9;
                int count = 0;
                for (int b = 0; b < nb; ++b) {
                    const double dt = (double)*(volatile u64*)&persist_tl_mark[k][b][i] -
                                      (double)*(volatile u64*)&persist_tl_pass[k][b];
                    if (dt > -1e6 && dt < 1e6) sum += dt, ++count, most = fmax(most, dt);
                }
                if (count > 0)
                    printf("PERSIST_TLM launch %u op %d mark %d blocks %d mean %.0f max %.0f\n", tl_launch, k, i, count,
                           sum / count, most);
            }
        }
#ifdef PERSIST_PAGE_PROBE
        for (int k = 0; k < n_ops && k < PERSIST_TL_OPS; ++k) {
            if (!PersistDense<T>::is_dense((int)ops[(long)k * PERSIST_OP_WORDS])) continue;
            double first = 0.0, second = 0.0;
            for (int b = 0; b < nb; ++b) {
                first += *(volatile unsigned*)&persist_tl_probe[k][b][0];
                second += *(volatile unsigned*)&persist_tl_probe[k][b][1];
            }
            printf("PERSIST_TLP launch %u op %d kind %d first %.0f second %.0f\n", tl_launch, k,
                   (int)ops[(long)k * PERSIST_OP_WORDS], first / nb, second / nb);
        }
#endif
        // per block, over the launch's dense ops: its work against the ops' means
        for (int b = 0; b < nb; ++b) {
            double w = 0.0;
            int n = 0;
            for (int k = 0; k + 1 < n_ops && k + 1 < PERSIST_TL_OPS; ++k) {
                if (!PersistDense<T>::is_dense((int)ops[(long)k * PERSIST_OP_WORDS])) continue;
                const u64 st = *(volatile u64*)&persist_tl_pass[k][b], en = *(volatile u64*)&persist_tl_arrive[k + 1][b];
                w += (double)(en - st) - persist_tl_mean_work[k];
                ++n;
            }
            if (n > 0)
                printf("PERSIST_TLB launch %u block %d sm %u ops %d work_excess %.0f\n", tl_launch, b, persist_tl_smid[b],
                       n, w / n);
        }
    }
#endif
#ifdef PERSIST_PROFILE
    asm volatile("bar.sync 15, %0;" ::"n"(PERSIST_THREADS) : "memory");  // the producer's parts are in
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        const long long* p = persist_prof;
        printf("PERSIST_PROFILE ops %d cycles pass %lld input %lld full %lld dot %lld sync %lld epilogue %lld other %lld "
               "empty %lld issue %lld\n",
               n_ops, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
    }
#endif
}

// sm_90 and later (the host checks the compute capability); for older targets the entries trap.
// The _attention entries also run the decoding attention's kernel body (compiled in, it costs the
// dense phases registers: ptxas -v, 208 bytes of spills at 168 registers against none); the
// _streamed entries run it as a streamed phase (ptxas -v: no spills).
#define PERSIST_ARGS \
    const u64 *ops, int n_ops, u64 *count, u64 base, int poll_ns, int xs_bytes, int ys_floats, int ring_bytes, \
        u64 *claims, u64 epoch
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PERSIST_RUN(T, attention, streamed) \
    decode_persistent<T, attention, streamed>(ops, n_ops, count, base, poll_ns, xs_bytes, ys_floats, ring_bytes, claims, \
                                              epoch)
#else
#define PERSIST_RUN(T, attention, streamed) __trap()
#endif
#define PERSIST_LAUNCH __launch_bounds__(PERSIST_THREADS, PERSIST_MIN_BLOCKS)
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_f32(PERSIST_ARGS) { PERSIST_RUN(float, false, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_bf16(PERSIST_ARGS) { PERSIST_RUN(bf16_t, false, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_attention_f32(PERSIST_ARGS) { PERSIST_RUN(float, true, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_attention_bf16(PERSIST_ARGS) { PERSIST_RUN(bf16_t, true, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_streamed_f32(PERSIST_ARGS) { PERSIST_RUN(float, false, true); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_streamed_bf16(PERSIST_ARGS) { PERSIST_RUN(bf16_t, false, true); }
