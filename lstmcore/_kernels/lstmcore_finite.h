/* Whether n floats or doubles hold no NaN or Inf, in one vectorised pass:
 *   lc_all_finite_f(p, n), lc_all_finite_d(p, n)
 * x * 0 is 0 for a finite x and NaN for NaN or +-Inf, and a sum that met a NaN stays NaN, so the sum of x * 0 over
 * the array is 0 exactly when every entry is finite. GCC's generic 32-byte vectors keep the loop vectorised at the
 * baseline ISA (two SSE2 operations each). */
#ifndef LSTMCORE_FINITE_H
#define LSTMCORE_FINITE_H

#include <stddef.h>
#include <string.h>

#define LC_DEFINE_ALL_FINITE(NAME, T)                                                                             \
static int NAME(const T *p, ptrdiff_t n) {                                                                        \
    typedef T V __attribute__((vector_size(32)));                                                                 \
    enum { W = 32 / sizeof(T) };                                                                                  \
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                                     \
    ptrdiff_t i = 0;                                                                                              \
    for (; i + 4 * W <= n; i += 4 * W) {                                                                          \
        V x0, x1, x2, x3;                                                                                         \
        memcpy(&x0, p + i, sizeof x0);                                                                            \
        memcpy(&x1, p + i + W, sizeof x1);                                                                        \
        memcpy(&x2, p + i + 2 * W, sizeof x2);                                                                    \
        memcpy(&x3, p + i + 3 * W, sizeof x3);                                                                    \
        a0 += x0 * 0;                                                                                             \
        a1 += x1 * 0;                                                                                             \
        a2 += x2 * 0;                                                                                             \
        a3 += x3 * 0;                                                                                             \
    }                                                                                                             \
    a0 += a1 + a2 + a3;                                                                                           \
    T sum = 0;                                                                                                    \
    for (int k = 0; k < W; k++) sum += a0[k];                                                                     \
    for (; i < n; i++) sum += p[i] * 0;                                                                           \
    return sum == 0;                                                                                              \
}

LC_DEFINE_ALL_FINITE(lc_all_finite_f, float)
LC_DEFINE_ALL_FINITE(lc_all_finite_d, double)

#endif
