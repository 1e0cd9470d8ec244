"""Resuming `fit()` from a `ModelCheckpoint` file in a new Python process.

The first run trains for FIRST_EPOCHS with a ModelCheckpoint callback. A
new process loads the checkpoint and trains to TOTAL_EPOCHS. The reference
run trains to TOTAL_EPOCHS in one `fit()` call from the same initial
weights, and both see the same batches because `shuffle=False`.
"""

import types

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
from conftest import SEED
from new_session import run_python

FIRST_EPOCHS = 2
TOTAL_EPOCHS = 4
BATCH_SIZE = 16
SAMPLES = 64
OPTIMIZER_ARGUMENTS = {"learning_rate": 0.02, "exclude_layers": "output_dense"}

# Both runs execute the same float32 operations on the same batches in the
# same order, so on CPU they agree to the last bit: the largest difference
# measured was 0.0 on TensorFlow 2.21, JAX 0.4.38 and PyTorch 2.13 (2-core
# x86-64). The tolerance, 8 float32 ulps at 1.0 for weights of magnitude
# below 1, leaves room for a math library that sums in another order in the
# new process. Losing the optimizer state moves the weights by far more, as
# test_lost_state_exceeds_tolerance checks.
RESUME_TOLERANCE = 1e-6

RESUME_IN_NEW_PROCESS = f"""
import keras
import numpy as np

import kerasmuon

with np.load("data.npz") as data:
    features, targets = data["features"], data["targets"]
model = keras.saving.load_model("checkpoint.keras")
model.fit(
    features,
    targets,
    batch_size={BATCH_SIZE},
    epochs={TOTAL_EPOCHS},
    initial_epoch={FIRST_EPOCHS},
    shuffle=False,
    verbose=0,
)
np.savez("resumed.npz", *[keras.ops.convert_to_numpy(w) for w in model.weights])
np.save("iterations.npy", keras.ops.convert_to_numpy(model.optimizer.iterations))
"""


def compiled_regressor():
    """Return a compiled model with the same initial weights on every call."""
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="tanh", name="hidden_1"),
            layers.Dense(16, activation="tanh", name="hidden_2"),
            layers.Dense(3, name="output_dense"),
        ],
        name="regressor",
    )
    model.compile(optimizer=kerasmuon.Muon(**OPTIMIZER_ARGUMENTS), loss="mse")
    return model


def values_of(variables):
    return [keras.ops.convert_to_numpy(variable) for variable in variables]


def fit(model, features, targets, **arguments):
    model.fit(
        features, targets, batch_size=BATCH_SIZE, shuffle=False, verbose=0, **arguments
    )


def max_difference(left, right):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(left, right))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train the first run, resume it in a new process, and train the reference."""
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((SAMPLES, 8)).astype("float32")
    targets = (features @ rng.standard_normal((8, 3))).astype("float32")
    np.savez(folder / "data.npz", features=features, targets=targets)

    first = compiled_regressor()
    first_initial = values_of(first.weights)
    checkpoint = keras.callbacks.ModelCheckpoint(folder / "checkpoint.keras")
    fit(first, features, targets, epochs=FIRST_EPOCHS, callbacks=[checkpoint])

    run_python(RESUME_IN_NEW_PROCESS, folder)
    with np.load(folder / "resumed.npz") as arrays:
        resumed = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    reference = compiled_regressor()
    reference_initial = values_of(reference.weights)
    fit(reference, features, targets, epochs=TOTAL_EPOCHS)

    return types.SimpleNamespace(
        folder=folder,
        features=features,
        targets=targets,
        initial=(first_initial, reference_initial),
        resumed=resumed,
        iterations=int(np.load(folder / "iterations.npy")),
        reference=values_of(reference.weights),
    )


def test_runs_start_from_same_weights(runs):
    first_initial, reference_initial = runs.initial

    assert max_difference(first_initial, reference_initial) == 0.0


def test_resume_matches_one_run(runs):
    assert len(runs.resumed) == len(runs.reference)
    for index, (resumed, reference) in enumerate(zip(runs.resumed, runs.reference)):
        np.testing.assert_allclose(
            resumed, reference, rtol=0, atol=RESUME_TOLERANCE, err_msg=f"weight {index}"
        )


def test_resume_continues_iterations(runs):
    assert runs.iterations == TOTAL_EPOCHS * SAMPLES // BATCH_SIZE


def test_lost_state_exceeds_tolerance(runs):
    # The same resume with a new optimizer, whose buffers start at zero.
    model = keras.saving.load_model(runs.folder / "checkpoint.keras")
    model.compile(optimizer=kerasmuon.Muon(**OPTIMIZER_ARGUMENTS), loss="mse")
    fit(
        model,
        runs.features,
        runs.targets,
        epochs=TOTAL_EPOCHS,
        initial_epoch=FIRST_EPOCHS,
    )
    difference = max_difference(values_of(model.weights), runs.reference)

    assert difference > 100 * RESUME_TOLERANCE
