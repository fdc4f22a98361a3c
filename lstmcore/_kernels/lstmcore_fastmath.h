/* Vectorisable exp, sigmoid and tanh for the element-wise passes of the kernels.
 *
 * libm's expf/tanhf are scalar calls that keep a loop from vectorising; these are branch-free polynomials (Cephes'
 * coefficients, range reduction by the nearest power of two) that GCC and Clang vectorise. Accuracy: a few ulp over
 * the whole range, saturating cleanly (sigmoid -> 0 or 1, tanh -> +-1, no NaN for any finite input).
 * The block functions are compiled for each level of lstmcore_simd.h (AVX-512, AVX2+FMA, the baseline ISA) and
 * dispatch on lc_simd_level().
 */
#ifndef LSTMCORE_FASTMATH_H
#define LSTMCORE_FASTMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lstmcore_simd.h"

static inline float lc_expf(float x) {
    /* clamp so that 2^n stays a normal float */
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to the nearest integer */
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * z + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double lc_exp(double x) {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = x * 1.4426950408889634073599 + magic;
    double n = t - magic;
    double r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    /* Cephes exp: e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) */
    double z = r * r;
    double P = ((1.26177193074810590878E-4 * z + 3.02994407707441961300E-2) * z + 9.99999999999999999910E-1) * r;
    double Q = ((3.00198505138664455042E-6 * z + 2.52448340349684104192E-3) * z + 2.27265548208155028766E-1) * z
               + 2.00000000000000000009E0;
    double e = 1.0 + 2.0 * P / (Q - P);
    /* t's bits minus magic's are n itself (same exponent, |n| <= 1023): an integer subtraction that vectorises without
     * AVX-512DQ's double -> int64 conversion, which (int64_t)n needed (3.3x faster with AVX2, same results) */
    int64_t t_bits, magic_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    int64_t bits = (t_bits - magic_bits + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/* Natural log of a positive normal number (Cephes' logf/log: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log(1 + (m - 1)) by a polynomial (float) or a rational function (double)); the exponent and mantissa are taken from
 * the bits, so the loop vectorises. */
static inline float lc_logf(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    bits = (bits & 0x007fffff) | 0x3f000000; /* m in [0.5, 1) */
    float m;
    memcpy(&m, &bits, sizeof m);
    int small = m < 0.707106781186547524f;
    float fe = (float)(e - small);
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float y = 7.0376836292E-2f;
    y = y * m - 1.1514610310E-1f;
    y = y * m + 1.1676998740E-1f;
    y = y * m - 1.2420140846E-1f;
    y = y * m + 1.4249322787E-1f;
    y = y * m - 1.6668057665E-1f;
    y = y * m + 2.0000714765E-1f;
    y = y * m - 2.4999993993E-1f;
    y = y * m + 3.3333331174E-1f;
    y = y * m * z;
    y += -2.12194440E-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

static inline double lc_log(double x) {
    int64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t e = ((bits >> 52) & 0x7ff) - 1022;
    bits = (bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL; /* m in [0.5, 1) */
    double m;
    memcpy(&m, &bits, sizeof m);
    int64_t small = m < 0.70710678118654752440;
    double fe = (double)(e - small);
    m = small ? m + m - 1.0 : m - 1.0;
    double z = m * m;
    double P = ((((1.01875663804580931796E-4 * m + 4.97494994976747001425E-1) * m + 4.70579119878881725854E0) * m
                 + 1.44989225341610930846E1) * m + 1.79368678507819816313E1) * m + 7.70838733755885391666E0;
    double Q = ((((m + 1.12873587189167450590E1) * m + 4.52279145837532221105E1) * m + 8.29875266912776603211E1) * m
                + 7.11544750618563894466E1) * m + 2.31251620126765340583E1;
    double y = m * (z * P / Q) - 2.121944400546905827679E-4 * fe - 0.5 * z;
    return m + y + 0.693359375 * fe;
}

/* log(sigmoid(x)) = min(x, 0) - log(1 + u) with u = e^{-|x|}, at log1p's accuracy for small u (u / ((1 + u) - 1)
 * corrects the rounding of 1 + u); *derivative = sigmoid(-x) = (x < 0 ? 1 : u) / (1 + u), from the same u */
static inline float lc_log_sigmoidf(float x, float *derivative) {
    float u = lc_expf(x < 0 ? x : -x);
    float w = 1.0f + u;
    float log1p_u = w == 1.0f ? u : lc_logf(w) * (u / (w - 1.0f));
    *derivative = (x < 0 ? 1.0f : u) / w;
    return (x < 0 ? x : 0.0f) - log1p_u;
}

static inline double lc_log_sigmoid(double x, double *derivative) {
    double u = lc_exp(x < 0 ? x : -x);
    double w = 1.0 + u;
    double log1p_u = w == 1.0 ? u : lc_log(w) * (u / (w - 1.0));
    *derivative = (x < 0 ? 1.0 : u) / w;
    return (x < 0 ? x : 0.0) - log1p_u;
}

static inline float lc_sigmoidf(float x) { return 1.0f / (1.0f + lc_expf(-x)); }
static inline double lc_sigmoid(double x) { return 1.0 / (1.0 + lc_exp(-x)); }

static inline float lc_tanhf(float x) {
    float a = x < 0 ? -x : x;
    /* |x| < 0.625: odd polynomial (no cancellation near 0); otherwise 1 - 2 / (e^{2|x|} + 1) */
    float z = x * x;
    float small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z
                    + 1.33314422036E-1f) * z - 3.33332819422E-1f) * z * x + x;
    float big = 1.0f - 2.0f / (lc_expf(2.0f * a) + 1.0f);
    big = x < 0 ? -big : big;
    return a < 0.625f ? small : big;
}

static inline double lc_tanh(double x) {
    double a = x < 0 ? -x : x;
    double z = x * x;
    double P = (-9.64399179425052238628E-1 * z - 9.92877231001918586564E1) * z - 1.61468768441708447952E3;
    double Q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z + 4.84406305325125486048E3;
    double small = x + x * z * P / Q;
    double big = 1.0 - 2.0 / (lc_exp(2.0 * a) + 1.0);
    big = x < 0 ? -big : big;
    return a < 0.625 ? small : big;
}

#define LC_DEFINE_ACTIVATION_BLOCKS(SUF)                                                                          \
static void lc_sigmoid_block_f_##SUF(float *v, ptrdiff_t n) {                                                     \
    for (ptrdiff_t j = 0; j < n; j++) v[j] = lc_sigmoidf(v[j]);                                                   \
}                                                                                                                 \
static void lc_sigmoid_block_d_##SUF(double *v, ptrdiff_t n) {                                                    \
    for (ptrdiff_t j = 0; j < n; j++) v[j] = lc_sigmoid(v[j]);                                                    \
}                                                                                                                 \
static void lc_tanh_block_f_##SUF(float *v, ptrdiff_t n) {                                                        \
    for (ptrdiff_t j = 0; j < n; j++) v[j] = lc_tanhf(v[j]);                                                      \
}                                                                                                                 \
static void lc_tanh_block_d_##SUF(double *v, ptrdiff_t n) {                                                       \
    for (ptrdiff_t j = 0; j < n; j++) v[j] = lc_tanh(v[j]);                                                       \
}

