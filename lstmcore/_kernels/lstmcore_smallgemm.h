/* A register-blocked C += A @ B for the per-step recurrence, where M (the batch) is small.
 * B is packed once per sequence into column panels (lc_small_gemm_*_pack), since the recurrent matrix is the same at
 * every step.
 *
 * Why not BLAS here: one GEMM per time step on a (B x H) @ (H x 4H) problem is too small for a threaded BLAS, whose
 * thread hand-off costs more than the arithmetic (measured: OpenBLAS spent ~75 % of a B=16, H=128 run synchronising its
 * two threads). This kernel runs on the calling thread, keeps a 4 x 2W block of C in registers and streams B once per
 * block of four rows. Row-major: A is M x K (row stride lda), B is K x N (ldb), C is M x N (ldc).
 *
 * One instantiation per level of lstmcore_simd.h, picked at run time by lc_simd_level() (one cached decision, used by
 * pack and gemm alike, since the packed layout depends on the vector width W):
 *   LC_SIMD_AVX512   W = 16 floats / 8 doubles (zmm)
 *   LC_SIMD_AVX2     W = 8 floats / 4 doubles (ymm)
 *   LC_SIMD_GENERIC  16-byte vectors on x86 (SSE2), 32-byte GCC generic vectors elsewhere
 */
#ifndef LSTMCORE_SMALLGEMM_H
#define LSTMCORE_SMALLGEMM_H

#include <stddef.h>
#include <string.h>

#include "lstmcore_simd.h"

/* One block kernel of SUF's panel width NV * VW columns (NV vectors of VW lanes of T per row of the panel):
 * rows i0 .. i0+MR-1; with few rows or one vector per row, KU steps of k run on separate accumulators so that about
 * eight independent FMA chains are in flight (a single row would otherwise wait on FMA latency). */
#define LC_SMALL_GEMM_BLOCK(NAME, SUF, T, VW, NV)                                                                 \
typedef T NAME##_v##SUF __attribute__((vector_size((VW) * sizeof(T))));                                          \
static inline __attribute__((always_inline)) void NAME##_block##SUF(const int MR, ptrdiff_t K, const T *A,      \
        ptrdiff_t lda, const T *P, T *C, ptrdiff_t ldc) {                                                         \
    typedef NAME##_v##SUF V;                                                                                      \
    const int KU = (8 + MR * (NV) - 1) / (MR * (NV));                                                             \
    V acc[8][4][NV];                                                                                              \
    for (int u = 0; u < KU; u++)                                                                                  \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int v = 0; v < (NV); v++) acc[u][r][v] = (V){0};                                                 \
    ptrdiff_t k = 0;                                                                                              \
    for (; k + KU <= K; k += KU)                                                                                  \
        for (int u = 0; u < KU; u++) {                                                                            \
            V b[NV];                                                                                              \
            for (int v = 0; v < (NV); v++) memcpy(&b[v], P + (k + u) * (NV) * (VW) + v * (VW), sizeof(V));       \
            for (int r = 0; r < MR; r++) {                                                                        \
                T a = A[r * lda + k + u];                                                                         \
                for (int v = 0; v < (NV); v++) acc[u][r][v] += a * b[v];                                          \
            }                                                                                                     \
        }                                                                                                         \
    for (; k < K; k++) {                                                                                          \
        V b[NV];                                                                                                  \
        for (int v = 0; v < (NV); v++) memcpy(&b[v], P + k * (NV) * (VW) + v * (VW), sizeof(V));                 \
        for (int r = 0; r < MR; r++) {                                                                            \
            T a = A[r * lda + k];                                                                                 \
            for (int v = 0; v < (NV); v++) acc[0][r][v] += a * b[v];                                              \
        }                                                                                                         \
    }                                                                                                             \
    for (int u = 1; u < KU; u++)                                                                                  \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int v = 0; v < (NV); v++) acc[0][r][v] += acc[u][r][v];                                          \
    for (int r = 0; r < MR; r++)                                                                                  \
        for (int v = 0; v < (NV); v++) {                                                                          \
            V c; memcpy(&c, C + r * ldc + v * (VW), sizeof c); c += acc[0][r][v];                                 \
            memcpy(C + r * ldc + v * (VW), &c, sizeof c);                                                         \
        }                                                                                                         \
}

