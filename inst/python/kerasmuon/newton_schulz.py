"""The orthogonalized Muon update, written with `keras.ops` only."""

import math

from keras import backend, ops

# Low-precision variables are orthogonalized in float32, because the
# quintic iteration loses its accuracy in 16-bit arithmetic. The optimizer
# runs the AdamW step of such variables in float32 too.
_LOW_PRECISION = ("float16", "bfloat16")


def compute_dtype(dtype):
    """Return float32 for a float16 or bfloat16 `dtype`, else `dtype` itself."""
    dtype = backend.standardize_dtype(dtype)
    return "float32" if dtype in _LOW_PRECISION else dtype


# A matrix whose longer side is at least this many times its shorter side
# runs several iterations per product with the matrix itself (see
# `orthogonalize()`). For an n x rn matrix, 3 iterations take
# (4r + 18) n^3 FLOPs that way and (12r + 6) n^3 one at a time, so the
# grouping saves work from r = 1.5 on.
ELONGATED_RATIO = 1.5

# Divisors are at least the smallest normal float32, so that a zero matrix
# stays zero, in one operation instead of a comparison and a selection.
_SMALLEST_NORMAL = 2.0**-126

# Symmetric products with at least this many rows are formed in blocks,
# with 3/4 of the multiplications (see `_symmetric_blocks()`). The first
# threshold applies when XLA compiles the step, as JAX always does and
# TensorFlow does with `jit_compile`, and the second otherwise. Measured on 2
# CPU cores, the time of 6 iterations with blocks against without them was,
# on 1024 x 1024 matrices, 0.91 with TensorFlow and XLA and 0.81 with JAX,
# but 1.00 to 1.11 in TensorFlow graphs without XLA and 0.99 with PyTorch.
# On 2048 x 2048 it was 0.85 to 0.95 on all of them. On 512 x 512 blocks
# saved at most 2.4%, with XLA.
SYMMETRIC_BLOCKS_FROM = 1024
SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA = 2048

# Lower bound of the squared norm after `_divide_by_peak`. The largest
# magnitude is then 1, or at least 2^-23 when a subnormal peak was clamped.
# So a nonzero matrix has a squared norm of at least 2^-46, and only a zero
# matrix meets the bound. The bound keeps the folded coefficient c s^2 f of
# `_polynomial_product` below 2 * 2^115, which is finite in float32, so a
# zero matrix stays zero.
_SQUARED_NORM_FLOOR = 2.0**-46

# At most this many iterations run on the Gram matrix alone. In float32,
# each rounding of that matrix moves its smallest eigenvalues by about 1e-7,
# and every further step without X amplifies the move. On the elongated
# views of test_invariants.py, with normalized singular values down to 5e-4,
# 6 such steps moved the output's singular values by up to 9.4e-4 from the
# float64 map. Recomputing the Gram matrix after 3 steps kept them within
# 2.5e-5 on the TensorFlow, JAX and PyTorch CPU backends.
GRAM_STEPS = 3


