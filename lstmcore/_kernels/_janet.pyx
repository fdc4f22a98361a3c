"""JANET, the forget-gate-only LSTM (van der Westhuizen & Lasenby, 2018), as a step of the sequence driver.

Per batch row and hidden unit (sigma the gate activation, g the candidate's; sigmoid and tanh by default; the driver
has added x W^T + b and R h_{t-1} to the pre-activations s and c~)::

    f = sigma(s)       u = sigma(s - beta)       c_t = f * c_{t-1} + (1 - u) * g(c~)       h_t = c_t

Blocks for the driver: [s, c~], both fed by x; one carried vector (h = c); one stage, R reads h_{t-1}; the
cache keeps u = sigma(s - beta) (beta a constant of the kernel).

Backward (dc = dE/dc_t, from above and from step t+1)::

    d_s = dc c_{t-1} sigma'(s) - dc g(c~) sigma'(s - beta)      d_c~ = dc (1 - u) g'(c~)      dc_{t-1} (bypassing R) = dc f
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, derivative_from_output, multiply_derivative_block

from lstmcore._kernels._activations import checked_activation


cdef struct JanetSpec:
    int act_gate, act_cand
    double gate_alpha, gate_beta, cand_alpha, cand_beta
    double beta


cdef void _forward(const JanetSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating *f
    cdef floating *cand
    cdef floating *u
    cdef const floating *c_prev
    cdef floating *c
    cdef floating *out
    cdef floating beta = <floating> s.beta
    for r in range(v.rows):
        f = pre + r * v.ld_pre
        cand = f + H
        u = <floating *> v.cache + r * v.ld_cache
        c_prev = <const floating *> v.prev + r * v.ld_state
        c = <floating *> v.next + r * v.ld_state
        out = <floating *> v.out + r * v.ld_out
        for j in range(n):
            u[j] = f[j] - beta
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, u, n)
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, f, n)
        activate_block(s.act_cand, <floating> s.cand_alpha, <floating> s.cand_beta, cand, n)
        for j in range(n):
            c[j] = f[j] * c_prev[j] + (1 - u[j]) * cand[j]
            out[j] = c[j]


cdef void _backward(const JanetSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef const floating *f
    cdef const floating *cand
    cdef const floating *u
    cdef const floating *c_prev
    cdef const floating *d_out
    cdef floating *ds
    cdef floating *dcand
    cdef floating *dc
    cdef floating gate_alpha = <floating> s.gate_alpha
    for r in range(v.rows):
        f = <const floating *> v.pre + r * v.ld_pre
        cand = f + H
        u = <const floating *> v.cache + r * v.ld_cache
        c_prev = <const floating *> v.prev + r * v.ld_state
        d_out = <const floating *> v.d_out + r * v.ld_d_out
        ds = d_pre + r * v.ld_pre
        dcand = ds + H
        dc = <floating *> v.d_state + r * v.ld_state
        for j in range(n):
            dc[j] += d_out[j]
            ds[j] = dc[j] * c_prev[j]
        multiply_derivative_block(s.act_gate, gate_alpha, f, ds, n)
        for j in range(n):
            ds[j] -= dc[j] * cand[j] * derivative_from_output(s.act_gate, u[j], gate_alpha)
            dcand[j] = dc[j] * (1 - u[j])
            dc[j] *= f[j]
        multiply_derivative_block(s.act_cand, <floating> s.cand_alpha, cand, dcand, n)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const JanetSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const JanetSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const JanetSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const JanetSpec *> cell.spec, v, <double *> v.d_pre)


cdef class JanetKernel(CellKernel):
    """The JANET step: ``JanetKernel(gate_activation, input_activation, beta)``, activations as
    ``(name, alpha, beta)``, ``beta`` the shift of the input gate's pre-activation."""
    cdef JanetSpec spec
    cdef readonly dict spec_by_name

    def __cinit__(self, tuple gate_activation, tuple input_activation, double beta):
        s = &self.spec
        s.act_gate, s.gate_alpha, s.gate_beta = checked_activation(gate_activation, "gate_activation")
        s.act_cand, s.cand_alpha, s.cand_beta = checked_activation(input_activation, "input_activation")
        s.beta = beta
        self.spec_by_name = dict(gate_activation=gate_activation, input_activation=input_activation, beta=beta)
        d = &self.desc
        d.n_blocks = d.n_input_blocks = 2       # [s, c~]
        d.n_carried = d.n_states = 1            # h = c
        d.state_vector[0] = 0
        d.n_cache = 1                           # u = sigma(s - beta)
        d.n_params = d.n_stage_input = 0
        d.n_stages = 1
        d.whole_rows = False
        d.n_recurrent = 1
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, 2   # R reads h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d

    def __repr__(self):
        return "JanetKernel(" + ", ".join(f"{k}={v!r}" for k, v in self.spec_by_name.items()) + ")"
