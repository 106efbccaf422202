r"""Linear-quadratic-Gaussian regulator in any dimension, solved exactly by Riccati."""

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int
from mlcmk.problems.bsde.base import ReferenceValue
from mlcmk.problems.control.base import ControlProblem
from mlcmk.problems.control.constraints import get_constraint
from mlcmk.problems.registry import register_problem


def riccati_recursion(f, g, q, r, q_terminal, noise_cov):
    """Backward Riccati recursion of the discrete LQG problem (NumPy, float64).

    Dynamics `s' = F s + G a + w`, `w ~ N(0, W)`; cost `sum_t s^T Q s + a^T R a + s_T^T Q_T s_T`.
    The cost-to-go is `V_t(s) = s^T P_t s + c_t` and the optimal control `a = -K_t s` with
    `K_t = (R + G^T P_{t+1} G)^{-1} G^T P_{t+1} F`,
    `P_t = Q + F^T P_{t+1} (F - G K_t)`, `c_t = c_{t+1} + tr(P_{t+1} W)`.

    Args:
        f, g, q, r, q_terminal, noise_cov: the matrices; f, g, q, r may be lists over the T
            steps or single matrices (then T must be given through a list of one of them).

    Returns:
        `(gains, p, c)`: lists K_0..K_{T-1}, P_0..P_T and c_0..c_T.
    """
    num_steps = len(f)
    p = [None] * (num_steps + 1)
    c = [0.0] * (num_steps + 1)
    gains = [None] * num_steps
    p[num_steps] = np.array(q_terminal, dtype="float64")
    for t in reversed(range(num_steps)):
        pn = p[t + 1]
        gain = np.linalg.solve(r[t] + g[t].T @ pn @ g[t], g[t].T @ pn @ f[t])
        pt = q[t] + f[t].T @ pn @ (f[t] - g[t] @ gain)
        p[t] = 0.5 * (pt + pt.T)
        c[t] = c[t + 1] + float(np.trace(pn @ noise_cov[t]))
        gains[t] = gain
    return gains, p, c


