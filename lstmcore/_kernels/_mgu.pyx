"""The minimal gated unit (Zhou, Wu, Zhang & Zhou, 2016) as a step of the sequence driver: only the element-wise maths
of one step, forward and backward; the driver does the input projection, the recurrent products, lengths, the reverse
direction, threads, dW, dR and dx.

Equations (sigma the gate activation, g the candidate activation; sigmoid and tanh by default)::

    f_t = sigma(W_f x_t + R_f h_{t-1} + b_f)                  forget gate           stage 0
    n_t = g(W_n x_t + R_n (f_t * h_{t-1}) + b_n)              candidate             stage 1, after V_t = f_t * h_{t-1}
    h_t = (1 - f_t) * h_{t-1} + f_t * n_t                     output and state

Backward (d_ the deltas of pre-activations; dh_t = dE/dh_t from above plus from step t+1)::

    stage 1:  dn_t = dh_t * f_t * g'      d_f (so far) = dh_t * (n_t - h_{t-1})
    (driver)  dV_t = dn_t R_n
    stage 0:  df_t = (d_f + dV_t * h_{t-1}) * sigma'     dh_{t-1} (bypassing R_f) = dh_t * (1 - f_t) + dV_t * f_t

Described to the driver as: blocks [f, n], both fed by x; one carried vector (h); R_f reads h_{t-1} at stage 0; R_n
reads V_t = f * h_{t-1} at stage 1.
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, multiply_derivative_block

from lstmcore._kernels._activations import checked_activation


cdef struct MGUSpec:
    int act_gate, act_cand
    double gate_alpha, gate_beta, cand_alpha, cand_beta


cdef void _forward(const MGUSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating *f
    cdef floating *cand
    cdef const floating *h_prev
    cdef floating *h
    cdef floating *fh
    cdef floating *out
    for r in range(v.rows):
        f = pre + r * v.ld_pre
        cand = f + H
        h_prev = <const floating *> v.prev + r * v.ld_state
        fh = <floating *> v.stage_input + r * v.ld_stage_input
        if v.stage == 0:
            activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, f, n)
            for j in range(n):
                fh[j] = f[j] * h_prev[j]
        else:
            h = <floating *> v.next + r * v.ld_state
            out = <floating *> v.out + r * v.ld_out
            activate_block(s.act_cand, <floating> s.cand_alpha, <floating> s.cand_beta, cand, n)
            for j in range(n):
                h[j] = h_prev[j] + f[j] * (cand[j] - h_prev[j])
                out[j] = h[j]


cdef void _backward(const MGUSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef const floating *f
    cdef const floating *cand
    cdef const floating *h_prev
    cdef const floating *d_out
    cdef const floating *dV
    cdef floating *df
    cdef floating *dn
    cdef floating *dh
    for r in range(v.rows):
        f = <const floating *> v.pre + r * v.ld_pre
        cand = f + H
        h_prev = <const floating *> v.prev + r * v.ld_state
        df = d_pre + r * v.ld_pre
        dn = df + H
        dh = <floating *> v.d_state + r * v.ld_state
        if v.stage == 1:
            d_out = <const floating *> v.d_out + r * v.ld_d_out
            for j in range(n):
                dh[j] += d_out[j]
                dn[j] = dh[j] * f[j]
                df[j] = dh[j] * (cand[j] - h_prev[j])
            multiply_derivative_block(s.act_cand, <floating> s.cand_alpha, cand, dn, n)
        else:
            dV = <const floating *> v.d_stage_input + r * v.ld_stage_input
            for j in range(n):
                df[j] += dV[j] * h_prev[j]
                dh[j] = dh[j] * (1 - f[j]) + dV[j] * f[j]
            multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, f, df, n)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const MGUSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const MGUSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const MGUSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const MGUSpec *> cell.spec, v, <double *> v.d_pre)


cdef class MGUKernel(CellKernel):
    """The MGU step for the driver: ``MGUKernel(gate_activation, input_activation)``, each ``(name, alpha, beta)``."""
    cdef MGUSpec spec

    def __cinit__(self, tuple gate_activation, tuple input_activation):
        s = &self.spec
        s.act_gate, s.gate_alpha, s.gate_beta = checked_activation(gate_activation, "gate_activation")
        s.act_cand, s.cand_alpha, s.cand_beta = checked_activation(input_activation, "input_activation")
        d = &self.desc
        d.n_blocks = d.n_input_blocks = 2        # [f, n]
        d.n_carried = d.n_states = 1             # h
        d.state_vector[0] = 0
        d.n_cache = d.n_params = 0
        d.n_stages, d.n_stage_input = 2, 1      # V_t = f * h_{t-1}, the input of R_n
        d.whole_rows = False
        d.n_recurrent = 2
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, 1   # R_f reads h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.recurrent[1].stage, d.recurrent[1].first_block, d.recurrent[1].n_blocks = 1, 1, 1   # R_n reads V_t
        d.recurrent[1].first_vector, d.recurrent[1].n_vectors = 0, 1
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d
