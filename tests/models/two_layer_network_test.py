import keras
import numpy as np

from mlcmk import TwoLayerNetwork
from mlcmk.testing import TestCase


class TwoLayerNetworkTest(TestCase):
    def test_matches_numpy_formula(self):
        x = np.random.default_rng(0).standard_normal((6, 3))
        for scaling, factor in (("mean_field", 1 / 50), ("ntk", 50**-0.5), ("conventional", 1)):
            with self.subTest(scaling=scaling):
                model = TwoLayerNetwork(50, scaling=scaling, dtype="float64")
                model.build(x.shape)
                w, b = (np.asarray(v) for v in model.hidden.weights)
                a = np.asarray(model.readout.kernel)
                expected = factor * np.maximum(x @ w + b, 0.0) @ a
                np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-12)

    def test_initialisation_scales(self):
        mean_field = TwoLayerNetwork(2000)
        mean_field.build((None, 100))
        conventional = TwoLayerNetwork(2000, scaling="conventional")
        conventional.build((None, 100))
        # inner weights N(0, I/d); outer N(0, 1) (mean field) or N(0, 1/m) (conventional)
        self.assertAlmostEqual(float(np.var(mean_field.hidden.kernel)), 1 / 100, delta=2e-4)
        self.assertAlmostEqual(float(np.var(mean_field.readout.kernel)), 1.0, delta=0.1)
        self.assertAlmostEqual(float(np.var(conventional.readout.kernel)), 1 / 2000, delta=1e-4)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"width=0"):
            TwoLayerNetwork(0)
        with self.assertRaisesRegex(ValueError, r"output_dim=-2"):
            TwoLayerNetwork(3, output_dim=-2)
        with self.assertRaisesRegex(ValueError, r"scaling='nope'"):
            TwoLayerNetwork(3, scaling="nope")

    def test_fit_save_export_distribute(self):
        x = np.random.default_rng(0).standard_normal((32, 3)).astype("float32")
        y = np.sin(x[:, :1])
        model = TwoLayerNetwork(16, output_dim=1, activation="tanh")
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        counter = keras.callbacks.LambdaCallback()
        counter.epochs = 0

        def on_epoch_end(epoch, logs):
            counter.epochs += 1

        counter.on_epoch_end = on_epoch_end
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[counter])
        self.assertEqual(counter.epochs, 3)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        reloaded = self.run_model_saving_test(model, x)
        self.assertIsInstance(reloaded, TwoLayerNetwork)
        self.assertEqual(reloaded.get_config(), model.get_config())
        self.run_export_test(model, x)
        self.run_distributed_fit_test(
            lambda: TwoLayerNetwork(16, activation="tanh"),
            {"optimizer": "sgd", "loss": "mse"},
            x,
            y,
        )
