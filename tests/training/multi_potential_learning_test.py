"""DP-GEN over several structures: structures, EMT labels, packing, loop, resume, bad input."""

import json
import os

import numpy as np
from ase.calculators.emt import EMT

from mlcmk import config
from mlcmk.models.deep_potential import DeepPotential
from mlcmk.models.ensemble import CANDIDATE, Ensemble
from mlcmk.testing import TestCase
from mlcmk.training.concurrent_learning import configuration_key
from mlcmk.training.multi_potential_learning import (
    DEFAULT_STRUCTURES,
    MultiStructureExaminer,
    MultiStructureLabeller,
    StructureSet,
    build_multi_potential_learner,
    labelled_systems,
    parse_structures,
    plot_structure_table,
    structure_counts,
    structure_table,
)
from mlcmk.training.potential_learning import (
    STRUCTURES,
    ForceDeviationExaminer,
    initial_configurations,
    structure_atoms,
)
from tests.training.counting_labeller import Counting, Kill

TINY = dict(rcut=4.5, rcut_smth=0.5, sel=48, neuron=(4, 8), axis_neuron=2, fitting_neuron=(8, 8))
# Two structures of different sizes and compositions (padding and two types are exercised).
PAIR = ("b2_alcu", "l12_cu3al")  # 16 and 32 atoms


class CountingLabeller(Counting, MultiStructureLabeller):
    """EMT labels; records every configuration key it labels; optionally killed."""


def _kill(*args, **kwargs):
    raise Kill


def _build(directory, labeller=None, **kwargs):
    settings = dict(num_members=2, model_kwargs=TINY, trust_levels=(0.02, 0.5), max_iterations=1,
                    labels_per_structure=2, num_initial_per_structure=3, num_trajectories=1,
                    md_steps=15, sample_every=5, train_steps=10, converge_fraction=None,
                    verbose=0, seed=4)
    settings.update(kwargs)
    return build_multi_potential_learner(list(PAIR), directory, labeller=labeller, **settings)


class MultiPotentialLearningTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_every_structure_builds_and_emt_labels_it(self):
        for name in STRUCTURES:
            atoms = structure_atoms(name)
            self.assertTrue(all(atoms.pbc), name)
            self.assertTrue(8 <= len(atoms) <= 32, f"{name}: {len(atoms)} atoms")
            if name.startswith("fcc1"):  # slabs: the gap between images exceeds rcut = 6 Å
                z = atoms.positions[:, 2]
                self.assertGreater(atoms.cell[2, 2] - (z.max() - z.min()), 6.0, name)
        structure_set = StructureSet(list(STRUCTURES))
        labeller = MultiStructureLabeller(structure_set)
        for s, atoms in enumerate(structure_set.atoms):
            x = initial_configurations(atoms, 1, seed=s)[0]
            label = labeller.label(structure_set.pack_batch(s, x[None])[0])
            n = len(atoms)
            self.assertEqual(label["force"].shape, (structure_set.max_natoms, 3))
            self.assertTrue(np.all(np.isfinite(label["force"])), structure_set.names[s])
            self.assertTrue(np.isfinite(label["energy"]))
            np.testing.assert_array_equal(label["force"][n:], 0.0)  # padding
            self.assertGreater(np.abs(label["force"][:n]).max(), 1e-3)  # displaced: forces
            # The same as EMT on the structure itself.
            ref = atoms.copy()
            ref.set_cell(x[n * 3:].reshape(3, 3))
            ref.set_positions(x[:n * 3].reshape(n, 3))
            ref.calc = EMT()
            np.testing.assert_allclose(label["force"][:n], ref.get_forces(), rtol=0, atol=1e-12)
        self.assertEqual(labeller.calls, len(STRUCTURES))
        # Forces are minus the gradient of the energy (central differences, B2 AlCu).
        structure_set = StructureSet(["b2_alcu"])
        labeller = MultiStructureLabeller(structure_set)
        x = structure_set.pack_batch(0, initial_configurations("b2_alcu", 1, seed=7))[0]
        force = labeller.label(x)["force"]
        h = 1e-5
        for atom, axis in ((0, 0), (3, 2), (10, 1)):
            plus, minus = x.copy(), x.copy()
            plus[10 + 3 * atom + axis] += h
            minus[10 + 3 * atom + axis] -= h
            energies = labeller.label(plus)["energy"], labeller.label(minus)["energy"]
            derivative = (energies[0] - energies[1]) / (2 * h)
            self.assertAlmostEqual(-derivative, force[atom, axis], delta=1e-6)

    def test_pack_and_bad_input(self):
        structure_set = StructureSet(list(PAIR))
        self.assertEqual(structure_set.type_map, ["Al", "Cu"])
        self.assertEqual(structure_set.width, 10 + 3 * 32)
        atoms = structure_set.atoms[0]
        x = structure_set.pack(0, atoms.positions, atoms.cell.array)
        s, positions, cell = structure_set.unpack(x)
        self.assertEqual(s, 0)
        np.testing.assert_array_equal(positions, atoms.positions)
        np.testing.assert_array_equal(cell, atoms.cell.array)
        # The same coordinates under another structure index are another configuration.
        y = x.copy()
        y[0] = 1
        self.assertNotEqual(configuration_key(x), configuration_key(y))
        with self.assertRaisesRegex(ValueError, r"configurations.*\(n, 106\).*\(1, 105\)"):
            structure_set.indices(x[None, :-1])
        with self.assertRaisesRegex(ValueError, "indices outside 0..1"):
            structure_set.indices(np.full((1, 106), 2.0))
        with self.assertRaisesRegex(ValueError, r"positions \(16, 3\)"):
            structure_set.pack(0, np.zeros((32, 3)), np.eye(3))
        self.assertEqual(parse_structures("all"), list(DEFAULT_STRUCTURES))
        self.assertEqual(parse_structures(" fcc_al, hcp_al "), ["fcc_al", "hcp_al"])
        with self.assertRaisesRegex(ValueError, "`structures` is empty"):
            parse_structures([])
        with self.assertRaisesRegex(ValueError, "`structures` is empty"):
            parse_structures(" , ")
        with self.assertRaisesRegex(ValueError, "`structures` has an unknown structure 'fcc_xx'"):
            parse_structures("fcc_al,fcc_xx")
        with self.assertRaisesRegex(ValueError, "`structures` repeats"):
            parse_structures(["fcc_al", "fcc_al"])
        with self.assertRaisesRegex(ValueError, "`structures` is empty"):
            build_multi_potential_learner([], self.get_temp_dir())
        with self.assertRaisesRegex(ValueError, "`labels_per_structure`"):
            _build(os.path.join(self.get_temp_dir(), "a"), labels_per_structure=0)
        with self.assertRaisesRegex(ValueError, "type_map"):
            StructureSet(list(PAIR), type_map=["Al"])
        # A run directory belongs to one list of structures.
        directory = os.path.join(self.get_temp_dir(), "b")
        _build(directory)
        with self.assertRaisesRegex(ValueError, "`directory`.*holds a run of"):
            build_multi_potential_learner(["fcc_al"], directory, model_kwargs=TINY)

    def test_examiner_and_systems_match_single_structure(self):
        structure_set = StructureSet(list(PAIR))

        def factory(seed):
            model = DeepPotential(structure_set.type_map, **TINY)
            model.build()
            return model

        ensemble = Ensemble.from_factory(factory, num_members=2)
        parts = [initial_configurations(atoms, 2, seed=s)
                 for s, atoms in enumerate(structure_set.atoms)]
        packed = np.concatenate([structure_set.pack_batch(1, parts[1]),
                                 structure_set.pack_batch(0, parts[0])])
        deviation = MultiStructureExaminer(ensemble, structure_set, batch_size=3).examine(packed)
        for s, rows in ((1, slice(0, 2)), (0, slice(2, 4))):
            single = ForceDeviationExaminer(ensemble, structure_set.atom_types[s]).examine(
                parts[s])
            np.testing.assert_allclose(deviation[rows], single, rtol=1e-10, atol=1e-14)
        self.assertTrue(np.all(deviation > 0))
        labeller = MultiStructureLabeller(structure_set)
        labels = [labeller.label(x) for x in packed]
        systems = labelled_systems(structure_set, packed,
                                   {k: np.stack([x[k] for x in labels]) for k in labels[0]})
        self.assertEqual([s.natoms for s in systems], [16, 32])
        single = MultiStructureLabeller(StructureSet(["l12_cu3al"]))
        np.testing.assert_array_equal(
            systems[1].force[1],
            single.label(single.structure_set.pack_batch(0, parts[1][1:])[0])["force"])
        self.assertEqual(systems[1].formula, "Al8Cu24")

    def test_loop_counts_and_resume_after_kills_label_nothing_twice(self):
        # Uninterrupted reference run.
        reference_dir = os.path.join(self.get_temp_dir(), "ref")
        structure_set = StructureSet(list(PAIR))
        reference = CountingLabeller(structure_set)
        learner, _, _ = _build(reference_dir, labeller=reference)
        log = learner.run()
        self.assertEqual([r["iteration"] for r in log], [0, 1])
        self.assertEqual(log[0]["labelled"], 6)
        for r in log:
            per = r["evaluation"]["structures"]
            self.assertEqual(sorted(per), sorted(PAIR))
            for key in ("explored", "accurate", "candidate", "failed", "selected", "labelled"):
                self.assertEqual(sum(p[key] for p in per.values()), r[key], key)
            for p in per.values():
                self.assertEqual(p["accurate"] + p["candidate"] + p["failed"], p["explored"])
                self.assertLessEqual(p["labelled"], 3 if r["iteration"] == 0 else 2)
            self.assertEqual(per, structure_counts(learner, structure_set, r["iteration"]))
        it = learner.iteration_dir(1)
        with np.load(os.path.join(it, "explored.npz")) as f:
            explored = f["configurations"]
        with np.load(os.path.join(it, "examined.npz")) as f:
            classes = f["classes"]
        with open(os.path.join(it, "labelled.json"), encoding="utf-8") as f:
            labelled = json.load(f)["labelled"]
        self.assertEqual(explored.shape, (2 * 3, 106))  # 3 frames per structure
        candidates = {configuration_key(c) for c in explored[classes == CANDIDATE]}
        self.assertTrue(set(labelled) <= candidates)
        self.assertEqual(len(reference.keys), len(set(reference.keys)))
        self.assertEqual(sorted(reference.keys), learner.store.keys())
        self.assertEqual(reference.calls, log[-1]["total_labels"])
        rows, totals = structure_table(log, structure_set)
        self.assertEqual(len(rows), 2 * len(log))
        self.assertEqual(sum(t["total_labels"] for t in totals.values()),
                         log[-1]["total_labels"])
        path = plot_structure_table(log, structure_set,
                                    os.path.join(self.get_temp_dir(), "table.png"))
        self.assertGreater(os.path.getsize(path), 1000)

        # The same run killed at each stage of iteration 1 in turn, resumed each time.
        directory = os.path.join(self.get_temp_dir(), "run")
        labellers = []

        def attempt(stage, kill_after=None):
            labeller = CountingLabeller(structure_set, kill_after=kill_after)
            labellers.append(labeller)
            learner, _, _ = _build(directory, labeller=labeller)
            if stage == "explore":
                learner.explorer.explore = _kill
            elif stage == "examine":
                learner.examiner.examine = _kill
            elif stage == "train":
                learner.trainer.train = _kill
            if stage is None:
                return learner, learner.run()
            with self.assertRaises(Kill):
                learner.run()
            return learner, None

        attempt("explore")
        self.assertTrue(os.path.exists(os.path.join(directory, "iteration_0000", "report.json")))
        attempt("examine")
        self.assertTrue(os.path.exists(os.path.join(directory, "iteration_0001", "explored.npz")))
        attempt("label", kill_after=1)  # one label of iteration 1, then killed
        self.assertFalse(os.path.exists(os.path.join(directory, "iteration_0001",
                                                     "labelled.json")))
        attempt("train")
        self.assertTrue(os.path.exists(os.path.join(directory, "iteration_0001",
                                                    "labelled.json")))
        self.assertFalse(os.path.exists(os.path.join(directory, "iteration_0001",
                                                     "trained.json")))
        learner2, log2 = attempt(None)
        all_keys = [k for labeller in labellers for k in labeller.keys]
        self.assertEqual(len(all_keys), len(set(all_keys)))
        self.assertEqual(sorted(all_keys), learner2.store.keys())
        self.assertEqual(len(all_keys), log2[-1]["total_labels"])
        # Resumed runs end as the uninterrupted one: the same labels, the same counts.
        self.assertEqual(sorted(all_keys), sorted(reference.keys))
        self.assertEqual([r["evaluation"]["structures"] for r in log2],
                         [r["evaluation"]["structures"] for r in log])
