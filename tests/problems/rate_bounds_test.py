"""Primal-dual bounds for pricing_diff_rate: features by quadrature, bounds by Monte Carlo."""

import numpy as np
import pytest
from scipy import integrate, stats

from mlcmk.problems import build_problem
from mlcmk.problems.bsde.rate_bounds import (
    max_call_coordinate_deltas,
    max_call_prices,
    primal_dual_bounds,
)

DRIFT, SIGMA = 0.06, 0.2


def _problem(**kw):
    return build_problem({"name": "pricing_diff_rate", "dim": 5, "num_steps": 5, **kw})


def test_max_call_prices_match_quadrature_and_scaling():
    rng = np.random.default_rng(0)
    log_x = np.log(100.0) + 0.1 * rng.standard_normal((2, 4))
    tau, strikes = 0.3, (0.0, 95.0, 120.0, 150.0)
    phi, dphi = max_call_prices(log_x, tau, strikes, DRIFT, SIGMA)
    mean, scale = (DRIFT - 0.5 * SIGMA**2) * tau, SIGMA * np.sqrt(tau)
    for b in range(2):
        def cdf(m, b=b):
            return np.prod(stats.norm.cdf((np.log(m) - log_x[b] - mean) / scale))
        for j, k in enumerate(strikes):
            lo = max(k, 1e-9)
            direct = integrate.quad(lambda m: 1.0 - cdf(m), lo, 2000.0, limit=400,
                                    epsabs=1e-11)[0] + (lo - k)
            np.testing.assert_allclose(phi[b, j], direct, rtol=1e-7)
    # D phi = d/d lambda phi(lambda x) at lambda = 1, by central differences in log lambda
    h = 1e-5
    up, _ = max_call_prices(log_x + h, tau, strikes, DRIFT, SIGMA)
    down, _ = max_call_prices(log_x - h, tau, strikes, DRIFT, SIGMA)
    np.testing.assert_allclose(dphi, (up - down) / (2 * h), rtol=1e-6)
    # at maturity: the payoff and its Euler derivative
    phi0, dphi0 = max_call_prices(log_x, 0.0, strikes, DRIFT, SIGMA)
    top = np.exp(log_x.max(axis=1))[:, None]
    np.testing.assert_allclose(phi0, np.maximum(top - np.array(strikes), 0.0))
    np.testing.assert_allclose(dphi0, top * (top > np.array(strikes)))


@pytest.mark.parametrize("tau", [0.3, 0.01])
def test_coordinate_deltas_sum_to_the_euler_derivative_and_match_differences(tau):
    rng = np.random.default_rng(2)
    d, strikes = 6, (0.0, 95.0, 120.0, 150.0, 300.0)
    log_x = np.log(100.0) + 0.1 * rng.standard_normal((3, d))
    _, dphi = max_call_prices(log_x, tau, strikes, DRIFT, SIGMA)
    deltas = max_call_coordinate_deltas(log_x, tau, strikes, DRIFT, SIGMA)
    np.testing.assert_allclose(deltas.sum(axis=1), dphi, rtol=1e-8, atol=1e-9 * np.abs(dphi).max())
    h = 1e-5
    for i in range(d):
        e = np.zeros(d)
        e[i] = h
        diff = (max_call_prices(log_x + e, tau, strikes, DRIFT, SIGMA)[0]
                - max_call_prices(log_x - e, tau, strikes, DRIFT, SIGMA)[0]) / (2 * h)
        np.testing.assert_allclose(deltas[:, i], diff, atol=1e-6 * np.abs(deltas).max())


def test_features_are_martingales_with_the_stein_identity():
    rng = np.random.default_rng(1)
    d, tau, dt, n = 3, 0.4, 0.1, 40_000
    log_x = np.log(100.0) + 0.05 * rng.standard_normal((1, d))
    strikes = (100.0, 120.0, 150.0)
    phi0, dphi0 = max_call_prices(log_x, tau, strikes, DRIFT, SIGMA)
    dw = rng.standard_normal((n, d)) * np.sqrt(dt)
    log_x1 = log_x + (DRIFT - 0.5 * SIGMA**2) * dt + SIGMA * dw
    phi1, _ = max_call_prices(log_x1, tau - dt, strikes, DRIFT, SIGMA)
    se = phi1.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(phi1.mean(axis=0) - phi0[0]) < 4 * se)
    weighted = phi1 * dw.sum(axis=1, keepdims=True)
    se = weighted.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(weighted.mean(axis=0) - SIGMA * dt * dphi0[0]) < 4 * se)
    # coordinate by coordinate: E[phi(X_{t+dt}) dW^i] = sigma dt x_i d phi / d x_i
    deltas = max_call_coordinate_deltas(log_x, tau, strikes, DRIFT, SIGMA)[0]     # [d, S]
    weighted = phi1[:, None, :] * dw[:, :, None]
    se = weighted.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(weighted.mean(axis=0) - SIGMA * dt * deltas) < 4 * se)


def _plain_monte_carlo(problem, rate, num_paths=200_000, seed=5):
    """E[g(X_N) prod_n w_n] / (1 + r dt)^N with w_n = 1 - (p - r) / sigma sum_i dW_n^i."""
    rng = np.random.default_rng(seed)
    dt, p = problem.dt, problem.path_drift
    log_x = np.full((num_paths, problem.dim), np.log(100.0))
    weight = np.ones(num_paths)
    for _ in range(problem.num_steps):
        dw = rng.standard_normal(log_x.shape) * np.sqrt(dt)
        weight *= 1.0 - (p - rate) / SIGMA * dw.sum(axis=1)
        log_x += (p - 0.5 * SIGMA**2) * dt + SIGMA * dw
    m = np.exp(log_x.max(axis=1))
    g = np.maximum(m - 120.0, 0.0) - 2.0 * np.maximum(m - 150.0, 0.0)
    values = weight * g / (1 + rate * dt) ** problem.num_steps
    return values.mean(), values.std() / np.sqrt(num_paths)


