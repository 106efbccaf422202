"""A Barron-type teacher function for regression demos."""

import numpy as np

from mlcmk._validation import check_positive_int
from mlcmk.problems.base import Problem
from mlcmk.problems.registry import register_problem


@register_problem("barron_teacher", "barron", kind="regression")
class BarronTeacher(Problem):
    r"""Regression target $f^*(x) = \frac{1}{K}\sum_{k=1}^K a_k\,\mathrm{relu}(w_k\cdot x)$.

    A finite two-layer network, so its Barron norm is at most $\frac{1}{K}\sum_k |a_k|\,|w_k|$
    and a two-layer network of width m approximates it at the Monte Carlo rate O(1/sqrt(m)).
    The directions `w_k` are uniform on the unit sphere, the weights `a_k` are standard normal
    (both drawn from `seed`), and inputs `x` are standard normal in `dim` dimensions, so every
    `w_k . x` is N(0, 1).

    Args:
        dim: positive int, input dimension d.
        num_atoms: positive int K, number of neurons of the teacher.
        seed: int, seed of the teacher's parameters (not of the samples).
    """

    def __init__(self, dim=10, num_atoms=8, seed=0):
        self.dim = dim = check_positive_int("dim", dim)
        self.num_atoms = num_atoms = check_positive_int("num_atoms", num_atoms)
        self.seed = seed
        rng = np.random.default_rng(seed)
        directions = rng.standard_normal((num_atoms, dim))
        self.directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        self.weights = rng.standard_normal(num_atoms)

    def target(self, x):
        """Evaluates f* at `x` of shape `(n, dim)`; returns shape `(n, 1)`."""
        x = np.asarray(x, dtype=np.float64)
        features = np.maximum(x @ self.directions.T, 0.0)
        return (features @ self.weights / self.num_atoms)[:, None]

    def sample(self, n, seed=None, dtype="float32"):
        """Draws `n` inputs `x ~ N(0, I_d)` and returns `(x, f*(x))` as NumPy arrays."""
        n = check_positive_int("n", n)
        x = np.random.default_rng(seed).standard_normal((n, self.dim))
        return x.astype(dtype), self.target(x).astype(dtype)
