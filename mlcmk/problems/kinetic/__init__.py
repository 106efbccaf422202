"""Kinetic equations (BGK) and their moment systems, registered under kind "kinetic"."""

from mlcmk.problems.kinetic.bgk import (
    BGK1D,
    ReducedVelocityGrid3D,
    VelocityGrid,
    VelocityGrid3D,
    check_velocity_grid,
    conserved_from_primitive,
    discrete_maxwellian,
    primitive_from_conserved,
)

__all__ = [
    "BGK1D", "ReducedVelocityGrid3D", "VelocityGrid", "VelocityGrid3D", "check_velocity_grid",
    "conserved_from_primitive", "discrete_maxwellian", "primitive_from_conserved",
]
