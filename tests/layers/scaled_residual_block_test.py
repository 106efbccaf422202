import keras
import numpy as np
import tensorflow as tf

from mlcmk import ScaledResidualBlock
from mlcmk.testing import TestCase


def numpy_block(z, inner, bias, outer, num_blocks, scaling):
    hidden_units = inner.shape[1]
    factor = {
        "mean_field": 1.0 / (num_blocks * hidden_units),
        "ntk": 1.0 / (num_blocks * np.sqrt(hidden_units)),
        "conventional": 1.0,
    }[scaling]
    total = np.zeros_like(z)
    for j in range(hidden_units):  # the sum over neurons written out, as in the formula
        total += np.outer(np.tanh(z @ inner[:, j] + bias[j]), outer[j])
    return z + factor * total


class ScaledResidualBlockTest(TestCase):
    def test_layer(self):
        self.run_layer_test(
            ScaledResidualBlock, {"hidden_units": 6, "num_blocks": 3}, (4, 5), (4, 5)
        )

    def test_matches_numpy_for_every_scaling(self):
        rng = np.random.default_rng(0)
        z = rng.standard_normal((6, 4))
        for scaling in ("mean_field", "ntk", "conventional"):
            with self.subTest(scaling=scaling):
                layer = ScaledResidualBlock(
                    7, 3, activation="tanh", scaling=scaling, dtype="float64"
                )
                layer.build(z.shape)
                weights = [
                    rng.standard_normal((4, 7)),
                    rng.standard_normal(7),
                    rng.standard_normal((7, 4)),
                ]
                layer.set_weights(weights)
                expected = numpy_block(z, *weights, 3, scaling)
                np.testing.assert_allclose(np.asarray(layer(z)), expected, rtol=1e-12)

    def test_gradients_match_finite_differences(self):
        rng = np.random.default_rng(1)
        z = rng.standard_normal((3, 4))
        probe = rng.standard_normal((3, 4))
        layer = ScaledResidualBlock(5, 2, activation="tanh", dtype="float64")
        layer.build(z.shape)
        layer.set_weights(
            [rng.standard_normal((4, 5)), rng.standard_normal(5), rng.standard_normal((5, 4))]
        )
        variables = [layer.inner_kernel, layer.bias, layer.outer_kernel]
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(layer(z) * probe)
        grads = tape.gradient(value, [v.value for v in variables])
        eps = 1e-6
        for variable, grad in zip(variables, grads, strict=True):
            base = np.asarray(variable)
            fd = np.zeros_like(base)
            for index in np.ndindex(base.shape):
                for sign in (1, -1):
                    shifted = base.copy()
                    shifted[index] += sign * eps
                    variable.assign(shifted)
                    fd[index] += sign * float(np.sum(np.asarray(layer(z)) * probe)) / (2 * eps)
                variable.assign(base)
            np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-9)

    def test_one_neuron_moves_output_by_one_over_width(self):
        z = np.random.default_rng(2).standard_normal((5, 3))
        w0 = np.array([0.4, 0.1, -0.6])
        a0 = np.array([1.0, -2.0, 0.5])
        expected = np.outer(np.maximum(z @ w0, 0.0), a0) / 4  # 1/L with L = 4
        for m in (10, 100, 1000):
            layer = ScaledResidualBlock(m, 4, dtype="float64")
            layer.build(z.shape)
            inner, bias, outer = (np.asarray(v) for v in layer.get_weights())
            inner[:, 0] = w0
            layer.set_weights([inner, np.zeros_like(bias), outer])
            before = np.asarray(layer(z))
            outer[0] += a0
            layer.outer_kernel.assign(outer)
            change = np.asarray(layer(z)) - before
            np.testing.assert_allclose(change * m, expected, rtol=1e-9, atol=1e-12)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"hidden_units=0"):
            ScaledResidualBlock(0, 2)
        with self.assertRaisesRegex(ValueError, r"num_blocks=-1"):
            ScaledResidualBlock(3, -1)
        with self.assertRaisesRegex(ValueError, r"num_blocks=1\.5"):
            ScaledResidualBlock(3, 1.5)
        with self.assertRaisesRegex(ValueError, r"scaling='resnet'.*"):
            ScaledResidualBlock(3, 2, scaling="resnet")
        with self.assertRaisesRegex(ValueError, r"input_shape=\(4,\)"):
            ScaledResidualBlock(3, 2).build((4,))

    def test_save_export_distribute(self):
        def model_fn():
            inputs = keras.Input((4,))
            z = ScaledResidualBlock(8, 2, activation="tanh")(inputs)
            z = ScaledResidualBlock(8, 2, activation="tanh")(z)
            return keras.Model(inputs, keras.layers.Dense(1)(z))

        x = np.random.default_rng(0).standard_normal((16, 4)).astype("float32")
        y = np.random.default_rng(1).standard_normal((16, 1)).astype("float32")
        model = model_fn()
        self.run_model_saving_test(model, x)
        self.run_export_test(model, x)
        self.run_distributed_fit_test(
            model_fn, {"optimizer": "adam", "loss": "mse"}, x, y, batch_size=8
        )
