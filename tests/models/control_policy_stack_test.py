"""ControlPolicyStack: LQ against Riccati, feasibility everywhere, saving, export, replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlcmk import config
from mlcmk.models import ControlPolicyStack
from mlcmk.models.control_policy_stack import PolicySubnetworks
from mlcmk.problems.control import EnergyStorage, LQRegulator, MertonPortfolio
from mlcmk.testing import TestCase, two_cpu_strategy


def _schedule(lr, iterations):
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(0.6 * iterations), int(0.85 * iterations)], [lr, lr / 10, lr / 100])


def _trained(problem, iterations, lr=3e-2, jit_compile=False, **kwargs):
    # XLA compilation of the unrolled dynamics costs more than these short runs gain from it.
    model = ControlPolicyStack(problem, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(_schedule(lr, iterations)),
                  jit_compile=jit_compile)
    model.fit(epochs=2, steps_per_epoch=iterations // 2, verbose=0)
    return model


def _optimal_lq(problem):
    gains = problem.gains()
    return lambda t, s: -tf.matmul(s, tf.constant(gains[t].T, s.dtype))


def _learned_gain(model, t, dim):
    points = np.vstack([np.zeros(dim), np.eye(dim)])
    a = np.asarray(model.policy(t, points))
    return -(a[1:] - a[0]).T


def _perturb(model, scale=0.5, seed=1):
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(w + scale * rng.standard_normal(w.shape))


class ControlPolicyStackTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_lq_cost_and_gain_match_riccati(self):
        problem = LQRegulator(dim=3, num_steps=8)
        model = _trained(problem, 600, hidden_units=(), batch_size=256)
        s0, noise = problem.sample(20000, (5, 6), "float64")
        learned = model.path_costs(np.asarray(s0), np.asarray(noise))
        optimal = np.asarray(problem.rollout(_optimal_lq(problem), s0, noise))
        reference = float(problem.reference_cost())
        # The optimal policy's Monte Carlo mean agrees with the exact value (noise included).
        self.assertLess(abs(optimal.mean() - reference), 4 * optimal.std() / np.sqrt(20000))
        # Same paths: the learned policy's excess cost over the optimum is tiny and >= 0 up to
        # its standard error.
        excess = learned - optimal
        self.assertLess(excess.mean() / reference, 2e-3)
        self.assertGreater(excess.mean(), -3 * excess.std() / np.sqrt(len(excess)))
        for t in (0, 4, 7):
            exact = problem.gains()[t]
            error = np.linalg.norm(_learned_gain(model, t, 3) - exact) / np.linalg.norm(exact)
            self.assertLess(error, 0.05, f"gain at step {t}")

    def test_untrained_policy_is_far_from_optimal(self):
        # The check above can fail: the zero policy costs clearly more than the optimum.
        problem = LQRegulator(dim=3, num_steps=8)
        model = ControlPolicyStack(problem, hidden_units=())
        model.compile(jit_compile=False)
        cost = float(model.evaluate(verbose=0))
        self.assertGreater(cost / float(problem.reference_cost()), 1.1)

    def test_merton_amounts_match_closed_form(self):
        problem = MertonPortfolio(num_assets=3, num_steps=5)
        model = _trained(problem, 400, lr=5e-2, hidden_units=(), batch_size=512)
        s = np.full((4, 1), 1.0) + np.linspace(-0.2, 0.2, 4)[:, None]
        for t in (0, 4):
            a = np.asarray(model.policy(t, s))
            np.testing.assert_allclose(a, np.broadcast_to(problem.optimal_amounts(), a.shape),
                                       atol=0.12)

    def test_constraints_hold_everywhere_energy_storage(self):
        problem = EnergyStorage(num_devices=4, num_steps=6)
        model = ControlPolicyStack(problem, hidden_units=(8,))
        _perturb(model, 3.0)
        rng = np.random.default_rng(0)
        n = problem.num_devices
        # In distribution and far outside it: levels beyond [0, X], extreme prices and wind.
        x = problem.capacity * rng.uniform(-0.5, 1.5, (256, n))
        price = rng.choice([-50.0, 0.0, 1.0, 1e3], 256)
        wind = rng.choice([-5.0, 0.0, 0.3, 1e4], 256)
        states = np.c_[x, price, wind]
        for t in range(problem.num_steps):
            a = np.asarray(model.policy(t, states))
            self.assertLessEqual(problem.constraint_violation(t, states, a), 1e-12)
        _, paths, controls = model.simulate(*problem.sample(64, (3, 4), "float64"),
                                            return_paths=True)
        paths, controls = np.asarray(paths), np.asarray(controls)
        for t in range(problem.num_steps):
            self.assertLessEqual(
                problem.constraint_violation(t, paths[:, t], controls[:, t]), 1e-12)
        levels = paths[:, :, :n]
        self.assertTrue(np.all(levels >= -1e-12) and np.all(levels <= problem.capacity + 1e-12))

    def test_constraints_hold_everywhere_linear_and_box(self):
        specs = [
            {"type": "box", "low": -1.0, "high": [1.0, 2.0, 0.5]},
            {"type": "simplex", "total": 2.0, "inequality": True},
            {"type": "linear", "a_ub": [[1, 1, 1], [-1, 0, 0], [0, -1, 0], [1, -1, 0]],
             "b_ub": [1, 0, 0, 0.2], "a_eq": [[0, 0, 1]], "b_eq": [0.3]},
        ]
        rng = np.random.default_rng(1)
        for spec in specs:
            problem = LQRegulator(dim=3, num_steps=4, constraint=spec)
            self.assertIsNone(problem.reference_cost())
            model = ControlPolicyStack(problem, hidden_units=(6,))
            _perturb(model, 2.0)
            states = rng.standard_normal((200, 3)) * np.array([[1.0], [1e3]]).repeat(100, 0)
            for t in range(4):
                a = np.asarray(model.policy(t, states))
                self.assertLessEqual(problem.constraint_violation(t, states, a), 1e-9,
                                     spec["type"])
        # Gradients through the projections stay finite, also from saturated starts.
        model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
        history = model.fit(epochs=1, steps_per_epoch=5, validation=False, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][-1]))

    def test_tensor_step_index_matches_int(self):
        for network in ("per_step", "shared"):
            problem = LQRegulator(dim=2, num_steps=5)
            model = ControlPolicyStack(problem, policy_network=network, hidden_units=(4,))
            _perturb(model, 0.3)
            s = np.random.default_rng(2).standard_normal((5, 2))
            per_row = np.asarray(model.policy(tf.range(5), s))
            for t in range(5):
                np.testing.assert_allclose(per_row[t], np.asarray(model.policy(t, s))[t],
                                           rtol=1e-12, err_msg=network)
                np.testing.assert_allclose(np.asarray(model.policy(tf.constant(t), s)),
                                           np.asarray(model.policy(t, s)), rtol=1e-12)

    def test_keras_round_trip(self):
        problem = EnergyStorage(num_devices=3, num_steps=4)
        model = _trained(problem, 20, lr=1e-2, hidden_units=(5,))
        s0, noise = problem.sample(8, (0, 1), "float64")
        reloaded = self.run_model_saving_test(model, (s0, noise))
        self.assertEqual(reloaded.problem.get_config(), problem.get_config())
        self.assertTrue(reloaded.compiled)
        self.assertEqual(int(reloaded.optimizer.iterations), int(model.optimizer.iterations))
        np.testing.assert_allclose(np.asarray(reloaded.policy(2, s0)),
                                   np.asarray(model.policy(2, s0)), rtol=0, atol=0)

    def test_policy_export_reloads_with_tensorflow_alone(self):
        problem = LQRegulator(dim=3, num_steps=4, constraint={"type": "box", "low": -1,
                                                               "high": 1})
        model = _trained(problem, 20, hidden_units=(5,))
        inputs = np.c_[np.arange(6) % 4, np.random.default_rng(0).standard_normal((6, 3))]
        self.run_export_test(model.policy_model(), inputs, atol=1e-12)

    def test_two_replicas_draw_different_noise_and_fit(self):
        problem = LQRegulator(dim=3, num_steps=6)
        strategy = two_cpu_strategy()
        with strategy.scope():
            model = ControlPolicyStack(problem, hidden_units=(), batch_size=128, seed=1)
            model.compile(optimizer=keras.optimizers.Adam(_schedule(3e-2, 300)))
        per_replica = strategy.run(tf.function(lambda: model.training_sample()[1]))
        a, b = (np.asarray(v) for v in strategy.experimental_local_results(per_replica))
        self.assertEqual(a.shape, (64, 6, 3))
        self.assertFalse(np.allclose(a, b))
        model.fit(epochs=2, steps_per_epoch=150, verbose=0)
        single = _trained(problem, 300, hidden_units=(), batch_size=128, seed=1)
        reference = float(problem.reference_cost())
        s0, noise = problem.sample(20000, (7, 8), "float64")
        optimal = np.asarray(problem.rollout(_optimal_lq(problem), s0, noise)).mean()
        for m in (model, single):
            excess = m.path_costs(np.asarray(s0), np.asarray(noise)).mean() - optimal
            self.assertLess(excess / reference, 5e-3)

    def test_float32(self):
        config.set_precision("float32")
        problem = EnergyStorage(num_devices=2, num_steps=3)
        model = _trained(problem, 20, lr=1e-2, hidden_units=(4,))
        self.assertEqual(model.subnetworks.weights[0].dtype, "float32")
        self.assertEqual(np.asarray(model.policy(0, np.ones((2, 4)))).dtype, np.float32)
        self.assertTrue(np.isfinite(model.evaluate(verbose=0)))

    def test_bad_input(self):
        problem = LQRegulator(dim=3, num_steps=4)
        model = ControlPolicyStack(problem, hidden_units=())
        with self.assertRaisesRegex(ValueError, "state_dim=3"):
            model.policy(0, np.zeros((2, 4)))
        with self.assertRaisesRegex(ValueError, r"t=4"):
            model.policy(4, np.zeros((2, 3)))
        with self.assertRaisesRegex(ValueError, "noise of shape"):
            model.simulate(np.zeros((2, 3)), np.zeros((2, 5, 3)))
        with self.assertRaisesRegex(ValueError, "policy_network"):
            ControlPolicyStack(problem, policy_network="rnn")
        with self.assertRaisesRegex(ValueError, "hidden_units"):
            ControlPolicyStack(problem, hidden_units=(0,))
        with self.assertRaisesRegex(TypeError, "ControlProblem"):
            ControlPolicyStack({"name": "black_scholes_barenblatt", "dim": 2})
        with self.assertRaisesRegex(ValueError, "fit"):
            model.fit(np.zeros((2, 3)))

        class WrongControl(LQRegulator):
            def control_map(self, t, s, raw):
                return raw[:, :2]

        with self.assertRaisesRegex(ValueError, "control_dim=3"):
            ControlPolicyStack(WrongControl(dim=3, num_steps=4))

    def test_subnetworks_layer(self):
        self.run_layer_test(PolicySubnetworks, {"num_steps": 3, "output_dim": 2,
                                                "hidden_units": [4]}, (5, 3),
                            expected_output_shape=(5, 2))


@pytest.mark.large
class ControlPolicyStackLargeTest(TestCase):
    def test_lq_d20_within_point_one_percent(self):
        config.set_precision("float64")
        problem = LQRegulator(dim=20, num_steps=20)
        model = _trained(problem, 3000, lr=1e-2, jit_compile=True, hidden_units=(),
                         batch_size=256)
        s0, noise = problem.sample(20000, (5, 6), "float64")
        learned = model.path_costs(np.asarray(s0), np.asarray(noise)).mean()
        optimal = np.asarray(problem.rollout(_optimal_lq(problem), s0, noise)).mean()
        self.assertLess((learned - optimal) / float(problem.reference_cost()), 1e-3)
