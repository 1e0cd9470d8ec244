"""Features that `kerasmuon.Muon` inherits from `keras.optimizers.Optimizer`.

Each test checks what the feature means, as Keras 3.15 implements it in
keras/src/optimizers/base_optimizer.py. The NumPy reference is given the
clipped, unscaled or averaged gradient, or the learning rate of each step,
that the feature stands for.
"""

import keras
import numpy as np
import pytest

import kerasmuon
import reference
from known_gradient import NAMES
from known_gradient import TOLERANCES
from known_gradient import WeightHistory
from known_gradient import assert_fit_matches
from known_gradient import batch_gradients
from known_gradient import fit_steps
from known_gradient import linear_model
from known_gradient import make_batches
from known_gradient import reference_values
from known_gradient import trajectories
from known_gradient import weights
from reference import Hyperparameters
from trajectory import FLOAT32_HALF_ULP
from trajectory import Trajectory
from trajectory import assert_matches_reference
from trajectory import build_cases
from trajectory import error_and_bound
from trajectory import random_gradients
from trajectory import run_both
from trajectory import to_numpy
from trajectory import tolerance_for

STEPS = 6


def as_float64(gradients):
    return [[gradient.astype(np.float64) for gradient in step] for step in gradients]


def clip_each_norm(gradients, clipnorm):
    """Scale each gradient down to an L2 norm of at most `clipnorm`."""
    return [g * min(1.0, clipnorm / np.linalg.norm(g)) for g in gradients]


def clip_values(gradients, clipvalue):
    return [np.clip(g, -clipvalue, clipvalue) for g in gradients]


def clip_global_norm(gradients, clipnorm):
    """Scale all gradients of a step by one factor, to a joint norm of at most `clipnorm`."""
    joint = np.sqrt(sum(np.sum(np.square(g)) for g in gradients))
    return [g * min(1.0, clipnorm / joint) for g in gradients]


# argument: (value, function that clips one step's gradients)
CLIPPING = {
    "clipnorm": (1.0, clip_each_norm),
    "clipvalue": (0.5, clip_values),
    "global_clipnorm": (2.0, clip_global_norm),
}


@pytest.mark.parametrize("argument", CLIPPING)
def test_clipping_matches_clipped_reference(argument, rng):
    value, clip = CLIPPING[argument]
    hyper = Hyperparameters(learning_rate=0.02)
    cases = build_cases()
    gradients = random_gradients(rng, cases, STEPS)
    clipped = [clip(step, value) for step in as_float64(gradients)]
    optimizer = kerasmuon.Muon(**hyper.as_kwargs(), **{argument: value})

    trajectories_by_label = run_both(
        cases, gradients, hyper, optimizer, reference_gradients=clipped
    )

    changed = [
        not np.array_equal(original, result)
        for step_original, step_result in zip(as_float64(gradients), clipped)
        for original, result in zip(step_original, step_result)
    ]
    # Otherwise the test would not show that clipping happens.
    assert any(changed)
    assert_matches_reference(cases, trajectories_by_label)


def keras_moving_average(values, ema_momentum):
    """Return the average that Keras keeps of a sequence of values after each step.

    Keras updates the average after each step with the new value. At the
    first step its iteration count is 0 and it uses momentum 0, so the
    average starts at the value after step 1.
    """
    average = values[0]
    for value in values[1:]:
        average = ema_momentum * average + (1 - ema_momentum) * value
    return average


def assert_average_matches(label, found, trajectory, tolerance, ema_momentum):
    values = [trajectory.initial + step for step in trajectory.reference]
    expected = keras_moving_average(values, ema_momentum)
    # The average is a convex combination of the values, so its error is at
    # most the largest error of a value, plus three float32 roundings of the
    # average per step.
    largest = max(allowed for _, allowed in error_and_bound(trajectory, tolerance))
    magnitude = max(np.max(np.abs(value)) for value in values)
    rounding = len(values) * 3 * FLOAT32_HALF_ULP * magnitude
    error = np.max(np.abs(found - expected))
    assert error <= largest + rounding, f"{label}: error {error:.3g}"


