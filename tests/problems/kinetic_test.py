"""BGK solver, discrete Maxwellian, moment solver and data generator: exact properties."""

import os

import numpy as np
import pytest

from mlcmk.models.moment_closure import MomentClosure, output_parity
from mlcmk.problems import build_problem, list_problems
from mlcmk.problems.kinetic import BGK1D, VelocityGrid, discrete_maxwellian
from mlcmk.problems.kinetic.bgk import conserved_from_primitive
from mlcmk.problems.kinetic.data import generate_kinetic_data
from mlcmk.problems.kinetic.moment_solver import (
    MomentSolver,
    physical_flux,
    relaxation_speed_factor,
    to_conserved,
)
from mlcmk.testing import TestCase


def _smooth(p, amplitude=0.2):
    x = 2 * np.pi * p.x / p.length
    return (1 + amplitude * np.sin(x), amplitude * np.cos(x), 1 + amplitude * np.sin(x + 1))


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _random_closure(K=4, seed=0):
    """An untrained closure with non-trivial normalisation (for exact structural checks)."""
    closure = MomentClosure(num_moments=K, units=[16])
    closure.build((None, 4 + K))
    rng = np.random.default_rng(seed)
    w_maxwell = np.zeros(K)
    w_maxwell[: closure.num_even] = rng.normal(size=closure.num_even)
    closure.w_maxwell.assign(w_maxwell)
    closure.input_shift.assign(np.concatenate([rng.normal(size=3), w_maxwell]))
    closure.output_scale.assign(rng.uniform(0.05, 0.2, 1 + 4 * K))
    y_maxwell = 0.1 * rng.normal(size=1 + 4 * K)
    closure.output_equilibrium.assign(np.where(output_parity(K) > 0, y_maxwell, 0.0))
    return closure


