"""Write results.md and the PNG plots from the benchmark results."""

import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COLOURS = {
    "kerasmuon": "#1b6ca8",
    "adamw": "#d1495b",
    "keras_muon_documented": "#8d6a9f",
    "keras_muon_closest": "#8d6a9f",
    "kerasmuon_keras_routing": "#7fb3d5",
    "keras_muon_on_conv": "#c3a6d1",
}
MIB = 1024 * 1024


def fmt(value, spec=".3f", missing="not reached"):
    return missing if value is None else format(value, spec)


def times(ratio):
    return "not reached" if ratio is None else f"{ratio:.2f}x"


def milliseconds(seconds):
    return f"{seconds * 1000:.1f}"


def gflops(value):
    return f"{value / 1e9:.1f}"


def verdict(passed):
    return "yes" if passed else "no"


# Targets ---------------------------------------------------------------------


def target_rows(results):
    """Return a (target, measured value, met, load) row for each benchmark target."""
    rows = []
    for task in results.get("time_to_quality", []):
        load = task["load"]
        for muon in (row for row in task["rows"] if row["family"] == "kerasmuon"):
            rate = f"rates {muon['setting']}, {muon['selection']}"
            rows.append(
                (
                    f"{task['task']}: kerasmuon.Muon ({rate}) reaches AdamW's final held-out loss "
                    "in <= 0.5x its steps",
                    times(muon["step_ratio"]),
                    verdict(muon["step_ratio"] is not None and muon["step_ratio"] <= 0.5),
                    load,
                )
            )
            rows.append(
                (
                    f"{task['task']}: kerasmuon.Muon ({rate}) reaches it in <= 0.75x AdamW's seconds",
                    times(muon["seconds_ratio"]),
                    verdict(muon["seconds_ratio"] is not None and muon["seconds_ratio"] <= 0.75),
                    load,
                )
            )

    step_cost = results.get("step_cost")
    if step_cost:
        load = step_cost["load"]
        for model in step_cost["models"]:
            for jit_compile in (False, True):
                for ours, theirs, routing in step_comparisons(model):
                    middle, low, high = paired_ratio(model, ours, theirs, jit_compile)
                    rows.append(
                        (
                            f"{model['model']}, jit_compile={jit_compile}{routing}: our step / Keras Muon's "
                            "step <= 1.0",
                            f"{middle:.3f} (rounds {low:.3f}-{high:.3f})",
                            verdict(middle <= 1.0),
                            load,
                        )
                    )
        for model in step_cost["models"]:
            for entry in model["orthogonalization"]:
                rows.append(
                    (
                        f"{model['model']}, jit_compile={entry['jit_compile']}: orthogonalization >= 80% of "
                        "matmul throughput (same sizes)",
                        f"{entry['ratio']:.0%}",
                        verdict(entry["ratio"] >= 0.8),
                        load,
                    )
                )

    memory = results.get("memory")
    if memory:
        load = memory["load"]
        for row in memory["state"]:
            if row["optimizer"] == "kerasmuon":
                rows.append(
                    (
                        f"{row['model']}: one state buffer per Muon variable, two per AdamW variable",
                        f"{row['buffers']} buffers (expected {row['expected_buffers']}), "
                        f"{row['ratio_to_adamw']:.2f}x AdamW's bytes",
                        verdict(row["buffers"] == row["expected_buffers"]),
                        load,
                    )
                )
        run = memory["long_runs"]["kerasmuon"]
        adamw = memory["long_runs"]["adamw"]
        rows.append(
            (
                f"process memory flat over {run['steps']} steps: resident set growth after step "
                f"{run['warm_step']} <= {memory['flat_tolerance']:.0%} of it",
                f"{run['rss_growth'] / MIB:+.1f} MiB of {run['warm_rss'] / MIB:.0f} MiB "
                f"(AdamW {adamw['rss_growth'] / MIB:+.1f} MiB)",
                verdict(run["flat"]),
                load,
            )
        )
        rows.append(
            (
                f"no retracing: no train_step trace after step {run['warm_step']}, as many traces as AdamW",
                f"{run['traces_after_warm_up']} after step {run['warm_step']}; {run['train_step_traces']} in all "
                f"(AdamW {adamw['train_step_traces']})",
                verdict(run["traces_after_warm_up"] == 0 and run["train_step_traces"] == adamw["train_step_traces"]),
                load,
            )
        )
    return rows