LC_DEFINE_ACTIVATION_BLOCKS(generic)
#ifdef LC_SIMD_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
LC_DEFINE_ACTIVATION_BLOCKS(avx2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
LC_DEFINE_ACTIVATION_BLOCKS(avx512)
#pragma GCC pop_options
#define LC_ACTIVATION_DISPATCH(FN, v, n)                                                                          \
    switch (lc_simd_level()) {                                                                                    \
        case LC_SIMD_AVX512: FN##_avx512(v, n); break;                                                            \
        case LC_SIMD_AVX2: FN##_avx2(v, n); break;                                                                \
        default: FN##_generic(v, n); break;                                                                       \
    }
#else
#define LC_ACTIVATION_DISPATCH(FN, v, n) FN##_generic(v, n);
#endif

/* v[j] = sigmoid(v[j]) or tanh(v[j]) for j < n, on the vector path of lc_simd_level() */
static inline void lc_sigmoid_block_f(float *v, ptrdiff_t n) { LC_ACTIVATION_DISPATCH(lc_sigmoid_block_f, v, n) }
static inline void lc_sigmoid_block_d(double *v, ptrdiff_t n) { LC_ACTIVATION_DISPATCH(lc_sigmoid_block_d, v, n) }
static inline void lc_tanh_block_f(float *v, ptrdiff_t n) { LC_ACTIVATION_DISPATCH(lc_tanh_block_f, v, n) }
static inline void lc_tanh_block_d(double *v, ptrdiff_t n) { LC_ACTIVATION_DISPATCH(lc_tanh_block_d, v, n) }

#endif
