"""MomentAutoencoder: exact Galilean invariance, exact conserved moments, parity, saving."""

import keras
import numpy as np

from mlcmk import config
from mlcmk.models.moment_autoencoder import MomentAutoencoder, normalised_quadrature
from mlcmk.problems.kinetic import VelocityGrid, conserved_from_primitive, discrete_maxwellian
from mlcmk.testing import TestCase

V_MAX, NUM_V = 8.0, 64


def _bimodal(shift_nodes=0, seed=0, n=6):
    """Non-Maxwellian distributions that vanish exactly outside a band of nodes.

    Two Gaussians times a smooth cut-off that is exactly zero on the outer 12 nodes at each
    side; `shift_nodes` moves them by a whole number of grid spacings.
    """
    grid = VelocityGrid(V_MAX, NUM_V)
    rng = np.random.default_rng(seed)
    inner = grid.v[12:-12]
    out = np.zeros((n, NUM_V))
    for i in range(n):
        a, b = rng.uniform(-2, 1), rng.uniform(0, 2)
        g = np.exp(-(inner - a) ** 2 / 1.2) + rng.uniform(0.2, 1) * np.exp(-(inner - b) ** 2 / 0.6)
        cut = np.cos(0.5 * np.pi * np.linspace(-1, 1, len(inner))) ** 4
        out[i, 12:-12] = rng.uniform(0.5, 2) * g * cut
    return np.roll(out, shift_nodes, axis=1)


class MomentAutoencoderTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def _model(self, **kwargs):
        model = MomentAutoencoder(v_max=V_MAX, num_v=NUM_V, num_moments=4, **kwargs)
        model.build((None, NUM_V))
        return model

    def test_galilean_invariance_under_a_grid_shift_is_exact(self):
        model = self._model()
        grid = VelocityGrid(V_MAX, NUM_V)
        f = _bimodal()
        W = np.asarray(model.encode(f))[:, 3:]
        for nodes in (-9, 3, 10):
            shifted = _bimodal(shift_nodes=nodes)
            self.assertEqual(np.abs(shifted[:, [0, -1]]).max(), 0.0)  # no mass lost
            UW = np.asarray(model.encode(shifted))
            np.testing.assert_allclose(UW[:, 3:], W, rtol=0, atol=1e-12)
            # The velocity really moved by the shift, so the test is not vacuous.
            u = UW[:, 1] / UW[:, 0]
            np.testing.assert_allclose(u - np.asarray(model.encode(f))[:, 1] / UW[:, 0],
                                       nodes * grid.dv, atol=1e-12)
        # Moments with the same weights but without normalisation do change under the shift.
        raw = lambda g: g @ np.asarray(model.weight_functions(grid.v)) * grid.dv  # noqa: E731
        self.assertGreater(np.abs(raw(_bimodal(shift_nodes=3)) - raw(f)).max(), 1e-3)
        # Scaling f (density) leaves W unchanged too.
        np.testing.assert_allclose(np.asarray(model.encode(3.7 * f))[:, 3:], W, atol=1e-12)

    def test_conserved_moments_passed_through_and_recovered_exactly(self):
        model = self._model()
        grid = VelocityGrid(V_MAX, NUM_V)
        f = _bimodal(seed=1)
        UW = np.asarray(model.encode(f))
        np.testing.assert_allclose(UW[:, :3], grid.moments(f), rtol=1e-14, atol=1e-15)
        decoded = np.asarray(model.decode(UW))
        np.testing.assert_allclose(grid.moments(decoded), grid.moments(f), rtol=1e-12,
                                   atol=1e-14)
        self.assertGreater(np.abs(decoded - f).max(), 1e-3)  # untrained: not the identity

    def test_reflection_parity_and_maxwellian_moments(self):
        model = self._model()
        f = _bimodal(seed=2)
        W = np.asarray(model.encode(f))[:, 3:]
        W_reflected = np.asarray(model.encode(f[:, ::-1]))[:, 3:]
        np.testing.assert_allclose(W_reflected, W * np.array([1, 1, -1, -1]), atol=1e-12)
        self.assertGreater(np.abs(W[:, 2:]).min(), 1e-6)
        grid = VelocityGrid(V_MAX, NUM_V)
        U = conserved_from_primitive([1.0, 0.5, 2.0], [0.3, -1.0, 0.0], [1.0, 0.7, 1.5])
        W_m = np.asarray(model.encode(discrete_maxwellian(grid, U)))[:, 3:]
        np.testing.assert_allclose(W_m, np.tile(model.maxwellian_moments(), (3, 1)), atol=1e-7)

    def test_heat_flux_moment_is_the_normalised_heat_flux(self):
        model = self._model(heat_flux_moment=True)
        grid = VelocityGrid(V_MAX, NUM_V)
        f = _bimodal(seed=3)
        UW = np.asarray(model.encode(f))
        rho, u = UW[:, 0], UW[:, 1] / UW[:, 0]
        T = 2 * UW[:, 2] / rho - u**2
        heat = 0.5 * ((grid.v[None] - u[:, None]) ** 3 * f).sum(1) * grid.dv
        # The first odd moment (index ceil(K/2) = 2) is q / (rho T^{3/2}), exactly.
        np.testing.assert_allclose(UW[:, 3 + 2], heat / (rho * T**1.5), rtol=1e-12, atol=1e-14)
        self.assertGreater(np.abs(heat).min(), 1e-4)  # non-Maxwellian: not trivially zero
        # The other weights stay learned, parity and the Maxwellian value (0) hold.
        W_reflected = np.asarray(model.encode(f[:, ::-1]))[:, 3:]
        np.testing.assert_allclose(W_reflected, UW[:, 3:] * np.array([1, 1, -1, -1]),
                                   atol=1e-12)
        self.assertAlmostEqual(model.maxwellian_moments()[2], 0.0, delta=1e-12)
        with self.assertRaisesRegex(ValueError, "heat_flux_moment"):
            MomentAutoencoder(num_moments=1, heat_flux_moment=True)

    def test_numpy_encoder_matches_encode(self):
        # The solve-time NumPy snapshot equals the Keras encoder (float64) with and without
        # the fixed heat-flux weight; a later weight change does not reach the snapshot.
        f = np.concatenate([_bimodal(seed=5), _bimodal(seed=6, shift_nodes=4)])
        grid = VelocityGrid(V_MAX, NUM_V)
        for kwargs in ({}, {"heat_flux_moment": True}, {"activation": "softplus"}):
            with self.subTest(**kwargs):
                model = self._model(**kwargs)
                np.testing.assert_array_equal(model.velocity_nodes, grid.v)  # the data's nodes
                numpy_encoder = model.numpy_encoder()
                expected = np.asarray(model.encode(f))
                np.testing.assert_allclose(numpy_encoder(f), expected, rtol=1e-12, atol=1e-13)
                # Compiled with XLA (the learned solve's `jit_compile=True`): the same values.
                np.testing.assert_allclose(numpy_encoder.compiled()(f), expected, rtol=1e-12,
                                           atol=1e-13)
                np.testing.assert_allclose(numpy_encoder.weight_functions(grid.v),
                                           np.asarray(model.weight_functions(grid.v)),
                                           rtol=1e-12, atol=1e-13)
                # Every moment is non-trivial somewhere: the comparison is not of zeros.
                self.assertGreater(np.abs(expected[:, 3:]).max(axis=0).min(), 1e-6)
        kernel = model.weight_net.layers[0].kernel
        kernel.assign(kernel + 0.1)
        self.assertGreater(np.abs(np.asarray(model.encode(f)) - numpy_encoder(f)).max(), 1e-4)
        self.assertGreater(np.abs(model.numpy_encoder()(f) - numpy_encoder(f)).max(), 1e-4)
        self.assertGreater(np.abs(model.numpy_encoder().compiled()(f)
                                  - numpy_encoder.compiled()(f)).max(), 1e-4)

    def test_normalised_quadrature(self):
        # U is the grid's quadrature; f_hat has mass 1, mean 0 and variance 1 in xi (the
        # normalisation), to round-off, for non-Maxwellian distributions.
        f = _bimodal(seed=7, shift_nodes=3)
        grid = VelocityGrid(V_MAX, NUM_V)
        U, rho, u, T, xi, f_hat = normalised_quadrature(f, grid.v, grid.dv)
        np.testing.assert_allclose(U, grid.moments(f), rtol=1e-13)
        np.testing.assert_allclose(np.stack([rho, rho * u, 0.5 * rho * (u**2 + T)], -1), U,
                                   rtol=1e-12)
        np.testing.assert_allclose(xi * np.sqrt(T)[:, None] + u[:, None],
                                   np.broadcast_to(grid.v, xi.shape), atol=1e-12)
        for power, expected in ((0, 1.0), (1, 0.0), (2, 1.0)):
            np.testing.assert_allclose(np.sum(xi**power * f_hat, axis=-1), expected, atol=1e-12)
        self.assertGreater(np.abs(np.sum(xi**3 * f_hat, axis=-1)).max(), 1e-3)  # not Maxwellian

    def test_fit_reduces_reconstruction_error(self):
        model = self._model(encoder_units=[16], decoder_units=[32])
        f = np.concatenate([_bimodal(seed=s, n=16) for s in range(4)])
        model.adapt(f)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        before = model.evaluate(f, f, verbose=0)
        model.fit(f, f, batch_size=16, epochs=15, verbose=0)
        self.assertLess(model.evaluate(f, f, verbose=0), 0.5 * before)

    def test_saving_and_export(self):
        model = self._model(encoder_units=[8], decoder_units=[8])
        f = _bimodal(seed=3, n=4)
        model.adapt(f)
        reloaded = self.run_model_saving_test(model, f)
        np.testing.assert_array_equal(np.asarray(reloaded.deviation_scale),
                                      np.asarray(model.deviation_scale))
        self.assertEqual(reloaded.get_config()["num_moments"], 4)
        self.run_export_test(model, f, atol=1e-12)

    def test_float32(self):
        config.set_precision("float32")
        model = self._model(encoder_units=[8], decoder_units=[8])
        out = model(_bimodal(n=2).astype("float32"))
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), "float32")

    def test_bad_arguments(self):
        for kwargs, name in (({"num_moments": 0}, "num_moments"), ({"num_v": 4}, "num_v"),
                             ({"v_max": -1.0}, "v_max"), ({"encoder_units": [0]}, "encoder_units"),
                             ({"activation": "elu"}, "activation='elu'")):
            with self.assertRaisesRegex(ValueError, name):
                MomentAutoencoder(**kwargs)

    def test_distributed_fit_matches_one_device(self):
        f = np.concatenate([_bimodal(seed=s, n=8) for s in range(2)])

        def model_fn():
            model = MomentAutoencoder(v_max=V_MAX, num_v=NUM_V, num_moments=2,
                                      encoder_units=[8], decoder_units=[8])
            model.build((None, NUM_V))
            return model

        self.run_distributed_fit_test(
            model_fn, {"optimizer": keras.optimizers.Adam(1e-2), "loss": "mse"}, f, f,
            epochs=2, batch_size=8, atol=1e-10)
