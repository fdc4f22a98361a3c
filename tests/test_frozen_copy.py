"""The layer's compiled copy-and-check (``lstmcore._kernels._driver.frozen_copy``): an exact, read-only, C-contiguous
copy, None for any NaN or Inf wherever it lies, and a clear error for arrays it does not take."""
import numpy as np
import pytest

from lstmcore._kernels._driver import frozen_copy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 31, 32, 33, 100, 1000])
def test_every_position_of_a_bad_value_is_found(dtype, n):
    a = np.random.default_rng(n).normal(size=n).astype(dtype)
    copy = frozen_copy(a, True)
    assert copy is not None and np.array_equal(copy, a) and not copy.flags.writeable and copy.flags.c_contiguous
    for bad in (np.nan, np.inf, -np.inf):
        for i in range(n):
            b = a.copy()
            b[i] = bad
            assert frozen_copy(b, True) is None
            assert frozen_copy(b, False) is not None  # check_finite off: copied as is


def test_copies_a_strided_view_in_c_order_and_keeps_huge_finite_values():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(1, 0, 2)
    copy = frozen_copy(a, True)
    assert copy.flags.c_contiguous and np.array_equal(copy, a)
    big = np.full(50, np.finfo(np.float32).max, np.float32)  # a sum would overflow; x * 0 does not
    assert frozen_copy(big, True) is not None


def test_refuses_other_dtypes_and_non_arrays():
    with pytest.raises(TypeError, match="float32 or float64"):
        frozen_copy(np.zeros(3, np.int64), True)
    with pytest.raises(TypeError):
        frozen_copy([1.0, 2.0], True)
