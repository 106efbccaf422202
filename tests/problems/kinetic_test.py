"""BGK solver, discrete Maxwellian, moment solver and data generator: exact properties."""

import gc
import itertools
import os
import warnings
import weakref
from unittest import mock

import numpy as np
import pytest

from mlcmk.models.moment_closure import MomentClosure, output_parity
from mlcmk.problems import build_problem, list_problems
from mlcmk.problems.kinetic import BGK1D, VelocityGrid, VelocityGrid3D, discrete_maxwellian
from mlcmk.problems.kinetic.bgk import (
    _COMPILED_BGK,
    SLOPE_LIMITERS,
    _compiled_bgk_solve,
    conserved_from_primitive,
    periodic_shift,
    slope_limiter,
)
from mlcmk.problems.kinetic.data import (
    generate_kinetic_data,
    initial_state,
    merge_kinetic_data,
    parse_cases,
    select_kinetic_runs,
)
from mlcmk.problems.kinetic.moment_solver import (
    NUMERICAL_FLUXES,
    EulerClosure,
    MomentSolver,
    characteristic_speeds,
    compiled_moment_solve,
    maxwellian_abs_moments,
    moment_rate,
    physical_flux,
    quasilinear_matrix,
    relaxation_speed_factor,
    to_conserved,
    to_primitive,
)
from mlcmk.testing import TestCase
from mlcmk.training.moment_closure import compare_models


