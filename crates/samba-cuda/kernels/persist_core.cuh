// The persistent decoding kernel's shared parts (kernels/decode_persistent.cu says how the kernel
// works; this file comes before it and kernels/persist_streamed_attention.cuh): its sizes and op
// kinds, the grid barrier, mbarriers and bulk copies, the diagnostics (PERSIST_TIMELINE,
// PERSIST_PROFILE), a recorded op's grid, the ring's bookkeeping, the producer's place in the
// ring and the consumer threads as a group.

#define PERSIST_VBLOCK 128  // threads of a recorded op's block (a virtual block)
#ifndef PERSIST_CONSUMERS   // one or two virtual blocks at once (SAMBA_NVRTC_DEFINES)
#define PERSIST_CONSUMERS 128
#endif
#define PERSIST_THREADS (PERSIST_CONSUMERS + 32)  // and the producer warp
#define PERSIST_HALVES (PERSIST_CONSUMERS / PERSIST_VBLOCK)
#ifndef PERSIST_MIN_BLOCKS  // blocks per SM the registers are budgeted for (the host splits the
#define PERSIST_MIN_BLOCKS 2  // shared memory between as many as the registers allow)
#endif
#define PERSIST_MAX_ARGS 20
#define PERSIST_OP_WORDS (4 + PERSIST_MAX_ARGS)
#define PERSIST_SLOTS 32
#ifndef PERSIST_STAGE_BYTES  // a stage's whole units, up to this many bytes (SAMBA_NVRTC_DEFINES)
#define PERSIST_STAGE_BYTES 16384
#endif
#define PERSIST_CONSUMER_WARPS (PERSIST_CONSUMERS / 32)

// The op kinds (src/model/persistent.rs: `OpKind`).
#define PERSIST_EMBEDDING 1
#define PERSIST_GEMV 2
#define PERSIST_GEMV_SWIGLU 3
#define PERSIST_GEMV_ROPE 4
#define PERSIST_GEMV_CONV 5
#define PERSIST_SCAN_STEP 6
#define PERSIST_ATTENTION 7
#define PERSIST_POSITIONS 8
#define PERSIST_STREAMED_ATTENTION 9  // the decoding attention through the ring (the default; see below)
#define PERSIST_GEMV_HEADS 10  // the streamed attention's out_proj split by heads, merging its partials (opt-in)
// PERSIST_GEMV_HEADS is compiled in where PERSIST_HEADS is 1: the module the host loads for it
// (src/compile.rs: DECODE_PERSISTENT_HEADS), so the other entries keep their registers.
#ifndef PERSIST_HEADS
#define PERSIST_HEADS 0
#endif

// Arguments the host adds to recorded ops (src/model/xproj_fold.rs, src/model/fc2_fold.rs), past
// their entries' own: in_proj + conv step's, with x_proj folded into it, and the SwiGLU's, with
// the MLP's fc2 folded into it (PersistDense::fold_*),
#define PERSIST_FOLD_W 16       // x_proj^T [d_inner, stride] or fc2^T [hidden, stride] (T)
#define PERSIST_FOLD_SUMS 17    // x_dbl's f32 sums (PERSIST_FOLD_COPIES copies), or the residual x
#define PERSIST_FOLD_N 18       // x_dbl's length, or d_model
#define PERSIST_FOLD_STRIDE 19  // a row of the transposed weight and a copy of the sums (elements)
#define PERSIST_FOLD_STAGED 15  // (SwiGLU) a count of the blocks that staged RMSNorm(x), one per step
// the qkv + RoPE op's, with the streamed attention after it started per kv group (an experiment:
// STREAM_ATT_READY, kernels/persist_streamed_attention.cuh; src/model/attention_ready.rs)
#define PERSIST_ROPE_READY 17   // the attention's groups' counters, then their contributors (u64)
// and the scan step's after it (persist_scan_sums)
#define PERSIST_SCAN_SUMS 13    // x_dbl's sums, read in place of x_dbl
#define PERSIST_SCAN_ZERO 14    // the next folded layer's sums, zeroed here
#define PERSIST_SCAN_STRIDE 16  // PERSIST_FOLD_STRIDE's value

