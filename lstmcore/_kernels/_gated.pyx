"""The gated-cell family as a step of the sequence driver: vanilla, peephole, coupled (CIFG), the gate-removal and
activation variants of "LSTM: A Search Space Odyssey", FGR, and any new combination (``lstmcore.GatedCell``).

One step, per batch row and hidden unit j (the driver has already added x W^T + b and the recurrence R y_{t-1}, and
for FGR Rg [i, f, o]_{t-1}, to the pre-activations):

    i = sigma(i_bar + p_i c_{t-1})      f = sigma(f_bar + p_f c_{t-1})  (f = 1 - i when coupled)     z = g(z_bar)
    c_t = z i + c_{t-1} f               o = sigma(o_bar + p_o c_t)      y_t = h(c_t) o
(an absent gate is the constant 1; ``clip`` clamps i, f, z, o's pre-activations, peephole terms included).

Zoneout (Krueger et al. 2016), with per-step masks d_h, d_c (0/1 in training, the rates at evaluation):
    c_t = c~_t + d_c (c_{t-1} - c~_t)     y_t = h_t = h~_t + d_h (h_{t-1} - h~_t)
where c~_t, h~_t are the cell and output above. Recurrent dropout (Gal & Ghahramani 2016): R reads m * y_{t-1}, with
m the sequence's mask (constant over its steps): the step carries m * y_t as a state of its own.

Blocks for the driver: pre-activation blocks are the present gates of (i, f, o), then z; the carried row is [h,
(m * h with recurrent dropout), (i, f, o with a gate recurrence: the gates of t-1 are inputs of Rg, so they are carried
like a state), c]; the cache keeps h(c_t), when clipping the raw pre-activations, and with zoneout c~_t; the step's
parameters are the present peepholes (i, f, o); its masks are [d_h, d_c] (zoneout), then m (recurrent dropout).
"""
from cython cimport floating
from libc.math cimport isfinite
from libc.string cimport memcpy

from lstmcore._kernels._driver cimport CellDesc, StepView
from lstmcore._kernels._activations cimport (activate_block, multiply_derivative_block, clip_block,
                                              zero_where_clipped)

from lstmcore._kernels._activations import checked_activation


cdef inline floating *_at(floating *base, Py_ssize_t index, Py_ssize_t H) noexcept nogil:
    return base + index * H if index >= 0 else NULL


cdef void _forward(const GatedSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating clip = <floating> s.clip, y
    cdef floating *g
    cdef floating *gi
    cdef floating *gf
    cdef floating *go
    cdef floating *gz
    cdef floating *pr = NULL
    cdef const floating *c_prev
    cdef floating *c_next
    cdef floating *h_next
    cdef floating *hc
    cdef floating *out
    cdef floating *a
    cdef const floating *mask
    cdef const floating *h_prev
    cdef const floating *p = <const floating *> v.params
    cdef const floating *pi = _at(<floating *> p, s.pk_i, H)
    cdef const floating *pf = _at(<floating *> p, s.pk_f, H)
    cdef const floating *po = _at(<floating *> p, s.pk_o, H)
    for r in range(v.rows):
        g = pre + r * v.ld_pre
        gi, gf, go, gz = _at(g, s.blk_i, H), _at(g, s.blk_f, H), _at(g, s.blk_o, H), g + s.blk_z * H
        c_prev = <const floating *> v.prev + r * v.ld_state + s.vec_c * H
        c_next = <floating *> v.next + r * v.ld_state + s.vec_c * H
        h_next = <floating *> v.next + r * v.ld_state
        hc = <floating *> v.cache + r * v.ld_cache
        if clip > 0:
            pr = hc + H  # the raw pre-activations, block by block
        out = <floating *> v.out + r * v.ld_out

        if pi != NULL:
            for j in range(n):
                gi[j] += pi[j] * c_prev[j]
        if pf != NULL:
            for j in range(n):
                gf[j] += pf[j] * c_prev[j]
        if clip > 0:
            if gi != NULL:
                clip_block(clip, gi, pr + s.blk_i * H, gi, n)
            if gf != NULL:
                clip_block(clip, gf, pr + s.blk_f * H, gf, n)
            clip_block(clip, gz, pr + s.blk_z * H, gz, n)
        if gi != NULL:
            activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, gi, n)
        if gf != NULL:
            activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, gf, n)
        activate_block(s.act_input, <floating> s.input_alpha, <floating> s.input_beta, gz, n)

        # c_t = z * i + c_{t-1} * f, with i = 1 or f = 1 for a removed gate and f = 1 - i when coupled
        if gi != NULL and s.coupled:
            for j in range(n):
                c_next[j] = gz[j] * gi[j] + c_prev[j] * (1 - gi[j])
        elif gi != NULL and gf != NULL:
            for j in range(n):
                c_next[j] = gz[j] * gi[j] + c_prev[j] * gf[j]
        elif gi != NULL:
            for j in range(n):
                c_next[j] = gz[j] * gi[j] + c_prev[j]
        elif gf != NULL:
            for j in range(n):
                c_next[j] = gz[j] + c_prev[j] * gf[j]
        else:
            for j in range(n):
                c_next[j] = gz[j] + c_prev[j]

        if go != NULL:
            if po != NULL:  # the output gate's peephole sees the new cell
                for j in range(n):
                    go[j] += po[j] * c_next[j]
            if clip > 0:
                clip_block(clip, go, pr + s.blk_o * H, go, n)
            activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, go, n)

        memcpy(hc, c_next, n * sizeof(floating))  # clip does not apply to the cell fed to h (as ONNX Runtime)
        activate_block(s.act_output, <floating> s.output_alpha, <floating> s.output_beta, hc, n)
        if go != NULL:
            for j in range(n):
                y = go[j] * hc[j]
                h_next[j] = y
                out[j] = y
        else:
            memcpy(h_next, hc, n * sizeof(floating))
            memcpy(out, hc, n * sizeof(floating))
        if s.zoneout:  # c_t = c~ + d_c (c_{t-1} - c~), h_t = h~ + d_h (h_{t-1} - h~)
            mask = <const floating *> v.mask + r * v.ld_mask
            h_prev = <const floating *> v.prev + r * v.ld_state
            memcpy(hc + s.ck_cell * H, c_next, n * sizeof(floating))
            for j in range(n):
                c_next[j] += mask[H + j] * (c_prev[j] - c_next[j])
                y = h_next[j] + mask[j] * (h_prev[j] - h_next[j])
                h_next[j] = y
                out[j] = y
        if s.recurrent_dropout:  # what R reads at t+1
            mask = <const floating *> v.mask + r * v.ld_mask + s.mk_dropout * H
            a = h_next + s.vec_dropped * H
            for j in range(n):
                a[j] = mask[j] * h_next[j]
        if s.gate_recurrence:  # [i, f, o]_t, the input of Rg at t+1
            a = h_next + s.vec_gates * H
            memcpy(a, gi, n * sizeof(floating))
            memcpy(a + H, gf, n * sizeof(floating))
            memcpy(a + 2 * H, go, n * sizeof(floating))