def _smooth(p, amplitude=0.2):
    x = 2 * np.pi * p.x / p.length
    return (1 + amplitude * np.sin(x), amplitude * np.cos(x), 1 + amplitude * np.sin(x + 1))


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _smooth_euler_errors(schemes, cells=(25, 50)):
    """Relative errors of Euler solves of a smooth flow (before any shock forms) with each
    `MomentSolver` keyword set of `schemes` (name -> kwargs), cell averages against a 32x
    finer solve: `{(cells, name): error}`."""
    fine = BGK1D(num_x=800)
    Q_fine = to_conserved(*_smooth(fine), np.zeros((800, 0)))
    reference = MomentSolver(fine.dx, limiter="mc").solve(*_smooth(fine), t_end=0.05)
    reference = to_conserved(*reference[:3], np.zeros((800, 0)))
    errors = {}
    for n, (name, kwargs) in itertools.product(cells, schemes.items()):
        rho, u, T = to_primitive(Q_fine.reshape(n, -1, 3).mean(axis=1))[:3]
        solution = MomentSolver(1.0 / n, **kwargs).solve(rho, u, T, t_end=0.05)
        errors[n, name] = _relative(to_conserved(*solution[:3], np.zeros((n, 0))),
                                    reference.reshape(n, -1, 3).mean(axis=1))
    return errors


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

    def test_newton_iteration_that_does_not_converge_is_an_error(self):
        # A tolerance of 0 cannot be met: both the NumPy iteration and the compiled solve's
        # report it with the same message instead of returning an unconverged Maxwellian.
        p = BGK1D(eps=0.1, num_x=11, num_v=40, v_max=7.0)  # a grid no other test compiles
        f0 = p.maxwellian(*_smooth(p, 0.3))
        with self.assertRaisesRegex(ValueError, r"did not converge \(relative moment error"):
            discrete_maxwellian(p.grid, p.moments(f0), tol=0.0, max_iterations=2)
        key = (p.grid.v_max, p.grid.num_v, p.num_x, p.dx)
        self.addCleanup(_COMPILED_BGK.pop, key, None)
        _compiled_bgk_solve(p, tol=0.0, max_iterations=2)  # cached for this grid
        with self.assertRaisesRegex(ValueError, "did not converge .*above the tolerance"):
            p.solve(f0, 0.01, jit_compile=True)

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

    def test_compiled_solve_equals_the_numpy_solve(self):
        for eps in (1e-3, 5.0):
            p = BGK1D(eps=eps, num_x=40, num_v=48, v_max=7.0)
            for f0 in (p.maxwellian(*_smooth(p, 0.3)), p.maxwellian(*p.sod_initial())):
                expected = p.solve(f0, 0.05)
                np.testing.assert_allclose(p.solve(f0, 0.05, jit_compile=True), expected,
                                           rtol=1e-13, atol=1e-14)
                self.assertGreater(np.abs(expected - f0).max(), 1e-3)
        # One program per grid, whatever eps and t_end.
        self.assertIs(_compiled_bgk_solve(BGK1D(eps=0.1, num_x=40, num_v=48, v_max=7.0)),
                      _compiled_bgk_solve(p))
        self.assertIsNot(_compiled_bgk_solve(BGK1D(eps=5.0, num_x=20, num_v=48, v_max=7.0)),
                         _compiled_bgk_solve(p))
        # Snapshots and next states: one program call per interval and per next state.
        expected = p.solve(f0, 0.05, num_snapshots=3, return_next=True)
        compiled = p.solve(f0, 0.05, num_snapshots=3, return_next=True, jit_compile=True)
        for a, b in zip(compiled, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
        self.assertGreater(np.abs(expected[2] - expected[1]).max(), 1e-6)
        p3 = BGK1D(num_x=8, num_v=32, velocity_dims=3, reduced=True)
        with self.assertRaisesRegex(ValueError, "needs velocity_dims=1; received velocity_dims=3"):
            p3.solve(p3.maxwellian(*_smooth(p3)), 0.01, jit_compile=True)
        with self.assertRaisesRegex(TypeError, "`jit_compile` must be a bool.*1"):
            p.solve(f0, 0.05, jit_compile=1)

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


class BGK3DTest(TestCase):
    """`velocity_dims=3`: the monatomic gas on a tensor velocity grid."""

    def test_maxwellian_matches_five_moments_to_round_off(self):
        grid = VelocityGrid3D(7.0, 22)
        rng = np.random.default_rng(1)
        rho, T = rng.uniform(0.2, 3, 20), rng.uniform(1.0, 2.0, 20)
        u = rng.uniform(-0.8, 0.8, (20, 3))
        U = np.concatenate([rho[:, None], rho[:, None] * u,
                            (0.5 * rho * (np.sum(u**2, 1) + 3 * T))[:, None]], axis=1)
        M = grid.maxwellian(U)
        np.testing.assert_allclose(grid.moments(M), U, rtol=1e-12, atol=1e-13)
        # The continuous Maxwellian sampled on this coarse grid misses them.
        sampled = (rho[:, None] / (2 * np.pi * T[:, None]) ** 1.5 * np.exp(
            -np.sum((grid.nodes[None] - u[:, None]) ** 2, -1) / (2 * T[:, None])))
        self.assertGreater(np.max(np.abs(grid.moments(sampled) - U)), 1e-9)
        rho2, u2, T2 = grid.primitives(U)
        np.testing.assert_allclose((rho2, u2, T2), (rho, u[:, 0], T), rtol=1e-13)

    def test_conservation_and_steady_state(self):
        for reduced, shape in ((False, (12, 28**3)), (True, (12, 56))):
            p = BGK1D(eps=0.05, num_x=12, v_max=7.0, num_v=28, velocity_dims=3, reduced=reduced)
            f0 = p.maxwellian(*_smooth(p, 0.3))
            self.assertEqual(f0.shape, shape)
            f = p.solve(f0, 0.05)
            U0, U = p.moments(f0).sum(0), p.moments(f).sum(0)
            np.testing.assert_array_less(np.abs(U - U0) / np.maximum(U0[0], np.abs(U0)), 1e-13)
            self.assertGreater(np.abs(f - f0).max(), 1e-4)
            uniform = p.maxwellian(1.2, 0.3, 1.2)
            np.testing.assert_allclose(p.solve(uniform, 0.02), uniform, rtol=0, atol=1e-14)

    def test_reduced_grid_agrees_with_the_tensor_grid_under_refinement(self):
        differences = []
        for n in (12, 24):
            kw = dict(eps=0.1, num_x=n, v_max=7.0, num_v=28, velocity_dims=3)
            tensor, reduced = BGK1D(**kw), BGK1D(**kw, reduced=True)
            a = tensor.primitives(tensor.solve(tensor.maxwellian(*_smooth(tensor, 0.3)), 0.05))
            b = reduced.primitives(reduced.solve(reduced.maxwellian(*_smooth(reduced, 0.3)),
                                                 0.05))
            differences.append(max(_relative(x, y) for x, y in zip(b, a, strict=True)))
        self.assertLess(differences[1], 0.5 * differences[0])
        self.assertLess(differences[1], 0.01)
        # Same x-moments, different gas: the 1-D-velocity solution is far off.
        one = BGK1D(eps=0.1, num_x=24, v_max=7.0, num_v=28)
        c = one.primitives(one.solve(one.maxwellian(*_smooth(one, 0.3)), 0.05))
        self.assertGreater(max(_relative(x, y) for x, y in zip(c, a, strict=True)),
                           10 * differences[1])

    def test_free_streaming_marginal_equals_the_one_dimensional_solve(self):
        # f0 = g0(x, v_x) phi(v_y) phi(v_z): without collisions (eps huge) the scheme moves each
        # (v_y, v_z) plane like the 1-D scheme (minmod is positively homogeneous), so the
        # marginal of the 3-D solution is the 1-D solution of g0 to round-off.
        p1 = BGK1D(eps=1e12, num_x=24, v_max=7.0, num_v=26)
        p3 = BGK1D(eps=1e12, num_x=24, v_max=7.0, num_v=26, velocity_dims=3)
        g0 = p1.maxwellian(*_smooth(p1, 0.25))
        phi = np.exp(-p3.grid.axis**2 / 2.4)
        f0 = (g0[:, :, None, None] * phi[None, None, :, None] * phi[None, None, None, :])
        f0 = f0.reshape(24, -1) / (phi.sum() * p3.grid.dv) ** 2
        g = p1.solve(g0, 0.1)
        f = p3.solve(f0, 0.1).reshape(24, 26, 26, 26)
        marginal = f.sum(axis=(2, 3)) * p3.grid.dv**2
        np.testing.assert_allclose(marginal, g, rtol=0, atol=1e-12 * g.max())
        self.assertGreater(np.abs(g - g0).max(), 1e-2)

    def test_homogeneous_relaxation_is_exact(self):
        for dims, num_v, reduced in ((1, 40, False), (3, 24, False), (3, 40, True)):
            p = BGK1D(eps=0.03, num_x=4, v_max=7.5, num_v=num_v, velocity_dims=dims,
                      reduced=reduced)
            f0 = 0.5 * (p.maxwellian(1.0, 0.5, 1.0) + p.maxwellian(1.0, -0.5, 1.2))
            M = p.grid.maxwellian(p.moments(f0))
            f = p.solve(f0, 0.05)
            np.testing.assert_allclose(f, M + (f0 - M) * np.exp(-0.05 / 0.03), rtol=0,
                                       atol=1e-13 * f0.max())

    def test_small_eps_sound_speed_is_the_monatomic_one(self):
        # A small isentropic standing wave at eps -> 0: rho - 1 = d cos(kx) cos(c k t) with
        # c = sqrt(gamma T): gamma = 5/3 with three velocity dimensions, 3 with one.
        for dims, num_v, gamma in ((3, 20, 5.0 / 3.0), (1, 40, 3.0)):
            p = BGK1D(eps=1e-5, num_x=32, v_max=6.0, num_v=num_v, velocity_dims=dims)
            d, k = 1e-3, 2 * np.pi
            c = np.cos(k * p.x)
            f = p.solve(p.maxwellian(1 + d * c, 0.0, 1 + (gamma - 1) * d * c), 0.1)
            amplitude = 2 * np.mean((p.primitives(f)[0] - 1) * c) / d
            self.assertAlmostEqual(amplitude, np.cos(np.sqrt(gamma) * k * 0.1), delta=0.006)
        self.assertGreater(abs(np.cos(np.sqrt(3.0) * k * 0.1)
                               - np.cos(np.sqrt(5.0 / 3.0) * k * 0.1)), 0.2)

    def test_small_eps_reproduces_monatomic_euler(self):
        def state(p):
            x = 2 * np.pi * p.x / p.length
            return 1 + 0.2 * np.sin(x), 0.2 * np.cos(x), 1.25 + 0.2 * np.sin(x + 1)

        for reduced, num_v in ((False, 22), (True, 48)):
            differences = []
            for n in (16, 32, 64):
                p = BGK1D(eps=1e-6, num_x=n, v_max=7.0, num_v=num_v, velocity_dims=3,
                          reduced=reduced)
                kinetic = p.primitives(p.solve(p.maxwellian(*state(p)), 0.05))
                euler = MomentSolver(p.dx, closure=EulerClosure(velocity_dims=3),
                                     eps=1e-6).solve(*state(p), t_end=0.05)[:3]
                differences.append(max(_relative(e, k) for e, k in
                                       zip(euler, kinetic, strict=True)))
            self.assertLess(differences[2], 0.5 * differences[1])
            self.assertLess(differences[1], 0.5 * differences[0])
            # The gamma = 3 Euler system is another gas (the check above can fail).
            gamma3 = MomentSolver(p.dx, eps=1e-6).solve(*state(p), t_end=0.05)[:3]
            self.assertGreater(max(_relative(e, k) for e, k in
                                   zip(gamma3, kinetic, strict=True)), 10 * differences[-1])

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "velocity_dims.*received velocity_dims=2"):
            BGK1D(velocity_dims=2)
        with self.assertRaisesRegex(ValueError, "velocity_dims.*received velocity_dims=2"):
            EulerClosure(velocity_dims=2)
        with self.assertRaisesRegex(ValueError, "reduced.*True only with velocity_dims=3"):
            BGK1D(reduced=True)
        with self.assertRaisesRegex(ValueError, r"2 num_v=40 \(g, then h\)"):
            BGK1D(num_v=20, velocity_dims=3, reduced=True).moments(np.ones((3, 20)))
        p = BGK1D(num_x=4, v_max=6.0, num_v=20, velocity_dims=3)
        with self.assertRaisesRegex(ValueError, "too coarse"):
            p.maxwellian(1.0, 0.0, 0.5)
        with self.assertRaisesRegex(ValueError, "too narrow.*v_max=4"):
            BGK1D(num_x=4, v_max=4.0, num_v=16, velocity_dims=3).maxwellian(1.0, 0.0, 1.0)
        f = p.maxwellian(1.0, 0.0, 1.0).reshape(4, 20, 20, 20)
        f[:, 10, 10, -1] = 0.01  # mass on a transverse face of the velocity cube
        with self.assertRaisesRegex(ValueError, "too narrow for `f`"):
            p.solve(f.reshape(4, -1), 0.01)
        with self.assertRaisesRegex(ValueError, r"shape \(num_x, num_nodes\)=\(4, 8000\)"):
            p.solve(np.ones((4, 16)), 0.01)
        with self.assertRaisesRegex(ValueError, "velocity_dims=1"):
            compare_models(None, p, p.maxwellian(1.0, 0.0, 1.0), 0.01)


