"""The gated recurrent unit (Cho et al., 2014) as a step of the sequence driver, with ONNX's and PyTorch's semantics.

Per batch row and hidden unit (sigma the gate activation, g the candidate's; sigmoid and tanh by default; the driver
has added x W^T + b and the recurrent products to the pre-activations)::

    z = sigma(W_z x + R_z h_{t-1} + b_z)                  update gate
    r = sigma(W_r x + R_r h_{t-1} + b_r)                  reset gate
    n = g(W_n x + R_n (r * h_{t-1}) + b_n)                candidate, linear_before_reset = 0 (ONNX's default)
    n = g(W_n x + b_n + r * (R_n h_{t-1} + b_rn))         candidate, linear_before_reset = 1 (torch.nn.GRU, cuDNN)
    h_t = (1 - z) * n + z * h_{t-1}

Blocks for the driver: [z, r, n], all fed by x; one carried vector, h.
- linear_before_reset = 0: two stages. Stage 0: R_zr (blocks z, r) reads h_{t-1}; the step writes V_t = r * h_{t-1}.
  Stage 1: R_n (block n) reads V_t.
- linear_before_reset = 1: one stage and a fourth block, R_n h_{t-1}, not fed by x; R_zr and R_n both read h_{t-1};
  b_rn is the step's parameter vector. The step leaves R_n h_{t-1} + b_rn in the fourth block for the backward.

Backward (dh = dE/dh_t, from above and from step t+1; the driver adds the recurrent weights' share to dh_{t-1})::

    d_n = dh (1 - z) g'(n)        d_z = dh (h_{t-1} - n) sigma'(z)        dh_{t-1} (bypassing R) = dh z
    lbr = 0:  dV = d_n R_n (the driver)    d_r = dV h_{t-1} sigma'(r)     dh_{t-1} += dV r
    lbr = 1:  d_r = d_n (R_n h_{t-1} + b_rn) sigma'(r)    d(R_n h_{t-1}) = d_n r = d b_rn
"""
from cython cimport floating

from lstmcore._kernels._driver cimport CellKernel, CellDesc, StepView
from lstmcore._kernels._activations cimport activate_block, multiply_derivative_block

from lstmcore._kernels._activations import checked_activation


cdef struct GRUSpec:
    int act_gate, act_cand
    double gate_alpha, gate_beta, cand_alpha, cand_beta
    bint linear_before_reset


cdef void _forward(const GRUSpec *s, const StepView *v, floating *pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef floating *z
    cdef floating *rg
    cdef floating *cand
    cdef floating *rec
    cdef const floating *h_prev
    cdef const floating *b_rn = <const floating *> v.params
    cdef floating *h
    cdef floating *out
    cdef floating *rh
    for r in range(v.rows):
        z = pre + r * v.ld_pre
        rg, cand, rec = z + H, z + 2 * H, z + 3 * H
        h_prev = <const floating *> v.prev + r * v.ld_state
        h = <floating *> v.next + r * v.ld_state
        out = <floating *> v.out + r * v.ld_out
        if v.stage == 0:
            activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, z, 2 * H if n == H else n)
            if n != H:
                activate_block(s.act_gate, <floating> s.gate_alpha, <floating> s.gate_beta, rg, n)
            if s.linear_before_reset:
                for j in range(n):
                    rec[j] += b_rn[j]
                    cand[j] += rg[j] * rec[j]
            else:
                rh = <floating *> v.stage_input + r * v.ld_stage_input
                for j in range(n):
                    rh[j] = rg[j] * h_prev[j]
                continue
        activate_block(s.act_cand, <floating> s.cand_alpha, <floating> s.cand_beta, cand, n)
        for j in range(n):
            h[j] = cand[j] + z[j] * (h_prev[j] - cand[j])
            out[j] = h[j]


