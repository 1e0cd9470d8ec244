"""Invalid arguments of `kerasmuon.Muon` raise errors that name them."""

import inspect
import math

import keras
import numpy as np
import pytest

import kerasmuon

NAN = float("nan")
INF = float("inf")


def takes_step(step):
    return 0.01


# (argument, invalid value, expected exception). Out-of-range and non-finite
# numbers raise ValueError, and values of the wrong type raise TypeError.
INVALID_ARGUMENTS = [
    ("learning_rate", 0.0, ValueError),
    ("learning_rate", -0.1, ValueError),
    ("learning_rate", NAN, ValueError),
    ("learning_rate", INF, ValueError),
    ("learning_rate", "0.1", TypeError),
    ("learning_rate", True, TypeError),
    ("learning_rate", takes_step, TypeError),
    ("clipnorm", 0.0, ValueError),
    ("clipnorm", -1.0, ValueError),
    ("clipnorm", "1", TypeError),
    ("clipvalue", -0.5, ValueError),
    ("clipvalue", NAN, ValueError),
    ("global_clipnorm", 0.0, ValueError),
    ("global_clipnorm", INF, ValueError),
    ("use_ema", "yes", TypeError),
    ("use_ema", 1, TypeError),
    ("ema_momentum", 1.5, ValueError),
    ("ema_momentum", -0.1, ValueError),
    ("ema_momentum", NAN, ValueError),
    ("ema_overwrite_frequency", 0, ValueError),
    ("ema_overwrite_frequency", 2.0, TypeError),
    ("loss_scale_factor", 0.0, ValueError),
    ("loss_scale_factor", -128.0, ValueError),
    ("gradient_accumulation_steps", 0, ValueError),
    ("gradient_accumulation_steps", 1, ValueError),
    ("gradient_accumulation_steps", 2.5, TypeError),
    ("name", 3, TypeError),
    ("name", None, TypeError),
    ("momentum", 1.0, ValueError),
    ("momentum", -0.1, ValueError),
    ("momentum", NAN, ValueError),
    ("ns_steps", 0, ValueError),
    ("ns_steps", 6.5, TypeError),
    ("epsilon", 0, ValueError),
    ("epsilon", -1e-7, ValueError),
    ("epsilon", INF, ValueError),
    ("adam_beta_1", 1.0, ValueError),
    ("adam_beta_1", -0.1, ValueError),
    ("adam_beta_2", 1.5, ValueError),
    ("adam_beta_2", NAN, ValueError),
    ("adam_lr_ratio", -1, ValueError),
    ("adam_lr_ratio", "0.1", TypeError),
    ("weight_decay", NAN, ValueError),
    ("weight_decay", -0.1, ValueError),
    ("nesterov", "yes", TypeError),
    ("exclude_embeddings", 1, TypeError),
    ("muon_a", "3.4", TypeError),
    ("muon_b", NAN, ValueError),
    ("muon_c", INF, ValueError),
    ("exclude_layers", 5, TypeError),
    ("exclude_layers", ["ok", 3], TypeError),
    ("exclude_layers", "(", ValueError),
]


def case_id(case):
    name, value, _ = case
    label = value.__name__ if callable(value) else repr(value)
    return f"{name}={label}"


@pytest.mark.parametrize(
    "name, value, error_type", INVALID_ARGUMENTS, ids=map(case_id, INVALID_ARGUMENTS)
)
def test_invalid_argument_raises(name, value, error_type):
    with pytest.raises(error_type) as error:
        kerasmuon.Muon(**{name: value})

    message = str(error.value)
    assert name in message
    assert repr(value) in message


def test_every_argument_has_invalid_case():
    parameters = inspect.signature(kerasmuon.Muon.__init__).parameters
    arguments = {
        name
        for name, parameter in parameters.items()
        if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }

    covered = {name for name, _, _ in INVALID_ARGUMENTS}
    assert arguments - covered == set()


def test_two_clipping_arguments_raise():
    # Keras allows one kind of clipping at a time, and its error names the
    # arguments that it received.
    with pytest.raises(ValueError) as error:
        kerasmuon.Muon(clipnorm=1.0, clipvalue=0.5)

    assert "clipnorm=1.0" in str(error.value)
    assert "clipvalue=0.5" in str(error.value)


def schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.04, 10, 0.5)


# (learning_rate argument, learning rate at iteration 0).
LEARNING_RATE_FORMS = {
    "int": (1, 1.0),
    "numpy float32": (np.float32(0.25), 0.25),
    "schedule": (schedule(), 0.04),
    "callable": (lambda: 0.03, 0.03),
}


@pytest.mark.parametrize(
    "learning_rate, expected",
    LEARNING_RATE_FORMS.values(),
    ids=LEARNING_RATE_FORMS.keys(),
)
def test_learning_rate_forms_accepted(learning_rate, expected):
    optimizer = kerasmuon.Muon(learning_rate=learning_rate)

    value = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    assert value == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    "name, value",
    [
        ("momentum", 0.0),
        ("momentum", 0.999),
        ("ns_steps", 1),
        ("adam_beta_1", 0.0),
        ("adam_lr_ratio", 0.0),
        ("weight_decay", None),
        ("weight_decay", 0.0),
        ("exclude_layers", ()),
        ("clipvalue", 1e-6),
        ("use_ema", True),
        ("ema_momentum", 0.0),
        ("ema_momentum", 1.0),
        ("ema_overwrite_frequency", 1),
        ("loss_scale_factor", 1e-3),
        ("gradient_accumulation_steps", 2),
    ],
)
def test_boundary_values_accepted(name, value):
    config = kerasmuon.Muon(**{name: value}).get_config()

    if value is None or isinstance(value, tuple):
        # None means no weight decay, and an empty tuple means no pattern.
        assert not config[name]
    else:
        assert math.isclose(config[name], value)
