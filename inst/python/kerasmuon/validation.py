"""Argument checks for `Muon.__init__`, with messages in Keras's style."""

import math
import numbers


def check_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """Raise unless `value` is a real number, not NaN, inside the range.

    `low` and `high` bound the range, each closed unless `low_open` or
    `high_open` is set. A bound of `None` leaves that side unbounded.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if math.isnan(value):
        raise ValueError(f"Argument `{name}` must not be NaN. Received: {name}={value!r}")

    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        interval = (
            ("(" if low_open or low is None else "[")
            + ("-inf" if low is None else f"{low}")
            + ", "
            + ("inf" if high is None else f"{high}")
            + (")" if high_open or high is None else "]")
        )
        raise ValueError(
            f"Argument `{name}` must be in the range {interval}. "
            f"Received: {name}={value!r}"
        )


def check_int(name, value, low):
    """Raise unless `value` is a Python integer of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < low:
        raise ValueError(
            f"Argument `{name}` must be an integer of at least {low}. "
            f"Received: {name}={value!r}"
        )


def check_bool(name, value):
    """Raise unless `value` is `True` or `False`."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be a boolean. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