def test_ema_finalize_sets_average(rng):
    ema_momentum = 0.7
    hyper = Hyperparameters(learning_rate=0.02)
    cases = build_cases()
    optimizer = kerasmuon.Muon(
        **hyper.as_kwargs(), use_ema=True, ema_momentum=ema_momentum
    )
    gradients = random_gradients(rng, cases, STEPS)

    trajectories_by_label = run_both(cases, gradients, hyper, optimizer)
    optimizer.finalize_variable_values([case.variable for case in cases])

    # Until finalize_variable_values, the average does not change the steps.
    assert_matches_reference(cases, trajectories_by_label)
    for case in cases:
        assert_average_matches(
            case.label,
            to_numpy(case.variable),
            trajectories_by_label[case.label],
            tolerance_for(case),
            ema_momentum,
        )


def test_ema_in_fit(rng):
    # model.fit calls finalize_variable_values after the last epoch, which is
    # after the last WeightHistory record.
    ema_momentum = 0.7
    hyper = Hyperparameters(learning_rate=0.05)
    batches = make_batches(rng, STEPS, batch_size=8)
    model = linear_model(
        optimizer=kerasmuon.Muon(
            **hyper.as_kwargs(), use_ema=True, ema_momentum=ema_momentum
        )
    )
    initial = weights(model)
    history = WeightHistory()

    fit_steps(model, batches, callbacks=[history])

    gradients = [batch_gradients(*batch) for batch in batches]
    expected = reference_values(hyper, initial, gradients)
    paired = trajectories(initial, history.values, expected)
    final = weights(model)
    assert_fit_matches(paired)
    for index, name in enumerate(NAMES):
        assert_average_matches(
            name, final[index], paired[name], TOLERANCES[name], ema_momentum
        )


def test_loss_scale_factor_divides_gradients(rng):
    factor = 1000.0
    hyper = Hyperparameters(learning_rate=0.02)
    cases = build_cases()
    gradients = random_gradients(rng, cases, STEPS)
    scaled = [[(factor * g).astype(np.float32) for g in step] for step in gradients]
    optimizer = kerasmuon.Muon(**hyper.as_kwargs(), loss_scale_factor=factor)

    trajectories_by_label = run_both(
        cases, scaled, hyper, optimizer, reference_gradients=as_float64(gradients)
    )

    assert_matches_reference(cases, trajectories_by_label)


def test_loss_scale_factor_in_fit(rng):
    # model.fit multiplies the loss by the factor and the optimizer divides
    # the gradients by it, so the steps are those of the unscaled loss.
    hyper = Hyperparameters(learning_rate=0.05)
    batches = make_batches(rng, STEPS, batch_size=8)
    model = linear_model(
        optimizer=kerasmuon.Muon(**hyper.as_kwargs(), loss_scale_factor=1000.0)
    )
    initial = weights(model)
    history = WeightHistory()

    fit_steps(model, batches, callbacks=[history])

    gradients = [batch_gradients(*batch) for batch in batches]
    expected = reference_values(hyper, initial, gradients)
    assert_fit_matches(trajectories(initial, history.values, expected))


# epsilon is raised to 1e-2, within the range of gradient sizes in these
# tests, so that the AdamW step depends on the scale of the gradients.
# Without that, both steps are nearly scale-invariant, and a sum of the
# accumulated gradients in place of their mean would go unnoticed.
ACCUMULATION_HYPER = Hyperparameters(learning_rate=0.05, epsilon=1e-2)


def test_accumulation_updates_every_third_call(rng):
    hyper = ACCUMULATION_HYPER
    accumulation = 3
    updates = 3
    cases = build_cases()
    optimizer = kerasmuon.Muon(
        **hyper.as_kwargs(), gradient_accumulation_steps=accumulation
    )
    initial = {case.label: to_numpy(case.variable) for case in cases}
    states = [
        reference.VariableState(initial[case.label], case.step, case.view)
        for case in cases
    ]
    paired = {case.label: Trajectory(initial[case.label]) for case in cases}
    gradients = random_gradients(rng, cases, accumulation * updates)

    for update in range(updates):
        before = {case.label: to_numpy(case.variable) for case in cases}
        calls = gradients[update * accumulation : (update + 1) * accumulation]
        for call, step_gradients in enumerate(calls, start=1):
            optimizer.apply_gradients(
                [
                    (keras.ops.convert_to_tensor(gradient), case.variable)
                    for gradient, case in zip(step_gradients, cases)
                ]
            )
            if call < accumulation:
                for case in cases:
                    np.testing.assert_array_equal(
                        to_numpy(case.variable), before[case.label], err_msg=case.label
                    )

        mean = [np.mean(group, axis=0) for group in zip(*as_float64(calls))]
        reference.reference_step(states, mean, update, hyper)
        for case, state in zip(cases, states):
            trajectory = paired[case.label]
            trajectory.module.append(to_numpy(case.variable) - trajectory.initial)
            trajectory.reference.append(state.value - trajectory.initial)

    # Keras counts updates, not calls. The AdamW bias correction uses that
    # count, and the reference above takes t = update + 1 to match.
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == updates
    assert_matches_reference(cases, paired)


