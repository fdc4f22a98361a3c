"""BLAS shim over ``scipy.linalg.cython_blas`` (row-major operands), and its Python-callable twins for tests."""
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv, saxpy, daxpy


cdef void gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands, never copy.
    cdef char ta_c = <char> ta
    cdef char tb_c = <char> tb
    if floating is float:
        sgemm(&tb_c, &ta_c, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb_c, &ta_c, &n, &m, &k, &alpha, <double *> B, &ldb, <double *> A, &lda, &beta, C, &ldc)


cdef void gemv(BLAS_Trans ta, int m, int n, floating alpha, const floating *A, int lda,
               const floating *x, int incx, floating beta, floating *y, int incy) noexcept nogil:
    # A row-major m x n is, to BLAS, a column-major n x m matrix: transpose the flag and swap m and n.
    cdef char ta_c = b't' if ta == NoTrans else b'n'
    if floating is float:
        sgemv(&ta_c, &n, &m, &alpha, <float *> A, &lda, <float *> x, &incx, &beta, y, &incy)
    else:
        dgemv(&ta_c, &n, &m, &alpha, <double *> A, &lda, <double *> x, &incx, &beta, y, &incy)


cdef void axpy(int n, floating alpha, const floating *x, int incx, floating *y, int incy) noexcept nogil:
    if floating is float:
        saxpy(&n, &alpha, <float *> x, &incx, y, &incy)
    else:
        daxpy(&n, &alpha, <double *> x, &incx, y, &incy)


cdef inline BLAS_Trans _trans(bint transpose) noexcept nogil:
    return Trans if transpose else NoTrans


def gemm_py(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] A,
            const floating[:, ::1] B, double beta, floating[:, ::1] C):
    """Python twin of ``gemm`` for tests: ``C = alpha * op(A) @ op(B) + beta * C`` in place (row-major arrays)."""
    cdef int m = C.shape[0], n = C.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    if (A.shape[1] if trans_a else A.shape[0]) != m or (B.shape[0] if trans_b else B.shape[1]) != n \
            or (B.shape[1] if trans_b else B.shape[0]) != k:
        raise ValueError("gemm_py: operand shapes do not agree")
    with nogil:
        gemm(_trans(trans_a), _trans(trans_b), m, n, k, <floating> alpha, &A[0, 0], <int> A.shape[1],
             &B[0, 0], <int> B.shape[1], <floating> beta, &C[0, 0], n)


def gemv_py(bint trans_a, double alpha, const floating[:, ::1] A, const floating[::1] x,
            double beta, floating[::1] y):
    """Python twin of ``gemv`` for tests: ``y = alpha * op(A) @ x + beta * y`` in place."""
    cdef int m = A.shape[0], n = A.shape[1]
    if (x.shape[0] != (m if trans_a else n)) or (y.shape[0] != (n if trans_a else m)):
        raise ValueError("gemv_py: operand shapes do not agree")
    with nogil:
        gemv(_trans(trans_a), m, n, <floating> alpha, &A[0, 0], n, &x[0], 1, <floating> beta, &y[0], 1)


def axpy_py(double alpha, const floating[::1] x, floating[::1] y):
    """Python twin of ``axpy`` for tests: ``y += alpha * x`` in place."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("axpy_py: lengths differ")
    with nogil:
        axpy(<int> x.shape[0], <floating> alpha, &x[0], 1, &y[0], 1)


def simd_path():
    """The vector path of the hand-written kernels (``small_gemm`` and the fast activations) in this process:
    'avx512', 'avx2' or 'generic' (the best the CPU has, capped by the environment variable ``LSTMCORE_SIMD``, read
    once, at the first use)."""
    return lc_simd_name().decode()


def small_gemm_py(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C, bint b_transposed=False,
                  const floating[::1] bias=None, bint overwrite=False):
    """Python twin of ``small_gemm`` for tests: ``C += A @ B`` (or ``A @ B.T`` with ``b_transposed``) in place; with
    ``overwrite``, ``small_gemm_set``: ``C = bias + A @ B`` (``bias`` None: ``C = A @ B``)."""
    cdef Py_ssize_t M = A.shape[0], K = A.shape[1]
    cdef Py_ssize_t N = B.shape[0] if b_transposed else B.shape[1]
    if (B.shape[1] if b_transposed else B.shape[0]) != K or C.shape[0] != M or C.shape[1] != N or \
            (bias is not None and bias.shape[0] != N):
        raise ValueError("small_gemm_py: operand shapes do not agree")
    cdef Py_ssize_t sk = 1 if b_transposed else N
    cdef Py_ssize_t sn = K if b_transposed else 1
    import numpy as np
    cdef floating[::1] packed = np.empty(max(K * N, 1), dtype=np.float32 if floating is float else np.float64)
    if M == 0 or N == 0 or K == 0:
        return
    with nogil:
        pack_panels(K, 0, K, N, &B[0, 0], sk, sn, &packed[0])
        if overwrite:
            small_gemm_set(M, N, K, &A[0, 0], K, &packed[0], &bias[0] if bias is not None else NULL, &C[0, 0], N)
        else:
            small_gemm(M, N, K, &A[0, 0], K, &packed[0], &C[0, 0], N)


def small_gemm_at_py(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C):
    """Python twin of ``small_gemm_at`` for tests: ``C += A.T @ B`` in place."""
    cdef Py_ssize_t K = A.shape[0], M = A.shape[1], N = B.shape[1]
    if B.shape[0] != K or C.shape[0] != M or C.shape[1] != N:
        raise ValueError("small_gemm_at_py: operand shapes do not agree")
    import numpy as np
    cdef floating[::1] scratch = np.empty(max(small_gemm_at_scratch(M, N), 1),
                                          dtype=np.float32 if floating is float else np.float64)
    if M == 0 or N == 0 or K == 0:
        return
    with nogil:
        small_gemm_at(M, N, K, &A[0, 0], M, &B[0, 0], N, &C[0, 0], N, &scratch[0])
