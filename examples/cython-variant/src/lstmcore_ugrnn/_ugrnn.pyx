"""The update-gate RNN (UGRNN; Collins, Sohl-Dickstein & Sussillo, "Capacity and trainability in recurrent neural
networks", 2017) as a step of lstmcore's sequence driver: only the element-wise maths of one step, forward and
backward, in ``noexcept nogil`` Cython. The driver (``lstmcore._kernels._driver``) does everything else: the input
projection, the recurrent product, lengths, the reverse direction, threads, dW, dR, dx.

Equations (sigma the gate activation, g the candidate activation; sigmoid and tanh by default)::

    u_t = sigma(W_u x_t + R_u h_{t-1} + b_u)                  update gate
    c_t = g(W_c x_t + R_c h_{t-1} + b_c)                      candidate
    h_t = u_t * h_{t-1} + (1 - u_t) * c_t                     output and state

Backward (dh_t = dE/dh_t from above plus from step t+1; d_ the deltas of pre-activations)::

    d_u = dh_t * (h_{t-1} - c_t) * sigma'      d_c = dh_t * (1 - u_t) * g'      dh_{t-1} (bypassing R) = dh_t * u_t

Described to the driver as: blocks [u, c], both fed by x; one carried vector (h); one recurrent weight R = [R_u; R_c]
reading h_{t-1}; one stage.
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, multiply_derivative_block

from lstmcore._kernels._activations import ACTIVATIONS


cdef struct UGRNNSpec:
    int act_gate, act_cand
    double gate_alpha, gate_beta, cand_alpha, cand_beta


cdef void _forward(const UGRNNSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating *u
    cdef floating *cand
    cdef const floating *h_prev
    cdef floating *h
    cdef floating *out
    for r in range(v.rows):
        u = pre + r * v.ld_pre          # the step leaves its activations in place: the backward reads them
        cand = u + H
        h_prev = <const floating *> v.prev + r * v.ld_state
        h = <floating *> v.next + r * v.ld_state
        out = <floating *> v.out + r * v.ld_out
        activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, u, n)
        activate_block(s.act_cand, <floating> s.cand_alpha, <floating> s.cand_beta, cand, n)
        for j in range(n):
            h[j] = cand[j] + u[j] * (h_prev[j] - cand[j])
            out[j] = h[j]


cdef void _backward(const UGRNNSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef const floating *u
    cdef const floating *cand
    cdef const floating *h_prev
    cdef const floating *d_out
    cdef floating *du
    cdef floating *dc
    cdef floating *dh
    for r in range(v.rows):
        u = <const floating *> v.pre + r * v.ld_pre
        cand = u + H
        h_prev = <const floating *> v.prev + r * v.ld_state
        d_out = <const floating *> v.d_out + r * v.ld_d_out
        du = d_pre + r * v.ld_pre
        dc = du + H
        dh = <floating *> v.d_state + r * v.ld_state
        for j in range(n):
            dh[j] += d_out[j]
            du[j] = dh[j] * (h_prev[j] - cand[j])
            dc[j] = dh[j] * (1 - u[j])
            dh[j] *= u[j]               # the driver adds R^T [d_u; d_c] to it
        multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, u, du, n)
        multiply_derivative_block(s.act_cand, <floating> s.cand_alpha, cand, dc, n)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const UGRNNSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const UGRNNSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const UGRNNSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const UGRNNSpec *> cell.spec, v, <double *> v.d_pre)


cdef class UGRNNKernel(CellKernel):
    """The UGRNN step for the driver: ``UGRNNKernel(gate_activation, input_activation)``, each
    ``(name, alpha, beta)``."""
    cdef UGRNNSpec spec

    def __cinit__(self, tuple gate_activation, tuple input_activation):
        self.spec.act_gate = ACTIVATIONS[gate_activation[0]]
        self.spec.gate_alpha, self.spec.gate_beta = gate_activation[1], gate_activation[2]
        self.spec.act_cand = ACTIVATIONS[input_activation[0]]
        self.spec.cand_alpha, self.spec.cand_beta = input_activation[1], input_activation[2]
        d = &self.desc
        d.n_blocks = d.n_input_blocks = 2        # [u, c]
        d.n_carried = d.n_states = 1             # h
        d.state_vector[0] = 0
        d.n_cache = d.n_params = d.n_stage_input = 0
        d.n_stages = 1
        d.whole_rows = False
        d.n_recurrent = 1
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, 2   # R reads h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d
