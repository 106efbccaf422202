"""SymmetricEmbedding: layer contract, switch function, smoothness at the cut-off, invariances."""

import numpy as np

from mlcmk import config
from mlcmk.layers import SymmetricEmbedding
from mlcmk.layers.symmetric_embedding import quintic_hermite, smooth_switch
from mlcmk.testing import TestCase

KWARGS = dict(rcut=3.0, rcut_smth=1.0, sel=[5, 3], neuron=[4, 8], axis_neuron=2)


class SymmetricEmbeddingTest(TestCase):
    def test_layer_contract(self):
        self.run_layer_test(SymmetricEmbedding, KWARGS, input_shape=(2, 3, 8, 3),
                            expected_output_shape=(2, 3, 16))

    def test_switch(self):
        r = np.array([0.5, 1.0, 2.0, 3.0, 3.5])
        s = np.asarray(smooth_switch(r, 1.0, 3.0))
        u = 0.5
        np.testing.assert_allclose(s, [2.0, 1.0, (u**3 * (-6 * u**2 + 15 * u - 10) + 1) / 2,
                                       0.0, 0.0], atol=1e-15)

    def test_smooth_at_cutoff_and_invariant(self):
        config.set_precision("float64")
        layer = SymmetricEmbedding(**KWARGS)
        layer.build((None, None, 8, 3))
        layer.set_statistics(np.array([[0.3, 0, 0, 0], [0.2, 0, 0, 0]]), np.full((2, 4), 0.5))
        rng = np.random.default_rng(0)
        vectors = rng.uniform(-1.5, 1.5, (1, 1, 8, 3))
        vectors[0, 0, 4] = 0.0  # an empty slot
        base = np.asarray(layer(vectors))
        # A neighbour just inside the cut-off is (almost) an empty slot.
        near = vectors.copy()
        near[0, 0, 4] = [3.0 - 1e-7, 0, 0]
        np.testing.assert_allclose(np.asarray(layer(near)), base, atol=1e-12)
        # Rotations and permutations inside a type block leave D unchanged...
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        perm = np.concatenate([rng.permutation(5), 5 + rng.permutation(3)])
        np.testing.assert_allclose(np.asarray(layer(vectors[:, :, perm] @ q.T)), base,
                                   atol=1e-12)
        # ... a swap across type blocks does not.
        swap = np.arange(8)
        swap[[0, 5]] = [5, 0]
        self.assertGreater(np.abs(np.asarray(layer(vectors[:, :, swap])) - base).max(), 1e-6)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "rcut_smth"):
            SymmetricEmbedding(rcut=2.0, rcut_smth=2.0)
        with self.assertRaisesRegex(ValueError, "axis_neuron"):
            SymmetricEmbedding(neuron=[4, 8], axis_neuron=9)
        with self.assertRaisesRegex(ValueError, "sel"):
            SymmetricEmbedding(sel=[3, -1])
        with self.assertRaisesRegex(ValueError, r"sum\(sel\)=8"):
            SymmetricEmbedding(**KWARGS).build((None, None, 7, 3))


class TabulationTest(TestCase):
    """Compressed embedding: quintic Hermite tables against the nets themselves."""

    def setUp(self):
        super().setUp()
        config.set_precision("float64")
        self.layer = SymmetricEmbedding(**KWARGS)
        self.layer.build((None, None, 8, 3))
        self.layer.set_statistics(np.array([[0.3, 0, 0, 0], [0.2, 0, 0, 0]]),
                                  np.full((2, 4), 0.5))

    def test_quintic_hermite_reproduces_a_quintic(self):
        rng = np.random.default_rng(1)
        c = rng.standard_normal(6)
        p = np.polynomial.Polynomial(c)
        h = 0.7
        values = [np.array([[p(x)]]) for x in (0.0, h)]
        first = [np.array([[p.deriv(1)(x)]]) for x in (0.0, h)]
        second = [np.array([[p.deriv(2)(x)]]) for x in (0.0, h)]
        out = quintic_hermite(*values, *first, *second, h)
        np.testing.assert_allclose(out[0, :, 0], c, rtol=1e-11, atol=1e-12)

    def test_derivatives_match_finite_differences(self):
        z = np.linspace(-1.0, 3.0, 7)
        g, dg, d2g = self.layer.embedding_derivatives(1, z)
        step = 1e-5
        plus, minus = (self.layer.embedding_derivatives(1, z + sign * step)[0]
                       for sign in (1, -1))
        np.testing.assert_allclose(dg, (plus - minus) / (2 * step), atol=1e-8)
        np.testing.assert_allclose(d2g, (plus - 2 * g + minus) / step**2, atol=1e-4)
        np.testing.assert_allclose(g, np.asarray(self.layer._embed(1, z[:, None])), atol=1e-14)

    def test_tabulated_descriptor_matches_and_converges_like_stride_to_the_sixth(self):
        rng = np.random.default_rng(0)
        vectors = rng.uniform(-1.5, 1.5, (2, 3, 8, 3))
        vectors[0, 0, 4] = 0.0
        exact = np.asarray(self.layer(vectors))
        errors = []
        for stride in (0.4, 0.2, 0.02):
            self.layer.tabulate(stride=stride, r_min=0.3)
            self.assertTrue(self.layer.tabulated)
            errors.append(np.abs(np.asarray(self.layer(vectors)) - exact).max())
        self.layer.untabulate()
        np.testing.assert_allclose(np.asarray(self.layer(vectors)), exact, atol=0)
        self.assertLess(errors[2], 1e-12 * np.abs(exact).max() + 1e-14)
        # Quintic Hermite interpolation: error ~ stride^6 (64x per halving).
        self.assertGreater(errors[0] / errors[1], 20)
        self.assertGreater(errors[1], 1e3 * errors[2])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "stride"):
            self.layer.tabulate(stride=0.0)
        with self.assertRaisesRegex(ValueError, "r_min"):
            self.layer.tabulate(r_min=5.0)
        with self.assertRaisesRegex(ValueError, "Build"):
            SymmetricEmbedding(**KWARGS).tabulate()
