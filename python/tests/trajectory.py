"""Helpers that run `kerasmuon.Muon` and the NumPy reference side by side.

The test files that compare trajectories share the variables, the gradients
and the error bound defined here.
"""

import dataclasses

import keras
import numpy as np
from keras import layers

import kerasmuon
import reference
from reference import ADAMW
from reference import MUON

# The module computes in float32 and the reference in float64. The tests
# compare displacements, the value after k steps minus the initial value. The
# error, max |module - reference| over the entries, may be at most
#
#     tolerance * path + k * ROUNDINGS_PER_STEP * 2**-24 * max |value|
#
# Here path is the sum over steps of max |reference step|, which cannot cancel
# out the way a displacement can. The second term covers the rounding of the
# stored float32 value. Each step rounds the decay product, two subtractions
# and the stored result by up to half an ulp (2**-24 relative) each. This term
# dominates for values near 1, such as a LayerNormalization scale.
#
# Measured with run_both over 3 seeds of the settings in test_steps.py, 25
# steps each, on the TensorFlow 2.21, JAX 0.4.38 and PyTorch 2.13 CPU
# backends (2-core AMD EPYC, x86-64): the Muon error never exceeded the
# rounding term, and the AdamW error beyond it was at most 8.1e-6 * path on
# each backend. Most of that comes from 1 - adam_beta_2**t: 0.999 in float32
# is off by 1.3e-8, which is 1.3e-5 of 1 - 0.999 and about 6.4e-6 after the
# square root.
#
# MUON_TOLERANCE is the 1e-5 that the module is held to. ADAMW_TOLERANCE must
# be wider, because the same cancellation in 1 - adam_beta_2**t turns one
# float32 ulp of adam_beta_2**t into 6e-5 of the step (3e-5 after the square
# root), and ops.power is not correctly rounded in every math library. The
# AdamW error above was the same to all printed digits on the three backends.
MUON_TOLERANCE = 1e-5
ADAMW_TOLERANCE = 1e-4
ROUNDINGS_PER_STEP = 4
FLOAT32_HALF_ULP = 2.0**-24


@dataclasses.dataclass
class Case:
    """A variable under test, with the step and matrix view it should get."""

    label: str
    variable: keras.Variable
    step: str
    view: tuple = None


def build_cases():
    """Create variables inside standalone layers, so their paths are known.

    Returns one Case per routed kind: wide and tall Dense kernels, a Conv1D
    kernel, a Conv2D kernel, MultiHeadAttention query and output kernels, an
    Embedding table, Dense and attention biases, a LayerNormalization scale
    and a scalar.
    """
    wide = layers.Dense(12, name="wide_dense")
    wide.build((None, 5))
    tall = layers.Dense(4, name="tall_dense")
    tall.build((None, 10))
    conv1d = layers.Conv1D(6, 3, name="conv1d")
    conv1d.build((None, 8, 4))
    conv2d = layers.Conv2D(20, 2, name="conv2d")
    conv2d.build((None, 5, 5, 3))
    attention = layers.MultiHeadAttention(num_heads=2, key_dim=5, name="attention")
    attention.build((None, 8, 6), (None, 8, 6))
    embedding = layers.Embedding(20, 7, name="token_embedding")
    embedding.build((None, 5))
    norm = layers.LayerNormalization(name="norm")
    norm.build((None, 6))
    scalar = keras.Variable(0.5, name="temperature")

    query = attention.query_dense
    output = attention.output_dense
    return [
        Case("wide dense", wide.kernel, MUON, reference.dense_view((5, 12))),
        Case("tall dense", tall.kernel, MUON, reference.dense_view((10, 4))),
        Case("conv1d", conv1d.kernel, MUON, reference.convolution_view((3, 4, 6))),
        Case("conv2d", conv2d.kernel, MUON, reference.convolution_view((2, 2, 3, 20))),
        Case(
            "attention query",
            query.kernel,
            MUON,
            reference.attention_input_view((6, 2, 5)),
        ),
        Case(
            "attention output",
            output.kernel,
            MUON,
            reference.attention_output_view((2, 5, 6)),
        ),
        Case("embedding", embedding.embeddings, ADAMW),
        Case("dense bias", wide.bias, ADAMW),
        Case("attention query bias", query.bias, ADAMW),
        Case("layer norm scale", norm.gamma, ADAMW),
        Case("scalar", scalar, ADAMW),
    ]


