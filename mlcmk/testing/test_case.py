"""`TestCase` with the standard checks every mlcmk layer and model goes through."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import keras
import numpy as np
import tensorflow as tf

from mlcmk import config as mlcmk_config


def two_cpu_strategy():
    """Returns `MirroredStrategy` over `/cpu:0` and `/cpu:1`.

    Needs two logical CPU devices: call `mlcmk.config.configure_logical_cpus(2)` before
    TensorFlow initialises (tests/conftest.py does).
    """
    if len(tf.config.list_logical_devices("CPU")) < 2:
        raise RuntimeError(
            "two_cpu_strategy needs 2 logical CPU devices; call "
            "mlcmk.config.configure_logical_cpus(2) before any TensorFlow op runs."
        )
    # Reduction through one device: CPU collectives can clash between strategies in one process.
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _to_numpy(structure):
    return tf.nest.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), structure)


def _copy_optimizer(compile_kwargs):
    # One optimizer instance cannot serve two models; rebuild it from its config.
    kwargs = dict(compile_kwargs)
    optimizer = kwargs.get("optimizer")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        kwargs["optimizer"] = optimizer.__class__.from_config(optimizer.get_config())
    return kwargs


_EXPORT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    # `import tensorflow` pulls in parts of Keras by itself; only what the reload adds counts.
    baseline = set(sys.modules)
    directory, endpoint = sys.argv[1], sys.argv[2]
    with open(directory + "/inputs.json") as f:
        layout = json.load(f)
    arrays = np.load(directory + "/inputs.npz")
    if layout["kind"] == "single":
        args = [tf.constant(arrays["x0"])]
    elif layout["kind"] == "sequence":
        args = [[tf.constant(arrays[f"x{i}"]) for i in range(layout["count"])]]
    else:
        args = [{key: tf.constant(arrays["x_" + key]) for key in layout["keys"]}]
    loaded = tf.saved_model.load(directory + "/export")
    outputs = tf.nest.flatten(getattr(loaded, endpoint)(*args))
    np.savez(directory + "/outputs.npz", *[np.asarray(t) for t in outputs])
    leaked = sorted(
        m for m in set(sys.modules) - baseline
        if m.split(".")[0] in ("keras", "mlcmk", "tf_keras")
    )
    with open(directory + "/modules.json", "w") as f:
        json.dump(leaked, f)
    """
)


