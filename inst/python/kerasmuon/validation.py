"""Argument checks for `Muon.__init__`, with messages in Keras's style."""

import inspect
import math
import numbers

from keras.optimizers.schedules import LearningRateSchedule


def check_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """Raise unless `value` is a finite real number inside the range.

    `low` and `high` bound the range, each closed unless `low_open` or
    `high_open` is set. A bound of `None` leaves that side unbounded.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value):
        raise ValueError(
            f"Argument `{name}` must be a finite number. Received: {name}={value!r}"
        )

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


def check_string(name, value):
    """Raise unless `value` is a `str`."""
    if not isinstance(value, str):
        raise TypeError(
            f"Argument `{name}` must be a string. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )


def check_learning_rate(value):
    """Raise unless `value` is a positive number, a schedule or a callable of no arguments."""
    expected = (
        "a positive float, a `keras.optimizers.schedules.LearningRateSchedule` "
        "or a callable of no arguments"
    )
    if isinstance(value, LearningRateSchedule):
        return
    if callable(value):
        try:
            inspect.signature(value).bind()
        except TypeError:
            raise TypeError(
                f"Argument `learning_rate` must be {expected}. Received: "
                f"learning_rate={value!r}, which requires arguments"
            ) from None
        except ValueError:
            # Some built-in callables have no signature to inspect.
            pass
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `learning_rate` must be {expected}. Received: "
            f"learning_rate={value!r} of type {type(value).__name__}"
        )
    check_float("learning_rate", value, 0, low_open=True)


def check_base_arguments(
    learning_rate,
    clipnorm,
    clipvalue,
    global_clipnorm,
    use_ema,
    ema_momentum,
    ema_overwrite_frequency,
    loss_scale_factor,
    gradient_accumulation_steps,
    name,
):
    """Check the arguments that `Muon` passes on to `keras.optimizers.Optimizer`.

    Keras 3.15 leaves several of them unchecked. It accepts a negative
    `clipnorm` or `loss_scale_factor`, silently turns accumulation off for
    `gradient_accumulation_steps=0`, and checks `ema_momentum` only when
    `use_ema=True`.
    """
    check_learning_rate(learning_rate)
    for argument, value in [
        ("clipnorm", clipnorm),
        ("clipvalue", clipvalue),
        ("global_clipnorm", global_clipnorm),
        ("loss_scale_factor", loss_scale_factor),
    ]:
        if value is not None:
            check_float(argument, value, 0, low_open=True)
    check_bool("use_ema", use_ema)
    check_float("ema_momentum", ema_momentum, 0, 1)
    if ema_overwrite_frequency is not None:
        check_int("ema_overwrite_frequency", ema_overwrite_frequency, 1)
    if gradient_accumulation_steps is not None:
        check_int("gradient_accumulation_steps", gradient_accumulation_steps, 2)
    check_string("name", name)
