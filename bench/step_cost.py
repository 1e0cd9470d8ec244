"""Step cost: median train-step time per optimizer, and the orthogonalization against matmul throughput.

Every configuration lives in one process. Their steps are timed in
interleaved rounds, so that a change in machine load falls on all of them
alike. The orthogonalization is timed on its own, as kerasmuon computes it:
`kerasmuon.newton_schulz.muon_update` on every Muon variable of the model,
in one compiled function. Its FLOP rate is compared with that of its
matmuls alone, in the same backend and compilation mode.
"""

import numpy as np

import keras

import common
import tasks

LEARNING_RATE = 1e-3

# (name, builder, batch shape) per mode. Inputs are random, because only the
# timing matters.
MODELS = {
    "quick": [
        ("dense 2x256", lambda: tasks.build_wide_dense(256, 2), (64, 256)),
        ("conv 32-64", lambda: tasks.build_conv_net((32, 64), side=8, channels=16), (32, 8, 8, 16)),
    ],
    "full": [
        ("dense 3x1024", lambda: tasks.build_wide_dense(1024, 3), (128, 1024)),
        ("conv 64-128-128", lambda: tasks.build_conv_net((64, 128, 128), side=16, channels=32), (32, 16, 16, 32)),
    ],
}

# (rounds, steps per round) of the interleaved step timing. The report
# takes step-time ratios within each round and gives their median, so that
# a change in machine load between rounds cancels out. With 5 rounds, the
# ratio of overall medians of the same two configurations varied by up to
# 7% between runs on the 2-core benchmark machine.
ROUNDS = {"quick": (3, 3), "full": (15, 3)}

# Sides of the square matmuls whose best throughput is reported as the
# machine's matmul peak.
PEAK_SIDES = {"quick": (512, 1024), "full": (512, 1024, 2048)}

OPTIMIZERS = [
    ("kerasmuon", "kerasmuon.Muon", lambda: common.make_kerasmuon(LEARNING_RATE)),
    ("keras_muon_closest", "keras Muon, closest settings", lambda: common.make_keras_muon_closest(LEARNING_RATE)),
    ("adamw", "keras AdamW", lambda: common.make_adamw(LEARNING_RATE)),
]

# Keras 3.15's Muon gives Conv kernels the AdamW step, and its constructor
# cannot change that. On a model with Conv layers, two more configurations
# make both optimizers treat the Conv kernels alike: Keras's Muon with its
# routing widened to 4D kernels, and kerasmuon with the Conv kernels
# excluded, which is Keras's own routing.
CONV_ROUTINGS = [
    (
        "keras_muon_on_conv",
        "keras Muon, closest settings, Conv kernels on its Muon step",
        lambda: common.make_keras_muon_on_conv_kernels(LEARNING_RATE),
    ),
    (
        "kerasmuon_keras_routing",
        "kerasmuon.Muon, Conv kernels on AdamW",
        lambda: common.make_kerasmuon(LEARNING_RATE, exclude_layers=["output_dense", r"conv\d+/kernel"]),
    ),
]


def random_batches(batch_shape, count, seed):
    generator = np.random.RandomState(seed)
    return [
        (
            generator.standard_normal(batch_shape).astype("float32"),
            generator.randint(0, 10, size=batch_shape[0]).astype("int32"),
        )
        for _ in range(count)
    ]


