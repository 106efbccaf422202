"""Shared helpers for the width scalings of the scaled layers (private)."""

import math

SCALINGS = ("mean_field", "ntk", "conventional")
_ALIASES = {"sqrt": "ntk"}


def canonical_scaling(scaling):
    """Returns the canonical scaling name, or raises ValueError naming the argument."""
    name = _ALIASES.get(scaling, scaling) if isinstance(scaling, str) else scaling
    if name not in SCALINGS:
        allowed = ", ".join(repr(s) for s in (*SCALINGS, *_ALIASES))
        raise ValueError(f"`scaling` must be one of {allowed}; received scaling={scaling!r}")
    return name


def width_factor(scaling, width):
    """The factor c(m) that multiplies a sum over `width` neurons: 1/m, 1/sqrt(m) or 1."""
    if scaling == "mean_field":
        return 1.0 / width
    if scaling == "ntk":
        return 1.0 / math.sqrt(width)
    return 1.0


def check_input_shape(layer_name, input_shape):
    """Requires rank >= 2 and a known last dimension; returns the last dimension."""
    input_shape = tuple(input_shape)
    if len(input_shape) < 2:
        raise ValueError(
            f"{layer_name} expects inputs of rank >= 2 with shape (..., features); "
            f"received input_shape={input_shape!r}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{layer_name} needs a known last dimension; received input_shape={input_shape!r}"
        )
    return int(input_shape[-1])
