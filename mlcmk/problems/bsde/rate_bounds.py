r"""Primal-dual Monte Carlo bounds for `PricingDiffRate`, independent of any neural network.

The problem's generator is the larger of two linear ones, f = max over r in {R^l, R^b} of
-r y - (p - r) s, with s = sigma^{-1} sum_i z_i the stock holding and p the drift of the simulated
assets. On the time grid of the problem, the explicit backward scheme

    Y_n = max_r E_n[Y_{n+1} w_r] / (1 + r dt),    w_r = 1 - (p - r) / sigma * sum_i dW_n^i,

(s_n = E_n[Y_{n+1} sum_i dW_n^i] / (sigma dt) by Gaussian integration by parts) is a discrete
control problem whose value tends to u(0, x0) as dt -> 0. This module brackets it from both sides:

- The features are prices of calls on the maximum, phi_K(t, x) = E[(M_T - K)^+ | X_t = x] with
  M_T = max_i X_T^i under the simulation measure, and D phi_K = sum_i x_i d phi_K / d x_i
  = E[M_T 1{M_T > K} | X_t = x] (scaling x scales M_T). Both are martingales along the paths, and
  E_n[phi(X_{n+1}) sum_i dW^i] = sigma dt D phi(X_n) exactly for the exact GBM step, so for any
  u_hat = c . phi the conditional expectations E_n[u_hat(X_{n+1}) w_r] are known in closed form.
  They are 1-D integrals of the law of M_T, F(m) = prod_i Phi(a_i(m)), by composite Gauss-Legendre
  quadrature (about 1e-9 relative).
- The backward regression projects each step's value max_r E_n[u_hat_{n+1} w_r] / (1 + r dt) on
  the features (fit paths): u_hat_n, and the policy "the rate that attains the max".
- Lower bound (independent paths): the policy's value E[g prod_n w_{r_n} / (1 + r_n dt)], with
  the martingale of u_hat as a control variate; any adapted policy gives a lower bound.
- Upper bound (Rogers / Haugh-Kogan duality, as in Bender, Gaertner and Schweizer's pathwise
  dynamic programming): Theta_N = g and Theta_n = max_r [Theta_{n+1} w_r - dM_{r,n}] / (1 + r dt)
  with dM_{r,n} = u_hat_{n+1}(X_{n+1}) w_r - E_n[u_hat_{n+1}(X_{n+1}) w_r]; E[Theta_0] >= Y_0 by
  Jensen as long as the weights w_r are non-negative (their negative count is reported).

The gap between the bounds measures how good the regression is, not a modelling assumption.
"""

import dataclasses
import functools
import time

import numpy as np
import tensorflow as tf

from mlcmk._validation import check_number, check_positive_int

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(6)
_V_EDGES = np.arange(-6.0, 7.0 + 1e-9, 1.0)   # standardised log m, relative to the largest x_i
_NUM_PANELS = len(_V_EDGES) - 1
_V_NODES = np.concatenate([0.5 * (a + b) + 0.5 * (b - a) * _GL_NODES
                           for a, b in zip(_V_EDGES[:-1], _V_EDGES[1:], strict=True)])
_V_WEIGHTS = np.concatenate([0.5 * (b - a) * _GL_WEIGHTS
                             for a, b in zip(_V_EDGES[:-1], _V_EDGES[1:], strict=True)])

DEFAULT_STRIKES = (0.0, 90.0, 100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0, 175.0, 200.0)


def _log_normal_cdf(a):
    upper = tf.math.log1p(-0.5 * tf.math.erfc(tf.maximum(a, 0.0) * np.sqrt(0.5)))
    lower = tf.math.log(0.5 * tf.math.erfc(-tf.minimum(a, 0.0) * np.sqrt(0.5)))
    return tf.where(a > 0, upper, lower)


def _standardise(log_x, tau, drift, sigma):
    """s = sigma sqrt(tau); log m = base + s v with v relative to the largest x_i, where the
    i-th asset's standardised log-distance is a_i(m) = v + gap_i."""
    s = sigma * tf.sqrt(tau)
    top = tf.reduce_max(log_x, axis=1)
    gap = (top[:, None] - log_x) / s
    base = top + (drift - 0.5 * sigma**2) * tau
    return s, top, gap, base