// and, with their outputs passed as tagged words (PERSIST_LL, below), the SwiGLU's and every
// reader's (a plain GEMV), and the scan step's and the streamed attention's
#define PERSIST_LL_ACT 14       // the tagged words (u32: the bf16 value, its writer's tag above it)
#define PERSIST_LL_OUT 18       // (the scan step, the streamed attention) the words they write

typedef unsigned long long u64;

__device__ __forceinline__ u64 persist_ld_acquire(const u64* p) {
    u64 v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// The shared-memory address of p.
__device__ __forceinline__ unsigned persist_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// ---- mbarriers and bulk copies (sm_90)

__device__ __forceinline__ void mbar_init(u64* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(persist_smem_addr(bar)), "r"(count) : "memory");
}
// One arrival that also expects `bytes` more of transactions before the phase completes.
__device__ __forceinline__ void mbar_arrive_expect(u64* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(persist_smem_addr(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(persist_smem_addr(bar)) : "memory");
}
// Returns once the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(u64* bar, unsigned parity) {
    const unsigned a = persist_smem_addr(bar);
    unsigned done;
    do {
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
            : "=r"(done)
            : "r"(a), "r"(parity)
            : "memory");
    } while (!done);
}
// bytes (a multiple of 16) from src (16-byte aligned) to dst in shared memory; completes as
// transactions on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, u64* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     persist_smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(persist_smem_addr(bar))
                 : "memory");
}

// bulk_copy with an L2 hint that the copied lines go first (evicted before others).
__device__ __forceinline__ void bulk_copy_evict_first(void* dst, const void* src, unsigned bytes, u64* bar) {
    u64 policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
            persist_smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(persist_smem_addr(bar)), "l"(policy)
        : "memory");
}

#ifndef PERSIST_EVICT_FIRST
#define PERSIST_EVICT_FIRST 1
#endif
// A dense op's weight rows into the ring, with an L2 hint that their lines go first.
// A step streams ~2.7 GB of weights through the 50 MB L2, each read once, and so evicts what is
// read again: the scan's state (every step), the residual and the activations (every phase).
// With the weights' lines evicted first, those stay in L2 and the phases' dependent reads after
// each barrier (the input row, the epilogue's residual, the state) hit.
// Measured 0.025 ms a step faster on an H100 (docs/gpu.md, session 11); PERSIST_EVICT_FIRST=0
// copies without the hint.
__device__ __forceinline__ void bulk_copy_weights(void* dst, const void* src, unsigned bytes, u64* bar) {
#if PERSIST_EVICT_FIRST
    bulk_copy_evict_first(dst, src, bytes, bar);
#else
    bulk_copy(dst, src, bytes, bar);
#endif
}

// ---- the grid barrier (consumer warps only; the producer never waits for other blocks)

__device__ __forceinline__ void persist_consumers_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(PERSIST_CONSUMERS) : "memory");
}

#ifndef PERSIST_NO_BARRIER
#define PERSIST_NO_BARRIER 0
#endif
// The barrier's state, in shared memory (set once per launch).
struct PersistSync {
    u64* count;
    u64 base;
    int passed;   // the last barrier this block passed
    int poll_ns;  // pause between two reads of the counter
};
__shared__ PersistSync persist_sync;

// The global timer (ns; the timeline's clock).
__device__ __forceinline__ u64 persist_now() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Timeline (compile with SAMBA_NVRTC_DEFINES=PERSIST_TIMELINE; diagnostics only): thread 0 of
// every block records the global time at which it arrives at and passes each barrier of a
// launch; at the end of launches [PERSIST_TIMELINE_FIRST, + 10) block 0 prints, per op, when the
// blocks started and finished it (the spread between the first and the last, the mean work), then
// per block its SM and how much longer than the mean its dense ops took (whether the blocks that
// finish a phase last are the same ones every phase: the SMs' own speeds, or chance).
#ifdef PERSIST_TIMELINE
#define PERSIST_TL_OPS 128
#define PERSIST_TL_BLOCKS 1024
#ifndef PERSIST_TIMELINE_FIRST
#define PERSIST_TIMELINE_FIRST 300
#endif
__device__ u64 persist_tl_arrive[PERSIST_TL_OPS][PERSIST_TL_BLOCKS];
__device__ u64 persist_tl_pass[PERSIST_TL_OPS][PERSIST_TL_BLOCKS];
// Per block, its SM; per op, the blocks' mean work (pass to arrival): for the per-block lines
// (PERSIST_TLB) block 0 prints after the ops'.
__device__ unsigned persist_tl_smid[PERSIST_TL_BLOCKS];
__device__ double persist_tl_mean_work[PERSIST_TL_OPS];
__device__ unsigned persist_tl_launches;
#define PERSIST_TL(array, j) \
    if ((j) < PERSIST_TL_OPS && blockIdx.x < PERSIST_TL_BLOCKS) array[j][blockIdx.x] = persist_now()
