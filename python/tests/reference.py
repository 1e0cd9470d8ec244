"""NumPy float64 reference of the Muon and AdamW steps of `kerasmuon.Muon`.

This file follows the written specification of the optimizer, not the code of
the module, so that a test comparing the two fails when the module drifts from
the specification. It does not import kerasmuon.
"""

import dataclasses
import math

import numpy as np

MUON = "muon"
ADAMW = "adamw"


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Numeric and boolean arguments of `Muon`, with the specified defaults."""

    learning_rate: float = 0.001
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay: float = 0.1
    muon_a: float = 3.4445
    muon_b: float = -4.775
    muon_c: float = 2.0315
    adam_lr_ratio: float = 0.1
    momentum: float = 0.95
    ns_steps: int = 6
    nesterov: bool = True

    def as_kwargs(self):
        """Return the fields as keyword arguments for `kerasmuon.Muon`."""
        return dataclasses.asdict(self)


# Arguments of `Muon.__init__` that are not numeric hyperparameters, with the
# specified defaults.
ROUTING_DEFAULTS = {
    "exclude_layers": None,
    "exclude_embeddings": True,
    "name": "muon",
}


def dense_view(shape):
    """Return the matrix view of a 2D kernel: the kernel as it is."""
    fan_in, fan_out = shape
    return (fan_in, fan_out)


def convolution_view(shape):
    """Return the matrix view of a Conv1D or Conv2D kernel shaped (..., in, out)."""
    return (math.prod(shape[:-1]), shape[-1])


def attention_input_view(shape):
    """Return the view of a MultiHeadAttention query, key or value kernel.

    The kernel is shaped (d, heads, head_dim) and maps d to heads * head_dim.
    """
    model_dim, heads, head_dim = shape
    return (model_dim, heads * head_dim)


def attention_output_view(shape):
    """Return the view of a MultiHeadAttention output kernel (heads, head_dim, d)."""
    heads, head_dim, model_dim = shape
    return (heads * head_dim, model_dim)


def orthogonalize(direction, view, hyper):
    """Return the Muon update of a direction, shaped like the direction.

    The direction is reshaped to its (fan_in, fan_out) view, transposed when it
    has more rows than columns, normalized by its Frobenius norm and put
    through `ns_steps` quintic Newton-Schulz iterations. The result is
    transposed back, reshaped and scaled by sqrt(max(1, fan_out / fan_in)).
    """
    fan_in, fan_out = view
    x = np.asarray(direction, dtype=np.float64).reshape(view)
    transposed = fan_in > fan_out
    if transposed:
        x = x.T

    norm = np.linalg.norm(x)
    if norm > 0:
        x = x / norm

    for _ in range(hyper.ns_steps):
        a = x @ x.T
        b = hyper.muon_b * a + hyper.muon_c * (a @ a)
        x = hyper.muon_a * x + b @ x

    if transposed:
        x = x.T
    scale = math.sqrt(max(1.0, fan_out / fan_in))
    return x.reshape(np.shape(direction)) * scale


@dataclasses.dataclass
class VariableState:
    """Value and optimizer state of one variable in the reference.

    `step` is MUON or ADAMW. `view` is the (fan_in, fan_out) matrix view,
    needed only by the Muon step. `decay` is False for a variable listed in
    `exclude_from_weight_decay`.
    """

    value: np.ndarray
    step: str
    view: tuple = None
    decay: bool = True
    momentum: np.ndarray = None
    velocity: np.ndarray = None

    def __post_init__(self):
        self.value = np.array(self.value, dtype=np.float64)
        self.momentum = np.zeros_like(self.value)
        self.velocity = np.zeros_like(self.value)


def apply_weight_decay(state, learning_rate, hyper):
    """Shrink the value by value * weight_decay * learning_rate, if it decays."""
    if hyper.weight_decay is None or not state.decay:
        return
    state.value = state.value - state.value * hyper.weight_decay * learning_rate


def muon_step(state, gradient, hyper):
    """Apply weight decay and one Muon step to `state`, in place."""
    gradient = np.asarray(gradient, dtype=np.float64)
    apply_weight_decay(state, hyper.learning_rate, hyper)

    state.momentum = hyper.momentum * state.momentum + gradient
    if hyper.nesterov:
        direction = gradient + hyper.momentum * state.momentum
    else:
        direction = state.momentum

    update = orthogonalize(direction, state.view, hyper)
    state.value = state.value - hyper.learning_rate * update


def adamw_step(state, gradient, iteration, hyper):
    """Apply weight decay and one AdamW step to `state`, in place.

    `iteration` is the optimizer's iteration count before this step, so the
    first step uses t = 1.
    """
    gradient = np.asarray(gradient, dtype=np.float64)
    learning_rate = hyper.learning_rate * hyper.adam_lr_ratio
    apply_weight_decay(state, learning_rate, hyper)

    state.momentum = state.momentum + (gradient - state.momentum) * (
        1 - hyper.adam_beta_1
    )
    state.velocity = state.velocity + (np.square(gradient) - state.velocity) * (
        1 - hyper.adam_beta_2
    )

    t = iteration + 1
    correction = math.sqrt(1 - hyper.adam_beta_2**t) / (1 - hyper.adam_beta_1**t)
    direction = state.momentum / (np.sqrt(state.velocity) + hyper.epsilon)
    state.value = state.value - learning_rate * correction * direction


def reference_step(states, gradients, iteration, hyper):
    """Apply one optimizer step to every state, each with its own gradient."""
    for state, gradient in zip(states, gradients):
        if state.step == MUON:
            muon_step(state, gradient, hyper)
        else:
            adamw_step(state, gradient, iteration, hyper)


def iterate_singular_values(sigma, hyper):
    """Return the singular values that `ns_steps` iterations make of `sigma`.

    `sigma` contains singular values of the normalized matrix, in [0, 1]. Each
    iteration maps X to a X + b (X X^T) X + c (X X^T)^2 X, which keeps the
    singular vectors and maps every singular value s to a s + b s^3 + c s^5
    on its own.
    """
    s = np.asarray(sigma, dtype=np.float64)
    for _ in range(hyper.ns_steps):
        s = hyper.muon_a * s + hyper.muon_b * s**3 + hyper.muon_c * s**5
    return s


def singular_value_band(hyper, smallest):
    """Return (low, high), the range of the iterated singular values over [smallest, 1].

    The range is taken over 200,001 log-spaced points, so it is an estimate.
    For the default coefficients and 6 steps it is within 1e-10 of the range
    over 20,000,001 points.
    """
    sigma = np.logspace(np.log10(smallest), 0.0, 200_001)
    iterated = iterate_singular_values(sigma, hyper)
    return float(iterated.min()), float(iterated.max())