def time_steps(builder, batch_shape, rounds, steps_per_round, seed, loads):
    """Return the median step seconds of each optimizer, with and without jit_compile."""
    keras.utils.set_random_seed(seed)
    template = builder()
    initial_weights = template.get_weights()
    batches = random_batches(batch_shape, steps_per_round, seed)
    optimizers = list(OPTIMIZERS)
    if any(isinstance(layer, keras.layers.Conv2D) for layer in template.layers):
        optimizers[1:1] = CONV_ROUTINGS

    configs = []
    for jit_compile in (False, True):
        for key, label, factory in optimizers:
            model = builder()
            model.set_weights(initial_weights)
            optimizer = factory()
            common.compile_model(model, optimizer, jit_compile=jit_compile)
            # Two warm-up steps: the first traces and compiles.
            common.timed_train_steps(model, batches[:1] * 2)
            configs.append(
                {"optimizer": key, "label": label, "jit_compile": jit_compile, "model": model, "rounds": []}
            )

    for _ in range(rounds):
        loads.sample()
        for config in configs:
            config["rounds"].append(common.timed_train_steps(config["model"], batches))
    loads.sample()

    muon_optimizer = configs[0]["model"].optimizer
    routes = muon_optimizer.routes(configs[0]["model"].trainable_variables)
    rows = []
    for config in configs:
        rows.append(
            {
                "optimizer": config["optimizer"],
                "label": config["label"],
                "jit_compile": config["jit_compile"],
                "median_seconds": common.median([seconds for steps in config["rounds"] for seconds in steps]),
                "round_medians": [common.median(steps) for steps in config["rounds"]],
                "samples": sum(len(steps) for steps in config["rounds"]),
            }
        )
    return rows, routes, muon_optimizer.ns_steps


def orthogonalization_function(views, steps):
    from kerasmuon.newton_schulz import muon_update

    def orthogonalize_all(*directions):
        return [
            muon_update(direction, view, common.COEFFICIENTS, steps)
            for direction, view in zip(directions, views)
        ]

    return orthogonalize_all


def matmul_seconds(shape, jit_compile, repeats, copies=4, seed=0):
    """Return the seconds of one (rows x inner) @ (inner x columns) float32 matmul.

    One compiled call multiplies `copies` distinct pairs, so that no
    compiler can merge the products and the dispatch cost is spread.
    """
    rows, inner, columns = shape
    generator = np.random.RandomState(seed)
    left = [keras.ops.convert_to_tensor(generator.standard_normal((rows, inner)).astype("float32")) for _ in range(copies)]
    right = [keras.ops.convert_to_tensor(generator.standard_normal((inner, columns)).astype("float32")) for _ in range(copies)]

    def products(*tensors):
        return [keras.ops.matmul(a, b) for a, b in zip(tensors[:copies], tensors[copies:])]

    function = common.compile_function(products, jit_compile)
    return common.time_function(function, left + right, repeats) / copies


def orthonormal_rows(view, generator):
    """Return an n x m float32 matrix with orthonormal rows, n the shorter side of `view`."""
    n, m = sorted(int(side) for side in view)
    q, _ = np.linalg.qr(generator.standard_normal((m, n)))
    return q.T.astype("float32")


def matmul_chain_function(views, steps):
    """Return a function that runs the orthogonalization's matmuls, as whole products, and nothing else.

    For each view it computes the products of kerasmuon's iterations, with
    their sizes and dependencies, in the groups that
    `kerasmuon.newton_schulz.iteration_groups` gives: per group, G = X @ Y,
    then per iteration H = G @ G, the running product Q = Q @ H and, but for
    the last one, the next G = H @ (G @ H), and at the end X = Q @ X. Here Y
    is a fixed, already transposed input, and there is no element-wise work,
    normalization or transpose. With X's rows orthonormal and Y = X^T, G is
    the identity and X stays bounded, so the values neither overflow nor
    turn subnormal.
    """
    from kerasmuon.newton_schulz import iteration_groups

    plans = [iteration_groups(view, steps) for view in views]

    def chains(*tensors):
        half = len(tensors) // 2
        results = []
        for x, y, groups in zip(tensors[:half], tensors[half:], plans):
            for count in groups:
                gram = keras.ops.matmul(x, y)
                product = None
                for index in range(count):
                    square = keras.ops.matmul(gram, gram)
                    product = square if product is None else keras.ops.matmul(product, square)
                    if index < count - 1:
                        gram = keras.ops.matmul(square, keras.ops.matmul(gram, square))
                x = keras.ops.matmul(product, x)
            results.append(x)
        return results

    return chains


