"""MomentClosure: exact reflection symmetry, Galilean invariance, Euler limit, saving."""

import keras
import numpy as np

from mlcmk import config
from mlcmk.models.moment_closure import MomentClosure, output_parity
from mlcmk.testing import TestCase

K = 4


def _inputs(n=32, seed=0, w_maxwell=None):
    rng = np.random.default_rng(seed)
    rho, u, T = rng.uniform(0.3, 2, n), rng.normal(size=n), rng.uniform(0.4, 2, n)
    W = (np.zeros(K) if w_maxwell is None else w_maxwell) + 0.05 * rng.normal(size=(n, K))
    eps = np.exp(rng.uniform(np.log(1e-3), np.log(10), n))
    return np.concatenate([np.stack([rho, rho * u, 0.5 * rho * (u**2 + T)], 1), W,
                           eps[:, None]], axis=1)


def _adapted(seed=0, units=(16, 16)):
    closure = MomentClosure(num_moments=K, units=list(units))
    rng = np.random.default_rng(seed)
    w_maxwell = np.concatenate([rng.normal(size=2), np.zeros(2)])
    x = _inputs(64, seed, w_maxwell)
    y = rng.normal(size=(64, 1 + 4 * K))
    closure.adapt(x, y, w_maxwell, _y_maxwell(seed))
    return closure, w_maxwell


def _y_maxwell(seed=0):
    y = np.random.default_rng(seed + 100).normal(size=1 + 4 * K)
    return np.where(output_parity(K) > 0, y, 0.0)


def _reflect(x):
    x = x.copy()
    x[:, 1] *= -1  # momentum
    x[:, 3 + 2:3 + K] *= -1  # odd generalised moments
    return x


class MomentClosureTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_reflection_symmetry_is_exact(self):
        closure, w_m = _adapted()
        x = _inputs(50, 1, w_m)
        out, out_r = np.asarray(closure(x)), np.asarray(closure(_reflect(x)))
        # q odd; G_e odd, G_o even; a1_e odd; a2_o odd; a3_e odd; the rest even.
        sign = np.array([-1, -1, -1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, 1, 1])
        np.testing.assert_array_equal(output_parity(K), sign)
        np.testing.assert_allclose(out_r, sign * out, rtol=1e-12, atol=1e-14)
        self.assertGreater(np.abs(out).min(axis=0).max(), 1e-4)

    def test_galilean_invariance_and_zero_heat_flux_at_equilibrium(self):
        closure, w_m = _adapted()
        x = _inputs(20, 2, w_m)
        rho = x[:, 0]
        u = x[:, 1] / rho
        T = (2 * x[:, 2] - rho * u**2) / rho
        boosted = x.copy()
        boosted[:, 1] = rho * (u + 1.7)
        boosted[:, 2] = 0.5 * rho * ((u + 1.7) ** 2 + T)
        np.testing.assert_allclose(np.asarray(closure(boosted)), np.asarray(closure(x)),
                                   rtol=1e-10, atol=1e-12)
        equilibrium = x.copy()
        equilibrium[:, 3:3 + K] = w_m
        out = np.asarray(closure(equilibrium))
        # Exactly the Maxwellian values (zero heat flux) whatever rho, T, eps.
        np.testing.assert_array_equal(out, np.tile(_y_maxwell(), (len(x), 1)))
        self.assertEqual(_y_maxwell()[0], 0.0)
        self.assertGreater(np.abs(np.asarray(closure(x)) - out).min(axis=0).max(), 1e-4)

    def test_numpy_closure_matches(self):
        closure, w_m = _adapted()
        x = _inputs(40, 3, w_m)
        rho = x[:, 0]
        u = x[:, 1] / rho
        T = (2 * x[:, 2] - rho * u**2) / rho
        nc = closure.numpy_closure()
        for eps in (1e-3, 0.7):
            x[:, -1] = eps
            q, g, a = nc(rho, T, x[:, 3:3 + K], eps)
            np.testing.assert_allclose(np.concatenate([q[:, None], g, a.reshape(40, -1)], 1),
                                       np.asarray(closure(x)), rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(nc.w_maxwell, w_m)
        # The network's arithmetic in float32: float64 outputs within float32 round-off.
        self.assertEqual(nc.dtype, "float64")
        single = closure.numpy_closure("float32")
        self.assertEqual(single.dtype, "float32")
        out64, out32 = nc(rho, T, x[:, 3:3 + K], 0.7), single(rho, T, x[:, 3:3 + K], 0.7)
        for a, b in zip(out64, out32, strict=True):
            self.assertEqual(b.dtype, np.float64)
            scale = np.abs(a).max()
            self.assertLess(np.abs(a - b).max(), 1e-5 * scale)
            self.assertGreater(np.abs(a - b).max(), 1e-12 * scale)  # really float32
        for bad in ("float16", "f4", np.int32):
            with self.assertRaisesRegex(ValueError, "`dtype` must be one of.*float32"):
                closure.numpy_closure(bad)

    def test_heat_flux_moment_gives_the_heat_flux_exactly(self):
        config.set_seed(0)
        closure = MomentClosure(num_moments=K, units=[16, 16], heat_flux_moment=True)
        rng = np.random.default_rng(0)
        w_m = np.concatenate([rng.normal(size=2), np.zeros(2)])
        closure.adapt(_inputs(64, 0, w_m), rng.normal(size=(64, 1 + 4 * K)), w_m, _y_maxwell())
        x = _inputs(30, 6, w_m)
        out = np.asarray(closure(x))
        np.testing.assert_array_equal(out[:, 0], x[:, 3 + 2])  # q_hat = W_3 (first odd)
        # Reflection symmetry still exact; NumPy snapshot agrees.
        sign = output_parity(K)
        np.testing.assert_allclose(np.asarray(closure(_reflect(x))), sign * out, rtol=1e-12,
                                   atol=1e-14)
        rho = x[:, 0]
        T = 2 * x[:, 2] / rho - (x[:, 1] / rho) ** 2
        x[:, -1] = 0.3
        q, g, a = closure.numpy_closure()(rho, T, x[:, 3:3 + K], 0.3)
        np.testing.assert_allclose(np.concatenate([q[:, None], g, a.reshape(30, -1)], 1),
                                   np.asarray(closure(x)), rtol=1e-10, atol=1e-13)
        self.assertEqual(MomentClosure.from_config(closure.get_config()).heat_flux_moment, True)
        with self.assertRaisesRegex(ValueError, "heat_flux_moment"):
            MomentClosure(num_moments=1, heat_flux_moment=True)

    def test_fit_reduces_the_loss(self):
        closure, w_m = _adapted(units=(16,))
        x = _inputs(128, 5, w_m)
        # Targets from a known smooth rule of W, so that the loss can go down.
        y = np.tanh(10 * (x[:, 3:4] - w_m[0])) * np.linspace(1, 2, 1 + 4 * K)
        closure.adapt(x, y, w_m, _y_maxwell())
        closure.compile(optimizer=keras.optimizers.Adam(1e-2))
        before = closure.evaluate(x, y, batch_size=32, verbose=0)
        closure.fit(x, y, batch_size=32, epochs=20, verbose=0)
        self.assertLess(closure.evaluate(x, y, batch_size=32, verbose=0), 0.5 * before)

    def test_saving_and_export(self):
        closure, w_m = _adapted()
        x = _inputs(8, 4, w_m)
        reloaded = self.run_model_saving_test(closure, x)
        np.testing.assert_array_equal(np.asarray(reloaded.w_maxwell), np.asarray(closure.w_maxwell))
        self.run_export_test(closure, x, atol=1e-12)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "num_moments"):
            MomentClosure(num_moments=0)
        with self.assertRaisesRegex(ValueError, "activation"):
            MomentClosure(activation="elu")
        closure, w_m = _adapted()
        with self.assertRaisesRegex(ValueError, "expects inputs"):
            closure.features(np.ones((3, 5)))
        bad = _inputs(4, 0, w_m)
        bad[0, 0] = -1.0
        with self.assertRaisesRegex(ValueError, "positive density"):
            closure.features(bad)
        with self.assertRaisesRegex(ValueError, "adapt"):
            closure.adapt(_inputs(3, 0, w_m), np.ones((3, 6)), w_m, _y_maxwell())


class MomentClosureDistributedTest(TestCase):
    def test_distributed_fit_matches_one_device(self):
        config.set_precision("float64")
        _, w_m = _adapted(units=(8,))
        x = _inputs(32, 6, w_m)
        y = np.random.default_rng(6).normal(size=(32, 1 + 4 * K))

        def model_fn():
            closure = MomentClosure(num_moments=K, units=[8])
            closure.adapt(x, y, w_m, _y_maxwell())
            return closure

        self.run_distributed_fit_test(model_fn, {"optimizer": keras.optimizers.Adam(1e-2)},
                                      x, y, epochs=2, batch_size=8, atol=1e-10)
