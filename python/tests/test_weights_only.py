"""`save_weights()`/`load_weights()` and `save_own_variables()`/`load_own_variables()`.

Keras 3.15 stores the optimizer variables by position. It restores them
only into a built optimizer that has as many variables, and otherwise warns
and skips them all, for its own optimizers as for this one.
"""

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
from conftest import SEED

SKIPPED = "Skipping variable loading for optimizer"


def compiled_regressor(**arguments):
    """Return a compiled model with the same initial weights on every call."""
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="tanh", name="hidden"),
            layers.Dense(3, name="output_dense"),
        ],
        name="regressor",
    )
    model.compile(optimizer=kerasmuon.Muon(learning_rate=0.01, **arguments), loss="mse")
    return model


def regression_data(rng, samples=32):
    features = rng.standard_normal((samples, 8)).astype("float32")
    targets = (features @ rng.standard_normal((8, 3))).astype("float32")
    return features, targets


def values_of(variables):
    return [keras.ops.convert_to_numpy(variable) for variable in variables]


@pytest.fixture
def trained(rng):
    """Return a model trained for 2 epochs of 4 batches, and its data."""
    features, targets = regression_data(rng)
    model = compiled_regressor(exclude_layers="output_dense")
    model.fit(features, targets, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model, features, targets


def assert_same_values(actual, expected):
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"variable {index}")


def test_load_weights_into_built_optimizer(trained, tmp_path):
    model, features, targets = trained
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    restored = compiled_regressor(exclude_layers="output_dense")
    restored.optimizer.build(restored.trainable_variables)

    restored.load_weights(path)

    assert_same_values(values_of(restored.weights), values_of(model.weights))
    assert_same_values(
        values_of(restored.optimizer.variables), values_of(model.optimizer.variables)
    )
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 8

    # Both continue with the same state in the same process, so one more
    # epoch gives the same weights to the last bit.
    for fitted in (model, restored):
        fitted.fit(features, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_values(values_of(restored.weights), values_of(model.weights))


def test_load_weights_unbuilt_optimizer_skips(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    restored = compiled_regressor(exclude_layers="output_dense")

    with pytest.warns(UserWarning, match=SKIPPED):
        restored.load_weights(path)

    assert_same_values(values_of(restored.weights), values_of(model.weights))
    assert not restored.optimizer.built
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 0


def test_own_variables_round_trip(trained):
    model, _, _ = trained
    store = {}
    model.optimizer.save_own_variables(store)
    restored = compiled_regressor(exclude_layers="output_dense")
    restored.optimizer.build(restored.trainable_variables)

    restored.optimizer.load_own_variables(store)

    positions = [str(i) for i in range(len(model.optimizer.variables))]
    assert sorted(store) == sorted(positions)
    assert_same_values(
        values_of(restored.optimizer.variables), values_of(model.optimizer.variables)
    )


def test_own_variables_count_mismatch_skips(trained):
    model, _, _ = trained
    store = {}
    model.optimizer.save_own_variables(store)
    # Excluding every layer gives both kernels a velocity buffer, so this
    # optimizer has one variable more than the saved one.
    restored = compiled_regressor(exclude_layers=["hidden", "output_dense"])
    restored.optimizer.build(restored.trainable_variables)
    before = values_of(restored.optimizer.variables)

    with pytest.warns(UserWarning, match=SKIPPED):
        restored.optimizer.load_own_variables(store)

    assert len(before) == len(store) + 1
    assert_same_values(values_of(restored.optimizer.variables), before)
