"""ConcurrentLearner: resume after a kill at every stage, labels never repeated, bad input."""

import json
import os

import numpy as np

from mlcmk.models.ensemble import TrustLevels
from mlcmk.testing import TestCase
from mlcmk.training.concurrent_learning import (
    ConcurrentLearner,
    Examiner,
    Explorer,
    Labeller,
    LabelStore,
    Trainer,
    configuration_key,
    farthest_point_selector,
)


class Kill(BaseException):
    """Stands for the process being killed (not an Exception, so never taken for a failure)."""


def target(x):
    return np.sin(3 * x[..., 0])


class Toy:
    """A 1-D regression by K random-feature ridge models; deterministic given the seeds."""

    def __init__(self, members=4, features=40):
        rng = np.random.default_rng(0)
        self.w = rng.normal(0, 3, (members, features))
        self.b = rng.uniform(0, 2 * np.pi, (members, features))
        self.coef = np.zeros((members, features))

    def phi(self, x):
        return np.cos(x[None, :, 0:1] * self.w[:, None, :] + self.b[:, None, :])  # (K, n, F)

    def predict_members(self, x):
        return np.einsum("knf,kf->kn", self.phi(np.asarray(x)), self.coef)


class ToyExplorer(Explorer):
    def __init__(self, toy, kill_at=None):
        self.toy, self.kill_at = toy, kill_at

    def explore(self, iteration, seed):
        if iteration == self.kill_at:
            raise Kill
        rng = np.random.default_rng([seed, iteration])
        # Uses the model: keeps the half of the proposals where the members disagree most.
        x = rng.uniform(-2, 2, (80, 1))
        spread = self.toy.predict_members(x).std(axis=0)
        return x[np.argsort(-spread, kind="stable")[:40]]


class ToyExaminer(Examiner):
    def __init__(self, toy):
        self.toy = toy

    def examine(self, configurations):
        return self.toy.predict_members(configurations).std(axis=0)


class ToyLabeller(Labeller):
    """Exact labels; fails on x > 1.8; killed after `kill_after` labels of iteration `kill_at`."""

    def __init__(self, kill_at=None, kill_after=0):
        self.calls = []
        self.kill_at, self.kill_after = kill_at, kill_after
        self.iteration_calls = 0

    def label(self, configuration):
        if self.kill_at is not None and self.iteration_calls >= self.kill_after \
                and self.current == self.kill_at:
            raise Kill
        self.calls.append(configuration_key(configuration))
        self.iteration_calls += 1
        if configuration[0] > 1.8:
            raise ValueError("reference model diverged")
        return {"y": np.array(target(configuration[None])[0])}


class ToyTrainer(Trainer):
    def __init__(self, toy, labeller, kill_at=None, kill_after_fit=False):
        self.toy, self.labeller = toy, labeller
        self.kill_at, self.kill_after_fit = kill_at, kill_after_fit
        self.trained = []

    def train(self, data, iteration):
        if iteration == self.kill_at and not self.kill_after_fit:
            raise Kill
        phi = self.toy.phi(data.configurations)
        rng = np.random.default_rng(iteration)
        for k in range(len(phi)):  # each member on its own bootstrap sample
            idx = rng.integers(0, len(phi[k]), len(phi[k]))
            a = phi[k][idx]
            self.toy.coef[k] = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]),
                                               a.T @ data.labels["y"][idx])
        self.trained.append(iteration)
        if iteration == self.kill_at:
            raise Kill  # killed after fitting, before the state was saved
        return {"train_rmse": float(np.sqrt(np.mean(
            (self.toy.predict_members(data.configurations).mean(0) - data.labels["y"]) ** 2)))}

    def save(self, directory):
        np.save(os.path.join(directory, "coef.npy"), self.toy.coef)

    def load(self, directory):
        self.toy.coef = np.load(os.path.join(directory, "coef.npy"))


class _CurrentIteration:
    """Tells the labeller the iteration (toy kill switch only)."""

    def __init__(self, learner, labeller):
        self.learner, self.labeller = learner, labeller
        original = learner._label

        def label(k, configurations, selected):
            labeller.current, labeller.iteration_calls = k, 0
            return original(k, configurations, selected)

        learner._label = label


