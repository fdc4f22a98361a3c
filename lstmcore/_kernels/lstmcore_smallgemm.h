/* A register-blocked C += A @ B for the per-step recurrence, where M (the batch) is small.
 * B is packed once per sequence into column panels (lc_pack_*), since the recurrent matrix is the same at every step.
 *
 * Why not BLAS here: one GEMM per time step on a (B x H) @ (H x 4H) problem is too small for a threaded BLAS, whose
 * thread hand-off costs more than the arithmetic (measured: OpenBLAS spent ~75 % of a B=16, H=128 run synchronising its
 * two threads). This kernel runs on the calling thread, keeps a 4 x 16 block of C in registers and streams B once per
 * block of four rows. Row-major: A is M x K (row stride lda), B is K x N (ldb), C is M x N (ldc).
 */
#ifndef LSTMCORE_SMALLGEMM_H
#define LSTMCORE_SMALLGEMM_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
#define LC_GEMM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LC_GEMM_CLONES
#endif

#define LC_DEFINE_SMALL_GEMM(NAME, T, W)                                                                          \
typedef T NAME##_vec __attribute__((vector_size(W * sizeof(T))));                                                 \
static inline __attribute__((always_inline)) NAME##_vec NAME##_load(const T *p) {                                 \
    NAME##_vec v; memcpy(&v, p, sizeof v); return v;                                                              \
}                                                                                                                 \
static inline __attribute__((always_inline)) void NAME##_add_store(T *p, NAME##_vec v) {                          \
    NAME##_vec c; memcpy(&c, p, sizeof c); c += v; memcpy(p, &c, sizeof c);                                       \
}                                                                                                                 \
/* rows i0 .. i0+MR-1, columns j0 .. j0+2W-1; with few rows, KU steps of k run on separate accumulators so that   \
 * enough independent FMA chains are in flight (a single row would otherwise wait on FMA latency). */            \
static inline __attribute__((always_inline)) void NAME##_block(const int MR, ptrdiff_t K, const T *A,            \
        ptrdiff_t lda, const T *P, T *C, ptrdiff_t ldc) {                                                         \
    const int KU = MR == 1 ? 4 : (MR == 2 ? 2 : 1);                                                               \
    NAME##_vec acc[4][4][2];                                                                                      \
    for (int u = 0; u < KU; u++)                                                                                  \
        for (int r = 0; r < MR; r++) { acc[u][r][0] = (NAME##_vec){0}; acc[u][r][1] = (NAME##_vec){0}; }          \
    ptrdiff_t k = 0;                                                                                              \
    for (; k + KU <= K; k += KU)                                                                                  \
        for (int u = 0; u < KU; u++) {                                                                            \
            NAME##_vec b0 = NAME##_load(P + (k + u) * 2 * W), b1 = NAME##_load(P + (k + u) * 2 * W + W);          \
            for (int r = 0; r < MR; r++) {                                                                        \
                T a = A[r * lda + k + u];                                                                         \
                acc[u][r][0] += a * b0; acc[u][r][1] += a * b1;                                                   \
            }                                                                                                     \
        }                                                                                                         \
    for (; k < K; k++) {                                                                                          \
        NAME##_vec b0 = NAME##_load(P + k * 2 * W), b1 = NAME##_load(P + k * 2 * W + W);                          \
        for (int r = 0; r < MR; r++) {                                                                            \
            T a = A[r * lda + k];                                                                                 \
            acc[0][r][0] += a * b0; acc[0][r][1] += a * b1;                                                       \
        }                                                                                                         \
    }                                                                                                             \
    for (int u = 1; u < KU; u++)                                                                                  \
        for (int r = 0; r < MR; r++) { acc[0][r][0] += acc[u][r][0]; acc[0][r][1] += acc[u][r][1]; }             \
    for (int r = 0; r < MR; r++) {                                                                                \
        NAME##_add_store(C + r * ldc, acc[0][r][0]); NAME##_add_store(C + r * ldc + W, acc[0][r][1]);             \
    }                                                                                                             \
}                                                                                                                 \
static inline __attribute__((always_inline)) void NAME##_rows(const int MR, ptrdiff_t N, ptrdiff_t K,            \
        const T *A, ptrdiff_t lda, const T *P, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *C, ptrdiff_t ldc) {    \
    ptrdiff_t j0 = 0;                                                                                             \
    for (; j0 + 2 * W <= N; j0 += 2 * W) NAME##_block(MR, K, A, lda, P + j0 * K, C + j0, ldc);                    \
    for (; j0 < N; j0++)                                                                                          \
        for (int r = 0; r < MR; r++) {                                                                            \
            T s = 0;                                                                                              \
            for (ptrdiff_t k = 0; k < K; k++) s += A[r * lda + k] * B[k * sk + j0 * sn];                              \
            C[r * ldc + j0] += s;                                                                                 \
        }                                                                                                         \
}                                                                                                                 \
/* Pack B (element (k, j) at B[k * sk + j * sn]: sk = ldb, sn = 1 for B itself, sk = 1, sn = ld for a transposed one) */ \
/* into full panels of 2W columns, each K x 2W contiguous; the last N % 2W columns are read from B itself. */          \
static void NAME##_pack(ptrdiff_t K, ptrdiff_t N, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *packed) {            \
    for (ptrdiff_t j0 = 0; j0 + 2 * W <= N; j0 += 2 * W)                                                          \
        for (ptrdiff_t k = 0; k < K; k++)                                                                         \
            for (ptrdiff_t c = 0; c < 2 * W; c++) packed[j0 * K + k * 2 * W + c] = B[k * sk + (j0 + c) * sn];    \
}                                                                                                                 \
LC_GEMM_CLONES static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,                 \
        const T *P, const T *B, ptrdiff_t sk, ptrdiff_t sn, T *C, ptrdiff_t ldc) {                                \
    ptrdiff_t i0 = 0;                                                                                             \
    for (; i0 + 4 <= M; i0 += 4) NAME##_rows(4, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc);              \
    switch (M - i0) {                                                                                             \
        case 3: NAME##_rows(3, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                        \
        case 2: NAME##_rows(2, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                        \
        case 1: NAME##_rows(1, N, K, A + i0 * lda, lda, P, B, sk, sn, C + i0 * ldc, ldc); break;                        \
        default: break;                                                                                           \
    }                                                                                                             \
}

/* lc_small_gemm_f(M, N, K, A, lda, packed, B, sk, sn, C, ldc): C += A @ B, after lc_small_gemm_f_pack(K, N, B, sk, sn,
 * packed) (packed holds N * K elements at most; W = 8 floats or 4 doubles). */
LC_DEFINE_SMALL_GEMM(lc_small_gemm_f, float, 8)
LC_DEFINE_SMALL_GEMM(lc_small_gemm_d, double, 4)

#endif
