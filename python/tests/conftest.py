"""Shared fixtures: a fixed seed and a model with one layer of each routed kind."""

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

SEED = 20240607


@dataclasses.dataclass(frozen=True)
class ModelSizes:
    """Layer sizes of `mixed_model`, from which tests derive expected shapes."""

    sequence_length: int = 8
    sequence_channels: int = 4
    conv1d_width: int = 3
    conv1d_filters: int = 6
    heads: int = 2
    key_dim: int = 5
    image_size: int = 6
    image_channels: int = 3
    conv2d_width: int = 3
    conv2d_filters: int = 4
    depthwise_width: int = 3
    tokens: int = 5
    vocabulary: int = 20
    embedding_dim: int = 7
    hidden_units: int = 16
    outputs: int = 3


@pytest.fixture(autouse=True)
def fixed_seed():
    """Seed Keras, NumPy and Python before every test."""
    keras.utils.set_random_seed(SEED)


@pytest.fixture
def rng():
    """Return a NumPy generator with the fixed seed."""
    return np.random.default_rng(SEED)


@pytest.fixture
def model_sizes():
    return ModelSizes()


@pytest.fixture
def mixed_model(model_sizes):
    """Build a functional model with every layer kind the routing rules name.

    Layer names: conv1d, attention (MultiHeadAttention), norm
    (LayerNormalization), conv2d, depthwise (DepthwiseConv2D with
    depth_multiplier 1), token_embedding (Embedding), hidden and output_dense
    (Dense). Each branch is pooled over its positions, so the input width of
    `hidden` is conv1d_filters + conv2d_filters + embedding_dim.
    """
    sizes = model_sizes
    sequence = keras.Input((sizes.sequence_length, sizes.sequence_channels))
    image = keras.Input((sizes.image_size, sizes.image_size, sizes.image_channels))
    tokens = keras.Input((sizes.tokens,), dtype="int32")

    x = layers.Conv1D(
        sizes.conv1d_filters, sizes.conv1d_width, padding="same", name="conv1d"
    )(sequence)
    x = layers.MultiHeadAttention(
        num_heads=sizes.heads, key_dim=sizes.key_dim, name="attention"
    )(x, x)
    x = layers.LayerNormalization(name="norm")(x)
    x = layers.GlobalAveragePooling1D()(x)

    y = layers.Conv2D(sizes.conv2d_filters, sizes.conv2d_width, name="conv2d")(image)
    y = layers.DepthwiseConv2D(sizes.depthwise_width, name="depthwise")(y)
    y = layers.GlobalAveragePooling2D()(y)

    z = layers.Embedding(
        sizes.vocabulary, sizes.embedding_dim, name="token_embedding"
    )(tokens)
    z = layers.GlobalAveragePooling1D()(z)

    hidden = layers.Concatenate()([x, y, z])
    hidden = layers.Dense(sizes.hidden_units, name="hidden")(hidden)
    output = layers.Dense(sizes.outputs, name="output_dense")(hidden)
    return keras.Model([sequence, image, tokens], output, name="mixed")


def _state_key(variable):
    # Keras names optimizer state after the variable's path, with "/" as "_".
    return variable.path.replace("/", "_")


@pytest.fixture
def state_of():
    """Return a function that maps (optimizer, variable) to its state arrays.

    The function returns a dict with the keys "momentum" and "velocity" that
    the optimizer created for the variable, each as a NumPy array.
    """

    def find_state(optimizer, variable):
        prefix = _state_key(variable) + "_"
        found = {}
        for slot in optimizer.variables:
            if slot.name.startswith(prefix):
                kind = slot.name[len(prefix):]
                found[kind] = keras.ops.convert_to_numpy(slot)
        return found

    return find_state
