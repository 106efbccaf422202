import keras
import numpy as np
import tensorflow as tf

from mlcmk import TwoLayerNetwork
from mlcmk import config as mlcmk_config
from mlcmk.testing import TestCase
from mlcmk.training import gauss_newton_max_eigenvalue


def _explicit_gauss_newton(model, x):
    """(2/N) J^T J from the full Jacobian of the N output entries."""
    with tf.GradientTape(persistent=True) as tape:
        f = tf.reshape(model(x), [-1])
    jac = np.concatenate([np.reshape(tape.jacobian(f, v), (f.shape[0], -1))
                          for v in model.trainable_variables], axis=1)
    return 2.0 / f.shape[0] * jac.T @ jac


class GaussNewtonMaxEigenvalueTest(TestCase):
    def setUp(self):
        super().setUp()
        mlcmk_config.set_precision("float64")  # restored by TestCase.tearDown

    def test_matches_numpy_eigenvalue_of_the_explicit_matrix(self):
        rng = np.random.default_rng(0)
        for scaling, out in (("conventional", 1), ("mean_field", 2)):
            net = TwoLayerNetwork(6, output_dim=out, scaling=scaling)
            net.build((None, 3))
            net.hidden.bias.assign(rng.standard_normal(6))
            x = rng.uniform(size=(7, 3))
            expected = np.linalg.eigvalsh(_explicit_gauss_newton(net, x))[-1]
            value, iterations = gauss_newton_max_eigenvalue(net, x)
            self.assertLess(iterations, 500)
            np.testing.assert_allclose(value, expected, rtol=1e-6)

    def test_step_two_over_lambda_is_the_gradient_descent_stability_edge(self):
        # A linear model has a quadratic MSE whose Hessian is exactly the Gauss-Newton matrix.
        rng = np.random.default_rng(1)
        x = rng.uniform(size=(20, 4))
        y = x @ rng.standard_normal((4, 1))
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        hessian = 2.0 / len(x) * np.c_[x, np.ones(len(x))].T @ np.c_[x, np.ones(len(x))]
        value, _ = gauss_newton_max_eigenvalue(model, x)
        np.testing.assert_allclose(value, np.linalg.eigvalsh(hessian)[-1], rtol=1e-8)
        start = model.get_weights()

        def mse():
            return float(np.mean((np.asarray(model(x)) - y) ** 2))

        initial = mse()
        final = {}
        for c in (1.9, 2.1):
            model.set_weights(start)
            # 100 full-batch GD steps in one compiled call.
            model.compile(optimizer=keras.optimizers.SGD(c / value), loss="mse",
                          steps_per_execution=100)
            model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(100), epochs=1, shuffle=False,
                      verbose=0)
            final[c] = mse()
        self.assertLess(final[1.9], initial)
        self.assertGreater(final[2.1], 100 * initial)

    def test_float32(self):
        rng = np.random.default_rng(2)
        x = rng.uniform(size=(9, 3))
        keras.utils.set_random_seed(3)
        net64 = TwoLayerNetwork(5)
        net64.build((None, 3))
        with mlcmk_config.precision("float32"):
            net32 = TwoLayerNetwork(5)
            net32.build((None, 3))
        net32.set_weights([w.astype("float32") for w in net64.get_weights()])
        value32, _ = gauss_newton_max_eigenvalue(net32, x.astype("float32"))
        value64, _ = gauss_newton_max_eigenvalue(net64, x)
        np.testing.assert_allclose(value32, value64, rtol=1e-4)

    def test_bad_arguments(self):
        net = TwoLayerNetwork(3)
        x = np.zeros((2, 2))
        with self.assertRaisesRegex(ValueError, "built"):
            gauss_newton_max_eigenvalue(net, x)
        net.build((None, 2))
        for kwargs, name in (({"iterations": 0}, "iterations"), ({"rtol": -1.0}, "rtol"),
                             ({"seed": -1}, "seed"), ({"iterations": True}, "iterations")):
            with self.assertRaisesRegex(ValueError, name):
                gauss_newton_max_eigenvalue(net, x, **kwargs)
