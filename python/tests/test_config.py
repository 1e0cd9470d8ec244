"""Defaults, `get_config()` and Keras serialization of `kerasmuon.Muon`."""

import dataclasses
import inspect
import json

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
from reference import ADAMW
from reference import MUON
from reference import ROUTING_DEFAULTS
from reference import Hyperparameters

# Every argument set away from its default, so that a round trip that drops
# or resets one of them changes the config. Keras accepts only one of the
# clipping arguments, so clipvalue and global_clipnorm keep their defaults.
NON_DEFAULT_ARGUMENTS = {
    "learning_rate": 0.003,
    "adam_beta_1": 0.8,
    "adam_beta_2": 0.99,
    "epsilon": 1e-6,
    "weight_decay": 0.05,
    "clipnorm": 1.5,
    "use_ema": True,
    "ema_momentum": 0.9,
    "ema_overwrite_frequency": 3,
    "loss_scale_factor": 2.0,
    "gradient_accumulation_steps": 2,
    "name": "custom_muon",
    "exclude_layers": ["output_dense", "^conv"],
    "exclude_embeddings": False,
    "muon_a": 3.0,
    "muon_b": -4.0,
    "muon_c": 1.5,
    "adam_lr_ratio": 0.3,
    "momentum": 0.9,
    "ns_steps": 4,
    "nesterov": False,
}


def init_arguments():
    """Return the names of the arguments of `Muon.__init__`, without **kwargs."""
    parameters = inspect.signature(kerasmuon.Muon.__init__).parameters
    return [
        name
        for name, parameter in parameters.items()
        if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def spec_defaults():
    defaults = {
        field.name: field.default for field in dataclasses.fields(Hyperparameters)
    }
    defaults.update(ROUTING_DEFAULTS)
    return defaults


@pytest.mark.parametrize("name, default", spec_defaults().items())
def test_signature_default_matches_spec(name, default):
    parameter = inspect.signature(kerasmuon.Muon.__init__).parameters[name]

    assert parameter.default == default


def test_default_config_matches_spec():
    config = kerasmuon.Muon().get_config()

    for field in dataclasses.fields(Hyperparameters):
        # The learning rate is stored in a float32 variable.
        assert config[field.name] == pytest.approx(field.default, rel=1e-6), field.name
    assert config["name"] == ROUTING_DEFAULTS["name"]
    assert config["exclude_embeddings"] is ROUTING_DEFAULTS["exclude_embeddings"]
    # None and an empty list both mean that no pattern excludes a variable.
    assert not config["exclude_layers"]


def test_config_covers_every_argument():
    config = kerasmuon.Muon().get_config()

    missing = [name for name in init_arguments() if name not in config]
    assert missing == []


def test_non_default_arguments_cover_signature():
    # The round-trip tests below must set every argument that can be combined
    # with the others, so this fails when an argument is missing here.
    clipping_alternatives = {"clipvalue", "global_clipnorm"}

    assert set(init_arguments()) - clipping_alternatives == set(NON_DEFAULT_ARGUMENTS)


@pytest.mark.parametrize("name, value", NON_DEFAULT_ARGUMENTS.items())
def test_config_stores_argument(name, value):
    config = kerasmuon.Muon(**NON_DEFAULT_ARGUMENTS).get_config()

    if isinstance(value, float):
        # The learning rate is stored in a float32 variable.
        assert config[name] == pytest.approx(value, rel=1e-6)
    else:
        assert config[name] == value


def test_from_config_round_trip():
    original = kerasmuon.Muon(**NON_DEFAULT_ARGUMENTS)
    config = original.get_config()

    restored = kerasmuon.Muon.from_config(config)

    assert type(restored) is kerasmuon.Muon
    assert restored.get_config() == config


def test_serialize_round_trip_through_json():
    original = kerasmuon.Muon(**NON_DEFAULT_ARGUMENTS)
    text = json.dumps(keras.optimizers.serialize(original))

    restored = keras.optimizers.deserialize(json.loads(text))

    assert type(restored) is kerasmuon.Muon
    assert restored.get_config() == original.get_config()


def test_registered_under_package():
    assert keras.saving.get_registered_name(kerasmuon.Muon) == "kerasmuon>Muon"


def test_deserialize_not_keras_muon():
    # Keras (3.15 here) has its own optimizer of the same class name,
    # keras.optimizers.Muon, which deserialization must not pick.
    serialized = keras.optimizers.serialize(kerasmuon.Muon())

    restored = keras.optimizers.deserialize(serialized)

    assert serialized["registered_name"] == "kerasmuon>Muon"
    assert isinstance(restored, kerasmuon.Muon)


def test_one_string_pattern_round_trip(mixed_model):
    original = kerasmuon.Muon(exclude_layers="output_dense")
    serialized = keras.optimizers.serialize(original)

    restored = keras.optimizers.deserialize(serialized)
    steps = {
        row["path"]: row["step"]
        for row in kerasmuon.routing_table(mixed_model, restored)
    }

    assert original.get_config()["exclude_layers"] == ["output_dense"]
    assert restored.get_config()["exclude_layers"] == ["output_dense"]
    assert steps["output_dense/kernel"] == ADAMW
    assert steps["hidden/kernel"] == MUON


def test_saved_model_keeps_optimizer(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(8, name="hidden"),
            layers.Dense(2, name="output_dense"),
        ]
    )
    model.compile(
        optimizer=kerasmuon.Muon(exclude_layers="output_dense", ns_steps=3),
        loss="mse",
    )
    features = rng.standard_normal((16, 4)).astype("float32")
    targets = rng.standard_normal((16, 2)).astype("float32")
    model.fit(features, targets, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.saving.load_model(path)

    assert type(loaded.optimizer) is kerasmuon.Muon
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    # Two batches of 8 were applied before saving.
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    np.testing.assert_array_equal(
        loaded.get_layer("hidden").kernel.numpy(),
        model.get_layer("hidden").kernel.numpy(),
    )


def test_config_has_load_instructions():
    config = kerasmuon.Muon().get_config()

    assert next(iter(config)) == "how_to_load"
    assert "in R, run library(kerasmuon)" in config["how_to_load"]
    assert 'system.file("python", package = "kerasmuon")' in config["how_to_load"]


def test_constructor_accepts_config():
    config = kerasmuon.Muon(**NON_DEFAULT_ARGUMENTS).get_config()

    restored = kerasmuon.Muon(**config)

    assert restored.get_config() == config


def test_loss_scale_nesting_round_trip():
    inner = kerasmuon.Muon(**NON_DEFAULT_ARGUMENTS)
    wrapped = keras.optimizers.LossScaleOptimizer(inner, initial_scale=1024.0)
    text = json.dumps(keras.optimizers.serialize(wrapped))

    restored = keras.optimizers.deserialize(json.loads(text))

    assert isinstance(restored, keras.optimizers.LossScaleOptimizer)
    assert type(restored.inner_optimizer) is kerasmuon.Muon
    assert restored.initial_scale == 1024.0
    # LossScaleOptimizer turns the inner optimizer's loss scaling off.
    assert restored.inner_optimizer.get_config() == inner.get_config()
    assert restored.inner_optimizer.get_config()["loss_scale_factor"] is None
