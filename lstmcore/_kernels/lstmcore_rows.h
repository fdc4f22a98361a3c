/* Element-wise row passes of the layer-norm LSTM (_lnlstm.pyx) and of sLSTM (_slstm.pyx), compiled for each vector
 * path of lstmcore_simd.h (AVX-512, AVX2+FMA, the baseline ISA) as the activations are, and dispatched on
 * lc_simd_level(). Each pass is one fused loop over a row's units (the exponentials of lstmcore_fastmath.h inline),
 * so it runs at the vector width of the path instead of the baseline ISA that the Cython steps are compiled for.
 *
 *   lc_lnlstm_forward_{f,d}(...), lc_lnlstm_backward_{f,d}(...)   one row of the layer-norm LSTM's step (_lnlstm.pyx)
 *   lc_slstm_forward_{f,d}(...), lc_slstm_backward_{f,d}(...)     one row of sLSTM's step (_slstm.pyx)
 * A norm's mean and variance take one pass, shifted by the row's first value.
 *
 * The rows' arrays never overlap (restrict: the compiler needs no run-time alias checks to vectorise).
 * Sums run over LC_ROW_LANES independent accumulators combined in a fixed order: the compiler vectorises them (one
 * accumulator is a serial chain it may not reorder) and a row's result does not depend on the thread computing it.
 */
#ifndef LSTMCORE_ROWS_H
#define LSTMCORE_ROWS_H

#include <stddef.h>

#include "lstmcore_fastmath.h"

#define LC_ROW_LANES 32

#define LC_EXP(x) _Generic((x), float: lc_expf, double: lc_exp)(x)
#define LC_LOG_SIGMOID(x, derivative) _Generic((x), float: lc_log_sigmoidf, double: lc_log_sigmoid)(x, derivative)
#define LC_SIGMOID(x) _Generic((x), float: lc_sigmoidf, double: lc_sigmoid)(x)
#define LC_TANH(x) _Generic((x), float: lc_tanhf, double: lc_tanh)(x)
#define LC_SQRT(x) _Generic((x), float: __builtin_sqrtf, double: __builtin_sqrt)(x)

#define LC_DEFINE_ROWS(T, TS, SUF)                                                                                    \
/* one pass over v - v[0] (shifted: no cancellation unless v[0] lies many deviations off the mean) */           \
static void lc_norm_stats_##TS##_##SUF(const T *restrict v, ptrdiff_t n, T eps, T *mean, T *rstd) {                \
    T acc[LC_ROW_LANES] = {0}, acc_sq[LC_ROW_LANES] = {0}, total = 0, total_sq = 0, shift = v[0], u;              \
    ptrdiff_t j, k, m = n - n % LC_ROW_LANES;                                                                      \
    for (j = 0; j < m; j += LC_ROW_LANES)                                                                          \
        for (k = 0; k < LC_ROW_LANES; k++) {                                                                       \
            u = v[j + k] - shift;                                                                                  \
            acc[k] += u;                                                                                           \
            acc_sq[k] += u * u;                                                                                    \
        }                                                                                                          \
    for (k = 0; k < LC_ROW_LANES; k++) { total += acc[k]; total_sq += acc_sq[k]; }                                 \
    for (j = m; j < n; j++) { u = v[j] - shift; total += u; total_sq += u * u; }                                   \
    T mu = total / (T)n, var = total_sq / (T)n - mu * mu;                                                          \
    *mean = shift + mu;                                                                                            \
    *rstd = (T)1 / LC_SQRT((var > 0 ? var : 0) + eps);                                                             \
}                                                                                                                  \
/* the layer norm's backward for out = gain * vhat + bias, vhat = (v - mean) * rstd recomputed from v: d_in =         \
 * dE/dv = rstd * (g - mean(g) - vhat * mean(g * vhat)), g = d_out * gain; in place when d_in is NULL (separate       \
 * loops: with one loop for both, the run-time overlap check sends the in-place call to the scalar fallback) */       \
