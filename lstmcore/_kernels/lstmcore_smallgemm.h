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

/* The chunk of K of lc_small_gemm_*_at, whose scratch holds (M + N) * LC_SMALL_GEMM_KC elements. */
#ifndef LC_SMALL_GEMM_KC
#define LC_SMALL_GEMM_KC 64
#endif

/* One block kernel of SUF's panel width NV * VW columns (NV vectors of VW lanes of T per row of the panel):
 * rows i0 .. i0+MR-1; with few rows or one vector per row, KU steps of k run on separate accumulators so that about
 * eight independent FMA chains are in flight (a single row would otherwise wait on FMA latency). */
#define LC_SMALL_GEMM_BLOCK(NAME, SUF, T, VW, NV)                                                                 \
typedef T NAME##_v##SUF __attribute__((vector_size((VW) * sizeof(T))));                                          \
static inline __attribute__((always_inline)) void NAME##_block##SUF(const int MR, ptrdiff_t K, const T *A,      \
        ptrdiff_t sar, ptrdiff_t sak, const T *P, ptrdiff_t ldp, T *C, ptrdiff_t ldc, int set, const T *bias) {   \
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
            for (int v = 0; v < (NV); v++) memcpy(&b[v], P + (k + u) * ldp + v * (VW), sizeof(V));                 \
            for (int r = 0; r < MR; r++) {                                                                        \
                T a = A[r * sar + (k + u) * sak];                                                                 \
                for (int v = 0; v < (NV); v++) acc[u][r][v] += a * b[v];                                          \
            }                                                                                                     \
        }                                                                                                         \
    for (; k < K; k++) {                                                                                          \
        V b[NV];                                                                                                  \
        for (int v = 0; v < (NV); v++) memcpy(&b[v], P + k * ldp + v * (VW), sizeof(V));                         \
        for (int r = 0; r < MR; r++) {                                                                            \
            T a = A[r * sar + k * sak];                                                                           \
            for (int v = 0; v < (NV); v++) acc[0][r][v] += a * b[v];                                              \
        }                                                                                                         \
    }                                                                                                             \
    for (int u = 1; u < KU; u++)                                                                                  \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int v = 0; v < (NV); v++) acc[0][r][v] += acc[u][r][v];                                          \
    for (int r = 0; r < MR; r++)                                                                                  \
        for (int v = 0; v < (NV); v++) {                                                                          \
            V c = (V){0};                                                                                         \
            if (!set) memcpy(&c, C + r * ldc + v * (VW), sizeof c);                                               \
            else if (bias != NULL) memcpy(&c, bias + v * (VW), sizeof c);                                         \
            c += acc[0][r][v];                                                                                    \
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
/* MR rows of A (element (r, k) at A[r * sar + k * sak]) against the panel of width w at P (row k at P + k * ldp). */ \
static inline __attribute__((always_inline)) void NAME##_panel_rows(const int MR, ptrdiff_t w, ptrdiff_t K,      \
        const T *A, ptrdiff_t sar, ptrdiff_t sak, const T *P, ptrdiff_t ldp, T *C, ptrdiff_t ldc, int set,        \
        const T *bias) {                                                                                          \
    if (w == 2 * (W)) NAME##_block2(MR, K, A, sar, sak, P, ldp, C, ldc, set, bias);                               \
    else if (w == (W)) NAME##_block1(MR, K, A, sar, sak, P, ldp, C, ldc, set, bias);                              \
    else if (w == (W) / 2) NAME##_blockh(MR, K, A, sar, sak, P, ldp, C, ldc, set, bias);                          \
    else if (w > 1) NAME##_blockq(MR, K, A, sar, sak, P, ldp, C, ldc, set, bias);                                 \
    else                                                                                                          \
        for (int r = 0; r < MR; r++) {                                                                            \
            T s = 0;                                                                                              \
            for (ptrdiff_t k = 0; k < K; k++) s += A[r * sar + k * sak] * P[k * ldp];                             \
            C[r * ldc] = (set ? (bias != NULL ? bias[0] : 0) : C[r * ldc]) + s;                                  \
        }                                                                                                         \
}                                                                                                                 \
/* Every block of four rows (then the rest) of A past one panel; with ``set``, C = bias + A B (bias: one row of    \
 * the panel's columns, or NULL for none) instead of C += A B. */                                                 \
static inline __attribute__((always_inline)) void NAME##_rows(ptrdiff_t M, ptrdiff_t w, ptrdiff_t K, const T *A, \
        ptrdiff_t sar, ptrdiff_t sak, const T *P, ptrdiff_t ldp, T *C, ptrdiff_t ldc, int set, const T *bias) {   \
    ptrdiff_t i0 = 0;                                                                                             \
    for (; i0 + 4 <= M; i0 += 4) NAME##_panel_rows(4, w, K, A + i0 * sar, sar, sak, P, ldp, C + i0 * ldc, ldc, set, bias);   \
    switch (M - i0) {                                                                                             \
        case 3: NAME##_panel_rows(3, w, K, A + i0 * sar, sar, sak, P, ldp, C + i0 * ldc, ldc, set, bias); break;             \
        case 2: NAME##_panel_rows(2, w, K, A + i0 * sar, sar, sak, P, ldp, C + i0 * ldc, ldc, set, bias); break;             \
        case 1: NAME##_panel_rows(1, w, K, A + i0 * sar, sar, sak, P, ldp, C + i0 * ldc, ldc, set, bias); break;             \
        default: break;                                                                                           \
    }                                                                                                             \
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
        NAME##_rows(M, w, K, A, lda, 1, P + j0 * K, w, C + j0, ldc, 0, NULL);                                     \
    }                                                                                                             \
}                                                                                                                 \
/* C = bias + A @ B (bias: one row of N, or NULL for C = A @ B), in one pass over C: the input projection writes    \
 * the bias with the product. */                                                                                  \
