import keras
import numpy as np
import tensorflow as tf

from mlcmk import config as mlcmk_config
from mlcmk.testing import TestCase
from mlcmk.training.extended_msa import ExtendedMSA, ResidualControlNetwork


def _toy(n=100, seed=0):
    x = np.random.default_rng(seed).uniform(-np.pi, np.pi, size=(n, 1))
    return x, np.sin(x)


def _randomise(model, scale=0.5, seed=1):
    rng = np.random.default_rng(seed)
    for v in (model.kernel, model.bias):
        v.assign(scale * rng.standard_normal(v.shape))


class ExtendedMSATest(TestCase):
    def setUp(self):
        super().setUp()
        mlcmk_config.set_precision("float64")  # restored by TestCase.tearDown

    def test_costates_are_backpropagated_gradients(self):
        x, y = _toy(16)
        model = ExtendedMSA(num_layers=6)
        model.build(x.shape)
        _randomise(model)
        x_t = tf.constant(x)
        with tf.GradientTape(persistent=True) as tape:
            states = model.forward_states(x_t)
            for s in states:
                tape.watch(s)
            phi = model.sample_losses(states[-1], y)
            total = tf.reduce_sum(phi)
            objective = tf.reduce_mean(phi) + tf.reduce_sum(model.regularizer())
        # forward_states builds x_{t+1} from x_t, so d total / d x_t is the full chain rule.
        grads = tape.gradient(total, states, unconnected_gradients="zero")
        costates = model.costates([tf.constant(s) for s in states], y)
        self.assertEqual(len(costates), 7)
        for p, g in zip(costates, grads, strict=True):
            np.testing.assert_allclose(np.asarray(p), -np.asarray(g), rtol=1e-12, atol=1e-12)
        # The theta-gradient of the extended Hamiltonian at the current controls is -dJ/dtheta
        # for every rho: the penalties are zero there, and so are their gradients.
        d_kernel, d_bias = tape.gradient(objective, [model.kernel, model.bias])
        theta = tf.concat([tf.reshape(model.kernel, (6, -1)), model.bias], axis=1)
        s, p = tf.stack(states), tf.stack(costates)
        for rho in (0.0, 10.0):
            model.rho = rho
            with tf.GradientTape() as t2:
                t2.watch(theta)
                value = tf.reduce_sum(model.extended_hamiltonian(theta, s, p))
            g = t2.gradient(value, theta).numpy()
            expected = np.concatenate([d_kernel.numpy().reshape(6, -1), d_bias.numpy()], 1)
            np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-12)

    def test_extended_hamiltonian_against_numpy(self):
        x, y = _toy(10)
        model = ExtendedMSA(num_layers=3, rho=2.5, regularization=0.01)
        model.build(x.shape)
        _randomise(model)
        states = [np.asarray(s) for s in model.forward_states(x)]
        costates = [np.asarray(p) for p in model.costates(model.forward_states(x), y)]
        theta = np.random.default_rng(5).standard_normal((3, 30))
        got = model.extended_hamiltonian(tf.constant(theta), tf.constant(np.stack(states)),
                                         tf.constant(np.stack(costates))).numpy()
        for t in range(3):
            w, b = theta[t, :25].reshape(5, 5), theta[t, 25:]
            z = states[t] @ w + b
            g = states[t] + 0.25 * np.tanh(z)
            h = np.mean(np.sum(costates[t + 1] * g, 1)) - 0.01 * np.sum(theta[t] ** 2)
            grad_x = costates[t + 1] + 0.25 * (costates[t + 1] * (1 - np.tanh(z) ** 2)) @ w.T
            penalty = np.mean(np.sum((states[t + 1] - g) ** 2, 1)
                              + np.sum((costates[t] - grad_x) ** 2, 1))
            np.testing.assert_allclose(got[t], -(h - 1.25 * penalty), rtol=1e-12)

    def test_large_rho_decreases_loss_where_basic_msa_fails(self):
        # The toy of Li et al.: sin x, 20 residual tanh layers of width 5, zero initialisation.
        x, y = _toy()
        losses = {}
        for rho in (0.0, 1000.0):
            model = ExtendedMSA(rho=rho, perturbation=0.0)
            model.compile()
            history = model.fit(x, y, batch_size=100, epochs=8, shuffle=False, verbose=0)
            final = float(model.evaluate(x, y, batch_size=100, verbose=0))
            losses[rho] = [*history.history["loss"], final]
        self.assertTrue(np.all(np.diff(losses[1000.0]) < 0), losses[1000.0])
        self.assertLess(losses[1000.0][-1], losses[1000.0][0])
        # The basic MSA overshoots: its loss goes up at some iteration.
        self.assertTrue(np.any(np.diff(losses[0.0]) > 0), losses[0.0])

    def test_softmax_readout_trains(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((30, 4))
        y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
        model = ExtendedMSA(num_layers=3, width=4, readout="slice", output_dim=3,
                            terminal_loss="softmax_cross_entropy", rho=10.0,
                            kernel_initializer="glorot_uniform")
        model.compile()
        history = model.fit(x, y, batch_size=30, epochs=4, shuffle=False, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assertEqual(model(x).shape, (30, 3))

    def test_save_and_distribute(self):
        mlcmk_config.set_precision("float32")
        x, y = _toy(32)
        x, y = x.astype("float32"), y.astype("float32")
        model = ExtendedMSA(num_layers=4, rho=10.0)
        model.build(x.shape)
        _randomise(model)
        model.compile()
        reloaded = self.run_model_saving_test(model, x)
        self.assertIsInstance(reloaded, ExtendedMSA)
        self.assertEqual(reloaded.rho, 10.0)
        self.assertIsInstance(reloaded.optimizer, keras.optimizers.SGD)
        self.run_export_test(model, x)
        self.run_distributed_fit_test(
            lambda: ExtendedMSA(num_layers=4, rho=10.0, perturbation=0.01), {}, x, y,
            epochs=1, batch_size=16, atol=1e-4)
        self.run_distributed_fit_test(
            lambda: ResidualControlNetwork(num_layers=4, kernel_initializer="glorot_uniform"),
            {"optimizer": keras.optimizers.SGD(0.01)}, x, y, epochs=1, batch_size=16)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "rho=-1"):
            ExtendedMSA(rho=-1)
        with self.assertRaisesRegex(ValueError, "readout='mean'"):
            ExtendedMSA(readout="mean")
        with self.assertRaisesRegex(ValueError, "optimizer='adam'"):
            ExtendedMSA().compile(optimizer="adam")
        with self.assertRaisesRegex(ValueError, "multiple of the input dimension"):
            ExtendedMSA(width=5).build((None, 2))