static void lc_norm_backward_##TS##_##SUF(const T *restrict v, T mean, T rstd, T *restrict d_out,                     \
                                          const T *restrict gain, T *restrict d_in, ptrdiff_t n) {                    \
    T acc[LC_ROW_LANES] = {0}, acc_v[LC_ROW_LANES] = {0}, sum_g = 0, sum_gv = 0, g;                                   \
    ptrdiff_t j, k, m = n - n % LC_ROW_LANES;                                                                         \
    for (j = 0; j < m; j += LC_ROW_LANES)                                                                             \
        for (k = 0; k < LC_ROW_LANES; k++) {                                                                          \
            g = d_out[j + k] * gain[j + k];                                                                           \
            acc[k] += g;                                                                                              \
            acc_v[k] += g * ((v[j + k] - mean) * rstd);                                                               \
        }                                                                                                             \
    for (k = 0; k < LC_ROW_LANES; k++) { sum_g += acc[k]; sum_gv += acc_v[k]; }                                       \
    for (j = m; j < n; j++) { g = d_out[j] * gain[j]; sum_g += g; sum_gv += g * ((v[j] - mean) * rstd); }             \
    T mean_g = sum_g / (T)n, mean_gv = sum_gv / (T)n;                                                                 \
    if (d_in == NULL)                                                                                                 \
        for (j = 0; j < n; j++)                                                                                       \
            d_out[j] = rstd * (d_out[j] * gain[j] - mean_g - (v[j] - mean) * rstd * mean_gv);                         \
    else                                                                                                              \
        for (j = 0; j < n; j++)                                                                                       \
            d_in[j] = rstd * (d_out[j] * gain[j] - mean_g - (v[j] - mean) * rstd * mean_gv);                          \
}                                                                                                                     \
/* layer-norm LSTM forward, one row (see _lnlstm.pyx): pre = [W x | R h] (8H), read only (the backward recomputes     \
 * the normalised values from it); cache = [i, f, o, z, s, tanh(c_n)]; stats = the norms' mean and 1/std, of W x,     \
 * R h and s; params p = [gain_x, gain_r, b, gain_c, bias_c] */                                                       \
static void lc_lnlstm_forward_##TS##_##SUF(ptrdiff_t H, int carry_normalised, T eps, const T *restrict pre,           \
                                           T *restrict cache, T *restrict stats, const T *restrict p,                 \
                                           const T *restrict c_prev, T *restrict h_next, T *restrict c_next,          \
                                           T *restrict out) {                                                         \
    ptrdiff_t G = 4 * H, j;                                                                                           \
    T mx, rx, mr, rr, mc, rc;                                                                                         \
    T *restrict s = cache + G, *restrict tanh_c = cache + G + H;                                                      \
    lc_norm_stats_##TS##_##SUF(pre, G, eps, &mx, &rx);                                                                \
    lc_norm_stats_##TS##_##SUF(pre + G, G, eps, &mr, &rr);                                                            \
    for (j = 0; j < G; j++)                                                                                           \
        cache[j] = p[j] * ((pre[j] - mx) * rx) + p[G + j] * ((pre[G + j] - mr) * rr) + p[2 * G + j];                  \
    for (j = 0; j < 3 * H; j++) cache[j] = LC_SIGMOID(cache[j]);                                                      \
    for (j = 3 * H; j < G; j++) cache[j] = LC_TANH(cache[j]);                                                         \
    for (j = 0; j < H; j++) {                                                                                         \
        s[j] = cache[H + j] * c_prev[j] + cache[j] * cache[3 * H + j];                                                \
        c_next[j] = s[j];                                                                                             \
    }                                                                                                                 \
    lc_norm_stats_##TS##_##SUF(s, H, eps, &mc, &rc);                                                                  \
    for (j = 0; j < H; j++) {                                                                                         \
        T cn = p[3 * G + j] * ((s[j] - mc) * rc) + p[3 * G + H + j];                                                  \
        c_next[j] = carry_normalised ? cn : c_next[j];                                                                \
        T t = LC_TANH(cn), y = cache[2 * H + j] * t;                                                                  \
        tanh_c[j] = t;                                                                                                \
        h_next[j] = y;                                                                                                \
        out[j] = y;                                                                                                   \
    }                                                                                                                 \
    stats[0] = mx; stats[1] = rx; stats[2] = mr; stats[3] = rr; stats[4] = mc; stats[5] = rc;                         \
}                                                                                                                     \
/* layer-norm LSTM backward, one row: ds = dE/d[h, c] after the step in, the share before it that bypasses R out;     \
 * d_pre = [dE/d(W x) | dE/d(R h)] out (its blocks are scratch before: dE/dc_n, then the gates' deltas) */            \
