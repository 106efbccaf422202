import math

import keras
import numpy as np

from mlcmk import ScaledResNet, TwoLayerNetwork
from mlcmk.testing import TestCase
from mlcmk.training.path_norm import (
    PathNormRegularized,
    RandomFeatureModel,
    _neuron_correlation_sup,
    path_norm,
    rademacher_complexity,
    regularized_loss,
)


def _relu_x1_network(d=5):
    model = TwoLayerNetwork(1, dtype="float64")
    model.build((None, d))
    w = np.zeros((d, 1))
    w[0, 0] = 1.0
    model.hidden.kernel.assign(w)
    model.hidden.bias.assign(np.zeros(1))
    model.readout.kernel.assign(np.ones((1, 1)))
    return model


class PathNormTest(TestCase):
    def test_relu_x1_as_one_neuron_has_path_norm_one(self):
        model = _relu_x1_network()
        x = np.random.default_rng(0).uniform(size=(7, 5))
        np.testing.assert_allclose(np.asarray(model(x))[:, 0], np.maximum(x[:, 0], 0), rtol=0)
        self.assertEqual(float(path_norm(model)), 1.0)

    def test_two_layer_formula_and_positive_homogeneity(self):
        model = TwoLayerNetwork(30, output_dim=2, dtype="float64")
        model.build((None, 4))
        model.hidden.bias.assign(np.random.default_rng(1).standard_normal(30))
        w, b = np.asarray(model.hidden.kernel), np.asarray(model.hidden.bias)
        a = np.asarray(model.readout.kernel)
        expected = np.sum((np.abs(w).sum(0) + np.abs(b)) * np.abs(a).sum(1)) / 30
        np.testing.assert_allclose(float(path_norm(model)), expected, rtol=1e-13)
        # Rescaling (w_j, b_j) by t > 0 and a_j by 1/t leaves f and the path norm unchanged.
        x = np.random.default_rng(2).standard_normal((5, 4))
        before = np.asarray(model(x))
        t = np.random.default_rng(3).uniform(0.2, 5.0, size=30)
        model.hidden.kernel.assign(w * t)
        model.hidden.bias.assign(b * t)
        model.readout.kernel.assign(a / t[:, None])
        np.testing.assert_allclose(np.asarray(model(x)), before, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(float(path_norm(model)), expected, rtol=1e-12)

    def test_resnet_path_norm_against_path_enumeration(self):
        model = ScaledResNet(2, 3, 4, output_dim=2, dtype="float64")
        model.build((None, 2))
        rng = np.random.default_rng(4)
        for v in model.trainable_variables:
            v.assign(rng.standard_normal(v.shape))
        # Explicit matrices of |weights| on the augmented stream (D + 1, last = constant 1).
        d, width = 2, 3
        lift = np.zeros((d + 1, width + 1))
        lift[:d, :width] = np.abs(model.lift.kernel)
        lift[d, :width] = np.abs(model.lift.bias)
        lift[d, width] = 1.0
        total = lift
        for block in model.blocks:
            inner = np.vstack([np.abs(block.inner_kernel), np.abs(block.bias)[None]])
            outer = np.hstack([np.abs(block.outer_kernel), np.zeros((4, 1))])
            total = total @ (np.eye(width + 1) + block._factor * inner @ outer)
        readout = np.vstack([np.abs(model.readout.kernel), np.abs(model.readout.bias)[None]])
        expected = np.sum(total @ readout)
        np.testing.assert_allclose(float(path_norm(model)), expected, rtol=1e-12)

    def test_regularized_loss_prefactor(self):
        model = _relu_x1_network(d=8)
        x = np.random.default_rng(0).uniform(size=(50, 8))
        y = np.zeros((50, 1))
        total, risk, norm = regularized_loss(model, x, y, lam=0.3)
        np.testing.assert_allclose(float(risk), 0.5 * np.mean(x[:, 0] ** 2), rtol=1e-12)
        np.testing.assert_allclose(
            float(total), float(risk) + 0.3 * math.sqrt(math.log(16) / 50) * 1.0, rtol=1e-12
        )

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "TwoLayerNetwork or a ScaledResNet"):
            path_norm(keras.Sequential([keras.layers.Dense(1)]))
        with self.assertRaisesRegex(ValueError, "lam=-1"):
            regularized_loss(_relu_x1_network(), np.ones((2, 5)), np.ones((2, 1)), lam=-1)
        with self.assertRaisesRegex(ValueError, r"\(n, d\)"):
            rademacher_complexity(np.ones(5))

    def test_regularized_training_fit_save_distribute(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(64, 4)).astype("float32")
        y = np.maximum(x[:, :1], 0)
        def make():
            return PathNormRegularized(TwoLayerNetwork(16), lam=0.1, num_samples=64)
        model = make()
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assertIn("path_norm", history.history)
        self.run_model_saving_test(model, x)
        self.run_distributed_fit_test(make, {"optimizer": "sgd"}, x, y, batch_size=16)