class _FrozenMaxwellClosure:
    """K moments carried along with the Maxwellian's fluxes and coefficients (q = 0)."""

    num_moments = 2
    num_even = 1
    w_maxwell = np.array([0.7, 0.0])

    def __call__(self, rho, T, W, eps):
        n = np.shape(rho)[0]
        return (np.zeros(n), np.tile([0.3, -0.2], (n, 1)),
                np.tile([[0.5, 0.1], [0.2, -0.4], [1.1, 0.3]], (n, 1, 1)))


class CharacteristicSpeedsTest(TestCase):
    def test_euler_and_frozen_maxwellian_speeds_are_exact(self):
        rho, u, T = np.array([1.0, 0.3]), np.array([0.2, -0.5]), np.array([1.3, 0.6])
        for dims, gamma in ((1, 3.0), (3, 5.0 / 3.0)):
            Q = to_conserved(rho, u, T, np.zeros((2, 0)), dims=dims)
            speeds = characteristic_speeds(EulerClosure(velocity_dims=dims), Q, eps=0.1)
            c = np.sqrt(gamma * T)
            np.testing.assert_allclose(speeds, np.stack([u - c, u, u + c], -1), atol=1e-8)
        # Generalised moments riding on the Euler system (the first three rows do not see W):
        # the W equations add u, K times.
        W = np.array([[0.7, 0.1], [0.5, -0.2]])
        speeds = characteristic_speeds(_FrozenMaxwellClosure(), to_conserved(rho, u, T, W), 1.0)
        c = np.sqrt(3.0 * T)
        np.testing.assert_allclose(speeds, np.stack([u - c, u, u, u, u + c], -1), atol=1e-6)

    def test_quasilinear_matrix_is_the_linearised_solver(self):
        # A small sine about a constant state: the solver's rate is -A dQ/dx plus numerical
        # diffusion in phase with the sine; the cosine component is -A v k delta.
        K = 4
        closure = _random_closure(K, seed=3).numpy_closure()
        rng = np.random.default_rng(4)
        W0 = closure.w_maxwell + 0.1 * rng.normal(size=K)
        Q0 = to_conserved(np.array([0.9]), np.array([0.3]), np.array([1.2]), W0[None])[0]
        direction = rng.normal(size=3 + K)
        n, delta, eps = 800, 1e-5, 0.2
        x = (np.arange(n) + 0.5) / n
        Q = Q0 + delta * np.sin(2 * np.pi * x)[:, None] * direction
        rate = moment_rate(np, closure, Q, 1.0 / n, eps, 3.0)
        rate -= moment_rate(np, closure, np.tile(Q0, (n, 1)), 1.0 / n, eps, 3.0)
        cosine = (rate * np.cos(2 * np.pi * x)[:, None]).sum(0) / (n / 2)
        A = quasilinear_matrix(closure, Q0[None], eps)[0]
        expected = -A @ direction * 2 * np.pi * delta
        np.testing.assert_allclose(cosine, expected, atol=5e-5 * np.abs(expected).max())
        self.assertGreater(np.abs(A[3:, :3]).max(), 0.1)  # the source terms enter
        speeds = characteristic_speeds(closure, Q0[None], eps)
        np.testing.assert_allclose(np.sort_complex(speeds[0]), np.sort_complex(
            np.linalg.eigvals(A)), atol=1e-12)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, r"shape \(n, 5\)"):
            quasilinear_matrix(_FrozenMaxwellClosure(), np.ones((2, 3)), 0.1)
        Q = to_conserved(np.array([1.0]), np.array([0.0]), np.array([1.0]), np.zeros((1, 2)))
        with self.assertRaisesRegex(ValueError, "eps"):
            characteristic_speeds(_FrozenMaxwellClosure(), Q, 0.0)


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
        for (c, w0), limiter, flux in itertools.product(((None, None), (closure, W)),
                                                        SLOPE_LIMITERS, NUMERICAL_FLUXES):
            solver = MomentSolver(p.dx, closure=c, eps=0.05, speed_factor=3.0, limiter=limiter,
                                  flux=flux)
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
        for flux in NUMERICAL_FLUXES:
            solver = MomentSolver(p.dx, closure=closure, eps=0.1, speed_factor=3.0, flux=flux)
            a = solver.solve(r0, u0, T0, W0, t_end=0.03)
            b = solver.solve(r0[::-1], -u0[::-1], T0[::-1], (W0 * sign[3:])[::-1], t_end=0.03)
            np.testing.assert_allclose(b[0][::-1], a[0], rtol=1e-11)
            np.testing.assert_allclose(b[1][::-1], -a[1], atol=1e-11)
            np.testing.assert_allclose(b[2][::-1], a[2], rtol=1e-11)
            np.testing.assert_allclose(b[3][::-1], a[3] * sign[3:], atol=1e-11)

    def test_compiled_solve_equals_the_numpy_solve(self):
        p = BGK1D(num_x=40)
        rho, u, T = _smooth(p, 0.3)
        K = 4
        closure = _random_closure(K).numpy_closure()
        W = closure.w_maxwell + 0.01 * np.random.default_rng(3).normal(size=(40, K))
        cases = [(EulerClosure(), None, "minmod", 0.05, "lax_friedrichs"),
                 (EulerClosure(3), None, "mc", 2.0, "lax_friedrichs"),
                 (EulerClosure(3), None, "minmod", 0.05, "kinetic")]
        cases += [(closure, W, limiter, eps, flux) for limiter, eps, flux in (
            ("minmod", 1e-3, "lax_friedrichs"), ("van_leer", 0.05, "lax_friedrichs"),
            ("mc", 5.0, "lax_friedrichs"), ("minmod", 0.5, "kinetic"))]
        for c, w0, limiter, eps, flux in cases:
            solver = MomentSolver(p.dx, closure=c, eps=eps, speed_factor=3.0, limiter=limiter,
                                  flux=flux)
            expected = solver.solve(rho, u, T, w0, t_end=0.05)
            compiled = solver.solve(rho, u, T, w0, t_end=0.05, jit_compile=True)
            for a, b in zip(compiled, expected, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
            self.assertGreater(np.abs(expected[1] - u).max(), 1e-3)
        # One program per closure and limiter, reused for other eps, dx, t_end and cfl; one
        # for every Euler closure of a gas (a solver's default included).
        program = compiled_moment_solve(closure, "mc")
        self.assertIs(compiled_moment_solve(closure, "mc"), program)
        self.assertIsNot(compiled_moment_solve(closure, "minmod"), program)
        self.assertIsNot(compiled_moment_solve(closure, "mc", "kinetic"), program)
        euler = compiled_moment_solve(EulerClosure(), "minmod")
        del cases, c  # (no other EulerClosure alive: instances are not what keeps the program)
        self.assertIs(compiled_moment_solve(MomentSolver(p.dx).closure, "minmod"), euler)
        self.assertIsNot(compiled_moment_solve(EulerClosure(3), "minmod"), euler)
        # A snapshot's programs go with it (nothing they hold keeps it alive).
        snapshot = _random_closure(K).numpy_closure()
        compiled_moment_solve(snapshot, "minmod")
        alive = weakref.ref(snapshot)
        del snapshot
        gc.collect()
        self.assertIsNone(alive())
        solver = MomentSolver(2 * p.dx, closure=closure, eps=0.3, cfl=0.2, limiter="mc")
        for a, b in zip(solver.solve(rho, u, T, W, t_end=0.02, jit_compile=True),
                        solver.solve(rho, u, T, W, t_end=0.02), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
        # The network in float32: the compiled solve keeps its precision.
        single = _random_closure(K).numpy_closure("float32")
        solver = MomentSolver(p.dx, closure=single, eps=0.05, speed_factor=3.0)
        compiled = solver.solve(rho, u, T, W, t_end=0.05, jit_compile=True)
        double = MomentSolver(p.dx, closure=closure, eps=0.05, speed_factor=3.0).solve(
            rho, u, T, W, t_end=0.05)
        for a, b in zip(compiled, solver.solve(rho, u, T, W, t_end=0.05), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        self.assertGreater(np.abs(compiled[3] - double[3]).max(), 1e-12)

    def test_compiled_solve_reports_a_breakdown_and_bad_input(self):
        # Far above the CFL limit the solution blows up: both loops stop at the same step.
        p = BGK1D(num_x=40)
        rho, u, T = _smooth(p, 0.5)
        solver = MomentSolver(p.dx, eps=0.1, cfl=8.0)
        messages = []
        for jit_compile in (False, True):
            with self.assertRaisesRegex(FloatingPointError, "broke down.*moment solution at t="):
                # (and no NumPy RuntimeWarning on the way: it would be an error here)
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)
                    try:
                        solver.solve(rho, u, T, t_end=0.5, jit_compile=jit_compile)
                    except FloatingPointError as err:
                        messages.append(str(err))
                        raise
        self.assertEqual(messages[0], messages[1])
        with self.assertRaisesRegex(TypeError, "`jit_compile` must be a bool.*'yes'"):
            solver.solve(rho, u, T, t_end=0.1, jit_compile="yes")
        with self.assertRaisesRegex(TypeError, "tensorflow.*_FrozenMaxwellClosure"):
            MomentSolver(p.dx, closure=_FrozenMaxwellClosure()).solve(
                rho, u, T, np.zeros((40, 2)) + [0.7, 0.0], t_end=0.1, jit_compile=True)

    def test_periodic_shift_is_roll(self):
        import tensorflow.experimental.numpy as tnp

        rng = np.random.default_rng(5)
        for shape in ((7,), (5, 3), (2, 6, 4)):
            a = rng.normal(size=shape)
            for axis in range(-len(shape), len(shape)):
                n = shape[axis]
                for shift in (1, -1, 2, -3, 0, n, -n - 1):
                    expected = np.roll(a, shift, axis=axis)
                    np.testing.assert_array_equal(periodic_shift(a, shift, axis), expected)
                    np.testing.assert_array_equal(
                        np.asarray(periodic_shift(tnp.asarray(a), shift, axis, tnp)), expected)
        a = np.arange(4.0)
        shifted = periodic_shift(a, 0, 0)
        shifted[0] = 9.0  # a new array, also for a zero shift
        self.assertEqual(a[0], 0.0)

    def test_slope_limiters(self):
        import tensorflow.experimental.numpy as tnp

        rng = np.random.default_rng(4)
        a, b = rng.normal(size=(2, 1000))
        values = {}
        for name, limiter in SLOPE_LIMITERS.items():
            s = limiter(a, b)
            values[name] = s
            np.testing.assert_array_equal(s[a * b <= 0], 0.0)  # no slope at an extremum
            same = a * b > 0
            np.testing.assert_array_equal(np.sign(s[same]), np.sign(a[same]))
            np.testing.assert_allclose(s, limiter(b, a), rtol=1e-15)  # symmetric
            np.testing.assert_allclose(limiter(a, a), a, rtol=1e-15)  # exact on a line
            # TVD region of second-order slopes: |s| <= 2 min(|a|, |b|).
            np.testing.assert_array_less(np.abs(s), 2 * np.minimum(np.abs(a), np.abs(b)) + 1e-15)
            np.testing.assert_allclose(np.asarray(limiter(tnp.asarray(a), tnp.asarray(b), tnp)),
                                       s, rtol=1e-14)
        # From the most diffusive to the least, strictly where the neighbours differ.
        same = (a * b > 0) & (np.abs(a - b) > 1e-3)
        for low, high in (("minmod", "van_leer"), ("van_leer", "mc")):
            np.testing.assert_array_less(np.abs(values[low][same]), np.abs(values[high][same]))
        np.testing.assert_allclose(SLOPE_LIMITERS["mc"](np.array([1.0]), np.array([3.0])), 2.0)
        np.testing.assert_allclose(SLOPE_LIMITERS["van_leer"](np.array([1.0]), np.array([3.0])),
                                   1.5)
        with self.assertRaisesRegex(ValueError, "`limiter`.*'superbee'"):
            slope_limiter("superbee")
        with self.assertRaisesRegex(ValueError, "`limiter`"):
            MomentSolver(0.1, limiter="superbee")
        with self.assertRaisesRegex(ValueError, r"`limiter`.*\['minmod'\]"):
            MomentSolver(0.1, limiter=["minmod"])

    def test_less_diffusive_limiters_converge_to_a_fine_euler_solution_faster(self):
        errors = _smooth_euler_errors({name: {"limiter": name} for name in SLOPE_LIMITERS})
        for limiter in SLOPE_LIMITERS:
            self.assertGreater(np.log2(errors[25, limiter] / errors[50, limiter]), 1.5, limiter)
        for n in (25, 50):
            self.assertLess(errors[n, "mc"], errors[n, "van_leer"])
            self.assertLess(errors[n, "van_leer"], 0.75 * errors[n, "minmod"])

    def test_kinetic_flux_dissipation_is_that_of_the_maxwellians(self):
        import tensorflow.experimental.numpy as tnp

        rng = np.random.default_rng(6)
        rho, u, T = rng.uniform(0.3, 2.0, 7), rng.normal(0.0, 1.5, 7), rng.uniform(0.2, 2.0, 7)
        u[0] = 0.0
        v = np.linspace(-40.0, 40.0, 400001)  # v = 0 on the grid: the kink of |v|

        def integral(weight, mean, temperature):
            gauss = np.exp(-(v - mean) ** 2 / (2 * temperature)) / np.sqrt(2 * np.pi
                                                                           * temperature)
            return np.trapezoid(weight * gauss, v)

        for dims in (1, 3):
            moments = maxwellian_abs_moments(np, rho, u, T, dims)
            for k in range(7):
                # The transverse velocities (mean 0) add (dims - 1) T / 2 to |v|^2 / 2.
                expected = rho[k] * np.array([
                    integral(np.abs(v), u[k], T[k]), integral(np.abs(v) * v, u[k], T[k]),
                    0.5 * integral(np.abs(v) * (v**2 + (dims - 1) * T[k]), u[k], T[k])])
                np.testing.assert_allclose(moments[k], expected, rtol=1e-8, atol=1e-12)
            np.testing.assert_allclose(
                np.asarray(maxwellian_abs_moments(tnp, *(tnp.asarray(a) for a in (rho, u, T)),
                                                  dims)), moments, rtol=1e-14)
        # At rest the mass dissipation is sqrt(2 / pi) sqrt(T) rho, the momentum's zero.
        np.testing.assert_allclose(moments[0, :2], [rho[0] * np.sqrt(2 * T[0] / np.pi), 0.0],
                                   rtol=1e-14, atol=1e-15)

    def test_a_uniform_w_stays_uniform_where_only_the_density_jumps(self):
        class Passive:
            """W carried with the flow, nothing else: q = 0, G = 0, no source terms."""

            num_moments, num_even, w_maxwell = 2, 1, np.array([0.7, 0.0])

            def __call__(self, rho, T, W, eps):
                n = np.shape(rho)[0]
                return np.zeros(n), np.zeros((n, 2)), np.zeros((n, 3, 2))

        # A density step at rest and uniform pressure (a contact): only numerical diffusion
        # acts, on rho and on rho W alike, so W = rho W / rho stays at its uniform value.
        n = 40
        rho = np.where(np.arange(n) < n // 2, 1.0, 0.25)
        W = np.tile(Passive.w_maxwell, (n, 1))
        for flux in NUMERICAL_FLUXES:
            r, _, _, w = MomentSolver(1.0 / n, closure=Passive(), eps=10.0, speed_factor=3.0,
                                      flux=flux).solve(rho, np.zeros(n), 1.0 / rho, W,
                                                       t_end=0.05)
            self.assertGreater(np.abs(r - rho).max(), 0.01, flux)  # the step was smeared
            np.testing.assert_allclose(w, W, rtol=0, atol=1e-13, err_msg=flux)

    def test_kinetic_flux_is_closer_to_the_kinetic_solver(self):
        # Smooth Euler flow: second order, and a smaller error than Lax–Friedrichs with
        # Euler's own sound speed.
        errors = _smooth_euler_errors({name: {"flux": name} for name in NUMERICAL_FLUXES})
        self.assertGreater(np.log2(errors[25, "kinetic"] / errors[50, "kinetic"]), 1.5)
        for n in (25, 50):
            self.assertLess(errors[n, "kinetic"], 0.9 * errors[n, "lax_friedrichs"])
        # At small eps the BGK solver is an upwind kinetic scheme for Euler: with the kinetic
        # flux the Euler solve of a Sod-type problem is nearer to it in density and temperature.
        p = BGK1D(eps=1e-4, num_x=100)
        state = initial_state(p, np.random.default_rng(1002), "sod")
        kinetic = p.primitives(p.solve(p.maxwellian(*state), 0.1))
        euler = {flux: MomentSolver(p.dx, eps=1e-4, flux=flux).solve(*state, t_end=0.1)
                 for flux in NUMERICAL_FLUXES}
        for field in (0, 2):
            self.assertLess(_relative(euler["kinetic"][field], kinetic[field]),
                            0.7 * _relative(euler["lax_friedrichs"][field], kinetic[field]))
        with self.assertRaisesRegex(ValueError, "`flux`.*'roe'"):
            MomentSolver(0.1, flux="roe")
        with self.assertRaisesRegex(ValueError, "`flux`.*'lax_friedrichs', 'kinetic'.*None"):
            moment_rate(np, EulerClosure(), np.ones((4, 3)), 0.1, 1.0, 3.0, flux=None)

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

    def test_failed_cache_write_leaves_no_file(self):
        # The cache file is written atomically: a crash while writing leaves neither a partial
        # file (which a later call would load as data) nor a temporary behind.
        directory = self.get_temp_dir()
        kwargs = {"num_runs": 1, "num_x": 8, "num_v": 32, "v_max": 7.0, "t_end": 0.01,
                  "num_snapshots": 1, "seed": 5, "cache_dir": directory}
        def partial_savez(file, **arrays):
            if isinstance(file, str):
                file = open(file, "wb")  # noqa: SIM115 - the crash leaves it as it is
            file.write(b"PK\x03\x04 partial")
            file.flush()
            raise OSError("disk full")

        with mock.patch("numpy.savez", side_effect=partial_savez):
            with pytest.raises(OSError, match="disk full"):
                generate_kinetic_data(**kwargs)
        self.assertEqual(os.listdir(directory), [])
        data = generate_kinetic_data(**kwargs)
        self.assertEqual(os.listdir(directory), [os.path.basename(data["path"])])

    def test_merge_keeps_each_run_with_its_own_eps_and_step(self):
        directory = self.get_temp_dir()
        kwargs = {"num_x": 8, "num_v": 32, "v_max": 7.0, "t_end": 0.01, "num_snapshots": 2,
                  "sod_fraction": 0.5, "cache_dir": directory}
        a = generate_kinetic_data(num_runs=2, seed=0, **kwargs)
        b = generate_kinetic_data(num_runs=3, seed=2, **kwargs)
        merged = merge_kinetic_data([a, b])
        self.assertEqual(merged["f"].shape, (5, 2, 8, 32))
        for name in ("f", "f_next", "f0", "eps", "dt", "is_sod"):
            np.testing.assert_array_equal(merged[name][:2], a[name])
            np.testing.assert_array_equal(merged[name][2:], b[name])
        np.testing.assert_array_equal(merged["v"], a["v"])
        self.assertEqual(merged["path"], [a["path"], b["path"]])
        # Runs of other seeds are other runs: none of seed 2's repeats one of seed 0's.
        self.assertFalse(np.isin(b["eps"], a["eps"]).any())
        with self.assertRaisesRegex(ValueError, "at least one"):
            merge_kinetic_data([])
        with self.assertRaisesRegex(ValueError, r"datasets\[1\]. has a different .v."):
            merge_kinetic_data([a, {**b, "v": b["v"] * 2}])
        with self.assertRaisesRegex(ValueError, r"datasets\[1\]. has a different .times."):
            merge_kinetic_data([a, {**b, "times": b["times"][:1]}])
        with self.assertRaisesRegex(ValueError, "has no f_next"):
            merge_kinetic_data([a, {k: v for k, v in b.items() if k != "f_next"}])

    def test_select_keeps_the_chosen_runs_whole_and_in_order(self):
        kwargs = {"num_x": 8, "num_v": 32, "v_max": 7.0, "t_end": 0.01, "num_snapshots": 2,
                  "sod_fraction": 0.5, "cache_dir": self.get_temp_dir()}
        data = generate_kinetic_data(num_runs=5, seed=0, **kwargs)
        mask = data["eps"] >= np.median(data["eps"])
        for runs in (mask, np.flatnonzero(mask)):
            picked = select_kinetic_runs(data, runs)
            for name in ("f", "f_next", "f0", "eps", "dt", "is_sod"):
                np.testing.assert_array_equal(picked[name], data[name][mask])
            for name in ("times", "v", "x"):
                np.testing.assert_array_equal(picked[name], data[name])
            self.assertEqual(picked["path"], data["path"])
        self.assertTrue((picked["eps"] >= np.median(data["eps"])).all())
        np.testing.assert_array_equal(select_kinetic_runs(data, [4, 0])["eps"],
                                      data["eps"][[4, 0]])
        with self.assertRaisesRegex(ValueError, r"shape \(5,\); received shape \(4,\)"):
            select_kinetic_runs(data, mask[:4])
        with self.assertRaisesRegex(ValueError, "from 0 to 5"):
            select_kinetic_runs(data, [0, 5])
        with self.assertRaisesRegex(ValueError, "must not repeat"):
            select_kinetic_runs(data, [1, 1])
        with self.assertRaisesRegex(ValueError, "selects no run of the 5"):
            select_kinetic_runs(data, data["eps"] > 100.0)
        with self.assertRaisesRegex(ValueError, "dtype float64"):
            select_kinetic_runs(data, [0.5])
        with self.assertRaisesRegex(ValueError, "has no f_next"):
            select_kinetic_runs({k: v for k, v in data.items() if k != "f_next"}, mask)

    def test_parse_cases(self):
        self.assertEqual(parse_cases("smooth:1000,sod:1002"), [("smooth", 1000), ("sod", 1002)])
        self.assertEqual(parse_cases(" sod:7 "), [("sod", 7)])
        for bad in ("smooth", "shock:1", "smooth:x", "smooth:1,", "smooth:-1"):
            with self.subTest(bad=bad), self.assertRaisesRegex(ValueError, "kind:seed"):
                parse_cases(bad)
