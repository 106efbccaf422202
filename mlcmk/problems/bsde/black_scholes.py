r"""Nonlinear Black-Scholes equations: default risk, different interest rates, Barenblatt."""

import math

import numpy as np
from keras import ops

from mlcmk.problems.bsde.base import BSDEProblem, ReferenceValue
from mlcmk.problems.registry import register_problem


class _GeometricBrownianMotion(BSDEProblem):
    """Forward process dX = mu X dt + s X dW (diagonal sigma(x) = s x), sampled exactly."""

    def __init__(self, dim, total_time, num_steps, x0, x0_spread, mu_bar, sigma_bar):
        super().__init__(dim, total_time, num_steps, x0, x0_spread)
        self.mu_bar = float(mu_bar)
        self.sigma_bar = float(sigma_bar)

    @property
    def path_drift(self):
        """The drift rate at which the paths are simulated; `mu_bar` unless a subclass changes
        the measure (and corrects its generator)."""
        return self.mu_bar

    def drift(self, t, x):
        return self.path_drift * x

    def diffusion(self, t, x):
        return self.sigma_bar * x

    def sample_step(self, t, x, dw):
        # Exact solution of the linear SDE over one step: no discretisation error in X.
        return x * ops.exp((self.path_drift - 0.5 * self.sigma_bar**2) * self.dt
                           + self.sigma_bar * dw)

    def get_config(self):
        return {**super().get_config(), "mu_bar": self.mu_bar, "sigma_bar": self.sigma_bar}


@register_problem("black_scholes_default_risk", "bs_default_risk", kind="bsde")
class BlackScholesDefaultRisk(_GeometricBrownianMotion):
    r"""Black-Scholes with default risk (Han, Jentzen, E 2018, figure 3; Duffie et al. 1996).

    $u_t + \bar\mu x \cdot \nabla u + \tfrac12 \bar\sigma^2 \sum_i x_i^2 u_{x_i x_i}
    - (1 - \delta) Q(u) u - R u = 0$, $g(x) = \min_i x_i$, with the default intensity $Q$
    piecewise linear: $\gamma^h$ below $v^h$, $\gamma^l$ above $v^l$, linear between.
    Reference u(0, (100, ..., 100)) = 57.300 at d = 100, T = 1 (published, multilevel Picard).
    """

    extremal_terminal = True

    def __init__(self, dim=100, total_time=1.0, num_steps=40, x0=100.0, x0_spread=0.0,
                 mu_bar=0.02, sigma_bar=0.2, delta=2.0 / 3.0, rate=0.02, v_h=50.0, v_l=70.0,
                 gamma_h=0.2, gamma_l=0.02):
        super().__init__(dim, total_time, num_steps, x0, x0_spread, mu_bar, sigma_bar)
        self.delta, self.rate = float(delta), float(rate)
        self.v_h, self.v_l = float(v_h), float(v_l)
        self.gamma_h, self.gamma_l = float(gamma_h), float(gamma_l)
        if not self.v_h < self.v_l:
            raise ValueError(f"`v_h` must be below `v_l`; received v_h={v_h!r}, v_l={v_l!r}")

    def intensity(self, y):
        slope = (self.gamma_h - self.gamma_l) / (self.v_h - self.v_l)
        q = self.gamma_h + slope * (y - self.v_h)
        return ops.clip(q, self.gamma_l, self.gamma_h)

    def generator(self, t, x, y, z):
        return -(1.0 - self.delta) * self.intensity(y) * y - self.rate * y

    def terminal(self, x):
        return ops.min(x, axis=-1)

    def reference_value(self):
        if self.dim == 100 and self.total_time == 1.0 and np.all(self.x0 == 100.0) \
                and not self.x0_spread:
            return ReferenceValue(57.300, 0.0, "Han, Jentzen, E (2018), multilevel Picard")
        return None

    def get_config(self):
        return {**super().get_config(), "delta": self.delta, "rate": self.rate,
                "v_h": self.v_h, "v_l": self.v_l, "gamma_h": self.gamma_h,
                "gamma_l": self.gamma_l}