def build(directory, kill=None, evaluator=True):
    """Fresh parts (as in a new process); `kill = (stage, iteration)`."""
    stage, at = kill if kill else (None, None)
    toy = Toy()
    labeller = ToyLabeller(kill_at=at if stage == "label" else None, kill_after=3)
    trainer = ToyTrainer(toy, labeller, kill_at=at if stage in ("train", "train_late") else None,
                         kill_after_fit=stage == "train_late")
    test_x = np.linspace(-2, 2, 101)[:, None]

    def evaluate(k):
        return {"test_rmse": float(np.sqrt(np.mean(
            (toy.predict_members(test_x).mean(0) - target(test_x)) ** 2)))}

    learner = ConcurrentLearner(
        ToyExplorer(toy, kill_at=at if stage == "explore" else None), ToyExaminer(toy),
        labeller, trainer, directory, trust_levels=(0.02, 5.0), max_iterations=4,
        max_labels_per_iteration=6, converge_fraction=0.99,
        initial_configurations=np.array([[-1.5], [-0.5], [0.5], [1.9]]),
        evaluator=evaluate if evaluator else None, seed=3, verbose=0)
    _CurrentIteration(learner, labeller)
    return learner, toy, labeller


def _strip_times(log):
    return [{k: v for k, v in r.items() if k != "times"} for r in log]


