/* A register-blocked C += A @ B for the per-step recurrence, where M (the batch) is small.
 * B is packed once per call into column panels (lc_small_gemm_*_pack), since the recurrent matrix is the same at
 * every step; the sequence driver gives each thread of its team the panels of its own columns.
 *
 * Why not BLAS here: one GEMM per time step on a (B x H) @ (H x 4H) problem is too small for a threaded BLAS, whose
 * thread hand-off costs more than the arithmetic (measured: OpenBLAS spent ~75 % of a B=16, H=128 run synchronising its
 * two threads). This kernel runs on the calling thread, keeps a 4 x 2W block of C in registers and streams every block
 * of four rows of A past one panel of B at a time. Row-major: A is M x K (row stride lda), B is K x N (ldb), C is M x N (ldc).
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
 * they are at least 16 bytes wide), then single columns. The panel starting at column j0 is K x width, contiguous, at
 * packed + j0 * K, so packed holds exactly N * K elements. Both NAME##_pack and NAME walk the columns with
 * NAME##_panel. */
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
    return 1;                                                                                                     \
}                                                                                                                 \
/* MR rows of A against the panel of width w at P (K x w). */                                                    \
static inline __attribute__((always_inline)) void NAME##_panel_rows(const int MR, ptrdiff_t w, ptrdiff_t K,      \
        const T *A, ptrdiff_t lda, const T *P, T *C, ptrdiff_t ldc) {                                             \
    if (w == 2 * (W)) NAME##_block2(MR, K, A, lda, P, C, ldc);                                                    \
    else if (w == (W)) NAME##_block1(MR, K, A, lda, P, C, ldc);                                                   \
    else if (w == (W) / 2) NAME##_blockh(MR, K, A, lda, P, C, ldc);                                               \
    else if (w > 1) NAME##_blockq(MR, K, A, lda, P, C, ldc);                                                      \
    else                                                                                                          \
        for (int r = 0; r < MR; r++) {                                                                            \
            T s = 0;                                                                                              \
            for (ptrdiff_t k = 0; k < K; k++) s += A[r * lda + k] * P[k];                                         \
            C[r * ldc] += s;                                                                                      \
        }                                                                                                         \
}                                                                                                                 \
/* Pack rows k0 .. k0+Kp-1 of a K x N operand into its panels, from B (element (k, j) at B[k * sk + j * sn]: sk = ldb, \
 * sn = 1 for B itself; sk = 1, sn = ld for a transposed one). Calls for disjoint row ranges fill one operand from   \
 * several matrices. */                                                                                           \
static void NAME##_pack(ptrdiff_t K, ptrdiff_t k0, ptrdiff_t Kp, ptrdiff_t N, const T *B, ptrdiff_t sk,           \
                        ptrdiff_t sn, T *packed) {                                                                \
    ptrdiff_t w;                                                                                                  \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += w) {                                                                     \
        w = NAME##_panel(N - j0);                                                                                 \
        for (ptrdiff_t k = 0; k < Kp; k++)                                                                        \
            for (ptrdiff_t c = 0; c < w; c++) packed[j0 * K + (k0 + k) * w + c] = B[k * sk + (j0 + c) * sn];     \
    }                                                                                                             \
}                                                                                                                 \
/* Panel by panel, so that one panel stays in cache while every block of rows streams past it. */                \
static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda, const T *P, T *C,             \
                 ptrdiff_t ldc) {                                                                                 \
    ptrdiff_t w;                                                                                                  \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += w) {                                                                     \
        w = NAME##_panel(N - j0);                                                                                 \
        const T *Pj = P + j0 * K;                                                                                 \
        ptrdiff_t i0 = 0;                                                                                         \
        for (; i0 + 4 <= M; i0 += 4) NAME##_panel_rows(4, w, K, A + i0 * lda, lda, Pj, C + i0 * ldc + j0, ldc);   \
        switch (M - i0) {                                                                                         \
            case 3: NAME##_panel_rows(3, w, K, A + i0 * lda, lda, Pj, C + i0 * ldc + j0, ldc); break;             \
            case 2: NAME##_panel_rows(2, w, K, A + i0 * lda, lda, Pj, C + i0 * ldc + j0, ldc); break;             \
            case 1: NAME##_panel_rows(1, w, K, A + i0 * lda, lda, Pj, C + i0 * ldc + j0, ldc); break;             \
            default: break;                                                                                       \
        }                                                                                                         \
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

/* lc_small_gemm_f(M, N, K, A, lda, packed, C, ldc): C += A @ B, with B (K x N) packed by lc_small_gemm_f_pack(K, k0,
 * Kp, N, B, sk, sn, packed) calls covering its rows, in the same process (packed holds N * K elements). _d: doubles. */
static inline void lc_small_gemm_f_pack(ptrdiff_t K, ptrdiff_t k0, ptrdiff_t Kp, ptrdiff_t N, const float *B,
                                        ptrdiff_t sk, ptrdiff_t sn, float *packed) {
    LC_SMALL_GEMM_DISPATCH(f, _pack, (K, k0, Kp, N, B, sk, sn, packed))
}
static inline void lc_small_gemm_d_pack(ptrdiff_t K, ptrdiff_t k0, ptrdiff_t Kp, ptrdiff_t N, const double *B,
                                        ptrdiff_t sk, ptrdiff_t sn, double *packed) {
    LC_SMALL_GEMM_DISPATCH(d, _pack, (K, k0, Kp, N, B, sk, sn, packed))
}
static inline void lc_small_gemm_f(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                   const float *P, float *C, ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(f, , (M, N, K, A, lda, P, C, ldc))
}
static inline void lc_small_gemm_d(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda,
                                   const double *P, double *C, ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(d, , (M, N, K, A, lda, P, C, ldc))
}
#endif
