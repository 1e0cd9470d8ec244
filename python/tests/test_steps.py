"""Several optimizer steps of `kerasmuon.Muon` against the NumPy reference."""

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
import reference
from reference import ADAMW
from reference import MUON
from reference import Hyperparameters

STEPS = 6

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
# Measured over 6 seeds of these cases (TensorFlow 2.21 CPU backend, x86-64),
# the Muon error never exceeded the rounding term, and the AdamW error beyond
# it was at most 8.1e-6 * path. Most of that comes from 1 - adam_beta_2**t:
# 0.999 in float32 is off by 1.3e-8, which is 1.3e-5 of 1 - 0.999 and about
# 6.4e-6 after the square root. The Newton-Schulz iteration can amplify
# rounding, because its polynomial has slope muon_a = 3.4445 near zero, so
# MUON_TOLERANCE leaves room for that on other hardware. ADAMW_TOLERANCE
# leaves a margin of about 12 over the measurement.
MUON_TOLERANCE = 2e-5
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


def run_both(cases, gradients, hyper, optimizer=None, excluded_from_decay=()):
    """Apply every gradient step with kerasmuon and with the reference.

    Returns {label: Trajectory}, with one displacement (value minus initial
    value) per step from each side.
    """
    if optimizer is None:
        optimizer = kerasmuon.Muon(**hyper.as_kwargs())
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
        optimizer.apply_gradients(
            [
                (keras.ops.convert_to_tensor(gradient), case.variable)
                for gradient, case in zip(step_gradients, cases)
            ]
        )
        reference.reference_step(states, step_gradients, iteration, hyper)
        for case, state in zip(cases, states):
            trajectory = trajectories[case.label]
            trajectory.module.append(to_numpy(case.variable) - trajectory.initial)
            trajectory.reference.append(state.value - trajectory.initial)
    return trajectories


def error_and_bound(trajectory, tolerance):
    """Yield (error, allowed error) per step, as described at the top of the file."""
    path = 0.0
    previous = np.zeros_like(trajectory.initial)
    magnitude = np.max(np.abs(trajectory.initial))
    steps = zip(trajectory.module, trajectory.reference)
    for step, (actual, expected) in enumerate(steps, start=1):
        path += np.max(np.abs(expected - previous))
        previous = expected
        magnitude = max(magnitude, np.max(np.abs(trajectory.initial + expected)))

        error = np.max(np.abs(actual - expected))
        rounding = step * ROUNDINGS_PER_STEP * FLOAT32_HALF_ULP * magnitude
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


# Each setting changes the arguments below from the specified defaults. The
# learning rate is raised from 0.001 so that each step moves the values far
# above float32 rounding of the values themselves.
SETTINGS = {
    "defaults": {},
    "nesterov off": {"nesterov": False},
    "no weight decay": {"weight_decay": None},
    "adam lr ratio": {"adam_lr_ratio": 0.5, "weight_decay": 0.3},
    "adam betas": {"adam_beta_1": 0.8, "adam_beta_2": 0.99, "epsilon": 1e-3},
    "momentum": {"momentum": 0.6, "nesterov": False},
    "cubic iteration": {"muon_a": 1.5, "muon_b": -0.5, "muon_c": 0.0, "ns_steps": 4},
}


@pytest.mark.parametrize("changes", SETTINGS.values(), ids=SETTINGS.keys())
def test_steps_match_reference(changes, rng):
    hyper = Hyperparameters(**{"learning_rate": 0.02, **changes})
    cases = build_cases()
    gradients = random_gradients(rng, cases, STEPS)

    trajectories = run_both(cases, gradients, hyper)

    assert_matches_reference(cases, trajectories)


@pytest.mark.parametrize("excluded", ["kernel", "gamma"])
def test_excluded_from_weight_decay(excluded, rng):
    # Keras's exclude_from_weight_decay matches var_names in variable names,
    # so "kernel" excludes every kernel and "gamma" the LayerNorm scale.
    hyper = Hyperparameters(learning_rate=0.02, weight_decay=0.5)
    cases = build_cases()
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    optimizer.exclude_from_weight_decay(var_names=[excluded])
    excluded_labels = [
        case.label for case in cases if case.variable.name == excluded
    ]
    gradients = random_gradients(rng, cases, STEPS)

    trajectories = run_both(
        cases, gradients, hyper, optimizer, excluded_from_decay=excluded_labels
    )

    assert excluded_labels
    assert_matches_reference(cases, trajectories)