class ConcurrentLearnerTest(TestCase):
    def setUp(self):
        super().setUp()
        self.reference_dir = self.get_temp_dir()
        learner, toy, labeller = build(self.reference_dir)
        self.reference_log = learner.run()
        self.reference_coef = toy.coef.copy()
        self.reference_calls = labeller.calls

    def test_uninterrupted_run_reports_and_learns(self):
        log = self.reference_log
        self.assertEqual([r["iteration"] for r in log], list(range(5)))
        # Iteration 0 labels the 4 initial configurations; x = 1.9 fails and is skipped.
        self.assertEqual((log[0]["labelled"], log[0]["label_failures"]), (3, 1))
        for r in log[1:]:
            self.assertEqual(r["explored"], 40)
            self.assertEqual(r["accurate"] + r["candidate"] + r["failed"], 40)
            self.assertLessEqual(r["selected"], 6)
            self.assertEqual(r["labelled"] + r["label_failures"], r["selected"])
        self.assertEqual(log[-1]["total_labels"], sum(r["labelled"] for r in log))
        self.assertEqual(len(self.reference_calls), len(set(self.reference_calls)))
        self.assertLess(log[-1]["evaluation"]["test_rmse"], 0.5 * log[0]["evaluation"]["test_rmse"])
        with open(os.path.join(self.reference_dir, "log.json")) as f:
            self.assertEqual(_strip_times(json.load(f)), _strip_times(log))
        failures = LabelStore(os.path.join(self.reference_dir, "labels")).failures()
        self.assertGreaterEqual(len(failures), 1)
        self.assertTrue(all("diverged" in v["error"] for v in failures.values()))
        self.assertTrue(all(v["configuration"][0] > 1.8 for v in failures.values()))

    def test_resume_after_kill_at_each_stage(self):
        for stage, at in (("explore", 2), ("label", 0), ("label", 2), ("train", 0),
                          ("train", 3), ("train_late", 1), ("train_late", 4)):
            with self.subTest(stage=stage, iteration=at):
                directory = self.get_temp_dir()
                learner, _, first = build(directory, kill=(stage, at))
                with self.assertRaises(Kill):
                    learner.run()
                self.assertFalse(learner.stage_done(at, "done"))
                learner, toy, second = build(directory)  # a new process resumes
                log = learner.run()
                self.assertEqual(_strip_times(log), _strip_times(self.reference_log))
                np.testing.assert_array_equal(toy.coef, self.reference_coef)
                calls = first.calls + second.calls
                self.assertEqual(len(calls), len(set(calls)), "a configuration was labelled twice")
                self.assertEqual(sorted(calls), sorted(self.reference_calls))

    def test_same_process_resume_after_failed_training(self):
        directory = self.get_temp_dir()
        learner, toy, labeller = build(directory, kill=("train_late", 2))
        with self.assertRaises(Kill):
            learner.run()
        learner.trainer.kill_at = None  # same objects; the half-trained model must be dropped
        log = learner.run()
        self.assertEqual(_strip_times(log), _strip_times(self.reference_log))
        np.testing.assert_array_equal(toy.coef, self.reference_coef)
        self.assertEqual(len(labeller.calls), len(set(labeller.calls)))

    def test_completed_run_is_read_back(self):
        learner, toy, labeller = build(self.reference_dir)
        log = learner.run()
        self.assertEqual(labeller.calls, [])
        self.assertEqual(_strip_times(log), _strip_times(self.reference_log))
        np.testing.assert_array_equal(toy.coef, self.reference_coef)

    def test_convergence_rule_stops_the_run(self):
        directory = self.get_temp_dir()
        learner, _, _ = build(directory)
        learner.converge_fraction = 0.5
        learner.trust_levels = TrustLevels(0.3, 5.0)
        log = learner.run()
        self.assertTrue(log[-1]["converged"])
        self.assertGreaterEqual(log[-1]["accurate_fraction"], 0.5)
        self.assertTrue(all(not r["converged"] for r in log[:-1]))
        self.assertLess(len(log), 5)

    def test_bad_input(self):
        toy = Toy()
        parts = (ToyExplorer(toy), ToyExaminer(toy), ToyLabeller(), ToyTrainer(toy, None))
        directory = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "lo <= hi"):
            ConcurrentLearner(*parts, directory, trust_levels=(2.0, 1.0))
        with self.assertRaisesRegex(ValueError, "trust_levels"):
            ConcurrentLearner(*parts, directory, trust_levels=0.5)
        with self.assertRaisesRegex(TypeError, "examiner"):
            ConcurrentLearner(parts[0], object(), *parts[2:], directory, trust_levels=(1, 2))
        with self.assertRaisesRegex(ValueError, "max_iterations"):
            ConcurrentLearner(*parts, directory, trust_levels=(1, 2), max_iterations=0)
        # A run directory holds one run: other settings are refused rather than mixed.
        learner, _, _ = build(self.reference_dir)
        learner.trust_levels = TrustLevels(0.5, 5.0)
        with self.assertRaisesRegex(ValueError, "other settings"):
            learner.run()

    def test_non_finite_label_is_a_failure(self):
        class NaNLabeller(ToyLabeller):
            def label(self, configuration):
                self.calls.append(configuration_key(configuration))
                return {"y": np.array(np.nan if configuration[0] < 0 else 1.0)}

        toy = Toy()
        labeller = NaNLabeller()
        learner = ConcurrentLearner(
            ToyExplorer(toy), ToyExaminer(toy), labeller, ToyTrainer(toy, labeller),
            self.get_temp_dir(), trust_levels=(0.0, 10.0), max_iterations=1,
            initial_configurations=np.array([[-1.0], [1.0], [1.0]]), verbose=0)
        log = learner.run()
        self.assertEqual((log[0]["labelled"], log[0]["label_failures"]), (1, 1))
        self.assertEqual(len(labeller.calls), 2 + log[1]["selected"])  # duplicate labelled once

    def test_selectors_and_keys(self):
        x = np.random.default_rng(0).uniform(size=(50, 2))
        chosen = farthest_point_selector(x, 5, np.random.default_rng(1))
        self.assertEqual(len(set(chosen.tolist())), 5)
        # Farther apart than random picks.
        def min_gap(idx):
            d = np.linalg.norm(x[idx][:, None] - x[idx][None], axis=-1)
            return d[np.triu_indices(len(idx), 1)].min()
        random_gaps = [min_gap(np.random.default_rng(s).choice(50, 5, replace=False))
                       for s in range(20)]
        self.assertGreater(min_gap(chosen), np.median(random_gaps))
        self.assertEqual(configuration_key(np.array([1.0, 2.0])),
                         configuration_key(np.array([1, 2], dtype=np.float32)))
        self.assertNotEqual(configuration_key(np.array([1.0, 2.0])),
                            configuration_key(np.array([[1.0, 2.0]])))
