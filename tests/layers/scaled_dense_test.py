import keras
import numpy as np
import tensorflow as tf

from mlcmk import ScaledDense
from mlcmk.testing import TestCase

SCALE = {"mean_field": lambda m: 1.0 / m, "ntk": lambda m: m**-0.5, "conventional": lambda m: 1.0}


def numpy_scaled_dense(x, kernel, bias, scaling, activation):
    m = x.shape[-1]
    pre = SCALE[scaling](m) * np.einsum("bi,ij->bj", x, kernel)
    if bias is not None:
        pre = pre + bias
    return activation(pre)


class ScaledDenseTest(TestCase):
    def test_layer(self):
        self.run_layer_test(ScaledDense, {"units": 3, "activation": "tanh"}, (4, 5), (4, 3))
        self.run_layer_test(
            ScaledDense,
            {"units": 2, "scaling": "conventional", "use_bias": False},
            (2, 3, 6),
            (2, 3, 2),
            check_float64=False,
        )

    def test_matches_numpy_for_every_scaling(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((7, 13))
        for scaling in ("mean_field", "ntk", "conventional"):
            with self.subTest(scaling=scaling):
                layer = ScaledDense(4, activation="tanh", scaling=scaling, dtype="float64")
                layer.build(x.shape)
                kernel, bias = rng.standard_normal((13, 4)), rng.standard_normal(4)
                layer.set_weights([kernel, bias])
                expected = numpy_scaled_dense(x, kernel, bias, scaling, np.tanh)
                np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-12)

    def test_sqrt_alias_and_default_initializers(self):
        self.assertEqual(ScaledDense(2, scaling="sqrt").scaling, "ntk")
        mean_field = ScaledDense(500).kernel_initializer
        self.assertIsInstance(mean_field, keras.initializers.RandomNormal)
        self.assertEqual(mean_field.stddev, 1.0)
        conventional = ScaledDense(2, scaling="conventional").kernel_initializer
        self.assertIsInstance(conventional, keras.initializers.GlorotUniform)
        layer = ScaledDense(400)
        layer.build((None, 300))
        # O(1) particles: the kernel entries have unit variance whatever the width.
        self.assertAlmostEqual(float(np.std(np.asarray(layer.kernel))), 1.0, delta=0.01)

    def test_gradients_match_finite_differences(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((3, 4))
        weights = rng.standard_normal((3, 2))
        layer = ScaledDense(2, activation="tanh", scaling="ntk", dtype="float64")
        layer.build(x.shape)
        layer.set_weights([rng.standard_normal((4, 2)), rng.standard_normal(2)])

        def objective():
            return float(np.sum(np.asarray(layer(x)) * weights))

        x_var = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(layer(x_var) * weights)
        grad_x, grad_kernel = tape.gradient(value, [x_var, layer.kernel.value])
        eps = 1e-6
        kernel = np.asarray(layer.kernel)
        fd_kernel = np.zeros_like(kernel)
        for index in np.ndindex(kernel.shape):
            for sign in (1, -1):
                shifted = kernel.copy()
                shifted[index] += sign * eps
                layer.kernel.assign(shifted)
                fd_kernel[index] += sign * objective() / (2 * eps)
        layer.kernel.assign(kernel)
        np.testing.assert_allclose(np.asarray(grad_kernel), fd_kernel, rtol=1e-6, atol=1e-9)
        fd_x = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            for sign in (1, -1):
                shifted = x.copy()
                shifted[index] += sign * eps
                value = float(np.sum(np.asarray(layer(shifted)) * weights))
                fd_x[index] += sign * value / (2 * eps)
        np.testing.assert_allclose(np.asarray(grad_x), fd_x, rtol=1e-6, atol=1e-9)

    def test_one_neuron_moves_output_by_one_over_width(self):
        # f(x) = c(m) sum_j a_j h_j(x); shifting a_0 by 1 moves f by c(m) h_0(x).
        x = np.random.default_rng(2).standard_normal((5, 3))
        w0 = np.array([0.3, -0.7, 0.5])
        h0 = np.maximum(x @ w0, 0.0)
        for scaling, rate in (("mean_field", 1.0), ("ntk", 0.5), ("conventional", 0.0)):
            normalised = []
            for m in (10, 100, 1000):
                hidden = keras.layers.Dense(m, activation="relu", dtype="float64")
                hidden.build(x.shape)
                kernel, bias = (np.asarray(v) for v in hidden.weights)
                kernel[:, 0] = w0
                hidden.set_weights([kernel, bias])
                readout = ScaledDense(1, scaling=scaling, use_bias=False, dtype="float64")
                features = hidden(x)
                before = np.asarray(readout(features))
                a = np.asarray(readout.kernel)
                a[0, 0] += 1.0
                readout.kernel.assign(a)
                change = np.asarray(readout(features)) - before
                normalised.append(change[:, 0] * m**rate)
            with self.subTest(scaling=scaling):
                for value in normalised:
                    np.testing.assert_allclose(value, h0, rtol=1e-10, atol=1e-12)

    def test_bad_arguments(self):
        for units in (0, -3, 2.5, True):
            with self.assertRaisesRegex(ValueError, rf"units={units!r}"):
                ScaledDense(units)
        with self.assertRaisesRegex(ValueError, r"scaling='foo'.*|.*'mean_field'.*scaling='foo'"):
            ScaledDense(2, scaling="foo")
        with self.assertRaisesRegex(ValueError, r"'conventional'"):
            ScaledDense(2, scaling="foo")
        with self.assertRaisesRegex(ValueError, r"input_shape=\(5,\)"):
            ScaledDense(2).build((5,))
        with self.assertRaises(ValueError):
            ScaledDense(2)(np.ones((5,), "float32"))

    def test_save_export_distribute(self):
        def model_fn():
            inputs = keras.Input((5,))
            return keras.Model(inputs, ScaledDense(2, activation="tanh")(inputs))

        x = np.random.default_rng(0).standard_normal((16, 5)).astype("float32")
        y = np.random.default_rng(1).standard_normal((16, 2)).astype("float32")
        model = model_fn()
        self.run_model_saving_test(model, x)
        outputs = self.run_export_test(model, x)
        self.assertEqual(outputs[0].shape, (16, 2))
        self.run_distributed_fit_test(
            model_fn, {"optimizer": keras.optimizers.SGD(0.1), "loss": "mse"}, x, y, epochs=2
        )
