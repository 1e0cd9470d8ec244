"""`model.save()` and `keras.saving.load_model()` with `kerasmuon.Muon`.

Three trained models are saved once per test module and loaded in a new
Python process, which writes what it restored to files in the same folder.
"""

import json
import types
import zipfile

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
from conftest import SEED
from new_session import run_python
from reference import ADAMW
from reference import MUON
from test_config import NON_DEFAULT_ARGUMENTS

# Every argument away from its default. The first pattern names the model,
# so it matches `regressor/hidden_2/kernel` in the saved model but not
# `hidden_2/kernel`, the path that Keras 3.15 gives the same variable when
# it loads a Sequential model.
SEVERAL_PATTERNS = {
    **NON_DEFAULT_ARGUMENTS,
    "exclude_layers": ["^regressor/hidden_2/", "output_dense"],
}
SAVED_OPTIMIZERS = ["several_patterns", "one_string", "mixed_float16"]
BATCH_SIZE = 8
EPOCHS = 2


def regressor():
    """Return a Sequential model named `regressor` that maps 8 values to 3."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="tanh", name="hidden_1"),
            layers.Dense(16, activation="tanh", name="hidden_2"),
            layers.Dense(3, name="output_dense"),
        ],
        name="regressor",
    )


def functional_regressor():
    inputs = keras.Input((8,))
    hidden = layers.Dense(12, activation="relu", name="hidden")(inputs)
    outputs = layers.Dense(3, name="output_dense")(hidden)
    return keras.Model(inputs, outputs, name="functional")


def compiled_model(name):
    """Build and compile the model saved under `name`, from a fixed seed."""
    keras.utils.set_random_seed(SEED)
    if name == "several_patterns":
        model = regressor()
        optimizer = kerasmuon.Muon(**SEVERAL_PATTERNS)
    elif name == "one_string":
        model = functional_regressor()
        schedule = keras.optimizers.schedules.ExponentialDecay(
            0.01, decay_steps=4, decay_rate=0.5
        )
        optimizer = kerasmuon.Muon(
            learning_rate=schedule, exclude_layers="output_dense"
        )
    else:
        # Under mixed_float16, compile() wraps the optimizer in a
        # LossScaleOptimizer. The layers keep the policy they were built with.
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = regressor()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        optimizer = kerasmuon.Muon(learning_rate=0.01, exclude_layers="output_dense")
    model.compile(optimizer=optimizer, loss="mse")
    return model


def regression_data(samples=32):
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((samples, 8)).astype("float32")
    targets = (features @ rng.standard_normal((8, 3))).astype("float32")
    return features, targets


def values_of(variables):
    return [keras.ops.convert_to_numpy(variable) for variable in variables]


def as_json(value):
    """Return `value` as it reads back from a JSON file."""
    return json.loads(json.dumps(value))


LOAD_IN_NEW_PROCESS = """
import json
import warnings

import keras
import numpy as np

import kerasmuon

report = {}
for name in NAMES:
    # As in the training script: Keras 3.15 restores the policy of each
    # layer but compiles the loaded model under the global policy, and wraps
    # the optimizer in a LossScaleOptimizer only under mixed_float16.
    policy = "mixed_float16" if name == "mixed_float16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(name + ".keras")
    optimizer = model.optimizer
    muon = getattr(optimizer, "inner_optimizer", optimizer)
    rows = kerasmuon.routing_table(model, optimizer)
    report[name] = {
        "class": type(muon).__module__ + "." + type(muon).__qualname__,
        "serialized": keras.optimizers.serialize(optimizer),
        "paths": [row["path"] for row in rows],
        "steps": [row["step"] for row in rows],
        "warnings": [str(warning.message) for warning in caught],
    }
    values = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
    np.savez(name + "-state.npz", *values)

with open("report.json", "w") as file:
    json.dump(report, file)
"""

LOAD_WITHOUT_KERASMUON = """
import importlib.util
import json

import keras


