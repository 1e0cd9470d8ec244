"""Train the workload with JAX on one device or under keras.distribution.

    python jax_engine.py single OUT.npz
    python jax_engine.py data_parallel OUT.npz
    python jax_engine.py model_parallel OUT.npz

XLA_FLAGS makes the one CPU appear as two JAX devices in every mode, so the
runs differ only in the distribution. `data_parallel` splits each batch over
both devices. `model_parallel` also splits the `hidden` Dense kernel by
columns, one half per device, and applies the Muon step once to a matrix
split by rows, split by columns and unsplit, to compare them.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

import workload  # noqa: E402
import keras  # noqa: E402  (imported by workload first, with the flags set)
from kerasmuon.newton_schulz import muon_update  # noqa: E402

MESH_AXES = ("batch", "model")

# A Dense kernel of the hidden layer's shape, for the one-step comparison.
STEP_SHAPE = (64, workload.HIDDEN_UNITS)


def make_distribution(mode):
    devices = jax.devices()
    if mode == "data_parallel":
        return keras.distribution.DataParallel(devices=devices)

    mesh = keras.distribution.DeviceMesh((1, len(devices)), MESH_AXES, devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["hidden/kernel"] = (None, "model")
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def describe_sharding(sharding):
    """Return a sharding's PartitionSpec as text, or "one device"."""
    spec = getattr(sharding, "spec", None)
    return "one device" if spec is None else str(spec)


def sharding_of(model, path):
    """Return the PartitionSpec of a weight and of its optimizer state, as text."""
    specs = {}
    for variable in list(model.weights) + list(model.optimizer.variables):
        if variable.path == path or variable.path.startswith(
            f"{model.optimizer.name}/{path.replace('/', '_')}_"
        ):
            specs[variable.path] = describe_sharding(variable.value.sharding)
    return specs


def compare_one_step():
    """Apply the Muon step to a matrix split by rows, by columns and unsplit.

    Returns, for each split, the devices and shards of the split input and
    the largest difference from the unsplit result. XLA chooses the layout of the
    result, so only the input's split is fixed.
    """
    rng = np.random.default_rng(workload.SEED)
    direction = rng.standard_normal(STEP_SHAPE).astype("float32")
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, -1), MESH_AXES)

    @jax.jit
    def step(matrix):
        return muon_update(matrix, STEP_SHAPE, (3.4445, -4.775, 2.0315), 6)

    unsplit = np.asarray(step(jax.device_put(direction, jax.devices()[0])))
    comparison = {}
    for name, spec in (("rows", PartitionSpec("model", None)), ("columns", PartitionSpec(None, "model"))):
        split = jax.device_put(direction, NamedSharding(mesh, spec))
        result = step(split)
        comparison[name] = {
            "input_devices": len(split.sharding.device_set),
            "input_shards": len(split.addressable_shards),
            "difference": float(np.max(np.abs(np.asarray(result) - unsplit))),
        }
    return comparison


def main(mode, out):
    if mode not in ("single", "data_parallel", "model_parallel"):
        raise SystemExit(f"unknown mode {mode!r}: use single, data_parallel or model_parallel")
    if len(jax.devices()) != 2:
        raise SystemExit(f"expected 2 JAX devices from XLA_FLAGS, found {jax.devices()}")

    if mode != "single":
        keras.distribution.set_distribution(make_distribution(mode))
    model = workload.build_model()
    workload.compile_model(model)
    losses = workload.train(model)

    extra = {
        "devices": len(jax.devices()),
        "iterations": int(model.optimizer.iterations),
        "hidden_sharding": sharding_of(model, "hidden/kernel"),
    }
    if mode == "model_parallel":
        extra["one_step"] = compare_one_step()
    workload.save_result(out, model, losses, extra)


if __name__ == "__main__":
    main(*sys.argv[1:])
