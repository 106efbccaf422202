"""The equation library: PDE residuals of the closed forms, Hopf-Cole reference, validation."""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from mlcmk.problems import build_problem, list_problems
from mlcmk.problems.bsde import HJBLQ, BlackScholesBarenblatt, QuadraticGradient


def _pde_residual(problem, t, x, h=1e-4):
    """u_t + 1/2 sum_i sigma_i^2 u_ii + mu . grad u + f(t, x, u, sigma grad u) by differences."""
    u = lambda tt, xx: float(problem.exact_solution(tt, xx))  # noqa: E731
    d = x.size
    u0 = u(t, x)
    u_t = (u(t + h, x) - u(t - h, x)) / (2 * h)
    grad, lap = np.zeros(d), 0.0
    sig = np.broadcast_to(np.asarray(problem.diffusion(t, x), dtype="float64"), (d,))
    for i in range(d):
        e = np.zeros(d)
        e[i] = h
        up, um = u(t, x + e), u(t, x - e)
        grad[i] = (up - um) / (2 * h)
        lap += 0.5 * sig[i] ** 2 * (up - 2 * u0 + um) / h**2
    mu = np.asarray(problem.drift(t, x[None]))[0]
    z = sig * grad
    f = float(np.asarray(problem.generator(t, x[None], np.array([u0]), z[None]))[0])
    return u_t + lap + mu @ grad + f, z


