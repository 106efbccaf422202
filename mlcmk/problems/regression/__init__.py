"""Regression problems (demos for the scaled networks)."""

from mlcmk.problems.regression.barron_teacher import BarronTeacher
