"""Invalid arguments of `kerasmuon.Muon` raise errors that name them."""

import math

import pytest

import kerasmuon

# (argument, invalid value, expected exception). Out-of-range numbers raise
# ValueError, and values of the wrong type raise TypeError.
INVALID_ARGUMENTS = [
    ("momentum", 1.0, ValueError),
    ("momentum", -0.1, ValueError),
    ("ns_steps", 0, ValueError),
    ("ns_steps", 6.5, TypeError),
    ("epsilon", 0, ValueError),
    ("adam_beta_1", 1.0, ValueError),
    ("adam_beta_2", 1.5, ValueError),
    ("adam_lr_ratio", -1, ValueError),
    ("weight_decay", float("nan"), ValueError),
    ("weight_decay", -0.1, ValueError),
    ("nesterov", "yes", TypeError),
    ("exclude_embeddings", 1, TypeError),
    ("muon_a", "3.4", TypeError),
    ("exclude_layers", 5, TypeError),
    ("exclude_layers", ["ok", 3], TypeError),
]


def case_id(case):
    name, value, _ = case
    return f"{name}={value!r}"


@pytest.mark.parametrize(
    "name, value, error_type", INVALID_ARGUMENTS, ids=map(case_id, INVALID_ARGUMENTS)
)
def test_invalid_argument_raises(name, value, error_type):
    with pytest.raises(error_type) as error:
        kerasmuon.Muon(**{name: value})

    message = str(error.value)
    assert name in message
    assert repr(value) in message


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
    ],
)
def test_boundary_values_accepted(name, value):
    config = kerasmuon.Muon(**{name: value}).get_config()

    if value is None or isinstance(value, tuple):
        # None means no weight decay, and an empty tuple means no pattern.
        assert not config[name]
    else:
        assert math.isclose(config[name], value)
