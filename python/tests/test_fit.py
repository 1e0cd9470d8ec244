"""End-to-end training of a small model with `kerasmuon.Muon`."""

import keras
import numpy as np
from keras import layers

import kerasmuon
from reference import ADAMW
from reference import MUON


def regression_data(rng, samples=256):
    """Return features and targets of a noisy linear map from 8 to 2 values."""
    features = rng.standard_normal((samples, 8)).astype("float32")
    weights = rng.standard_normal((8, 2))
    noise = 0.01 * rng.standard_normal((samples, 2))
    targets = (features @ weights + noise).astype("float32")
    return features, targets


def small_model():
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(32, activation="tanh", name="hidden_1"),
            layers.Dense(32, activation="tanh", name="hidden_2"),
            layers.Dense(2, name="output_dense"),
        ],
        name="regressor",
    )


def kernel_values(model):
    return {
        layer.name: keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
    }


def test_fit_reduces_loss(rng, state_of):
    features, targets = regression_data(rng)
    model = small_model()
    optimizer = kerasmuon.Muon(learning_rate=0.02, exclude_layers="output_dense")
    model.compile(optimizer=optimizer, loss="mse")
    initial_loss = model.evaluate(features, targets, verbose=0)
    initial_kernels = kernel_values(model)

    model.fit(features, targets, batch_size=32, epochs=5, verbose=0)

    final_loss = model.evaluate(features, targets, verbose=0)
    final_kernels = kernel_values(model)
    routes = {
        row["path"]: row["step"]
        for row in kerasmuon.routing_table(model, model.optimizer)
    }

    # 5 epochs of 8 batches. The untrained loss is close to the variance of
    # the targets, 8 in expectation. On 3 seeds (TensorFlow 2.21 CPU) the fit
    # cut it by a factor of 7 to 14, so a factor of 4 leaves a margin.
    assert final_loss < 0.25 * initial_loss
    assert routes["regressor/hidden_1/kernel"] == MUON
    assert routes["regressor/hidden_2/kernel"] == MUON
    assert routes["regressor/output_dense/kernel"] == ADAMW
    assert routes["regressor/hidden_1/bias"] == ADAMW
    for name in ("hidden_1", "hidden_2", "output_dense"):
        moved = np.max(np.abs(final_kernels[name] - initial_kernels[name]))
        assert moved > 1e-3, name

    # The optimizer state shows which step each kernel took during fit.
    for name, kinds in [
        ("hidden_1", ["momentum"]),
        ("hidden_2", ["momentum"]),
        ("output_dense", ["momentum", "velocity"]),
    ]:
        kernel = model.get_layer(name).kernel
        assert sorted(state_of(model.optimizer, kernel)) == kinds, name
