"""Free-energy problems: systems with collective variables and their exact free energies."""

from mlcmk.problems.free_energy.alanine_dipeptide import AlanineDipeptide, wham_2d
from mlcmk.problems.free_energy.mueller_brown import MuellerBrownBath, mueller_brown
from mlcmk.problems.free_energy.restrained_md import block_average, restrained_mean_force