@register_problem("lq_regulator", "lqr", "lqg", kind="control")
class LQRegulator(ControlProblem):
    r"""LQG regulator: $s' = s + (A s + B a)\Delta t + \sigma\sqrt{\Delta t}\,\xi$.

    Cost $\sum_{t<T} (q |s_t|^2 + r |a_t|^2) \Delta t + q_T |s_T|^2$, $\Delta t = T_{end} / T$,
    initial state $s_0 \sim N(x_0, x_{0,std}^2 I)$, $\xi \sim N(0, I_d)$.
    $A = \text{drift}\, I + \text{coupling}\, S$ with S a seeded random antisymmetric matrix
    (scaled to unit spectral norm); $B$ has `control_gain` on its diagonal (the first
    min(d, m) states are actuated).

    Exact answer: the discrete Riccati recursion (`riccati_recursion`) gives the optimal gains
    $K_t$ (optimal control $a_t = -K_t s_t$) and the optimal expected cost
    $x_0^T P_0 x_0 + x_{0,std}^2 \operatorname{tr} P_0 + c_0$, where $c_0 = \sum_t
    \operatorname{tr}(P_{t+1} \sigma^2 \Delta t I)$ is the noise's exact contribution. No
    discretisation error: the problem is discrete in time.

    With `constraint` (a spec for `get_constraint`, e.g. `{"type": "box", "low": -1, "high": 1}`)
    the controls are constrained and the Riccati cost is only a lower bound
    (`reference_cost()` returns None).

    Args:
        dim: state dimension d.
        control_dim: control dimension m (default d).
        num_steps: number of decisions T.
        total_time: horizon T_end (> 0).
        drift, coupling: the matrix A.
        control_gain: diagonal of B.
        state_cost, control_cost, terminal_cost: q >= 0, r > 0, q_T >= 0.
        sigma: noise intensity >= 0.
        x0, x0_std: mean (float or d floats) and standard deviation of the initial state.
        matrix_seed: seed of the antisymmetric coupling matrix.
        constraint: optional control constraint spec.
    """

    def __init__(self, dim=10, control_dim=None, num_steps=20, total_time=1.0, drift=0.0,
                 coupling=0.5, control_gain=1.0, state_cost=1.0, control_cost=1.0,
                 terminal_cost=1.0, sigma=1.0, x0=0.0, x0_std=1.0, matrix_seed=0,
                 constraint=None):
        self.dim = check_positive_int("dim", dim)
        self.control_dim = self.dim if control_dim is None else check_positive_int(
            "control_dim", control_dim)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.total_time = check_number("total_time", total_time, 0.0, strict=True)
        self.drift = check_number("drift", drift)
        self.coupling = check_number("coupling", coupling)
        self.control_gain = check_number("control_gain", control_gain)
        self.state_cost = check_number("state_cost", state_cost, 0.0)
        self.control_cost = check_number("control_cost", control_cost, 0.0, strict=True)
        self.terminal_cost_weight = check_number("terminal_cost", terminal_cost, 0.0)
        self.sigma = check_number("sigma", sigma, 0.0)
        x0_arr = np.asarray(x0, dtype="float64")
        if x0_arr.ndim == 0:
            x0_arr = np.full(self.dim, float(x0_arr))
        if x0_arr.shape != (self.dim,) or not np.all(np.isfinite(x0_arr)):
            raise ValueError(f"`x0` must be a float or a sequence of dim={self.dim} floats; "
                             f"received x0 with shape {x0_arr.shape}")
        self.x0 = x0_arr
        self.x0_std = check_number("x0_std", x0_std, 0.0)
        self.matrix_seed = int(matrix_seed)
        self._constraint = get_constraint(constraint, self.control_dim)
        self.constraint = None if constraint is None else self._constraint.serialize()
        self.state_dim = self.dim
        self.noise_dim = self.dim

        d, m = self.dim, self.control_dim
        rng = np.random.default_rng(self.matrix_seed)
        s = rng.standard_normal((d, d))
        s = s - s.T
        norm = np.linalg.norm(s, 2)
        s = s / norm if norm > 0 else s
        self.a_matrix = self.drift * np.eye(d) + self.coupling * s
        self.b_matrix = np.zeros((d, m))
        k = min(d, m)
        self.b_matrix[np.arange(k), np.arange(k)] = self.control_gain
        dt = self.dt
        t_steps = self.num_steps
        self._f = np.eye(d) + dt * self.a_matrix
        self._g = dt * self.b_matrix
        self._gains, self._p, self._c = riccati_recursion(
            [self._f] * t_steps, [self._g] * t_steps, [self.state_cost * dt * np.eye(d)] * t_steps,
            [self.control_cost * dt * np.eye(m)] * t_steps, self.terminal_cost_weight * np.eye(d),
            [self.sigma**2 * dt * np.eye(d)] * t_steps)

    @property
    def dt(self):
        return self.total_time / self.num_steps

    # --- the problem --------------------------------------------------------------------------
    def step(self, t, s, a, xi):
        dtype = s.dtype
        f = ops.cast(self._f.T, dtype)
        g = ops.cast(self._g.T, dtype)
        return ops.matmul(s, f) + ops.matmul(a, g) + (self.sigma * np.sqrt(self.dt)) * xi

    def running_cost(self, t, s, a):
        return self.dt * (self.state_cost * ops.sum(s**2, axis=-1)
                          + self.control_cost * ops.sum(a**2, axis=-1))

    def terminal_cost(self, s):
        return self.terminal_cost_weight * ops.sum(s**2, axis=-1)

    def control_constraint(self):
        return self._constraint

    def sample_initial(self, num_paths, seed, dtype="float32"):
        z = tf.random.stateless_normal((num_paths, self.dim), seed, dtype="float32",
                                       alg="philox")
        return tf.cast(self.x0, dtype) + self.x0_std * tf.cast(z, dtype)

    # --- the exact solution -------------------------------------------------------------------
    def gains(self):
        """Optimal feedback gains K_0..K_{T-1} (a_t = -K_t s_t), each (m, d), NumPy."""
        return [k.copy() for k in self._gains]

    def cost_to_go(self, t, s):
        """V_t(s) = s^T P_t s + c_t, the optimal expected cost from state s at step t (NumPy)."""
        s = np.asarray(s, dtype="float64")
        return np.einsum("...i,ij,...j->...", s, self._p[t], s) + self._c[t]

    def optimal_control(self, t, s):
        return -np.asarray(s, dtype="float64") @ self._gains[t].T

    def reference_cost(self):
        if self.constraint is not None:
            return None
        p0 = self._p[0]
        value = float(self.x0 @ p0 @ self.x0 + self.x0_std**2 * np.trace(p0) + self._c[0])
        return ReferenceValue(value, 0.0, "discrete Riccati recursion (exact)")

    def get_config(self):
        x0 = float(self.x0[0]) if np.all(self.x0 == self.x0[0]) else self.x0.tolist()
        return {"dim": self.dim, "control_dim": self.control_dim, "num_steps": self.num_steps,
                "total_time": self.total_time, "drift": self.drift, "coupling": self.coupling,
                "control_gain": self.control_gain, "state_cost": self.state_cost,
                "control_cost": self.control_cost, "terminal_cost": self.terminal_cost_weight,
                "sigma": self.sigma, "x0": x0, "x0_std": self.x0_std,
                "matrix_seed": self.matrix_seed, "constraint": self.constraint}
