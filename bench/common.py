"""Helpers shared by the benchmarks: optimizers, timing, load and counting."""

import contextlib
import gc
import os
import re
import resource
import statistics
import time

import numpy as np

import keras

COEFFICIENTS = (3.4445, -4.775, 2.0315)


def load_average():
    """Return the 1-minute load average from /proc/loadavg, or None."""
    try:
        with open("/proc/loadavg") as handle:
            return float(handle.read().split()[0])
    except OSError:
        return None


class LoadRecorder:
    """Samples of the 1-minute load average taken during one benchmark."""

    def __init__(self):
        self.samples = []

    def sample(self):
        value = load_average()
        if value is not None:
            self.samples.append(value)
        return value

    def summary(self):
        """Return "min-max" of the samples, or "n/a" when none were taken."""
        if not self.samples:
            return "n/a"
        low, high = min(self.samples), max(self.samples)
        if abs(high - low) < 0.005:
            return f"{low:.2f}"
        return f"{low:.2f}-{high:.2f}"


def log(message):
    """Print a progress line with the clock time and the 1-minute load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {message}", flush=True)


# Optimizers ---------------------------------------------------------------


def make_kerasmuon(learning_rate, **kwargs):
    """Build kerasmuon.Muon with the output layer excluded, as the main job does.

    `kwargs` are further arguments of kerasmuon.Muon; an `exclude_layers`
    among them replaces the default exclusion.
    """
    import kerasmuon

    kwargs.setdefault("exclude_layers", "output_dense")
    return kerasmuon.Muon(learning_rate=learning_rate, **kwargs)


def make_adamw(learning_rate):
    return keras.optimizers.AdamW(learning_rate=learning_rate)


def make_keras_muon_as_documented(learning_rate):
    """Build keras.optimizers.Muon with `exclude_layers` as one string.

    This is the form of the example on keras3's `?optimizer_muon` page
    (`exclude_layers = "output_dense"`). Keras 3.15 iterates over the
    string, so each character is a pattern, and every variable whose path
    contains one of the letters of "output_dense" takes the AdamW step.
    """
    return keras.optimizers.Muon(learning_rate=learning_rate, exclude_layers="output_dense")


def keras_muon_closest_settings(ns_steps=6):
    """Return the arguments that configure keras.optimizers.Muon as close to kerasmuon.Muon as it allows.

    The same exclusion (as a list), Newton-Schulz steps, AdamW learning-rate
    ratio and weight decays. Keras's RMS rescaling is off, because kerasmuon
    scales by sqrt(max(1, fan_out / fan_in)) instead.
    """
    return dict(
        exclude_layers=["output_dense"],
        ns_steps=ns_steps,
        adam_lr_ratio=0.1,
        weight_decay=0.1,
        adam_weight_decay=0.1,
        rms_rate=None,
    )


def make_keras_muon_closest(learning_rate, ns_steps=6):
    """Build keras.optimizers.Muon with `keras_muon_closest_settings()`.

    Keras 3.15 still gives 3D and 4D kernels (Conv, MultiHeadAttention) the
    AdamW step.
    """
    return keras.optimizers.Muon(learning_rate=learning_rate, **keras_muon_closest_settings(ns_steps))


class KerasMuonOnConvKernels(keras.optimizers.Muon):
    """keras.optimizers.Muon that also gives 4D kernels its Muon step.

    Keras 3.15 sends every variable whose rank is not 2 to the AdamW step,
    and its constructor has no argument to change that. This subclass lets
    Conv2D kernels through, unless `exclude_layers` matches them. Keras's
    Newton-Schulz function then works on the last two axes of the kernel.
    So it orthogonalizes a 3x3 kernel as 9 separate matrices of shape
    (input channels, filters), and kerasmuon as one matrix of shape
    (9 x input channels, filters).
    """

    def _should_use_adamw(self, variable):
        if len(variable.shape) == 4:
            return any(re.search(pattern, variable.path) for pattern in self.exclude_layers)
        return super()._should_use_adamw(variable)


def make_keras_muon_on_conv_kernels(learning_rate, ns_steps=6):
    """Build `KerasMuonOnConvKernels` with the settings of `make_keras_muon_closest()`."""
    return KerasMuonOnConvKernels(learning_rate=learning_rate, **keras_muon_closest_settings(ns_steps))


def compile_model(model, optimizer, jit_compile="auto"):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def state_bytes(optimizer):
    """Return the bytes and count of the optimizer's per-variable state buffers.

    Scalar bookkeeping variables (iteration count, learning rate) are left
    out, so that the figure is the memory that grows with the model.
    """
    total = 0
    count = 0
    for variable in optimizer.variables:
        if len(variable.shape) == 0:
            continue
        size = int(np.prod(variable.shape))
        total += size * np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize
        count += 1
    return total, count


# Counting traces ------------------------------------------------------------


class TraceCounter:
    """Counts Python calls of a model's train_step and an optimizer's update_step.

    In a compiled train function (tf.function, jax.jit, torch.compile) these
    run only while the function is traced, so the counts stop growing once
    the step stops retracing. Install before the first training step,
    because Keras binds train_step when it builds the train function.
    """

    def __init__(self, model, optimizer):
        self.train_step_calls = 0
        self.update_step_calls = 0
        train_step = model.train_step
        update_step = optimizer.update_step

        def counted_train_step(*args, **kwargs):
            self.train_step_calls += 1
            return train_step(*args, **kwargs)

        def counted_update_step(*args, **kwargs):
            self.update_step_calls += 1
            return update_step(*args, **kwargs)

        model.train_step = counted_train_step
        optimizer.update_step = counted_update_step


# Timing -------------------------------------------------------------------


def timed_train_steps(model, batches):
    """Run one train_on_batch per batch and return the seconds of each.

    train_on_batch returns the loss as a NumPy value, so each time includes
    the wait for the step to finish.
    """
    seconds = []
    for x, y in batches:
        started = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - started)
    return seconds


@contextlib.contextmanager
def frozen_earlier_objects():
    """Run the enclosed code after a full collection, with the surviving objects frozen.

    Keras models hold reference cycles, so the garbage of earlier benchmarks waits for a full
    collection, which took 0.8 s after the transformer's runs and would land in a timed step.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def median(values):
    return statistics.median(values)


