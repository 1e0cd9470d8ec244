"""kerasmuon.Muon under tf.distribute and keras.distribution.

Each run is a new process that trains the workload of engines/workload.py
and saves its weights and optimizer variables. A distributed run must match
the run on one device. These tests start their own processes with the
backend they need, so they run once, not once per backend, and they are
marked `distributed` so that the quick test command can skip them.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.distributed

ENGINES = Path(__file__).resolve().parent / "engines"

# Every run trains in float32. A distributed run sums each batch's gradient
# in a different order (a sum per replica, then an all-reduce). So its
# gradients differ from one device's by a few float32 roundings (about 1e-7
# relative), which 12 steps carry into the weights and the optimizer state.
# Measured here: at most 4e-7 of the largest entry. An engine that
# dropped a replica's gradient or applied a step twice would differ by more
# than 1e-2.
RELATIVE_TOLERANCE = 1e-5

# A new process starts TensorFlow or JAX in about 5 s on 2 CPU cores and
# trains the workload in a few seconds more.
TIMEOUT_SECONDS = 300


def engine_environment(**variables):
    environment = dict(os.environ)
    for name in ("PYTHONPATH", "TF_CONFIG", "XLA_FLAGS", "KERAS_BACKEND"):
        environment.pop(name, None)
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    environment.update(variables)
    return environment


def start_engine(script, mode, out, **variables):
    return subprocess.Popen(
        [sys.executable, str(ENGINES / script), mode, str(out)],
        cwd=ENGINES,
        env=engine_environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process):
    _, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    if process.returncode != 0:
        raise AssertionError(
            f"{' '.join(process.args[1:3])} exited with status "
            f"{process.returncode}. Its standard error ends with:\n{stderr[-4000:]}"
        )


def run_engine(script, mode, folder, **variables):
    """Run one engine script to its end and return its saved result."""
    out = folder / f"{mode}.npz"
    wait_for(start_engine(script, mode, out, **variables))
    return load_result(out)


def load_result(out):
    with np.load(out) as arrays:
        result = {key: arrays[key] for key in arrays.files}
    summary = json.loads(out.with_suffix(".json").read_text())
    return result, summary


def free_ports(count):
    """Return `count` TCP ports on 127.0.0.1 that are free at this moment."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def largest_relative_difference(expected, actual):
    """Return the largest difference over all arrays, each relative to the
    largest magnitude in the expected array (or 1, if that is smaller)."""
    assert sorted(actual) == sorted(expected)
    largest = 0.0
    for key, value in expected.items():
        if value.size == 0:
            continue
        scale = max(1.0, float(np.max(np.abs(value))))
        difference = float(np.max(np.abs(actual[key] - value))) / scale
        largest = max(largest, difference)
    return largest


def assert_workload_features(arrays):
    """Check the steps of the kernels and that the final weights are the EMA averages."""
    # Muon variables have a momentum buffer and no velocity, and AdamW ones
    # have both.
    assert "optimizer/muon/hidden_kernel_momentum" in arrays
    assert "optimizer/muon/hidden_kernel_velocity" not in arrays
    assert "optimizer/muon/conv_kernel_velocity" not in arrays
    assert "optimizer/muon/output_dense_kernel_velocity" in arrays
    # fit() ends by copying the moving averages into the weights.
    for key in ("conv/kernel", "hidden/kernel", "norm/gamma", "output_dense/bias"):
        average = arrays[f"optimizer/muon/{key.replace('/', '_')}_average"]
        np.testing.assert_array_equal(arrays[f"model/{key}"], average)


# Runs that several tests compare with, made once per module.
@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def tf_single(runs_folder):
    return run_engine("tf_engine.py", "single", runs_folder)


@pytest.fixture(scope="module")
def jax_single(runs_folder):
    return run_engine("jax_engine.py", "single", runs_folder)


@pytest.fixture(scope="module")
def jax_model_parallel(runs_folder):
    return run_engine("jax_engine.py", "model_parallel", runs_folder)


