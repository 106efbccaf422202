"""Ensemble: spread zero for identical members, growing off the data; deviation; trust levels."""

import keras
import numpy as np
import tensorflow as tf

from mlcmk import config
from mlcmk.models.ensemble import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    Ensemble,
    TrustLevels,
    max_vector_deviation,
)
from mlcmk.testing import TestCase


def _mlp(seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    model = keras.Sequential([keras.Input((1,)),
                              keras.layers.Dense(32, activation="tanh", kernel_initializer=init),
                              keras.layers.Dense(1, kernel_initializer=init)])
    return model


class EnsembleTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_identical_members_have_zero_spread(self):
        ensemble = Ensemble.from_factory(lambda seed: _mlp(7), num_members=3)
        x = np.linspace(-5, 5, 21)[:, None]
        mean, std = ensemble.predict(x)
        self.assertEqual(mean.shape, (21, 1))
        np.testing.assert_array_equal(std, 0.0)
        np.testing.assert_array_equal(ensemble.model_deviation(x), 0.0)
        np.testing.assert_allclose(mean, np.asarray(ensemble.members[0](x)))

    def test_spread_grows_off_the_training_data(self):
        ensemble = Ensemble.from_factory(_mlp, num_members=4)
        x = np.random.default_rng(0).uniform(-1, 1, (256, 1))
        y = np.sin(3 * x)
        for member in ensemble.members:
            member.compile(optimizer=keras.optimizers.Adam(2e-2), loss="mse")
            data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().shuffle(256, seed=0)
            member.fit(data.batch(64), epochs=1, steps_per_epoch=600, shuffle=False,
                       verbose=0)
        inside = np.linspace(-0.9, 0.9, 50)[:, None]
        outside = np.concatenate([np.linspace(-4, -2.5, 25), np.linspace(2.5, 4, 25)])[:, None]
        dev_in = ensemble.model_deviation(inside)
        dev_out = ensemble.model_deviation(outside)
        mean_in, _ = ensemble.predict(inside)
        self.assertLess(np.sqrt(np.mean((mean_in - np.sin(3 * inside)) ** 2)), 0.1)
        self.assertGreater(np.median(dev_out), 5 * np.median(dev_in))

    def test_max_vector_deviation_matches_a_loop(self):
        forces = np.random.default_rng(1).standard_normal((4, 5, 7, 3))  # K, n, atoms, 3
        expected = np.zeros(5)
        for n in range(5):
            per_atom = []
            for i in range(7):
                mean = forces[:, n, i].mean(axis=0)
                per_atom.append(np.sqrt(np.mean([np.sum((forces[k, n, i] - mean) ** 2)
                                                 for k in range(4)])))
            expected[n] = max(per_atom)
        np.testing.assert_allclose(max_vector_deviation(forces), expected, rtol=1e-12)
        # One "atom" with a d-vector, and scalars (the std over members).
        np.testing.assert_allclose(max_vector_deviation(forces[:, :, 0]),
                                   np.sqrt(np.sum(forces[:, :, 0].var(axis=0), axis=-1)))
        np.testing.assert_allclose(max_vector_deviation(forces[:, :, 0, 0]),
                                   forces[:, :, 0, 0].std(axis=0))
        with self.assertRaisesRegex(ValueError, "member_outputs"):
            max_vector_deviation(np.zeros(3))

    def test_trust_levels(self):
        levels = TrustLevels(0.1, 0.3)
        codes = levels.classify([0.0, 0.099, 0.1, 0.29, 0.3, 5.0, np.nan, np.inf])
        np.testing.assert_array_equal(
            codes, [ACCURATE, ACCURATE, CANDIDATE, CANDIDATE, FAILED, FAILED, FAILED, FAILED])
        with self.assertRaisesRegex(ValueError, r"lo <= hi; received lo=0.5, hi=0.2"):
            TrustLevels(0.5, 0.2)
        with self.assertRaisesRegex(ValueError, "`lo` must be a number >= 0"):
            TrustLevels(-1.0, 1.0)
        with self.assertRaisesRegex(TypeError, "`hi` must be a number"):
            TrustLevels(0.1, "high")
        with self.assertRaisesRegex(ValueError, "`hi` must be a number >= 0; received hi=nan"):
            TrustLevels(0.1, np.nan)
        with self.assertRaisesRegex(TypeError, "`lo` must be a number; received lo=True"):
            TrustLevels(True)
        # NumPy scalars and an infinite upper level (the default) are accepted, as floats.
        levels = TrustLevels(np.float32(0.25), np.inf)
        self.assertEqual((type(levels.lo), levels.lo, levels.hi), (float, 0.25, np.inf))
        self.assertEqual(TrustLevels(np.int64(1)).hi, float("inf"))
        ensemble = Ensemble.from_factory(_mlp, num_members=2)
        with self.assertRaisesRegex(ValueError, "lo <= hi"):
            ensemble.classify(np.zeros((2, 1)), lo=1.0, hi=0.5)

    def test_output_fn_and_persistence(self):
        ensemble = Ensemble.from_factory(_mlp, num_members=3,
                                         output_fn=lambda m, x: 2.0 * m(x))
        x = np.linspace(-1, 1, 9)[:, None]
        direct = np.stack([2.0 * np.asarray(m(x)) for m in ensemble.members])
        np.testing.assert_allclose(ensemble.member_outputs(x), direct)
        directory = self.get_temp_dir()
        ensemble.save_weights(directory)
        other = Ensemble.from_factory(_mlp, seeds=[10, 11, 12],
                                      output_fn=lambda m, x: 2.0 * m(x))
        self.assertGreater(np.abs(other.member_outputs(x) - direct).max(), 1e-3)
        other.load_weights(directory)
        np.testing.assert_array_equal(other.member_outputs(x), direct)
        ensemble.save(directory + "/models")
        reloaded = Ensemble.load(directory + "/models", output_fn=lambda m, x: 2.0 * m(x))
        np.testing.assert_array_equal(reloaded.member_outputs(x), direct)

    def test_bad_members(self):
        with self.assertRaisesRegex(ValueError, "non-empty"):
            Ensemble([])
        with self.assertRaisesRegex(TypeError, r"members\[1\]"):
            Ensemble([_mlp(0), "model"])
        with self.assertRaisesRegex(ValueError, "num_members"):
            Ensemble.from_factory(_mlp, num_members=0)