cdef inline void _finish_gate_delta(const GatedSpec *s, floating *d, const floating *y, floating *da,
                                    const floating *pr, Py_ssize_t n) noexcept nogil:
    """A gate's pre-activation delta: d = (d + da) * sigma'(y), zero where ``pr`` (if given) was clamped; da, the
    gate recurrence's share from t+1, is consumed (zeroed)."""
    cdef Py_ssize_t j
    if da != NULL:
        for j in range(n):
            d[j] += da[j]
            da[j] = 0
    multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, y, d, n)
    if pr != NULL:
        zero_where_clipped(<floating> s.clip, pr, d, n)


cdef void _backward(const GatedSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    """dh = d_state[h] + d_out is used as scratch for the cell's delta, and left zero (with zoneout: d_h dh_t, the
    share of h_{t-1} that bypasses the weights; kept in the z block of d_pre until the end), since h_{t-1} reaches
    step t through the recurrent weights only, whose share the driver adds."""
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating clip = <floating> s.clip
    cdef const floating *g
    cdef const floating *gi
    cdef const floating *gf
    cdef const floating *go
    cdef const floating *gz
    cdef floating *dg
    cdef floating *dgi
    cdef floating *dgf
    cdef floating *dgo
    cdef floating *dgz
    cdef const floating *pr = NULL
    cdef const floating *c_prev
    cdef const floating *c_next
    cdef const floating *hc
    cdef const floating *dout
    cdef floating *dh
    cdef floating *dc
    cdef floating *da = NULL
    cdef floating *dd
    cdef floating bypass, keep = 1 if s.zoneout else 0
    cdef const floating *mask
    cdef const floating *c_new
    cdef const floating *p = <const floating *> v.params
    cdef const floating *pi = _at(<floating *> p, s.pk_i, H)
    cdef const floating *pf = _at(<floating *> p, s.pk_f, H)
    cdef const floating *po = _at(<floating *> p, s.pk_o, H)
    cdef floating *dp = <floating *> v.d_params
    cdef floating *dpi = _at(dp, s.pk_i, H)
    cdef floating *dpf = _at(dp, s.pk_f, H)
    cdef floating *dpo = _at(dp, s.pk_o, H)
    for r in range(v.rows):
        g = <const floating *> v.pre + r * v.ld_pre
        gi, gf, go = _at(<floating *> g, s.blk_i, H), _at(<floating *> g, s.blk_f, H), _at(<floating *> g, s.blk_o, H)
        gz = g + s.blk_z * H
        dg = d_pre + r * v.ld_pre
        dgi, dgf, dgo, dgz = _at(dg, s.blk_i, H), _at(dg, s.blk_f, H), _at(dg, s.blk_o, H), dg + s.blk_z * H
        c_prev = <const floating *> v.prev + r * v.ld_state + s.vec_c * H
        c_next = <const floating *> v.next + r * v.ld_state + s.vec_c * H
        hc = <const floating *> v.cache + r * v.ld_cache
        c_new = hc + s.ck_cell * H if s.zoneout else c_next  # c~_t, what o's peephole saw
        if clip > 0:
            pr = hc + H
        dout = <const floating *> v.d_out + r * v.ld_d_out
        dh = <floating *> v.d_state + r * v.ld_state
        dc = dh + s.vec_c * H
        mask = <const floating *> v.mask + r * v.ld_mask if v.mask != NULL else NULL
        if s.gate_recurrence:
            da = dh + s.vec_gates * H

        # y = o * h(c): dcell = dy * o * h'(c), d_obar = dy * h(c) * sigma'(obar)
        for j in range(n):
            dh[j] += dout[j]
        if s.recurrent_dropout:  # R read mask * y_t at t+1
            dd = dh + s.vec_dropped * H
            for j in range(n):
                dh[j] += mask[s.mk_dropout * H + j] * dd[j]
                dd[j] = 0
        if s.zoneout:  # h~ gets (1 - d_h) dh_t; d_h dh_t goes to h_{t-1} (parked in the z block of d_pre)
            for j in range(n):
                dgz[j] = mask[j] * dh[j]
                dh[j] -= dgz[j]
        if go != NULL:
            for j in range(n):
                dgo[j] = dh[j] * hc[j]
                dh[j] *= go[j]
        multiply_derivative_block(s.act_output, <floating> s.output_alpha, hc, dh, n)
        if go != NULL:
            _finish_gate_delta(s, dgo, go, da + 2 * H if da != NULL else NULL,
                               pr + s.blk_o * H if clip > 0 else NULL, n)
            if po != NULL:
                for j in range(n):
                    dh[j] += po[j] * dgo[j]
                    dpo[j] += c_new[j] * dgo[j]
        if s.zoneout:  # c~ gets (1 - d_c) dc_t; d_c dc_t goes to c_{t-1} (parked in dc)
            for j in range(n):
                bypass = mask[H + j] * dc[j]
                dh[j] += dc[j] - bypass  # dh now holds dE/dc~_t
                dc[j] = bypass
        else:
            for j in range(n):
                dh[j] += dc[j]  # dh now holds dE/dc_t

        # the gates feeding the cell, then the block input z
        if gi != NULL:
            if s.coupled:
                for j in range(n):
                    dgi[j] = dh[j] * (gz[j] - c_prev[j])
            else:
                for j in range(n):
                    dgi[j] = dh[j] * gz[j]
            _finish_gate_delta(s, dgi, gi, da, pr + s.blk_i * H if clip > 0 else NULL, n)
        if gf != NULL:
            for j in range(n):
                dgf[j] = dh[j] * c_prev[j]
            _finish_gate_delta(s, dgf, gf, da + H if da != NULL else NULL,
                               pr + s.blk_f * H if clip > 0 else NULL, n)

        # the cell delta carried to t-1: through f and through the peepholes of i and f (plus zoneout's share)
        if gi != NULL and s.coupled:
            for j in range(n):
                dc[j] = keep * dc[j] + dh[j] * (1 - gi[j])
        elif gf != NULL:
            for j in range(n):
                dc[j] = keep * dc[j] + dh[j] * gf[j]
        else:
            for j in range(n):
                dc[j] = keep * dc[j] + dh[j]
        if pi != NULL:
            for j in range(n):
                dc[j] += pi[j] * dgi[j]
                dpi[j] += c_prev[j] * dgi[j]
        if pf != NULL:
            for j in range(n):
                dc[j] += pf[j] * dgf[j]
                dpf[j] += c_prev[j] * dgf[j]
        for j in range(n):
            bypass = dgz[j] if s.zoneout else 0  # h_{t-1}'s share, parked there
            dgz[j] = dh[j] * gi[j] if gi != NULL else dh[j]
            dh[j] = bypass
        multiply_derivative_block(s.act_input, <floating> s.input_alpha, gz, dgz, n)
        if clip > 0:
            zero_where_clipped(clip, pr + s.blk_z * H, dgz, n)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const GatedSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const GatedSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const GatedSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const GatedSpec *> cell.spec, v, <double *> v.d_pre)


