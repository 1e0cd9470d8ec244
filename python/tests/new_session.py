"""Run Python code in a new process, as a user's next session would."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import kerasmuon

# The folder that contains the kerasmuon package. In an installed R package
# it is the folder that system.file("python", package = "kerasmuon") returns.
MODULE_FOLDER = Path(kerasmuon.__file__).resolve().parent.parent

# A new process starts its Keras backend in about 4 s on 2 CPU cores, and the
# scripts of these tests train for a few seconds more.
TIMEOUT_SECONDS = 300


def run_python(code, folder, with_kerasmuon=True):
    """Run `code` in a new Python process in `folder`.

    The process uses this interpreter and inherits `KERAS_BACKEND`. With
    `with_kerasmuon`, the code starts with the `sys.path` line that the
    README gives to Python users. Without it, kerasmuon cannot be imported,
    because PYTHONPATH is removed from the environment. Returns the standard
    output, and raises `AssertionError` with the standard error when the
    process fails.
    """
    code = textwrap.dedent(code)
    if with_kerasmuon:
        code = f"import sys\nsys.path.insert(0, {str(MODULE_FOLDER)!r})\n" + code
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"The new Python process exited with status {result.returncode}. "
            f"Its standard error ends with:\n{result.stderr[-4000:]}"
        )
    return result.stdout