// Marks inside op k (PERSIST_TL_MARK(k, i), by one thread): block 0 prints, per mark, its mean
// time after the block passed barrier k over the blocks that set it this launch (negative: before).
#define PERSIST_TL_MARKS 8
__device__ u64 persist_tl_mark[PERSIST_TL_OPS][PERSIST_TL_BLOCKS][PERSIST_TL_MARKS];
#define PERSIST_TL_MARK(k, i) \
    if ((k) < PERSIST_TL_OPS && blockIdx.x < PERSIST_TL_BLOCKS) persist_tl_mark[k][blockIdx.x][i] = persist_now()
// PERSIST_PAGE_PROBE (with PERSIST_TIMELINE; a diagnostic): right after a dense op's barrier,
// thread 0 times two dependent L2 loads of the op's input (SM cycles), the first line and the
// next, on the same 2 MB page: if the first takes much longer, it paid an address translation
// (the weights' ~1300 pages a step stream through every SM's TLBs and the L2 that caches the
// page tables), not the L2's queues, which both loads meet. Block 0 prints the means per op
// (PERSIST_TLP lines).
#ifdef PERSIST_PAGE_PROBE
__device__ unsigned persist_tl_probe[PERSIST_TL_OPS][PERSIST_TL_BLOCKS][2];
// The cycles one ld.global.cg of p takes until its value is used. (The value is stored to shared
// memory before the clock is read: the SM issues in order, and the store waits for the load. Session
// 11's version tested the value with a setp whose result nothing used; ptxas dropped it, and the
// probe read 2 cycles.)
__device__ __forceinline__ unsigned persist_probe_load(const void* p) {
    __shared__ unsigned sink;
    unsigned v;
    long long t0, t1;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(t0)::"memory");
    asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    asm volatile("st.volatile.shared.u32 [%1], %2;\n\tmov.u64 %0, %%clock64;"
                 : "=l"(t1)
                 : "r"((unsigned)__cvta_generic_to_shared(&sink)), "r"(v)
                 : "memory");
    return (unsigned)(t1 - t0);
}
#endif
#else
#define PERSIST_TL(array, j)
#define PERSIST_TL_MARK(k, i)
#endif

// PERSIST_LL (an experiment, off; the host's SAMBA_PERSIST_LL, src/model/ll_inputs.rs): a plain
// GEMV reads its input as tagged words instead of waiting at the grid barrier after the op that
// wrote it, as NCCL's low-latency protocol does: fc2 the SwiGLU's act, out_proj the scan step's
// y or the streamed attention's output. The writer stores each element a second time as one
// 32-bit word, its bf16 bits below a tag naming the op that wrote it (below); the GEMV's consumers
// load the words (relaxed, past L1) and load again those whose tag is not the one they expect.
// A 32-bit store is single-copy atomic, so a word with the right tag holds the right value. So
// the boundary costs one round trip to L2 for the input, not the writer's release, the count's
// landing, the poll that sees it and then the input's load.
//   The tag of op k of a launch: 1 + (base / G + k) mod 65535, base / G being the barriers
// before the launch (every step's barriers count on; the step's launches share an ordinal only
// between the last op of one and the first of the next, and fc2 at a launch's first op keeps its
// barrier-less kernel boundary). A stale word is at most a step (~93 ops) old, so its tag is not
// the one expected; the words start at zero, a tag never made.
//   The GEMV arrives at its barrier later, with the next op's (one reduction of two), so the
// counts stay those of the barriers; what the grid barrier ordered is now ordered by the data: a
// block writes the residual in fc2 only after reading every block's act, which each block wrote
// after reading the residual for the SwiGLU's RMSNorm (out_proj's residual was last read before
// the scan's or the attention's barrier, which stay; with STREAM_ATT_READY the attention's blocks
// do not wait at theirs, and the order comes from the data again: the qkv blocks' reads of the
// residual come before their qkv rows, which the attention waits for, and a block with no qkv
// units reads the residual for nothing).
#ifndef PERSIST_LL
#define PERSIST_LL 0
#endif
__shared__ u32 persist_ll_ordinal;  // base / G mod 65535 (set once a launch)
__device__ __forceinline__ u32 persist_ll_tag(int k) {
    return 1u + (persist_ll_ordinal + (u32)k) % 65535u;
}
// The bits of v as T stores it (T of 2 bytes).
template <typename T>
__device__ __forceinline__ u32 persist_bits16(float v) {
    T t;
    st(&t, v);
    return (u32) * reinterpret_cast<const unsigned short*>(&t);
}
// A tagged word: v as T below `tag_hi` (the tag, shifted up 16), one relaxed 32-bit store.
template <typename T>
__device__ __forceinline__ void persist_st_ll(u32* p, float v, u32 tag_hi) {
    asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(persist_bits16<T>(v) | tag_hi) : "memory");
}

