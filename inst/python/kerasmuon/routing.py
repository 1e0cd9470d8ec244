"""Decide which step, Muon or AdamW, each variable takes and why."""

import math
import re
import warnings
from dataclasses import dataclass

MUON = "muon"
ADAMW = "adamw"

# MultiHeadAttention names its input projections so; their kernels are
# (model_dim, heads, head_dim) and map model_dim to heads * head_dim. Its
# output projection, named `attention_output`, marks the layer as one.
_ATTENTION_INPUT_PROJECTIONS = ("query", "key", "value", "gate")
_ATTENTION_OUTPUT_KERNEL = "/attention_output/kernel"


@dataclass(frozen=True)
class Route:
    """The step a variable takes, the reason, and its matrix view.

    `matrix_view` is `(fan_in, fan_out)` for every variable of rank 2, 3 or
    4, and `None` for the others.
    """

    step: str
    reason: str
    matrix_view: tuple = None


def as_pattern_list(exclude_layers):
    """Return `exclude_layers` as a list of strings; one string is one pattern."""
    if exclude_layers is None:
        return []
    if isinstance(exclude_layers, str):
        return [exclude_layers]
    if not isinstance(exclude_layers, (list, tuple)):
        raise TypeError(
            "Argument `exclude_layers` must be a string, a list of strings "
            f"or None. Received: exclude_layers={exclude_layers!r} "
            f"of type {type(exclude_layers).__name__}"
        )

    for pattern in exclude_layers:
        if not isinstance(pattern, str):
            raise TypeError(
                "Every entry of `exclude_layers` must be a string. "
                f"Received: {pattern!r} of type {type(pattern).__name__} "
                f"in exclude_layers={exclude_layers!r}"
            )
    return list(exclude_layers)


def compile_patterns(patterns):
    """Compile a list of strings into regular expressions, naming a bad one."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(
                "Every entry of `exclude_layers` must be a valid regular "
                f"expression. Received: {pattern!r}, which fails to compile: "
                f"{error}"
            ) from None
    return tuple(compiled)


def attention_layer_paths(variables):
    """Return the paths of the MultiHeadAttention layers among `variables`.

    A layer counts as one when it holds a rank-3 `attention_output/kernel`,
    so a Conv1D layer that happens to be named `query` is not mistaken for
    an attention projection.
    """
    return frozenset(
        variable.path[: -len(_ATTENTION_OUTPUT_KERNEL)]
        for variable in variables
        if variable.path.endswith(_ATTENTION_OUTPUT_KERNEL) and len(variable.shape) == 3
    )


def matrix_view(shape, path, attention_layers=frozenset()):
    """Return the `(fan_in, fan_out)` matrix a kernel of this shape holds.

    A rank-2 kernel is used as it is. The rank-3 `query`, `key`, `value` and
    `gate` kernels of a MultiHeadAttention layer listed in
    `attention_layers`, shaped (d, heads, head_dim), are
    (d, heads * head_dim). Every other rank-3 or rank-4 kernel, such as
    Conv1D and Conv2D kernels shaped (..., in, out) and MultiHeadAttention's
    output kernel shaped (heads, head_dim, d), is
    (product of all axes but the last, last). Returns `None` for other ranks.
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 3 and _is_attention_input(path, attention_layers):
        return (shape[0], shape[1] * shape[2])
    if len(shape) in (3, 4):
        return (math.prod(shape[:-1]), shape[-1])
    return None


def route_variable(variable, patterns, exclude_embeddings, attention_layers=frozenset()):
    """Return the `Route` of one variable, applying the rules in order."""
    shape = tuple(variable.shape)
    path = variable.path
    name = variable.name

    if len(shape) not in (2, 3, 4):
        return Route(ADAMW, f"rank {len(shape)}")
    view = matrix_view(shape, path, attention_layers)
    if name == "bias":
        return Route(ADAMW, "bias", view)
    if exclude_embeddings and name == "embeddings":
        return Route(ADAMW, "embedding", view)
    for pattern in patterns:
        if pattern.search(path):
            return Route(ADAMW, f"excluded by '{pattern.pattern}'", view)
    if min(view) <= 1:
        return Route(ADAMW, f"matrix view {view} has a side of length {min(view)}", view)
    return Route(MUON, "weight matrix", view)


def route_variables(variables, patterns, exclude_embeddings):
    """Return the `Route` of each variable, seeing the list as one model."""
    attention_layers = attention_layer_paths(variables)
    return [
        route_variable(variable, patterns, exclude_embeddings, attention_layers)
        for variable in variables
    ]


