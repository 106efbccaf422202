r"""An equation with quadratically growing gradient term and a known solution."""


import numpy as np
from keras import ops

from mlcmk.problems.bsde.base import BSDEProblem, ReferenceValue
from mlcmk.problems.registry import register_problem


@register_problem("quadratic_gradient", kind="bsde")
class QuadraticGradient(BSDEProblem):
    r"""$u_t + \tfrac12 \Delta u + |\nabla u|^2 = \psi_t + \tfrac12\Delta\psi + |\nabla\psi|^2$,
    $u(T, \cdot) = \psi(T, \cdot)$, with $\psi(t, x) = \sin(s^\alpha)$, $s = T - t + |x|^2 / d$.

    The exact solution is $u = \psi$ in any dimension (E, Han, Jentzen 2017 use $|x|^2$; the $1/d$
    keeps the scales dimension-free). $\sigma = I$, so $Z = \nabla u = 2 D x / d$ with
    $D = \alpha s^{\alpha-1} \cos(s^\alpha)$, and
    $f(t, x, y, z) = |z|^2 - 4 D^2 |x|^2 / d^2 - 2 D' |x|^2 / d^2$,
    $D'(s) = \alpha(\alpha-1) s^{\alpha-2}\cos(s^\alpha) - \alpha^2 s^{2\alpha-2} \sin(s^\alpha)$.
    u(0, 0) = sin(T^alpha) (= sin 1 = 0.84147 for T = 1).
    """

    def __init__(self, dim=100, total_time=1.0, num_steps=30, x0=0.0, x0_spread=0.0, alpha=0.4):
        super().__init__(dim, total_time, num_steps, x0, x0_spread)
        self.alpha = float(alpha)

    def diffusion(self, t, x):
        return 1.0

    def _parts(self, t, r2, lib):
        a = self.alpha
        s = self.total_time - t + r2 / self.dim
        sa = s**a
        d1 = a * s ** (a - 1) * lib.cos(sa)
        d2 = a * (a - 1) * s ** (a - 2) * lib.cos(sa) - a * a * s ** (2 * a - 2) * lib.sin(sa)
        return sa, d1, d2

    def generator(self, t, x, y, z):
        r2 = ops.sum(x**2, axis=-1)
        _, d1, d2 = self._parts(t, r2, ops)
        return (ops.sum(z**2, axis=-1) - 4.0 * d1**2 * r2 / self.dim**2
                - 2.0 * d2 * r2 / self.dim**2)

    def terminal(self, x):
        sa, _, _ = self._parts(self.total_time, ops.sum(x**2, axis=-1), ops)
        return ops.sin(sa)

    def exact_solution(self, t, x):
        sa, _, _ = self._parts(t, np.sum(np.asarray(x, "float64") ** 2, -1), np)
        return np.sin(sa)

    def exact_z(self, t, x):
        x = np.asarray(x, "float64")
        _, d1, _ = self._parts(t, np.sum(x**2, -1), np)
        return 2.0 * d1[..., None] * x / self.dim

    def reference_value(self):
        if self.x0_spread:
            return None
        return ReferenceValue(float(self.exact_solution(0.0, self.x0)), 0.0, "closed form")

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}