static void NAME##_set(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda, const T *P,             \
                       const T *bias, T *C, ptrdiff_t ldc) {                                                      \
    ptrdiff_t w;                                                                                                  \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += w) {                                                                     \
        w = NAME##_panel(N - j0);                                                                                 \
        NAME##_rows(M, w, K, A, lda, 1, P + j0 * K, w, C + j0, ldc, 1, bias != NULL ? bias + j0 : NULL);          \
    }                                                                                                             \
}                                                                                                                 \
/* C (M x N) += A^T B with A (K x M, row stride lda) and B (K x N, ldb) as they lie: the gradient of a weight over   \
 * all steps, whose K (the steps times the batch) is long and whose rows of A and B lie far apart (a row stride of a \
 * power of two maps them all to one cache set). So K is cut into chunks of LC_SMALL_GEMM_KC rows, each copied to    \
 * ``scratch`` ((M + N) * LC_SMALL_GEMM_KC elements): A's as groups of four columns, k-major, B's as panels; then   \
 * every group of A passes each panel, which stays in L1. */                                                       \
static void NAME##_at(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda, const T *B, ptrdiff_t ldb, \
                      T *C, ptrdiff_t ldc, T *scratch) {                                                          \
    T *Ap = scratch, *Bp = scratch + M * LC_SMALL_GEMM_KC;                                                        \
    ptrdiff_t w, g, k, r, j0;                                                                                     \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += LC_SMALL_GEMM_KC) {                                                      \
        ptrdiff_t kc = K - k0 < LC_SMALL_GEMM_KC ? K - k0 : LC_SMALL_GEMM_KC;                                     \
        const T *Ak = A + k0 * lda, *Bk = B + k0 * ldb;                                                           \
        for (k = 0; k < kc; k++) {                       /* group g: element (r, k) at Ap[g kc + k mr + r] */     \
            for (g = 0; g + 4 <= M; g += 4) memcpy(Ap + g * kc + k * 4, Ak + k * lda + g, 4 * sizeof(T));         \
            for (r = g; r < M; r++) Ap[g * kc + k * (M - g) + r - g] = Ak[k * lda + r];                           \
        }                                                                                                         \
        for (j0 = 0; j0 < N; j0 += w) {                  /* panel j0: element (k, c) at Bp[j0 kc + k w + c] */    \
            w = NAME##_panel(N - j0);                                                                             \
            if (w == 2 * (W))                                                                                     \
                for (k = 0; k < kc; k++) memcpy(Bp + j0 * kc + k * w, Bk + k * ldb + j0, 2 * (W) * sizeof(T));    \
            else                                                                                                  \
                for (k = 0; k < kc; k++)                                                                          \
                    for (ptrdiff_t c = 0; c < w; c++) Bp[j0 * kc + k * w + c] = Bk[k * ldb + j0 + c];             \
        }                                                                                                         \
        for (j0 = 0; j0 < N; j0 += w) {                                                                           \
            w = NAME##_panel(N - j0);                                                                             \
            for (g = 0; g + 4 <= M; g += 4)                                                                       \
                NAME##_panel_rows(4, w, kc, Ap + g * kc, 1, 4, Bp + j0 * kc, w, C + g * ldc + j0, ldc, 0, NULL);           \
            switch (M - g) {                                                                                      \
                case 3: NAME##_panel_rows(3, w, kc, Ap + g * kc, 1, 3, Bp + j0 * kc, w, C + g * ldc + j0, ldc, 0, NULL); break; \
                case 2: NAME##_panel_rows(2, w, kc, Ap + g * kc, 1, 2, Bp + j0 * kc, w, C + g * ldc + j0, ldc, 0, NULL); break; \
                case 1: NAME##_panel_rows(1, w, kc, Ap + g * kc, 1, 1, Bp + j0 * kc, w, C + g * ldc + j0, ldc, 0, NULL); break; \
                default: break;                                                                                   \
            }                                                                                                     \
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
/* lc_small_gemm_f_set(M, N, K, A, lda, packed, bias, C, ldc): C = bias + A @ B (bias NULL: C = A @ B). _d: doubles. */
static inline void lc_small_gemm_f_set(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                       const float *P, const float *bias, float *C, ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(f, _set, (M, N, K, A, lda, P, bias, C, ldc))
}
static inline void lc_small_gemm_d_set(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda,
                                       const double *P, const double *bias, double *C, ptrdiff_t ldc) {
    LC_SMALL_GEMM_DISPATCH(d, _set, (M, N, K, A, lda, P, bias, C, ldc))
}
/* lc_small_gemm_f_at(M, N, K, A, lda, B, ldb, C, ldc, scratch): C (M x N) += A^T B, A (K x M) and B (K x N) row-major,
 * scratch of (M + N) * LC_SMALL_GEMM_KC elements. _d: doubles. */
static inline void lc_small_gemm_f_at(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                      const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float *scratch) {
    LC_SMALL_GEMM_DISPATCH(f, _at, (M, N, K, A, lda, B, ldb, C, ldc, scratch))
}
static inline void lc_small_gemm_d_at(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda,
                                      const double *B, ptrdiff_t ldb, double *C, ptrdiff_t ldc, double *scratch) {
    LC_SMALL_GEMM_DISPATCH(d, _at, (M, N, K, A, lda, B, ldb, C, ldc, scratch))
}
#endif
