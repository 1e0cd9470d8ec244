"""Memory: optimizer state against AdamW, and process memory and tracing over many steps."""

import numpy as np

import keras

import common
import tasks

# Steps of the long run and steps between memory samples, per mode.
LONG_RUN = {"quick": (500, 50), "full": (2000, 100)}

# Growth of the resident set after the warm-up, as a fraction of the
# resident set then, that still counts as flat. The allocators keep freed
# blocks, so some jitter is normal. NOTE: a judgment call, not a figure
# from Keras or TensorFlow.
FLAT_TOLERANCE = 0.01

STATE_OPTIMIZERS = [
    ("kerasmuon", "kerasmuon.Muon", lambda: common.make_kerasmuon(1e-3)),
    ("adamw", "keras AdamW", lambda: common.make_adamw(1e-3)),
    ("keras_muon_closest", "keras Muon, closest settings", lambda: common.make_keras_muon_closest(1e-3)),
]


def state_sizes(name, model):
    """Return the optimizer state of each optimizer for `model`, with the expected buffer count."""
    variables = model.trainable_variables
    rows = []
    for key, label, factory in STATE_OPTIMIZERS:
        optimizer = factory()
        optimizer.build(variables)
        size, buffers = common.state_bytes(optimizer)
        row = {"model": name, "optimizer": key, "label": label, "bytes": size, "buffers": buffers}
        if key == "kerasmuon":
            routes = optimizer.routes(variables)
            muon = sum(route.step == "muon" for route in routes)
            row["muon_variables"] = muon
            row["adamw_variables"] = len(routes) - muon
            row["expected_buffers"] = muon + 2 * (len(routes) - muon)
        rows.append(row)
    adamw_bytes = next(row["bytes"] for row in rows if row["optimizer"] == "adamw")
    for row in rows:
        row["ratio_to_adamw"] = row["bytes"] / adamw_bytes
    return rows


def long_run(task, factory, steps, interval, seed, loads):
    """Train `steps` steps and sample process memory and trace counts every `interval` steps."""
    keras.utils.set_random_seed(seed)
    model = task.build_model()
    optimizer = factory()
    common.compile_model(model, optimizer)
    counter = common.TraceCounter(model, optimizer)

    generator = np.random.RandomState(seed)
    per_epoch = len(task.x_train) // task.batch_size
    samples = []
    done = 0
    loads.sample()
    while done < steps:
        order = generator.permutation(len(task.x_train))
        for index in range(per_epoch):
            batch = order[index * task.batch_size : (index + 1) * task.batch_size]
            model.train_on_batch(task.x_train[batch], task.y_train[batch])
            done += 1
            if done % interval == 0:
                current, peak = common.process_memory()
                samples.append(
                    {
                        "step": done,
                        "rss": current,
                        "peak_rss": peak,
                        "train_step_traces": counter.train_step_calls,
                        "update_step_calls": counter.update_step_calls,
                    }
                )
            if done == steps:
                break
    loads.sample()

    warm = samples[max(0, len(samples) // 4 - 1)]
    last = samples[-1]
    variables = len(model.trainable_variables)
    growth = last["rss"] - warm["rss"]
    return {
        "warm_rss": warm["rss"],
        "steps": steps,
        "samples": samples,
        "warm_step": warm["step"],
        "rss_growth": growth,
        "peak_growth": last["peak_rss"] - warm["peak_rss"],
        "flat": growth <= FLAT_TOLERANCE * warm["rss"],
        "train_step_traces": last["train_step_traces"],
        "update_step_traces": last["update_step_calls"] / variables,
        "traces_after_warm_up": last["train_step_traces"] - warm["train_step_traces"],
    }


def run(mode, seed, loads, char_task, digits_task):
    common.log("memory: optimizer state")
    state = []
    keras.utils.set_random_seed(seed)
    models = [
        ("char transformer", char_task.build_model()),
        ("digits CNN", digits_task.build_model()),
        ("dense 3x1024", tasks.build_wide_dense(1024, 3)),
    ]
    for name, model in models:
        state.extend(state_sizes(name, model))

    steps, interval = LONG_RUN[mode]
    task = digits_task
    runs = {}
    for key, factory in [("kerasmuon", lambda: common.make_kerasmuon(0.02)), ("adamw", lambda: common.make_adamw(0.002))]:
        common.log(f"memory: {steps} steps of the digits CNN with {key}")
        runs[key] = long_run(task, factory, steps, interval, seed, loads)
    return {"state": state, "long_runs": runs, "flat_tolerance": FLAT_TOLERANCE, "task": task.description}
