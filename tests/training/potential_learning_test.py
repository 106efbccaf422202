"""DP-GEN-style potential learning: examiner, EMT labels, the loop end to end, resume, bad input."""

import json
import os

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcmk import config
from mlcmk.models.ensemble import CANDIDATE, Ensemble
from mlcmk.testing import TestCase
from mlcmk.training.concurrent_learning import configuration_key
from mlcmk.training.potential_learning import (
    ASEMDExplorer,
    EMTLabeller,
    ForceDeviationExaminer,
    build_potential_learner,
    initial_configurations,
    pack_configuration,
    unpack_configuration,
)
from tests.training.counting_labeller import Counting, Kill

TINY = dict(rcut=4.5, rcut_smth=0.5, sel=24, neuron=(4, 8), axis_neuron=2, fitting_neuron=(8, 8))


def _atoms():
    return bulk("Al", "fcc", a=4.05, cubic=True).repeat((1, 1, 2))  # 8 atoms


class CountingLabeller(Counting, EMTLabeller):
    """EMT labels; records every configuration key it labels; optionally killed."""


def _build(directory, labeller=None, **kwargs):
    settings = dict(num_members=2, model_kwargs=TINY, trust_levels=(0.05, 0.3), max_iterations=2,
                    max_labels_per_iteration=3, num_initial=6, num_trajectories=2, md_steps=20,
                    sample_every=5, train_steps=20, converge_fraction=None, verbose=0, seed=3)
    settings.update(kwargs)
    return build_potential_learner(_atoms(), directory, labeller=labeller, **settings)


def _system_of(configurations):
    from mlcmk.data.deepmd import System

    labeller = EMTLabeller(_atoms())
    labels = [labeller.label(c) for c in configurations]
    positions, cells = unpack_configuration(configurations, 8)
    return System(coord=positions, box=cells, energy=np.array([x["energy"] for x in labels]),
                  force=np.stack([x["force"] for x in labels]), virial=None,
                  atom_types=np.zeros(8, np.int64), type_map=["Al"])


class PotentialLearningTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_pack_roundtrip_and_shape_errors(self):
        atoms = _atoms()
        x = pack_configuration(atoms.positions, atoms.cell.array)
        self.assertEqual(x.shape, (8 * 3 + 9,))
        positions, cells = unpack_configuration(x, 8)
        np.testing.assert_array_equal(positions[0], atoms.positions)
        np.testing.assert_array_equal(cells[0], atoms.cell.array)
        with self.assertRaisesRegex(ValueError, r"shape \(n, 33\).*received shape \(1, 32\)"):
            unpack_configuration(x[:-1], 8)
        labeller = EMTLabeller(atoms)
        with self.assertRaisesRegex(ValueError, "33"):
            labeller.label(np.zeros(40))
        self.assertEqual(labeller.calls, 0)

    def test_emt_labeller_matches_ase(self):
        atoms = _atoms()
        x = initial_configurations(atoms, 2, seed=1)
        labeller = EMTLabeller(atoms)
        label = labeller.label(x[1])
        ref = atoms.copy()
        positions, cells = unpack_configuration(x[1], 8)
        ref.set_cell(cells[0])
        ref.set_positions(positions[0])
        ref.calc = EMT()
        np.testing.assert_allclose(label["energy"], ref.get_potential_energy(), rtol=0,
                                   atol=1e-12)
        np.testing.assert_allclose(label["force"], ref.get_forces(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(label["virial"],
                                   -ref.get_volume() * ref.get_stress(voigt=False), rtol=0,
                                   atol=1e-12)
        # The displaced crystal has forces (the label is not trivially zero).
        self.assertGreater(np.abs(label["force"]).max(), 1e-3)
        self.assertEqual(labeller.calls, 1)

    def test_examiner_equals_hand_computation(self):
        from mlcmk.models.deep_potential import DeepPotential

        def factory(seed):
            model = DeepPotential(["Al"], **TINY)
            model.build()
            return model

        ensemble = Ensemble.from_factory(factory, num_members=3)
        x = initial_configurations(_atoms(), 4, seed=2)
        types = np.zeros(8, np.int64)
        deviation = ForceDeviationExaminer(ensemble, types, batch_size=3).examine(x)
        positions, cells = unpack_configuration(x, 8)
        forces = np.stack([np.asarray(m.compute(positions, np.zeros((4, 8), np.int32),
                                                cells)["force"]) for m in ensemble.members])
        mean = forces.mean(axis=0)  # (n, atoms, 3)
        per_atom = np.sqrt(np.mean(np.sum((forces - mean) ** 2, axis=-1), axis=0))  # (n, atoms)
        expected = per_atom.max(axis=1)
        np.testing.assert_allclose(deviation, expected, rtol=1e-10, atol=1e-14)
        self.assertTrue(np.all(expected > 0))
        with self.assertRaisesRegex(ValueError, "configurations"):
            ForceDeviationExaminer(ensemble, types).examine(x[:, :-3])
        # Identical members: zero deviation.
        twin = Ensemble([ensemble.members[0], ensemble.members[0]])
        np.testing.assert_array_equal(ForceDeviationExaminer(twin, types).examine(x), np.zeros(4))

    def test_explorer_seeded_and_mean_driver(self):
        from mlcmk.models.deep_potential import DeepPotential

        model = DeepPotential(["Al"], **TINY)
        model.build()
        model.set_statistics([_system_of(initial_configurations(_atoms(), 3, seed=5))])
        kwargs = dict(num_trajectories=2, num_steps=10, sample_every=5)
        first = ASEMDExplorer(Ensemble([model]), _atoms(), driver="first", **kwargs)
        # The mean of two identical members is the member itself: the same trajectories.
        mean = ASEMDExplorer(Ensemble([model, model]), _atoms(), driver="mean", **kwargs)
        a, b = first.explore(1, seed=0), mean.explore(1, seed=0)
        self.assertEqual(a.shape, (4, 33))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(a, first.explore(1, seed=0))  # seeded
        self.assertFalse(np.array_equal(a, first.explore(2, seed=0)))
        with self.assertRaisesRegex(ValueError, "driver"):
            ASEMDExplorer(Ensemble([model]), _atoms(), driver="median")

    def test_explorer_temperature_ramp(self):
        from mlcmk.models.deep_potential import DeepPotential

        model = DeepPotential(["Al"], **TINY)
        model.build()
        model.set_statistics([_system_of(initial_configurations(_atoms(), 3, seed=5))])
        kwargs = dict(num_trajectories=3, num_steps=10, sample_every=5,
                      temperatures=(300.0, 600.0, 900.0))
        plain = ASEMDExplorer(Ensemble([model]), _atoms(), **kwargs)
        ramp = ASEMDExplorer(Ensemble([model]), _atoms(), ramp=True, **kwargs)
        # Iteration k uses the first k rungs of the ladder, cycled over the trajectories.
        self.assertEqual(ramp.trajectory_temperatures(1), [300.0, 300.0, 300.0])
        self.assertEqual(ramp.trajectory_temperatures(2), [300.0, 600.0, 300.0])
        self.assertEqual(sorted(set(ramp.trajectory_temperatures(3))), [300.0, 600.0, 900.0])
        self.assertEqual(plain.trajectory_temperatures(1), [600.0, 900.0, 300.0])
        for k in (3, 4, 7):
            self.assertEqual(ramp.trajectory_temperatures(k), plain.trajectory_temperatures(k))
        # The frames follow the temperatures: equal where they agree, not where they differ.
        np.testing.assert_array_equal(ramp.explore(3, seed=1), plain.explore(3, seed=1))
        self.assertFalse(np.array_equal(ramp.explore(1, seed=1), plain.explore(1, seed=1)))
        with self.assertRaisesRegex(TypeError, "ramp"):
            ASEMDExplorer(Ensemble([model]), _atoms(), ramp="yes")

    def test_bad_trust_levels(self):
        with self.assertRaisesRegex(ValueError, "lo <= hi.*lo=0.2, hi=0.1"):
            _build(self.get_temp_dir(), trust_levels=(0.2, 0.1))
        with self.assertRaisesRegex(TypeError, "`hi` must be a number; received hi='0.3'"):
            _build(self.get_temp_dir(), trust_levels=(0.1, "0.3"))
        with self.assertRaisesRegex(ValueError, "`trust_levels` must be TrustLevels or a "
                                                "\\(lo, hi\\) pair; received trust_levels=0.1"):
            _build(self.get_temp_dir(), trust_levels=0.1)
        with self.assertRaisesRegex(ValueError, "structure"):
            build_potential_learner("hcp_xx", self.get_temp_dir())

    def test_loop_labels_only_candidates(self):
        directory = os.path.join(self.get_temp_dir(), "run")
        labeller = CountingLabeller(_atoms())
        learner, ensemble, _ = _build(directory, labeller=labeller)
        log = learner.run()
        self.assertEqual([r["iteration"] for r in log], [0, 1, 2])
        self.assertEqual(log[0]["labelled"], 6)
        non_candidates = 0
        for k in (1, 2):
            it = learner.iteration_dir(k)
            with np.load(os.path.join(it, "explored.npz")) as f:
                explored = f["configurations"]
            with np.load(os.path.join(it, "examined.npz")) as f:
                classes = f["classes"]
            with open(os.path.join(it, "labelled.json"), encoding="utf-8") as f:
                labelled = json.load(f)["labelled"]
            candidates = {configuration_key(c) for c in explored[classes == CANDIDATE]}
            self.assertTrue(set(labelled) <= candidates)
            self.assertLessEqual(len(labelled), 3)
            self.assertEqual(log[k]["labelled"], len(labelled))
            non_candidates += int(np.sum(classes != CANDIDATE))
            self.assertEqual(explored.shape, (8, 33))
        # The trust levels sorted some configurations out (so the subset check means something).
        self.assertGreater(non_candidates, 0)
        # Every EMT call is a distinct configuration, and is one label on disk.
        self.assertEqual(len(labeller.keys), len(set(labeller.keys)))
        self.assertEqual(labeller.calls, log[-1]["total_labels"])
        self.assertEqual(sorted(labeller.keys), learner.store.keys())

    def test_resume_after_kill_labels_nothing_twice(self):
        directory = os.path.join(self.get_temp_dir(), "run")
        # Killed inside iteration 1's labelling, after its first label (6 initial + 1).
        killed = CountingLabeller(_atoms(), kill_after=7)
        learner, _, _ = _build(directory, labeller=killed)
        with self.assertRaises(Kill):
            learner.run()
        self.assertTrue(os.path.exists(os.path.join(learner.iteration_dir(1), "examined.npz")))
        self.assertFalse(os.path.exists(os.path.join(learner.iteration_dir(1), "labelled.json")))
        fresh = CountingLabeller(_atoms())
        learner2, _, _ = _build(directory, labeller=fresh)
        log = learner2.run()
        all_keys = killed.keys + fresh.keys
        self.assertEqual(len(all_keys), len(set(all_keys)))
        self.assertEqual(sorted(all_keys), learner2.store.keys())
        self.assertEqual(len(all_keys), log[-1]["total_labels"])
        # The resumed run ends as an uninterrupted one: same labels.
        reference = CountingLabeller(_atoms())
        learner3, _, _ = _build(os.path.join(self.get_temp_dir(), "ref"), labeller=reference)
        log3 = learner3.run()
        self.assertEqual(sorted(reference.keys), sorted(all_keys))
        self.assertEqual([r["labelled"] for r in log3], [r["labelled"] for r in log])
