"""Discrete-time stochastic control problems, registered under kind "control"."""

from mlcmk.problems.control.base import ControlProblem
from mlcmk.problems.control.constraints import (
    Box,
    ControlConstraint,
    LinearConstraints,
    Simplex,
    Unconstrained,
    cap_sum,
    get_constraint,
    scaled_sigmoid,
)
from mlcmk.problems.control.energy_storage import EnergyStorage
from mlcmk.problems.control.lq_regulator import LQRegulator, riccati_recursion
from mlcmk.problems.control.merton_portfolio import MertonPortfolio

__all__ = [
    "Box", "ControlConstraint", "ControlProblem", "EnergyStorage", "LQRegulator",
    "LinearConstraints", "MertonPortfolio", "Simplex", "Unconstrained", "cap_sum",
    "get_constraint", "riccati_recursion", "scaled_sigmoid",
]