/* Panels: as many of 2W columns as fit, then at most one each of W, W/2 and W/4 columns (the narrower ones only when
 * they are at least 16 bytes wide), then single columns read from B itself. The panel starting at column j0 is
 * K x width, contiguous, at packed + j0 * K, so packed holds N * K elements at most. Both NAME##_pack and NAME walk the
 * columns with NAME##_panel. */
#define LC_DEFINE_SMALL_GEMM(NAME, T, W)                                                                          \
LC_SMALL_GEMM_BLOCK(NAME, 2, T, W, 2)                                                                             \
LC_SMALL_GEMM_BLOCK(NAME, 1, T, W, 1)                                                                             \
LC_SMALL_GEMM_BLOCK(NAME, h, T, (W) / 2, 1)                                                                       \
LC_SMALL_GEMM_BLOCK(NAME, q, T, ((W) / 4 * sizeof(T) >= 16 ? (W) / 4 : (W) / 2), 1)                               \
static inline __attribute__((always_inline)) ptrdiff_t NAME##_panel(ptrdiff_t left) {                            \
    if (left >= 2 * (W)) return 2 * (W);                                                                          \
    if (left >= (W)) return (W);                                                                                  \
    if (left >= (W) / 2 && (W) / 2 * sizeof(T) >= 16) return (W) / 2;                                             \
    if (left >= (W) / 4 && (W) / 4 * sizeof(T) >= 16) return (W) / 4;                                             \
    return 0; /* a single column, read from B */                                                                  \
}                                                                                                                 \
static inline __attribute__((always_inline)) void NAME##_rows(const int MR, ptrdiff_t N, ptrdiff_t K,            \
        const T *A, ptrdiff_t lda, const T *P, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *C, ptrdiff_t ldc) {    \
    ptrdiff_t j0 = 0, w;                                                                                          \
    for (; j0 + 2 * (W) <= N; j0 += 2 * (W)) NAME##_block2(MR, K, A, lda, P + j0 * K, C + j0, ldc);               \
    for (; j0 < N; j0 += w) {                                                                                     \
        w = NAME##_panel(N - j0);                                                                                 \
        if (w == 0) {                                                                                             \
            w = 1;                                                                                                \
            for (int r = 0; r < MR; r++) {                                                                        \
                T s = 0;                                                                                          \
                for (ptrdiff_t k = 0; k < K; k++) s += A[r * lda + k] * B[k * sk + j0 * sn];                      \
                C[r * ldc + j0] += s;                                                                             \
            }                                                                                                     \
        } else if (w == (W)) NAME##_block1(MR, K, A, lda, P + j0 * K, C + j0, ldc);                               \
        else if (w == (W) / 2) NAME##_blockh(MR, K, A, lda, P + j0 * K, C + j0, ldc);                             \
        else NAME##_blockq(MR, K, A, lda, P + j0 * K, C + j0, ldc);                                               \
    }                                                                                                             \
}                                                                                                                 \
/* Pack B (element (k, j) at B[k * sk + j * sn]: sk = ldb, sn = 1 for B itself, sk = 1, sn = ld for a transposed one) */ \
static void NAME##_pack(ptrdiff_t K, ptrdiff_t N, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *packed) {            \
    ptrdiff_t w;                                                                                                  \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += w) {                                                                     \
        w = NAME##_panel(N - j0);                                                                                 \
        if (w == 0) break;                                                                                        \
        for (ptrdiff_t k = 0; k < K; k++)                                                                         \
            for (ptrdiff_t c = 0; c < w; c++) packed[j0 * K + k * w + c] = B[k * sk + (j0 + c) * sn];            \
    }                                                                                                             \
}                                                                                                                 \
static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,                                \
        const T *P, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *C, ptrdiff_t ldc) {                                \
    ptrdiff_t i0 = 0;                                                                                             \
    for (; i0 + 4 <= M; i0 += 4) NAME##_rows(4, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc);        \
    switch (M - i0) {                                                                                             \
        case 3: NAME##_rows(3, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                  \
        case 2: NAME##_rows(2, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                  \
        case 1: NAME##_rows(1, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                  \
        default: break;                                                                                           \
    }                                                                                                             \
}

