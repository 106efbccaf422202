import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

import mlcmk
from mlcmk import config
from mlcmk.testing import TestCase


class ConfigTest(TestCase):
    def test_set_and_get_precision(self):
        config.set_precision("float64")
        self.assertEqual(config.get_precision(), "float64")
        self.assertEqual(keras.config.floatx(), "float64")
        self.assertEqual(mlcmk.ScaledDense(2).dtype_policy.name, "float64")
        config.set_precision("float32")
        self.assertEqual(mlcmk.ScaledDense(2).dtype_policy.name, "float32")
        with self.assertRaisesRegex(ValueError, r"dtype='float16'"):
            config.set_precision("float16")

    def test_precision_context_restores(self):
        self.assertEqual(config.get_precision(), "float32")
        with self.assertRaises(RuntimeError):
            with config.precision("float64"):
                self.assertEqual(config.get_precision(), "float64")
                raise RuntimeError("inside")
        self.assertEqual(config.get_precision(), "float32")
        self.assertEqual(keras.config.dtype_policy().name, "float32")

    def test_float64_turns_the_remapper_off_and_float32_back_on(self):
        def remapping():
            return tf.config.optimizer.get_experimental_options().get("remapping", True)

        self.assertTrue(remapping())
        config.set_precision("float64")
        self.assertFalse(remapping())
        config.set_precision("float32")
        self.assertTrue(remapping())
        with config.precision("float64"):
            self.assertFalse(remapping())
        self.assertTrue(remapping())
        # A remapper the user turned off stays off.
        tf.config.optimizer.set_experimental_options({"remapping": False})
        try:
            config.set_precision("float64")
            config.set_precision("float32")
            self.assertFalse(remapping())
        finally:
            tf.config.optimizer.set_experimental_options({"remapping": True})

    def test_float64_graphs_log_no_remapper_warnings(self):
        # Grappler's remapper logs "Not handling type DT_DOUBLE" (C++, to stderr) for every
        # float64 dense network it sees; `set_precision("float64")` turns it off.
        script = (
            "import numpy as np, keras\n"
            "from mlcmk import config\n"
            "config.set_precision('float64')\n"
            "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, 'tanh'),"
            " keras.layers.Dense(1)])\n"
            "model.compile('sgd', 'mse')\n"
            "model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)\n"
            "print(model.predict(np.ones((2, 3)), verbose=0).dtype)\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": mlcmk.__path__[0] + "/.."},
                                timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("float64", result.stdout)
        self.assertNotIn("Not handling type", result.stderr)

    def test_float64_reaches_weights_outputs_loss_and_metrics(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((32, 3))
        y = rng.standard_normal((32, 1))
        with config.precision("float64"):
            model = mlcmk.TwoLayerNetwork(20, activation="tanh")
            model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
            model.fit(x, y, epochs=1, batch_size=8, verbose=0)
            self.assertTrue(all(w.dtype == "float64" for w in model.weights))
            self.assertEqual(model(x).dtype, tf.float64)
            metric_variables = [v for m in model.metrics for v in m.variables]
            self.assertTrue(metric_variables)
            self.assertTrue(all(v.dtype == "float64" for v in metric_variables))
            result = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
            prediction = np.asarray(model(x))
        # A float32 loss would differ from the float64 reference at the 1e-8 relative level.
        np.testing.assert_allclose(result["loss"], np.mean((prediction - y) ** 2), rtol=1e-13)
        np.testing.assert_allclose(result["mae"], np.mean(np.abs(prediction - y)), rtol=1e-13)

    def test_set_seed(self):
        config.set_seed(3)
        a = np.asarray(keras.random.normal((4,)))
        config.set_seed(3)
        np.testing.assert_array_equal(np.asarray(keras.random.normal((4,))), a)
        for bad in (-1, 1.5, "3"):
            with self.assertRaisesRegex(ValueError, rf"seed={bad!r}"):
                config.set_seed(bad)

    def test_logical_cpus(self):
        # tests/conftest.py created two logical CPUs before TensorFlow initialised.
        self.assertGreaterEqual(len(tf.config.list_logical_devices("CPU")), 2)
        config.configure_logical_cpus(2)  # already satisfied: no error
        with self.assertRaisesRegex(RuntimeError, r"configure_logical_cpus\(8\)"):
            config.configure_logical_cpus(8)
        with self.assertRaisesRegex(ValueError, r"n=0"):
            config.configure_logical_cpus(0)


class ImportTest(TestCase):
    def test_wrong_backend_is_a_clear_import_error(self):
        result = subprocess.run(
            [sys.executable, "-c", "import mlcmk"],
            env={"KERAS_BACKEND": "jax", "PYTHONPATH": mlcmk.__path__[0] + "/.."},
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImportError", result.stderr)
        self.assertIn("KERAS_BACKEND='jax'", result.stderr)
        self.assertIn("KERAS_BACKEND=tensorflow", result.stderr)

    def test_public_names(self):
        self.assertEqual(mlcmk.__version__, "0.1.0")
        for name in (
            "config",
            "ScaledDense",
            "ScaledResidualBlock",
            "TwoLayerNetwork",
            "ScaledResNet",
            "make_scaled_resnet",
        ):
            self.assertTrue(hasattr(mlcmk, name), name)
