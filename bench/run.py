"""Run kerasmuon's benchmarks and write results.md, results.json and PNG plots.

Usage:
    .venv/bin/python bench/run.py --mode quick --out /tmp/bench-quick
    .venv/bin/python bench/run.py --mode full --out bench/results

Quick mode runs every benchmark at a small size (a few minutes on 2 CPU
cores) to check that the harness works. Full mode makes the published
table (about an hour on 2 CPU cores).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(BENCH_DIR)
BENCHMARKS = ("time_to_quality", "step_cost", "memory", "growth")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description="Benchmark kerasmuon.Muon against Keras's AdamW and Muon.")
    parser.add_argument("--mode", choices=("quick", "full"), default="quick", help="benchmark size (default: quick)")
    parser.add_argument("--out", required=True, help="folder for results.md, results.json and the PNG plots")
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=list(BENCHMARKS),
        help="run only these benchmarks (default: all)",
    )
    parser.add_argument("--seed", type=int, default=20240607, help="seed of weights and batches (default: 20240607)")
    parser.add_argument("--r-doc-dir", help="folder with R's NEWS files (default: R.home(\"doc\") from Rscript)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite results.md and the plots from the results.json in --out, without running anything",
    )
    parser.add_argument(
        "--python-path",
        default=os.path.join(REPOSITORY, "inst", "python"),
        help="folder that contains the kerasmuon Python module (default: inst/python of this checkout)",
    )
    return parser.parse_args(argv)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def versions(backend):
    import keras
    import numpy
    import sklearn

    names = [f"Python {platform.python_version()}", f"Keras {keras.__version__}", f"NumPy {numpy.__version__}"]
    if backend == "tensorflow":
        import tensorflow

        names.append(f"TensorFlow {tensorflow.__version__}")
    elif backend == "jax":
        import jax

        names.append(f"JAX {jax.__version__}")
    else:
        import torch

        names.append(f"PyTorch {torch.__version__}")
    names.append(f"scikit-learn {sklearn.__version__}")
    return ", ".join(names)


def module_source(python_path):
    """Describe the kerasmuon source that was measured: commit, local changes and a digest."""
    digest = hashlib.sha256()
    folder = os.path.join(python_path, "kerasmuon")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    description = f"kerasmuon from {python_path}, sha256 of its .py files {digest.hexdigest()[:12]}"

    if os.path.realpath(python_path) != os.path.realpath(os.path.join(REPOSITORY, "inst", "python")):
        return description
    try:
        commit = subprocess.run(
            ["git", "-C", REPOSITORY, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", REPOSITORY, "status", "--porcelain", "inst/python"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return description
    state = "with uncommitted changes in inst/python" if changes else "inst/python unchanged"
    return f"{description}; checkout at commit {commit}, {state}"


def main(argv):
    arguments = parse_arguments(argv)
    # Keras chooses its backend once, when it is first imported.
    os.environ["KERAS_BACKEND"] = arguments.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, arguments.python_path)
    sys.path.insert(0, BENCH_DIR)

    import keras

    if arguments.backend == "tensorflow":
        import tensorflow

        # TensorFlow warns whenever several tf.functions are traced in a row,
        # which every new model here does. Retracing is counted instead.
        tensorflow.get_logger().setLevel("ERROR")

    import common
    import growth
    import memory
    import report
    import step_cost
    import tasks
    import time_to_quality

    os.makedirs(arguments.out, exist_ok=True)
    if arguments.report_only:
        with open(os.path.join(arguments.out, "results.json")) as handle:
            path = report.write(json.load(handle), arguments.out)
        common.log(f"rewrote {path} from results.json")
        return 0

    started = time.perf_counter()
    environment = {
        "command": "python bench/run.py " + " ".join(shlex.quote(argument) for argument in argv),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "backend": arguments.backend,
        "versions": versions(arguments.backend),
        "source": module_source(arguments.python_path),
        "load_start": common.load_average(),
    }
    common.log(f"{arguments.mode} mode on {arguments.backend}: {', '.join(arguments.only)}")
    results = {"mode": arguments.mode, "seed": arguments.seed, "environment": environment}

    char_task = tasks.char_transformer_task(arguments.r_doc_dir)
    digits_task = tasks.digits_task()

    if "time_to_quality" in arguments.only:
        results["time_to_quality"] = []
        for task in (char_task, digits_task):
            loads = common.LoadRecorder()
            (result,) = time_to_quality.run([task], arguments.mode, arguments.seed, loads)
            result["load"] = loads.summary()
            results["time_to_quality"].append(result)

    benchmarks = {
        "step_cost": lambda loads: step_cost.run(arguments.mode, arguments.seed, loads),
        "memory": lambda loads: memory.run(arguments.mode, arguments.seed, loads, char_task, digits_task),
        "growth": lambda loads: growth.run(arguments.mode, arguments.seed, loads),
    }
    for name, benchmark in benchmarks.items():
        if name in arguments.only:
            loads = common.LoadRecorder()
            results[name] = benchmark(loads)
            results[name]["load"] = loads.summary()

    environment["load_end"] = common.load_average()
    results["wall_seconds"] = time.perf_counter() - started
    with open(os.path.join(arguments.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1, default=str)
    path = report.write(results, arguments.out)
    common.log(f"wrote {path} in {results['wall_seconds'] / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
