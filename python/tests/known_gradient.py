"""A Dense layer trained on a loss that is linear in its output, with gradients computed in NumPy.

The loss of a batch is mean(targets * (features @ kernel + bias)) over all
its entries. Its gradients, features^T targets / size and the column sums of
targets / size, do not depend on the weights. A float64 reference fed those
gradients therefore follows `model.fit`, jitted or not, step by step.

With mean squared error the reference would have to take the gradient at its
own weights. That gradient shrinks as the fit converges while the float32
rounding of the backend's gradient does not, and the orthogonalized
direction of a small gradient carries that rounding in full.
"""

import keras
import numpy as np
from keras import layers

import reference
from reference import ADAMW
from reference import MUON
from trajectory import ADAMW_TOLERANCE
from trajectory import MUON_TOLERANCE
from trajectory import Trajectory
from trajectory import error_and_bound
from trajectory import to_numpy

# The kernel is (5, 7), wide, so the Muon step scales by sqrt(7 / 5).
FEATURES = 5
OUTPUTS = 7
LAYER_NAME = "dense"
NAMES = ("kernel", "bias")
# The kernel takes the Muon step and the bias the AdamW step.
TOLERANCES = {"kernel": MUON_TOLERANCE, "bias": ADAMW_TOLERANCE}


def linear_loss(targets, outputs):
    """Return the mean of targets * outputs over the last axis, per sample."""
    return keras.ops.mean(targets * outputs, axis=-1)


def make_batches(rng, count, batch_size):
    """Return `count` batches of standard normal float32 features and targets."""
    return [
        (
            rng.standard_normal((batch_size, FEATURES)).astype(np.float32),
            rng.standard_normal((batch_size, OUTPUTS)).astype(np.float32),
        )
        for _ in range(count)
    ]


def batch_gradients(features, targets):
    """Return the float64 [kernel, bias] gradients of the mean linear loss."""
    features = features.astype(np.float64)
    targets = targets.astype(np.float64)
    size = targets.size
    return [features.T @ targets / size, targets.sum(axis=0) / size]


def batch_stream(batches):
    """Yield the batches in order, then again, for fit with steps_per_epoch.

    Keras takes a generator but not any other iterator.
    """
    while True:
        yield from batches


def fit_steps(model, batches, steps_per_epoch=1, callbacks=()):
    """Fit on the batches in order, with an epoch every `steps_per_epoch` batches."""
    return model.fit(
        batch_stream(batches),
        steps_per_epoch=steps_per_epoch,
        epochs=len(batches) // steps_per_epoch,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def linear_model(**compile_arguments):
    """Build and compile the one-layer model with `linear_loss`."""
    model = keras.Sequential(
        [keras.Input((FEATURES,)), layers.Dense(OUTPUTS, name=LAYER_NAME)]
    )
    model.compile(loss=linear_loss, **compile_arguments)
    return model


def weights(model):
    """Return the [kernel, bias] of the Dense layer as float64 arrays."""
    layer = model.get_layer(LAYER_NAME)
    return [to_numpy(layer.kernel), to_numpy(layer.bias)]


class WeightHistory(keras.callbacks.Callback):
    """Record the kernel and bias at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(weights(self.model))


def reference_values(hyper, initial, gradients):
    """Return [kernel, bias] after each reference step, one step per gradient pair."""
    states = [
        reference.VariableState(initial[0], MUON, (FEATURES, OUTPUTS)),
        reference.VariableState(initial[1], ADAMW),
    ]
    values = []
    for iteration, step_gradients in enumerate(gradients):
        reference.reference_step(states, step_gradients, iteration, hyper)
        values.append([state.value.copy() for state in states])
    return values


def trajectories(initial, module_values, reference_values):
    """Pair the two sides' values as {"kernel": Trajectory, "bias": Trajectory}."""
    paired = {}
    for index, name in enumerate(NAMES):
        start = initial[index]
        paired[name] = Trajectory(
            start,
            [values[index] - start for values in module_values],
            [values[index] - start for values in reference_values],
        )
    return paired


def assert_fit_matches(paired, label=""):
    """Assert that each step of kernel and bias is within the bound of trajectory.py."""
    for name in NAMES:
        bounds = error_and_bound(paired[name], TOLERANCES[name])
        for step, (error, allowed) in enumerate(bounds, start=1):
            assert error <= allowed, (
                f"{label}{name} after step {step}: error {error:.3g} "
                f"exceeds {allowed:.3g}"
            )