// Passes every barrier up to k this block has not passed yet (uniform over the consumers); with
// WAIT false, only arrives at them (the streamed attention started per kv group waits on its
// group's counter instead: STREAM_ATT_READY). (S counters on their own lines, block b arriving
// at b % S, measured no faster: PERSIST_BARRIER_SPLIT, sessions 7-8, docs/gpu.md.)
#if PERSIST_LL
// (a block skips the barrier of a GEMV with a tagged input and arrives at it with the next op's:
// one reduction adding both, one poll)
template <bool WAIT = true>
__device__ __forceinline__ void persist_pass(int k) {
    if (persist_sync.passed >= k) return;
    persist_consumers_sync();
    if (threadIdx.x == 0) {
        for (int j = persist_sync.passed + 1; j <= k; ++j) PERSIST_TL(persist_tl_arrive, j);
        const u64 n = (u64)(k - persist_sync.passed), target = persist_sync.base + (u64)k * gridDim.x;
        asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(persist_sync.count), "l"(n) : "memory");
        while (WAIT && !PERSIST_NO_BARRIER && persist_ld_acquire(persist_sync.count) < target) {
            if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
        }
        if (WAIT) PERSIST_TL(persist_tl_pass, k);
        persist_sync.passed = k;
    }
    persist_consumers_sync();
}
#else
template <bool WAIT = true>
__device__ __forceinline__ void persist_pass(int k) {
    while (persist_sync.passed < k) {
        const int j = persist_sync.passed + 1;
        persist_consumers_sync();
        if (threadIdx.x == 0) {
            PERSIST_TL(persist_tl_arrive, j);
            const u64 target = persist_sync.base + (u64)j * gridDim.x;
            // release: the block's writes (ordered before this thread's by the consumers'
            // barrier) are visible to whoever acquires the count; acquire: every block's writes
            // before its arrival are visible to this block's reads after the barrier
            asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(persist_sync.count) : "memory");
            // (PERSIST_NO_BARRIER, timing only: wrong results; arrives without waiting, so the
            // step is the ring's stream and the ops' own work without the barriers' waits)
            while (WAIT && !PERSIST_NO_BARRIER && persist_ld_acquire(persist_sync.count) < target) {
                if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
            }
            if (WAIT) PERSIST_TL(persist_tl_pass, j);
            persist_sync.passed = j;
        }
        persist_consumers_sync();
    }
}
#endif

// Profiling (compile with SAMBA_NVRTC_DEFINES=PERSIST_PROFILE): thread 0 of the consumers and
// lane 0 of the producer add up SM cycles per part of the work, and block 0 prints them when a
// launch ends (one line per launch: ops, then the parts below).
#define PROF_PASS 0       // consumers: waiting at the grid barriers
#define PROF_INPUT 1      //            staging the input row
#define PROF_FULL 2       //            warp 0 waiting for its stages' bytes
#define PROF_DOT 3        //            warp 0's dot products
#define PROF_SYNC 4       //            waiting for the other warps of the block
#define PROF_EPILOGUE 5   //            storing the block's units
#define PROF_OTHER 6      //            the other ops (their barriers included)
#define PROF_EMPTY 7      // producer: waiting for room in the ring
#define PROF_ISSUE 8      //           issuing copies
#define PROF_PARTS 9
#ifdef PERSIST_PROFILE
__shared__ long long persist_prof[PROF_PARTS];
__shared__ long long persist_prof_t;
#define PERSIST_PROF_START \
    if (threadIdx.x == 0) persist_prof_t = clock64()