def test_bounds_are_exact_for_a_single_rate_equal_to_the_drift():
    problem = _problem(rate_lend=DRIFT, rate_borrow=DRIFT)
    bounds = primal_dual_bounds(problem, num_fit_paths=200, num_bound_paths=200, verbose=0)
    phi, _ = max_call_prices(np.full((1, 5), np.log(100.0)), problem.total_time, (120.0, 150.0),
                             DRIFT, SIGMA)
    exact = (phi[0, 0] - 2 * phi[0, 1]) / (1 + DRIFT * problem.dt) ** problem.num_steps
    for value in (bounds.lower, bounds.upper, bounds.regression):
        np.testing.assert_allclose(value, exact, rtol=1e-9)
    assert bounds.upper_se < 1e-9 * exact


def test_bounds_match_monte_carlo_for_a_single_rate_below_the_drift():
    problem = _problem(rate_lend=0.04, rate_borrow=0.04)
    bounds = primal_dual_bounds(problem, num_fit_paths=2000, num_bound_paths=4000, verbose=0)
    mc, mc_se = _plain_monte_carlo(problem, 0.04)
    assert bounds.lower - 3 * bounds.lower_se <= bounds.upper + 3 * bounds.upper_se
    for value, se in ((bounds.lower, bounds.lower_se), (bounds.upper, bounds.upper_se)):
        assert abs(value - mc) < 4 * np.hypot(se, mc_se), (value, mc, mc_se)
    # the features make a good control variate: far tighter than plain Monte Carlo
    assert bounds.upper_se < 0.2 * mc_se


def test_bounds_bracket_the_nonlinear_value_above_both_linear_prices():
    # x0 = 120 in d = 5: the optimal policy switches (at x0 = 100 it nearly always borrows)
    problem = _problem(x0=120.0)
    bounds = primal_dual_bounds(problem, num_fit_paths=2000, num_bound_paths=4000, verbose=0)
    assert bounds.negative_weights == 0
    assert bounds.lower <= bounds.upper + 3 * np.hypot(bounds.lower_se, bounds.upper_se)
    assert bounds.upper - bounds.lower < 2e-3 * bounds.upper
    linear = [primal_dual_bounds(_problem(x0=120.0, rate_lend=r, rate_borrow=r),
                                 num_fit_paths=2000,
                                 num_bound_paths=4000, verbose=0) for r in (0.04, 0.06)]
    for lin in linear:
        # the nonlinear value is a sup over rate policies, so above each constant-rate price
        assert bounds.lower > lin.upper + 3 * np.hypot(bounds.lower_se, lin.upper_se)
    # the plain (no control variate) lower bound is the same expectation
    assert abs(bounds.lower_plain - bounds.lower) < 4 * bounds.lower_plain_se
    assert 0.2 < bounds.borrow_fraction < 0.95


def test_hedging_loss_floor_falls_with_the_step_and_z_is_the_regression_gradient():
    losses = []
    for n_steps in (4, 8):
        problem = _problem(x0=120.0, num_steps=n_steps)
        bounds = primal_dual_bounds(problem, num_fit_paths=1000, num_bound_paths=2000,
                                    verbose=0, hedging_loss=True)
        assert 0.0 < bounds.hedging_loss < bounds.terminal_variance
        losses.append(bounds.hedging_loss / bounds.terminal_variance)
    # what one step cannot hedge shrinks like dt: halving it at least 1.5x smaller in total
    assert losses[1] < losses[0] / 1.5
    x = np.full((2, 5), 120.0)
    t = 2 * problem.dt
    z = bounds.z(t, x)
    model = bounds.regression_model
    deltas = max_call_coordinate_deltas(np.log(x), problem.total_time - t, model["strikes"],
                                        DRIFT, SIGMA)
    np.testing.assert_allclose(z, SIGMA * deltas @ model["coefficients"][3][1:])
    assert np.all(z > 0)   # at x = 120 the position is long in every asset
    with pytest.raises(ValueError, match="grid time"):
        bounds.z(0.5 * problem.dt, x)


def test_bad_input():
    with pytest.raises(TypeError, match="PricingDiffRate"):
        primal_dual_bounds(build_problem({"name": "allen_cahn", "dim": 2}))
    with pytest.raises(ValueError, match="x0_spread"):
        primal_dual_bounds(_problem(x0_spread=1.0))
    with pytest.raises(ValueError, match="strikes"):
        primal_dual_bounds(_problem(), strikes=(100.0, 120.0))
    with pytest.raises(ValueError, match="fit_spread"):
        primal_dual_bounds(_problem(), fit_spread=-1.0)
    with pytest.raises(ValueError, match="num_fit_paths"):
        primal_dual_bounds(_problem(), num_fit_paths=1)
    with pytest.raises(ValueError, match="log_x"):
        max_call_prices(np.zeros(3), 0.1, (100.0,), DRIFT, SIGMA)
    with pytest.raises(ValueError, match="tau"):
        max_call_prices(np.zeros((1, 3)), -0.1, (100.0,), DRIFT, SIGMA)


def test_reference_value_comes_from_the_bounds_and_only_for_the_default_problem():
    reference = build_problem("pricing_diff_rate").reference_value()
    assert float(reference) == 21.176 and "bounds" in reference.source
    published = build_problem("pricing_diff_rate").published_value
    assert (published - reference) / reference > 0.005    # the published value is off by 0.58%
    assert build_problem({"name": "pricing_diff_rate", "rate_lend": 0.05}).reference_value() is None