static void lc_lnlstm_backward_##TS##_##SUF(ptrdiff_t H, int carry_normalised, const T *restrict pre,                 \
                                            const T *restrict cache, const T *restrict stats,                         \
                                            const T *restrict p, const T *restrict c_prev,                            \
                                            const T *restrict d_out, T *restrict ds, T *restrict d_pre,               \
                                            T *restrict dp) {                                                         \
    ptrdiff_t G = 4 * H, j;                                                                                           \
    const T *restrict s = cache + G, *restrict tanh_c = cache + G + H;                                                \
    T *restrict d_cn = d_pre, *restrict da = d_pre + G;                                                               \
    T carried = carry_normalised ? 1 : 0;                                                                             \
    T mx = stats[0], rx = stats[1], mr = stats[2], rr = stats[3], mc = stats[4], rc = stats[5];                       \
    for (j = 0; j < H; j++) { /* h = o tanh(c_n) */                                                                   \
        T dy = ds[j] + d_out[j], o = cache[2 * H + j];                                                                \
        da[2 * H + j] = dy * tanh_c[j] * o * (1 - o);                                                                 \
        T dc = dy * o * (1 - tanh_c[j] * tanh_c[j]) + carried * ds[H + j];                                            \
        d_cn[j] = dc;                                                                                                 \
        dp[3 * G + j] += dc * ((s[j] - mc) * rc);                                                                     \
        dp[3 * G + H + j] += dc;                                                                                      \
        ds[j] = 0; /* h_{t-1} reaches the step only through R, whose share the driver adds */                         \
    }                                                                                                                 \
    lc_norm_backward_##TS##_##SUF(s, mc, rc, d_cn, p + 3 * G, NULL, H); /* now dE/ds */                               \
    for (j = 0; j < H; j++) { /* s = f c_{t-1} + i z */                                                               \
        T dc = d_cn[j] + (1 - carried) * ds[H + j];                                                                   \
        T i = cache[j], f = cache[H + j], z = cache[3 * H + j];                                                       \
        da[j] = dc * z * i * (1 - i);                                                                                 \
        da[H + j] = dc * c_prev[j] * f * (1 - f);                                                                     \
        da[3 * H + j] = dc * i * (1 - z * z);                                                                         \
        ds[H + j] = dc * f;                                                                                           \
    }                                                                                                                 \
    for (j = 0; j < G; j++) {                                                                                         \
        dp[j] += da[j] * ((pre[j] - mx) * rx);                                                                        \
        dp[G + j] += da[j] * ((pre[G + j] - mr) * rr);                                                                \
        dp[2 * G + j] += da[j];                                                                                       \
    }                                                                                                                 \
    lc_norm_backward_##TS##_##SUF(pre, mx, rx, da, p, d_pre, G);            /* dE/d(W x) */                           \
    lc_norm_backward_##TS##_##SUF(pre + G, mr, rr, da, p + G, NULL, G);     /* dE/d(R h) */                           \
}                                                                                                                     \
/* sLSTM forward, one row: g = [ĩ, f̃, z̃, õ] in, [i, f, tanh z̃, sigmoid õ] out; dl = d l / d f̃, took_i = [ĩ >= a];  \
 * prev/next = [h, c, n, m] (vector q at + q*H). The body takes each vector as its own restrict pointer: offsets by  \
 * a run-time H from one pointer would need overlap checks that keep the loop scalar */                            \