def _partial_panel(v):
    """For v in [-6, 7]: its panel index p, and Gauss-Legendre nodes and half-width on
    [v, right edge of p]."""
    vc = tf.clip_by_value(v, _V_EDGES[0], _V_EDGES[-1])
    p = tf.clip_by_value(tf.cast(tf.floor(vc - _V_EDGES[0]), tf.int32), 0, _NUM_PANELS - 1)
    right = _V_EDGES[0] + tf.cast(p, tf.float64) + 1.0
    half = 0.5 * (right - vc)
    nodes = 0.5 * (right + vc)[:, None] + half[:, None] * _GL_NODES
    return vc, p, half, nodes


def _panel_tails(integrand):
    """Node values [..., nv] -> integrals from each panel's left edge to +inf [..., NP + 1]."""
    shape = tf.concat([tf.shape(integrand)[:-1], [_NUM_PANELS, 6]], axis=0)
    panels = tf.reduce_sum(tf.reshape(integrand, shape), axis=-1)
    tails = tf.cumsum(panels, axis=-1, reverse=True)
    return tf.concat([tails, tf.zeros_like(tails[..., :1])], axis=-1)


@functools.lru_cache(maxsize=8)
def _max_call_function(strikes, drift, sigma):
    """An XLA-compiled (log_x [B, d], tau > 0) -> (phi [B, S], dphi [B, S]) for these strikes."""

    @tf.function(jit_compile=True)
    def fn(log_x, tau):
        s, top, gap, base = _standardise(log_x, tau, drift, sigma)
        log_f = tf.reduce_sum(_log_normal_cdf(_V_NODES[None, None, :] + gap[:, :, None]), axis=1)
        integrand = -tf.math.expm1(log_f) * tf.exp(base[:, None] + s * _V_NODES) * s * _V_WEIGHTS
        from_edge = _panel_tails(integrand)                       # int from edge p to inf
        m_low = tf.exp(base + s * _V_EDGES[0])   # below it, P(M_T < m) < Phi(-6): 1 - F = 1
        phis, dphis = [], []
        for k in strikes:
            if k <= 0.0:
                phi, tail = m_low - k + from_edge[:, 0], tf.ones_like(top)
            else:
                vk = (np.log(k) - base) / s
                vc, p, half, vn = _partial_panel(vk)
                lf = tf.reduce_sum(_log_normal_cdf(vn[:, None, :] + gap[:, :, None]), axis=1)
                part = tf.reduce_sum(-tf.math.expm1(lf) * tf.exp(base[:, None] + s * vn) * s
                                     * half[:, None] * _GL_WEIGHTS, axis=1)
                inside = part + tf.gather(from_edge, p + 1, batch_dims=1)
                tail_k = -tf.math.expm1(tf.reduce_sum(_log_normal_cdf(vc[:, None] + gap), axis=1))
                below, above = vk <= _V_EDGES[0], vk >= _V_EDGES[-1]
                zero = tf.zeros_like(vk)
                phi = tf.where(below, m_low - k + from_edge[:, 0], tf.where(above, zero, inside))
                tail = tf.where(below, tf.ones_like(vk), tf.where(above, zero, tail_k))
            phis.append(phi)
            dphis.append(phi + k * tail)
        return tf.stack(phis, axis=1), tf.stack(dphis, axis=1)

    return fn


def _check_inputs(log_x, tau, strikes):
    log_x = np.asarray(log_x, dtype=np.float64)
    if log_x.ndim != 2:
        raise ValueError(f"`log_x` must have shape [batch, dim]; received shape {log_x.shape}")
    strikes = tuple(float(k) for k in strikes)
    if any(not np.isfinite(k) or k < 0 for k in strikes):
        raise ValueError(f"`strikes` must be finite and >= 0; received {strikes!r}")
    check_number("tau", tau, 0)
    return log_x, strikes