class BGKTest(TestCase):
    def test_registered(self):
        self.assertIn("bgk_1d", list_problems(kind="kinetic"))
        p = build_problem({"name": "bgk", "eps": 0.5, "num_x": 8})
        self.assertEqual((p.eps, p.num_x), (0.5, 8))

    def test_discrete_maxwellian_matches_moments_to_round_off(self):
        grid = VelocityGrid(8.0, 64)
        rng = np.random.default_rng(0)
        rho, u, T = rng.uniform(0.1, 3, 50), rng.uniform(-1.5, 1.5, 50), rng.uniform(0.4, 2, 50)
        U = conserved_from_primitive(rho, u, T)
        M = discrete_maxwellian(grid, U)
        np.testing.assert_allclose(grid.moments(M), U, rtol=1e-13, atol=1e-14)
        # The continuous Maxwellian sampled on the grid misses the moments by far more.
        v = grid.v
        sampled = rho[:, None] / np.sqrt(2 * np.pi * T[:, None]) * np.exp(
            -((v - u[:, None]) ** 2) / (2 * T[:, None]))
        coarse = VelocityGrid(6.0, 24)  # under-resolved: quadrature error visible
        Mc = discrete_maxwellian(coarse, U)
        np.testing.assert_allclose(coarse.moments(Mc), U, rtol=1e-13, atol=1e-14)
        sampled_c = rho[:, None] / np.sqrt(2 * np.pi * T[:, None]) * np.exp(
            -((coarse.v - u[:, None]) ** 2) / (2 * T[:, None]))
        self.assertGreater(np.max(np.abs(coarse.moments(sampled_c) - U)), 1e-6)
        self.assertLess(np.max(np.abs(M - sampled)), 1e-4)  # resolved grid: nearly the same

    def test_conservation_to_round_off(self):
        for kind in ("smooth", "sod"):
            for eps in (1e-3, 0.1, 10.0):
                p = BGK1D(eps=eps, num_x=40, num_v=48, v_max=7.0)
                state = _smooth(p, 0.4) if kind == "smooth" else p.sod_initial()
                f0 = p.maxwellian(*state)
                f = p.solve(f0, 0.05)
                U0, U = p.moments(f0).sum(0), p.moments(f).sum(0)
                rho, u, T = p.primitives(f0)  # momentum scale rho (|u| + sqrt T): u may be 0
                scale = np.array([rho.sum(), (rho * (np.abs(u) + np.sqrt(T))).sum(),
                                  p.moments(f0)[:, 2].sum()])
                np.testing.assert_array_less(np.abs(U - U0) / scale, 1e-13)
                self.assertGreater(np.abs(f - f0).max(), 1e-3)  # it did evolve

    def test_maxwellian_is_a_steady_state(self):
        p = BGK1D(eps=0.01, num_x=16, num_v=48, v_max=7.0)
        f0 = p.maxwellian(np.full(16, 1.3), np.full(16, 0.4), np.full(16, 0.9))
        f = p.solve(f0, 0.1)
        np.testing.assert_allclose(f, f0, rtol=0, atol=1e-14)
        # A non-uniform Maxwellian is not (the check above can fail).
        g0 = p.maxwellian(*_smooth(p))
        self.assertGreater(np.abs(p.solve(g0, 0.02) - g0).max(), 1e-3)

    def test_second_order_convergence_under_refinement(self):
        def density(n):
            p = BGK1D(eps=0.1, num_x=n, v_max=7.0, num_v=48)
            return p.primitives(p.solve(p.maxwellian(*_smooth(p)), 0.05))[0]

        reference = density(256)
        errors = [np.abs(density(n) - reference.reshape(n, -1).mean(1)).mean()
                  for n in (32, 64)]
        order = np.log2(errors[0] / errors[1])
        self.assertGreater(order, 1.7)

    def test_small_eps_reproduces_euler(self):
        differences = []
        for n in (32, 64, 128):
            p = BGK1D(eps=1e-6, num_x=n, v_max=7.0, num_v=48)
            state = _smooth(p, 0.3)
            kinetic = p.primitives(p.solve(p.maxwellian(*state), 0.05))
            euler = MomentSolver(p.dx, eps=1e-6).solve(*state, t_end=0.05)[:3]
            differences.append(max(_relative(e, k) for e, k in zip(euler, kinetic, strict=True)))
        self.assertLess(differences[-1], 3e-3)
        self.assertLess(differences[2], 0.5 * differences[1])
        self.assertLess(differences[1], 0.5 * differences[0])
        # At eps = 1 the kinetic solution is far from Euler's (the check above can fail).
        p = BGK1D(eps=1.0, num_x=128, v_max=7.0, num_v=48)
        state = _smooth(p, 0.3)
        kinetic = p.primitives(p.solve(p.maxwellian(*state), 0.05))
        euler = MomentSolver(p.dx, eps=1.0).solve(*state, t_end=0.05)[:3]
        self.assertGreater(_relative(euler[2], kinetic[2]), 5 * differences[-1])

    def test_bad_input(self):
        p = BGK1D(num_x=8)
        with self.assertRaisesRegex(ValueError, "Density must be positive"):
            p.maxwellian(np.array([1.0, -0.1] * 4), 0.0, 1.0)
        with self.assertRaisesRegex(ValueError, "Temperature must be positive"):
            p.maxwellian(1.0, 0.0, np.array([1.0, -1.0] * 4))
        for eps in (0.0, -1.0, float("nan")):
            with self.assertRaisesRegex(ValueError, "eps"):
                BGK1D(eps=eps)
        with self.assertRaisesRegex(TypeError, "eps"):
            BGK1D(eps="0.1")
        with self.assertRaisesRegex(ValueError, "Velocity grid too narrow.*v_max=3"):
            BGK1D(v_max=3.0, num_x=8).maxwellian(1.0, 0.5, 1.0)
        with self.assertRaisesRegex(ValueError, "too coarse"):
            BGK1D(v_max=8.0, num_v=16, num_x=8).maxwellian(1.0, 0.0, 0.3)
        f = p.maxwellian(1.0, 0.0, 1.0)
        f[:, -1] = 0.01  # mass at the edge of the grid
        with self.assertRaisesRegex(ValueError, "Velocity grid too narrow for `f`"):
            p.solve(f, 0.01)
        with self.assertRaisesRegex(ValueError, "shape"):
            p.solve(np.ones((3, 3)), 0.01)
        with self.assertRaisesRegex(ValueError, "t_end"):
            p.solve(p.maxwellian(1.0, 0.0, 1.0), -1.0)
        with self.assertRaisesRegex(ValueError, "num_v"):
            BGK1D(num_v=4)
        with self.assertRaisesRegex(ValueError, "eps"):
            MomentSolver(0.1, eps=0.0)


