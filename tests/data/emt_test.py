import json
import os
from unittest import mock

import numpy as np
from ase import units
from ase.calculators.emt import EMT

from mlcmk.data import (
    System,
    al_dataset,
    alcu_dataset,
    default_cache_dir,
    frames_to_atoms,
    generate_dataset,
    read_systems,
    system_from_atoms,
    thermalize,
)
from mlcmk.testing import TestCase

# Toy sizes: a few short trajectories and lattice frames of 32 atoms.
SMALL = {
    "n_frames": 10,
    "frames_per_trajectory": 4,
    "equilibration": 6,
    "stride": 3,
    "temperatures": (300.0, 1200.0),
}


class CountingEMT(EMT):
    """EMT that counts its calculations."""

    calls = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.calls += 1
        super().calculate(*args, **kwargs)


def _energy(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy()


class EMTLabelsTest(TestCase):
    """Stored labels are EMT's energy, -dE/dr and -dE/d(strain), checked by finite differences."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import tempfile

        cls.cache = tempfile.mkdtemp(prefix="mlcmk_emt_")
        cls.root = generate_dataset(
            elements=("Al", "Cu"), cache_dir=cls.cache, seed=3, vacancy_fraction=0.3, **SMALL
        )
        cls.systems = read_systems(cls.root)

    @classmethod
    def tearDownClass(cls):
        import shutil

        shutil.rmtree(cls.cache, ignore_errors=True)
        super().tearDownClass()

    def test_energy_forces_virial_match_finite_differences(self):
        rng = np.random.default_rng(0)
        checked = 0
        for system in self.systems:
            index = system.nframes - 1  # a lattice frame or an MD frame
            atoms = frames_to_atoms(system, index, labels=False)
            self.assertAlmostEqual(_energy(atoms), system.energy[index], places=10)
            h = 1e-4
            for atom in rng.choice(system.natoms, size=2, replace=False):
                for axis in range(3):
                    plus, minus = atoms.copy(), atoms.copy()
                    plus.positions[atom, axis] += h
                    minus.positions[atom, axis] -= h
                    fd = -(_energy(plus) - _energy(minus)) / (2 * h)
                    # Central differences: error O(h^2 E''') ~ 1e-8 eV/Å.
                    self.assertAlmostEqual(system.force[index, atom, axis], fd, delta=1e-6)
            # Virial W = -dE/d(eps) at eps = 0 with the cell (rows) and atoms deformed by I + eps.
            cell = np.asarray(atoms.get_cell())
            for a, b in [(0, 0), (1, 2), (2, 1)]:
                energies = []
                for sign in (1, -1):
                    eps = np.zeros((3, 3))
                    eps[a, b] = sign * h
                    strained = atoms.copy()
                    strained.set_cell(cell @ (np.eye(3) + eps), scale_atoms=True)
                    energies.append(_energy(strained))
                fd = -(energies[0] - energies[1]) / (2 * h)
                self.assertAlmostEqual(system.virial[index, a, b], fd, delta=1e-5)
            checked += 1
        self.assertGreaterEqual(checked, 2)

    def test_virial_is_minus_volume_times_ase_stress(self):
        system = self.systems[0]
        atoms = frames_to_atoms(system, 0, labels=False)
        atoms.calc = EMT()
        np.testing.assert_allclose(
            system.virial[0], -atoms.get_volume() * atoms.get_stress(voigt=False), atol=1e-12
        )
        # Tension (a stretched box) gives a positive ASE stress, so a negative DeePMD virial.
        stretched = atoms.copy()
        stretched.set_cell(1.05 * np.asarray(atoms.get_cell()), scale_atoms=True)
        stretched.calc = EMT()
        self.assertGreater(np.trace(stretched.get_stress(voigt=False)), 0)
        self.assertLess(np.trace(system_from_atoms([stretched]).virial[0]), 0)

    def test_grouping_and_metadata(self):
        for system in self.systems:
            self.assertEqual(system.type_map, ["Al", "Cu"])
            # Atoms sorted by element and the directory named after the composition.
            self.assertTrue(np.all(np.diff(system.atom_types) >= 0))
            self.assertEqual(system.name, system.formula)
            self.assertTrue(system.periodic)
        self.assertEqual(sum(s.nframes for s in self.systems), 10)
        with open(os.path.join(self.root, "dataset.json")) as f:
            meta = json.load(f)
        self.assertEqual(meta["parameters"]["seed"], 3)
        self.assertEqual(
            sorted(s["name"] for s in meta["systems"]), sorted(s.name for s in self.systems)
        )

    def test_frames_to_atoms_round_trip(self):
        system = self.systems[0]
        frames = [frames_to_atoms(system, i) for i in range(system.nframes)]
        again = system_from_atoms(frames, type_map=system.type_map)
        for key in ("coord", "box", "energy", "force"):
            np.testing.assert_array_equal(getattr(again, key), getattr(system, key))
        np.testing.assert_allclose(again.virial, system.virial, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(again.atom_types, system.atom_types)


class EMTDatasetTest(TestCase):
    def test_determinism(self):
        first = read_systems(generate_dataset(cache_dir=self.get_temp_dir(), seed=5, **SMALL))
        second = read_systems(generate_dataset(cache_dir=self.get_temp_dir(), seed=5, **SMALL))
        other = read_systems(generate_dataset(cache_dir=self.get_temp_dir(), seed=6, **SMALL))
        self.assertEqual(len(first), len(second))
        for a, b in zip(first, second, strict=True):
            for key in ("coord", "box", "energy", "force", "virial"):
                np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        self.assertFalse(np.array_equal(first[0].energy, other[0].energy))

    def test_cache_hit_does_not_regenerate(self):
        cache = self.get_temp_dir()
        kwargs = dict(
            cache_dir=cache, calculator=CountingEMT, calculator_key="counting-emt", seed=1, **SMALL
        )
        CountingEMT.calls = 0
        path = generate_dataset(**kwargs)
        calls = CountingEMT.calls
        self.assertGreater(calls, 10)
        mtime = os.path.getmtime(os.path.join(path, "dataset.json"))
        self.assertEqual(generate_dataset(**kwargs), path)
        self.assertEqual(CountingEMT.calls, calls)
        self.assertEqual(os.path.getmtime(os.path.join(path, "dataset.json")), mtime)
        # Any changed parameter is another data set.
        changed = generate_dataset(**dict(kwargs, stride=4))
        self.assertNotEqual(changed, path)
        self.assertGreater(CountingEMT.calls, calls)
        self.assertEqual(
            sorted(os.listdir(cache)), sorted(os.path.basename(p) for p in (path, changed))
        )  # no temporary leftovers

    def test_cache_dir_from_environment(self):
        with mock.patch.dict(os.environ, {"MLCMK_CACHE_DIR": "/some/where"}):
            self.assertEqual(default_cache_dir(), os.path.join("/some/where", "deepmd"))
        with mock.patch.dict(os.environ, {"MLCMK_CACHE_DIR": ""}):
            self.assertEqual(
                default_cache_dir(),
                os.path.join(os.path.expanduser("~"), ".cache", "mlcmk", "deepmd"),
            )
        cache = self.get_temp_dir()
        with mock.patch.dict(os.environ, {"MLCMK_CACHE_DIR": cache}):
            path = generate_dataset(seed=2, **dict(SMALL, n_frames=2, md_fraction=0.0))
        self.assertEqual(os.path.dirname(path), os.path.join(cache, "deepmd"))

    def test_cache_folder_permissions_follow_the_umask(self):
        # The data set is built in a temporary folder renamed into place: it must get mkdir's
        # permissions (a cache shared with the group stays readable), not mkdtemp's 0o700.
        old = os.umask(0o027)
        try:
            path = generate_dataset(cache_dir=self.get_temp_dir(), seed=2,
                                    **dict(SMALL, n_frames=2, md_fraction=0.0))
        finally:
            os.umask(old)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o750)
        self.assertEqual(os.stat(os.path.join(path, "dataset.json")).st_mode & 0o777, 0o640)
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])

    def test_ready_made_sets(self):
        cache = self.get_temp_dir()
        small = dict(SMALL)
        del small["n_frames"], small["temperatures"]
        al = al_dataset(n_train=8, n_test=4, cache_dir=cache, **small)
        train, test = read_systems(al.train), read_systems(al.test)
        self.assertEqual([(s.name, s.nframes) for s in train], [("Al32", 8)])
        self.assertEqual([(s.name, s.nframes) for s in test], [("Al32", 4)])
        with open(os.path.join(al.test, "dataset.json")) as f:
            params = json.load(f)["parameters"]
        self.assertEqual(params["temperatures"], [450.0, 750.0, 1050.0])
        self.assertEqual(params["seed"], 10_000)
        alcu = alcu_dataset(n_train=24, n_test=4, cache_dir=cache, seed=4, **small)
        systems = read_systems([alcu.train, alcu.test])
        self.assertEqual(systems[0].type_map, ["Al", "Cu"])
        sizes = {s.natoms for s in systems}
        self.assertGreaterEqual(len(sizes), 2)  # FCC/L1_2 (32) and B2 (16) or vacancies
        self.assertTrue(sizes <= {15, 16, 31, 32})
        self.assertGreaterEqual(len({s.formula for s in systems}), 3)

    def test_ordered_structures(self):
        systems = read_systems(
            generate_dataset(
                elements=("Al", "Cu"),
                structures=("L12",),
                cache_dir=self.get_temp_dir(),
                **dict(SMALL, n_frames=3, md_fraction=0.0),
            )
        )
        for s in systems:
            self.assertIn(s.formula, ("Al24Cu8", "Al8Cu24"))
        systems = read_systems(
            generate_dataset(
                elements=("Al", "Cu"),
                structures=("B2",),
                sizes=((3, 3, 3),),
                cache_dir=self.get_temp_dir(),
                **dict(SMALL, n_frames=1, md_fraction=0.0),
            )
        )
        self.assertEqual([s.formula for s in systems], ["Al27Cu27"])

    def test_invalid_arguments(self):
        cache = self.get_temp_dir()
        with self.assertRaisesRegex(ValueError, "`elements`"):
            generate_dataset(elements=("Al", "Al"), cache_dir=cache)
        with self.assertRaisesRegex(ValueError, "structure 'B2' needs two"):
            generate_dataset(structures=("B2",), cache_dir=cache)
        with self.assertRaisesRegex(ValueError, "`structures` entries"):
            generate_dataset(structures=("hcp",), cache_dir=cache)
        with self.assertRaisesRegex(ValueError, "`n_frames`"):
            generate_dataset(n_frames=0, cache_dir=cache)
        with self.assertRaisesRegex(ValueError, "`temperatures`"):
            generate_dataset(temperatures=(-5.0,), cache_dir=cache)
        with self.assertRaisesRegex(ValueError, r"`md_fraction` must be a finite number in "
                                                r"\[0, 1\]; received md_fraction=1.5"):
            generate_dataset(md_fraction=1.5, cache_dir=cache)
        with self.assertRaisesRegex(ValueError, r"`fractions` must be a finite number in "
                                                r"\(0, 1\); received fractions=0.0"):
            generate_dataset(elements=("Al", "Cu"), fractions=(0.5, 0.0), cache_dir=cache)
        with self.assertRaisesRegex(TypeError, r"`friction` must be a number"):
            generate_dataset(friction="0.02", cache_dir=cache)
        with self.assertRaisesRegex(ValueError, r"`sizes` must be a non-empty list of positive "
                                                r"ints; received sizes=\[2, 0, 2\]"):
            generate_dataset(sizes=([2, 0, 2],), cache_dir=cache)
        with self.assertRaisesRegex(ValueError, "no FCC/BCC reference lattice constant for 'C'"):
            generate_dataset(elements=("C",), cache_dir=cache, n_frames=1)
        self.assertEqual(os.listdir(cache), [])

    def test_system_from_atoms_validates(self):
        from ase.build import bulk, molecule

        with self.assertRaisesRegex(ValueError, "another order"):
            system_from_atoms([bulk("Al", cubic=True), bulk("Cu", cubic=True)], EMT())
        slab = bulk("Al", cubic=True)
        slab.pbc = [True, True, False]
        with self.assertRaisesRegex(ValueError, "only fully periodic or free"):
            system_from_atoms([slab], EMT())
        free = system_from_atoms([molecule("H2")], EMT())
        self.assertIsInstance(free, System)
        self.assertIsNone(free.box)
        self.assertIsNone(free.virial)


class EMTThermalisationTest(TestCase):
    def test_md_frames_follow_equipartition(self):
        # For a nearly harmonic crystal the mean potential energy above the perfect lattice is
        # (3/2) k T per atom, times (N - 1)/N with the centre of mass fixed. Seeds 7, 8, 9, 11 give
        # ratios 0.93-1.06; a wrong temperature unit or a missed equilibration falls outside.
        from ase import units
        from ase.build import bulk

        lattice = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
        e0 = _energy(lattice)
        ratios = []
        for temperature in (300.0, 1200.0):
            path = generate_dataset(
                cache_dir=self.get_temp_dir(),
                seed=7,
                n_frames=30,
                md_fraction=1.0,
                max_strain=0.0,
                temperatures=(temperature,),
            )
            (system,) = read_systems(path)
            excess = np.mean(system.energy - e0) / system.natoms
            ratios.append(excess / (1.5 * units.kB * temperature * 31 / 32))
        for ratio in ratios:
            self.assertGreater(ratio, 0.8)
            self.assertLess(ratio, 1.2)

    def test_thermalize_draws_maxwell_boltzmann_momenta_without_drift(self):
        import warnings

        from ase.build import bulk
        from ase.md import velocitydistribution

        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(6)  # 864 atoms
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no deprecated ASE name
            thermalize(atoms, 900.0, np.random.default_rng(3))
        p = atoms.get_momenta()
        np.testing.assert_allclose(p.sum(axis=0), 0.0, atol=1e-10 * np.abs(p).max())
        # Kinetic temperature of 3N - 3 degrees of freedom; its relative spread is
        # sqrt(2 / (3N)) ~ 2.8 %, so 10 % is 3.5 sigma.
        kinetic_t = 2 * atoms.get_kinetic_energy() / (3 * (len(atoms) - 1) * units.kB)
        self.assertLess(abs(kinetic_t / 900.0 - 1), 0.1)
        # The same draws as ASE's own sampler with the same generator, then zero drift.
        reference = atoms.copy()
        velocitydistribution.thermalize_momenta(reference, 900.0,
                                                rng=np.random.default_rng(3))
        velocitydistribution.Stationary(reference)
        np.testing.assert_allclose(p, reference.get_momenta(), rtol=0, atol=1e-12)
