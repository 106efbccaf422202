r"""Energy storage and allocation with n devices (Han and E 2016, section 3.1, figure 6)."""

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int
from mlcmk.problems.control.base import ControlProblem
from mlcmk.problems.control.constraints import cap_sum, scaled_sigmoid
from mlcmk.problems.registry import register_problem


@register_problem("energy_storage", "storage", kind="control")
class EnergyStorage(ControlProblem):
    r"""n storage devices trade with the grid under a stochastic price and store wind power.

    **State** $s_t = (x_t, P_t, W_t) \in \mathbb{R}^{n+2}$: the energy $x_t^i$ stored in device
    i, the grid price $P_t$ and the available wind power $W_t$.

    **Control** $a_t = (c^W_t, c^G_t, d_t) \in \mathbb{R}^{3n}$: energy drawn per device from
    the wind ($c^W$) and from the grid ($c^G$), and energy taken out of each device and sold
    ($d$).

    **Dynamics** (hourly steps, $t = 0..T-1$):
    - $x^i_{t+1} = x^i_t + \eta^c_i (c^{W,i}_t + c^{G,i}_t) - d^i_t$;
    - $P_{t+1} = m_{t+1} + \rho (P_t - m_t) + \sigma_P \xi^1_{t+1}$ with the daily profile
      $m_t = \bar P (1 - A \cos(2\pi t / 24))$;
    - $W_{t+1} = \mathrm{clip}(W_t + \kappa (\bar W - W_t) + \sigma_W \xi^2_{t+1}, 0, 3\bar W)$.

    **Constraints** (for every device i and step t):
    $c^W, c^G, d \ge 0$; charging $c^{W,i} + c^{G,i} \le \min(R^c_i, (X_i - x^i)/\eta^c_i)$
    (rate and free capacity); discharging $d^i \le \min(R^d_i, x^i)$ (rate and stored
    energy); the wind shared by all devices $\sum_i c^{W,i} \le W_t$. So $0 \le x \le X$ always.
    The policy meets them exactly through a state-dependent map: $d = \bar d\,\sigma(r_d)$,
    total charge $q = \bar q\,\sigma(r_g)$ split into wind $q\,\sigma(r_w)$ and grid
    $q\,(1 - \sigma(r_w))$, the wind parts scaled down together when their sum exceeds $W_t$.

    **Reward** per step: energy sold, $\eta^d_i d^i$, earns $P_t$; grid energy costs $P_t$;
    wind diverted into storage loses its feed-in payment $\phi P_t$ ($\phi < 1$, so wind is the
    cheaper source); stored energy left at T is worth `salvage` $\bar P$ per unit. The cost is
    the negative reward:
    $c_t = -P_t(\sum_i \eta^d_i d^i_t - \sum_i c^{G,i}_t - \phi \sum_i c^{W,i}_t)$,
    $c_T = -\text{salvage}\,\bar P \sum_i x^i_T$.

    **References on each path**: the price and wind do not depend on the controls, so the
    best reward with perfect foresight of a path is a linear program in the 3nT controls and
    nT levels with exactly the constraints above (`perfect_foresight_reward`, SciPy HiGHS).
    Every non-anticipative policy is feasible for it, so it bounds every policy's reward on
    that path from above. `rule_based_control` is a simple lower reference: charge at full
    rate (wind first) when the price is below $(1 - \theta)\bar P$, discharge at full rate
    above $(1 + \theta)\bar P$, otherwise store wind only.

    Device parameters are drawn once from `device_seed`: capacity $X_i \sim U[0.5, 1.5]$,
    rates $R^c_i, R^d_i \sim X_i U[0.15, 0.35]$, efficiencies $\eta^c_i, \eta^d_i \sim
    U[0.85, 0.95]$. The mean wind is `wind_mean` times the total charge rate $\sum R^c_i$.

    Args:
        num_devices: n.
        num_steps: T (hours).
        price_mean, price_amplitude, price_reversion, price_volatility: $\bar P$, A, rho,
            sigma_P (the last in units of $\bar P$).
        wind_mean, wind_reversion, wind_volatility: $\bar W / \sum R^c$, kappa, sigma_W (in
            units of $\bar W$).
        feed_in: phi in [0, 1].
        salvage: value of stored energy at T in units of $\bar P$.
        rule_threshold: theta of the rule-based policy.
        device_seed: seed of the device parameters.
    """

    def __init__(self, num_devices=30, num_steps=24, price_mean=1.0, price_amplitude=0.4,
                 price_reversion=0.7, price_volatility=0.15, wind_mean=0.3, wind_reversion=0.3,
                 wind_volatility=0.3, feed_in=0.6, salvage=0.5, rule_threshold=0.1,
                 device_seed=0):
        self.num_devices = check_positive_int("num_devices", num_devices)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.price_mean = check_number("price_mean", price_mean, 0.0, strict=True)
        self.price_amplitude = check_number("price_amplitude", price_amplitude, 0.0)
        self.price_reversion = check_number("price_reversion", price_reversion, 0.0)
        self.price_volatility = check_number("price_volatility", price_volatility, 0.0)
        self.wind_mean = check_number("wind_mean", wind_mean, 0.0)
        self.wind_reversion = check_number("wind_reversion", wind_reversion, 0.0)
        self.wind_volatility = check_number("wind_volatility", wind_volatility, 0.0)
        self.feed_in = check_number("feed_in", feed_in, 0.0, high=1.0)
        self.salvage = check_number("salvage", salvage, 0.0)
        self.rule_threshold = check_number("rule_threshold", rule_threshold, 0.0)
        self.device_seed = int(device_seed)
        n = self.num_devices
        self.state_dim, self.control_dim, self.noise_dim = n + 2, 3 * n, 2
        rng = np.random.default_rng(self.device_seed)
        self.capacity = rng.uniform(0.5, 1.5, n)
        self.charge_rate = self.capacity * rng.uniform(0.15, 0.35, n)
        self.discharge_rate = self.capacity * rng.uniform(0.15, 0.35, n)
        self.charge_efficiency = rng.uniform(0.85, 0.95, n)
        self.discharge_efficiency = rng.uniform(0.85, 0.95, n)
        self.wind_level = max(self.wind_mean * float(self.charge_rate.sum()), 1e-12)

    # --- the problem --------------------------------------------------------------------------
    def price_profile(self, t):
        """The daily mean price m_t (t an int or a tensor)."""
        phase = 2 * np.pi / 24.0
        if isinstance(t, (int, np.integer, float)):
            return self.price_mean * (1 - self.price_amplitude * np.cos(phase * t))
        return self.price_mean * (1 - self.price_amplitude * ops.cos(phase * t))

    def _split(self, s):
        n = self.num_devices
        return s[:, :n], s[:, n], s[:, n + 1]

    def _bounds(self, x, dtype):
        charge = ops.relu(ops.minimum(ops.cast(self.charge_rate, dtype),
                                      (ops.cast(self.capacity, dtype) - x)
                                      / ops.cast(self.charge_efficiency, dtype)))
        discharge = ops.relu(ops.minimum(ops.cast(self.discharge_rate, dtype), x))
        return charge, discharge

    def control_map(self, t, s, raw):
        n = self.num_devices
        x, _, wind = self._split(s)
        ub_charge, ub_discharge = self._bounds(x, s.dtype)
        r_w, r_g, r_d = raw[:, :n], raw[:, n:2 * n], raw[:, 2 * n:]
        charge = scaled_sigmoid(r_g, 0.0, ub_charge)
        share = ops.sigmoid(r_w)
        c_wind = cap_sum(charge * share, ops.relu(wind))
        c_grid = charge * (1 - share)
        discharge = scaled_sigmoid(r_d, 0.0, ub_discharge)
        return ops.concatenate([c_wind, c_grid, discharge], axis=-1)

    @property
    def raw_control_dim(self):
        return 3 * self.num_devices

    def step(self, t, s, a, xi):
        n = self.num_devices
        dtype = s.dtype
        x, price, wind = self._split(s)
        c_wind, c_grid, discharge = a[:, :n], a[:, n:2 * n], a[:, 2 * n:]
        x_next = x + ops.cast(self.charge_efficiency, dtype) * (c_wind + c_grid) - discharge
        m_t, m_next = self.price_profile(t), self.price_profile(t + 1)
        if not isinstance(t, int):
            m_t, m_next = ops.cast(m_t, dtype), ops.cast(m_next, dtype)
        price_next = (m_next + self.price_reversion * (price - m_t)
                      + self.price_volatility * self.price_mean * xi[:, 0])
        w = self.wind_level
        wind_next = ops.clip(wind + self.wind_reversion * (w - wind)
                             + self.wind_volatility * w * xi[:, 1], 0.0, 3 * w)
        return ops.concatenate([x_next, price_next[:, None], wind_next[:, None]], axis=-1)

    def running_cost(self, t, s, a):
        n = self.num_devices
        dtype = s.dtype
        _, price, _ = self._split(s)
        c_wind, c_grid, discharge = a[:, :n], a[:, n:2 * n], a[:, 2 * n:]
        sold = ops.sum(ops.cast(self.discharge_efficiency, dtype) * discharge, axis=-1)
        return -price * (sold - ops.sum(c_grid, axis=-1) - self.feed_in * ops.sum(c_wind, -1))

    def terminal_cost(self, s):
        x, _, _ = self._split(s)
        return -self.salvage * self.price_mean * ops.sum(x, axis=-1)

    def normalize_state(self, t, s):
        x, price, wind = self._split(s)
        dtype = s.dtype
        xn = 2 * x / ops.cast(self.capacity, dtype) - 1
        pn = (price - self.price_mean) / (self.price_mean * max(self.price_amplitude, 0.1))
        wn = wind / self.wind_level - 1
        return ops.concatenate([xn, pn[:, None], wn[:, None]], axis=-1)

    def sample_initial(self, num_paths, seed, dtype="float32"):
        n = self.num_devices
        u = tf.random.stateless_uniform((num_paths, n + 2), seed, dtype="float32")
        u = tf.cast(u, dtype)
        x = tf.cast(self.capacity, dtype) * (0.2 + 0.6 * u[:, :n])
        # Price near its profile, wind within +-50% of its mean.
        spread = self.price_volatility * self.price_mean / np.sqrt(
            max(1 - self.price_reversion**2, 1e-6))
        price = self.price_profile(0) + spread * (2 * u[:, n] - 1)
        wind = self.wind_level * (0.5 + u[:, n + 1])
        return tf.concat([x, price[:, None], wind[:, None]], axis=-1)

    def constraint_violation(self, t, s, a):
        n = self.num_devices
        s, a = np.asarray(s, dtype="float64"), np.asarray(a, dtype="float64")
        x, wind = s[:, :n], s[:, n + 1]
        c_wind, c_grid, d = a[:, :n], a[:, n:2 * n], a[:, 2 * n:]
        charge_cap = np.maximum(np.minimum(self.charge_rate,
                                           (self.capacity - x) / self.charge_efficiency), 0)
        discharge_cap = np.maximum(np.minimum(self.discharge_rate, x), 0)
        parts = [-a, c_wind + c_grid - charge_cap, d - discharge_cap,
                 (c_wind.sum(-1) - np.maximum(wind, 0))[:, None]]
        return float(max(np.max(p, initial=0.0) for p in parts))

    # --- references ---------------------------------------------------------------------------
    def rule_based_control(self, t, s):
        """The threshold policy (see the class docstring), as tensors."""
        x, price, wind = self._split(s)
        ub_charge, ub_discharge = self._bounds(x, s.dtype)
        low = price < (1 - self.rule_threshold) * self.price_mean
        high = price > (1 + self.rule_threshold) * self.price_mean
        c_wind = cap_sum(ub_charge, ops.relu(wind))
        c_grid = ops.where(low[:, None], ub_charge - c_wind, ops.zeros_like(ub_charge))
        c_wind = ops.where(high[:, None], ops.zeros_like(c_wind), c_wind)
        discharge = ops.where(high[:, None], ub_discharge, ops.zeros_like(ub_discharge))
        return ops.concatenate([c_wind, c_grid, discharge], axis=-1)

    def exogenous_paths(self, s0, noise):
        """Price and wind along each path, `(price, wind)` NumPy arrays of shape (B, T)."""
        s0 = tf.convert_to_tensor(s0)
        noise = tf.convert_to_tensor(noise, s0.dtype)

        def zero(t, s):
            return ops.zeros((ops.shape(s)[0], self.control_dim), s.dtype)

        _, states, _ = self.rollout(zero, s0, noise, return_paths=True)
        states = np.asarray(states, dtype="float64")
        n = self.num_devices
        return states[:, :-1, n], states[:, :-1, n + 1]

    def perfect_foresight_reward(self, s0, noise):
        """Best reward of each path with its prices and wind known in advance (LP, HiGHS).

        Returns:
            NumPy array (B,): an upper bound on the reward of every non-anticipative policy on
            the same path.
        """
        price, wind = self.exogenous_paths(s0, noise)
        x0 = np.asarray(s0, dtype="float64")[:, : self.num_devices]
        return np.array([self._lp(x0[b], price[b], wind[b]) for b in range(len(x0))])

    def _lp(self, x0, price, wind):
        from scipy import sparse
        from scipy.optimize import linprog

        n, big_t = self.num_devices, self.num_steps
        eta_c, eta_d = self.charge_efficiency, self.discharge_efficiency
        nu = 3 * n * big_t  # control variables; then levels x_1..x_T

        def cw(t):
            return 3 * n * t + np.arange(n)

        def cg(t):
            return 3 * n * t + n + np.arange(n)

        def dd(t):
            return 3 * n * t + 2 * n + np.arange(n)

        def lv(t):  # x_t for t >= 1
            return nu + n * (t - 1) + np.arange(n)

        num_vars = nu + n * big_t
        cost = np.zeros(num_vars)
        bounds_hi = np.zeros(num_vars)
        rows, cols, vals, rhs = [], [], [], []
        e_rows, e_cols, e_vals, e_rhs = [], [], [], []
        r = 0
        re = 0
        for t in range(big_t):
            cost[cw(t)] = self.feed_in * price[t]
            cost[cg(t)] = price[t]
            cost[dd(t)] = -price[t] * eta_d
            bounds_hi[cw(t)] = self.charge_rate
            bounds_hi[cg(t)] = self.charge_rate
            bounds_hi[dd(t)] = self.discharge_rate
            idx = np.arange(n)
            # d <= x_t
            rows += list(r + idx)
            cols += list(dd(t))
            vals += [1.0] * n
            if t == 0:
                rhs += list(x0)
            else:
                rows += list(r + idx)
                cols += list(lv(t))
                vals += [-1.0] * n
                rhs += [0.0] * n
            r += n
            # eta_c (cw + cg) + x_t <= X, and cw + cg <= Rc
            for block, coef in ((cw(t), eta_c), (cg(t), eta_c)):
                rows += list(r + idx)
                cols += list(block)
                vals += list(coef)
            if t == 0:
                rhs += list(self.capacity - x0)
            else:
                rows += list(r + idx)
                cols += list(lv(t))
                vals += [1.0] * n
                rhs += list(self.capacity)
            r += n
            for block in (cw(t), cg(t)):
                rows += list(r + idx)
                cols += list(block)
                vals += [1.0] * n
            rhs += list(self.charge_rate)
            r += n
            # sum_i cw <= W_t
            rows += [r] * n
            cols += list(cw(t))
            vals += [1.0] * n
            rhs.append(max(wind[t], 0.0))
            r += 1
            # x_{t+1} - x_t - eta_c (cw + cg) + d = 0
            e_rows += list(re + idx) * 4
            e_cols += list(lv(t + 1)) + list(cw(t)) + list(cg(t)) + list(dd(t))
            e_vals += [1.0] * n + list(-eta_c) + list(-eta_c) + [1.0] * n
            if t == 0:
                e_rhs += list(x0)
            else:
                e_rows += list(re + idx)
                e_cols += list(lv(t))
                e_vals += [-1.0] * n
                e_rhs += [0.0] * n
            re += n
        for t in range(1, big_t + 1):
            bounds_hi[lv(t)] = self.capacity
        cost[lv(big_t)] = -self.salvage * self.price_mean
        a_ub = sparse.csr_matrix((vals, (rows, cols)), shape=(r, num_vars))
        a_eq = sparse.csr_matrix((e_vals, (e_rows, e_cols)), shape=(re, num_vars))
        res = linprog(cost, A_ub=a_ub, b_ub=np.array(rhs), A_eq=a_eq, b_eq=np.array(e_rhs),
                      bounds=np.stack([np.zeros(num_vars), bounds_hi], axis=1), method="highs")
        if res.status != 0:
            raise RuntimeError(f"The perfect-foresight LP failed: {res.message}")
        return float(-res.fun)

    def get_config(self):
        return {"num_devices": self.num_devices, "num_steps": self.num_steps,
                "price_mean": self.price_mean, "price_amplitude": self.price_amplitude,
                "price_reversion": self.price_reversion,
                "price_volatility": self.price_volatility, "wind_mean": self.wind_mean,
                "wind_reversion": self.wind_reversion, "wind_volatility": self.wind_volatility,
                "feed_in": self.feed_in, "salvage": self.salvage,
                "rule_threshold": self.rule_threshold, "device_seed": self.device_seed}