def orthogonalize(matrix, coefficients, steps, scale=1.0):
    """Run `steps` quintic Newton-Schulz iterations on a 2D tensor.

    The matrix is first divided by its Frobenius norm. Each iteration maps
    X to a X + b (X X^T) X + c (X X^T)^2 X, which is P X with
    P = a I + b G + c G^2 and G = X X^T when X has no more rows than
    columns, and X P with G = X^T X otherwise. So G is always the Gram
    matrix of the shorter side, and folding `a X` into P keeps every
    element-wise operation on that small matrix. The result is multiplied
    by `scale`.

    Every P is a polynomial in the first G, so the iterations can continue
    on the small matrices alone. The next Gram matrix is P G P, and the
    product of the P's is applied to X once at the end. An elongated matrix
    runs up to `GRAM_STEPS` iterations that way per product with X, which
    takes far fewer operations. A square one takes them one at a time.

    X itself is read and written as few times as possible. The squared
    Frobenius norm is the trace of the first Gram matrix, and the division
    by the norm and the multiplication by `scale` are folded into the
    coefficients of the polynomials, so they take no pass over a matrix.

    Every product but the one with X has a symmetric result. From the
    number of rows `symmetric_blocks_from()` gives on, those are formed from
    three of their four blocks, which saves a quarter of their
    multiplications.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1, got {steps!r}.")
    rows, columns = matrix.shape
    wide = rows <= columns
    x = _divide_by_peak(matrix)
    identity = ops.eye(min(rows, columns), dtype=x.dtype)

    groups = iteration_groups(matrix.shape, steps)
    for index, count in enumerate(groups):
        gram = _gram(x, wide)
        gram_scale = None
        factor = None
        if index == 0:
            squared_norm = ops.maximum(ops.trace(gram), _SQUARED_NORM_FLOOR)
            gram_scale = 1.0 / squared_norm
            factor = ops.rsqrt(squared_norm)
        if index == len(groups) - 1 and scale != 1.0:
            factor = scale if factor is None else factor * scale

        product = _polynomial_product(gram, identity, coefficients, count, gram_scale, factor)
        x = ops.matmul(product, x) if wide else ops.matmul(x, product)
    return x


def iteration_groups(shape, steps):
    """Return how many of the `steps` iterations share each Gram matrix, in order.

    An elongated matrix runs them in groups of `GRAM_STEPS`, a square one
    one at a time. The benchmarks read this to count the operations.
    """
    short, long = sorted(int(side) for side in shape)
    size = GRAM_STEPS if long >= ELONGATED_RATIO * short else 1
    return [min(size, steps - done) for done in range(0, steps, size)]


def symmetric_blocks_from(xla=None):
    """Return the number of rows from which symmetric products are formed in blocks.

    `xla` is whether XLA compiles the computation. With `None`, it is
    found from the context: JAX always compiles with XLA, TensorFlow when
    the graph being traced has `jit_compile`, and PyTorch never.
    """
    if xla is None:
        xla = backend.backend() == "jax" or _tensorflow_xla_context()
    return SYMMETRIC_BLOCKS_FROM if xla else SYMMETRIC_BLOCKS_FROM_WITHOUT_XLA


def _tensorflow_xla_context():
    """Return whether TensorFlow is tracing a graph that XLA compiles.

    TensorFlow has no public call for this. If its internal module is
    missing, the graph is taken as not compiled, which costs speed only.
    """
    if backend.backend() != "tensorflow":
        return False
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def products(shape, steps, xla=None):
    """Return the (rows, inner, columns) of each matrix product of `orthogonalize()`, in order.

    For a matrix of `shape` and `steps` iterations, with or without XLA as
    for `symmetric_blocks_from()`. A symmetric product formed in blocks
    gives its three block products. The benchmarks count the operations
    from this list, and a test checks it against the products
    `orthogonalize()` computes.
    """
    blocks_from = symmetric_blocks_from(xla)
    rows, columns = (int(side) for side in shape)
    short, long = sorted((rows, columns))
    gram = _symmetric_shapes(short, long, blocks_from)
    small = _symmetric_shapes(short, short, blocks_from)
    listed = []
    for count in iteration_groups(shape, steps):
        listed += gram
        for index in range(count):
            listed += small
            if index > 0:
                listed += small
            if index < count - 1:
                listed += 2 * small
        listed.append((short, short, long) if rows <= columns else (long, short, short))
    return listed


def _symmetric_shapes(rows, inner, blocks_from):
    """Return the products that form a symmetric rows x rows result from factors of `inner` columns."""
    if rows < blocks_from:
        return [(rows, inner, rows)]
    half = rows // 2
    return [(half, inner, half), (half, inner, rows - half), (rows - half, inner, rows - half)]


def _gram(x, wide):
    """Return the Gram matrix of the shorter side of `x`."""
    if min(x.shape) >= symmetric_blocks_from():
        rows = x if wide else ops.transpose(x)
        return _symmetric_blocks(rows, rows)
    if wide:
        return ops.matmul(x, ops.transpose(x))
    return ops.matmul(ops.transpose(x), x)


def _symmetric_product(left, right):
    """Return `left` times the symmetric `right`, a product known to be symmetric.

    These are the products of two polynomials in the same Gram matrix, which
    commute.
    """
    if left.shape[0] >= symmetric_blocks_from():
        return _symmetric_blocks(left, right)
    return ops.matmul(left, right)


def _symmetric_blocks(left, right):
    """Return `left` times the transpose of `right`, a symmetric product, from three blocks.

    With the rows of each factor split in two, the result has blocks
    [[L1 R1', L1 R2'], [L2 R1', L2 R2']], and the lower left one is the
    transpose of the upper right one. So three products of half the rows
    give the whole result, with 3/4 of the multiplications, and it is
    exactly symmetric. A symmetric `right` equals its transpose, so the
    product with it is the same.
    """
    half = left.shape[0] // 2
    left_top, left_bottom = left[:half], left[half:]
    right_top, right_bottom = right[:half], right[half:]
    top_left = ops.matmul(left_top, ops.transpose(right_top))
    top_right = ops.matmul(left_top, ops.transpose(right_bottom))
    bottom_right = ops.matmul(left_bottom, ops.transpose(right_bottom))

    top = ops.concatenate([top_left, top_right], axis=1)
    bottom = ops.concatenate([ops.transpose(top_right), bottom_right], axis=1)
    return ops.concatenate([top, bottom], axis=0)


def _polynomial_product(gram, identity, coefficients, count, gram_scale=None, factor=None):
    """Return `factor` times the product of the P's of `count` iterations that start from `gram`.

    The iterations run on G = s H, with s = `gram_scale` and H = `gram`.
    Both scalars are folded into the coefficients, so they cost no pass
    over the matrices. This works because a I + G (b I + c G) equals
    a I + H (b s I + c s^2 H). The next Gram matrix P G P equals s P H P,
    so the loop carries H and s.

    The P's are polynomials in the same Gram matrix, so they commute, and
    their product can be formed in any order.
    """
    a, b, c = coefficients
    if gram_scale is not None:
        b = b * gram_scale
        c = c * gram_scale * gram_scale
    product = None
    for index in range(count):
        last = index == count - 1
        if last and factor is not None:
            polynomial = _polynomial(gram, identity, a * factor, b * factor, c * factor)
        else:
            polynomial = _polynomial(gram, identity, a, b, c)
        product = polynomial if product is None else _symmetric_product(product, polynomial)
        if not last:
            gram = _symmetric_product(polynomial, _symmetric_product(gram, polynomial))
    return product


def _polynomial(gram, identity, a, b, c):
    """Return a I + b H + c H^2 for H = `gram`.

    It is formed as a I + H (b I + c H), which takes one element-wise
    operation fewer and matters on small matrices.
    """
    return a * identity + _symmetric_product(gram, b * identity + c * gram)


def muon_update(direction, view, coefficients, steps):
    """Return the scaled, orthogonalized update for a variable.

    `direction` has the variable's shape and dtype; `view` is its
    `(fan_in, fan_out)` matrix view. The result has the same shape and dtype,
    scaled by sqrt(max(1, fan_out / fan_in)).
    """
    dtype = backend.standardize_dtype(direction.dtype)
    fan_in, fan_out = view

    matrix = ops.reshape(ops.cast(direction, compute_dtype(dtype)), view)
    scale = math.sqrt(max(1.0, fan_out / fan_in))
    update = orthogonalize(matrix, coefficients, steps, scale=scale)
    return ops.cast(ops.reshape(update, direction.shape), dtype)


def _divide_by_peak(x):
    """Divide by the largest magnitude, keeping a zero matrix zero.

    This keeps the squares of the Gram matrix in range, so entries near
    1e-30 or 1e30 in float32 neither underflow nor overflow.
    """
    peak = ops.maximum(ops.max(ops.abs(x)), _SMALLEST_NORMAL)
    return x / peak
