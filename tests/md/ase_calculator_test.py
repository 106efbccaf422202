"""ASE calculator of DeepPotential: agrees with the model, with ASE's numerical derivatives, and
conserves energy in NVE."""

import numpy as np
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mlcmk import config
from mlcmk.md import DeepPotentialCalculator, run_nve
from mlcmk.models.deep_potential import DeepPotential
from mlcmk.testing import TestCase
from tests.models.deep_potential_test import SMALL, emt_system


class CalculatorTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")
        self.system = emt_system(("Al", "Cu"), nframes=2, seed=1, triclinic=True)
        self.model = DeepPotential(["Al", "Cu"], **SMALL)
        self.model.set_statistics([self.system])

    def atoms(self, k=0):
        from ase import Atoms

        s = self.system
        return Atoms([s.type_map[t] for t in s.atom_types], positions=s.coord[k], cell=s.box[k],
                     pbc=True)

    def test_matches_model_and_numerical_derivatives(self):
        atoms = self.atoms()
        calc = DeepPotentialCalculator(self.model)
        atoms.calc = calc
        energy, forces, stress = (atoms.get_potential_energy(), atoms.get_forces(),
                                  atoms.get_stress())
        s = self.system
        ref = self.model.compute(s.coord[:1], s.atom_types[None], s.box[:1])
        self.assertAlmostEqual(energy, float(ref["energy"][0]), delta=1e-10)
        np.testing.assert_allclose(forces, ref["force"].numpy()[0], atol=1e-10)
        np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5),
                                   atol=1e-6)
        np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6),
                                   atol=1e-7)
        self.assertGreater(np.abs(stress).max(), 1e-5)

    def test_free_cluster_and_unknown_element(self):
        atoms = self.atoms()[:10]
        atoms.pbc = False
        atoms.calc = DeepPotentialCalculator(self.model)
        forces = atoms.get_forces()
        np.testing.assert_allclose(forces.sum(axis=0), 0, atol=1e-10)  # no external force
        bad = bulk("Ni", "fcc", a=3.5)
        bad.calc = DeepPotentialCalculator(self.model)
        with self.assertRaisesRegex(ValueError, "Ni"):
            bad.get_potential_energy()

    def test_nve_conserves_energy(self):
        atoms = self.atoms()
        result = run_nve(atoms, DeepPotentialCalculator(self.model), steps=60, timestep_fs=0.5,
                         temperature_K=300, interval=5)
        total = result["total"]
        # Energy exchanges between kinetic and potential; the total stays put.
        self.assertGreater(np.ptp(result["kinetic"]), 20 * np.ptp(total))
        self.assertLess(np.ptp(total) / len(atoms), 1e-4)
        self.assertTrue(np.isfinite(result["drift_meV_per_atom_per_ps"]))

    def test_float32_copy_agrees(self):
        atoms = self.atoms(1)
        atoms.calc = DeepPotentialCalculator(self.model)
        f64 = atoms.get_forces()
        atoms.calc = DeepPotentialCalculator(self.model, precision="float32")
        self.assertEqual(atoms.calc.model.compute_dtype, "float32")
        np.testing.assert_allclose(atoms.get_forces(), f64, atol=1e-4 * np.abs(f64).max())
        with self.assertRaisesRegex(ValueError, "precision"):
            DeepPotentialCalculator(self.model, precision="float16")

    def test_verlet_skin_reuses_the_list_and_changes_nothing(self):
        atoms = self.atoms()
        exact = DeepPotentialCalculator(self.model, skin=0.0, jit_compile=False)
        reused = DeepPotentialCalculator(self.model, skin=0.5)
        rng = np.random.default_rng(3)
        for step in range(8):
            # Small moves reuse the list; the jump at step 5 (0.4 Å > skin / 2) rebuilds it.
            atoms.positions += rng.normal(0, 0.4 if step == 5 else 0.01, atoms.positions.shape)
            forces = []
            for calc in (exact, reused):
                atoms.calc = calc
                forces.append(atoms.get_forces())
            np.testing.assert_allclose(forces[1], forces[0], atol=1e-10)
        self.assertEqual(exact.neighbor_builds, 8)
        self.assertEqual(reused.neighbor_builds, 2)

    def test_skin_overflowing_sel_falls_back_to_the_exact_list(self):
        from mlcmk.models.deep_potential_neighbors import neighbor_list_numpy

        atoms = self.atoms()
        types = np.array([self.system.type_map.index(s) for s in atoms.get_chemical_symbols()])
        index, _ = neighbor_list_numpy(atoms.positions, atoms.cell.array, types, rcut=4.5,
                                       sel=[60, 60])
        tight = [int((index[:, :60] >= 0).sum(1).max()), int((index[:, 60:] >= 0).sum(1).max())]
        model = DeepPotential(["Al", "Cu"], **{**SMALL, "sel": tight})
        model.set_statistics([self.system])
        exact = DeepPotentialCalculator(model, skin=0.0)
        reused = DeepPotentialCalculator(model, skin=1.0)
        for _ in range(3):
            atoms.positions[0, 0] += 0.01
            atoms.calc = exact
            f0 = atoms.get_forces()
            atoms.calc = reused
            np.testing.assert_allclose(atoms.get_forces(), f0, atol=1e-10)
        self.assertEqual(reused.neighbor_builds, 3)  # nothing reused: the wide list overflows
        with self.assertRaisesRegex(ValueError, "skin"):
            DeepPotentialCalculator(model, skin=-0.1)

    def test_compressed_copy_agrees(self):
        atoms = self.atoms(1)
        atoms.calc = DeepPotentialCalculator(self.model)
        energy, forces, stress = (atoms.get_potential_energy(), atoms.get_forces(),
                                  atoms.get_stress())
        atoms.calc = DeepPotentialCalculator(self.model, compress=True)
        self.assertTrue(atoms.calc.model.descriptor.tabulated)
        self.assertFalse(self.model.descriptor.tabulated)
        self.assertAlmostEqual(atoms.get_potential_energy(), energy, delta=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-10 * np.abs(forces).max())
        np.testing.assert_allclose(atoms.get_stress(), stress, atol=1e-10 * np.abs(stress).max())
        raw = DeepPotential(["Al", "Cu"], descriptor="raw_sorted", **SMALL)
        with self.assertRaisesRegex(ValueError, "se_e2_a"):
            raw.compressed()