@register_problem("pricing_diff_rate", "black_scholes_different_rates", kind="bsde")
class PricingDiffRate(_GeometricBrownianMotion):
    r"""European option pricing with different borrowing and lending rates (Bergman 1995).

    $f(t, x, y, z) = -R^l y - (\bar\mu - R^l) s + (R^b - R^l) \max(s - y, 0)$,
    $s = \bar\sigma^{-1} \sum_i z_i$; $g(x) = \max(\max_i x_i - 120, 0)
    - 2 \max(\max_i x_i - 150, 0)$, d = 100, T = 0.5, x0 = (100, ..., 100).

    Reference u(0, x0) = 21.176 ± 0.006 from this library's primal-dual Monte Carlo bounds
    (`mlcmk.problems.bsde.rate_bounds`, no neural network): the time-discrete value lies in
    [21.1636, 21.1652] at N = 20, [21.1677, 21.1710] at 40, [21.1696, 21.1760] at 80 and
    [21.1698, 21.1820] at 160 steps, and the increments shrink with the step. The published
    21.299 (E, Han, Jentzen 2017, `published_value`) lies 0.55% above the N = 160 upper bound; it
    equals, within 0.1%, the answer of a Deep BSDE that never learns Z (e^{-R^l T} E g(X_T)).
    """

    published_value = 21.299

    extremal_terminal = True

    MEASURES = ("physical", "lending", "borrowing")
    # g as calls on the maximum: sum of weight * (max_i x_i - strike)^+.
    payoff_calls = ((120.0, 1.0), (150.0, -2.0))

    def __init__(self, dim=100, total_time=0.5, num_steps=20, x0=100.0, x0_spread=0.0,
                 mu_bar=0.06, sigma_bar=0.2, rate_lend=0.04, rate_borrow=0.06,
                 measure="physical"):
        super().__init__(dim, total_time, num_steps, x0, x0_spread, mu_bar, sigma_bar)
        self.rate_lend, self.rate_borrow = float(rate_lend), float(rate_borrow)
        if measure not in self.MEASURES:
            raise ValueError(f"`measure` must be one of {self.MEASURES}; received "
                             f"measure={measure!r}")
        self.measure = measure

    @property
    def path_drift(self):
        """The drift rate of the simulated X: mu_bar ("physical"), R^l ("lending") or R^b
        ("borrowing").

        Changing the drift from mu_bar to p leaves u unchanged if the generator gains
        (mu_bar - p) x . grad u = (mu_bar - p) s (Girsanov): the same PDE, another BSDE. Under
        "borrowing" the generator is -R^l y - (R^b - R^l) min(y, s), which no longer depends on
        Z where the hedge borrows (s > y), so an error in the learned Z biases Y_0 less.
        """
        return {"physical": self.mu_bar, "lending": self.rate_lend,
                "borrowing": self.rate_borrow}[self.measure]

    def generator(self, t, x, y, z):
        s = ops.sum(z, axis=-1) / self.sigma_bar
        return (-self.rate_lend * y - (self.path_drift - self.rate_lend) * s
                + (self.rate_borrow - self.rate_lend) * ops.maximum(s - y, 0.0))

    def terminal(self, x):
        m = ops.max(x, axis=-1)
        return sum(weight * ops.maximum(m - strike, 0.0) for strike, weight in self.payoff_calls)

    def reference_value(self):
        default = (self.mu_bar, self.sigma_bar, self.rate_lend, self.rate_borrow) \
            == (0.06, 0.2, 0.04, 0.06)
        if self.dim == 100 and self.total_time == 0.5 and np.all(self.x0 == 100.0) \
                and not self.x0_spread and default:
            return ReferenceValue(
                21.176, 0.006, "primal-dual Monte Carlo bounds on grids of N = 20..160 steps "
                "(mlcmk.problems.bsde.rate_bounds, benchmarks/results/"
                "deep_bsde_pricing_dual_bounds.json); the published 21.299 lies above them")
        return None

    def get_config(self):
        return {**super().get_config(), "rate_lend": self.rate_lend,
                "rate_borrow": self.rate_borrow, "measure": self.measure}


@register_problem("black_scholes_barenblatt", "bsb", kind="bsde")
class BlackScholesBarenblatt(BSDEProblem):
    r"""Black-Scholes-Barenblatt (Raissi 2018), exact solution in any dimension.

    $u_t + \tfrac12 \bar\sigma^2 \sum_i x_i^2 u_{x_i x_i} - r (u - x \cdot \nabla u) = 0$,
    $g(x) = |x|^2$; $dX = \bar\sigma\, \mathrm{diag}(X) dW$, so $Z = \bar\sigma x \odot \nabla u$
    and $f = -r (y - \bar\sigma^{-1} \sum_i z_i)$.
    Exact: $u(t, x) = e^{(r + \bar\sigma^2)(T - t)} |x|^2$.
    x0 alternates 1, 0.5, 1, 0.5, ... unless given.
    """

    def __init__(self, dim=100, total_time=1.0, num_steps=50, x0=None, x0_spread=0.0,
                 rate=0.05, sigma_bar=0.4):
        if x0 is None:
            x0 = [1.0 if i % 2 == 0 else 0.5 for i in range(int(dim))]
        super().__init__(dim, total_time, num_steps, x0, x0_spread)
        self.rate, self.sigma_bar = float(rate), float(sigma_bar)

    def diffusion(self, t, x):
        return self.sigma_bar * x

    def sample_step(self, t, x, dw):
        return x * ops.exp(-0.5 * self.sigma_bar**2 * self.dt + self.sigma_bar * dw)

    def generator(self, t, x, y, z):
        return -self.rate * (y - ops.sum(z, axis=-1) / self.sigma_bar)

    def terminal(self, x):
        return ops.sum(x**2, axis=-1)

    def exact_solution(self, t, x):
        x = np.asarray(x, dtype="float64")
        return math.exp((self.rate + self.sigma_bar**2) * (self.total_time - t)) \
            * np.sum(x**2, axis=-1)

    def exact_z(self, t, x):
        x = np.asarray(x, dtype="float64")
        c = math.exp((self.rate + self.sigma_bar**2) * (self.total_time - t))
        return self.sigma_bar * x * 2.0 * c * x

    def reference_value(self):
        if self.x0_spread:
            return None
        return ReferenceValue(float(self.exact_solution(0.0, self.x0)), 0.0, "closed form")

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "sigma_bar": self.sigma_bar}