def whole_product_flops(view, steps):
    """Return the FLOPs of `matmul_chain_function` for one view.

    Take the shorter side n and the longer side m. A group of k iterations
    computes the Gram matrix and one product with X, 2 n^2 m FLOPs each.
    On the small matrices it computes k products for the polynomials, k - 1
    products of polynomials and 2 (k - 1) products for the next Gram
    matrix, 2 n^3 FLOPs each. That is 4 n^2 m + (8 k - 6) n^3 in all.
    """
    from kerasmuon.newton_schulz import iteration_groups

    n, m = sorted(int(side) for side in view)
    return sum(4 * n * n * m + (8 * k - 6) * n ** 3 for k in iteration_groups(view, steps))


def time_orthogonalization(routes, steps, jit_compile, repeats, seed):
    """Time kerasmuon's orthogonalization of every Muon variable, and compare its FLOP rate with that of matmuls.

    The matmul rate is that of `matmul_chain_function`, whole products of
    the views' sizes. Below the rows `symmetric_blocks_from()` gives, the
    chain runs the same products as kerasmuon. From there on, kerasmuon
    forms symmetric products from three half-size blocks with fewer FLOPs,
    so the comparison is of FLOPs per second.
    """
    muon_routes = [route for route in routes if route.step == "muon"]
    views = [route.matrix_view for route in muon_routes]
    generator = np.random.RandomState(seed)
    # Directions have the view's shape. The optimizer reshapes each kernel
    # to its view first, a copy that is not timed here.
    directions = [keras.ops.convert_to_tensor(generator.standard_normal(view).astype("float32")) for view in views]
    function = common.compile_function(orthogonalization_function(views, steps), jit_compile)

    rows = [orthonormal_rows(view, generator) for view in views]
    chain_inputs = [keras.ops.convert_to_tensor(x) for x in rows]
    chain_inputs += [keras.ops.convert_to_tensor(np.ascontiguousarray(x.T)) for x in rows]
    chain = common.compile_function(matmul_chain_function(views, steps), jit_compile)
    seconds, chain_seconds = common.time_functions(
        [(function, directions), (chain, chain_inputs)], repeats
    )

    flops = sum(common.newton_schulz_flops(view, steps, jit_compile) for view in views)
    matmul_rate = sum(whole_product_flops(view, steps) for view in views) / chain_seconds
    return {
        "jit_compile": jit_compile,
        "views": views,
        "flops": flops,
        "seconds": seconds,
        "flops_per_second": flops / seconds,
        "matmul_flops_per_second": matmul_rate,
        # kerasmuon's FLOPs at the matmul rate: the FLOP model's time.
        "matmul_seconds": flops / matmul_rate,
        "ratio": flops / seconds / matmul_rate,
    }


def peak_matmul(sides, jit_compile, repeats):
    """Return the best FLOP/s of square float32 matmuls of the given sides, and the side."""
    best = (0.0, None)
    for side in sides:
        seconds = matmul_seconds((side, side, side), jit_compile, repeats, copies=2)
        best = max(best, (2 * side ** 3 / seconds, side))
    return best


def run(mode, seed, loads):
    rounds, steps_per_round = ROUNDS[mode]
    repeats = 5 if mode == "quick" else 10
    results = []
    for name, builder, batch_shape in MODELS[mode]:
        common.log(f"step cost: {name}")
        rows, routes, ns_steps = time_steps(builder, batch_shape, rounds, steps_per_round, seed, loads)
        orthogonalization = []
        for jit_compile in (False, True):
            loads.sample()
            orthogonalization.append(time_orthogonalization(routes, ns_steps, jit_compile, repeats, seed))
        results.append(
            {
                "model": name,
                "batch_shape": batch_shape,
                "ns_steps": ns_steps,
                "muon_variables": sum(route.step == "muon" for route in routes),
                "rows": rows,
                "orthogonalization": orthogonalization,
            }
        )

    peaks = []
    for jit_compile in (False, True):
        loads.sample()
        flops_per_second, side = peak_matmul(PEAK_SIDES[mode], jit_compile, repeats)
        peaks.append({"jit_compile": jit_compile, "flops_per_second": flops_per_second, "side": side})
    return {"models": results, "peak_matmul": peaks}