cdef void _backward(const GRUSpec *s, const StepView *v, floating *d_pre) noexcept nogil:
    cdef Py_ssize_t H = v.hidden, n = v.units, r, j
    cdef const floating *z
    cdef const floating *rg
    cdef const floating *cand
    cdef const floating *rec
    cdef const floating *h_prev
    cdef const floating *d_out
    cdef const floating *dV
    cdef floating *dz
    cdef floating *dr
    cdef floating *dn
    cdef floating *drec
    cdef floating *dh
    cdef floating *d_b_rn = <floating *> v.d_params
    cdef floating d
    for r in range(v.rows):
        z = <const floating *> v.pre + r * v.ld_pre
        rg, cand, rec = z + H, z + 2 * H, z + 3 * H
        h_prev = <const floating *> v.prev + r * v.ld_state
        dz = d_pre + r * v.ld_pre
        dr, dn, drec = dz + H, dz + 2 * H, dz + 3 * H
        dh = <floating *> v.d_state + r * v.ld_state
        if v.stage == 0 and not s.linear_before_reset:
            # after stage 1: dh already holds dh * z; dV = d_n R_n
            dV = <const floating *> v.d_stage_input + r * v.ld_stage_input
            for j in range(n):
                dr[j] = dV[j] * h_prev[j]
                dh[j] += dV[j] * rg[j]
            multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, rg, dr, n)
            continue
        d_out = <const floating *> v.d_out + r * v.ld_d_out
        for j in range(n):
            d = dh[j] + d_out[j]
            dn[j] = d * (1 - z[j])
            dz[j] = d * (h_prev[j] - cand[j])
            dh[j] = d * z[j]
        multiply_derivative_block(s.act_cand, <floating> s.cand_alpha, cand, dn, n)
        multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, z, dz, n)
        if s.linear_before_reset:
            for j in range(n):
                dr[j] = dn[j] * rec[j]
                drec[j] = dn[j] * rg[j]
                d_b_rn[j] += drec[j]
            multiply_derivative_block(s.act_gate, <floating> s.gate_alpha, rg, dr, n)


cdef void _forward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const GRUSpec *> cell.spec, v, <float *> v.pre)

cdef void _forward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _forward(<const GRUSpec *> cell.spec, v, <double *> v.pre)

cdef void _backward_f(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const GRUSpec *> cell.spec, v, <float *> v.d_pre)

cdef void _backward_d(const CellDesc *cell, const StepView *v) noexcept nogil:
    _backward(<const GRUSpec *> cell.spec, v, <double *> v.d_pre)


cdef class GRUKernel(CellKernel):
    """The GRU step: ``GRUKernel(gate_activation, input_activation, linear_before_reset)``, activations as
    ``(name, alpha, beta)``."""
    cdef GRUSpec spec
    cdef readonly dict spec_by_name

    def __cinit__(self, tuple gate_activation, tuple input_activation, bint linear_before_reset):
        s = &self.spec
        s.act_gate, s.gate_alpha, s.gate_beta = checked_activation(gate_activation, "gate_activation")
        s.act_cand, s.cand_alpha, s.cand_beta = checked_activation(input_activation, "input_activation")
        s.linear_before_reset = linear_before_reset
        self.spec_by_name = dict(gate_activation=gate_activation, input_activation=input_activation,
                                 linear_before_reset=bool(linear_before_reset))
        d = &self.desc
        d.n_input_blocks = 3                     # [z, r, n]
        d.n_carried = d.n_states = 1             # h
        d.state_vector[0] = 0
        d.n_cache = 0
        d.whole_rows = False
        d.n_recurrent = 2
        d.recurrent[0].stage, d.recurrent[0].first_block, d.recurrent[0].n_blocks = 0, 0, 2   # R_zr reads h_{t-1}
        d.recurrent[0].first_vector, d.recurrent[0].n_vectors = 0, 1
        d.recurrent[1].first_vector, d.recurrent[1].n_vectors = 0, 1
        if linear_before_reset:
            d.n_blocks, d.n_params = 4, 1        # the fourth block: R_n h_{t-1}; b_rn
            d.n_stages, d.n_stage_input = 1, 0
            d.recurrent[1].stage, d.recurrent[1].first_block, d.recurrent[1].n_blocks = 0, 3, 1   # R_n reads h_{t-1}
        else:
            d.n_blocks, d.n_params = 3, 0
            d.n_stages, d.n_stage_input = 2, 1   # V_t = r * h_{t-1}, the input of R_n
            d.recurrent[1].stage, d.recurrent[1].first_block, d.recurrent[1].n_blocks = 1, 2, 1   # R_n reads V_t
        d.spec = &self.spec
        d.forward_f, d.forward_d, d.backward_f, d.backward_d = _forward_f, _forward_d, _backward_f, _backward_d

    def __repr__(self):
        return "GRUKernel(" + ", ".join(f"{k}={v!r}" for k, v in self.spec_by_name.items()) + ")"
