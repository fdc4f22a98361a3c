/* The vector path of lstmcore's hand-written kernels (lstmcore_smallgemm.h, lstmcore_fastmath.h), decided once per
 * process and shared by every kernel.
 *
 *   LC_SIMD_AVX512  x86-64-v4 (AVX-512 F/BW/CD/DQ/VL): 512-bit vectors
 *   LC_SIMD_AVX2    x86-64-v3 (AVX2 + FMA):            256-bit vectors
 *   LC_SIMD_GENERIC the compiler's baseline ISA
 *
 * lc_simd_level() is the best level the CPU supports (and the OS enables), capped by the environment variable
 * LSTMCORE_SIMD=avx512|avx2|generic (read at the first call; any other value caps nothing), so that tests and
 * benchmarks can run every path on one machine; a level the CPU lacks is never chosen. Each kernel is compiled once per
 * level (#pragma GCC target) and dispatches on this value, so that data laid out for one width (the small GEMM's packed
 * panels) is always read by the same width. Off GCC on x86 Linux, only the generic level exists.
 */
#ifndef LSTMCORE_SIMD_H
#define LSTMCORE_SIMD_H

#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
#define LC_SIMD_X86_DISPATCH 1
#endif

enum { LC_SIMD_GENERIC = 0, LC_SIMD_AVX2 = 1, LC_SIMD_AVX512 = 2 };

static inline int lc_simd_level(void) {
#ifdef LC_SIMD_X86_DISPATCH
    static int cached = -1;
    int level = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    __builtin_cpu_init();
    int cpu = __builtin_cpu_supports("x86-64-v4") ? LC_SIMD_AVX512
              : (__builtin_cpu_supports("x86-64-v3") ? LC_SIMD_AVX2 : LC_SIMD_GENERIC);
    int cap = LC_SIMD_AVX512;
    const char *env = getenv("LSTMCORE_SIMD");
    if (env != NULL) {
        if (strcmp(env, "generic") == 0) cap = LC_SIMD_GENERIC;
        else if (strcmp(env, "avx2") == 0) cap = LC_SIMD_AVX2;
    }
    level = cpu < cap ? cpu : cap;
    __atomic_store_n(&cached, level, __ATOMIC_RELAXED);
    return level;
#else
    return LC_SIMD_GENERIC;
#endif
}

/* The name of the level in use ("avx512", "avx2" or "generic"), for tests and benchmarks. */
static inline const char *lc_simd_name(void) {
    int level = lc_simd_level();
    return level == LC_SIMD_AVX512 ? "avx512" : (level == LC_SIMD_AVX2 ? "avx2" : "generic");
}

#endif
