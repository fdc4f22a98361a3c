# The gated-cell family (Greff et al.'s LSTM block with every Odyssey change) as a step of the sequence driver.
from lstmcore._kernels._driver cimport CellKernel

cdef struct GatedSpec:
    Py_ssize_t blk_i, blk_f, blk_o, blk_z   # block of each gate in a pre-activation row, -1 when absent
    bint coupled                            # f = 1 - i
    Py_ssize_t pk_i, pk_f, pk_o             # peephole vector of each gate in the step's parameters, -1 when absent
    int act_gate, act_input, act_output     # ActivationKind of sigma, g, h
    double gate_alpha, gate_beta, input_alpha, input_beta, output_alpha, output_beta
    double clip                             # > 0: clamp the pre-activations of z, i, f, o to [-clip, clip]
    bint gate_recurrence                    # FGR: the carried row also holds [i, f, o] (from vector vec_gates)
    Py_ssize_t vec_c                        # the carried vector of the cell c (h is vector 0)
    Py_ssize_t vec_gates                    # FGR: the first carried vector of [i, f, o]
    bint zoneout                            # masks 0, 1: zoneout of h and of c; the cache keeps c~ (ck_cell)
    bint recurrent_dropout                  # mask mk_dropout: R reads vector vec_dropped = mask * h
    Py_ssize_t vec_dropped, mk_dropout, ck_cell


cdef class GatedKernel(CellKernel):
    cdef GatedSpec spec
    cdef readonly dict spec_by_name
