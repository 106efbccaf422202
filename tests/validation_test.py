import numpy as np

import mlcmk
from mlcmk._validation import (
    check_bool,
    check_number,
    check_positive_int,
    check_positive_ints,
    check_positive_number,
)
from mlcmk.models.moment_autoencoder import MomentAutoencoder
from mlcmk.problems.bsde.hjb import HJBLQ
from mlcmk.problems.control import EnergyStorage
from mlcmk.problems.free_energy import MuellerBrownBath
from mlcmk.problems.kinetic.bgk import BGK1D
from mlcmk.problems.kinetic.data import generate_kinetic_data
from mlcmk.testing import TestCase
from mlcmk.training.bsde_solver import check_schedule, solve
from mlcmk.training.path_norm import path_norm_prefactor


class ValidationTest(TestCase):
    def test_bool(self):
        self.assertIs(check_bool("flag", True), True)
        self.assertIs(check_bool("flag", np.bool_(False)), False)  # canonical Python bool
        for bad in (1, 0, "yes", None, np.array([True])):
            with self.assertRaisesRegex(TypeError, r"`flag` must be a bool; received flag="):
                check_bool("flag", bad)

    def test_positive_int(self):
        self.assertEqual(check_positive_int("n", 3), 3)
        value = check_positive_int("n", np.int64(4))
        self.assertIs(type(value), int)  # canonical Python int, safe in configs
        self.assertEqual(check_positive_int("n", 2, minimum=2), 2)
        for bad in (0, -1, True, 2.0, "3", None):
            with self.assertRaisesRegex(ValueError, r"`n` must be a positive int; received n="):
                check_positive_int("n", bad)
        with self.assertRaisesRegex(ValueError, r"`n` must be an int >= 2; received n=1"):
            check_positive_int("n", 1, minimum=2)

    def test_number(self):
        self.assertEqual(check_number("x", -2), -2.0)
        self.assertIs(type(check_number("x", np.float32(0.5))), float)
        self.assertEqual(check_number("x", np.array(1.5)), 1.5)
        self.assertEqual(check_number("x", 0, low=0), 0.0)
        for bad in (True, "1.0", None, [1.0], np.ones(2)):
            with self.assertRaisesRegex(TypeError, r"`x` must be a number; received x="):
                check_number("x", bad)
        for bad in (float("nan"), float("inf")):
            with self.assertRaisesRegex(ValueError, r"`x` must be a finite number; received"):
                check_number("x", bad)
        with self.assertRaisesRegex(ValueError, r"`x` must be a finite number >= 0; received "
                                                r"x=-1"):
            check_number("x", -1, low=0)
        with self.assertRaisesRegex(ValueError, r"`x` must be a finite number > 0; received x=0"):
            check_positive_number("x", 0)

    def test_number_interval(self):
        self.assertEqual(check_number("p", 0, low=0, high=1), 0.0)
        self.assertEqual(check_number("p", 1, low=0, high=1), 1.0)
        self.assertEqual(check_number("p", 0.5, low=0, strict=True, high=1, strict_high=True), 0.5)
        cases = [  # (value, bounds, message)
            (0, dict(low=0, strict=True, high=1), r"in \(0, 1\]; received p=0"),
            (1, dict(low=0, high=1, strict_high=True), r"in \[0, 1\); received p=1"),
            (1.5, dict(low=0, high=1), r"in \[0, 1\]; received p=1.5"),
            (-0.1, dict(low=0, high=1), r"in \[0, 1\]; received p=-0.1"),
            (2, dict(high=1), r"<= 1; received p=2"),
            (1, dict(high=1, strict_high=True), r"< 1; received p=1"),
            (float("nan"), dict(low=0, high=1), r"in \[0, 1\]; received p=nan"),
        ]
        for value, bounds, message in cases:
            with self.subTest(value=value, bounds=bounds):
                with self.assertRaisesRegex(ValueError, r"`p` must be a finite number " + message):
                    check_number("p", value, **bounds)
        with self.assertRaisesRegex(TypeError, r"`p` must be a number; received p='0.5'"):
            check_number("p", "0.5", low=0, high=1)
        # allow_inf: infinities pass (within the bounds), NaN does not.
        self.assertEqual(check_number("p", float("inf"), low=0, allow_inf=True), float("inf"))
        with self.assertRaisesRegex(ValueError, r"`p` must be a finite number >= 0; received "
                                                r"p=inf"):
            check_number("p", float("inf"), low=0)
        for value in (float("nan"), float("-inf")):
            with self.assertRaisesRegex(ValueError, r"`p` must be a number >= 0; received p="):
                check_number("p", value, low=0, allow_inf=True)

    def test_positive_ints(self):
        value = check_positive_ints("units", (3, np.int64(2)))
        self.assertEqual(value, [3, 2])
        self.assertTrue(all(type(v) is int for v in value))
        self.assertEqual(check_positive_ints("units", np.array([4, 1])), [4, 1])
        self.assertEqual(check_positive_ints("units", (), allow_empty=True), [])
        self.assertEqual(check_positive_ints("sel", 5, allow_scalar=True), [5])
        for bad in ((), [2, 0], [2, 2.0], [True], "12", 5, None, {3: 1}):
            with self.assertRaisesRegex(ValueError, r"`units` must be a non-empty list of "
                                                    r"positive ints; received units="):
                check_positive_ints("units", bad)
        with self.assertRaisesRegex(ValueError, r"`units` must be a list of positive ints; "
                                                r"received units=\[-1\]"):
            check_positive_ints("units", [-1], allow_empty=True)

    def test_callers_share_the_messages(self):
        # One check behind the layers, the problems and the kinetic solver alike.
        with self.assertRaisesRegex(ValueError, r"`units` must be a positive int"):
            mlcmk.ScaledDense(0)
        self.assertIs(type(mlcmk.ScaledDense(np.int64(3)).units), int)
        with self.assertRaisesRegex(ValueError, r"`eps` must be a finite number > 0"):
            BGK1D(eps=-1.0)
        with self.assertRaisesRegex(ValueError, r"`num_x` must be an int >= "):
            BGK1D(num_x=1)
        # Models, problems and training helpers.
        with self.assertRaisesRegex(ValueError, r"`num_v` must be an int >= 8; received num_v=4"):
            MomentAutoencoder(num_v=4)
        with self.assertRaisesRegex(ValueError, r"`v_max` must be a finite number > 0"):
            MomentAutoencoder(v_max=float("inf"))
        with self.assertRaisesRegex(ValueError, r"`lam` must be a finite number >= 0"):
            HJBLQ(dim=2, lam=float("nan"))
        with self.assertRaisesRegex(TypeError, r"`lam` must be a number; received lam='1'"):
            path_norm_prefactor("1", 4, 100)
        # NumPy ints are ints, and the result is the same as for Python ints.
        self.assertEqual(path_norm_prefactor(0.5, np.int64(4), np.int32(100)),
                         0.5 * np.sqrt(np.log(8) / 100))
        # Layer sizes: an empty list is a linear policy, never an empty embedding.
        with self.assertRaisesRegex(ValueError, r"`neuron` must be a non-empty list"):
            mlcmk.SymmetricEmbedding(rcut=6.0, rcut_smth=0.5, sel=[4], neuron=[])
        with self.assertRaisesRegex(ValueError, r"`encoder_units` must be a list of positive"):
            MomentAutoencoder(encoder_units=(32, 0))

    def test_callers_share_the_interval_messages(self):
        # Bounded arguments: the bound and its kind (open or closed) are in the message; a
        # non-number is a TypeError, never a comparison error from inside the caller.
        with self.assertRaisesRegex(ValueError, r"`cfl` must be a finite number in \(0, 1\]; "
                                                r"received cfl=1.5"):
            BGK1D(cfl=1.5)
        self.assertEqual(BGK1D(cfl=1).cfl, 1.0)
        with self.assertRaisesRegex(TypeError, r"`sod_fraction` must be a number; received "
                                               r"sod_fraction='half'"):
            generate_kinetic_data(num_runs=1, sod_fraction="half")
        with self.assertRaisesRegex(ValueError, r"`stiffness_modulation` must be a finite number "
                                                r"in \[0, 1\); received stiffness_modulation=1"):
            MuellerBrownBath(stiffness_modulation=1)
        with self.assertRaisesRegex(ValueError, r"`feed_in` must be a finite number in "
                                                r"\[0.0, 1.0\]; received feed_in=1.2"):
            EnergyStorage(feed_in=1.2)
        with self.assertRaisesRegex(ValueError, r"`learning_rate` must be a finite number in "
                                                r"\(0, 1\); received learning_rate=1.0"):
            solve(HJBLQ(dim=2), iterations=1, learning_rate=1.0)
        with self.assertRaisesRegex(ValueError, r"`rcut_smth` must be a finite number in "
                                                r"\[0, 6.0\); received rcut_smth=6"):
            mlcmk.SymmetricEmbedding(rcut=6, rcut_smth=6, sel=[4], neuron=[4], axis_neuron=2)
        layer = mlcmk.SymmetricEmbedding(rcut=6.0, rcut_smth=0.5, sel=[4], neuron=[4],
                                         axis_neuron=2)
        with self.assertRaisesRegex(ValueError, r"`r_min` must be a finite number in "
                                                r"\(0, 6.0\); received r_min=6.0"):
            layer.tabulate(r_min=6.0)

    def test_training_schedule(self):
        # NumPy ints are ints here too; the default is one epoch per 100 iterations (<= 40).
        self.assertEqual(check_schedule(np.int64(400), np.int32(4)), 4)
        self.assertIs(type(check_schedule(400, np.int64(8))), int)
        self.assertEqual(check_schedule(400, None), 4)
        with self.assertRaisesRegex(ValueError, r"`epochs` must be a positive int; received "
                                                r"epochs=0"):
            check_schedule(400, 0)
        with self.assertRaisesRegex(ValueError, r"`epochs` must be an int in \[1, "
                                                r"iterations=400\]; received epochs=800"):
            check_schedule(400, 800)
        with self.assertRaisesRegex(ValueError, r"`iterations`=400 must be a multiple of "
                                                r"`epochs`=3"):
            check_schedule(400, 3)
