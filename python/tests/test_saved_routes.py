"""The `routes` config entry, which keeps a loaded optimizer on its saved steps."""

import json

import keras
import pytest
from keras import layers

import kerasmuon
from reference import ADAMW
from reference import MUON


def regressor(name):
    """Return a built Sequential model whose variable paths start with `name`."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, name="hidden_1"),
            layers.Dense(16, name="hidden_2"),
            layers.Dense(3, name="output_dense"),
        ],
        name=name,
    )


def built_optimizer(model, **arguments):
    optimizer = kerasmuon.Muon(**arguments)
    optimizer.build(model.trainable_variables)
    return optimizer


def steps_by_path(model, optimizer):
    return {
        row["path"]: row["step"]
        for row in kerasmuon.routing_table(model, optimizer)
    }


def test_unbuilt_config_has_no_routes():
    assert kerasmuon.Muon().get_config()["routes"] is None


def test_built_config_lists_routes():
    model = regressor("regressor")
    optimizer = built_optimizer(model, exclude_layers="output_dense")

    routes = optimizer.get_config()["routes"]

    assert routes == [
        {"step": MUON, "shape": [8, 16]},
        {"step": ADAMW, "shape": [16]},
        {"step": MUON, "shape": [16, 16]},
        {"step": ADAMW, "shape": [16]},
        {"step": ADAMW, "shape": [16, 3]},
        {"step": ADAMW, "shape": [3]},
    ]


def test_routes_survive_other_paths():
    saved_model = regressor("regressor")
    saved = built_optimizer(saved_model, exclude_layers="^regressor/hidden_2/")
    config = json.loads(json.dumps(saved.get_config()))
    other_model = regressor("other")

    restored = kerasmuon.Muon.from_config(config)
    restored.build(other_model.trainable_variables)
    rows = {
        row["path"]: row
        for row in kerasmuon.routing_table(other_model, restored)
    }

    # The pattern does not match other/hidden_2/kernel, but the restored
    # optimizer keeps the saved step, gives the reason and stores the same
    # routes.
    assert steps_by_path(saved_model, saved)["regressor/hidden_2/kernel"] == ADAMW
    assert rows["other/hidden_2/kernel"]["step"] == ADAMW
    assert rows["other/hidden_2/kernel"]["reason"] == (
        "kept from the saved optimizer, although the rules now give muon "
        "(weight matrix)"
    )
    assert rows["other/hidden_1/kernel"]["step"] == MUON
    assert rows["other/hidden_1/kernel"]["reason"] == "weight matrix"
    assert restored.get_config() == config


def test_routes_for_other_shapes_warn():
    config = built_optimizer(regressor("regressor")).get_config()
    wider = keras.Sequential(
        [keras.Input((8,)), layers.Dense(32, name="hidden"), layers.Dense(3)]
    )
    restored = kerasmuon.Muon.from_config(config)

    with pytest.warns(UserWarning, match="the routing rules decide every step"):
        restored.build(wider.trainable_variables)

    assert [route.step for route in restored.routes(wider.trainable_variables)] == [
        MUON,
        ADAMW,
        MUON,
        ADAMW,
    ]


@pytest.mark.parametrize(
    "routes",
    [
        [{"step": "sgd", "shape": [3]}],
        [{"step": MUON}],
        [{"step": MUON, "shape": [2.5]}],
    ],
)
def test_invalid_routes_entry_raises(routes):
    config = kerasmuon.Muon().get_config()
    config["routes"] = routes

    with pytest.raises(ValueError, match="Every entry of the config entry `routes`"):
        kerasmuon.Muon.from_config(config)


def test_routes_entry_must_be_list():
    config = kerasmuon.Muon().get_config()
    config["routes"] = "muon"

    with pytest.raises(TypeError, match="must be a list or None"):
        kerasmuon.Muon.from_config(config)


def test_saved_muon_step_needs_matrix():
    model = keras.Sequential([keras.Input((8,)), layers.Dense(3, name="dense")])
    config = kerasmuon.Muon().get_config()
    config["routes"] = [
        {"step": MUON, "shape": [8, 3]},
        {"step": MUON, "shape": [3]},
    ]
    optimizer = kerasmuon.Muon.from_config(config)

    with pytest.raises(ValueError, match="gives the Muon step to .*dense/bias"):
        optimizer.build(model.trainable_variables)