def outcome(call):
    try:
        result = call()
    except Exception as error:
        return type(error).__name__ + ": " + str(error)
    return "returned " + type(result).__module__ + "." + type(result).__name__


with open("several_patterns-optimizer.json") as file:
    serialized = json.load(file)
messages = {
    "importable": importlib.util.find_spec("kerasmuon") is not None,
    "load_model": outcome(lambda: keras.saving.load_model("several_patterns.keras")),
    "deserialize": outcome(lambda: keras.optimizers.deserialize(serialized)),
}
with open("messages.json", "w") as file:
    json.dump(messages, file)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Train and save each model, then load them all in a new process."""
    folder = tmp_path_factory.mktemp("saved")
    features, targets = regression_data()
    models = {}
    for name in SAVED_OPTIMIZERS:
        model = compiled_model(name)
        model.fit(features, targets, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0)
        model.save(folder / f"{name}.keras")
        models[name] = model

    run_python(f"NAMES = {SAVED_OPTIMIZERS!r}\n" + LOAD_IN_NEW_PROCESS, folder)
    report = json.loads((folder / "report.json").read_text())
    restored = {}
    for name in SAVED_OPTIMIZERS:
        with np.load(folder / f"{name}-state.npz") as arrays:
            restored[name] = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    return types.SimpleNamespace(
        folder=folder, models=models, report=report, restored=restored
    )


@pytest.mark.parametrize("name", SAVED_OPTIMIZERS)
def test_loads_kerasmuon_class(saved, name):
    optimizer = saved.models[name].optimizer

    assert saved.report[name]["class"] == "kerasmuon.optimizer.Muon"
    if name == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert saved.report[name]["serialized"]["class_name"] == "LossScaleOptimizer"


@pytest.mark.parametrize("name", SAVED_OPTIMIZERS)
def test_loads_every_hyperparameter(saved, name):
    expected = as_json(keras.optimizers.serialize(saved.models[name].optimizer))

    # The serialized form contains the class, the registered name and the
    # whole config, nested in the LossScaleOptimizer's config for
    # mixed_float16.
    assert saved.report[name]["serialized"] == expected


def test_loads_exclude_layers(saved):
    several = saved.report["several_patterns"]["serialized"]["config"]
    one_string = saved.report["one_string"]["serialized"]["config"]
    mixed = saved.report["mixed_float16"]["serialized"]["config"]

    assert several["exclude_layers"] == ["^regressor/hidden_2/", "output_dense"]
    assert one_string["exclude_layers"] == ["output_dense"]
    assert mixed["inner_optimizer"]["config"]["exclude_layers"] == ["output_dense"]


@pytest.mark.parametrize("name", SAVED_OPTIMIZERS)
def test_loads_every_variable(saved, name):
    optimizer = saved.models[name].optimizer
    expected = values_of(optimizer.variables)
    restored = saved.restored[name]

    assert len(restored) == len(expected)
    for variable, want, got in zip(optimizer.variables, expected, restored):
        np.testing.assert_array_equal(got, want, err_msg=variable.path)


def test_saved_buffers_are_trained(saved):
    # Guards the comparison above: buffers still at zero would match an
    # optimizer that restored nothing.
    muon = saved.models["several_patterns"].optimizer
    buffers = [
        variable
        for variable in muon.variables
        if variable.path.endswith(("_momentum", "_velocity"))
    ]
    # 3 kernels and 3 biases have a momentum buffer, and 3 biases and the 2
    # excluded kernels have a velocity buffer.
    assert len(buffers) == 11
    for variable in buffers:
        assert np.any(keras.ops.convert_to_numpy(variable) != 0), variable.path


def test_loads_iterations(saved):
    features, _ = regression_data()
    batches = EPOCHS * len(features) // BATCH_SIZE
    accumulation = SEVERAL_PATTERNS["gradient_accumulation_steps"]
    several = saved.models["several_patterns"].optimizer
    updates = int(keras.ops.convert_to_numpy(several.iterations))

    # The iteration variable comes first and counts every batch, and the
    # `iterations` property counts one update per `accumulation` batches.
    assert int(saved.restored["several_patterns"][0]) == batches
    assert int(saved.restored["one_string"][0]) == batches
    assert updates == batches // accumulation


def test_load_keeps_saved_routes(saved):
    report = saved.report["several_patterns"]
    step_of = dict(zip(report["paths"], report["steps"]))

    # Keras 3.15 drops the model name from the loaded paths, so the first
    # pattern no longer matches, but the loaded optimizer keeps the step
    # that hidden_2's kernel took before saving.
    assert "hidden_2/kernel" in step_of
    assert step_of["hidden_2/kernel"] == ADAMW
    assert step_of["hidden_1/kernel"] == MUON
    assert step_of["output_dense/kernel"] == ADAMW


@pytest.mark.parametrize("name", SAVED_OPTIMIZERS)
def test_load_warns_nothing(saved, name):
    # Keras warns, and skips every optimizer variable, when the loaded
    # optimizer has another number of variables than the saved one.
    messages = saved.report[name]["warnings"]

    assert [message for message in messages if "optimizer" in message] == []


@pytest.fixture(scope="module")
def messages_without_package(saved):
    optimizer = saved.models["several_patterns"].optimizer
    serialized = json.dumps(keras.optimizers.serialize(optimizer))
    (saved.folder / "several_patterns-optimizer.json").write_text(serialized)
    run_python(LOAD_WITHOUT_KERASMUON, saved.folder, with_kerasmuon=False)
    return json.loads((saved.folder / "messages.json").read_text())


def test_missing_package_load_message(messages_without_package):
    message = messages_without_package["load_model"]

    assert messages_without_package["importable"] is False
    assert message.startswith("TypeError: Could not locate class 'Muon'.")
    assert "in R, run library(kerasmuon)" in message
    assert 'system.file("python", package = "kerasmuon")' in message
    assert "then run import kerasmuon" in message


def test_missing_package_not_keras_muon(messages_without_package):
    # Without the how_to_load entry, Keras 3.15 builds its own
    # keras.optimizers.Muon from this config.
    message = messages_without_package["deserialize"]

    assert message.startswith("ValueError: Argument(s) not recognized")
    assert "in R, run library(kerasmuon)" in message


def rewrite_optimizer_config(path, **entries):
    """Set entries of the optimizer config inside the `.keras` file at `path`."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["compile_config"]["optimizer"]["config"].update(entries)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_invalid_pattern_fails_at_load(saved, tmp_path):
    path = tmp_path / "invalid.keras"
    saved.models["one_string"].save(path)
    rewrite_optimizer_config(path, exclude_layers=["output_dense", "hidden("])

    message = r"Received: 'hidden\(', which fails to compile"
    with pytest.raises(ValueError, match=message):
        keras.saving.load_model(path)


def test_patterns_compiled_once(saved, monkeypatch):
    calls = {"compile_patterns": 0, "route_variable": 0}

    def counted(name):
        original = getattr(kerasmuon.routing, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(kerasmuon.routing, name, wrapper)

    counted("compile_patterns")
    counted("route_variable")
    model = keras.saving.load_model(saved.folder / "several_patterns.keras")
    after_load = dict(calls)
    features, targets = regression_data()
    # Eager steps run update_step in Python every time, where a traced
    # function would run it only once.
    model.compile(optimizer=model.optimizer, loss="mse", run_eagerly=True)
    model.fit(features, targets, batch_size=BATCH_SIZE, epochs=1, verbose=0)

    assert after_load == {"compile_patterns": 1, "route_variable": 6}
    assert calls == after_load


def test_loads_learning_rate_schedule(saved):
    learning_rate = saved.report["one_string"]["serialized"]["config"]["learning_rate"]

    assert learning_rate["class_name"] == "ExponentialDecay"
    assert learning_rate["config"]["initial_learning_rate"] == 0.01
    assert learning_rate["config"]["decay_steps"] == 4
