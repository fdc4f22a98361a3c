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
