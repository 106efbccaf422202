"""DeepBSDE: convergence to closed forms, batched = step by step, replicas, saving, resume."""

import json
import math
import os
import subprocess
import sys
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlcmk import config
from mlcmk.layers import BSDEStep
from mlcmk.models import DeepBSDE
from mlcmk.problems import register_problem
from mlcmk.problems.bsde import BlackScholesBarenblatt, BSDEProblem
from mlcmk.testing import TestCase, two_cpu_strategy
from mlcmk.training import ResumableCheckpoint, StopOnNonFiniteLoss
from mlcmk.training.bsde_solver import learning_rate_schedule


def _bsb(dim=4, **kwargs):
    return BlackScholesBarenblatt(dim=dim, num_steps=10, **kwargs)


def _trained(problem, iterations, lr=1e-2, **kwargs):
    model = DeepBSDE(problem, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(lr, iterations)))
    model.fit(epochs=2, steps_per_epoch=iterations // 2, verbose=0)
    return model


class DeepBSDETest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_converges_to_closed_form_y0_and_z(self):
        problem = _bsb(dim=4)
        model = _trained(problem, 600)
        exact = float(problem.reference_value())
        # With Z = 0, Y_N = Y0 (1 + r dt)^N, so the best such Y0 is E g(X_T) (1 + r dt)^-N
        # = exp(sigma^2 T) |x0|^2 (1 + r dt)^-N: about 10% below u(0, x0) here; its Z error is 1.
        trivial_y0 = math.exp(0.4**2) * np.sum(problem.x0**2) / (1 + 0.05 * problem.dt) ** 10
        self.assertGreater(abs(trivial_y0 - exact) / exact, 0.05)
        self.assertLess(abs(model.y0_value() - exact) / exact, 0.01)
        errors = model.z_errors(num_paths=64)
        self.assertLess(max(errors["relative_l2"]), 0.15)
        self.assertGreater(min(errors["cosine"]), 0.98)
        self.assertLess(float(model.evaluate(verbose=0)), 0.1 * model.trivial_loss)

    def test_learns_u0_on_a_box_of_starting_points(self):
        problem = BlackScholesBarenblatt(dim=3, num_steps=10, x0=1.0, x0_spread=0.5)
        model = _trained(problem, 1000, batch_size=128)
        x0 = np.random.default_rng(7).uniform(0.6, 1.4, size=(32, 3))  # held out
        learned = np.asarray(model.initial_value(tf.constant(x0)))
        exact = problem.exact_solution(0.0, x0)
        self.assertLess(np.sqrt(np.mean((learned - exact) ** 2) / np.mean(exact**2)), 0.03)

    def test_batched_equals_step_by_step(self):
        for z_network, extremes in (("gradient", False), ("gradient", True), ("shared", False),
                                    ("per_step", False)):
            problem = _bsb(dim=3)
            model = DeepBSDE(problem, z_network=z_network, seed=3, extremes=extremes)
            # Non-trivial weights everywhere (output layers start at zero).
            for w in model.trainable_weights:
                w.assign(w + 0.05 * np.random.default_rng(1).standard_normal(w.shape))
            x, dw = problem.sample_paths(16, (4, 5), dtype="float64")
            y_batched, z_batched = model.simulate(x, dw)
            step = BSDEStep(problem)
            y = tf.fill((16,), tf.cast(model.y0, "float64"))
            for n in range(problem.num_steps):
                z_n = model.z(n * problem.dt, x[:, n])
                np.testing.assert_allclose(z_n, z_batched[:, n], rtol=1e-10, atol=1e-12)
                y = step(x[:, n], y, z_n, dw[:, n], t=n * problem.dt)
            np.testing.assert_allclose(y, y_batched, rtol=1e-10, err_msg=z_network)

    def test_extreme_gradient_equals_autodiff_of_the_smooth_extremes(self):
        problem = _bsb(dim=5)
        model = DeepBSDE(problem, seed=2, extremes=True)
        rng = np.random.default_rng(3)
        for layer in model.extreme_layers:
            for w in layer.trainable_weights:
                w.assign(w + 0.3 * rng.standard_normal(w.shape))
        xn = tf.constant(3.0 * rng.standard_normal((4, 6, 5)))  # several sd: sharp softmax weights
        t_in = tf.constant(rng.uniform(size=(4, 6, 1)))
        b = model.extreme_sharpness
        with tf.GradientTape() as tape:
            tape.watch(xn)
            smooth = (tf.reduce_logsumexp(xn[..., None] * b, axis=-2) - math.log(5)) / b
            h = tf.concat([t_in, smooth], axis=-1)
            for layer in model.extreme_layers:
                h = layer(h)
            value = tf.reduce_sum(h)
        np.testing.assert_allclose(model._extreme_gradient(xn, t_in), tape.gradient(value, xn),
                                   rtol=1e-10, atol=1e-12)

    def test_bsde_step_matches_numpy(self):
        problem = _bsb(dim=3)
        layer = BSDEStep(problem)
        rng = np.random.default_rng(0)
        x, z, dw = (rng.standard_normal((5, 3)) for _ in range(3))
        y = rng.standard_normal(5)
        out = np.asarray(layer(x, y, z, dw, t=0.3))
        f = -0.05 * (y - z.sum(-1) / 0.4)
        np.testing.assert_allclose(out, y - f * problem.dt + np.sum(z * dw, -1), rtol=1e-12)
        self.assertEqual(out.dtype, np.float64)
        again = BSDEStep.from_config(layer.get_config())
        np.testing.assert_allclose(again(x, y, z, dw, t=0.3), out, rtol=0)

    def test_replicas_draw_different_paths_and_fit_like_one_device(self):
        problem = _bsb(dim=3)
        strategy = two_cpu_strategy()
        with strategy.scope():
            model = DeepBSDE(problem, seed=1)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(1e-2, 400)))
        per_replica = strategy.run(tf.function(lambda: model.training_paths()[0]))
        a, b = (np.asarray(v) for v in strategy.experimental_local_results(per_replica))
        self.assertEqual(a.shape, (32, 11, 3))
        self.assertFalse(np.allclose(a, b))
        model.fit(epochs=2, steps_per_epoch=200, verbose=0)
        single = _trained(problem, 400, seed=1)
        exact = float(problem.reference_value())
        # Same statistical answer: both within 1% of the exact value and of each other.
        for m in (model, single):
            self.assertLess(abs(m.y0_value() - exact) / exact, 0.01)
        self.assertLess(abs(model.y0_value() - single.y0_value()) / exact, 0.015)

    def test_keras_round_trip(self):
        problem = _bsb(dim=3)
        model = _trained(problem, 100, extremes=True)
        x, dw = problem.sample_paths(8, (0, 1), dtype="float64")
        self.run_model_saving_test(model, (x, dw))

    def test_keras_file_resumes_training_where_it_stopped(self):
        problem = _bsb(dim=3)
        reference = _trained(problem, 100)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        reference.save(path)
        loaded = keras.saving.load_model(path)
        self.assertTrue(loaded.compiled)
        self.assertEqual(int(loaded.optimizer.iterations), 100)
        # Paths are seeded by the iteration, so both continue along the same paths.
        for m in (reference, loaded):
            m.fit(epochs=1, steps_per_epoch=20, verbose=0)
        self.assertAlmostEqual(loaded.y0_value(), reference.y0_value(), places=10)

    def test_export_reloads_with_tensorflow_alone(self):
        problem = _bsb(dim=3)
        model = _trained(problem, 100)
        path = os.path.join(self.get_temp_dir(), "solution")
        model.export_solution(path)
        x = np.random.default_rng(0).uniform(0.5, 1.5, (6, 3))
        script = (
            "import sys, json, numpy as np, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "x = tf.constant(json.loads(sys.argv[2]), tf.float64)\n"
            "print(json.dumps({'y0': float(m.y0()), "
            "'z': m.z(tf.constant(0.5, tf.float64), x).numpy().tolist(), "
            "'mods': sorted(k for k in sys.modules if k.startswith('mlcmk'))}))\n")
        out = subprocess.run([sys.executable, "-c", script, path, json.dumps(x.tolist())],
                             capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(got["mods"], [])
        self.assertAlmostEqual(got["y0"], model.y0_value(), places=12)
        np.testing.assert_allclose(got["z"], model.z(0.5, x), rtol=1e-10)

    def test_resume_gives_the_uninterrupted_run(self):
        problem = _bsb(dim=3)
        directory = os.path.join(self.get_temp_dir(), "ckpt")

        def make():
            m = DeepBSDE(problem, seed=2)
            m.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(1e-2, 160)))
            return m

        reference = make()
        reference.fit(epochs=4, steps_per_epoch=40, verbose=0)
        first = make()
        first.fit(epochs=2, steps_per_epoch=40, verbose=0,
                  callbacks=[ResumableCheckpoint(directory)])
        resumed = make()
        history = resumed.fit(epochs=4, steps_per_epoch=40, verbose=0,
                              callbacks=[ResumableCheckpoint(directory)])
        self.assertEqual(len(history.history["loss"]), 2)  # epochs 3 and 4 only
        self.assertEqual(int(resumed.optimizer.iterations), 160)
        self.assertAlmostEqual(resumed.y0_value(), reference.y0_value(), places=10)

    def test_fit_takes_the_steps_asked_and_validates_once_per_epoch(self):
        # The compiled step runs 10 steps per call: 25 steps per epoch must not become 30, nor
        # one validation step ten.
        model = DeepBSDE(_bsb(dim=2), validation_size=8)
        model.compile()
        self.assertEqual(model.steps_per_execution, 10)
        calls = tf.Variable(0)
        validation_loss = model.validation_loss

        def counted():
            calls.assign_add(1)
            return validation_loss()

        model.validation_loss = counted
        history = model.fit(epochs=3, steps_per_epoch=25, verbose=0)
        self.assertEqual(int(model.optimizer.iterations), 75)
        self.assertEqual(int(calls.numpy()), 3)
        self.assertEqual(len(history.history["val_loss"]), 3)
        model.evaluate(verbose=0)
        self.assertEqual(int(calls.numpy()), 4)
        with self.assertRaisesRegex(ValueError, "steps_per_epoch"):
            model.fit(epochs=1, steps_per_epoch=0)

    def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(self):
        problem = _Exploding(dim=2, num_steps=5)
        directory = os.path.join(self.get_temp_dir(), "ckpt")
        model = DeepBSDE(problem)
        model.compile()
        stopper = StopOnNonFiniteLoss()
        blow_up = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: problem.rate.assign(1e308) if epoch == 0 else None)
        history = model.fit(epochs=5, steps_per_epoch=5, verbose=0,
                            callbacks=[blow_up, stopper, ResumableCheckpoint(directory)])
        self.assertEqual(stopper.stopped_at[0], 1)  # in the second epoch
        self.assertLess(len(history.history["loss"]), 5)
        self.assertTrue(all(np.all(np.isfinite(w)) for w in model.get_weights()))
        with open(os.path.join(directory, "training_metadata.json")) as f:
            self.assertEqual(json.load(f)["epoch"], 1)

    def test_checkpoint_permissions_and_a_failed_save_keeps_the_previous_one(self):
        directory = os.path.join(self.get_temp_dir(), "ckpt")
        model = DeepBSDE(_bsb(dim=2))
        model.compile()
        old = os.umask(0o027)
        try:
            model.fit(epochs=1, steps_per_epoch=10, verbose=0,
                      callbacks=[ResumableCheckpoint(directory)])
        finally:
            os.umask(old)
        files = sorted(os.listdir(directory))
        self.assertEqual(len(files), 2)  # the weights and the epoch counter
        self.assertIn("training_metadata.json", files)
        for name in files:  # open's permissions, not mkstemp's 0o600
            self.assertEqual(os.stat(os.path.join(directory, name)).st_mode & 0o777, 0o640)
        stamps = {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in files}
        with mock.patch.object(model, "save_weights", side_effect=OSError("disk full")):
            with self.assertRaisesRegex(OSError, "disk full"):
                model.fit(epochs=2, steps_per_epoch=10, verbose=0,
                          callbacks=[ResumableCheckpoint(directory)])
        self.assertEqual(sorted(os.listdir(directory)), files)  # no temporary left
        for name in files:
            self.assertEqual(os.stat(os.path.join(directory, name)).st_mtime_ns, stamps[name])

    def test_bad_input(self):
        problem = _bsb(dim=3)
        with self.assertRaisesRegex(ValueError, "z_network"):
            DeepBSDE(problem, z_network="dense")
        with self.assertRaisesRegex(ValueError, "extremes"):
            DeepBSDE(problem, z_network="per_step", extremes=True)
        with self.assertRaisesRegex(ValueError, "hidden_units"):
            DeepBSDE(problem, hidden_units=(0,))
        with self.assertRaisesRegex(ValueError, "batch_size"):
            DeepBSDE(problem, batch_size=0)
        with self.assertRaisesRegex(ValueError, "hjb_lq"):
            DeepBSDE("no_such_problem")
        model = DeepBSDE(problem)
        x, dw = _bsb(dim=4).sample_paths(4, (0, 0), dtype="float64")
        with self.assertRaisesRegex(ValueError, "d=3"):
            model.simulate(x, dw)
        with self.assertRaisesRegex(ValueError, "x"):
            model.z(0.5, np.zeros((2, 4)))
        with self.assertRaisesRegex(ValueError, "without x and y"):
            model.fit(np.zeros(3))


@register_problem("test_exploding", kind="bsde")
class _Exploding(BSDEProblem):
    """u_t + 1/2 Lap u + rate * y^2 = 0; `rate` is a variable so a test can make f overflow."""

    def __init__(self, dim=2, total_time=1.0, num_steps=5):
        super().__init__(dim, total_time, num_steps)
        self.rate = tf.Variable(0.0, dtype="float64", trainable=False)

    def generator(self, t, x, y, z):
        return -tf.cast(self.rate, y.dtype) * y * y

    def terminal(self, x):
        return 1.0 + keras.ops.sum(x, axis=-1)

    def get_config(self):
        return {"dim": self.dim, "total_time": self.total_time, "num_steps": self.num_steps}


def test_float32_runs_end_to_end():
    with config.precision("float32"):
        model = _trained(_bsb(dim=3), 40)
        assert model.y0.dtype == "float32"
        assert np.isfinite(model.y0_value())


@pytest.mark.large
def test_hjb_100d_learns_z():
    from mlcmk.training.bsde_solver import solve

    result, _ = solve("hjb_lq", iterations=4000, verbose=0, z_error_paths=32)
    assert result["relative_error"] < 2e-3
    assert result["loss_ratio"] < 0.1
    assert result["z_cosine"] > 0.95
