# One BLAS shim over scipy.linalg.cython_blas for the fused float/double type.
#
# Every function takes ROW-MAJOR operands with explicit leading dimensions (the row stride, in elements).
# BLAS itself is column-major; the swap of operands that makes the two agree happens here and only here.
from cython cimport floating

cdef enum BLAS_Trans:
    NoTrans = 110  # ord('n')
    Trans = 116    # ord('t')

# C (m x n) = alpha * op(A) (m x k) @ op(B) (k x n) + beta * C
cdef void gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil

# y = alpha * op(A) @ x + beta * y, A is m x n
cdef void gemv(BLAS_Trans ta, int m, int n, floating alpha, const floating *A, int lda,
               const floating *x, int incx, floating beta, floating *y, int incy) noexcept nogil

# y += alpha * x
cdef void axpy(int n, floating alpha, const floating *x, int incx, floating *y, int incy) noexcept nogil


cdef extern from "lstmcore_smallgemm.h" nogil:
    void lc_small_gemm_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                         const float *packed, float *C, Py_ssize_t ldc)
    void lc_small_gemm_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda,
                         const double *packed, double *C, Py_ssize_t ldc)
    void lc_small_gemm_f_pack(Py_ssize_t K, Py_ssize_t k0, Py_ssize_t Kp, Py_ssize_t N, const float *B, Py_ssize_t sk,
                              Py_ssize_t sn, float *packed)
    void lc_small_gemm_d_pack(Py_ssize_t K, Py_ssize_t k0, Py_ssize_t Kp, Py_ssize_t N, const double *B,
                              Py_ssize_t sk, Py_ssize_t sn, double *packed)
    void lc_small_gemm_f_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                             const float *packed, const float *bias, float *C, Py_ssize_t ldc)
    void lc_small_gemm_d_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda,
                             const double *packed, const double *bias, double *C, Py_ssize_t ldc)
    void lc_small_gemm_f_at(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *B,
                            Py_ssize_t ldb, float *C, Py_ssize_t ldc, float *scratch)
    void lc_small_gemm_d_at(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda, const double *B,
                            Py_ssize_t ldb, double *C, Py_ssize_t ldc, double *scratch)
    Py_ssize_t LC_SMALL_GEMM_KC
    const char *lc_simd_name()


cdef inline void pack_panels(Py_ssize_t K, Py_ssize_t k0, Py_ssize_t Kp, Py_ssize_t N, const floating *B,
                             Py_ssize_t sk, Py_ssize_t sn, floating *packed) noexcept nogil:
    """Pack rows k0 .. k0+Kp-1 of a K x N operand of ``small_gemm`` (its element (k0 + k, j) is B[k*sk + j*sn]) into
    ``packed`` (K*N elements); calls for disjoint row ranges fill one operand from several matrices."""
    if floating is float:
        lc_small_gemm_f_pack(K, k0, Kp, N, B, sk, sn, packed)
    else:
        lc_small_gemm_d_pack(K, k0, Kp, N, B, sk, sn, packed)


cdef inline void small_gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                            const floating *packed, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C (M x N) += A (M x K) @ B, on the calling thread, with B packed by ``pack_panels``: the sequence driver's
    per-step recurrence, each thread on its own columns."""
    if floating is float:
        lc_small_gemm_f(M, N, K, A, lda, packed, C, ldc)
    else:
        lc_small_gemm_d(M, N, K, A, lda, packed, C, ldc)


cdef inline void small_gemm_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                                const floating *packed, const floating *bias, floating *C,
                                Py_ssize_t ldc) noexcept nogil:
    """C (M x N) = bias + A @ B (``bias`` one row of N; NULL: C = A @ B), B packed as for ``small_gemm``: one pass
    over C where a fill and ``small_gemm`` would make two."""
    if floating is float:
        lc_small_gemm_f_set(M, N, K, A, lda, packed, bias, C, ldc)
    else:
        lc_small_gemm_d_set(M, N, K, A, lda, packed, bias, C, ldc)


cdef inline void small_gemm_at(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                               const floating *B, Py_ssize_t ldb, floating *C, Py_ssize_t ldc,
                               floating *scratch) noexcept nogil:
    """C (M x N) += A^T B with A (K x M) and B (K x N) row-major as they lie, on the calling thread; ``scratch`` holds
    ``small_gemm_at_scratch(M, N)`` elements: the sequence driver's weight gradients over all steps (K = T * B)."""
    if floating is float:
        lc_small_gemm_f_at(M, N, K, A, lda, B, ldb, C, ldc, scratch)
    else:
        lc_small_gemm_d_at(M, N, K, A, lda, B, ldb, C, ldc, scratch)


cdef inline Py_ssize_t small_gemm_at_scratch(Py_ssize_t M, Py_ssize_t N) noexcept nogil:
    return (M + N) * LC_SMALL_GEMM_KC