# (ours, Keras's, text) of the step-time targets. Each pair orthogonalizes
# the same variables. On a model with Conv layers, kerasmuon.Muon and
# Keras's Muon with its own routing do not, so Keras's Muon with its
# routing widened to Conv kernels replaces it.
DENSE_COMPARISONS = [("kerasmuon", "keras_muon_closest", "")]
CONV_COMPARISONS = [
    ("kerasmuon", "keras_muon_on_conv", ", Conv kernels on the Muon step in both"),
]

# At Keras's own routing, no variable of the Conv2D model takes the Muon
# step in either optimizer, so this pair compares two AdamW steps. The
# report shows its ratio beside the targets, not as one.
ADAMW_ONLY_COMPARISON = ("kerasmuon_keras_routing", "keras_muon_closest")


def step_comparisons(model):
    """Return the step-time target pairs that apply to `model`."""
    if step_row(model, "keras_muon_on_conv", False) is not None:
        return CONV_COMPARISONS
    return DENSE_COMPARISONS


def step_row(model, optimizer, jit_compile):
    """Return the step-time row of one configuration, or None when it did not run."""
    return next(
        (row for row in model["rows"] if row["optimizer"] == optimizer and row["jit_compile"] == jit_compile),
        None,
    )


def paired_ratio(model, optimizer, reference, jit_compile):
    """Return the median and quartiles of the per-round ratios of two configurations' step times."""
    ours = step_row(model, optimizer, jit_compile)
    theirs = step_row(model, reference, jit_compile)
    ratios = sorted(a / b for a, b in zip(ours["round_medians"], theirs["round_medians"]))
    quartile = len(ratios) // 4
    return statistics.median(ratios), ratios[quartile], ratios[-1 - quartile]


def step_time(model, optimizer, jit_compile):
    """Return the median step seconds of one configuration, or None when it did not run."""
    row = step_row(model, optimizer, jit_compile)
    return None if row is None else row["median_seconds"]


# Sections ------------------------------------------------------------------


def header(results):
    info = results["environment"]
    lines = [
        "# kerasmuon benchmarks",
        "",
        f"Made by `{info['command']}` on {info['date']}, in {results['wall_seconds'] / 60:.1f} minutes.",
        "",
        f"- Machine: {info['cpus']} CPUs (`nproc`), {info['cpu_model']}, {info['memory_gib']:.0f} GiB of memory",
        f"- Backend: {info['backend']}; {info['versions']}",
        f"- Measured: {info['source']}",
        f"- Mode: {results['mode']}; seed {results['seed']}",
        f"- 1-minute load average at start {info['load_start']}, at end {info['load_end']}. "
        "Other jobs may share the CPUs, so each table gives the load range sampled while it ran.",
        "",
        "Every figure compares runs made in this one process. Times are medians or sums of the "
        "calls named in each section; compare ratios, not absolute times, across machines.",
        "",
    ]
    return lines


def targets_section(results):
    lines = ["## Targets", "", "| target | measured | met | load |", "|---|---|---|---|"]
    for target, measured, met, load in target_rows(results):
        lines.append(f"| {target} | {measured} | {met} | {load} |")
    lines.append("")
    return lines


def muon_settings(task):
    """Describe the weight decay of kerasmuon.Muon in a task's runs."""
    decay = task.get("muon_weight_decay")
    if decay is None:
        return "kerasmuon.Muon runs with its default settings."
    return (
        f"kerasmuon.Muon runs with `weight_decay = {decay:g}`, the default decay of Keras's AdamW, "
        "so that both apply the same decoupled weight decay. Its rates read \"Muon step / AdamW "
        "step\": `learning_rate` and `learning_rate * adam_lr_ratio`. Every other setting is each "
        "optimizer's default."
    )


