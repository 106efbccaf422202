"""Free-energy EELT parts: the MCMC explorer samples a known density; MD labels; a smoke run."""

import json
import os

import numpy as np
import tensorflow as tf
from scipy import integrate, stats

from mlcmk import config
from mlcmk.models import Ensemble, FreeEnergyModel
from mlcmk.problems.free_energy import MuellerBrownBath
from mlcmk.testing import TestCase
from mlcmk.training.concurrent_learning import configuration_key
from mlcmk.training.free_energy_learning import (
    EnsembleExaminer,
    MCMCExplorer,
    RestrainedMDLabeller,
    build_free_energy_learner,
    ensemble_log_prob,
    free_energy_errors,
    sample_boltzmann,
)


def _double_well_log_prob(s):
    """log p(x, y) = -(x^2 - 1)^2 / 0.4 - (y - 0.5)^2 / (2 * 0.3^2), unnormalised."""
    import tensorflow as tf

    x, y = s[:, 0], s[:, 1]
    return -((x**2 - 1) ** 2) / 0.4 - (y - 0.5) ** 2 / (2 * 0.3**2) + 0 * tf.reduce_sum(s, -1)


def _double_well_cdf(temperature):
    def density(x):
        return np.exp(-((x**2 - 1) ** 2) / (0.4 * temperature))

    norm, _ = integrate.quad(density, -3, 3)
    return lambda x: np.array([integrate.quad(density, -3, v)[0] / norm for v in np.atleast_1d(x)])


class MCMCExplorerTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_samples_a_known_density(self):
        # The last state of 400 independent chains after 600 steps: independent draws, so the
        # Kolmogorov-Smirnov test applies as it stands (fixed seed, so the test is repeatable).
        explorer = MCMCExplorer(_double_well_log_prob, [(-3, 3), (-2, 3)], num_chains=400,
                                num_results=1, num_burnin=600, thin=1, step_size=0.4,
                                temperatures=(1.0, 2.0))
        samples = explorer.explore(iteration=1, seed=0)
        self.assertEqual(samples.shape, (400, 2))
        self.assertTrue(0.2 < explorer.acceptance < 0.9)
        for t, rows in ((1.0, samples[0::2]), (2.0, samples[1::2])):
            x_p = stats.kstest(rows[:, 0], _double_well_cdf(t)).pvalue
            y_p = stats.kstest(rows[:, 1], stats.norm(0.5, 0.3 * np.sqrt(t)).cdf).pvalue
            self.assertGreater(min(x_p, y_p), 0.01, (t, x_p, y_p))
            # Moments, 4 standard errors of 200 independent draws.
            self.assertLess(abs(rows[:, 1].mean() - 0.5), 4 * 0.3 * np.sqrt(t / 200))
            self.assertLess(abs(rows[:, 0].mean()), 4 * 1.0 / np.sqrt(200))
        # A wrong density is rejected by the same test (the test has power).
        wrong = stats.kstest(samples[0::2, 1], stats.norm(0.5, 0.45).cdf).pvalue
        self.assertLess(wrong, 0.01)
        # Seeded: the same iteration explores the same configurations; another does not.
        np.testing.assert_array_equal(explorer.explore(1, 0), samples)
        self.assertFalse(np.array_equal(explorer.explore(2, 0), samples))

    def test_stays_in_the_domain(self):
        explorer = MCMCExplorer(lambda s: 0.0 * s[:, 0], [(0, 1), (2, 3)], num_chains=16,
                                num_results=20, num_burnin=10, thin=2, step_size=0.5)
        samples = explorer.explore(1, 3)
        self.assertTrue(np.all((samples >= [0, 2]) & (samples <= [1, 3])))
        states, acceptance = sample_boltzmann(lambda s: -tf.reduce_sum(s**2, -1),
                                              np.zeros((4, 3)), 5, num_burnin=3, thin=2,
                                              domain=[(-1, 1)] * 3, seed=(1, 2))
        self.assertEqual(states.shape, (5, 4, 3))
        self.assertTrue(0 < acceptance <= 1 and np.all(np.abs(states) <= 1))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "domain"):
            MCMCExplorer(_double_well_log_prob, [(1, 0)])
        with self.assertRaisesRegex(ValueError, "temperatures"):
            MCMCExplorer(_double_well_log_prob, [(0, 1)], temperatures=(1.0, -2.0))
        with self.assertRaisesRegex(ValueError, "num_chains"):
            MCMCExplorer(_double_well_log_prob, [(0, 1)], num_chains=0)


class FreeEnergyPartsTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_labeller_batches_and_failures(self):
        problem = MuellerBrownBath(num_bath=4)
        labeller = RestrainedMDLabeller(problem, batch_size=4, num_walkers=4, num_steps=200,
                                        num_burnin=20)
        centers = np.array([[-0.5, 1.4], [0.6, 0.05], [0.0, 0.5]])
        batch = labeller.label_batch(centers)
        alone = labeller.label_batch(centers[2:])
        np.testing.assert_array_equal(alone[0]["mean_force"], batch[2]["mean_force"])
        self.assertEqual(labeller.calls, 4)

        class Broken(MuellerBrownBath):
            def restrained_mean_force(self, centers, **kwargs):
                out = super().restrained_mean_force(centers, **kwargs)
                out["mean_force"][1] = np.nan
                return out

        results = RestrainedMDLabeller(Broken(num_bath=4), num_walkers=4, num_steps=100,
                                       num_burnin=10).label_batch(centers)
        self.assertIsInstance(results[1], FloatingPointError)
        self.assertEqual(sorted(results[0]), ["mean_force", "stderr"])
        with self.assertRaisesRegex(TypeError, "restrained_mean_force"):
            RestrainedMDLabeller(object())

    def test_examiner_is_the_mean_force_spread(self):
        ensemble = Ensemble.from_factory(
            lambda seed: FreeEnergyModel(["linear", "linear"], hidden_units=(8,), seed=seed),
            num_members=3, output_fn=lambda m, s: m.mean_force(s))
        s = np.random.default_rng(0).uniform(-1, 1, (10, 2))
        forces = np.stack([np.asarray(m.mean_force(s)) for m in ensemble.members])
        expected = np.sqrt(np.sum(forces.var(axis=0), axis=-1))
        np.testing.assert_allclose(EnsembleExaminer(ensemble, batch_size=4).examine(s),
                                   expected, rtol=1e-10)
        log_prob = ensemble_log_prob(ensemble, beta=2.0)
        a = np.mean([np.asarray(m(s))[:, 0] for m in ensemble.members], axis=0)
        np.testing.assert_allclose(np.asarray(log_prob(s)), -2.0 * a, rtol=1e-12)

    def test_smoke_run_on_mueller_brown(self):
        problem = MuellerBrownBath(num_bath=4)
        directory = self.get_temp_dir()
        learner, ensemble, labeller = build_free_energy_learner(
            problem, directory, num_members=2, hidden_units=(16,), trust_levels=(0.5, 1e6),
            max_iterations=2, max_labels_per_iteration=5, converge_fraction=None,
            num_initial=6, num_chains=8, num_results=4, train_steps=30,
            md_kwargs={"num_walkers": 4, "num_steps": 200, "num_burnin": 20}, verbose=0)
        log = learner.run()
        self.assertEqual([r["iteration"] for r in log], [0, 1, 2])
        self.assertEqual(log[0]["labelled"], 6)
        for r in log[1:]:
            self.assertEqual(r["explored"], 32)
            self.assertLessEqual(r["labelled"], 5)
        self.assertEqual(labeller.calls, log[-1]["total_labels"])
        errors = free_energy_errors(problem, ensemble)
        self.assertEqual(errors, log[-1]["evaluation"])
        with open(os.path.join(directory, "log.json")) as f:
            self.assertEqual(len(json.load(f)), 3)
        keys = {configuration_key(c) for c in learner.store.data().configurations}
        self.assertEqual(len(keys), labeller.calls)


class KerasResumeTest(TestCase):
    """Resume with a real Keras ensemble: the trainer's optimizer reset makes it exact."""

    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def _build(self, directory, kill_at=None):
        from mlcmk.training.concurrent_learning import (
            ConcurrentLearner,
            EnsembleTrainer,
            Explorer,
            Labeller,
        )

        class Kill(BaseException):
            pass

        class Uniform(Explorer):
            def explore(self, iteration, seed):
                return np.random.default_rng([seed, iteration]).uniform(-1, 1, (12, 2))

        class Exact(Labeller):
            calls = 0

            def label(self, s):
                Exact.calls += 1
                return {"mean_force": -np.array([np.cos(s[0]), -2 * s[1]])}

        class KilledTrainer(EnsembleTrainer):
            def train(self, data, iteration):
                metrics = super().train(data, iteration)
                if iteration == kill_at:
                    raise Kill  # after fitting, before the learner saved the weights
                return metrics

        ensemble = Ensemble.from_factory(
            lambda seed: FreeEnergyModel(["linear", "linear"], hidden_units=(8,), seed=seed),
            num_members=2, output_fn=lambda m, s: m.mean_force(s))
        trainer = KilledTrainer(ensemble, "mean_force", steps=15, batch_size=8)
        learner = ConcurrentLearner(
            Uniform(), EnsembleExaminer(ensemble), Exact(), trainer, directory,
            trust_levels=(0.0, 1e9), max_iterations=2, max_labels_per_iteration=4,
            converge_fraction=None, initial_configurations=np.array([[0.1, 0.2], [0.5, -0.5]]),
            verbose=0)
        return learner, ensemble, Exact, Kill

    def test_killed_training_resumes_to_the_same_weights(self):
        learner, reference, counter0, _ = self._build(self.get_temp_dir())
        learner.run()
        directory = self.get_temp_dir()
        learner, _, counter, kill = self._build(directory, kill_at=1)
        with self.assertRaises(kill):
            learner.run()
        learner, resumed, counter2, _ = self._build(directory)
        log = learner.run()
        for a, b in zip(reference.members, resumed.members, strict=True):
            for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
                np.testing.assert_allclose(wb, wa, rtol=0, atol=1e-12)
        # Labels of the killed run are kept; the resumed run asks for none of them again.
        self.assertEqual(counter.calls + counter2.calls, counter0.calls)
        self.assertEqual(log[-1]["total_labels"], 2 + 4 + 4)
        self.assertEqual(counter0.calls, 10)
