# The gated-cell kernel family: one forward and one BPTT kernel over a whole time-major sequence, parameterised by a
# CellSpec (which gates exist, peepholes, coupling, activations, clip). Cython plugins can cimport these.
from cython cimport floating

cdef struct CellSpec:
    Py_ssize_t hidden          # H
    Py_ssize_t n_blocks        # G: blocks of H rows in W, R, b: the present gates among (i, f, o), then z last
    Py_ssize_t blk_i, blk_f, blk_o, blk_z   # block index of each gate in W/R/b, -1 when absent (f is absent if coupled)
    bint coupled               # f = 1 - i
    Py_ssize_t pk_i, pk_f, pk_o             # block index of each peephole vector in p, -1 when absent
    int act_gate, act_input, act_output     # ActivationKind of sigma, g, h
    double gate_alpha, gate_beta, input_alpha, input_beta, output_alpha, output_beta
    double clip                # > 0: clamp the pre-activations of z, i, f, o to [-clip, clip]; 0: no clip
    bint gate_recurrence       # FGR: [i, f, o] pre-activations += Rg [i, f, o]_{t-1} (needs blocks i, f, o = 0, 1, 2)

cdef void cell_forward(const CellSpec *s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, bint reverse,
                       const floating *x, const floating *W, const floating *R, const floating *b,
                       const floating *p, const floating *Rg, const int *lengths,
                       floating *h_states, floating *c_states, floating *a_states,
                       floating *gates, floating *hc, floating *pre,
                       floating *out, Py_ssize_t ld_out, floating *packed) noexcept nogil

cdef void cell_backward(const CellSpec *s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, bint reverse,
                        const floating *x, const floating *W, const floating *R, const floating *p,
                        const floating *Rg, const int *lengths,
                        const floating *h_states, const floating *c_states, const floating *a_states,
                        const floating *gates, const floating *hc, const floating *pre,
                        const floating *d_out, Py_ssize_t ld_dout,
                        floating *dh, floating *dc, floating *da, floating *d_gates, floating *work,
                        floating *dW, floating *dR, floating *db, floating *dp, floating *dRg,
                        floating *dx, bint accumulate_dx, floating *packed) noexcept nogil
