"""Train the workload with JAX on one device or under keras.distribution.

    python jax_engine.py single OUT.npz
    python jax_engine.py data_parallel OUT.npz
    python jax_engine.py model_parallel OUT.npz

XLA_FLAGS makes the one CPU appear as two JAX devices in every mode, so the
runs differ only in the distribution. `data_parallel` splits each batch over
both devices. `model_parallel` also splits the `hidden` Dense kernel by
columns, one half per device, and applies the Muon step once to a sharded
and to an unsharded matrix to compare them.
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
    """Return the largest difference between the Muon step of a sharded and
    an unsharded matrix, and the sharding of the sharded step's result."""
    rng = np.random.default_rng(workload.SEED)
    direction = rng.standard_normal(STEP_SHAPE).astype("float32")
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, -1), MESH_AXES)
    sharded = jax.device_put(direction, NamedSharding(mesh, PartitionSpec(None, "model")))
    single = jax.device_put(direction, jax.devices()[0])

    @jax.jit
    def step(matrix):
        return muon_update(matrix, STEP_SHAPE, (3.4445, -4.775, 2.0315), 6)

    from_sharded = step(sharded)
    from_single = step(single)
    difference = float(np.max(np.abs(np.asarray(from_sharded) - np.asarray(from_single))))
    sharding = from_sharded.sharding
    return difference, describe_sharding(sharding), len(sharding.device_set)


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
        difference, spec, device_count = compare_one_step()
        extra.update(
            one_step_difference=difference,
            one_step_sharding=spec,
            one_step_devices=device_count,
        )
    workload.save_result(out, model, losses, extra)


if __name__ == "__main__":
    main(*sys.argv[1:])