class TestCase(unittest.TestCase):
    """Base class of mlcmk tests: resets the seed and float type around every test."""

    def setUp(self):
        super().setUp()
        self._floatx = keras.config.floatx()
        self._dtype_policy = keras.config.dtype_policy()
        keras.utils.set_random_seed(1234)

    def tearDown(self):
        keras.config.set_floatx(self._floatx)
        keras.config.set_dtype_policy(self._dtype_policy)
        mlcmk_config._set_remapper_for(self._floatx)
        super().tearDown()

    def get_temp_dir(self):
        """A fresh temporary directory, removed after the test."""
        import shutil

        directory = tempfile.mkdtemp(prefix="mlcmk_test_")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return directory

    # ------------------------------------------------------------------ layers
    def run_layer_test(
        self,
        layer_cls,
        init_kwargs,
        input_shape,
        expected_output_shape=None,
        run_fit=True,
        check_float64=True,
    ):
        """Config round trip, symbolic and eager call, a fit step, and all of it in float64.

        Args:
            layer_cls: the layer class.
            init_kwargs: dict of constructor arguments.
            input_shape: full input shape including the batch size, e.g. `(4, 3)`.
            expected_output_shape: full expected output shape; `None` skips the shape check.
            run_fit: whether to fit one epoch of a model made of the layer.
            check_float64: whether to repeat everything under `float64`.
        """
        dtypes = [keras.config.floatx()]
        if check_float64 and "float64" not in dtypes:
            dtypes.append("float64")
        for dtype in dtypes:
            with self.subTest(dtype=dtype), mlcmk_config.precision(dtype):
                self._run_layer_test_once(
                    layer_cls,
                    init_kwargs,
                    tuple(input_shape),
                    expected_output_shape,
                    run_fit,
                    dtype,
                )

    def _run_layer_test_once(
        self, layer_cls, init_kwargs, input_shape, expected_output_shape, run_fit, dtype
    ):
        layer = layer_cls(**init_kwargs)
        config = layer.get_config()
        revived = layer_cls.from_config(config)
        self.assertEqual(revived.get_config(), config, "from_config(get_config()) changed config")
        # The config must be JSON-serialisable for .keras files.
        json.dumps(keras.saving.serialize_keras_object(layer))

        # Symbolic call.
        inputs = keras.Input(shape=input_shape[1:], batch_size=input_shape[0], dtype=dtype)
        symbolic = layer(inputs)
        if expected_output_shape is not None:
            self.assertEqual(tuple(symbolic.shape), tuple(expected_output_shape))
        self.assertEqual(keras.backend.standardize_dtype(symbolic.dtype), dtype)
        model = keras.Model(inputs, symbolic)
        # A config can round-trip yet miss an argument; the revived layer must build the same.
        revived_output = revived(inputs)
        self.assertEqual(
            (tuple(revived_output.shape), [tuple(w.shape) for w in revived.weights]),
            (tuple(symbolic.shape), [tuple(w.shape) for w in layer.weights]),
            "from_config(get_config()) built a different layer",
        )

        # Eager call on a fresh layer.
        eager_layer = layer_cls(**init_kwargs)
        x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
        eager = eager_layer(x)
        if expected_output_shape is not None:
            self.assertEqual(tuple(eager.shape), tuple(expected_output_shape))
        self.assertEqual(keras.backend.standardize_dtype(eager.dtype), dtype)
        for weight in eager_layer.weights:
            self.assertEqual(
                keras.backend.standardize_dtype(weight.dtype), dtype, f"weight {weight.path}"
            )
        self.assertTrue(np.all(np.isfinite(keras.ops.convert_to_numpy(eager))))

        if run_fit and layer.trainable_weights:
            y = np.random.default_rng(1).standard_normal(tuple(symbolic.shape)).astype(dtype)
            before = [np.array(w) for w in model.get_weights()]
            model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
            history = model.fit(x, y, epochs=1, batch_size=input_shape[0], verbose=0)
            loss = history.history["loss"][-1]
            self.assertTrue(np.isfinite(loss), f"fit loss is {loss}")
            after = model.get_weights()
            self.assertTrue(
                any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True)),
                "one fit step changed no weight",
            )
            for weight in model.weights:
                self.assertEqual(keras.backend.standardize_dtype(weight.dtype), dtype)

    # ------------------------------------------------------------------ saving
    def run_model_saving_test(self, model, inputs, atol=0):
        """Saves `model` as `.keras`, reloads it and compares outputs on `inputs`.

        Returns:
            The reloaded model.
        """
        expected = _to_numpy(model(inputs))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        actual = _to_numpy(reloaded(inputs))
        tf.nest.assert_same_structure(expected, actual)
        for e, a in zip(tf.nest.flatten(expected), tf.nest.flatten(actual), strict=True):
            np.testing.assert_allclose(a, e, rtol=0, atol=atol)
        return reloaded

    # ------------------------------------------------------------------ export
    def run_export_test(self, model, inputs, endpoint="serve", atol=1e-6):
        """Exports a SavedModel and calls `endpoint` in a process with only TensorFlow and NumPy.

        Args:
            model: a built Keras model.
            inputs: one array, a list/tuple of arrays, or a dict of arrays.
            endpoint: name of the exported endpoint.
            atol: absolute tolerance against `model(inputs)`.

        Returns:
            The reloaded endpoint's outputs as a list of NumPy arrays (flattened structure).
        """
        expected = [np.asarray(e) for e in tf.nest.flatten(_to_numpy(model(inputs)))]
        with tempfile.TemporaryDirectory() as directory:
            if isinstance(inputs, dict):
                layout = {"kind": "dict", "keys": sorted(inputs)}
                arrays = {f"x_{k}": np.asarray(v) for k, v in inputs.items()}
            elif isinstance(inputs, (list, tuple)):
                layout = {"kind": "sequence", "count": len(inputs)}
                arrays = {f"x{i}": np.asarray(v) for i, v in enumerate(inputs)}
            else:
                layout = {"kind": "single"}
                arrays = {"x0": np.asarray(inputs)}
            np.savez(os.path.join(directory, "inputs.npz"), **arrays)
            with open(os.path.join(directory, "inputs.json"), "w") as f:
                json.dump(layout, f)
            model.export(os.path.join(directory, "export"), format="tf_saved_model", verbose=False)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            result = subprocess.run(
                [sys.executable, "-c", _EXPORT_SCRIPT, directory, endpoint],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            self.assertEqual(
                result.returncode, 0, f"reloading the export failed:\n{result.stderr[-4000:]}"
            )
            with open(os.path.join(directory, "modules.json")) as f:
                leaked = json.load(f)
            self.assertEqual(leaked, [], "the TensorFlow-only reload imported Keras or mlcmk")
            with np.load(os.path.join(directory, "outputs.npz")) as data:
                actual = [data[f"arr_{i}"] for i in range(len(data.files))]
        self.assertEqual(len(actual), len(expected))
        for e, a in zip(expected, actual, strict=True):
            self.assertEqual(a.dtype, e.dtype)
            np.testing.assert_allclose(a, e, rtol=0, atol=atol)
        return actual

    # ------------------------------------------------------------------ distribution
    def run_distributed_fit_test(
        self, model_fn, compile_kwargs, x, y, epochs=1, batch_size=8, atol=1e-5
    ):
        """Fits the same model on one CPU and mirrored on two; losses and weights must agree.

        Args:
            model_fn: zero-argument callable returning a fresh (built or buildable) model.
            compile_kwargs: dict for `model.compile`; an optimizer instance is copied per model.
            x, y: training data (NumPy); `batch_size` must be even.
            epochs: number of epochs.
            batch_size: global batch size.
            atol: tolerance on the final loss and weights.

        Returns:
            `(one_device_history, mirrored_history)` as `History.history` dicts.
        """
        if batch_size % 2:
            raise ValueError(f"`batch_size` must be even for 2 replicas; received {batch_size}")
        results = []
        initial = None
        for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), two_cpu_strategy()):
            keras.utils.set_random_seed(1234)
            with strategy.scope():
                model = model_fn()
                if not model.built:
                    model.build((None, *np.shape(x)[1:]))
                if initial is None:
                    initial = [np.array(w) for w in model.get_weights()]
                else:
                    model.set_weights(initial)
                model.compile(**_copy_optimizer(compile_kwargs))
            history = model.fit(
                x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0
            )
            results.append((history.history, [np.array(w) for w in model.get_weights()]))
        (single_history, single_weights), (mirrored_history, mirrored_weights) = results
        np.testing.assert_allclose(
            mirrored_history["loss"], single_history["loss"], rtol=0, atol=atol
        )
        for s, m in zip(single_weights, mirrored_weights, strict=True):
            np.testing.assert_allclose(m, s, rtol=0, atol=atol)
        self.assertFalse(
            all(np.array_equal(i, s) for i, s in zip(initial, single_weights, strict=True)),
            "the distributed fit test trained nothing",
        )
        return single_history, mirrored_history