static inline __attribute__((always_inline)) void                                                                  \
lc_slstm_forward_body_##TS##_##SUF(ptrdiff_t n, const int exp_forget, T *restrict gi, T *restrict gf,            \
                                   T *restrict gz, T *restrict go, T *restrict dl, T *restrict took_i,            \
                                   const T *restrict c_prev, const T *restrict n_prev, const T *restrict m_prev,  \
                                   T *restrict h_next, T *restrict c_next, T *restrict n_next,                    \
                                   T *restrict m_next, T *restrict out) {                                         \
    for (ptrdiff_t j = 0; j < n; j++) {                                                                            \
        T it = gi[j], ft = gf[j], l, d;                                                                            \
        if (exp_forget) {                                                                                          \
            l = ft;                                                                                                \
            d = 1;                                                                                                 \
        } else {                                                                                                   \
            l = LC_LOG_SIGMOID(ft, &d);                                                                            \
        }                                                                                                          \
        T a = l + m_prev[j];                                                                                       \
        int take_i = it >= a;                                                                                      \
        T m = take_i ? it : a;                                                                                     \
        T i = LC_EXP(it - m), f = LC_EXP(a - m);                                                                   \
        T z = LC_TANH(gz[j]), o = LC_SIGMOID(go[j]);                                                               \
        T c = f * c_prev[j] + i * z, nn = f * n_prev[j] + i, h = o * c / nn;                                       \
        gi[j] = i; gf[j] = f; gz[j] = z; go[j] = o;                                                                \
        dl[j] = d;                                                                                                 \
        took_i[j] = take_i ? 1 : 0;                                                                                \
        h_next[j] = h; c_next[j] = c; n_next[j] = nn; m_next[j] = m;                                               \
        out[j] = h;                                                                                                \
    }                                                                                                              \
}                                                                                                                  \
/* one loop per forget gate, each vectorised (a loop-invariant test inside one loop kept GCC from vectorising it) */ \
static void lc_slstm_forward_##TS##_##SUF(ptrdiff_t n, ptrdiff_t H, int exp_forget, T *g, T *dl, T *took_i,        \
                                          const T *prev, T *next, T *out) {                                       \
    if (exp_forget)                                                                                                \
        lc_slstm_forward_body_##TS##_##SUF(n, 1, g, g + H, g + 2 * H, g + 3 * H, dl, took_i, prev + H,             \
                                           prev + 2 * H, prev + 3 * H, next, next + H, next + 2 * H, next + 3 * H, \
                                           out);                                                                  \
    else                                                                                                           \
        lc_slstm_forward_body_##TS##_##SUF(n, 0, g, g + H, g + 2 * H, g + 3 * H, dl, took_i, prev + H,             \
                                           prev + 2 * H, prev + 3 * H, next, next + H, next + 2 * H, next + 3 * H, \
                                           out);                                                                  \
}                                                                                                                  \
/* sLSTM backward, one row: ds = dE/d[h, c, n, m] after the step in, the share before it that bypasses R out */    \
static inline __attribute__((always_inline)) void                                                                  \
lc_slstm_backward_body_##TS##_##SUF(ptrdiff_t n, const T *restrict gi, const T *restrict gf,                      \
                                    const T *restrict gz, const T *restrict go, const T *restrict dl,             \
                                    const T *restrict took_i, const T *restrict c_prev,                           \
                                    const T *restrict n_prev, const T *restrict h_next,                           \
                                    const T *restrict c_next, const T *restrict n_next,                           \
                                    const T *restrict d_out, T *restrict dh, T *restrict dc_io,                   \
                                    T *restrict dn_io, T *restrict dm_io, T *restrict dgi, T *restrict dgf,       \
                                    T *restrict dgz, T *restrict dgo) {                                           \
    for (ptrdiff_t j = 0; j < n; j++) {                                                                            \
        T i = gi[j], f = gf[j], z = gz[j], o = go[j];                                                              \
        T inv_n = 1 / n_next[j], dy = dh[j] + d_out[j];                                                            \
        T dc = dc_io[j] + dy * o * inv_n, dn = dn_io[j] - dy * h_next[j] * inv_n;                                  \
        T di = (dc * z + dn) * i, da = (dc * c_prev[j] + dn * n_prev[j]) * f;                                      \
        T dm = dm_io[j] - di - da;                                                                                 \
        int take_i = took_i[j] != 0;                                                                               \
        di = take_i ? di + dm : di;                                                                                \
        da = take_i ? da : da + dm;                                                                                \
        dgi[j] = di;                                                                                               \
        dgf[j] = da * dl[j];                                                                                       \
        dgz[j] = dc * i * (1 - z * z);                                                                             \
        dgo[j] = dy * c_next[j] * inv_n * o * (1 - o);                                                             \
        dh[j] = 0;                                                                                                 \
        dc_io[j] = dc * f;                                                                                         \
        dn_io[j] = dn * f;                                                                                         \
        dm_io[j] = da;                                                                                             \
    }                                                                                                              \
}                                                                                                                  \
static void lc_slstm_backward_##TS##_##SUF(ptrdiff_t n, ptrdiff_t H, const T *g, const T *dl, const T *took_i,     \
                                           const T *prev, const T *next, const T *d_out, T *ds, T *dg) {          \
    lc_slstm_backward_body_##TS##_##SUF(n, g, g + H, g + 2 * H, g + 3 * H, dl, took_i, prev + H, prev + 2 * H,     \
                                        next, next + H, next + 2 * H, d_out, ds, ds + H, ds + 2 * H, ds + 3 * H,  \
                                        dg, dg + H, dg + 2 * H, dg + 3 * H);                                      \
}

