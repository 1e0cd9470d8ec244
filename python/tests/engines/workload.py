"""The model, data and optimizer that every distribution test trains.

Each engine script trains this workload once, on one device or distributed,
and saves the result with `save_result()`, so the tests compare runs that
differ only in how the work is placed.
"""

import json
import sys
from pathlib import Path

import numpy as np

# The engine scripts run as programs of their own, so the kerasmuon folder is
# put on sys.path here, as the README instructs Python users to do.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "inst" / "python"))

import keras  # noqa: E402
from keras import layers  # noqa: E402

import kerasmuon  # noqa: E402

SEED = 20240607
GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 4
EPOCHS = 3
CLASSES = 3
IMAGE_SHAPE = (6, 6, 2)
HIDDEN_UNITS = 16


def make_data():
    """Return images and integer labels for STEPS_PER_EPOCH global batches."""
    rng = np.random.default_rng(SEED)
    count = GLOBAL_BATCH * STEPS_PER_EPOCH
    images = rng.standard_normal((count, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, CLASSES, count).astype("int32")
    return images, labels


def build_model():
    """Build a model with a Muon Conv2D and Dense kernel and AdamW variables.

    `conv` and `hidden` kernels take the Muon step. Biases, the
    LayerNormalization `norm` and the excluded `output_dense` take the AdamW
    step. The initial weights depend only on SEED.
    """
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(IMAGE_SHAPE)
    x = layers.Conv2D(4, 3, activation="tanh", name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(HIDDEN_UNITS, activation="tanh", name="hidden")(x)
    x = layers.LayerNormalization(name="norm")(x)
    outputs = layers.Dense(CLASSES, name="output_dense")(x)
    return keras.Model(inputs, outputs, name="workload")


def make_optimizer():
    """Return a Muon with weight decay (the default 0.1) and EMA.

    With `use_ema=True` and no overwrite frequency, `fit()` replaces the
    weights by their moving averages when it ends. So the saved weights are
    the averages, and the momentum and velocity buffers among the saved
    optimizer variables record the trajectory of the raw weights.
    """
    return kerasmuon.Muon(
        learning_rate=0.02,
        exclude_layers="output_dense",
        use_ema=True,
        ema_momentum=0.9,
    )


def make_loss(reduction="sum_over_batch_size"):
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=reduction
    )


def compile_model(model):
    model.compile(optimizer=make_optimizer(), loss=make_loss())


def train(model):
    """Fit the workload and return the loss of each epoch."""
    images, labels = make_data()
    history = model.fit(
        images,
        labels,
        batch_size=GLOBAL_BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
    )
    return history.history["loss"]


def save_result(path, model, losses, extra=None):
    """Write the model's weights, the optimizer's variables and the losses.

    The arrays go to `path` (an .npz file) under "model/<path>" and
    "optimizer/<path>" keys, and the losses and `extra` go to the JSON file
    beside it.
    """
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    arrays = {}
    for variable in model.weights:
        arrays[f"model/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    for variable in optimizer.variables:
        arrays[f"optimizer/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    np.savez(path, **arrays)

    summary = {"losses": [float(loss) for loss in losses]}
    summary.update(extra or {})
    Path(path).with_suffix(".json").write_text(json.dumps(summary))