#define PERSIST_PROF_LAP(part)                       \
    if (threadIdx.x == 0) {                          \
        const long long now_ = clock64();            \
        persist_prof[part] += now_ - persist_prof_t; \
        persist_prof_t = now_;                       \
    }
#else
#define PERSIST_PROF_START
#define PERSIST_PROF_LAP(part)
#endif

// The grid of op `op`, as the bodies see it (KernelGrid's interface, pdl.cuh).
struct PersistentGrid {
    uint3 blk, dim;
    int op;
    __device__ __forceinline__ uint3 block() const { return blk; }
    __device__ __forceinline__ uint3 size() const { return dim; }
    __device__ __forceinline__ unsigned threads() const { return PERSIST_VBLOCK; }
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x % PERSIST_VBLOCK; }
    // the threads of this virtual block (named barriers 2 and 3; 1 is every consumer's)
    __device__ __forceinline__ void sync() const {
        asm volatile("bar.sync %0, %1;" ::"r"(2 + threadIdx.x / PERSIST_VBLOCK), "n"(PERSIST_VBLOCK) : "memory");
    }
    __device__ __forceinline__ void wait() const { persist_pass(op); }
};

// The ring's bookkeeping, shared by the producer (who writes it) and the consumers (who read a
// stage's offset after its full barrier).
struct PersistRing {
    u64 full[PERSIST_SLOTS];
    u64 empty[PERSIST_SLOTS];
    unsigned offset[PERSIST_SLOTS];  // the stage's first byte in the ring
    int meta[PERSIST_SLOTS];         // a dynamic stage's first unit, or -1 - chunks (decode_persistent.cu)
    u64 end[PERSIST_SLOTS];          // the stage's end in the stream of bytes (producer only)
};

// ---- the producer's place in the ring

// Where the producer is in the ring: bytes issued and freed, as positions in the unbounded stream
// of bytes, and stages.
//
// PERSIST_STAGE_ALIGN (an experiment, a power of two up to 128; 16, the default, changes
// nothing): every stage takes its bytes rounded up to this many, so that stages start on the
// boundaries the ring starts on (kernels/decode_persistent.cu: PERSIST_RING_ALIGN). Most stages
// are whole 128-byte lines already (rows of 4608 or 12288 bytes, keys and values of 256); x_proj's
// folded rows are 352 bytes, so the stages after them start off the ring's alignment until it
// wraps. (The host's check that the ring holds a stage does not count the rounding: a ring within
// 112 bytes of its largest stage would wait for room forever.)
#ifndef PERSIST_STAGE_ALIGN
#define PERSIST_STAGE_ALIGN 16
#endif
//
// PERSIST_MAX_INFLIGHT (an experiment, off): the producer requests a stage only once the stage
// that many before it has landed. The hypothesis it tests: with every ring's ~100 KB requested at
// once (~26 MB over the grid), the L2's queues are deep with DRAM misses, and the phases'
// dependent requests after each barrier (the barrier's own atomics, the input row, the
// epilogue's stores and fences: all L2 hits) wait behind them. Bandwidth needs ~3 TB/s x ~2-3 us
// in flight, ~6-9 MB: 2-3 stages of 16 KB a block. (Session 5 measured 1-8 stages, before the
// evict-first hint and most of today's kernel: 1 was 0.09 ms slower, 2 0.01 ms faster, 3-8 the
// same.)
#ifndef PERSIST_MAX_INFLIGHT
#define PERSIST_MAX_INFLIGHT 0
#endif
#if PERSIST_MAX_INFLIGHT >= PERSIST_SLOTS
#error "PERSIST_MAX_INFLIGHT must be below PERSIST_SLOTS"
#endif
//
// PERSIST_MAX_INFLIGHT_BYTES (an experiment, off): the same bound in bytes rather than stages
// (the ops' stages are 9-14 KB: one row of 12288 or 9216 bytes, three of 4608), so that every op
// keeps about as many bytes in flight: the producer requests a stage only once the bytes requested
// and not landed, this stage's with them, are at most this many (or nothing else is in flight).
#ifndef PERSIST_MAX_INFLIGHT_BYTES
#define PERSIST_MAX_INFLIGHT_BYTES 0
#endif
struct PersistStream {
    u64 head, tail;
    unsigned issued, freed;
#if PERSIST_MAX_INFLIGHT_BYTES > 0
    unsigned landed = 0;  // stages known to have landed (the producer waited on their full barrier)
    u64 landed_end = 0;   // the end of the last of them in the stream of bytes
#endif

