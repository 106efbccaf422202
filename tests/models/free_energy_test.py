"""FreeEnergyModel: forces are -grad A, periodic angles, force matching, saving, replicas."""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from mlcmk import config
from mlcmk.models import FreeEnergyModel
from mlcmk.testing import TestCase


def _exact(s):
    """A(phi, psi) = cos(phi) + 0.5 sin(2 psi) + 0.3 cos(phi - psi) and its mean force."""
    phi, psi = s[:, 0], s[:, 1]
    a = np.cos(phi) + 0.5 * np.sin(2 * psi) + 0.3 * np.cos(phi - psi)
    force = -np.stack([-np.sin(phi) - 0.3 * np.sin(phi - psi),
                       np.cos(2 * psi) + 0.3 * np.sin(phi - psi)], axis=-1)
    return a, force


class FreeEnergyModelTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_mean_force_is_minus_gradient(self):
        model = FreeEnergyModel(["angle", "linear"], hidden_units=(16, 16), center=[0, 1],
                                scale=[1, 2], seed=3)
        s = np.random.default_rng(0).uniform(-3, 3, (8, 2))
        force = np.asarray(model.mean_force(s))
        h = 1e-6
        fd = np.stack([-(np.asarray(model.free_energy(s + h * e))
                         - np.asarray(model.free_energy(s - h * e))) / (2 * h)
                       for e in np.eye(2)], axis=-1)
        np.testing.assert_allclose(force, fd, rtol=1e-6, atol=1e-8)

    def test_angles_are_periodic(self):
        model = FreeEnergyModel([{"name": "phi", "kind": "angle"},
                                 {"name": "t", "kind": "angle", "period": 3.0}], seed=1)
        s = np.random.default_rng(0).uniform(-3, 3, (16, 2))
        a = np.asarray(model(s))
        np.testing.assert_allclose(np.asarray(model(s + [2 * math.pi, 0])), a, atol=1e-12)
        np.testing.assert_allclose(np.asarray(model(s + [0, -6.0])), a, atol=1e-12)
        self.assertEqual(model.num_features, 4)
        # A linear CV is not periodic.
        linear = FreeEnergyModel(["linear", "linear"], seed=1)
        self.assertGreater(np.abs(np.asarray(linear(s + [2 * math.pi, 0]))
                                  - np.asarray(linear(s))).max(), 1e-3)

    def test_force_matching_recovers_free_energy(self):
        rng = np.random.default_rng(0)
        s = rng.uniform(-math.pi, math.pi, (512, 2))
        a, force = _exact(s)
        model = FreeEnergyModel(["angle", "angle"], hidden_units=(32, 32), seed=0)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = model.fit(s, force, batch_size=64, epochs=40, verbose=0)
        losses = history.history["loss"]
        self.assertLess(losses[-1], 0.01 * losses[0])
        test = rng.uniform(-math.pi, math.pi, (256, 2))
        a_test, f_test = _exact(test)
        learned = np.asarray(model.free_energy(test))
        error = learned - a_test
        error -= error.mean()  # A is defined up to a constant
        self.assertLess(np.sqrt(np.mean(error**2)), 0.05 * a_test.std())
        self.assertLess(float(model.evaluate(test, f_test, verbose=0)), 0.01)

    def test_sample_weight_weights_the_loss(self):
        model = FreeEnergyModel(["linear"], hidden_units=(8,), seed=0)
        model.compile()
        s = np.array([[0.0], [1.0]])
        f = np.array([[1.0], [-3.0]])
        residual = (np.asarray(model.mean_force(s)) - f)[:, 0] ** 2
        weighted = model.evaluate(s, f, sample_weight=np.array([3.0, 1.0]), verbose=0)
        np.testing.assert_allclose(weighted, (3 * residual[0] + residual[1]) / 4, rtol=1e-10)

    def test_saving_and_export(self):
        model = FreeEnergyModel(["angle", "linear"], hidden_units=(8, 8), center=[0.0, 0.5],
                                scale=[1.0, 2.0], seed=2)
        s = np.random.default_rng(0).uniform(-2, 2, (6, 2))
        model.compile()
        model.fit(s, np.ones((6, 2)), epochs=1, verbose=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            reloaded = self.run_model_saving_test(model, s)
        self.assertEqual(reloaded.get_config(), model.get_config())
        np.testing.assert_allclose(np.asarray(reloaded.mean_force(s)),
                                   np.asarray(model.mean_force(s)), atol=0)
        self.run_export_test(model, s, atol=1e-12)
        # The optimizer state comes back too: one more step is the same step on both.
        for m in (model, reloaded):
            m.fit(s, np.ones((6, 2)), epochs=1, shuffle=False, verbose=0)
        np.testing.assert_allclose(np.asarray(reloaded.mean_force(s)),
                                   np.asarray(model.mean_force(s)), atol=1e-12)

    def test_distributed_fit_matches_one_device(self):
        s = np.random.default_rng(0).uniform(-2, 2, (32, 2))
        _, force = _exact(s)
        self.run_distributed_fit_test(
            lambda: FreeEnergyModel(["angle", "angle"], hidden_units=(8,), seed=0),
            {"optimizer": keras.optimizers.Adam(1e-2)}, s, force, epochs=2, batch_size=8,
            atol=1e-10)

    def test_float32(self):
        config.set_precision("float32")
        model = FreeEnergyModel(["linear", "angle"], hidden_units=(8,))
        force = model.mean_force(np.zeros((3, 2), dtype="float32"))
        self.assertEqual(force.dtype, tf.float32)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "Unknown kind of collective variable 'torsion'"):
            FreeEnergyModel(["angle", "torsion"])
        with self.assertRaisesRegex(ValueError, "unknown keys"):
            FreeEnergyModel([{"kind": "angle", "periodic": True}])
        with self.assertRaisesRegex(ValueError, "takes no period"):
            FreeEnergyModel([{"kind": "linear", "period": 2.0}])
        with self.assertRaisesRegex(ValueError, "`center` must have one entry"):
            FreeEnergyModel(["linear", "linear"], center=[0.0])
        with self.assertRaisesRegex(ValueError, "`scale` must be > 0"):
            FreeEnergyModel(["linear"], scale=[0.0])
        with self.assertRaisesRegex(TypeError, "collective_variables"):
            FreeEnergyModel("angle")
        with self.assertRaisesRegex(ValueError, "hidden_units"):
            FreeEnergyModel(["angle"], hidden_units=(0,))