def to_numpy(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def random_gradients(rng, cases, steps):
    """Return float32 gradients, one list per step, with a scale that varies by step."""
    gradients = []
    for _ in range(steps):
        scale = 10.0 ** rng.uniform(-2, 1)
        gradients.append(
            [
                (scale * rng.standard_normal(tuple(case.variable.shape))).astype(
                    np.float32
                )
                for case in cases
            ]
        )
    return gradients


@dataclasses.dataclass
class Trajectory:
    """Initial value and per-step displacements of one variable."""

    initial: np.ndarray
    module: list = dataclasses.field(default_factory=list)
    reference: list = dataclasses.field(default_factory=list)


def apply_gradients(optimizer, pairs):
    optimizer.apply_gradients(pairs)


def run_both(
    cases,
    gradients,
    hyper,
    optimizer=None,
    excluded_from_decay=(),
    apply_step=apply_gradients,
    reference_gradients=None,
    learning_rates=None,
):
    """Apply every gradient step with kerasmuon and with the reference.

    `apply_step(optimizer, pairs)` applies one step's list of (gradient,
    variable) pairs to the module. The reference gets `reference_gradients`
    instead of `gradients` where given, for features that change a gradient
    before the step, and the learning rate `learning_rates[k]` at step k
    instead of `hyper.learning_rate` where given.

    Returns {label: Trajectory}, with one displacement (value minus initial
    value) per step from each side.
    """
    if optimizer is None:
        optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    if reference_gradients is None:
        reference_gradients = gradients
    if learning_rates is None:
        learning_rates = [hyper.learning_rate] * len(gradients)
    trajectories = {
        case.label: Trajectory(to_numpy(case.variable)) for case in cases
    }
    states = [
        reference.VariableState(
            trajectories[case.label].initial,
            case.step,
            case.view,
            decay=case.label not in excluded_from_decay,
        )
        for case in cases
    ]

    for iteration, step_gradients in enumerate(gradients):
        apply_step(
            optimizer,
            [
                (keras.ops.convert_to_tensor(gradient), case.variable)
                for gradient, case in zip(step_gradients, cases)
            ],
        )
        step_hyper = dataclasses.replace(hyper, learning_rate=learning_rates[iteration])
        reference.reference_step(
            states, reference_gradients[iteration], iteration, step_hyper
        )
        for case, state in zip(cases, states):
            trajectory = trajectories[case.label]
            trajectory.module.append(to_numpy(case.variable) - trajectory.initial)
            trajectory.reference.append(state.value - trajectory.initial)
    return trajectories


def error_and_bound(
    trajectory,
    tolerance,
    half_ulp=FLOAT32_HALF_ULP,
    roundings_per_step=ROUNDINGS_PER_STEP,
):
    """Yield (error, allowed error) per step, as described at the top of the file.

    `half_ulp` and `roundings_per_step` describe how the stored value is
    rounded, which differs for variables of another dtype than float32.
    """
    path = 0.0
    previous = np.zeros_like(trajectory.initial)
    magnitude = np.max(np.abs(trajectory.initial))
    steps = zip(trajectory.module, trajectory.reference)
    for step, (actual, expected) in enumerate(steps, start=1):
        path += np.max(np.abs(expected - previous))
        previous = expected
        magnitude = max(magnitude, np.max(np.abs(trajectory.initial + expected)))

        error = np.max(np.abs(actual - expected))
        rounding = step * roundings_per_step * half_ulp * magnitude
        yield error, tolerance * path + rounding


def tolerance_for(case):
    return MUON_TOLERANCE if case.step == MUON else ADAMW_TOLERANCE


def assert_matches_reference(cases, trajectories):
    for case in cases:
        trajectory = trajectories[case.label]
        bounds = error_and_bound(trajectory, tolerance_for(case))
        for step, (error, allowed) in enumerate(bounds, start=1):
            assert error <= allowed, (
                f"{case.label} after step {step}: error {error:.3g} "
                f"exceeds {allowed:.3g}"
            )