/* Generic vectors as wide as the baseline ISA's: SSE2's 16 bytes on x86 (wider ones, split by GCC into 16-byte halves,
 * made the kernel spill and run at ~1.5 GFLOP/s instead of ~25), 32 bytes elsewhere (as before). */
#if defined(__x86_64__) || defined(__i386__)
#define LC_GENERIC_BYTES 16
#else
#define LC_GENERIC_BYTES 32
#endif
LC_DEFINE_SMALL_GEMM(lc_small_gemm_f_generic, float, LC_GENERIC_BYTES / 4)
LC_DEFINE_SMALL_GEMM(lc_small_gemm_d_generic, double, LC_GENERIC_BYTES / 8)

#ifdef LC_SIMD_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
LC_DEFINE_SMALL_GEMM(lc_small_gemm_f_avx2, float, 8)
LC_DEFINE_SMALL_GEMM(lc_small_gemm_d_avx2, double, 4)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
LC_DEFINE_SMALL_GEMM(lc_small_gemm_f_avx512, float, 16)
LC_DEFINE_SMALL_GEMM(lc_small_gemm_d_avx512, double, 8)
#pragma GCC pop_options
#define LC_SMALL_GEMM_DISPATCH(T, FN, ARGS)                                                                       \
    switch (lc_simd_level()) {                                                                               \
        case LC_SIMD_AVX512: lc_small_gemm_##T##_avx512##FN ARGS; break;                                          \
        case LC_SIMD_AVX2: lc_small_gemm_##T##_avx2##FN ARGS; break;                                              \
        default: lc_small_gemm_##T##_generic##FN ARGS; break;                                                     \
    }
#else
#define LC_SMALL_GEMM_DISPATCH(T, FN, ARGS) lc_small_gemm_##T##_generic##FN ARGS;
#endif

/* lc_small_gemm_f(M, N, K, A, lda, packed, B, sk, sn, C, ldc): C += A @ B, after lc_small_gemm_f_pack(K, N, B, sk, sn,
 * packed) in the same process (packed holds N * K elements at most). _d: the same for doubles. */
static inline void lc_small_gemm_f_pack(ptrdiff_t K, ptrdiff_t N, const float *B, ptrdiff_t sk, ptrdiff_t sn,
                                        float *packed) {
    LC_SMALL_GEMM_DISPATCH(f, _pack, (K, N, B, sk, sn, packed))
}
static inline void lc_small_gemm_d_pack(ptrdiff_t K, ptrdiff_t N, const double *B, ptrdiff_t sk, ptrdiff_t sn,
                                        double *packed) {
    LC_SMALL_GEMM_DISPATCH(d, _pack, (K, N, B, sk, sn, packed))
}
static inline void lc_small_gemm_f(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                   const float *P, const float *B, ptrdiff_t sk, ptrdiff_t sn, float *C, ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(f, , (M, N, K, A, lda, P, B, sk, sn, C, ldc))
}
static inline void lc_small_gemm_d(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda,
                                   const double *P, const double *B, ptrdiff_t sk, ptrdiff_t sn, double *C,
                                   ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(d, , (M, N, K, A, lda, P, B, sk, sn, C, ldc))
}
#endif
