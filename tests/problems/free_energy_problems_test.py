"""Müller–Brown bath: exact free energy, forces, restrained-MD mean forces with error bars."""

import numpy as np
from scipy import integrate

from mlcmk.problems import build_problem, get_problem_class
from mlcmk.problems.free_energy import (
    MuellerBrownBath,
    block_average,
    mueller_brown,
    restrained_mean_force,
)
from mlcmk.testing import TestCase


class MuellerBrownBathTest(TestCase):
    def test_registered(self):
        self.assertIs(get_problem_class("mueller_brown"), MuellerBrownBath)
        self.assertIs(get_problem_class("muller-brown"), MuellerBrownBath)
        problem = build_problem({"name": "mueller_brown", "num_bath": 3})
        self.assertEqual(problem.dim, 5)
        self.assertEqual(type(problem).from_config(problem.get_config()).get_config(),
                         problem.get_config())

    def test_known_minima(self):
        # The three Müller–Brown minima (literature values, 3 decimals).
        for point, energy in (((-0.558, 1.442), -146.70), ((0.623, 0.028), -108.17),
                              ((-0.050, 0.467), -80.77)):
            v, g = mueller_brown(np.array(point))
            self.assertAlmostEqual(float(v), energy, delta=0.01)
            self.assertLess(np.abs(g).max(), 0.5)

    def test_gradients_match_finite_differences(self):
        problem = MuellerBrownBath(num_bath=4, seed=1)
        rng = np.random.default_rng(0)
        s = rng.uniform([-1.5, -0.3], [1.0, 2.0], (5, 2))
        q = problem.initial_positions(s, 2, rng).reshape(-1, problem.dim)
        h = 1e-6
        fd = np.stack([(problem.potential(q + h * e) - problem.potential(q - h * e)) / (2 * h)
                       for e in np.eye(problem.dim)], axis=-1)
        np.testing.assert_allclose(problem.gradient(q), fd, rtol=1e-6, atol=1e-5)
        fd_a = np.stack([-(problem.free_energy(s + h * e) - problem.free_energy(s - h * e))
                         / (2 * h) for e in np.eye(2)], axis=-1)
        np.testing.assert_allclose(problem.mean_force(s), fd_a, rtol=1e-6, atol=1e-6)

    def test_free_energy_is_the_bath_integral(self):
        # A(s1) - A(s2) = -kT log [ int exp(-beta U(s1, z)) dz / int exp(-beta U(s2, z)) dz ],
        # here by numerical quadrature over the one bath mode.
        problem = MuellerBrownBath(num_bath=1, beta=1.3, coupling=0.8, seed=2)
        s = np.array([[-0.5, 1.4], [0.6, 0.1], [0.0, 0.6], [-1.0, 1.0]])

        def log_z(si):
            c = float(si @ problem._a[0])
            u0 = problem.potential(np.array([*si, c]))

            def f(z):
                return np.exp(-problem.beta * (problem.potential(np.array([*si, z])) - u0))

            value, _ = integrate.quad(f, c - 2, c + 2, epsabs=0, epsrel=1e-12)
            return np.log(value) - problem.beta * u0

        numeric = np.array([-log_z(si) / problem.beta for si in s])
        exact = problem.free_energy(s)
        np.testing.assert_allclose(numeric - numeric[0], exact - exact[0], atol=1e-9)
        self.assertAlmostEqual(float(problem.free_energy(problem.grid(121).reshape(-1, 2)).min()),
                               0.0)

    def test_unknown_collective_variable(self):
        problem = MuellerBrownBath(num_bath=2)
        self.assertEqual(problem.cv_index("y"), 1)
        with self.assertRaisesRegex(ValueError, "Unknown collective variable 'phi'"):
            problem.cv_index("phi")
        with self.assertRaisesRegex(ValueError, "stiffness_modulation"):
            MuellerBrownBath(stiffness_modulation=1.0)
        with self.assertRaisesRegex(ValueError, "centers"):
            problem.restrained_mean_force(np.zeros((2, 3)))