@functools.lru_cache(maxsize=8)
def _coordinate_delta_function(strikes, drift, sigma):
    """XLA: (log_x [B, d], tau > 0) -> x_i d phi_K / d x_i [B, d, S].

    d F / d log x_i = -F pdf(a_i) / (Phi(a_i) s), so x_i d phi_K / d x_i
    = int_K^inf F(m) pdf(a_i(m)) / (Phi(a_i(m)) s) dm: the same quadrature as the prices.
    """

    def weight(v, gap, s):       # v [B, n] nodes -> F pdf(a_i) / (Phi(a_i) s), [B, d, n]
        a = v[:, None, :] + gap[:, :, None]
        log_cdf = _log_normal_cdf(a)
        log_f = tf.reduce_sum(log_cdf, axis=1, keepdims=True)
        return tf.exp(log_f - log_cdf - 0.5 * a**2) / (np.sqrt(2.0 * np.pi) * s)

    @tf.function(jit_compile=True)
    def fn(log_x, tau):
        s, top, gap, base = _standardise(log_x, tau, drift, sigma)
        nodes = tf.broadcast_to(tf.constant(_V_NODES)[None, :], [tf.shape(top)[0], len(_V_NODES)])
        integrand = (weight(nodes, gap, s) * tf.exp(base[:, None, None] + s * _V_NODES) * s
                     * _V_WEIGHTS)
        from_edge = _panel_tails(integrand)                     # [B, d, NP + 1]
        out = []
        for k in strikes:
            if k <= 0.0:   # below m_low, F < Phi(-6): nothing to add
                out.append(from_edge[:, :, 0])
                continue
            vk = (np.log(k) - base) / s
            _, p, half, vn = _partial_panel(vk)
            m = tf.exp(base[:, None, None] + s * vn[:, None, :])
            part = tf.reduce_sum(weight(vn, gap, s) * m * s
                                 * (half[:, None] * _GL_WEIGHTS)[:, None, :], axis=2)
            rest = tf.gather(tf.transpose(from_edge, [0, 2, 1]), p + 1, batch_dims=1)
            delta = tf.where((vk <= _V_EDGES[0])[:, None], from_edge[:, :, 0], part + rest)
            out.append(tf.where((vk >= _V_EDGES[-1])[:, None], tf.zeros_like(delta), delta))
        return tf.stack(out, axis=2)

    return fn


def max_call_coordinate_deltas(log_x, tau, strikes, drift, sigma):
    """x_i d phi_K / d x_i = E[X_T^i 1{X_T^i = M_T > K} | x] for the calls of `max_call_prices`.

    Returns a float64 array [B, d, len(strikes)]; summed over i it is `dphi`.
    """
    log_x, strikes = _check_inputs(log_x, tau, strikes)
    if tau == 0.0:
        x = np.exp(log_x)
        top = x.max(axis=1, keepdims=True)
        is_top = (x == top) & (np.arange(x.shape[1]) == np.argmax(x, axis=1)[:, None])
        return (x * is_top)[:, :, None] * (top[:, :, None] > np.asarray(strikes))
    fn = _coordinate_delta_function(strikes, float(drift), float(sigma))
    return fn(tf.constant(log_x), tf.constant(float(tau), tf.float64)).numpy()


def max_call_prices(log_x, tau, strikes, drift, sigma):
    r"""Undiscounted calls on the maximum of d independent GBMs, and their Euler derivatives.

    Args:
        log_x: array [B, d], log of the current asset values.
        tau: float >= 0, time to maturity.
        strikes: sequence of floats >= 0.
        drift, sigma: the assets' drift and volatility (dX^i = drift X^i dt + sigma X^i dW^i).

    Returns:
        `(phi, dphi)`, float64 arrays [B, len(strikes)]: phi_K = E[(M_T - K)^+ | x] and
        dphi_K = sum_i x_i d phi_K / d x_i = E[M_T 1{M_T > K} | x], M_T = max_i X_T^i.
    """
    log_x, strikes = _check_inputs(log_x, tau, strikes)
    if tau == 0.0:
        top = np.exp(log_x.max(axis=1))[:, None]
        k = np.asarray(strikes)[None, :]
        return np.maximum(top - k, 0.0), top * (top > k)
    fn = _max_call_function(strikes, float(drift), float(sigma))
    phi, dphi = fn(tf.constant(log_x), tf.constant(float(tau), tf.float64))
    return phi.numpy(), dphi.numpy()