@pytest.mark.parametrize("cls", [BlackScholesBarenblatt, QuadraticGradient])
def test_closed_form_solves_the_pde_and_gives_z(cls):
    problem = cls(dim=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.uniform(0.3, 1.2, size=3)
        t = 0.4
        residual, z_fd = _pde_residual(problem, t, x)
        assert abs(residual) < 1e-4 * (1 + abs(float(problem.exact_solution(t, x))))
        np.testing.assert_allclose(problem.exact_z(t, x[None])[0], z_fd, rtol=1e-5, atol=1e-7)
        # ... and the terminal condition is the solution at T.
        g = float(np.asarray(problem.terminal(x[None]))[0])
        assert g == pytest.approx(float(problem.exact_solution(problem.total_time, x)), rel=1e-12)


def test_hjb_hopf_cole_matches_quadrature_in_one_dimension():
    # u(0, 0) = -ln E exp(-g(sqrt(2T) xi)) with xi ~ N(0, 1): Gauss-Hermite quadrature.
    problem = HJBLQ(dim=1, lam=1.0, reference_samples=400_000)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    y = math.sqrt(2.0) * nodes
    exact = -math.log(np.sum(weights * 2.0 / (1.0 + y**2)) / math.sqrt(2 * math.pi))
    value, stderr = problem.hopf_cole_value(0.0, problem.x0, num_samples=400_000)
    assert stderr > 0
    assert abs(value - exact) < 4 * stderr + 1e-12


@pytest.mark.parametrize("dim,x,t,lam", [(1, [0.3], 0.0, 1.0), (1, [0.3], 0.0, 20.0),
                                         (2, [0.5, -1.0], 0.4, 8.0), (2, [0.0, 0.0], 0.0, 0.0)])
def test_hjb_radial_quadrature_matches_brute_force_integration(dim, x, t, lam):
    # -1/lam ln E exp(-lam g(x + sqrt(2 tau) xi)) by a dense trapezoid rule over xi in R^dim.
    problem = HJBLQ(dim=dim, lam=lam)
    x, tau = np.asarray(x), problem.total_time - t
    grid = np.linspace(-12, 12, 200_001 if dim == 1 else 2_401)
    xi = np.stack(np.meshgrid(*[grid] * dim, indexing="ij"), axis=-1)
    weight = np.exp(-0.5 * np.sum(xi**2, axis=-1)) / (2 * math.pi) ** (dim / 2)
    g = np.log((1 + np.sum((x + math.sqrt(2 * tau) * xi) ** 2, axis=-1)) / 2)

    def integrate(f):
        for _ in range(dim):
            f = np.trapezoid(f, grid, axis=0)
        return f

    exact = (integrate(g * weight) if lam == 0
             else -math.log(integrate(np.exp(-lam * g) * weight)) / lam)
    value, err = problem.radial_value(t, x)
    assert err < 1e-8
    assert value == pytest.approx(exact, rel=1e-8)


def test_hjb_reference_is_the_quadrature_and_monte_carlo_fails_at_large_lambda():
    problem = HJBLQ(lam=1.0)
    mc, mc_err = problem.hopf_cole_value(0.0, problem.x0, num_samples=200_000)
    assert abs(float(problem.reference_value()) - mc) < 4 * mc_err
    assert "quadrature" in problem.reference_value().source
    # At lambda = 50 the weight sits on paths with |X_T|^2 ~ 12 (typical: 200): Monte Carlo
    # misses them and lands far above the exact value while reporting a small error bar.
    problem = HJBLQ(lam=50.0)
    exact = float(problem.reference_value())
    mc, mc_err = problem.hopf_cole_value(0.0, problem.x0, num_samples=200_000)
    assert mc - exact > 0.3 and mc_err < 0.01


def test_hjb_exact_z_matches_finite_differences_of_hopf_cole():
    problem = HJBLQ(dim=2, lam=1.0)
    x, t, h = np.array([0.7, -0.4]), 0.5, 1e-2
    z = problem.exact_z(t, x[None], num_samples=400_000, seed=3)[0]
    fd = []
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        up = problem.hopf_cole_value(t, x + e, 400_000, seed=5)[0]
        um = problem.hopf_cole_value(t, x - e, 400_000, seed=5)[0]
        fd.append(math.sqrt(2.0) * (up - um) / (2 * h))
    np.testing.assert_allclose(z, fd, atol=5e-3)


def test_hjb_lambda_zero_is_the_heat_equation():
    problem = HJBLQ(dim=2, lam=0.0)
    # u(0, 0) = E ln((1 + 2|W_1|^2)/2) with |W_1|^2 ~ chi^2_2: E = int ln((1+2s)/2) e^{-s/2}/2 ds.
    s = np.linspace(0, 80, 400_001)
    exact = np.trapezoid(np.log((1 + 2 * s) / 2) * np.exp(-s / 2) / 2, s)
    value, stderr = problem.hopf_cole_value(0.0, np.zeros(2), 400_000)
    assert abs(value - exact) < 4 * stderr


def test_registry_and_config_round_trip():
    names = list_problems(kind="bsde")
    for name in ("hjb_lq", "allen_cahn", "black_scholes_default_risk", "pricing_diff_rate",
                 "black_scholes_barenblatt", "quadratic_gradient"):
        assert name in names
        problem = build_problem({"name": name, "dim": 3})
        again = build_problem({"name": name, "config": problem.get_config()})
        assert again.get_config() == problem.get_config()
    assert build_problem("hjb").dim == 100
    assert float(build_problem("allen_cahn").reference_value()) == 0.052802
    assert build_problem({"name": "allen_cahn", "dim": 10}).reference_value() is None


@pytest.mark.parametrize("kwargs, name", [({"dim": 0}, "dim"), ({"num_steps": 0}, "num_steps"),
                                          ({"total_time": 0.0}, "total_time"),
                                          ({"total_time": -1.0}, "total_time"),
                                          ({"x0": [0.0, 1.0]}, "x0")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HJBLQ(**kwargs)


def test_unknown_problem_lists_known_names():
    with pytest.raises(ValueError, match="hjb_lq"):
        build_problem("no_such_equation")


def test_sample_paths_are_stateless_and_exact_for_gbm():
    problem = BlackScholesBarenblatt(dim=3, num_steps=4)
    x1, dw1 = problem.sample_paths(5, (1, 2), dtype="float64")
    x2, _ = problem.sample_paths(5, (1, 2), dtype="float64")
    x3, _ = problem.sample_paths(5, (1, 3), dtype="float64")
    np.testing.assert_array_equal(x1, x2)
    assert not np.allclose(x1, x3)
    # GBM without drift: X_T = x0 exp(-s^2 T / 2 + s W_T).
    w_t = np.sum(np.asarray(dw1), axis=1)
    expected = problem.x0 * np.exp(-0.5 * 0.4**2 * 1.0 + 0.4 * w_t)
    np.testing.assert_allclose(np.asarray(x1)[:, -1], expected, rtol=1e-12)
    assert ops.convert_to_numpy(x1).shape == (5, 5, 3)
    # Same draws from a compiled training step as eagerly (paths equal up to XLA's fusion).
    compiled = tf.function(lambda seed: problem.sample_paths(5, seed, dtype="float64"),
                           jit_compile=True)
    x_c, dw_c = compiled(tf.constant([1, 2]))
    np.testing.assert_array_equal(dw_c, dw1)
    np.testing.assert_allclose(x_c, x1, rtol=1e-14)
    # The increments are standard normals times sqrt(dt): 24,000 draws, 5-sigma bounds.
    _, dw = problem.sample_paths(2000, (7, 8), dtype="float64")
    z = np.asarray(dw).ravel() / math.sqrt(problem.dt)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96 / z.size)
    for bad in (0, 2.5, [3]):
        with pytest.raises(ValueError, match="num_paths"):
            problem.sample_paths(bad, (1, 2))
    unknown = tf.function(lambda n: problem.sample_paths(n, (1, 2))[0],
                          input_signature=[tf.TensorSpec((), tf.int32)])
    with pytest.raises(ValueError, match="known value"):
        unknown.get_concrete_function()


def test_different_rates_generator_charges_the_borrowing_rate():
    # Wealth y, stock holdings s = sum(z) / sigma: lent at R^l when s < y, borrowed at R^b > R^l
    # when s > y, so f = -R^l y - (mu - R^l) s + (R^b - R^l) (s - y)^+.
    problem = build_problem({"name": "pricing_diff_rate", "dim": 2})
    y = np.array([10.0, 10.0])
    z = np.array([[0.5, 0.5], [1.5, 1.5]])  # s = 5 (lending), s = 15 (borrowing)
    f = np.asarray(problem.generator(0.0, np.ones((2, 2)) * 100, y, z))
    s = z.sum(-1) / 0.2
    expected = -0.04 * y - 0.02 * s + 0.02 * np.maximum(s - y, 0)
    np.testing.assert_allclose(f, expected, rtol=1e-12)
    assert f[1] > -0.04 * y[1] - 0.02 * s[1]  # borrowing costs more than lending


def _first_order_part(problem, t, x, y, grad):
    """mu . grad u + f(t, x, y, sigma grad u): what a change of measure must leave unchanged."""
    sig = np.broadcast_to(np.asarray(problem.diffusion(t, x), dtype="float64"), x.shape)
    mu = np.asarray(problem.drift(t, x), dtype="float64")
    f = np.asarray(problem.generator(t, x, y, sig * grad), dtype="float64")
    return np.sum(mu * grad, axis=-1) + f


@pytest.mark.parametrize("make", [
    lambda **kw: build_problem({"name": "pricing_diff_rate", "dim": 3, **kw}),
    lambda **kw: HJBLQ(dim=3, lam=5.0, **kw)])
def test_change_of_measure_leaves_the_pde_unchanged(make):
    # Simulating X with another drift b changes the BSDE but must not change the PDE: the
    # generator gains (mu - b) . grad u, so mu . grad u + f is the same for every choice.
    rng = np.random.default_rng(3)
    x = rng.uniform(80.0, 130.0, size=(6, 3))
    y = rng.uniform(5.0, 30.0, size=6)
    grad = rng.normal(0.0, 0.5, size=(6, 3))
    variants = ([{"measure": m} for m in ("physical", "lending", "borrowing")]
                if "measure" in make().get_config() else [{"pull": c} for c in (0.0, 0.7, 3.0)])
    parts = [_first_order_part(make(**kw), 0.1, x, y, grad) for kw in variants]
    for other in parts[1:]:
        np.testing.assert_allclose(other, parts[0], rtol=1e-12, atol=1e-12)
    drifts = [np.asarray(make(**kw).drift(0.1, x)) for kw in variants]
    assert not np.allclose(drifts[0], drifts[1]) and not np.allclose(drifts[1], drifts[2])


def test_borrowing_measure_removes_z_where_the_hedge_borrows():
    problem = build_problem({"name": "pricing_diff_rate", "dim": 2, "measure": "borrowing"})
    x = np.full((2, 2), 100.0)
    y = np.array([10.0, 10.0])
    z = np.array([[0.5, 0.5], [1.5, 1.5]])  # s = 5 (lends), s = 15 (borrows)
    f = np.asarray(problem.generator(0.0, x, y, z))
    np.testing.assert_allclose(f, [-0.04 * 10 - 0.02 * 5, -0.06 * 10], rtol=1e-12)
    x_paths, dw = problem.sample_paths(4, (0, 1), dtype="float64")
    w_t = np.sum(np.asarray(dw), axis=1)
    expected = 100.0 * np.exp((0.06 - 0.02) * 0.5 + 0.2 * w_t)
    np.testing.assert_allclose(np.asarray(x_paths)[:, -1], expected, rtol=1e-12)
    with pytest.raises(ValueError, match="measure"):
        build_problem({"name": "pricing_diff_rate", "dim": 2, "measure": "risk_neutral"})


def test_pulled_hjb_paths():
    problem = HJBLQ(dim=3, num_steps=5, lam=5.0, pull=2.0, x0=1.0)
    x, dw = problem.sample_paths(4, (2, 3), dtype="float64")
    x, dw = np.asarray(x), np.asarray(dw)
    decay = math.exp(-2.0 * problem.dt)
    expected = decay**5 * 1.0 + math.sqrt(2.0) * sum(decay ** (4 - n) * dw[:, n]
                                                      for n in range(5))
    np.testing.assert_allclose(x[:, -1], expected, rtol=1e-12, atol=1e-12)
    # Pulling changes the paths, not the equation's reference.
    assert float(problem.reference_value()) == float(
        HJBLQ(dim=3, num_steps=5, lam=5.0, x0=1.0).reference_value())
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="`pull` must be a finite number >= 0"):
            HJBLQ(dim=2, pull=bad)
    for bad in ("auto", True):
        with pytest.raises(TypeError, match="`pull` must be a number"):
            HJBLQ(dim=2, pull=bad)
