// Programmatic dependent launch (sm_90+), for the kernels of a decoding step. The host launches
// them with the programmatic-stream-serialization attribute (src/ops/pdl.rs), so a kernel may
// start while the kernel before it on the stream is still finishing:
//
//   kernel N+1:  read constant data (weights)      overlaps the end of kernel N
//                pdl_wait()                        returns once kernel N has completed and its
//                                                  writes are visible
//                pdl_trigger()                     kernel N+2 may now be launched
//                read and write everything else
//
// Triggering after the wait keeps at most two kernels of the chain resident at once, so data
// written by any earlier kernel is complete when a kernel starts reading it after its wait.
// Launched without the attribute (or before sm_90) both are no-ops and the stream orders
// kernels as usual.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
