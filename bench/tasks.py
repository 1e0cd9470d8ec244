"""Data sets and models of the benchmarks.

The character transformer reimplements, in Python, the task that
inst/scripts/train-char-transformer.R builds in R: the same NEWS files,
cleaning, vocabulary, split, windows and model. The digits task uses the
8x8 handwritten digits that scikit-learn ships.
"""

import collections
import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

import keras

# Settings of the main job, inst/scripts/train-char-transformer.R.
CHAR_SEED = 20240607
CHAR_MIN_COUNT = 20
CHAR_VALIDATION_FRACTION = 0.1
CHAR_SEQUENCE_LENGTH = 64
CHAR_MODEL_DIM = 64
CHAR_HEADS = 4
CHAR_BLOCKS = 2

DIGITS_SEED = 20240607
DIGITS_VALIDATION_FRACTION = 0.2

_NEWS_FILE = re.compile(r"^NEWS(\.[0-9])?(\.gz)?$")
_R_WHITESPACE = " \t\r\n"


@dataclass
class Task:
    """A classification task: arrays, a model builder and its batch size."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    build_model: object
    batch_size: int
    description: str


def r_doc_dir():
    """Return R's documentation folder, `R.home("doc")`.

    Asks Rscript when it is on the PATH, else uses Debian's location.
    """
    if shutil.which("Rscript"):
        result = subprocess.run(
            ["Rscript", "-e", 'cat(R.home("doc"))'],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()
    return "/usr/share/R/doc"


def _news_series(filename):
    """Return the release series of a NEWS file: NEWS.0 is 0, NEWS is last."""
    digit = re.match(r"^NEWS\.?([0-9]?)", filename).group(1)
    return int(digit) if digit else float("inf")


def read_news_text(doc_dir):
    """Read the NEWS files of `doc_dir` as the main job does.

    Files run from the oldest series to the current one. Lines are trimmed
    of spaces, tabs and line ends at both ends, empty lines are dropped and
    the rest are joined with newlines. Returns the text and the file names.
    """
    names = sorted(
        (name for name in os.listdir(doc_dir) if _NEWS_FILE.match(name)),
        key=_news_series,
    )
    if not names:
        raise FileNotFoundError(
            f"No NEWS files found in {doc_dir}. Pass --r-doc-dir with the folder that "
            'contains R\'s NEWS files, R.home("doc") in R.'
        )

    lines = []
    for name in names:
        path = os.path.join(doc_dir, name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle.read().split("\n"):
                line = line.strip(_R_WHITESPACE)
                if line:
                    lines.append(line)
    return "\n".join(lines), names


def encode_characters(text, min_count):
    """Map characters to ids as the main job does.

    Characters seen at least `min_count` times get ids 1, 2, ... by
    decreasing count, ties by increasing code point as R's `sort(table())`
    orders them. Every rarer character gets id 0. Returns the ids and the
    vocabulary size, unknown id included.
    """
    counts = collections.Counter(text)
    kept = sorted(
        (char for char, count in counts.items() if count >= min_count),
        key=lambda char: (-counts[char], ord(char)),
    )
    index = {char: position + 1 for position, char in enumerate(kept)}
    ids = np.fromiter((index.get(char, 0) for char in text), dtype=np.int32, count=len(text))
    return ids, len(kept) + 1


def cut_windows(ids, length):
    """Cut `ids` into non-overlapping windows and their next-character targets."""
    count = len(range(0, len(ids) - length, length))
    starts = np.arange(count) * length
    positions = starts[:, None] + np.arange(length)[None, :]
    return ids[positions], ids[positions + 1]


def build_char_transformer(vocabulary_size):
    """Build the main job's pre-norm causal transformer with the same layer names."""
    length = CHAR_SEQUENCE_LENGTH
    dim = CHAR_MODEL_DIM
    inputs = keras.Input(shape=(length,), dtype="int32", name="characters")
    tokens = keras.layers.Embedding(vocabulary_size, dim, name="token_embedding")(inputs)
    positions = keras.ops.add(
        keras.ops.zeros_like(inputs), keras.ops.arange(length, dtype="int32")
    )
    positions = keras.layers.Embedding(length, dim, name="position_embedding")(positions)
    x = keras.layers.Add(name="embedding_sum")([tokens, positions])

    for index in range(1, CHAR_BLOCKS + 1):
        h = keras.layers.LayerNormalization(name=f"block{index}_attention_norm")(x)
        h = keras.layers.MultiHeadAttention(
            num_heads=CHAR_HEADS,
            key_dim=dim // CHAR_HEADS,
            name=f"block{index}_attention",
        )(query=h, value=h, use_causal_mask=True)
        x = keras.layers.Add(name=f"block{index}_attention_residual")([x, h])
        h = keras.layers.LayerNormalization(name=f"block{index}_ffn_norm")(x)
        h = keras.layers.Dense(4 * dim, activation="gelu", name=f"block{index}_ffn_expand")(h)
        h = keras.layers.Dense(dim, name=f"block{index}_ffn_project")(h)
        x = keras.layers.Add(name=f"block{index}_ffn_residual")([x, h])

    x = keras.layers.LayerNormalization(name="final_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, name="output_dense")(x)
    return keras.Model(inputs, logits, name="char_transformer")


def char_transformer_task(doc_dir=None):
    """Return the character transformer task on R's NEWS files."""
    doc_dir = doc_dir or r_doc_dir()
    text, names = read_news_text(doc_dir)
    ids, vocabulary_size = encode_characters(text, CHAR_MIN_COUNT)
    boundary = int(len(ids) * (1 - CHAR_VALIDATION_FRACTION))
    x_train, y_train = cut_windows(ids[:boundary], CHAR_SEQUENCE_LENGTH)
    x_valid, y_valid = cut_windows(ids[boundary:], CHAR_SEQUENCE_LENGTH)
    description = (
        f"causal transformer ({CHAR_BLOCKS} blocks, width {CHAR_MODEL_DIM}, "
        f"{CHAR_HEADS} heads) on {len(ids):,} characters of {', '.join(names)} "
        f"from {doc_dir}: {len(x_train):,} training and {len(x_valid):,} held-out "
        f"windows of {CHAR_SEQUENCE_LENGTH}, vocabulary {vocabulary_size}"
    )
    return Task(
        name="char_transformer",
        x_train=x_train,
        y_train=y_train,
        x_valid=x_valid,
        y_valid=y_valid,
        build_model=lambda: build_char_transformer(vocabulary_size),
        batch_size=64,
        description=description,
    )


def build_digits_cnn():
    """Build a small CNN for 8x8 digits whose three Conv2D kernels take the Muon step."""
    inputs = keras.Input(shape=(8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    logits = keras.layers.Dense(10, name="output_dense")(x)
    return keras.Model(inputs, logits, name="digits_cnn")


def digits_task():
    """Return the CNN task on scikit-learn's bundled 8x8 digits.

    Pixels are scaled from 0..16 to 0..1. A fixed permutation holds out
    `DIGITS_VALIDATION_FRACTION` of the 1,797 images.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    labels = digits.target.astype("int32")
    order = np.random.RandomState(DIGITS_SEED).permutation(len(labels))
    held_out = int(round(len(labels) * DIGITS_VALIDATION_FRACTION))
    valid, train = order[:held_out], order[held_out:]
    description = (
        f"CNN (3 Conv2D layers, 32-64-64 filters) on scikit-learn's digits: "
        f"{len(train):,} training and {len(valid):,} held-out 8x8 images"
    )
    return Task(
        name="digits_cnn",
        x_train=images[train],
        y_train=labels[train],
        x_valid=images[valid],
        y_valid=labels[valid],
        build_model=build_digits_cnn,
        batch_size=32,
        description=description,
    )


def build_wide_dense(width, depth, inputs=None, classes=10):
    """Build an MLP of `depth` hidden Dense layers of `width` units."""
    inputs = inputs or width
    x = input_layer = keras.Input(shape=(inputs,), name="features")
    for index in range(1, depth + 1):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{index}")(x)
    logits = keras.layers.Dense(classes, name="output_dense")(x)
    return keras.Model(input_layer, logits, name=f"dense_{depth}x{width}")


def build_conv_net(filters, side=16, channels=3, classes=10):
    """Build a stack of 3x3 Conv2D layers on `side` x `side` images."""
    x = input_layer = keras.Input(shape=(side, side, channels), name="image")
    for index, count in enumerate(filters, start=1):
        x = keras.layers.Conv2D(count, 3, padding="same", activation="relu", name=f"conv{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    logits = keras.layers.Dense(classes, name="output_dense")(x)
    return keras.Model(input_layer, logits, name="conv_" + "_".join(map(str, filters)))
