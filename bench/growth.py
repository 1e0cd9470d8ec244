"""Growth: step time as the layer width doubles, against the FLOP model of the orthogonalization.

The model is one hidden Dense layer of width x width (the Muon variable)
and an excluded output layer, so the orthogonalization of one square
matrix is the work that grows. Each width is timed with kerasmuon.Muon
and with AdamW, interleaved, in the Keras default compilation mode.
"""

import keras

import common
import step_cost
import tasks

WIDTHS = {"quick": (256, 512, 1024), "full": (256, 512, 1024, 2048)}
BATCH = 64
# (rounds, steps per round) per mode.
ROUNDS = {"quick": (2, 2), "full": (3, 2)}


def run(mode, seed, loads):
    rounds, steps_per_round = ROUNDS[mode]
    rows = []
    for width in WIDTHS[mode]:
        common.log(f"growth: width {width}")
        builder = lambda width=width: tasks.build_wide_dense(width, 1)
        keras.utils.set_random_seed(seed)
        initial_weights = builder().get_weights()
        batches = step_cost.random_batches((BATCH, width), steps_per_round, seed)

        models = {}
        for key, factory in [("kerasmuon", lambda: common.make_kerasmuon(1e-3)), ("adamw", lambda: common.make_adamw(1e-3))]:
            model = builder()
            model.set_weights(initial_weights)
            common.compile_model(model, factory(), jit_compile=False)
            common.timed_train_steps(model, batches[:1] * 2)
            models[key] = (model, [])

        for _ in range(rounds):
            loads.sample()
            for model, seconds in models.values():
                seconds.extend(common.timed_train_steps(model, batches))

        steps = models["kerasmuon"][0].optimizer.ns_steps
        flops = common.newton_schulz_flops((width, width), steps, jit_compile=False)
        muon_model = models["kerasmuon"][0]
        route = muon_model.optimizer.route(muon_model.get_layer("hidden1").kernel)
        orthogonalization = step_cost.time_orthogonalization([route], steps, False, 3, seed)
        muon_seconds = common.median(models["kerasmuon"][1])
        adamw_seconds = common.median(models["adamw"][1])
        rows.append(
            {
                "width": width,
                "flops": flops,
                "kerasmuon_seconds": muon_seconds,
                "adamw_seconds": adamw_seconds,
                "difference_seconds": muon_seconds - adamw_seconds,
                "orthogonalization_seconds": orthogonalization["seconds"],
                # The FLOP model's time: the orthogonalization's FLOPs at
                # the matmul rate measured in this process.
                "model_seconds": orthogonalization["matmul_seconds"],
            }
        )
    loads.sample()

    for previous, row in zip(rows, rows[1:]):
        row["difference_growth"] = row["difference_seconds"] / previous["difference_seconds"]
        row["orthogonalization_growth"] = row["orthogonalization_seconds"] / previous["orthogonalization_seconds"]
        row["flop_growth"] = row["flops"] / previous["flops"]
    return {"batch": BATCH, "rows": rows}