#define LC_DEFINE_ROWS_BOTH(SUF) LC_DEFINE_ROWS(float, f, SUF) LC_DEFINE_ROWS(double, d, SUF)

LC_DEFINE_ROWS_BOTH(generic)
#ifdef LC_SIMD_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
LC_DEFINE_ROWS_BOTH(avx2)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
LC_DEFINE_ROWS_BOTH(avx512)
#pragma GCC pop_options
#define LC_ROWS_DISPATCH(FN, ...)                                                                                     \
    switch (lc_simd_level()) {                                                                                    \
        case LC_SIMD_AVX512: FN##_avx512(__VA_ARGS__); break;                                                     \
        case LC_SIMD_AVX2: FN##_avx2(__VA_ARGS__); break;                                                         \
        default: FN##_generic(__VA_ARGS__); break;                                                                \
    }
#else
#define LC_ROWS_DISPATCH(FN, ...) FN##_generic(__VA_ARGS__);
#endif

#define LC_DEFINE_ROWS_ENTRY(T, TS)                                                                                   \
static inline void lc_lnlstm_forward_##TS(ptrdiff_t H, int carry_normalised, T eps, const T *pre, T *cache, T *stats,\
                                          const T *p, const T *c_prev, T *h_next, T *c_next, T *out) {           \
    LC_ROWS_DISPATCH(lc_lnlstm_forward_##TS, H, carry_normalised, eps, pre, cache, stats, p, c_prev, h_next,       \
                     c_next, out)                                                                                 \
}                                                                                                                  \
static inline void lc_lnlstm_backward_##TS(ptrdiff_t H, int carry_normalised, const T *pre, const T *cache,         \
                                           const T *stats, const T *p, const T *c_prev, const T *d_out, T *ds,    \
                                           T *d_pre, T *dp) {                                                     \
    LC_ROWS_DISPATCH(lc_lnlstm_backward_##TS, H, carry_normalised, pre, cache, stats, p, c_prev, d_out, ds, d_pre, \
                     dp)                                                                                          \
}                                                                                                                  \
static inline void lc_slstm_forward_##TS(ptrdiff_t n, ptrdiff_t H, int exp_forget, T *g, T *dl, T *took_i,         \
                                         const T *prev, T *next, T *out) {                                        \
    LC_ROWS_DISPATCH(lc_slstm_forward_##TS, n, H, exp_forget, g, dl, took_i, prev, next, out)                      \
}                                                                                                                  \
static inline void lc_slstm_backward_##TS(ptrdiff_t n, ptrdiff_t H, const T *g, const T *dl, const T *took_i,      \
                                          const T *prev, const T *next, const T *d_out, T *ds, T *dg) {           \
    LC_ROWS_DISPATCH(lc_slstm_backward_##TS, n, H, g, dl, took_i, prev, next, d_out, ds, dg)                       \
}

LC_DEFINE_ROWS_ENTRY(float, f)
LC_DEFINE_ROWS_ENTRY(double, d)

#endif
