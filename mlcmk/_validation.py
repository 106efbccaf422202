"""Checks of scalar arguments shared by the whole package (private).

Each raises an error that names the argument, the value received and what was expected, and
returns the value in a canonical Python type, so callers can write
`self.width = check_positive_int("width", width)`.
"""

import math
import numbers

import numpy as np


def check_bool(name, value):
    """`value` as a bool; TypeError unless it is one (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; received {name}={value!r}")
    return bool(value)


def check_positive_int(name, value, minimum=1):
    """`value` as an int; ValueError unless it is an int (not a bool) `>= minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {expected}; received {name}={value!r}")
    return int(value)


def check_number(name, value, low=None, strict=False, high=None, strict_high=False,
                 allow_inf=False):
    """`value` as a float.

    TypeError unless it is a real number (a bool is not); ValueError unless it is finite
    (not NaN, with `allow_inf`), `>= low` (`> low` with `strict`) and `<= high` (`< high`
    with `strict_high`); None is no bound.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number; received {name}={value!r}")
    v = float(value)
    below = low is not None and (v <= low if strict else v < low)
    above = high is not None and (v >= high if strict_high else v > high)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or below or above:
        if low is not None and high is not None:
            bound = f" in {'(' if strict else '['}{low}, {high}{')' if strict_high else ']'}"
        elif low is not None:
            bound = f" {'>' if strict else '>='} {low}"
        elif high is not None:
            bound = f" {'<' if strict_high else '<='} {high}"
        else:
            bound = ""
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"`{name}` must be {kind}{bound}; received {name}={value!r}")
    return v


def check_positive_number(name, value):
    """`value` as a float; TypeError unless a real number, ValueError unless finite and > 0."""
    return check_number(name, value, 0, strict=True)


def check_positive_ints(name, values, allow_empty=False, allow_scalar=False):
    """`values` as a list of ints; ValueError unless a sequence of ints (not bools) `>= 1`.

    Args:
        name: the argument's name, for the message.
        values: a sequence (list, tuple, 1-D array) of ints.
        allow_empty: accept an empty sequence (for example a policy with no hidden layer).
        allow_scalar: accept a single int as a one-element list.
    """
    if allow_scalar and isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    expected = "a list of positive ints" if allow_empty else "a non-empty list of positive ints"
    items = None
    if not isinstance(values, (str, bytes, dict, set)):
        try:
            items = list(values)
        except TypeError:
            pass
    if items is None or (not items and not allow_empty) or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in items):
        raise ValueError(f"`{name}` must be {expected}; received {name}={values!r}")
    return [int(v) for v in items]