cdef class GatedKernel(CellKernel):
    """The step of one gated cell, configured by name::

        GatedKernel(blocks="ifoz", peepholes="ifo", coupled=False, gate_activation=("sigmoid", 0, 0),
                    input_activation=("tanh", 0, 0), output_activation=("tanh", 0, 0), clip=0.0,
                    gate_recurrence=False, zoneout=False, recurrent_dropout=False)

    ``blocks``: the row blocks of W, R, b in order, the present gates among "ifo" and then "z"; ``peepholes``: the
    gates with a peephole, in the order of p; activations as (name, alpha, beta); ``clip`` 0 for none; ``zoneout``
    and ``recurrent_dropout``: the step reads their masks (see the module docstring).
    """

    def __cinit__(self, *, str blocks, str peepholes="", bint coupled=False, gate_activation=("sigmoid", 0.0, 0.0),
                  input_activation=("tanh", 0.0, 0.0), output_activation=("tanh", 0.0, 0.0), double clip=0.0,
                  bint gate_recurrence=False, bint zoneout=False, bint recurrent_dropout=False):
        gates = blocks[:-1]
        if not (blocks.endswith("z") and gates in ("ifo", "if", "io", "fo", "i", "f", "o", "")):
            raise ValueError(f"blocks must be the present gates among 'ifo' in order, then 'z'; got {blocks!r}")
        if not all(g in gates for g in peepholes) or "".join(g for g in gates if g in peepholes) != peepholes:
            raise ValueError(f"peepholes must be present gates in the order of {gates!r}; got {peepholes!r}")
        if coupled and not ("i" in gates and "f" not in gates):
            raise ValueError("a coupled cell (f = 1 - i) has an input gate and no forget gate block")
        if gate_recurrence and gates != "ifo":
            raise ValueError("a gate recurrence needs the input, forget and output gates, uncoupled")
        if not (isfinite(clip) and clip >= 0):
            raise ValueError(f"clip must be 0 (none) or a positive finite number, got {clip!r}")
        s = &self.spec
        s.blk_i, s.blk_f, s.blk_o = blocks.find("i"), blocks.find("f"), blocks.find("o")
        s.blk_z = len(blocks) - 1
        s.pk_i, s.pk_f, s.pk_o = peepholes.find("i"), peepholes.find("f"), peepholes.find("o")
        s.coupled = coupled
        s.act_gate, s.gate_alpha, s.gate_beta = checked_activation(gate_activation, "gate_activation")
        s.act_input, s.input_alpha, s.input_beta = checked_activation(input_activation, "input_activation")
        s.act_output, s.output_alpha, s.output_beta = checked_activation(output_activation, "output_activation")
        s.clip = clip
        s.gate_recurrence = gate_recurrence
        s.zoneout, s.recurrent_dropout = zoneout, recurrent_dropout
        s.vec_dropped = 1 if recurrent_dropout else -1
        s.vec_gates = 1 + recurrent_dropout
        s.vec_c = s.vec_gates + (3 if gate_recurrence else 0)
        s.mk_dropout = 2 if zoneout else 0
        s.ck_cell = 1 + (len(blocks) if clip > 0 else 0)
        self.spec_by_name = dict(blocks=blocks, peepholes=peepholes, coupled=bool(coupled),
                                 gate_activation=gate_activation, input_activation=input_activation,
                                 output_activation=output_activation, clip=clip,
                                 gate_recurrence=bool(gate_recurrence), zoneout=bool(zoneout),
                                 recurrent_dropout=bool(recurrent_dropout))

        d = &self.desc
        d.n_blocks = d.n_input_blocks = len(blocks)
        d.n_carried = s.vec_c + 1
        d.n_states = 3 if recurrent_dropout else 2  # the third, m * h, is the layer's (GatedCell) business
        d.state_vector[0], d.state_vector[1], d.state_vector[2] = 0, s.vec_c, s.vec_dropped
        d.n_cache = s.ck_cell + (1 if zoneout else 0)
        d.n_stage_input = 0
        d.n_params = len(peepholes)
        d.n_mask = (2 if zoneout else 0) + (1 if recurrent_dropout else 0)
        d.n_stages = 1
        d.whole_rows = False
        d.n_recurrent = 2 if gate_recurrence else 1
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, len(blocks)
        d.recurrent[0].first_vector = s.vec_dropped if recurrent_dropout else 0  # R reads (m *) h_{t-1}
        d.recurrent[0].n_vectors = 1
        if gate_recurrence:
            d.recurrent[1].stage, d.recurrent[1].first_block, d.recurrent[1].n_blocks = 0, 0, 3
            d.recurrent[1].first_vector, d.recurrent[1].n_vectors = s.vec_gates, 3  # Rg reads [i, f, o]_{t-1}
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d

    def __repr__(self):
        return "GatedKernel(" + ", ".join(f"{k}={v!r}" for k, v in self.spec_by_name.items()) + ")"
