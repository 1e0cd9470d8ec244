"""Up to 25 optimizer steps of `kerasmuon.Muon` against the NumPy reference."""

import keras
import numpy as np
import pytest

import kerasmuon
import reference
from reference import ADAMW
from reference import MUON
from reference import Hyperparameters
from trajectory import assert_matches_reference
from trajectory import build_cases
from trajectory import random_gradients
from trajectory import run_both
from trajectory import to_numpy

STEPS = 25

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