class RademacherTest(TestCase):
    def test_optimiser_finds_the_supremum_in_two_dimensions(self):
        # On the l1 circle in d = 2 a fine grid gives the supremum to high accuracy.
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, size=(40, 2))
        eps = rng.choice([-1.0, 1.0], size=(6, 40))
        found = _neuron_correlation_sup(x, eps, num_restarts=8, num_steps=200, rng=rng)
        s = np.linspace(0, 4, 40001)[:-1]
        w = np.stack([np.cos(s * np.pi / 2), np.sin(s * np.pi / 2)], axis=1)
        w = w / np.abs(w).sum(1, keepdims=True)
        grid = np.abs(eps @ np.maximum(x @ w.T, 0)).max(axis=1) / 40
        np.testing.assert_array_less(found, grid + 1e-9)
        np.testing.assert_allclose(found, grid, rtol=1e-3)

    def test_estimate_is_under_the_bound_and_decays_like_inverse_sqrt_n(self):
        rng = np.random.default_rng(1)
        d = 10
        results = [
            rademacher_complexity(rng.uniform(-1, 1, size=(n, d)), path_norm_bound=2.0,
                                  num_draws=48, num_restarts=8, num_steps=100, seed=n)
            for n in (50, 800)
        ]
        for r in results:
            self.assertLess(r["estimate"], r["bound"])
            self.assertGreater(r["estimate"], 0.1 * r["bound"])
        # Over a factor 16 in n the estimate falls by about 4 (n^-1/2).
        ratio = results[0]["estimate"] / results[1]["estimate"]
        self.assertGreater(ratio, 3.0)
        self.assertLess(ratio, 5.3)


class RandomFeatureModelTest(TestCase):
    def test_min_norm_interpolation_and_frozen_inner_weights(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(20, 3))
        y = np.sin(3 * x[:, :1])
        model = RandomFeatureModel(60, dtype="float64")
        mse = model.fit_least_squares(x, y)
        inner = np.asarray(model.hidden.kernel).copy()
        self.assertLess(mse, 1e-20)
        np.testing.assert_allclose(np.asarray(model(x)), y, atol=1e-9)
        # Minimum norm: a lies in the row space of Phi, so it equals Phi^T (Phi Phi^T)^-1 y.
        phi = model.features(x)
        expected = phi.T @ np.linalg.solve(phi @ phi.T, y)
        np.testing.assert_allclose(
            np.asarray(model.readout.kernel), expected, rtol=0, atol=1e-6 * np.abs(expected).max()
        )
        self.assertEqual(len(model.trainable_variables), 1)
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, epochs=1, verbose=0)
        np.testing.assert_array_equal(np.asarray(model.hidden.kernel), inner)
        reloaded = self.run_model_saving_test(model, x)
        self.assertIsInstance(reloaded, RandomFeatureModel)