class MomentSolverTest(TestCase):
    def _mirror(self, closure):
        # Reflection x -> -x on cell values (cell i <-> cell n-1-i), v -> -v on the state.
        K = closure.num_moments
        sign = np.concatenate([[1.0, -1.0, 1.0], np.ones(closure.num_even),
                               -np.ones(K - closure.num_even)])
        return sign

    def test_conservation_to_round_off(self):
        K = 4
        closure = _random_closure(K).numpy_closure()
        p = BGK1D(num_x=40)
        rho, u, T = _smooth(p, 0.3)
        rng = np.random.default_rng(1)
        W = closure.w_maxwell + 0.01 * rng.normal(size=(40, K))
        for c, w0 in ((None, None), (closure, W)):
            solver = MomentSolver(p.dx, closure=c, eps=0.05, speed_factor=3.0)
            Q0 = to_conserved(rho, u, T, np.zeros((40, 0)) if w0 is None else w0)[:, :3]
            r, uu, TT, _ = solver.solve(rho, u, T, w0, t_end=0.05)
            Q = to_conserved(r, uu, TT, np.zeros((40, 0)))[:, :3]
            scale = np.array([rho.sum(), (rho * (np.abs(u) + np.sqrt(T))).sum(),
                              Q0[:, 2].sum()])
            np.testing.assert_array_less(np.abs(Q.sum(0) - Q0.sum(0)) / scale, 1e-13)
            self.assertGreater(np.abs(r - rho).max(), 1e-3)

    def test_reflection_symmetry_of_fluxes_and_of_the_solution(self):
        K = 4
        keras_closure = _random_closure(K)
        closure = keras_closure.numpy_closure()
        sign = self._mirror(keras_closure)
        rng = np.random.default_rng(2)
        n = 30
        rho, T = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
        u, W = rng.normal(size=n), closure.w_maxwell + 0.1 * rng.normal(size=(n, K))
        flux, coefficients = physical_flux(closure, rho, u, T, W, 0.1)
        Wm = W * sign[3:]
        flux_m, coefficients_m = physical_flux(closure, rho, -u, T, Wm, 0.1)
        # F(P Q) = -P F(Q); the source coefficients have the parity of their integrands.
        np.testing.assert_allclose(flux_m, -sign * flux, rtol=1e-12, atol=1e-13)
        parity = output_parity(K)[1 + K:].reshape(3, K)
        np.testing.assert_allclose(coefficients_m, parity * coefficients, rtol=1e-12,
                                   atol=1e-13)
        self.assertGreater(np.abs(flux[:, 2] - flux_m[:, 2]).max(), 1e-3)  # not trivially even
        # Whole solution of a mirrored initial state is the mirrored solution.
        p = BGK1D(num_x=n)
        r0, u0, T0 = _smooth(p, 0.3)
        W0 = closure.w_maxwell + 0.01 * rng.normal(size=(n, K))
        solver = MomentSolver(p.dx, closure=closure, eps=0.1, speed_factor=3.0)
        a = solver.solve(r0, u0, T0, W0, t_end=0.03)
        b = solver.solve(r0[::-1], -u0[::-1], T0[::-1], (W0 * sign[3:])[::-1], t_end=0.03)
        np.testing.assert_allclose(b[0][::-1], a[0], rtol=1e-11)
        np.testing.assert_allclose(b[1][::-1], -a[1], atol=1e-11)
        np.testing.assert_allclose(b[2][::-1], a[2], rtol=1e-11)
        np.testing.assert_allclose(b[3][::-1], a[3] * sign[3:], atol=1e-11)

    def test_relaxation_speed_factor_limits(self):
        c = [relaxation_speed_factor(eps, 0.01, frozen=3.0) for eps in (1e-9, 1e-3, 0.01, 1e4)]
        self.assertAlmostEqual(c[0], np.sqrt(3.0), places=6)
        self.assertAlmostEqual(c[2], 0.5 * (np.sqrt(3.0) + 3.0), places=12)
        self.assertAlmostEqual(c[3], 3.0, places=5)
        self.assertTrue(np.all(np.diff(c) > 0))
        with self.assertRaisesRegex(ValueError, "dx"):
            relaxation_speed_factor(0.1, 0.0)

    def test_bad_input(self):
        solver = MomentSolver(0.1)
        with self.assertRaisesRegex(ValueError, "Density"):
            solver.solve(np.array([1.0, -1.0]), np.zeros(2), np.ones(2))
        with self.assertRaisesRegex(ValueError, "Temperature"):
            solver.solve(np.ones(2), np.zeros(2), np.array([1.0, 0.0]))
        with self.assertRaisesRegex(ValueError, "`W` must have shape"):
            MomentSolver(0.1, closure=_random_closure(2).numpy_closure()).solve(
                np.ones(4), np.zeros(4), np.ones(4), np.zeros((4, 3)))