@dataclasses.dataclass
class PricingBounds:
    """Result of `primal_dual_bounds`; `lower <= Y_0 <= upper` up to Monte Carlo error.

    `tail_ratio` is the largest |deviation| of a path's estimate from the mean, in standard
    deviations, over both estimators: ~4-5 for light tails at a few thousand paths; tens mean
    the standard errors are not to be trusted (a poor regression on rare paths).
    """

    num_steps: int
    regression: float
    lower: float
    lower_se: float
    upper: float
    upper_se: float
    lower_plain: float
    lower_plain_se: float
    fit_rms: float
    tail_ratio: float
    negative_weights: int
    borrow_fraction: float
    seconds: float
    hedging_loss: float = None
    terminal_variance: float = None
    regression_model: dict = dataclasses.field(default=None, repr=False)

    @property
    def midpoint(self):
        return 0.5 * (self.lower + self.upper)

    def as_dict(self):
        out = {**dataclasses.asdict(self), "midpoint": self.midpoint}
        out.pop("regression_model")
        return out

    def z(self, t, x):
        """The regression's Z_n = sigma^T grad u(t_n, x) = E_n[u_hat_{n+1} dW_n] / dt.

        Args:
            t: a grid time t_n, n < N. x: array [B, d] of asset values.
        Returns:
            float64 array [B, d].
        """
        m = self.regression_model
        n = int(round(float(t) / m["dt"]))
        if not 0 <= n < len(m["coefficients"]) - 1 or abs(n * m["dt"] - float(t)) > 1e-6:
            raise ValueError(f"`t` must be a grid time t_n with n < N; received t={t!r}")
        return _regression_z(m, n, np.log(np.asarray(x, np.float64)))


def _regression_z(model, n, log_x):
    """Z_n^i = sigma x_i d u_hat_{n+1} / d x_i at t_n (exact per coordinate for the GBM step)."""
    deltas = max_call_coordinate_deltas(log_x, model["total_time"] - n * model["dt"],
                                        model["strikes"], model["drift"], model["sigma"])
    return model["sigma"] * deltas @ model["coefficients"][n + 1][1:]


def _check_problem(problem):
    from mlcmk.problems.bsde.black_scholes import PricingDiffRate

    if not isinstance(problem, PricingDiffRate):
        raise TypeError(f"`problem` must be a PricingDiffRate; received {type(problem).__name__}")
    if problem.x0_spread:
        raise ValueError("`primal_dual_bounds` needs a fixed start point; received "
                         f"x0_spread={problem.x0_spread!r}")


def _log_x0(problem):
    return np.log(np.broadcast_to(np.asarray(problem.x0, dtype=np.float64), (problem.dim,)))


def _simulate_features(problem, num_paths, strikes, seed, chunk, progress, spread=0.0,
                       keep_paths=False):
    """Features phi, dphi ([N+1, P, 1+S], a constant first) and sum_i dW_n^i ([P, N]).

    `spread` > 0 starts the paths from x0 times a common log-normal factor of that standard
    deviation (for the regression: the fit then also covers the tails the bound paths reach).
    With `keep_paths`, also log X ([N+1, P, d]) and the increments dW ([P, N, d])."""
    n_steps, dt, dim = problem.num_steps, problem.dt, problem.dim
    drift, sigma = problem.path_drift, problem.sigma_bar
    rng = np.random.default_rng(seed)
    nf = 1 + len(strikes)
    phi = np.zeros((n_steps + 1, num_paths, nf))
    dphi = np.zeros_like(phi)
    phi[:, :, 0] = 1.0
    sum_dw = np.zeros((num_paths, n_steps))
    if keep_paths:
        paths = np.zeros((n_steps + 1, num_paths, dim))
        increments = np.zeros((num_paths, n_steps, dim))
    for a in range(0, num_paths, chunk):
        b = min(a + chunk, num_paths)
        log_x = np.tile(_log_x0(problem), (b - a, 1))
        if spread:
            log_x = log_x + spread * rng.standard_normal((b - a, 1))
        for n in range(n_steps + 1):
            tau = max(problem.total_time - n * dt, 0.0) if n < n_steps else 0.0
            phi[n, a:b, 1:], dphi[n, a:b, 1:] = max_call_prices(log_x, tau, strikes, drift, sigma)
            if keep_paths:
                paths[n, a:b] = log_x
            if n < n_steps:
                dw = rng.standard_normal((b - a, dim)) * np.sqrt(dt)
                sum_dw[a:b, n] = dw.sum(axis=1)
                if keep_paths:
                    increments[a:b, n] = dw
                log_x = log_x + (drift - 0.5 * sigma**2) * dt + sigma * dw
            if progress is not None:
                progress.add(b - a)
    if keep_paths:
        return phi, dphi, sum_dw, paths, increments
    return phi, dphi, sum_dw


