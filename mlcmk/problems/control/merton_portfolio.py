r"""Merton's portfolio problem with exponential (CARA) utility: a closed-form optimal policy."""

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int
from mlcmk.problems.bsde.base import ReferenceValue
from mlcmk.problems.control.base import ControlProblem
from mlcmk.problems.control.constraints import Box, Unconstrained
from mlcmk.problems.registry import register_problem


@register_problem("merton_portfolio", "merton", "cara_portfolio", kind="control")
class MertonPortfolio(ControlProblem):
    r"""Invest in m risky assets over T periods to maximise $E[-e^{-\gamma (W_T - w_0)}]$.

    State: wealth $W$ (dimension 1). Control: the amounts $a \in \mathbb{R}^m$ held in the
    assets (the rest in cash at rate 0). Returns per period
    $R_t \sim N(\mu \Delta t, \Sigma \Delta t)$, $\Sigma = \sigma^2((1-\rho) I + \rho 1 1^T)$,
    independent over t: $W_{t+1} = W_t + a_t \cdot R_{t+1}$. Cost $e^{-\gamma (W_T - w_0)}$.

    Exact solution (discrete time, no approximation): with CARA utility the value function is
    $V_t(W) = e^{-\gamma (W - w_0)} v_t$, so each period minimises
    $E e^{-\gamma a \cdot R} = \exp(\Delta t\, h(a))$, $h(a) = -\gamma a\cdot\mu
    + \tfrac12 \gamma^2 a^T \Sigma a$, independently of wealth and time: the optimal
    amounts are $a^* = (\gamma \Sigma)^{-1} \mu$ (Merton's rule) and the optimal expected cost
    $\exp(T_{end}\, h(a^*)) = \exp(-\tfrac12 T_{end}\, \mu^T \Sigma^{-1} \mu)$. With a position
    limit $|a_i| \le L$ (`max_position`) $a^*$ minimises h over the box (a convex QP, solved here
    by SciPy to 1e-12) and the cost is $\exp(T_{end} h(a^*))$.

    Args:
        num_assets: m.
        num_steps: T periods.
        total_time: horizon (years).
        mu: expected excess returns per year (float or m floats).
        sigma, correlation: volatility and pairwise correlation of the returns.
        risk_aversion: gamma > 0.
        initial_wealth: w_0.
        max_position: None or L > 0, the bound |a_i| <= L (a `Box` constraint).
    """

    def __init__(self, num_assets=5, num_steps=10, total_time=1.0, mu=(0.02, 0.08),
                 sigma=0.2, correlation=0.3, risk_aversion=2.0, initial_wealth=1.0,
                 max_position=None):
        self.num_assets = check_positive_int("num_assets", num_assets)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.total_time = check_number("total_time", total_time, 0.0, strict=True)
        mu_arr = np.asarray(mu, dtype="float64")
        if mu_arr.ndim == 0:
            mu_arr = np.full(self.num_assets, float(mu_arr))
        elif mu_arr.shape == (2,) and self.num_assets != 2:
            mu_arr = np.linspace(mu_arr[0], mu_arr[1], self.num_assets)
        if mu_arr.shape != (self.num_assets,) or not np.all(np.isfinite(mu_arr)):
            raise ValueError(f"`mu` must be a float, a (low, high) pair or {self.num_assets} "
                             f"floats; received mu={mu!r}")
        self.mu = mu if isinstance(mu, (int, float)) else [float(v) for v in mu]
        self._mu = mu_arr
        self.sigma = check_number("sigma", sigma, 0.0, strict=True)
        self.correlation = check_number("correlation", correlation)
        if not -1.0 / max(self.num_assets - 1, 1) < self.correlation < 1.0:
            raise ValueError(f"`correlation` must lie in (-1/(m-1), 1) for a positive definite "
                             f"covariance; received correlation={correlation!r}")
        self.risk_aversion = check_number("risk_aversion", risk_aversion, 0.0, strict=True)
        self.initial_wealth = check_number("initial_wealth", initial_wealth)
        if max_position is not None:
            max_position = check_number("max_position", max_position, 0.0, strict=True)
        self.max_position = max_position
        self.state_dim, self.control_dim, self.noise_dim = 1, self.num_assets, self.num_assets
        m = self.num_assets
        self._cov = self.sigma**2 * ((1 - self.correlation) * np.eye(m)
                                     + self.correlation * np.ones((m, m)))
        self._chol = np.linalg.cholesky(self._cov)
        self._optimum = None

    @property
    def dt(self):
        return self.total_time / self.num_steps

    def step(self, t, s, a, xi):
        dtype = s.dtype
        returns = (ops.cast(self._mu * self.dt, dtype)
                   + np.sqrt(self.dt) * ops.matmul(xi, ops.cast(self._chol.T, dtype)))
        return s + ops.sum(a * returns, axis=-1, keepdims=True)

    def running_cost(self, t, s, a):
        return ops.zeros_like(s[:, 0])

    def terminal_cost(self, s):
        return ops.exp(-self.risk_aversion * (s[:, 0] - self.initial_wealth))

    def normalize_state(self, t, s):
        return s - self.initial_wealth

    def control_constraint(self):
        if self.max_position is None:
            return Unconstrained(self.num_assets)
        return Box(self.num_assets, -self.max_position, self.max_position, smooth_map="tanh")

    def sample_initial(self, num_paths, seed, dtype="float32"):
        return tf.fill((num_paths, 1), tf.constant(self.initial_wealth, dtype))

    # --- exact solution -----------------------------------------------------------------------
    def _h(self, a):
        g = self.risk_aversion
        return -g * a @ self._mu + 0.5 * g**2 * a @ self._cov @ a

    def optimal_amounts(self):
        """The optimal amounts a* (NumPy, shape (m,)), the same at every time and wealth."""
        if self._optimum is None:
            a = np.linalg.solve(self.risk_aversion * self._cov, self._mu)
            if self.max_position is not None:
                from scipy.optimize import minimize

                g = self.risk_aversion
                res = minimize(self._h, np.clip(a, -self.max_position, self.max_position),
                               jac=lambda a: -g * self._mu + g**2 * self._cov @ a,
                               bounds=[(-self.max_position, self.max_position)] * len(a),
                               method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
                a = res.x
            self._optimum = a
        return self._optimum.copy()

    def optimal_control(self, t, s):
        s = np.asarray(s, dtype="float64")
        return np.broadcast_to(self.optimal_amounts(), (s.shape[0], self.num_assets)).copy()

    def reference_cost(self):
        a = self.optimal_amounts()
        source = ("closed form (Merton's rule, CARA utility)" if self.max_position is None
                  else "closed form per period, box QP solved by L-BFGS-B")
        return ReferenceValue(float(np.exp(self.total_time * self._h(a))), 0.0, source)

    def get_config(self):
        return {"num_assets": self.num_assets, "num_steps": self.num_steps,
                "total_time": self.total_time, "mu": self.mu, "sigma": self.sigma,
                "correlation": self.correlation, "risk_aversion": self.risk_aversion,
                "initial_wealth": self.initial_wealth, "max_position": self.max_position}
