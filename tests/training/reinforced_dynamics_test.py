"""Reinforced-dynamics explorer: flat CV marginal under the exact bias, plain Langevin without."""

import numpy as np
from scipy import stats

from mlcmk import config
from mlcmk.problems.free_energy import MuellerBrownBath
from mlcmk.testing import TestCase
from mlcmk.training.free_energy_learning import (
    ReinforcedDynamicsExplorer,
    build_free_energy_learner,
    ensemble_bias,
    free_energy_errors,
    switching_function,
)


class HarmonicBath:
    """U(s, z) = k_s |s - m|^2 / 2 + sum_i k_i (z_i - a_i . s)^2 / 2: the CV marginal is
    Gaussian with mean m and variance 1 / (beta k_s) in each CV, exactly."""

    collective_variables = ("x", "y")

    def __init__(self, beta=2.0, k_s=4.0, mean=(0.3, -0.2)):
        self.beta, self.k_s, self.mean = beta, k_s, np.array(mean)
        self.k = np.array([30.0, 60.0, 90.0])
        self.a = np.array([[0.5, -0.2], [0.1, 0.8], [-0.6, 0.3]])

    def gradient(self, q):
        s, z = q[:, :2], q[:, 2:]
        u = z - s @ self.a.T
        return np.concatenate([self.k_s * (s - self.mean) - (self.k * u) @ self.a, self.k * u], 1)

    def curvature_bound(self):
        return self.k_s + self.k.max() + np.sum(self.k * np.sum(self.a**2, 1))

    def initial_positions(self, centers, num_walkers, rng):
        s = np.repeat(np.asarray(centers)[:, None], num_walkers, axis=1)
        z = s @ self.a.T + rng.standard_normal(s.shape[:2] + (3,)) / np.sqrt(self.beta * self.k)
        return np.concatenate([s, z], -1)


def _uniform_pvalues(x, box):
    return [stats.kstest((x[:, i] - lo) / (hi - lo), "uniform").pvalue
            for i, (lo, hi) in enumerate(box)]


class SwitchingFunctionTest(TestCase):
    def test_levels_and_monotone(self):
        self.assertEqual(switching_function(1.0, 1.0, 3.0), 1.0)
        self.assertEqual(switching_function(3.0, 1.0, 3.0), 0.0)
        self.assertAlmostEqual(float(switching_function(2.0, 1.0, 3.0)), 0.5, places=14)
        e = np.linspace(-1, 5, 601)
        sigma = switching_function(e, 1.0, 3.0)
        np.testing.assert_array_equal(sigma[e <= 1.0], 1.0)
        np.testing.assert_array_equal(sigma[e >= 3.0], 0.0)
        self.assertTrue(np.all(np.diff(sigma) <= 0))
        self.assertTrue(np.all(np.diff(sigma)[(e[1:] > 1.0) & (e[:-1] < 3.0)] < 0))
        # Continuously differentiable: the slope vanishes at both levels.
        h = 1e-6
        for level in (1.0, 3.0):
            slope = (switching_function(level + h, 1, 3) - switching_function(level - h, 1, 3))
            self.assertLess(abs(float(slope)) / (2 * h), 1e-5)
        np.testing.assert_array_equal(switching_function([np.nan, np.inf, 0.0], 1, 1),
                                      [0.0, 0.0, 1.0])

    def test_bad_levels(self):
        with self.assertRaisesRegex(ValueError, r"switch_levels.*\(3.0, 1.0\)"):
            switching_function(0.5, 3.0, 1.0)
        with self.assertRaisesRegex(ValueError, "switch_levels"):
            switching_function(0.5, -1.0, 1.0)


class ReinforcedDynamicsTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_exact_bias_flattens_the_cv_marginal(self):
        # Around the deepest Müller–Brown minimum A varies by 8 kT over the box. Biased by the
        # exact A with the switch on everywhere, the CVs are uniform in the box; unbiased, not.
        # The last frame of 300 independent walkers: independent draws, so KS applies.
        problem = MuellerBrownBath(num_bath=4)
        box = [(-0.9, -0.2), (1.1, 1.8)]
        exact = lambda s: (problem.mean_force(s), np.zeros(len(s)))  # noqa: E731
        settings = dict(domain=box, num_walkers=300, num_results=1, sample_every=1,
                        num_burnin=1799)
        explorer = ReinforcedDynamicsExplorer(problem, exact, **settings)
        biased = explorer.explore(1, 0)
        self.assertEqual(biased.shape, (300, 2))
        self.assertEqual(explorer.bias_fraction, 1.0)
        self.assertGreater(min(_uniform_pvalues(biased, box)), 0.01)
        counts, _, _ = np.histogram2d(biased[:, 0], biased[:, 1], bins=3, range=box)
        self.assertGreater(stats.chisquare(counts.ravel()).pvalue, 0.01)
        plain = ReinforcedDynamicsExplorer(problem, None, **settings).explore(1, 0)
        self.assertLess(max(_uniform_pvalues(plain, box)), 1e-6)
        counts, _, _ = np.histogram2d(plain[:, 0], plain[:, 1], bins=3, range=box)
        self.assertLess(stats.chisquare(counts.ravel()).pvalue, 1e-6)
        for x in (biased, plain):
            self.assertTrue(np.all((x >= [-0.9, 1.1]) & (x <= [-0.2, 1.8])))

    def test_zero_bias_is_plain_langevin(self):
        # The exact Boltzmann marginal of the CVs is N(m, 1 / (beta k_s)) per CV; the last
        # frame of 500 independent walkers after about 8 relaxation times.
        problem = HarmonicBath()
        box = [(-4.0, 4.0), (-4.0, 4.0)]  # > 11 standard deviations: reflection is inert
        settings = dict(domain=box, num_walkers=500, num_results=1, sample_every=1,
                        num_burnin=599)
        x = ReinforcedDynamicsExplorer(problem, None, **settings).explore(2, 5)
        sd = 1 / np.sqrt(problem.beta * problem.k_s)
        for i in range(2):
            self.assertLess(abs(x[:, i].mean() - problem.mean[i]), 4 * sd / np.sqrt(500))
            # Variance: standard error sqrt(2 / n) relative.
            self.assertLess(abs(x[:, i].var() / sd**2 - 1), 4 * np.sqrt(2 / 500))
            self.assertGreater(stats.kstest(x[:, i], stats.norm(problem.mean[i], sd).cdf)
                               .pvalue, 0.01)
        # The test has power: the marginal at beta = 1 is rejected.
        self.assertLess(stats.kstest(x[:, 0], stats.norm(problem.mean[0], sd * np.sqrt(2))
                                     .cdf).pvalue, 0.01)
        # A bias switched off (deviation above hi) is no bias, step for step.
        off = lambda s: (np.ones_like(s), np.full(len(s), 10.0))  # noqa: E731
        y = ReinforcedDynamicsExplorer(problem, off, switch_levels=(1.0, 2.0),
                                       **settings).explore(2, 5)
        np.testing.assert_array_equal(x, y)

    def test_force_is_the_switched_bias(self):
        problem = HarmonicBath()
        mean_force = np.array([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]])
        deviation = np.array([0.5, 1.5, 7.0])
        explorer = ReinforcedDynamicsExplorer(problem, lambda s: (mean_force, deviation),
                                              domain=[(-1, 1), (-1, 1)], switch_levels=(1, 2))
        q = np.random.default_rng(0).normal(size=(3, 5))
        force, sigma, dev = explorer.force(q)
        np.testing.assert_allclose(sigma, [1.0, 0.5, 0.0], atol=1e-15)
        expected = -problem.gradient(q)
        expected[:, :2] -= sigma[:, None] * mean_force
        np.testing.assert_allclose(force, expected, rtol=1e-14)
        np.testing.assert_array_equal(dev, deviation)

    def test_bad_input(self):
        problem = HarmonicBath()
        box = [(-1, 1), (-1, 1)]
        with self.assertRaisesRegex(ValueError, "switch_levels"):
            ReinforcedDynamicsExplorer(problem, domain=box, switch_levels=(2.0, 1.0))
        with self.assertRaisesRegex(ValueError, "switch_levels"):
            ReinforcedDynamicsExplorer(problem, domain=box, switch_levels=2.0)
        with self.assertRaisesRegex(ValueError, "num_walkers=0"):
            ReinforcedDynamicsExplorer(problem, domain=box, num_walkers=0)
        with self.assertRaisesRegex(ValueError, "sample_every"):
            ReinforcedDynamicsExplorer(problem, domain=box, sample_every=2.5)
        with self.assertRaisesRegex(ValueError, "dt=-0.1"):
            ReinforcedDynamicsExplorer(problem, domain=box, dt=-0.1)
        with self.assertRaisesRegex(ValueError, "domain"):
            ReinforcedDynamicsExplorer(problem, domain=[(1, -1), (0, 1)])
        with self.assertRaisesRegex(ValueError, "domain"):
            ReinforcedDynamicsExplorer(problem, domain=[(0, 1)])
        with self.assertRaisesRegex(TypeError, "bias"):
            ReinforcedDynamicsExplorer(problem, bias=3.0, domain=box)
        with self.assertRaisesRegex(TypeError, "problem"):
            ReinforcedDynamicsExplorer(object(), domain=box)
        with self.assertRaisesRegex(ValueError, "explorer='langevin'"):
            build_free_energy_learner(MuellerBrownBath(num_bath=2), self.get_temp_dir(),
                                      explorer="langevin")

    def test_in_the_loop_on_mueller_brown(self):
        problem = MuellerBrownBath(num_bath=4)
        directory = self.get_temp_dir()
        learner, ensemble, labeller = build_free_energy_learner(
            problem, directory, num_members=2, hidden_units=(16,), trust_levels=(0.5, 1e6),
            max_iterations=2, max_labels_per_iteration=5, converge_fraction=None,
            num_initial=6, train_steps=30, explorer="reinforced",
            explorer_kwargs=dict(num_walkers=8, num_results=4, sample_every=10, num_burnin=20),
            md_kwargs={"num_walkers": 4, "num_steps": 200, "num_burnin": 20}, verbose=0)
        self.assertIsInstance(learner.explorer, ReinforcedDynamicsExplorer)
        self.assertEqual(learner.explorer.switch_levels, (0.5, 1.0))
        log = learner.run()
        self.assertEqual([r["iteration"] for r in log], [0, 1, 2])
        for r in log[1:]:
            self.assertEqual(r["explored"], 32)
            self.assertLessEqual(r["labelled"], 5)
        self.assertEqual(labeller.calls, log[-1]["total_labels"])
        self.assertEqual(free_energy_errors(problem, ensemble), log[-1]["evaluation"])
        # Seeded by iteration: the same model explores the same configurations.
        explored = np.load(f"{learner.iteration_dir(2)}/explored.npz")["configurations"]
        learner._ensure_model(1)
        np.testing.assert_array_equal(learner.explorer.explore(2, 0), explored)
        low, high = np.array(problem.domain).T
        self.assertTrue(np.all((explored >= low) & (explored <= high)))
        # The bias is the ensemble's: mean of the members' mean forces and their deviation.
        s = explored[:5]
        mean, dev = ensemble_bias(ensemble)(s)
        np.testing.assert_allclose(mean, np.mean(ensemble.member_outputs(s), 0), rtol=1e-10)
        np.testing.assert_allclose(dev, ensemble.model_deviation(s), rtol=1e-10)