def _conditional(problem, phi_n, dphi_n, coef, rate):
    """E_n[u_hat_{n+1}(X_{n+1}) w_r] for u_hat_{n+1} = phi_{n+1} . coef."""
    return phi_n @ coef - (problem.path_drift - rate) * problem.dt * (dphi_n @ coef)


def _step_max(problem, phi_n, dphi_n, coef, rates):
    """The scheme's Y_n for u_hat_{n+1} = phi_{n+1} . coef: max_r E_n[u_hat w_r] / (1 + r dt)."""
    return np.max([_conditional(problem, phi_n, dphi_n, coef, r) / (1 + r * problem.dt)
                   for r in rates], axis=0)


def _tail_ratio(values):
    return float(np.max(np.abs(values - values.mean())) / max(values.std(), 1e-300))


def _least_squares(features, target, rcond=1e-10):
    """Minimum-norm least squares on scaled columns, singular values below rcond * max dropped.

    Deep in-the-money calls differ from E[M_T] - K by almost nothing, so the basis is nearly
    singular; unbounded coefficients would multiply the quadrature's round-off in the martingale
    increments (each is mean-zero only up to it).
    """
    scale = np.maximum(np.sqrt(np.mean(features**2, axis=0)), 1e-300)
    coef, *_ = np.linalg.lstsq(features / scale, target, rcond=rcond)
    return coef / scale


