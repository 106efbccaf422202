"""Learned moment model end to end at toy size: data -> autoencoder -> closure -> solve."""

import json
import os
from unittest import mock

import numpy as np

from mlcmk import config
from mlcmk.models.moment_closure import MomentClosure
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.bgk import SLOPE_LIMITERS
from mlcmk.problems.kinetic.data import generate_kinetic_data
from mlcmk.problems.kinetic.moment_solver import (
    MomentSolver,
    characteristic_speeds,
    moment_step,
    quasilinear_matrix,
    to_conserved,
    to_primitive,
)
from mlcmk.testing import TestCase
from mlcmk.training.moment_closure import (
    LearnedMomentModel,
    _cosine,
    characteristic_matrix,
    characteristic_summary,
    check_restarts,
    closure_training_data,
    compare_models,
    finetune_closure,
    fit_closure,
    hyperbolicity_penalty,
    hyperbolicity_report,
    kinetic_moments,
    kinetic_states,
    parse_restarts,
    penalised_closure_fit,
    plot_training,
    run_errors,
    sample_arrays,
    train_moment_model,
    training_report,
    trajectory_loss,
    trajectory_samples,
)


def _directional_derivatives(value, weights, rng, h):
    """The derivative of `value()` along a random direction of the weights: by the gradient
    tape and by central differences of step `h`."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        result = value()
    grads = tape.gradient(result, weights)
    direction = [rng.normal(size=w.shape) for w in weights]
    slope = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction, strict=True))
    start = [w.numpy() for w in weights]
    values = []
    for sign in (1.0, -1.0):
        for w, w0, d in zip(weights, start, direction, strict=True):
            w.assign(w0 + sign * h * d)
        values.append(float(value()))
    for w, w0 in zip(weights, start, strict=True):
        w.assign(w0)
    return slope, (values[0] - values[1]) / (2 * h)


def _random_closure(rng, low, high):
    """An untrained K = 3 closure with output scales drawn from [low, high]."""
    closure = MomentClosure(num_moments=3, units=[16])
    closure.build((None, 7))
    w_maxwell = np.array([0.4, 0.2, 0.0])
    closure.w_maxwell.assign(w_maxwell)
    closure.output_scale.assign(rng.uniform(low, high, 13))
    return closure, w_maxwell


class LearnedMomentModelTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_pipeline_trains_and_solves(self):
        data = generate_kinetic_data(num_runs=4, num_x=32, num_v=48, v_max=7.0, t_end=0.02,
                                     num_snapshots=2, seed=1, cache_dir=self.get_temp_dir())
        model, info = train_moment_model(data, num_moments=2, autoencoder_epochs=2,
                                         closure_epochs=2, max_autoencoder_samples=256,
                                         closure_units=(48, 40))
        self.assertTrue(np.isfinite(info["closure_loss"]))
        self.assertEqual([layer.units for layer in model.closure.net.layers], [48, 40, 9])
        # Characteristic speeds at the training states, per run: the same as computed directly
        # (exactly from the autodiff matrix, to the finite-difference error from the FD one).
        report = hyperbolicity_report(model, data)
        self.assertEqual(report["max_speed_factor"].shape, (4,))
        np.testing.assert_array_equal(report["eps"], data["eps"])
        f = np.concatenate([data["f0"][2][None], data["f"][2]]).reshape(-1, 48)
        m = kinetic_moments(model.autoencoder, f)
        exact = np.linalg.eigvals(characteristic_matrix(model.closure)(
            m["rho"], m["T"], m["W"], np.full(len(f), data["eps"][2])).numpy())
        self.assertAlmostEqual(report["max_speed_factor"][2], np.abs(exact.real).max(),
                               delta=1e-12)
        self.assertAlmostEqual(report["max_imag"][2], np.abs(exact.imag).max(), delta=1e-12)
        speeds = characteristic_speeds(model.numpy_closure,
                                       to_conserved(m["rho"], m["u"], m["T"], m["W"]),
                                       data["eps"][2])
        self.assertAlmostEqual(report["max_speed_factor"][2], np.max(
            np.abs(speeds.real - m["u"][:, None]) / np.sqrt(m["T"])[:, None]), delta=1e-4)
        fd = characteristic_summary(model.numpy_closure, m["rho"], m["u"], m["T"], m["W"],
                                    data["eps"][2])
        self.assertAlmostEqual(fd["max_speed_factor"], report["max_speed_factor"][2], delta=1e-4)
        self.assertTrue(np.all((0 <= report["complex_fraction"])
                               & (report["complex_fraction"] <= 1)))
        self.assertTrue(np.all(report["max_speed_factor"] > 1.0))
        x, y = closure_training_data(model.autoencoder, data)
        self.assertEqual(x.shape, (4 * 2 * 32, 4 + 2))
        self.assertEqual(y.shape, (4 * 2 * 32, 1 + 4 * 2))
        # The heat-flux target is the heat flux of the snapshot.
        f = data["f"][0, 0]
        m = kinetic_moments(model.autoencoder, f)
        v = data["v"]
        heat = 0.5 * ((v[None] - m["u"][:, None]) ** 3 * f).sum(1) * (v[1] - v[0])
        np.testing.assert_allclose(y[:32, 0] * m["rho"] * m["T"] ** 1.5, heat, atol=1e-13)
        # The solve starts from the NumPy encoder's moments: those of the Keras encoder.
        for got, key in zip(model.initial_moments(f), ("rho", "u", "T", "W"), strict=True):
            np.testing.assert_allclose(got, m[key], rtol=1e-12, atol=1e-13)

        problem = BGK1D(eps=0.1, num_x=32, num_v=48, v_max=7.0)
        f0 = problem.maxwellian(*problem.random_smooth_initial(np.random.default_rng(99)))
        result = compare_models(model, problem, f0, 0.02)
        for name in ("learned", "euler"):
            self.assertEqual(set(result["errors"][name]), {"rho", "u", "T"})
            self.assertLess(result["errors"][name]["rho"], 0.05)
        # Errors on the data's own runs (training error): the learned solve of run k from its
        # f0 at its eps, against the kinetic moments stored at the last snapshot.
        rows = run_errors(model, data, runs=[3, 1])
        self.assertEqual([(r["run"], r["eps"], r["is_sod"]) for r in rows],
                         [(k, data["eps"][k], data["is_sod"][k]) for k in (3, 1)])
        self.assertAlmostEqual(data["times"][-1], 0.02, delta=1e-15)
        for row in rows:
            k = row["run"]
            run = BGK1D(eps=data["eps"][k], num_x=32, num_v=48, v_max=7.0)
            learned = model.solve(data["f0"][k], data["eps"][k], run.dx, 0.02)
            kinetic = run.primitives(data["f"][k, -1])
            for i, field in enumerate(("rho", "u", "T")):
                self.assertAlmostEqual(row["errors"][field], np.linalg.norm(
                    learned[i] - kinetic[i]) / np.linalg.norm(kinetic[i]), delta=1e-10)
            self.assertLess(row["errors"]["rho"], 0.05)
        self.assertEqual(len(run_errors(model, data)), 4)
        for a, b in zip(rows, run_errors(model, data, runs=[3, 1], jit_compile=True),
                        strict=True):  # compiled: one program for both runs' eps
            self.assertEqual(a["run"], b["run"])
            for field in ("rho", "u", "T"):
                self.assertAlmostEqual(a["errors"][field], b["errors"][field], delta=1e-10)
        # Conservation of the learned solve.
        rho, u, T, _ = model.solve(f0, 0.1, problem.dx, 0.02)
        U0 = problem.moments(f0).sum(0)
        U = np.array([rho.sum(), (rho * u).sum(), (0.5 * rho * (u**2 + T)).sum()])
        np.testing.assert_allclose(U, U0, rtol=1e-13, atol=1e-13)
        # The Euler limit is built in: at tiny eps, W stays at W_M and the heat flux at 0, so
        # with the default wave-speed bound (Euler's sqrt(3) as eps -> 0) the learned solve is
        # Euler's.
        self.assertIsNone(model.speed_factor)
        learned = model.solve(f0, 1e-9, problem.dx, 0.02)
        rho0, u0, T0 = problem.primitives(f0)
        euler = MomentSolver(problem.dx, eps=1e-9).solve(rho0, u0, T0, t_end=0.02)
        for a, b in zip(learned[:3], euler[:3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
        # The slope limiter is part of the saved model, and the solve uses it.
        model.limiter = "mc"
        directory = self.get_temp_dir()
        model.save(directory)
        loaded = LearnedMomentModel.load(directory)
        self.assertEqual(loaded.limiter, "mc")
        sharp = loaded.solve(f0, 0.1, problem.dx, 0.02)
        np.testing.assert_allclose(sharp[0], model.solve(f0, 0.1, problem.dx, 0.02)[0],
                                   rtol=1e-13)
        self.assertGreater(np.abs(sharp[0] - rho).max(), 1e-8)  # not the minmod solve
        with self.assertRaisesRegex(ValueError, "`limiter`.*'upwind'"):
            LearnedMomentModel(model.autoencoder, model.closure, limiter="upwind")
        # Both are checked when set on a built model too, and a bad value changes nothing.
        with self.assertRaisesRegex(ValueError, "`limiter`.*'upwind'"):
            loaded.limiter = "upwind"
        with self.assertRaisesRegex(ValueError, "`flux`.*'roe'"):
            loaded.flux = "roe"
        self.assertEqual((loaded.limiter, loaded.flux), ("mc", "lax_friedrichs"))
        # So is the numerical flux (a model saved before it had one loads with the default).
        self.assertEqual(loaded.flux, "lax_friedrichs")
        kinetic_directory = os.path.join(directory, "kinetic_flux")
        model.flux = "kinetic"
        model.save(kinetic_directory)
        model.flux = "lax_friedrichs"
        reloaded = LearnedMomentModel.load(kinetic_directory)
        self.assertEqual(reloaded.flux, "kinetic")
        kinetic = reloaded.solve(f0, 0.1, problem.dx, 0.02)
        self.assertGreater(np.abs(kinetic[0] - sharp[0]).max(), 1e-8)
        for a, b in zip(reloaded.solve(f0, 0.1, problem.dx, 0.02, jit_compile=True), kinetic,
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
        with open(os.path.join(kinetic_directory, "solver.json"), encoding="utf-8") as f:
            settings = json.load(f)
        del settings["flux"]
        with open(os.path.join(kinetic_directory, "solver.json"), "w", encoding="utf-8") as f:
            json.dump(settings, f)
        self.assertEqual(LearnedMomentModel.load(kinetic_directory).flux, "lax_friedrichs")
        # Saving over a saved model is atomic: a crash half way keeps the previous one whole.
        model.limiter = "minmod"
        saved = {name: os.stat(os.path.join(kinetic_directory, name)).st_mtime_ns
                 for name in model._SAVED_FILES}
        with mock.patch.object(model.closure, "save", side_effect=OSError("disk full")):
            with self.assertRaisesRegex(OSError, "disk full"):
                model.save(kinetic_directory)
        self.assertEqual(sorted(os.listdir(directory)),
                         sorted(["kinetic_flux", *model._SAVED_FILES]))
        self.assertEqual(sorted(os.listdir(kinetic_directory)), sorted(model._SAVED_FILES))
        self.assertEqual(LearnedMomentModel.load(kinetic_directory).limiter, "mc")
        self.assertEqual(saved, {name: os.stat(os.path.join(kinetic_directory, name)).st_mtime_ns
                                 for name in model._SAVED_FILES})  # not one file rewritten
        model.limiter = "mc"
        with self.assertRaisesRegex(ValueError, "`flux`.*'upwind'"):
            LearnedMomentModel(model.autoencoder, model.closure, flux="upwind")
        # The closure network in float32: saved with the model; the solve moves by round-off.
        self.assertEqual(loaded.closure_dtype, "float64")
        model.closure_dtype = "float32"
        model.save(directory)
        single = LearnedMomentModel.load(directory)
        self.assertEqual(single.numpy_closure.dtype, "float32")
        fast = single.solve(f0, 0.1, problem.dx, 0.02)
        for a, b in zip(fast, sharp, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        self.assertGreater(np.abs(fast[3] - sharp[3]).max(), 1e-12)
        # Compiled (one XLA program per closure snapshot) equal to the NumPy solves.
        for m, expected, tol in ((loaded, sharp, 1e-11), (single, fast, 1e-6)):
            compiled = m.solve(f0, 0.1, problem.dx, 0.02, jit_compile=True)
            for a, b in zip(compiled, expected, strict=True):
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        with self.assertRaisesRegex(TypeError, "`jit_compile` must be a bool.*'yes'"):
            model.solve(f0, 0.1, problem.dx, 0.02, jit_compile="yes")
        with self.assertRaisesRegex(ValueError, "`closure_dtype`.*'float16'"):
            LearnedMomentModel(model.autoencoder, model.closure, closure_dtype="float16")
        with self.assertRaisesRegex(ValueError, "`closure_dtype`.*'half'"):
            model.closure_dtype = "half"


class MomentEquationTest(TestCase):
    """The moment system that the closure completes is exact: its terms, evaluated on BGK
    solutions, balance up to the discretisation error."""

    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_training_curves_put_the_stages_on_one_step_axis(self):
        info = {"finetune": {"steps": 4, "loss_history": [[0, 1.0], [2, 3.0], [4, 0.5]],
                             "rollbacks": [2]},
                "finetune_restarts": [{"steps": 2, "learning_rate": 1e-3, "rollbacks": [2],
                                       "loss_history": [[0, 0.5], [2, 0.6]]}]}
        path = os.path.join(self.get_temp_dir(), "training.png")
        main, restart = plot_training(info, path)
        np.testing.assert_array_equal(main["steps"], [0, 2, 4])
        np.testing.assert_array_equal(restart["steps"], [4, 6])
        np.testing.assert_array_equal(restart["loss"], [0.5, 0.6])
        self.assertEqual((main["rollbacks"], restart["rollbacks"]), ([2], [6]))
        self.assertEqual(restart["label"], "restart 1 (rate 0.001)")
        self.assertGreater(os.path.getsize(path), 1000)

    def test_w_equation_balances_on_kinetic_data(self):
        from mlcmk.models.moment_autoencoder import MomentAutoencoder

        ae = MomentAutoencoder(num_moments=4, v_max=8.0, num_v=64)
        ae.build((None, 64))
        w_m = ae.maxwellian_moments()
        for eps in (0.01, 1.0):
            residuals = []
            for n in (100, 200):
                p = BGK1D(eps=eps, num_x=n)
                f0 = p.maxwellian(*p.random_smooth_initial(np.random.default_rng(5)))
                _, snaps, nexts, dt = p.solve(f0, 0.05, num_snapshots=1, return_next=True)
                a, b = kinetic_moments(ae, snaps[0]), kinetic_moments(ae, nexts[0])
                m = kinetic_moments(ae, 0.5 * (snaps[0] + nexts[0]))

                def grad(g, dx=p.dx):
                    return (np.roll(g, -1, 0) - np.roll(g, 1, 0)) / (2 * dx)

                rate = (b["rho"][:, None] * b["W"] - a["rho"][:, None] * a["W"]) / dt
                G = (m["rho"] * m["u"])[:, None] * m["W"] + (m["rho"] * np.sqrt(m["T"]))[
                    :, None] * m["G_hat"]
                collision = 0.5 * (a["rho"][:, None] * (w_m - a["W"])
                                   + b["rho"][:, None] * (w_m - b["W"])) / eps
                rho, T = m["rho"], m["T"]
                st = np.sqrt(T)
                q = rho * T * st * m["q_hat"]
                chain = (m["a"][:, 0] * (grad(rho * T) / st)[:, None]
                         + m["a"][:, 1] * (grad(q) / T)[:, None]
                         - m["a"][:, 2] * (rho * grad(T) / (2 * st))[:, None])
                residual = rate + grad(G) - collision - chain
                scale = np.abs(grad(G)).max(0) + np.abs(rate).max(0)
                residuals.append(np.abs(residual).max(0) / scale)
                # Without the chain-rule source the balance fails by O(1).
                self.assertGreater(np.max(np.abs(rate + grad(G) - collision).max(0) / scale),
                                   0.3)
            self.assertLess(residuals[1].max(), 0.03)
            self.assertLess(residuals[1].max(), 0.7 * residuals[0].max())

    def test_maxwellian_closure_values(self):
        from mlcmk.models.moment_autoencoder import MomentAutoencoder
        from mlcmk.problems.kinetic import conserved_from_primitive, discrete_maxwellian
        from mlcmk.problems.kinetic.bgk import VelocityGrid

        ae = MomentAutoencoder(num_moments=4, v_max=8.0, num_v=64)
        ae.build((None, 64))
        U = conserved_from_primitive([1.0, 0.4], [0.3, -0.5], [1.0, 1.6])
        m = kinetic_moments(ae, discrete_maxwellian(VelocityGrid(8.0, 64), U))
        y = np.concatenate([m["q_hat"][:, None], m["G_hat"], m["a"].reshape(2, -1)], axis=1)
        np.testing.assert_allclose(y, np.tile(ae.maxwellian_closure(), (2, 1)), atol=1e-7)


class DifferentiableSolveTest(TestCase):
    """The a posteriori fine-tuning unrolls the moment solver in TensorFlow: the same scheme."""

    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_tensorflow_steps_equal_numpy_steps_on_a_batch_of_grids(self):
        import tensorflow as tf
        import tensorflow.experimental.numpy as tnp

        from mlcmk.problems.kinetic.moment_solver import moment_step
        from mlcmk.training.moment_closure import _tensor_closure

        rng = np.random.default_rng(3)
        closure, w_maxwell = _random_closure(rng, 0.05, 0.2)
        numpy_closure = closure.numpy_closure()
        problem = BGK1D(num_x=24)
        eps, factor, dt = (0.03, 2.0), (2.5, 3.0), 2e-3
        states = []
        for b in range(2):
            rho, u, T = problem.random_smooth_initial(np.random.default_rng(10 + b))
            W = w_maxwell + 0.05 * rng.normal(size=(24, 3))
            states.append(to_conserved(rho, u, T, W))
        call = _tensor_closure(closure)
        schemes = [(limiter, "lax_friedrichs") for limiter in SLOPE_LIMITERS]
        for limiter, flux in schemes + [("minmod", "kinetic")]:
            expected = []
            for b, Q in enumerate(states):
                for _ in range(5):
                    Q = moment_step(np, numpy_closure, Q, dt, problem.dx, eps[b], factor[b],
                                    w_maxwell, limiter, flux)
                expected.append(Q)
            Q = tf.constant(np.stack(states))
            for _ in range(5):
                Q = moment_step(tnp, call, Q, tf.constant(dt, tf.float64), problem.dx,
                                tf.constant(eps, tf.float64)[:, None],
                                tf.constant(factor, tf.float64)[:, None],
                                tf.constant(w_maxwell), limiter, flux)
            np.testing.assert_allclose(Q.numpy(), np.stack(expected), rtol=1e-12, atol=1e-13,
                                       err_msg=f"{limiter}, {flux}")
            self.assertGreater(np.abs(np.stack(expected) - np.stack(states)).max(), 1e-3)

    def test_characteristic_matrix_and_hyperbolicity_penalty(self):
        import tensorflow as tf

        rng = np.random.default_rng(5)
        closure, w_maxwell = _random_closure(rng, 0.5, 2.0)
        n, eps = 64, 0.3
        rho, T = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)
        W = w_maxwell + 0.5 * rng.normal(size=(n, 3))
        states = [tf.constant(a) for a in (rho, T, W, np.full(n, eps))]
        # Automatic differentiation against the finite-difference quasi-linear matrix.
        A = characteristic_matrix(closure)(*states).numpy()
        expected = quasilinear_matrix(closure.numpy_closure(), to_conserved(rho, 0 * rho, T, W),
                                      eps) / np.sqrt(T)[:, None, None]
        np.testing.assert_allclose(A, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
        # The penalty: squared imaginary parts, plus real parts beyond the bound.
        speeds = np.linalg.eigvals(A)
        self.assertGreater(np.mean(np.abs(speeds.imag).max(axis=1) > 1e-6), 0.05)
        bound = 0.5 * np.abs(speeds.real).max()
        excess = speeds.imag**2 + np.maximum(np.abs(speeds.real) - bound, 0.0) ** 2
        self.assertAlmostEqual(float(hyperbolicity_penalty(closure)(*states)),
                               np.mean(np.sum(speeds.imag**2, axis=1)), delta=1e-9)
        penalty = hyperbolicity_penalty(closure, speed_bound=bound)
        self.assertAlmostEqual(float(penalty(*states)), np.mean(np.sum(excess, axis=1)),
                               delta=1e-9)
        # Its gradient with respect to the weights is the derivative along a direction.
        # (without TensorFlow's "casting complex128 to float64" warning in the gradient)
        with self.assertNoLogs("tensorflow", level="WARNING"):
            slope, difference = _directional_derivatives(lambda: penalty(*states),
                                                         closure.trainable_variables, rng, 1e-6)
        self.assertGreater(abs(slope), 1e-3)
        self.assertAlmostEqual(difference / slope, 1.0, delta=1e-4)
        with self.assertRaisesRegex(ValueError, "speed_bound"):
            hyperbolicity_penalty(closure, speed_bound=-1.0)

    def _check_every_snapshot_loss(self, model, data):
        """`every_snapshot`: the loss is the mean over the window's snapshots of the squared
        relative errors, against the solve unrolled in NumPy with the NumPy closure."""
        import tensorflow as tf

        whole = trajectory_samples(model, data, window=2, every_snapshot=True)
        per = whole["steps_per_interval"]
        self.assertEqual(whole["steps"], 2 * per)
        self.assertEqual(whole["end"][0].shape, (3, 2, 24))  # runs, snapshots, cells
        end_only = trajectory_samples(model, data, window=2)
        self.assertIsNone(end_only["steps_per_interval"])
        for a, b in zip(whole["end"], end_only["end"], strict=True):
            np.testing.assert_array_equal(a[:, -1], b)
        loss = float(trajectory_loss(model, whole)(*(tf.constant(a)
                                                     for a in sample_arrays(whole))))
        w_maxwell = np.asarray(model.numpy_closure.w_maxwell)
        reference = []
        for i in range(3):
            Q = to_conserved(*(a[i] for a in whole["start"]))
            errors = []
            for k in range(2):
                for _ in range(per):
                    Q = moment_step(np, model.numpy_closure, Q, whole["dt"], whole["dx"],
                                    whole["eps"][i], whole["speed_factor"][i], w_maxwell,
                                    model.limiter, model.flux)
                errors.append(sum(np.mean((p - t[i, k]) ** 2) / np.mean(t[i, k] ** 2)
                                  for p, t in zip(to_primitive(Q)[:3], whole["end"],
                                                  strict=True)))
            self.assertGreater(errors[0], 0)
            reference.append(np.mean(errors))
        self.assertAlmostEqual(loss / np.mean(reference), 1.0, delta=1e-9)
        # `power`: the mean of the samples' errors to that power.
        cubed = float(trajectory_loss(model, whole, power=3)(
            *(tf.constant(a) for a in sample_arrays(whole))))
        self.assertAlmostEqual(cubed / np.mean(np.power(reference, 3)), 1.0, delta=1e-9)
        self.assertGreater(cubed ** (1 / 3), loss)  # the samples' errors differ
        # `finetune_closure` fits that loss (its first check is the loss over all samples),
        # with `loss_power` its power mean.
        start = [w.numpy() for w in model.closure.trainable_variables]
        info = finetune_closure(model, data, steps=1, window=2, every_snapshot=True, verbose=0)
        for w, value in zip(model.closure.trainable_variables, start, strict=True):
            w.assign(value)
        powered = finetune_closure(model, data, steps=1, window=2, every_snapshot=True,
                                   verbose=0, loss_power=3, jit_compile=False)
        for w, value in zip(model.closure.trainable_variables, start, strict=True):
            w.assign(value)
        model.refresh_closure()
        self.assertTrue(info["every_snapshot"])
        self.assertAlmostEqual(info["loss_before"] / loss, 1.0, delta=1e-9)
        self.assertEqual((info["loss_power"], powered["loss_power"]), (1.0, 3.0))
        self.assertAlmostEqual(powered["loss_before"] / cubed ** (1 / 3), 1.0, delta=1e-9)
        with self.assertRaisesRegex(ValueError, "loss_power.*>= 1.*received loss_power=0.5"):
            finetune_closure(model, data, steps=1, loss_power=0.5)
        with self.assertRaisesRegex(TypeError, "loss_power.*number.*received loss_power='2'"):
            finetune_closure(model, data, steps=1, loss_power="2")
        with self.assertRaisesRegex(ValueError, "finetune_loss_power.*finetune_steps > 0"):
            train_moment_model(data, finetune_loss_power=2)
        report = training_report({"autoencoder_fit_s": 1.0, "closure_fit_s": 1.0,
                                  "autoencoder_loss": 0.1, "closure_loss": 0.1,
                                  "finetune": info})
        self.assertIn("every-snapshot trajectory loss", report[-1])
        with self.assertRaisesRegex(TypeError, "every_snapshot.*received every_snapshot=1"):
            finetune_closure(model, data, steps=1, every_snapshot=1)
        with self.assertRaisesRegex(TypeError, "finetune_every_snapshot.*received"):
            train_moment_model(data, finetune_steps=1, finetune_every_snapshot="yes")

    def test_finetuning_lowers_the_trajectory_loss_and_updates_the_solver(self):
        import tensorflow as tf

        # Large eps (the closure matters): the setting of the benchmark's hard cases.
        data = generate_kinetic_data(num_runs=3, num_x=24, num_v=48, v_max=7.0, t_end=0.05,
                                     eps_range=(1.0, 10.0), num_snapshots=2, seed=2,
                                     cache_dir=self.get_temp_dir())
        # The a posteriori fit on more runs than the a priori one: the same three and a fourth.
        more = generate_kinetic_data(num_runs=4, num_x=24, num_v=48, v_max=7.0, t_end=0.05,
                                     eps_range=(1.0, 10.0), num_snapshots=2, seed=2,
                                     cache_dir=self.get_temp_dir())
        np.testing.assert_array_equal(more["f"][:3], data["f"])
        model, info = train_moment_model(data, num_moments=2, autoencoder_epochs=2,
                                         closure_epochs=2, max_autoencoder_samples=128,
                                         finetune_steps=3, finetune_window=1,
                                         finetune_check_every=2, finetune_data=more,
                                         finetune_warmup_steps=2, finetune_lr_ramp_steps=1,
                                         finetune_restarts=[(2, 3e-4), (1, 1e-4)])
        # The warm-up: one-interval windows of `more`, checked at its start and end; the
        # main fit starts from where it ended.
        warmup = info["finetune_warmup"]
        self.assertEqual((warmup["window"], warmup["samples"], warmup["steps"]), (1, 4 * 2, 2))
        self.assertAlmostEqual(info["finetune"]["loss_before"], warmup["loss_after"], delta=1e-12)
        self.assertIn("a posteriori warm-up on one-interval windows: 2 steps",
                      "\n".join(training_report(info)))
        # The restarts: each a fresh schedule at its rate from the weights the stage before
        # it kept, checked on the same samples.
        stages = [info["finetune"], *info["finetune_restarts"]]
        # A ramp over one step scales nothing (and the report does not mention it); it reaches
        # every stage of the fine-tuning.
        self.assertEqual([ft["lr_ramp_steps"] for ft in [warmup, *stages]], [1, 1, 1, 1])
        self.assertNotIn("ramped", "\n".join(training_report(info)))
        self.assertEqual([(ft["steps"], ft["learning_rate"]) for ft in stages],
                         [(3, 1e-3), (2, 3e-4), (1, 1e-4)])
        for before, after in zip(stages[:-1], stages[1:], strict=True):
            self.assertAlmostEqual(after["loss_before"], before["loss_after"], delta=1e-12)
            self.assertEqual(after["samples"], 4 * 2)
            self.assertLessEqual(after["loss_after"], after["loss_before"])
        np.testing.assert_array_equal(np.array(stages[1]["loss_history"])[:, 0], [0, 2])
        self.assertIn("a posteriori restart 2: 1 steps at rate 0.0001, trajectory loss",
                      "\n".join(training_report(info)))
        # The picture of the stages: their checks on one step axis (2 warm-up steps, 3 main,
        # 2 and 1 restart steps), each stage's losses as recorded.
        path = os.path.join(self.get_temp_dir(), "training.png")
        curves = plot_training(info, path)
        self.assertEqual([c["label"] for c in curves],
                         ["warm-up (window loss)", "main fit", "restart 1 (rate 0.0003)",
                          "restart 2 (rate 0.0001)"])
        np.testing.assert_array_equal(np.concatenate([c["steps"] for c in curves]),
                                      [0, 2, 2, 4, 5, 5, 7, 7, 8])
        for curve, ft in zip(curves, [warmup, *stages], strict=True):
            np.testing.assert_array_equal(curve["loss"], np.array(ft["loss_history"])[:, 1])
        self.assertGreater(os.path.getsize(path), 1000)
        nothing = os.path.join(self.get_temp_dir(), "none.png")
        self.assertEqual(plot_training({"closure_loss": 0.1}, nothing), [])
        self.assertFalse(os.path.exists(nothing))
        # The fine-tuning's full-loss checks: every 2 steps and at the last.
        np.testing.assert_array_equal(np.array(info["finetune"]["loss_history"])[:, 0],
                                      [0, 2, 3])
        self.assertEqual(info["finetune"]["samples"], 4 * 2)  # two windows of each run of `more`
        self.assertEqual(info["closure_samples"], 3 * 2 * 24)  # a priori: the cells of `data`
        samples = trajectory_samples(model, data, window=1)
        self.assertEqual(samples["start"][0].shape, (3 * 2, 24))
        # Window 1 from snapshot 0 (f0) ends at the first snapshot.
        np.testing.assert_allclose(samples["end"][0][0],
                                   kinetic_moments(model.autoencoder, data["f"][0, 0])["rho"])
        self._check_every_snapshot_loss(model, data)
        # Rollback: a check whose loss exceeds factor x the best sends the fit back to the best
        # weights with fresh Adam moments and the rest of the schedule. With every sample in
        # each batch, step 2 after a rollback at step 1 is the first step of a new fit from the
        # same weights at the schedule's step-1 rate; without the rollback it is not.
        start = [w.numpy() for w in model.closure.trainable_variables]

        def fit(**kwargs):
            for w, value in zip(model.closure.trainable_variables, start, strict=True):
                w.assign(value)
            return finetune_closure(model, data, batch_size=6, window=1, check_every=1,
                                    verbose=0, **kwargs)

        rate = 0.2
        rolled = fit(steps=2, learning_rate=rate, rollback_factor=1.5)
        plain = fit(steps=2, learning_rate=rate)
        fresh = fit(steps=1, learning_rate=float(_cosine(rate, 2)(1)))
        self.assertGreater(rolled["loss_history"][1][1], 1.5 * rolled["loss_before"])
        self.assertEqual((rolled["rollbacks"][0], plain["rollbacks"]), (1, []))
        (curve,) = plot_training({"finetune": rolled},
                                 os.path.join(self.get_temp_dir(), "rolled.png"))
        self.assertEqual(curve["rollbacks"], rolled["rollbacks"])  # steps of its checks
        self.assertAlmostEqual(rolled["loss_history"][2][1] / fresh["loss_history"][1][1], 1.0,
                               delta=1e-9)
        self.assertGreater(abs(plain["loss_history"][2][1] / fresh["loss_history"][1][1] - 1),
                           1e-3)
        self.assertAlmostEqual(rolled["loss_after"], min(h[1] for h in rolled["loss_history"]),
                               delta=1e-15)
        with self.assertRaisesRegex(ValueError, "rollback_factor=1"):
            finetune_closure(model, data, steps=2, rollback_factor=1)
        # A rate ramp over 2 steps halves the first step of every fresh optimizer, the one
        # after a rollback included: at twice the rate it is the fit above, check for check.
        ramped = fit(steps=2, learning_rate=2 * rate, rollback_factor=1.5, lr_ramp_steps=2)
        np.testing.assert_allclose(ramped["loss_history"], rolled["loss_history"], rtol=1e-9)
        self.assertEqual((ramped["rollbacks"], ramped["lr_ramp_steps"]), (rolled["rollbacks"], 2))
        unramped = fit(steps=1, learning_rate=2 * rate)
        self.assertGreater(abs(unramped["loss_history"][1][1] / rolled["loss_history"][1][1] - 1),
                           1e-3)
        with self.assertRaisesRegex(ValueError, "lr_ramp_steps"):
            finetune_closure(model, data, steps=2, lr_ramp_steps=-1)
        # Restarts in the same call (sharing the samples and the compiled solve) are the
        # separate calls they replace: same checks, same weights kept.
        chained = fit(steps=2, learning_rate=rate, rollback_factor=1.5,
                      restarts=[(2, 1e-3), (1, 3e-4)])
        separate = [fit(steps=2, learning_rate=rate, rollback_factor=1.5)]
        for steps, restart_rate in ((2, 1e-3), (1, 3e-4)):
            separate.append(finetune_closure(model, data, batch_size=6, window=1, check_every=1,
                                             verbose=0, steps=steps, learning_rate=restart_rate,
                                             rollback_factor=1.5))
        restarted = chained.pop("restarts")
        for one, other in zip([chained, *restarted], separate, strict=True):
            np.testing.assert_allclose(one["loss_history"], other["loss_history"], rtol=1e-12)
            self.assertEqual((one["best_step"], one["learning_rate"], one["rollbacks"]),
                             (other["best_step"], other["learning_rate"], other["rollbacks"]))
        kept = [w.numpy() for w in model.closure.trainable_variables]
        fit(steps=2, learning_rate=rate, rollback_factor=1.5, restarts=[(2, 1e-3), (1, 3e-4)])
        for w, value in zip(model.closure.trainable_variables, kept, strict=True):
            np.testing.assert_allclose(w.numpy(), value, rtol=1e-12, atol=1e-15)
        self.assertLess(restarted[-1]["loss_after"], chained["loss_before"])
        with self.assertRaisesRegex(ValueError, r"restarts\[0\] steps=0"):
            finetune_closure(model, data, steps=2, restarts=[(0, 1e-3)])
        for w, value in zip(model.closure.trainable_variables, start, strict=True):
            w.assign(value)
        # The gradient through the unrolled solver is the derivative of the loss.
        loss = trajectory_loss(model, samples)
        batch = [tf.constant(a) for a in sample_arrays(samples)]
        weights = model.closure.trainable_variables
        rng = np.random.default_rng(0)
        slope, difference = _directional_derivatives(lambda: loss(*batch), weights, rng, 1e-5)
        self.assertGreater(abs(slope), 1e-6)
        self.assertAlmostEqual(difference / slope, 1.0, delta=1e-5)
        # Through the kinetic flux (the model's, read by the loss): another loss, and its
        # gradient (through the flux's erf terms) is its derivative too. A smaller step: along
        # this direction the difference quotient's own error is 8e-3 / 4e-5 / 8e-10 at steps
        # 1e-4 / 1e-5 / 1e-6 (second order, from the third derivative).
        lax_friedrichs = float(loss(*batch))
        model.flux = "kinetic"
        self.assertGreater(abs(float(loss(*batch)) / lax_friedrichs - 1), 1e-6)
        slope, difference = _directional_derivatives(lambda: loss(*batch), weights, rng, 1e-6)
        self.assertGreater(abs(slope), 1e-6)
        self.assertAlmostEqual(difference / slope, 1.0, delta=1e-5)
        model.flux = "lax_friedrichs"
        # A closure thrown off by a perturbation of its last layer: fitting through the solver
        # brings the trajectories back.
        last = model.closure.net.layers[-1]
        last.kernel.assign(last.kernel.numpy() + rng.normal(size=last.kernel.shape))
        model.refresh_closure()
        problem = BGK1D(eps=2.0, num_x=24, num_v=48, v_max=7.0)
        f0 = problem.maxwellian(*problem.random_smooth_initial(np.random.default_rng(7)))
        before = model.solve(f0, 2.0, problem.dx, 0.05)
        np.testing.assert_allclose(model.solve(f0, 2.0, problem.dx, 0.05, jit_compile=True)[1],
                                   before[1], rtol=1e-11, atol=1e-12)
        info = finetune_closure(model, data, steps=30, batch_size=4, learning_rate=3e-3, window=1,
                                verbose=0)
        self.assertEqual(info["skipped_steps"], 0)
        self.assertLess(info["loss_after"], 0.85 * info["loss_before"])
        after = model.solve(f0, 2.0, problem.dx, 0.05)  # the NumPy closure was refreshed
        self.assertGreater(np.abs(after[1] - before[1]).max(), 1e-6)
        np.testing.assert_allclose(model.solve(f0, 2.0, problem.dx, 0.05, jit_compile=True)[1],
                                   after[1], rtol=1e-11, atol=1e-12)  # and so was the program
        # A step size that throws the closure off: the best checked weights are kept.
        tuned = [w.numpy() for w in weights]
        info = finetune_closure(model, data, steps=6, batch_size=4, learning_rate=0.3, window=1,
                                check_every=2, verbose=0)
        history = np.array(info["loss_history"])
        np.testing.assert_array_equal(history[:, 0], [0, 2, 4, 6])
        self.assertGreater(np.nanmax(history[1:, 1]), 2.0 * history[0, 1])
        self.assertEqual(info["loss_after"], np.nanmin(history[:, 1]))
        self.assertEqual(info["best_step"], int(history[np.nanargmin(history[:, 1]), 0]))
        self.assertAlmostEqual(float(loss(*batch)), info["loss_after"], delta=1e-10)
        if info["best_step"] == 0:
            for w, w0 in zip(weights, tuned, strict=True):
                np.testing.assert_array_equal(w.numpy(), w0)
        # With the hyperbolicity penalty: the checks rank trajectory loss + weighted penalty.
        info = finetune_closure(model, data, steps=4, batch_size=4, learning_rate=3e-3, window=1,
                                check_every=2, verbose=0, hyperbolicity_weight=0.5,
                                state_batch=32)
        penalty = np.array(info["penalty_history"])
        np.testing.assert_array_equal(penalty[:, 0], [0, 2, 4])
        self.assertEqual(info["penalty_before"], penalty[0, 1])
        best = [h[0] for h in info["loss_history"]].index(info["best_step"])
        self.assertEqual(info["penalty_after"], penalty[best, 1])
        states = kinetic_states(model, data)
        flat = [tf.constant(states[k].reshape(-1, *states[k].shape[2:]))
                for k in ("rho", "T", "W", "eps")]
        self.assertEqual(len(flat[0]), 3 * 3 * 24)  # f0 and two snapshots per run
        self.assertAlmostEqual(
            float(hyperbolicity_penalty(model.closure, model.frozen_speed_factor)(*flat)),
            info["penalty_after"], delta=1e-9)
        self.assertAlmostEqual(float(loss(*batch)) + 0.5 * info["penalty_after"],
                               info["loss_after"], delta=1e-9)
        # The penalised a priori fit: the penalty falls, the a priori loss stays near.
        x, y = closure_training_data(model.autoencoder, data)
        rho = x[:, 0]
        T = 2 * x[:, 2] / rho - (x[:, 1] / rho) ** 2
        full_penalty = hyperbolicity_penalty(model.closure, model.frozen_speed_factor)
        cells = [tf.constant(a) for a in (rho, T, x[:, 3:5], x[:, -1])]
        start_penalty = float(full_penalty(*cells))
        fit = penalised_closure_fit(model, x, y, 1.0, steps=40, batch_size=64,
                                    learning_rate=3e-3)
        self.assertAlmostEqual(fit["penalty_before"], start_penalty, delta=1e-9 * start_penalty)
        self.assertGreater(fit["penalty_before"], 1e-3)
        self.assertLess(fit["penalty_after"], 0.3 * fit["penalty_before"])
        self.assertAlmostEqual(fit["penalty_after"], float(full_penalty(*cells)), delta=1e-9)
        self.assertTrue(np.isfinite(fit["loss_after"]))
        with self.assertRaisesRegex(ValueError, "steps=0"):
            penalised_closure_fit(model, x, y, 1.0, steps=0)
        # The a priori fit on its own: the closure of the autoencoder's moments.
        closure, info = fit_closure(model.autoencoder, x, y, epochs=2, batch_size=64,
                                    units=(8,))
        self.assertEqual((closure.num_moments, closure.heat_flux_moment, closure.units),
                         (2, model.autoencoder.heat_flux_moment, [8]))
        self.assertEqual(info["closure_samples"], len(x))
        self.assertTrue(np.isfinite(info["closure_loss"]))
        with self.assertRaisesRegex(ValueError, "epochs=0"):
            fit_closure(model.autoencoder, x, y, epochs=0)
        with self.assertRaisesRegex(ValueError, "learning_rate=-1"):
            fit_closure(model.autoencoder, x, y, learning_rate=-1.0)
        with self.assertRaisesRegex(ValueError, r"\(batch, 6\)"):
            fit_closure(model.autoencoder, x[:, :5], y, epochs=1)
        with self.assertRaisesRegex(ValueError, "hyperbolicity_weight=-1"):
            train_moment_model(data, hyperbolicity_weight=-1.0)
        with self.assertRaisesRegex(ValueError, "hyperbolicity_weight=-1"):
            finetune_closure(model, data, steps=2, hyperbolicity_weight=-1.0)
        with self.assertRaisesRegex(ValueError, "finetune_check_every=0"):
            train_moment_model(data, finetune_steps=2, finetune_check_every=0)
        with self.assertRaisesRegex(ValueError, "finetune_warmup_steps=-1"):
            train_moment_model(data, finetune_steps=2, finetune_warmup_steps=-1)
        with self.assertRaisesRegex(ValueError, "finetune_rollback_factor=0.5"):
            train_moment_model(data, finetune_steps=2, finetune_rollback_factor=0.5)
        with self.assertRaisesRegex(ValueError, "finetune_learning_rate=0"):
            train_moment_model(data, finetune_steps=2, finetune_learning_rate=0)
        with self.assertRaisesRegex(ValueError, "autoencoder_epochs=0"):
            train_moment_model(data, autoencoder_epochs=0)
        with self.assertRaisesRegex(ValueError, "max_autoencoder_samples=0"):
            train_moment_model(data, max_autoencoder_samples=0)
        with self.assertRaisesRegex(ValueError, "`flux`.*'upwind'"):
            train_moment_model(data, flux="upwind")
        with self.assertRaisesRegex(ValueError, "need finetune_steps > 0"):
            train_moment_model(data, finetune_warmup_steps=2)
        with self.assertRaisesRegex(ValueError, "finetune_restarts.*need finetune_steps > 0"):
            train_moment_model(data, finetune_restarts=[(2, 1e-3)])
        with self.assertRaisesRegex(ValueError, "finetune_lr_ramp_steps.*need finetune_steps"):
            train_moment_model(data, finetune_lr_ramp_steps=5)
        with self.assertRaisesRegex(ValueError, "finetune_lr_ramp_steps=-1"):
            train_moment_model(data, finetune_steps=2, finetune_lr_ramp_steps=-1)
        with self.assertRaisesRegex(ValueError, r"finetune_restarts\[1\] steps=0"):
            train_moment_model(data, finetune_steps=2, finetune_restarts=[(2, 1e-3), (0, 1e-3)])
        with self.assertRaisesRegex(TypeError, r"finetune_restarts\[0\] learning_rate='x'"):
            train_moment_model(data, finetune_steps=2, finetune_restarts=[(2, "x")])
        with self.assertRaisesRegex(ValueError, r"finetune_restarts\[0\]` must be a .* pair"):
            train_moment_model(data, finetune_steps=2, finetune_restarts=[200])
        with self.assertRaisesRegex(ValueError, "sequence of .* pairs; received "
                                                "finetune_restarts=200"):
            train_moment_model(data, finetune_steps=2, finetune_restarts=200)
        self.assertEqual(parse_restarts("r", ["200:1e-3", "50:3e-4"]), [(200, 1e-3), (50, 3e-4)])
        self.assertEqual((check_restarts("r", None), check_restarts("r", ())), ([], []))
        for text in ("200", "200:", "a:1e-3", "200:1e-3:1"):
            with self.assertRaisesRegex(ValueError, f"steps:learning_rate .*received '{text}'"):
                parse_restarts("r", [text])
        with self.assertRaisesRegex(ValueError, r"r\[0\] learning_rate=-0.1"):
            parse_restarts("r", ["2:-0.1"])
        with self.assertRaisesRegex(ValueError, "learning_rate=0"):
            finetune_closure(model, data, steps=2, learning_rate=0)
        other_grid = {**data, "v": np.linspace(-8.0, 8.0, 40)}
        with self.assertRaisesRegex(ValueError, "finetune_data.*of `data`.*received 40 nodes"):
            train_moment_model(data, finetune_steps=2, finetune_data=other_grid)
        with self.assertRaisesRegex(ValueError, "`data`.*autoencoder.*received 40 nodes"):
            finetune_closure(model, other_grid, steps=2)
        with self.assertRaisesRegex(ValueError, "`data`.*autoencoder.*received 40 nodes"):
            run_errors(model, other_grid)
        with self.assertRaisesRegex(ValueError, "state_batch=0"):
            finetune_closure(model, data, steps=2, hyperbolicity_weight=1.0, state_batch=0)
        with self.assertRaisesRegex(ValueError, "window"):
            trajectory_samples(model, data, window=3)
        with self.assertRaisesRegex(ValueError, "steps"):
            finetune_closure(model, data, steps=0)
        with self.assertRaisesRegex(ValueError, "check_every=0"):
            finetune_closure(model, data, steps=2, check_every=0)