@pytest.mark.parametrize("weight_decay", [0.1, None])
def test_zero_gradient_only_decays(weight_decay):
    hyper = Hyperparameters(learning_rate=0.02, weight_decay=weight_decay)
    cases = build_cases()
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    initial = {case.label: to_numpy(case.variable) for case in cases}

    optimizer.apply_gradients(
        [(keras.ops.zeros(case.variable.shape), case.variable) for case in cases]
    )

    for case in cases:
        value = to_numpy(case.variable)
        lr = hyper.learning_rate
        if case.step == ADAMW:
            lr *= hyper.adam_lr_ratio
        factor = 1.0 if weight_decay is None else 1.0 - weight_decay * lr
        assert np.all(np.isfinite(value)), case.label
        # The module rounds one product and one subtraction per entry, about
        # 1.2e-7 relative, so rtol=1e-6 leaves a margin of 8.
        np.testing.assert_allclose(
            value, initial[case.label] * factor, rtol=1e-6, err_msg=case.label
        )


def test_repeated_zero_gradients_no_motion():
    # From a fresh optimizer, zero gradients keep the momentum at zero, so the
    # Frobenius normalization gets a zero matrix at every step. It must return
    # zeros rather than 0 / 0 = NaN, and without decay nothing may move.
    hyper = Hyperparameters(learning_rate=0.02, weight_decay=None)
    cases = [case for case in build_cases() if case.step == MUON]
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    initial = [to_numpy(case.variable) for case in cases]

    for _ in range(3):
        optimizer.apply_gradients(
            [(keras.ops.zeros(case.variable.shape), case.variable) for case in cases]
        )

    for case, value in zip(cases, initial):
        np.testing.assert_array_equal(
            to_numpy(case.variable), value, err_msg=case.label
        )


def assert_state_close(actual, expected, label):
    # Each step adds a few float32 roundings (2**-24 relative each) to every
    # entry. An entry where positive and negative gradients cancel keeps the
    # absolute error of the larger terms, so the bound is relative to the
    # largest entry. 1e-6 of it allows about 16 roundings.
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(
        actual, expected, rtol=1e-6, atol=1e-6 * scale, err_msg=label
    )


@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_buffer_update(nesterov, rng, state_of):
    hyper = Hyperparameters(learning_rate=0.02, momentum=0.9, nesterov=nesterov)
    cases = [case for case in build_cases() if case.step == MUON]
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    gradients = random_gradients(rng, cases, 3)
    expected = [np.zeros(tuple(case.variable.shape)) for case in cases]

    for step_gradients in gradients:
        optimizer.apply_gradients(
            [
                (keras.ops.convert_to_tensor(gradient), case.variable)
                for gradient, case in zip(step_gradients, cases)
            ]
        )
        for index, (case, gradient) in enumerate(zip(cases, step_gradients)):
            expected[index] = hyper.momentum * expected[index] + gradient
            buffer = state_of(optimizer, case.variable)["momentum"]
            assert_state_close(buffer, expected[index], case.label)


def test_adamw_moments_after_steps(rng, state_of):
    hyper = Hyperparameters(adam_beta_1=0.8, adam_beta_2=0.99)
    cases = [case for case in build_cases() if case.step == ADAMW]
    optimizer = kerasmuon.Muon(**hyper.as_kwargs())
    gradients = random_gradients(rng, cases, 3)
    states = [
        reference.VariableState(to_numpy(case.variable), case.step) for case in cases
    ]

    for iteration, step_gradients in enumerate(gradients):
        optimizer.apply_gradients(
            [
                (keras.ops.convert_to_tensor(gradient), case.variable)
                for gradient, case in zip(step_gradients, cases)
            ]
        )
        reference.reference_step(states, step_gradients, iteration, hyper)

    for case, state in zip(cases, states):
        found = state_of(optimizer, case.variable)
        assert_state_close(found["momentum"], state.momentum, case.label)
        assert_state_close(found["velocity"], state.velocity, case.label)