def primal_dual_bounds(problem, num_fit_paths=10_000, num_bound_paths=20_000, strikes=None,
                       seed=0, chunk=2000, fit_spread=0.1, hedging_loss=False, verbose=1):
    """Lower and upper Monte Carlo bounds on the time-discrete value of a `PricingDiffRate`.

    See the module docstring for the method. The bounds are for the problem's own time grid
    (`problem.num_steps`); refine the grid to approach the PDE's u(0, x0).

    Args:
        problem: a `PricingDiffRate` with a fixed start point (x0_spread = 0).
        num_fit_paths: paths for the backward regression.
        num_bound_paths: independent paths on which both bounds are estimated.
        strikes: call strikes of the regression basis (a constant is added); must contain the
            payoff's strikes. Default `DEFAULT_STRIKES`.
        seed: int; fit paths use `seed`, bound paths `seed + 1`.
        chunk: paths per feature evaluation (memory ~ chunk * dim * 150 * 8 bytes).
        fit_spread: float >= 0; the fit paths start from x0 times a common log-normal factor
            with this standard deviation, so that the regression also sees the tails the
            bound paths reach (without it, rare paths where u_hat extrapolates badly make the
            bound estimators heavy-tailed: seeds then disagree by many standard errors).
        hedging_loss: also estimate the smallest loss E|g(X_N) - Y_N|^2 a Deep BSDE on this
            grid can reach: sum_n E[R_n^2], R_n = u_hat_{n+1}(X_{n+1}) - E_n[u_hat_{n+1}]
            - Z_n . dW_n with Z_n the exact projection (what no Z_n . dW_n can hedge over one
            step), next to `terminal_variance` = Var g(X_N), the loss of Z = 0. Keeps the bound
            paths in memory (num_bound_paths * N * d * 16 bytes).
        verbose: 0 or 1 (a Keras progress bar over the simulated path-steps).

    Returns:
        A `PricingBounds`.
    """
    import keras

    _check_problem(problem)
    strikes = tuple(float(k) for k in (DEFAULT_STRIKES if strikes is None else strikes))
    for k, _ in problem.payoff_calls:
        if k not in strikes:
            raise ValueError(f"`strikes` must contain the payoff's strikes "
                             f"{[c[0] for c in problem.payoff_calls]}; received {strikes!r}")
    check_number("fit_spread", fit_spread, 0)
    for name, value in (("num_fit_paths", num_fit_paths), ("num_bound_paths", num_bound_paths),
                        ("chunk", chunk)):
        check_positive_int(name, value, 2)
    start = time.perf_counter()
    n_steps, dt = problem.num_steps, problem.dt
    rates = (problem.rate_lend, problem.rate_borrow)
    bar = None
    if verbose:
        bar = keras.utils.Progbar((num_fit_paths + num_bound_paths) * (n_steps + 1),
                                  unit_name="path-step")
    terminal = np.zeros(1 + len(strikes))
    for k, weight in problem.payoff_calls:
        terminal[1 + strikes.index(k)] += weight

    phi, dphi, _ = _simulate_features(problem, num_fit_paths, strikes, seed, chunk, bar,
                                      spread=fit_spread)
    coefs = [None] * (n_steps + 1)
    coefs[n_steps] = terminal
    fit_rms = 0.0
    for n in range(n_steps - 1, 0, -1):
        y = _step_max(problem, phi[n], dphi[n], coefs[n + 1], rates)
        coefs[n] = _least_squares(phi[n], y)
        fit_rms = max(fit_rms, float(np.sqrt(np.mean((phi[n] @ coefs[n] - y) ** 2))))
    start_phi, start_dphi = max_call_prices(_log_x0(problem)[None, :], problem.total_time, strikes,
                                            problem.path_drift, problem.sigma_bar)
    ones = np.ones((1, 1))
    regression = _step_max(problem, np.concatenate([ones, start_phi], 1),
                              np.concatenate([0 * ones, start_dphi], 1), coefs[1], rates)
    regression = float(regression[0])

    simulated = _simulate_features(problem, num_bound_paths, strikes, seed + 1, chunk, bar,
                                   keep_paths=hedging_loss)
    phi, dphi, sum_dw = simulated[:3]
    drift, sigma = problem.path_drift, problem.sigma_bar
    # per step and rate: the weight w_r, the martingale increment dM_r of u_hat_{n+1}, and the
    # discount; the upper bound maximises over r, the lower bound follows the policy.
    discount = [1.0 / (1 + r * dt) for r in rates]
    steps = []
    for n in range(n_steps):
        u_next = phi[n + 1] @ coefs[n + 1]
        w = [1.0 - (drift - r) / sigma * sum_dw[:, n] for r in rates]
        cond = [_conditional(problem, phi[n], dphi[n], coefs[n + 1], r) for r in rates]
        increments = [u_next * w_r - c for w_r, c in zip(w, cond, strict=True)]
        policy = np.argmax([c * q for c, q in zip(cond, discount, strict=True)], axis=0)
        steps.append((w, increments, policy))
    negative = sum(int(np.sum(w_r < 0)) for w, _, _ in steps for w_r in w)
    theta = phi[n_steps] @ terminal
    for w, increments, _ in reversed(steps):
        theta = np.max([(theta * w_r - dm) * q for w_r, dm, q
                        in zip(w, increments, discount, strict=True)], axis=0)
    weight = np.ones(num_bound_paths)
    correction = np.zeros(num_bound_paths)
    rows = np.arange(num_bound_paths)
    for w, increments, policy in steps:
        q = np.asarray(discount)[policy]
        correction -= weight * np.stack(increments)[policy, rows] * q
        weight = weight * np.stack(w)[policy, rows] * q
    borrow = sum(int(np.sum(policy == 1)) for _, _, policy in steps)
    plain = weight * (phi[n_steps] @ terminal)
    lower = plain + correction
    root = np.sqrt(num_bound_paths)
    model = {"coefficients": coefs, "strikes": strikes, "dt": dt, "total_time": problem.total_time,
             "drift": drift, "sigma": sigma}
    loss = variance = None
    if hedging_loss:
        log_x, dw = simulated[3:]
        loss = 0.0
        for n in range(n_steps):
            c = coefs[n + 1]
            for a in range(0, num_bound_paths, chunk):
                b = min(a + chunk, num_bound_paths)
                hedge = np.sum(_regression_z(model, n, log_x[n, a:b]) * dw[a:b, n], axis=1)
                resid = phi[n + 1, a:b] @ c - phi[n, a:b] @ c - hedge
                loss += float(np.sum(resid**2)) / num_bound_paths
        variance = float(np.var(phi[n_steps] @ terminal))
    return PricingBounds(
        num_steps=n_steps, regression=regression,
        lower=float(lower.mean()), lower_se=float(lower.std(ddof=1) / root),
        upper=float(theta.mean()), upper_se=float(theta.std(ddof=1) / root),
        lower_plain=float(plain.mean()), lower_plain_se=float(plain.std(ddof=1) / root),
        fit_rms=fit_rms, tail_ratio=max(_tail_ratio(lower), _tail_ratio(theta)),
        negative_weights=negative,
        borrow_fraction=borrow / (num_bound_paths * n_steps),
        seconds=time.perf_counter() - start, hedging_loss=loss, terminal_variance=variance,
        regression_model=model)
