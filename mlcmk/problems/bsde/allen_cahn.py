r"""The Allen-Cahn equation."""

from keras import ops

from mlcmk.problems.bsde.base import BSDEProblem, ReferenceValue
from mlcmk.problems.registry import register_problem


@register_problem("allen_cahn", kind="bsde")
class AllenCahn(BSDEProblem):
    r"""Allen-Cahn: $u_t + \Delta u + u - u^3 = 0$, $u(T, x) = 1 / (2 + 0.4 |x|^2)$.

    $\sigma = \sqrt2 I$, $\mu = 0$, $f(t, x, y, z) = y - y^3$. Reference u(0, 0) = 0.052802 at
    d = 100, T = 0.3 (Han, Jentzen, E, PNAS 2018, computed there by the branching diffusion method);
    it holds for that configuration only.
    """

    def __init__(self, dim=100, total_time=0.3, num_steps=20, x0=0.0, x0_spread=0.0):
        super().__init__(dim, total_time, num_steps, x0, x0_spread)

    def generator(self, t, x, y, z):
        return y - y**3

    def terminal(self, x):
        return 1.0 / (2.0 + 0.4 * ops.sum(x**2, axis=-1))

    def reference_value(self):
        if (self.dim, self.total_time, self.x0_spread) == (100, 0.3, 0.0) and not self.x0.any():
            return ReferenceValue(0.052802, 0.0, "Han, Jentzen, E (2018), branching diffusion")
        return None