    // the ring's bytes a stage of `bytes` takes
    __device__ static unsigned room(unsigned bytes) {
        return (bytes + PERSIST_STAGE_ALIGN - 1) & ~(unsigned)(PERSIST_STAGE_ALIGN - 1);
    }

    // Waits for room for a stage of `bytes` (whole in the ring: its end is skipped if the stage
    // would wrap; every byte of it freed; a free slot), notes the stage's place in the ring for
    // the consumers, and returns its slot; the stage's bytes start at ring + head % ring_bytes.
    __device__ unsigned claim(unsigned bytes, unsigned ring_bytes, PersistRing& rb) {
#if PERSIST_STAGE_ALIGN > 16  // (every stage is whole 16-byte vectors)
        bytes = room(bytes);
#endif
        const u64 off0 = head % ring_bytes;
        if (off0 + bytes > ring_bytes) head += ring_bytes - off0;
#ifdef PERSIST_PROFILE
        const long long t0 = clock64();
#endif
        while (head + bytes > tail + ring_bytes || issued - freed == PERSIST_SLOTS) {
            const unsigned f = freed % PERSIST_SLOTS;
            mbar_wait(&rb.empty[f], (freed / PERSIST_SLOTS) & 1);
            tail = rb.end[f];
            ++freed;
        }
#if PERSIST_MAX_INFLIGHT > 0
        // (an experiment: at most PERSIST_MAX_INFLIGHT stages requested and not landed; stage o's
        // slot is not reused before stage o + PERSIST_SLOTS, so its phase parity still tells)
        if (issued >= PERSIST_MAX_INFLIGHT) {
            const unsigned o = issued - PERSIST_MAX_INFLIGHT;
            mbar_wait(&rb.full[o % PERSIST_SLOTS], (o / PERSIST_SLOTS) & 1);
        }
#endif
#if PERSIST_MAX_INFLIGHT_BYTES > 0
        // (freed stages have landed; a stage's slot is not reused before it is freed, so the
        // waits below are on stages whose slot still holds them; lane 0 wrote their ends)
        __syncwarp();
        if (landed < freed) {
            landed = freed;
            landed_end = tail;
        }
        while (landed < issued && head + bytes - landed_end > PERSIST_MAX_INFLIGHT_BYTES) {
            const unsigned l = landed % PERSIST_SLOTS;
            mbar_wait(&rb.full[l], (landed / PERSIST_SLOTS) & 1);
            landed_end = rb.end[l];
            ++landed;
        }
#endif
#ifdef PERSIST_PROFILE
        if ((threadIdx.x & 31) == 0) persist_prof[PROF_EMPTY] += clock64() - t0;
#endif
        const unsigned slot = issued % PERSIST_SLOTS;
        __syncwarp();
        if ((threadIdx.x & 31) == 0) {
            rb.offset[slot] = (unsigned)(head % ring_bytes);
            rb.end[slot] = head + bytes;
        }
        return slot;
    }
    __device__ void commit(unsigned bytes) {
#if PERSIST_STAGE_ALIGN > 16
        bytes = room(bytes);
#endif
        head += bytes;
        ++issued;
    }
};

// ---- the consumer threads

// The consumer threads as a group for the reductions of common.cuh (group_sum).
struct PersistConsumers {
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x; }
    __device__ __forceinline__ unsigned threads() const { return PERSIST_CONSUMERS; }
    __device__ __forceinline__ void sync() const { persist_consumers_sync(); }
};

