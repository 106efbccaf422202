import keras
import numpy as np
import tensorflow as tf

from mlcmk import ScaledResNet, TwoLayerNetwork
from mlcmk import config as mlcmk_config
from mlcmk.testing import TestCase
from mlcmk.training.particle_flow import ParticleRecorder, ParticleWassersteinFlow


def _data(n=32, d=3, dtype="float64"):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(dtype)
    return x, np.sin(x[:, :1]).astype(dtype)


class ParticleWassersteinFlowTest(TestCase):
    def setUp(self):
        super().setUp()
        mlcmk_config.set_precision("float64")  # restored by TestCase.tearDown
    def test_equals_gradient_descent_with_step_eta_times_m(self):
        x, y = _data()
        m, eta, lam = 20, 0.05, 0.3
        net = TwoLayerNetwork(m, activation="tanh", dtype="float64")
        net.build(x.shape)
        net.hidden.bias.assign(np.random.default_rng(1).standard_normal(m))
        start = [np.array(w) for w in net.get_weights()]
        flow = ParticleWassersteinFlow(net, time_step=eta, weight_decay=lam)
        flow.compile(loss="mse")
        flow.fit(x, y, batch_size=len(x), epochs=5, shuffle=False, verbose=0)
        self.assertAlmostEqual(flow.flow_time, 5 * eta)

        # Reference: plain full-batch GD on the raw parameters, step eta*m on the loss and
        # eta on the weight decay (a per-particle force, not multiplied by m).
        ref = TwoLayerNetwork(m, activation="tanh", dtype="float64")
        ref.build(x.shape)
        ref.set_weights(start)
        for _ in range(5):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(ref(x) - y))
            grads = tape.gradient(loss, ref.trainable_variables)
            for g, v in zip(grads, ref.trainable_variables, strict=True):
                v.assign(v - eta * (m * g + lam * v))
        for a, b in zip(net.get_weights(), ref.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

        # Without weight decay this is exactly keras' SGD(eta * m) on the network.
        net2 = TwoLayerNetwork(m, activation="tanh", dtype="float64")
        net2.build(x.shape)
        net2.set_weights(start)
        flow2 = ParticleWassersteinFlow(net2, time_step=eta)
        flow2.compile(loss="mse")
        flow2.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
        sgd = TwoLayerNetwork(m, activation="tanh", dtype="float64")
        sgd.build(x.shape)
        sgd.set_weights(start)
        sgd.compile(optimizer=keras.optimizers.SGD(eta * m), loss="mse")
        sgd.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
        for a, b in zip(net2.get_weights(), sgd.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

    def test_widths_follow_the_same_flow_in_rescaled_time(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, size=(64, 2))
        y = np.maximum(x[:, :1], 0)
        flow_curves, fixed_lr_curves = [], []
        for m in (800, 3200):
            keras.utils.set_random_seed(m)  # independent particles
            flow = ParticleWassersteinFlow(TwoLayerNetwork(m), time_step=0.2)
            flow.compile()
            flow_curves.append(flow.fit(x, y, batch_size=64, epochs=25, verbose=0)
                               .history["loss"])
            # The same step 0.2 * 800 for both widths, i.e. no time rescaling.
            keras.utils.set_random_seed(m)
            net = TwoLayerNetwork(m)
            net.compile(optimizer=keras.optimizers.SGD(0.2 * 800), loss="mse")
            fixed_lr_curves.append(net.fit(x, y, batch_size=64, epochs=25, verbose=0)
                                   .history["loss"])
        small, large = (np.array(c) for c in flow_curves)
        # Independent draws of O(1/sqrt(m)) fluctuations: a few per cent at m = 800.
        self.assertLess(np.max(np.abs(small - large) / small), 0.15)
        self.assertLess(large[-1], 0.1 * large[0])
        # Without the rescaling the wide network moves 4 times slower.
        self.assertGreater(fixed_lr_curves[1][-1], 2 * fixed_lr_curves[0][-1])

    def test_resnet_particles_move_with_step_eta_L_M(self):
        x, y = _data(d=2)
        L, M, eta = 3, 4, 0.02
        net = ScaledResNet(L, 3, M, activation="tanh", dtype="float64")
        net.build(x.shape)
        start = [np.array(w) for w in net.get_weights()]
        flow = ParticleWassersteinFlow(net, time_step=eta)
        flow.compile(loss="mse")
        flow.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
        ref = ScaledResNet(L, 3, M, activation="tanh", dtype="float64")
        ref.build(x.shape)
        ref.set_weights(start)
        block_vars = {id(v) for b in ref.blocks for v in b.trainable_variables}
        self.assertEqual(len(block_vars), 3 * L)
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(ref(x) - y))
            grads = tape.gradient(loss, ref.trainable_variables)
            for g, v in zip(grads, ref.trainable_variables, strict=True):
                v.assign(v - eta * (L * M if id(v) in block_vars else 1) * g)
        for a, b in zip(net.get_weights(), ref.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

    def test_langevin_noise_has_variance_two_eta_tau(self):
        x, y = _data()
        m, eta, tau = 4000, 0.01, 0.5
        results = []
        for temperature in (0.0, tau, tau):
            net = TwoLayerNetwork(m, dtype="float64")
            net.build(x.shape)
            net.set_weights([np.array(w) for w in results[0][1]] if results else
                            net.get_weights())
            start = [np.array(w) for w in net.get_weights()]
            flow = ParticleWassersteinFlow(net, time_step=eta, temperature=temperature, seed=3)
            flow.compile(loss="mse")
            flow.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
            results.append((net.get_weights(), start))
        deterministic, noisy, repeat = (r[0] for r in results)
        for a, b in zip(noisy, repeat, strict=True):  # seeded: reproducible
            np.testing.assert_array_equal(a, b)
        increments = np.concatenate(
            [(a - b).ravel() for a, b in zip(noisy, deterministic, strict=True)])
        self.assertEqual(increments.size, m * 5)
        # std of sqrt(2 eta tau) N(0,1) over 20000 draws: relative error ~ 0.5%.
        np.testing.assert_allclose(np.std(increments), np.sqrt(2 * eta * tau), rtol=0.03)
        self.assertLess(abs(np.mean(increments)), 4 * np.sqrt(2 * eta * tau / increments.size))

    def test_recorder_save_and_distribute(self):
        mlcmk_config.set_precision("float32")
        x, y = _data(dtype="float32")
        flow = ParticleWassersteinFlow(TwoLayerNetwork(8), time_step=0.05)
        flow.compile()
        recorder = ParticleRecorder(every=2)
        history = flow.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[recorder])
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assertEqual(recorder.times, [0.0, 0.1, 0.2])
        self.assertEqual(recorder.snapshots[0]["w"].shape, (8, 3))
        path = self.get_temp_dir() + "/particles.npz"
        recorder.save(path)
        with np.load(path) as data:
            self.assertEqual(data["a"].shape, (3, 8, 1))
        np.testing.assert_array_equal(recorder.snapshots[-1]["a"], flow.network.readout.kernel)
        reloaded = self.run_model_saving_test(flow, x)
        self.assertIsInstance(reloaded.network, TwoLayerNetwork)
        self.assertEqual(reloaded.time_step, 0.05)
        self.run_export_test(flow, x)
        for kwargs in ({}, {"temperature": 0.01, "weight_decay": 0.1}):
            self.run_distributed_fit_test(
                lambda kwargs=kwargs: ParticleWassersteinFlow(
                    ScaledResNet(2, 3, 4, activation="tanh"), time_step=0.01, **kwargs),
                {}, x, y, epochs=2, batch_size=16)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "scaling='mean_field'"):
            ParticleWassersteinFlow(TwoLayerNetwork(4, scaling="conventional"))
        with self.assertRaisesRegex(ValueError, "time_step=0"):
            ParticleWassersteinFlow(TwoLayerNetwork(4), time_step=0)
        with self.assertRaisesRegex(ValueError, "temperature=-1"):
            ParticleWassersteinFlow(TwoLayerNetwork(4), temperature=-1)
        with self.assertRaisesRegex(TypeError, "TwoLayerNetwork or a ScaledResNet"):
            ParticleWassersteinFlow(keras.layers.Dense(3))
        with self.assertRaisesRegex(ValueError, "optimizer='adam'"):
            ParticleWassersteinFlow(TwoLayerNetwork(4)).compile(optimizer="adam")