def compile_function(function, jit_compile):
    """Compile `function` for the current backend as Keras compiles a train step.

    TensorFlow: tf.function, with XLA when `jit_compile`. JAX: jax.jit when
    `jit_compile`, else eager. PyTorch: torch.compile when `jit_compile`,
    else eager.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=bool(jit_compile))
    if backend == "jax":
        import jax

        return jax.jit(function) if jit_compile else function
    if backend == "torch":
        import torch

        return torch.compile(function) if jit_compile else function
    raise ValueError(f"Unsupported Keras backend {backend!r}; use tensorflow, jax or torch.")


def block_until_ready(result):
    """Wait for every tensor in `result` to be computed."""
    for tensor in result if isinstance(result, (list, tuple)) else [result]:
        keras.ops.convert_to_numpy(tensor)


def time_function(function, arguments, repeats):
    """Call `function(*arguments)` once to warm up, then return the median seconds of `repeats` calls."""
    return time_functions([(function, arguments)], repeats)[0]


def time_functions(calls, repeats, min_seconds=1.0, max_rounds=200):
    """Return the median seconds of each `(function, arguments)` in `calls`.

    Each function is called once to warm up. Then every round calls each of
    them once, in turn, so that a change in machine load falls on all of
    them alike. Rounds go on until there are `repeats` of them and they
    took `min_seconds` in all, or until `max_rounds`, because functions of a
    few milliseconds need many calls for a stable median.
    """
    for function, arguments in calls:
        block_until_ready(function(*arguments))
    seconds = [[] for _ in calls]
    rounds_started = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < repeats or time.perf_counter() - rounds_started < min_seconds):
        for samples, (function, arguments) in zip(seconds, calls):
            started = time.perf_counter()
            block_until_ready(function(*arguments))
            samples.append(time.perf_counter() - started)
        rounds += 1
    return [median(samples) for samples in seconds]


# FLOP model -----------------------------------------------------------------


def newton_schulz_flops(view, steps, jit_compile):
    """Return the FLOPs (2 per multiply-add) of the matmuls of kerasmuon's `steps` iterations on `view`.

    They are the products `kerasmuon.newton_schulz.products` lists, which a
    test checks against the computation, for this backend with or without
    `jit_compile`. Element-wise terms and the normalization are left out.
    """
    from kerasmuon.newton_schulz import products

    xla = keras.backend.backend() == "jax" or (keras.backend.backend() == "tensorflow" and bool(jit_compile))
    shapes = products(view, steps, xla=xla)
    return sum(2 * rows * inner * columns for rows, inner, columns in shapes)


def process_memory():
    """Return the current and peak resident set size in bytes (VmRSS, VmHWM)."""
    current = peak = None
    try:
        with open(f"/proc/{os.getpid()}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return current, peak