class KineticDataTest(TestCase):
    def test_generates_caches_and_reloads(self):
        directory = self.get_temp_dir()
        kwargs = {"num_runs": 4, "num_x": 16, "num_v": 32, "v_max": 7.0, "t_end": 0.02,
                  "num_snapshots": 2, "seed": 3, "sod_fraction": 0.5}
        old = os.environ.get("MLCMK_CACHE_DIR")
        os.environ["MLCMK_CACHE_DIR"] = directory
        try:
            data = generate_kinetic_data(**kwargs)
        finally:
            if old is None:
                del os.environ["MLCMK_CACHE_DIR"]
            else:
                os.environ["MLCMK_CACHE_DIR"] = old
        self.assertTrue(data["path"].startswith(os.path.join(directory, "kinetic")))
        self.assertEqual(data["f"].shape, (4, 2, 16, 32))
        self.assertEqual(data["f_next"].shape, (4, 2, 16, 32))
        self.assertTrue(np.all((data["eps"] >= 1e-3) & (data["eps"] <= 10)))
        mtime = os.path.getmtime(data["path"])
        again = generate_kinetic_data(cache_dir=os.path.join(directory, "kinetic"), **kwargs)
        self.assertEqual(again["path"], data["path"])
        self.assertEqual(os.path.getmtime(again["path"]), mtime)
        np.testing.assert_array_equal(again["f"], data["f"])
        # Snapshots conserve the moments of the initial data.
        grid = VelocityGrid(7.0, 32)
        np.testing.assert_allclose(grid.moments(data["f"][:, -1]).sum(1),
                                   grid.moments(data["f0"]).sum(1), rtol=1e-12, atol=1e-13)
        # A different seed gives different data in another file.
        other = generate_kinetic_data(cache_dir=directory, **{**kwargs, "seed": 4})
        self.assertNotEqual(other["path"], data["path"])
        with pytest.raises(ValueError, match="eps_range"):
            generate_kinetic_data(cache_dir=directory, **{**kwargs, "eps_range": (0.0, 1.0)})
