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


def orthogonalize(matrix, coefficients, steps):
    """Run `steps` quintic Newton-Schulz iterations on a 2D tensor.

    Each iteration maps X to a X + b (X X^T) X + c (X X^T)^2 X. It is
    computed as P X with P = a I + b G + c G^2 and G = X X^T when X has no
    more rows than columns, and as X P with G = X^T X otherwise, so G is
    always the Gram matrix of the shorter side. Folding `a X` into P keeps
    every element-wise operation on the small matrix G, and the tall case
    needs no transposed copy of X at the start and the end.
    """
    a, b, c = coefficients
    rows, columns = matrix.shape
    wide = rows <= columns
    x = _normalize_frobenius(matrix)
    identity = ops.eye(min(rows, columns), dtype=x.dtype)

    for _ in range(steps):
        if wide:
            gram = ops.matmul(x, ops.transpose(x))
        else:
            gram = ops.matmul(ops.transpose(x), x)
        polynomial = a * identity + b * gram + c * ops.matmul(gram, gram)
        x = ops.matmul(polynomial, x) if wide else ops.matmul(x, polynomial)
    return x


def muon_update(direction, view, coefficients, steps):
    """Return the scaled, orthogonalized update for a variable.

    `direction` has the variable's shape and dtype; `view` is its
    `(fan_in, fan_out)` matrix view. The result has the same shape and dtype,
    scaled by sqrt(max(1, fan_out / fan_in)).
    """
    dtype = backend.standardize_dtype(direction.dtype)
    fan_in, fan_out = view

    matrix = ops.reshape(ops.cast(direction, compute_dtype(dtype)), view)
    update = orthogonalize(matrix, coefficients, steps)

    scale = math.sqrt(max(1.0, fan_out / fan_in))
    update = ops.reshape(update * scale, direction.shape)
    return ops.cast(update, dtype)


def _normalize_frobenius(x):
    """Divide by the Frobenius norm, keeping a zero matrix zero.

    Dividing by the largest magnitude first keeps the squares in range, so
    entries near 1e-30 or 1e30 in float32 neither underflow nor overflow.
    """
    peak = ops.max(ops.abs(x))
    x = x / ops.where(peak > 0, peak, ops.ones_like(peak))
    norm = ops.sqrt(ops.sum(ops.square(x)))
    return x / ops.where(norm > 0, norm, ops.ones_like(norm))