def test_mirrored_matches_one_device(tf_single, tmp_path):
    single, single_summary = tf_single
    mirrored, mirrored_summary = run_engine("tf_engine.py", "mirrored", tmp_path)

    assert single_summary["replicas"] == 1
    assert mirrored_summary["replicas"] == 2
    assert mirrored_summary["iterations"] == single_summary["iterations"] == 12
    # Both replicas run the same operations on the same reduced gradients on
    # one CPU, so their copies of every variable are identical.
    assert mirrored_summary["replica_spread"] == 0.0
    assert_workload_features(mirrored)
    # The float32 buffer of a float16 kernel is mirrored on the kernel's devices.
    placement = mirrored_summary["placement_of_16bit_state"]
    assert placement["momentum_name"] == "kernel_momentum"
    assert placement["momentum_dtype"] == "float32"
    assert len(placement["kernel_devices"]) == 2
    assert placement["momentum_devices"] == placement["kernel_devices"]
    assert largest_relative_difference(single, mirrored) <= RELATIVE_TOLERANCE
    np.testing.assert_allclose(
        mirrored_summary["losses"], single_summary["losses"], rtol=RELATIVE_TOLERANCE
    )


def test_mirrored_mixed_float16_trains(tf_single, tmp_path):
    single, single_summary = tf_single
    mixed, summary = run_engine("tf_engine.py", "mirrored_mixed", tmp_path)

    assert summary["optimizer_class"] == "LossScaleOptimizer"
    assert summary["replicas"] == 2
    assert summary["replica_spread"] == 0.0
    # No step was skipped for non-finite gradients.
    assert summary["iterations"] == 12
    assert np.all(np.isfinite(summary["losses"]))
    # The weights stay float32 and the layers compute in float16, whose
    # rounding (2**-11 relative per operation) moves the losses of this
    # short run by less than 1e-4 relative to the float32 run (measured here).
    np.testing.assert_allclose(summary["losses"], single_summary["losses"], rtol=1e-2)
    assert mixed["model/hidden/kernel"].dtype == np.float32


def test_multi_worker_matches_one_process(tf_single, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "worker.npz"
    workers = [
        start_engine(
            "tf_engine.py",
            "worker",
            out,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        for index in range(2)
    ]
    try:
        for worker in workers:
            wait_for(worker)
    finally:
        for worker in workers:
            worker.kill()
    distributed, distributed_summary = load_result(out)
    loop, loop_summary = run_engine("tf_engine.py", "loop", tmp_path)
    fitted, _ = tf_single

    assert distributed_summary["replicas"] == 2
    assert distributed_summary["iterations"] == loop_summary["iterations"] == 12
    assert_workload_features(distributed)
    assert largest_relative_difference(loop, distributed) <= RELATIVE_TOLERANCE
    # The workers train with a custom loop, and that loop trains as fit() does.
    assert largest_relative_difference(fitted, loop) <= RELATIVE_TOLERANCE


def test_jax_data_parallel_matches_one_device(jax_single, tmp_path):
    single, single_summary = jax_single
    parallel, parallel_summary = run_engine("jax_engine.py", "data_parallel", tmp_path)

    assert parallel_summary["devices"] == 2
    assert parallel_summary["iterations"] == single_summary["iterations"] == 12
    assert_workload_features(parallel)
    assert largest_relative_difference(single, parallel) <= RELATIVE_TOLERANCE


def test_jax_model_parallel_matches_one_device(jax_single, jax_model_parallel):
    single, _ = jax_single
    sharded, summary = jax_model_parallel

    # The kernel and the optimizer's buffers for it are split by columns.
    assert summary["hidden_sharding"] == {
        "hidden/kernel": "PartitionSpec(None, 'model')",
        "muon/hidden_kernel_momentum": "PartitionSpec(None, 'model')",
        "muon/hidden_kernel_average": "PartitionSpec(None, 'model')",
    }
    assert_workload_features(sharded)
    assert largest_relative_difference(single, sharded) <= RELATIVE_TOLERANCE


def test_jax_sharded_muon_step_matches(jax_model_parallel):
    _, summary = jax_model_parallel

    # The step's entries are at most about 1 in magnitude, so the relative
    # tolerance applies to them as an absolute one.
    for split in ("rows", "columns"):
        step = summary["one_step"][split]
        assert step["input_devices"] == 2, split
        assert step["input_shards"] == 2, split
        assert step["difference"] <= RELATIVE_TOLERANCE, split
