"""The symmetric products of the Newton-Schulz iteration, formed in blocks.

From the number of rows `symmetric_blocks_from()` gives on, 1024 under XLA
and 2048 otherwise, `orthogonalize()` forms the Gram matrix and the
products of polynomials in it from three blocks, and copies the fourth as
a transpose. These tests compare the result with the float64 reference of
`reference.py`, which multiplies whole matrices.
"""

import contextlib
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings

import reference
from kerasmuon import newton_schulz
from matrices import build_matrix
from matrices import matrix_parameters
from matrices import max_condition
from matrices import singular_values
from reference import Hyperparameters
from trajectory import to_numpy

HYPER = Hyperparameters()
COEFFICIENTS = (HYPER.muon_a, HYPER.muon_b, HYPER.muon_c)

# Square, wide and tall views, with an odd side that splits into unequal
# halves. The wide and tall ones are elongated by 1.5 and 2, so they also
# take the iterations on the Gram matrix alone.
LARGE_SHAPES = [(1024, 1024), (1025, 1025), (1024, 1536), (2048, 1024)]

# Float32 rounding grown by the iteration, as for ELONGATED_TOLERANCE in
# test_invariants.py. On these shapes, at the largest condition number the
# band allows, the update differed from the float64 reference by at most
# 4.2e-5 per entry with blocks and 6.9e-5 without, on the TensorFlow 2.21,
# JAX 0.4.38 and PyTorch 2.13 CPU backends.
LARGE_TOLERANCE = 2e-4

# The rounding estimate of SINGULAR_VALUE_TOLERANCE in test_invariants.py,
# which holds for the small matrices drawn by `matrix_parameters`.
SMALL_TOLERANCE = 1e-3


@contextlib.contextmanager
def blocks_from(rows):
    """Form symmetric products in blocks from `rows` rows on, with XLA or without, inside the block."""
    saved = newton_schulz.SYMMETRIC_BLOCKS_FROM, newton_schulz.SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA
    newton_schulz.SYMMETRIC_BLOCKS_FROM = newton_schulz.SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA = rows
    try:
        yield
    finally:
        newton_schulz.SYMMETRIC_BLOCKS_FROM, newton_schulz.SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA = saved


def update_of(matrix):
    """Return kerasmuon's float32 update of `matrix`, viewed as it is."""
    tensor = keras.ops.convert_to_tensor(np.asarray(matrix, dtype=np.float32))
    update = newton_schulz.muon_update(tensor, matrix.shape, COEFFICIENTS, HYPER.ns_steps)
    return to_numpy(update)


def assert_follows_reference(matrix, found, tolerance):
    """Compare an update with the float64 reference, entry by entry and in its singular values."""
    rows, columns = matrix.shape
    expected = reference.orthogonalize(matrix, matrix.shape, HYPER)
    np.testing.assert_allclose(found, expected, rtol=0, atol=tolerance)

    scale = math.sqrt(max(1.0, columns / rows))
    mapped = reference.iterate_singular_values(
        singular_values(matrix) / np.linalg.norm(matrix), HYPER
    )
    np.testing.assert_allclose(
        np.sort(singular_values(found / scale)), np.sort(mapped), rtol=0, atol=tolerance
    )


@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_large_update_matches_reference(shape):
    # These tests run without XLA on TensorFlow and PyTorch, so the blocks
    # that XLA users get from 1024 rows on are switched on here.
    rank = min(shape)
    matrix = build_matrix(*shape, rank, max_condition(rank), seed=sum(shape))

    with blocks_from(newton_schulz.SYMMETRIC_BLOCKS_FROM):
        found = update_of(matrix)

    assert_follows_reference(matrix, found, LARGE_TOLERANCE)


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(matrix_parameters())
def test_small_blocked_update_matches_reference(parameters):
    # With blocks from 2 rows on, the small matrices drawn here take every
    # path of the iteration in blocks: square, wide, tall, elongated,
    # rank-deficient, and sides that split unequally.
    matrix = build_matrix(*parameters)

    with blocks_from(2):
        found = update_of(matrix)

    assert_follows_reference(matrix, found, SMALL_TOLERANCE)


def test_blocked_gram_matrix_is_symmetric(rng):
    # The lower left block is the transpose of the upper right one, so the
    # Gram matrix is symmetric to the last bit, which a whole product is
    # not in general.
    matrix = rng.standard_normal((9, 14)).astype(np.float32)
    tensor = keras.ops.convert_to_tensor(matrix)

    with blocks_from(2):
        gram = to_numpy(newton_schulz._gram(tensor, wide=True))

    np.testing.assert_array_equal(gram, gram.T)
    expected = matrix.astype(np.float64) @ matrix.T.astype(np.float64)
    # Each entry sums 14 float32 products, so its rounding error is at
    # most about 14 * 2^-24 times the sum of their magnitudes.
    np.testing.assert_allclose(gram, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blocks", [2, None])
@pytest.mark.parametrize("shape", [(6, 6), (7, 12), (12, 7), (5, 40), (40, 5)])
def test_products_lists_every_product(shape, blocks, monkeypatch):
    # The benchmarks count FLOPs and time matmuls from products(), so it
    # must list what orthogonalize() computes, in order.
    computed = []
    matmul = keras.ops.matmul

    def recording_matmul(left, right):
        computed.append((left.shape[0], left.shape[1], right.shape[1]))
        return matmul(left, right)

    monkeypatch.setattr(newton_schulz.ops, "matmul", recording_matmul)
    matrix = keras.ops.ones(shape)
    with blocks_from(blocks or newton_schulz.SYMMETRIC_BLOCKS_FROM):
        newton_schulz.orthogonalize(matrix, COEFFICIENTS, HYPER.ns_steps)
        listed = newton_schulz.products(shape, HYPER.ns_steps)

    assert [tuple(int(side) for side in entry) for entry in computed] == listed


def test_blocks_follow_compilation():
    # XLA gains from blocks from 1024 rows on, the other engines from 2048.
    backend = keras.backend.backend()
    with_xla = newton_schulz.SYMMETRIC_BLOCKS_FROM
    without_xla = newton_schulz.SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA
    assert with_xla < without_xla

    found = {"eager": newton_schulz.symmetric_blocks_from()}
    if backend == "tensorflow":
        import tensorflow as tf

        def probe(key):
            found[key] = newton_schulz.symmetric_blocks_from()
            return tf.constant(0.0)

        tf.function(lambda: probe("xla"), jit_compile=True)()
        tf.function(lambda: probe("graph"), jit_compile=False)()
        assert found == {"eager": without_xla, "xla": with_xla, "graph": without_xla}
    elif backend == "jax":
        assert found == {"eager": with_xla}
    else:
        assert found == {"eager": without_xla}
