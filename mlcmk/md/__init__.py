"""Molecular dynamics with learned potentials (ASE calculators)."""

from mlcmk.md.ase_calculator import DeepPotentialCalculator, run_nve
