"""Test matrices with a chosen shape, rank and condition number."""

import math

import numpy as np
from hypothesis import strategies as st

# The generated matrices keep every nonzero normalized singular value at or
# above this, the low end of the range test_invariants.py checks.
SMALLEST_NORMALIZED = 5e-4

# Matrix sides are drawn from this set rather than from every size up to 24,
# because on JAX every new shape compiles each operation anew.
SIDES = (1, 2, 3, 5, 8, 13, 24)


def build_matrix(rows, columns, rank, condition, seed):
    """Return a float64 matrix with the given rank and condition number.

    The nonzero singular values run from 1 down to 1 / condition, with the
    ones between spread at random on a log scale, and the singular vectors
    are random.
    """
    rng = np.random.default_rng(seed)
    exponents = np.sort(rng.uniform(0.0, 1.0, rank))
    exponents[0] = 0.0
    if rank > 1:
        exponents[-1] = 1.0
    singular_values = condition ** (-exponents)
    left, _ = np.linalg.qr(rng.standard_normal((rows, rank)))
    right, _ = np.linalg.qr(rng.standard_normal((columns, rank)))
    return (left * singular_values) @ right.T


def max_condition(rank):
    """Return the largest condition number that keeps the band assumption.

    The Frobenius norm is at most sqrt(rank) times the largest singular
    value, so the smallest normalized singular value is at least
    1 / (condition * sqrt(rank)).
    """
    return 1.0 / (SMALLEST_NORMALIZED * math.sqrt(rank))


@st.composite
def matrix_parameters(draw):
    """Draw (rows, columns, rank, condition, seed) for `build_matrix`.

    Shapes are square, tall or wide. The rank is either min(rows, columns)
    or drawn up to it, which gives rank-deficient matrices. The condition
    number is below 10 for well-conditioned matrices and up to
    `max_condition(rank)` for ill-conditioned ones.
    """
    rows = draw(st.sampled_from(SIDES))
    shape = draw(st.sampled_from(["square", "tall", "wide"]))
    if shape == "square":
        columns = rows
    elif shape == "tall":
        columns = draw(st.sampled_from([side for side in SIDES if side <= rows]))
    else:
        columns = draw(st.sampled_from([side for side in SIDES if side >= rows]))
    full_rank = min(rows, columns)
    rank = draw(st.one_of(st.just(full_rank), st.integers(1, full_rank)))
    if draw(st.booleans()):
        condition = 10 ** draw(st.floats(0.0, 1.0))
    else:
        condition = 10 ** draw(st.floats(1.0, math.log10(max_condition(rank))))
    seed = draw(st.integers(0, 2**32 - 1))
    return rows, columns, rank, condition, seed


def singular_values(matrix):
    return np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