def test_accumulation_equals_larger_batch(rng):
    hyper = ACCUMULATION_HYPER
    updates = 5
    large_batches = make_batches(rng, updates, batch_size=12)
    small_batches = [
        (features[start : start + 4], targets[start : start + 4])
        for features, targets in large_batches
        for start in (0, 4, 8)
    ]
    large = linear_model(optimizer=kerasmuon.Muon(**hyper.as_kwargs()))
    small = linear_model(
        optimizer=kerasmuon.Muon(**hyper.as_kwargs(), gradient_accumulation_steps=3)
    )
    small.set_weights(large.get_weights())
    initial = weights(large)
    large_history = WeightHistory()
    small_history = WeightHistory()

    fit_steps(large, large_batches, callbacks=[large_history])
    fit_steps(small, small_batches, steps_per_epoch=3, callbacks=[small_history])

    # The mean loss of a batch of 12 is the mean of the losses of its three
    # batches of 4, and so are the gradients.
    gradients = [batch_gradients(*batch) for batch in large_batches]
    expected = reference_values(hyper, initial, gradients)
    large_paired = trajectories(initial, large_history.values, expected)
    small_paired = trajectories(initial, small_history.values, expected)
    assert int(keras.ops.convert_to_numpy(large.optimizer.iterations)) == updates
    assert int(keras.ops.convert_to_numpy(small.optimizer.iterations)) == updates
    assert_fit_matches(large_paired, "batch 12: ")
    assert_fit_matches(small_paired, "batch 4 x 3: ")
    for index, name in enumerate(NAMES):
        # Both are within their bound of the reference, so within the sum of
        # the bounds of each other.
        *_, (_, large_allowed) = error_and_bound(large_paired[name], TOLERANCES[name])
        *_, (_, small_allowed) = error_and_bound(small_paired[name], TOLERANCES[name])
        difference = np.max(
            np.abs(large_history.values[-1][index] - small_history.values[-1][index])
        )
        assert difference <= large_allowed + small_allowed, name


def exponential_decay_rates(initial, decay_steps, decay_rate, steps):
    """Return initial * decay_rate**(k / decay_steps) for the iterations k before each step."""
    return [initial * decay_rate ** (k / decay_steps) for k in range(steps)]


def test_schedule_learning_rate(rng):
    hyper = Hyperparameters(learning_rate=0.05)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.05, decay_steps=2, decay_rate=0.5
    )
    rates = exponential_decay_rates(0.05, 2, 0.5, STEPS)
    cases = build_cases()
    optimizer = kerasmuon.Muon(**{**hyper.as_kwargs(), "learning_rate": schedule})
    gradients = random_gradients(rng, cases, STEPS)

    trajectories_by_label = run_both(
        cases, gradients, hyper, optimizer, learning_rates=rates
    )

    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == STEPS
    assert_matches_reference(cases, trajectories_by_label)


def test_callable_learning_rate(rng):
    hyper = Hyperparameters(learning_rate=0.05)
    rates = [0.05, 0.01, 0.08, 0.02, 0.05, 0.03]
    current = {"rate": None}
    cases = build_cases()
    optimizer = kerasmuon.Muon(
        **{**hyper.as_kwargs(), "learning_rate": lambda: current["rate"]}
    )
    upcoming = iter(rates)

    def apply_step(optimizer, pairs):
        current["rate"] = next(upcoming)
        optimizer.apply_gradients(pairs)

    gradients = random_gradients(rng, cases, STEPS)

    trajectories_by_label = run_both(
        cases, gradients, hyper, optimizer, apply_step=apply_step, learning_rates=rates
    )

    assert_matches_reference(cases, trajectories_by_label)