def time_to_quality_section(results, out_dir):
    lines = [
        "## 1. Time to quality",
        "",
        "Each optimizer family trains at every learning rate of its grid, from the same initial "
        "weights on the same batches. kerasmuon.Muon has two rates, one for its Muon step and "
        "one for the AdamW step of the variables that are not weight matrices (embeddings, norms, "
        "biases, the output layer), so its grid pairs each Muon rate with AdamW rates from Keras "
        "AdamW's own grid. Each family's best setting is the one with the lowest final "
        "held-out loss. When another kerasmuon setting reaches the target in fewer steps, it gets a "
        "row of its own (\"fewest steps\"). "
        "\"To AdamW's final loss\" is the first evaluation at which the held-out loss is at or "
        "below the final held-out loss of the best AdamW run, so it is resolved to the evaluation "
        "interval. Seconds add up the train_on_batch calls (tracing of the first call included, "
        "evaluations left out); the runs are interleaved, one evaluation interval each in turn. "
        "Before a task's runs start, the benchmark collects the garbage of earlier tasks and "
        "freezes the surviving objects (`gc.freeze()`), so that no timed step pays for a full "
        "collection over objects of another benchmark. "
        "All runs use `jit_compile=\"auto\"`, Keras's default.",
        "",
        "The documented Keras Muon row is `keras.optimizers.Muon(exclude_layers = \"output_dense\")`, "
        "the form keras3's documentation shows. Keras reads the string character by character, so "
        "every variable whose path contains one of those letters takes the AdamW step at "
        "`adam_lr_ratio = 1`, which makes it AdamW under another name. Its curves repeat AdamW's "
        "at the same rate, so where its grid is a single rate, that rate is AdamW's best in the "
        "earlier full runs.",
        "",
    ]
    for task in results["time_to_quality"]:
        lines += [
            f"### {task['task']}",
            "",
            f"{task['description']}. {task['steps']} steps of batch {task['batch_size']}, evaluated every "
            f"{task['interval']} steps on {task['held_out']} held-out examples. Load {task['load']}. "
            + muon_settings(task),
            "",
            "| optimizer | learning rate (grid) | steps to AdamW's final loss | ratio | seconds to it | ratio "
            "| final held-out loss | final accuracy | median step (ms) | first step (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        edges = []
        for row in task["rows"]:
            grid = grid_text(row)
            if row["best_at_grid_edge"] and row["selection"] == "lowest loss":
                edges.append(row["label"])
            label = row["label"] + (" (fewest steps)" if row["selection"] == "fewest steps" else "")
            lines.append(
                f"| {label} | {row['setting']} ({grid}) | {fmt(row['steps_to_target'], 'd')} "
                f"| {fmt(row['step_ratio'], '.2f', '-')} | {fmt(row['seconds_to_target'], '.1f')} "
                f"| {fmt(row['seconds_ratio'], '.2f', '-')} | {row['final_loss']:.4f} "
                f"| {row['final_accuracy']:.4f} | {milliseconds(row['median_step_seconds'])} "
                f"| {row['first_step_seconds']:.1f} |"
            )
        if edges:
            lines += [
                "",
                f"The best rate of {', '.join(edges)} is at the edge of its grid, so a wider grid may find a better one.",
            ]
        lines += budget_table(task)
        name = f"time-to-quality-{task['task']}.png"
        plot_time_to_quality(task, os.path.join(out_dir, name))
        lines += ["", f"![Held-out loss against steps and seconds, {task['task']}]({name})", ""]
    return lines


def grid_text(row):
    """Return a row's grid: its rates, and for kerasmuon the AdamW step rates paired with them."""
    rates = ", ".join(f"{rate:g}" for rate in row["grid"])
    if not row.get("adamw_grid"):
        return rates
    adamw_rates = ", ".join(f"{rate:g}" for rate in row["adamw_grid"])
    return f"{rates} x {adamw_rates}"


def budget_table(task):
    """Return the comparison at shorter budgets, read from the same runs."""
    if not task.get("budgets"):
        return []
    lines = [
        "",
        "The same runs compared at shorter budgets: the target is the best AdamW loss after that "
        "many steps, and every family's best rate is chosen again at that point.",
        "",
        "| budget (steps) | AdamW rate | target loss | kerasmuon rates | steps ratio | seconds ratio "
        "| kerasmuon rates, fewest steps | steps ratio | seconds ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in task["budgets"]:
        adamw = next(row for row in budget["rows"] if row["family"] == "adamw")
        muon = [row for row in budget["rows"] if row["family"] == "kerasmuon"]
        best, fastest = muon[0], muon[-1]
        lines.append(
            f"| {budget['steps']} | {adamw['setting']} | {adamw['final_loss']:.4f} "
            f"| {best['setting']} | {fmt(best['step_ratio'], '.2f', 'not reached')} "
            f"| {fmt(best['seconds_ratio'], '.2f', 'not reached')} | {fastest['setting']} "
            f"| {fmt(fastest['step_ratio'], '.2f', 'not reached')} | {fmt(fastest['seconds_ratio'], '.2f', 'not reached')} |"
        )
    return lines


def adamw_only_lines(data):
    """Return the paragraph on the Conv2D pair at Keras's own routing, or nothing when it did not run."""
    ours, theirs = ADAMW_ONLY_COMPARISON
    for model in data["models"]:
        if step_row(model, ours, False) is None:
            continue
        ratios = [
            "{:.3f} ({:.3f}-{:.3f})".format(*paired_ratio(model, ours, theirs, jit_compile))
            for jit_compile in (False, True)
        ]
        return [
            f"On the {model['model']} model at Keras's own routing, the Conv kernels and the output "
            "layer take the AdamW step in both optimizers, so no variable takes the Muon step and the "
            "pair compares two AdamW steps. kerasmuon's step took "
            f"{ratios[0]} times as long as Keras's Muon's without `jit_compile` and {ratios[1]} with "
            "it (median and quartiles of the per-round ratios). This is shown for information and is "
            "not a step target.",
            "",
        ]
    return []


def step_cost_section(results, out_dir):
    data = results["step_cost"]
    lines = [
        "## 2. Step cost",
        "",
        "Median seconds of one `train_on_batch` call, every optimizer and both `jit_compile` "
        "settings timed in interleaved rounds in this process. Keras Muon's closest settings: "
        "`exclude_layers = list(\"output_dense\")`, `ns_steps = 6`, `adam_lr_ratio = 0.1`, "
        "weight decay 0.1 for both steps and `rms_rate = NULL`. Keras 3.15 gives Conv kernels the "
        "AdamW step whatever the settings, so on the Conv2D model two more configurations make both "
        "optimizers treat them alike: Keras's Muon with its routing widened to 4D kernels (a "
        "subclass that overrides `_should_use_adamw`; Keras's Newton-Schulz function then "
        "orthogonalizes each of the 9 (input channels, filters) slices of a 3x3 kernel on its own), "
        "and kerasmuon with the Conv kernels excluded (`exclude_layers = c(\"output_dense\", "
        "\"conv\\\\d+/kernel\")`), Keras's own routing. The step targets compare configurations that "
        "orthogonalize the same variables. Their ratio is the median of the ratios within each "
        "round, so that a change of load between rounds cancels, with the quartiles of those "
        f"ratios beside it. The columns below divide overall medians. Load {data['load']}.",
        "",
    ]
    lines += adamw_only_lines(data)
    lines += [
        "| model | optimizer | jit_compile | median step (ms) | / Keras Muon | / AdamW |",
        "|---|---|---|---|---|---|",
    ]
    for model in data["models"]:
        for row in model["rows"]:
            keras_muon = step_time(model, "keras_muon_closest", row["jit_compile"])
            adamw = step_time(model, "adamw", row["jit_compile"])
            lines.append(
                f"| {model['model']} | {row['label']} | {row['jit_compile']} | {milliseconds(row['median_seconds'])} "
                f"| {row['median_seconds'] / keras_muon:.3f} | {row['median_seconds'] / adamw:.2f} |"
            )
    lines += [
        "",
        "The orthogonalization alone: `kerasmuon.newton_schulz.muon_update` on every Muon variable of "
        "the model in one compiled function, against a chain of whole matmuls (float32) of the same "
        "sizes and dependencies alone, in the same backend and mode. The two are called in turn for "
        "at least one second. A view whose longer side is at least 1.5 times the shorter one runs its "
        "iterations in groups of 3 on its Gram matrix, with one product with the matrix per group. "
        "From 1,024 rows on with XLA, and from 2,048 without, kerasmuon forms every product with a "
        "symmetric result (all but the product with the matrix) from three of its four blocks, with "
        "3/4 of the multiplications. "
        "FLOPs count 2 per multiply-add of the matmuls kerasmuon runs "
        "(`kerasmuon.newton_schulz.products`), and the ratio is of FLOPs per second: kerasmuon's "
        "against the chain's.",
        "",
        "| model | jit_compile | matrix views | FLOPs per step | time (ms) | GFLOP/s | matmul GFLOP/s, same sizes | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in data["models"]:
        for entry in model["orthogonalization"]:
            views = ", ".join(f"{rows}x{columns}" for rows, columns in entry["views"])
            lines.append(
                f"| {model['model']} | {entry['jit_compile']} | {views} | {entry['flops']:.3g} "
                f"| {milliseconds(entry['seconds'])} | {gflops(entry['flops_per_second'])} "
                f"| {gflops(entry['matmul_flops_per_second'])} | {entry['ratio']:.0%} |"
            )
    peaks = data["peak_matmul"]
    lines += [
        "",
        "Best square float32 matmul in this run: "
        + "; ".join(
            f"jit_compile={peak['jit_compile']}: {gflops(peak['flops_per_second'])} GFLOP/s "
            f"at {peak['side']}x{peak['side']}"
            for peak in peaks
        )
        + ".",
        "",
    ]
    plot_step_cost(data, os.path.join(out_dir, "step-cost.png"))
    lines += ["![Median train-step time per optimizer](step-cost.png)", ""]
    return lines


def memory_section(results, out_dir):
    data = results["memory"]
    lines = [
        "## 3. Memory",
        "",
        "Optimizer state: the bytes of every non-scalar optimizer variable after `build()`.",
        "",
        "| model | optimizer | state buffers | bytes | / AdamW |",
        "|---|---|---|---|---|",
    ]
    for row in data["state"]:
        expected = f" (expected {row['expected_buffers']})" if "expected_buffers" in row else ""
        lines.append(
            f"| {row['model']} | {row['label']} | {row['buffers']}{expected} | {row['bytes']:,} "
            f"| {row['ratio_to_adamw']:.2f} |"
        )
    lines += [
        "",
        f"Long run: {data['task']}. Resident set (VmRSS) and its peak (VmHWM) sampled during the run; "
        "traces count the Python calls of `train_step` and of `update_step` per variable, which run "
        f"only while Keras traces the compiled step. Load {data['load']}.",
        "",
        "| optimizer | steps | warm-up step | resident set then (MiB) | growth after it (MiB) "
        "| peak growth after it (MiB) | train_step traces | update_step traces per variable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, run in data["long_runs"].items():
        lines.append(
            f"| {key} | {run['steps']} | {run['warm_step']} | {run['warm_rss'] / MIB:.0f} "
            f"| {run['rss_growth'] / MIB:+.1f} | {run['peak_growth'] / MIB:+.1f} "
            f"| {run['train_step_traces']} | {run['update_step_traces']:g} |"
        )
    lines += [
        "",
        "TensorFlow traces a tf.function a second time when its first trace creates variables, as "
        "Keras's optimizer does on its first step, so 2 traces on that backend are not a retrace.",
    ]
    plot_memory(data, os.path.join(out_dir, "memory.png"))
    lines += ["", "![Resident set over the long run](memory.png)", ""]
    return lines


def growth_section(results, out_dir):
    data = results["growth"]
    lines = [
        "## 4. Growth",
        "",
        "One hidden Dense layer of width x width (the Muon variable), batch "
        f"{data['batch']}, `jit_compile = FALSE`. The FLOP model of the orthogonalization counts "
        "the matmuls `kerasmuon.newton_schulz.products` lists for the square n x n view, which takes "
        "its iterations one at a time: 6 n^3 per iteration below 2,048, and 5 n^3 from 2,048 on, "
        "where without XLA the two symmetric products of each iteration are formed from three "
        "blocks. Its time is those FLOPs at the matmul rate measured for the same sizes. Each "
        f"doubling multiplies the FLOPs by 8, and by 20/3 from 1,024 to 2,048. Load {data['load']}.",
        "",
        "| width | FLOPs | kerasmuon step (ms) | AdamW step (ms) | difference (ms) | growth | "
        "orthogonalization alone (ms) | growth | FLOP model (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['width']} | {row['flops']:.3g} | {milliseconds(row['kerasmuon_seconds'])} "
            f"| {milliseconds(row['adamw_seconds'])} | {milliseconds(row['difference_seconds'])} "
            f"| {fmt(row.get('difference_growth'), '.1f', '-')} | {milliseconds(row['orthogonalization_seconds'])} "
            f"| {fmt(row.get('orthogonalization_growth'), '.1f', '-')} | {milliseconds(row['model_seconds'])} |"
        )
    plot_growth(data, os.path.join(out_dir, "growth.png"))
    lines += ["", "![Step time against layer width](growth.png)", ""]
    return lines


def write(results, out_dir):
    """Write results.md and the plots into `out_dir` and return the Markdown path."""
    lines = header(results) + targets_section(results)
    if results.get("time_to_quality"):
        lines += time_to_quality_section(results, out_dir)
    if results.get("step_cost"):
        lines += step_cost_section(results, out_dir)
    if results.get("memory"):
        lines += memory_section(results, out_dir)
    if results.get("growth"):
        lines += growth_section(results, out_dir)
    path = os.path.join(out_dir, "results.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path


# Plots ---------------------------------------------------------------------


def plot_time_to_quality(task, path):
    figure, (by_step, by_second) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)

    best = {(row["family"], row["setting"]) for row in task["rows"]}
    fastest = {(row["family"], row["setting"]) for row in task["rows"] if row["selection"] == "fewest steps"}
    for run in task["runs"]:
        setting = run["setting"]
        key = (run["family"], setting)
        is_best = key in best
        label = f"{run['label']}, lr {setting}" if is_best else None
        # The documented Keras Muon is AdamW under another name, so its curve
        # lies on AdamW's. Dashes keep both visible.
        linestyle = "--" if run["family"] == "keras_muon_documented" else "-"
        if key in fastest:
            linestyle = "-."
            label += " (fewest steps)"
        style = {
            "color": COLOURS[run["family"]],
            "linewidth": 2 if is_best else 0.8,
            "alpha": 1 if is_best else 0.35,
            "linestyle": linestyle,
            "label": label,
        }
        by_step.plot(run["steps"], run["loss"], **style)
        by_second.plot(run["seconds"], run["loss"], **style)

    for axes in (by_step, by_second):
        axes.axhline(task["target_loss"], color="grey", linestyle="--", linewidth=1)
        axes.grid(alpha=0.3)
    finite = [loss for run in task["runs"] for loss in run["loss"][1:] if loss != float("inf")]
    if finite:
        low = min(finite)
        by_step.set_ylim(low - 0.05 * abs(low), sorted(finite)[int(len(finite) * 0.9)])

    by_step.set_xlabel("training steps")
    by_second.set_xlabel("seconds in train_on_batch")
    by_step.set_ylabel("held-out loss")
    by_step.legend(fontsize=8)
    figure.suptitle(f"{task['task']}: held-out loss (dashed: best AdamW's final loss; thin: other learning rates)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_step_cost(data, path):
    models = data["models"]
    figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4))
    if len(models) == 1:
        axes = [axes]
    for ax, model in zip(axes, models):
        names = {
            "kerasmuon": "kerasmuon",
            "keras_muon_on_conv": "Keras Muon,\nConv on Muon",
            "kerasmuon_keras_routing": "kerasmuon,\nConv on AdamW",
            "keras_muon_closest": "Keras Muon\n(closest)",
            "adamw": "AdamW",
        }
        keys = [key for key in names if step_time(model, key, False) is not None]
        width = 0.38
        for offset, jit_compile in enumerate((False, True)):
            values = [step_time(model, key, jit_compile) * 1000 for key in keys]
            positions = [index + (offset - 0.5) * width for index in range(len(keys))]
            bars = ax.bar(positions, values, width, color=[COLOURS[key] for key in keys], alpha=1 if offset == 0 else 0.55)
            ax.bar_label(bars, labels=[f"{'XLA' if jit_compile else 'graph'}" for _ in keys], fontsize=7)
        ax.set_xticks(range(len(keys)), [names[key] for key in keys])
        ax.set_ylabel("median train step (ms)")
        ax.set_title(model["model"])
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("Median train-step time; left bar jit_compile=False, right bar jit_compile=True")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_memory(data, path):
    figure, ax = plt.subplots(figsize=(7, 4))
    for key, run in data["long_runs"].items():
        steps = [sample["step"] for sample in run["samples"]]
        ax.plot(steps, [sample["rss"] / MIB for sample in run["samples"]], color=COLOURS[key], label=f"{key}: resident set")
        ax.plot(
            steps,
            [sample["peak_rss"] / MIB for sample in run["samples"]],
            color=COLOURS[key],
            linestyle=":",
            label=f"{key}: process peak so far (VmHWM)",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Process memory over the long run (digits CNN)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_growth(data, path):
    rows = data["rows"]
    widths = [row["width"] for row in rows]
    figure, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(widths, [row["kerasmuon_seconds"] * 1000 for row in rows], "o-", color=COLOURS["kerasmuon"], label="kerasmuon step")
    ax.loglog(widths, [row["adamw_seconds"] * 1000 for row in rows], "o-", color=COLOURS["adamw"], label="AdamW step")
    ax.loglog(widths, [row["orthogonalization_seconds"] * 1000 for row in rows], "s--", color="black", label="orthogonalization alone")
    ax.loglog(widths, [row["model_seconds"] * 1000 for row in rows], ":", color="grey", label="FLOP model at measured matmul throughput")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(widths, [str(width) for width in widths])
    ax.set_xlabel("layer width")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Step time as the width doubles")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