def describe_routes(routes, variables):
    """Return the step and shape of each variable, as stored in a config."""
    return [
        {"step": route.step, "shape": [int(size) for size in variable.shape]}
        for route, variable in zip(routes, variables)
    ]


def check_saved_routes(saved):
    """Return the `routes` entry of a config as a list of dicts, or `None`.

    Each entry must be a dict with the keys `step` ("muon" or "adamw") and
    `shape` (a list of integers), as `describe_routes()` writes them.
    """
    if saved is None:
        return None
    if not isinstance(saved, (list, tuple)):
        raise TypeError(
            "The config entry `routes` must be a list or None. "
            f"Received: routes={saved!r} of type {type(saved).__name__}"
        )

    checked = []
    for entry in saved:
        valid = (
            isinstance(entry, dict)
            and set(entry) == {"step", "shape"}
            and entry["step"] in (MUON, ADAMW)
            and isinstance(entry["shape"], (list, tuple))
            and all(
                isinstance(size, int) and not isinstance(size, bool)
                for size in entry["shape"]
            )
        )
        if not valid:
            raise ValueError(
                "Every entry of the config entry `routes` must be a dict with "
                "the keys 'step' ('muon' or 'adamw') and 'shape' (a list of "
                f"integers). Received: {entry!r}"
            )
        checked.append({"step": entry["step"], "shape": list(entry["shape"])})
    return checked


def apply_saved_routes(routes, variables, saved):
    """Return `routes` with the steps that `saved` stores for the same variables.

    `saved` is the checked `routes` entry of the config of the optimizer
    that was saved. When its shapes differ from those of `variables`, it
    describes another model, so `routes` is returned unchanged with a
    warning. A saved Muon step on a variable without a matrix view of two
    sides longer than 1 raises `ValueError`.
    """
    shapes = [[int(size) for size in variable.shape] for variable in variables]
    if [entry["shape"] for entry in saved] != shapes:
        warnings.warn(
            f"The saved routes describe {len(saved)} variables whose shapes "
            f"differ from those of the {len(shapes)} variables this optimizer "
            "is built for, so the routing rules decide every step.",
            stacklevel=3,
        )
        return list(routes)

    restored = []
    for variable, route, entry in zip(variables, routes, saved):
        if entry["step"] == route.step:
            restored.append(route)
            continue
        view = route.matrix_view
        if entry["step"] == MUON and (view is None or min(view) <= 1):
            raise ValueError(
                "The config entry `routes` gives the Muon step to "
                f"{variable.path}, whose shape {tuple(variable.shape)} has no "
                "matrix view with two sides longer than 1."
            )
        reason = (
            "kept from the saved optimizer, although the rules now give "
            f"{route.step} ({route.reason})"
        )
        restored.append(Route(entry["step"], reason, view))
    return restored


def routing_table(model, optimizer=None):
    """List the route of each trainable variable of `model`.

    Returns one dict per variable, in the model's order, with the keys
    `path`, `shape`, `matrix_view`, `step` and `reason`. Without an
    optimizer, the table shows the routes of the `kerasmuon.Muon` that the
    model was compiled with, or the rules of a default `kerasmuon.Muon` if
    the model was compiled with none.
    """
    variables = list(model.trainable_variables)
    if optimizer is None:
        optimizer = _compiled_muon(model)
    if optimizer is None:
        routes = route_variables(variables, (), True)
    else:
        routes = _muon_of(optimizer).routes(variables)

    rows = []
    for variable, route in zip(variables, routes):
        rows.append(
            {
                "path": variable.path,
                "shape": tuple(int(size) for size in variable.shape),
                "matrix_view": route.matrix_view,
                "step": route.step,
                "reason": route.reason,
            }
        )
    return rows


def _compiled_muon(model):
    """Return the kerasmuon optimizer `model` was compiled with, or None."""
    return _inner_muon(getattr(model, "optimizer", None))


def _muon_of(optimizer):
    """Return the kerasmuon optimizer, unwrapping a LossScaleOptimizer."""
    inner = _inner_muon(optimizer)
    if inner is None:
        raise TypeError(
            "Argument `optimizer` must be a `kerasmuon.Muon` optimizer or "
            "None. Received: optimizer of type "
            f"{type(optimizer).__name__}"
        )
    return inner


def _inner_muon(optimizer):
    """Return `optimizer`, or the one a LossScaleOptimizer wraps, if it is a
    kerasmuon optimizer, else None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if hasattr(inner, "routes") else None


def _is_attention_input(path, attention_layers):
    layer_path, _, variable_name = path.rpartition("/")
    parent, _, layer_name = layer_path.rpartition("/")
    return (
        variable_name == "kernel"
        and layer_name in _ATTENTION_INPUT_PROJECTIONS
        and parent in attention_layers
    )
