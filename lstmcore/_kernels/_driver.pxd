# The sequence driver's C-level interface: how a cell describes itself (CellDesc, RecurrentWeight) and what its
# element-wise step receives (StepView). A cell is a CellKernel (subclass it in Cython and fill ``desc`` in
# __cinit__) with noexcept nogil step functions per dtype; the driver (_driver.pyx) does everything sequence-level.
# See docs/kernels.md ("The sequence driver") and docs/plugins.md, way (c).

cdef enum:
    MAX_BLOCKS = 8         # H-wide blocks of a pre-activation row
    MAX_VECTORS = 8        # H-wide vectors of a carried row (the states and whatever else a step carries)
    MAX_RECURRENT = 4      # recurrent weight matrices of a cell

cdef struct RecurrentWeight:
    # One recurrent weight matrix M, (n_blocks*H, n_vectors*H): at every step it adds (the H-wide vectors
    # [first_vector, first_vector + n_vectors) of its input) @ M^T into the pre-activation blocks
    # [first_block, first_block + n_blocks). The weights adding into one block are applied as one product.
    int stage                  # 0: its input is the carried row before the step; 1: the stage input V_t
    Py_ssize_t first_block, n_blocks
    Py_ssize_t first_vector, n_vectors

cdef struct StepView:
    # One call of a step: ``rows`` batch rows (all at a real step, none padded) and the hidden units
    # [unit0, unit0 + units) of every H-wide vector. Each pointer already points at unit0 of the first row; vector q of
    # row r lies at ptr + r*ld + q*hidden. Pointers are void*: cast them to the dtype of the step function.
    int stage                  # 0, or 1 for the second stage of a two-stage cell
    Py_ssize_t rows, unit0, units, hidden
    void *pre                  # forward: the pre-activations (x W^T + b + recurrence) in; what the backward needs out
    Py_ssize_t ld_pre          # (backward: read only)
    void *prev                 # the carried row before the step (read only)
    void *next                 # the carried row after the step (forward: write all of it; backward: read only)
    Py_ssize_t ld_state
    void *cache                # the step's own n_cache vectors per row (forward: write; backward: read)
    Py_ssize_t ld_cache
    void *stage_input          # V_t, the input of the stage-1 weights (forward, stage 0: write; backward: read)
    Py_ssize_t ld_stage_input
    void *out                  # forward: the output row (write)
    Py_ssize_t ld_out
    const void *params         # the step's n_params per-unit parameter vectors: vector q at params + q*hidden
    const void *mask           # the step's n_mask mask vectors of this row and step (read only; zoneout, dropout)
    Py_ssize_t ld_mask
    # backward only
    const void *d_out          # dE/d(output) (read only)
    Py_ssize_t ld_d_out
    void *d_pre                # write: dE/d(pre-activation) of this stage's blocks
    void *d_state              # in: dE/d(carried row after the step), the recurrence's share included;
                               # out: the share of dE/d(carried row before the step) that bypasses the weights
    void *d_stage_input        # stage 0 of a two-stage cell: dE/dV_t (the stage-1 deltas times their weights)
    void *d_params             # add dE/d(params) for these units (same layout as params; no other thread writes there)

ctypedef void (*cell_step)(const CellDesc *cell, const StepView *view) noexcept nogil

cdef struct CellDesc:
    Py_ssize_t n_blocks        # G: H-wide blocks of a pre-activation row
    Py_ssize_t n_input_blocks  # the first ones get the input projection x W^T + b (W is (n_input_blocks*H, I))
    Py_ssize_t n_carried       # H-wide vectors of a carried row (the states, and whatever else the step carries)
    Py_ssize_t n_states        # the public states (the variant's state_names, in order) ...
    Py_ssize_t state_vector[MAX_VECTORS]  # ... are these carried vectors; the others start at zero, are not returned
    Py_ssize_t n_cache         # H-wide vectors per row and step that the forward keeps for the backward
    Py_ssize_t n_stage_input   # H-wide vectors of V_t (0 for a one-stage cell)
    Py_ssize_t n_params        # H-long per-unit parameter vectors of the step (peepholes, ...)
    Py_ssize_t n_mask          # H-wide mask vectors per row and step the step reads (the caller's ``masks``)
    int n_stages               # 1, or 2: the stage-1 weights read V_t, which the step's stage 0 writes
    bint whole_rows            # the step needs all units of a row (a norm over the row): split rows, not units
    Py_ssize_t n_recurrent
    RecurrentWeight recurrent[MAX_RECURRENT]
    const void *spec           # the cell's own constants (activations, ...), for its step functions
    cell_step forward_f, forward_d, backward_f, backward_d


cdef class CellKernel:
    cdef CellDesc desc
