"""Problem declarations and their registry."""

from mlcmk.problems import bsde, control, free_energy, kinetic
from mlcmk.problems.base import Problem
from mlcmk.problems.registry import (
    build_problem,
    get_problem_class,
    list_problems,
    problem_aliases,
    register_problem,
)
from mlcmk.problems.regression import BarronTeacher