class RestrainedMDTest(TestCase):
    def test_harmonic_mean_force_within_error_bar(self):
        # U = a/2 |s - m|^2 + k/2 (z - c.s)^2: A(s) = a/2 |s - m|^2 exactly, and the restrained
        # ensemble has <s> = (a m + kappa s0) / (a + kappa), so the measured mean force is
        # kappa a (m - s0) / (a + kappa) for any kappa.
        a, kappa, k, m = 40.0, 200.0, 300.0, np.array([0.3, -0.2])
        c = np.array([0.7, -0.4])

        def gradient(q):
            s, z = q[..., :2], q[..., 2]
            u = z - s @ c
            return np.concatenate([a * (s - m) - (k * u)[..., None] * c, (k * u)[..., None]],
                                  axis=-1)

        centers = np.random.default_rng(0).uniform(-1, 1, (24, 2))
        q0 = np.concatenate([np.repeat(centers[:, None], 8, axis=1),
                             np.repeat((centers @ c)[:, None, None], 8, axis=1)], axis=-1)
        result = restrained_mean_force(gradient, centers, q0, kappa=kappa, dt=1e-3,
                                       num_steps=4000, num_burnin=300, num_blocks=20, seed=5)
        exact = kappa * a * (m - centers) / (a + kappa)
        z = (result["mean_force"] - exact) / result["stderr"]
        self.assertLess(np.abs(z).max(), 4.5)
        # The error bars are right on average (chi^2 / 48, its 1e-4 quantiles ~ 0.4 and 1.9).
        self.assertTrue(0.4 < np.mean(z**2) < 2.0, np.mean(z**2))
        self.assertLess(result["stderr"].max(), 0.05 * np.abs(exact).mean())
        # A per-centre seed makes a centre's result independent of its batch.
        alone = restrained_mean_force(gradient, centers[3:4], q0[3:4], kappa=kappa, dt=1e-3,
                                      num_steps=500, num_burnin=10, seed=[[1, 3]])
        batch = restrained_mean_force(gradient, centers[:5], q0[:5], kappa=kappa, dt=1e-3,
                                      num_steps=500, num_burnin=10,
                                      seed=[[1, i] for i in range(5)])
        np.testing.assert_array_equal(alone["mean_force"][0], batch["mean_force"][3])

    def test_mueller_brown_mean_force_matches_smoothed_exact(self):
        problem = MuellerBrownBath(num_bath=6, seed=0)
        centers = np.array([[-0.5, 1.4], [0.6, 0.05], [0.0, 0.5], [-0.8, 0.6], [0.2, 0.3]])
        kappa = 1000.0
        result = problem.restrained_mean_force(centers, kappa=kappa, num_walkers=16,
                                               num_steps=2500, seed=[0, 1, 2, 3, 4])
        exact = problem.smoothed_mean_force(centers, kappa)
        z = (result["mean_force"] - exact) / result["stderr"]
        self.assertLess(np.abs(z).max(), 4.5, z)
        # The smoothed force tends to the exact one as kappa grows; at kappa = 1000 the gap is
        # well above the sampling error, so the MD result was compared with the right thing.
        stiff = np.abs(problem.smoothed_mean_force(centers, 1e6) - problem.mean_force(centers))
        self.assertLess(stiff.max(), 0.01)
        gap = np.abs(exact - problem.mean_force(centers))
        self.assertGreater(gap.max(), 3 * result["stderr"].max())

    def test_block_average_of_white_noise(self):
        x = np.random.default_rng(0).standard_normal((20000, 3))
        mean, stderr = block_average(x, 20)
        np.testing.assert_allclose(stderr, 1 / np.sqrt(20000), rtol=0.4)
        self.assertLess(np.abs(mean).max(), 4 / np.sqrt(20000))
        with self.assertRaisesRegex(ValueError, "num_blocks"):
            block_average(x, 1)

    def test_bad_input(self):
        grad = lambda q: q  # noqa: E731
        with self.assertRaisesRegex(ValueError, "kappa"):
            restrained_mean_force(grad, np.zeros((1, 2)), np.zeros((1, 2, 3)), kappa=0.0)
        with self.assertRaisesRegex(ValueError, "initial_positions"):
            restrained_mean_force(grad, np.zeros((1, 2)), np.zeros((2, 2, 3)), kappa=1.0)
        with self.assertRaisesRegex(ValueError, "one seed per centre"):
            restrained_mean_force(grad, np.zeros((2, 2)), np.zeros((2, 2, 3)), kappa=1.0,
                                  seed=[1, 2, 3])
        # A blow-up gives NaN, not an exception.
        result = restrained_mean_force(lambda q: -50 * q, np.zeros((1, 1)), np.ones((1, 2, 1)),
                                       kappa=1.0, dt=0.1, num_steps=1000, num_burnin=0)
        self.assertTrue(np.all(np.isnan(result["mean_force"])))
