"""Train the workload with TensorFlow on one device or under tf.distribute.

    python tf_engine.py single OUT.npz
    python tf_engine.py mirrored OUT.npz
    python tf_engine.py worker OUT.npz

    python tf_engine.py loop OUT.npz
    python tf_engine.py mirrored_mixed OUT.npz

`single` and `mirrored` train with `fit()`; `mirrored` first splits the one
CPU into two logical devices and trains under MirroredStrategy. `worker` is
one process of a MultiWorkerMirroredStrategy cluster described by the
TF_CONFIG environment variable. It trains with a custom training loop,
because `fit()` in Keras 3.15 fails under MultiWorkerMirroredStrategy for
every optimizer: it reduces the first batch's inputs and labels in one call,
which that strategy rejects (keras-team/keras issue 20585). `loop` runs the
same loop in one process, as the reference for the workers. Every worker
trains, and the chief (task 0) writes OUT.npz. `mirrored_mixed` is
`mirrored` under the mixed_float16 policy, where compile() wraps the
optimizer in a LossScaleOptimizer.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import workload  # noqa: E402
import keras  # noqa: E402  (imported by workload first)
import kerasmuon  # noqa: E402


def split_cpu_in_two():
    """Split the CPU into two logical devices and return their names.

    TensorFlow accepts this only before it runs its first operation.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def replica_spread(variables):
    """Return the largest difference between replicas of any mirrored variable.

    MirroredStrategy keeps one copy of each variable per device and must
    apply the same update to each, so the copies should be equal.
    """
    spread = 0.0
    for variable in variables:
        copies = getattr(variable.value, "values", None)
        if not copies or len(copies) < 2:
            continue
        first = copies[0].numpy()
        for copy in copies[1:]:
            spread = max(spread, float(np.max(np.abs(copy.numpy() - first))))
    return spread


def train_in_loop(model, strategy):
    """Train as `workload.train()` does, with `strategy.run` for each step.

    Each replica averages its losses over the global batch, so the summed
    gradients equal those of one device, and `finalize_variable_values`
    copies the moving averages into the weights as `fit()` does at its end.
    """
    images, labels = workload.make_data()
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(workload.GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = strategy.experimental_distribute_dataset(dataset.with_options(options))
    loss_function = workload.make_loss(reduction=None)
    optimizer = model.optimizer

    @tf.function
    def train_step(batch_images, batch_labels):
        def replica_step(replica_images, replica_labels):
            with tf.GradientTape() as tape:
                logits = model(replica_images, training=True)
                per_example = loss_function(replica_labels, logits)
                loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=workload.GLOBAL_BATCH
                )
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        losses = strategy.run(replica_step, args=(batch_images, batch_labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    epoch_losses = []
    for _ in range(workload.EPOCHS):
        step_losses = [float(train_step(*batch)) for batch in dataset]
        epoch_losses.append(sum(step_losses) / len(step_losses))
    optimizer.finalize_variable_values(model.trainable_variables)
    return epoch_losses


def placement_of_16bit_state(strategy):
    """Build a Muon for one float16 kernel under `strategy` and describe
    where the kernel and its float32 momentum buffer live."""
    with strategy.scope():
        kernel = keras.Variable(np.ones((4, 3)), dtype="float16", name="kernel")
        optimizer = kerasmuon.Muon()
        optimizer.build([kernel])
    momentum = optimizer.variables[-1]
    return {
        "kernel_devices": sorted(copy.device for copy in kernel.value.values),
        "momentum_devices": sorted(copy.device for copy in momentum.value.values),
        "momentum_dtype": keras.backend.standardize_dtype(momentum.dtype),
        "momentum_name": momentum.name,
    }


def main(mode, out):
    if mode == "single":
        strategy = tf.distribute.get_strategy()
    elif mode in ("mirrored", "mirrored_mixed"):
        if mode == "mirrored_mixed":
            keras.mixed_precision.set_global_policy("mixed_float16")
        strategy = tf.distribute.MirroredStrategy(split_cpu_in_two())
    elif mode == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif mode == "loop":
        strategy = tf.distribute.get_strategy()
    else:
        raise SystemExit(f"unknown mode {mode!r}: use single, mirrored, mirrored_mixed, worker or loop")

    with strategy.scope():
        model = workload.build_model()
        workload.compile_model(model)
    if mode in ("worker", "loop"):
        losses = train_in_loop(model, strategy)
    else:
        losses = workload.train(model)

    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    extra = {
        "optimizer_class": type(model.optimizer).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "replica_spread": replica_spread(
            list(model.weights) + list(model.optimizer.variables)
        ),
        "iterations": int(optimizer.iterations.numpy()),
    }
    if mode == "mirrored":
        extra["placement_of_16bit_state"] = placement_of_16bit_state(strategy)
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    if task.get("index", 0) == 0:
        workload.save_result(out, model, losses, extra)


if __name__ == "__main__":
    main(*sys.argv[1:])
