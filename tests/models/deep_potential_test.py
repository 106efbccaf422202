"""DeepPotential: invariances, exact derivatives, extensivity, statistics, fit, saving, export."""

import json
import os
import subprocess
import sys
import textwrap
import types as pytypes

import keras
import numpy as np
import tensorflow as tf
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcmk import config
from mlcmk.models.deep_potential import DeepPotential, make_dataset
from mlcmk.testing import TestCase

SMALL = dict(rcut=4.5, rcut_smth=1.0, sel=[60, 60], neuron=[4, 8], axis_neuron=3,
             fitting_neuron=[16, 16])


def emt_system(symbols=("Al",), nframes=4, seed=0, repeat=(2, 2, 2), rattle=0.15,
               triclinic=False):
    """Rattled FCC frames labelled with ASE's EMT, as a System-like namespace (type_map Al, Cu)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(repeat)
    if len(symbols) > 1:
        names = np.array(["Al", "Cu"])[rng.permutation(np.arange(len(atoms)) % 2)]
        atoms.set_chemical_symbols(list(names))
    coord, box, energy, force, virial = [], [], [], [], []
    for _ in range(nframes):
        a = atoms.copy()
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3)) * (2 if triclinic else 1)
        a.set_cell(a.cell.array @ strain, scale_atoms=True)
        a.positions += rng.normal(0, rattle, a.positions.shape)
        a.calc = EMT()
        coord.append(a.positions.copy())
        box.append(a.cell.array.copy())
        energy.append(a.get_potential_energy())
        force.append(a.get_forces())
        virial.append(-a.get_stress(voigt=False) * a.get_volume())
    type_map = ["Al", "Cu"]
    return pytypes.SimpleNamespace(
        coord=np.array(coord), box=np.array(box), energy=np.array(energy),
        force=np.array(force), virial=np.array(virial), type_map=type_map,
        atom_types=np.array([type_map.index(s) for s in atoms.get_chemical_symbols()]),
        natoms=len(atoms), nframes=nframes)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


class DeepPotentialTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")
        self.system = emt_system(("Al", "Cu"), nframes=3, seed=1, triclinic=True)
        self.model = DeepPotential(["Al", "Cu"], **SMALL)
        self.model.set_statistics([self.system])

    def energy(self, coord, box, types):
        out = self.model.compute(coord[None], types[None], None if box is None else box[None])
        return out["energy"].numpy()[0]

    def frame(self, k=0):
        s = self.system
        return s.coord[k], s.box[k], s.atom_types

    def test_outputs_and_shapes(self):
        coord, box, types = self.frame()
        out = self.model({"coord": coord[None], "box": box[None], "atom_types": types[None]})
        self.assertEqual(tuple(out["force"].shape), (1, 32, 3))
        self.assertEqual(tuple(out["virial"].shape), (1, 3, 3))
        self.assertEqual(out["energy"].dtype, tf.float64)
        np.testing.assert_allclose(out["energy"], tf.reduce_sum(out["atom_energy"], -1),
                                   rtol=1e-12)

    def test_invariance(self):
        rng = np.random.default_rng(7)
        coord, box, types = self.frame()
        e0 = self.energy(coord, box, types)
        for trial in range(3):
            rot = random_rotation(rng)
            shift = rng.normal(0, 3, 3)
            with self.subTest(trial=trial, kind="rotation+translation"):
                e = self.energy(coord @ rot.T + shift, box @ rot.T, types)
                self.assertAlmostEqual(e, e0, delta=1e-10 * max(1, abs(e0)))
            with self.subTest(trial=trial, kind="permutation of like atoms"):
                perm = rng.permutation(len(types))
                e = self.energy(coord[perm], box, types[perm])
                self.assertAlmostEqual(e, e0, delta=1e-10 * max(1, abs(e0)))
            with self.subTest(trial=trial, kind="lattice translation of one atom"):
                moved = coord.copy()
                moved[trial] += box[trial % 3] * (-1) ** trial
                self.assertAlmostEqual(self.energy(moved, box, types), e0,
                                       delta=1e-10 * max(1, abs(e0)))
        # Free boundaries (a cluster) too.
        cluster = coord[:12]
        e0 = self.energy(cluster, None, types[:12])
        rot = random_rotation(rng)
        self.assertAlmostEqual(self.energy(cluster @ rot.T + 1.0, None, types[:12]), e0,
                               delta=1e-10 * max(1, abs(e0)))
        # A swap of unlike atoms must change the energy (the test can fail).
        i, j = np.flatnonzero(types == 0)[0], np.flatnonzero(types == 1)[0]
        swapped = types.copy()
        swapped[[i, j]] = swapped[[j, i]]
        self.assertGreater(abs(self.energy(coord, box, swapped) - self.energy(coord, box, types)),
                           1e-6)

    def test_forces_are_finite_differences(self):
        coord, box, types = self.frame(1)
        force = self.model.compute(coord[None], types[None], box[None])["force"].numpy()[0]
        h = 1e-5
        for atom, axis in [(0, 0), (5, 1), (17, 2), (31, 0)]:
            plus, minus = coord.copy(), coord.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd = -(self.energy(plus, box, types) - self.energy(minus, box, types)) / (2 * h)
            self.assertAlmostEqual(force[atom, axis], fd, delta=1e-7)
        self.assertGreater(np.abs(force).max(), 1e-3)

    def test_virial_is_strain_derivative(self):
        coord, box, types = self.frame(2)
        virial = self.model.compute(coord[None], types[None], box[None])["virial"].numpy()[0]
        h = 1e-6
        fd = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] = h
                ep = self.energy(coord @ (np.eye(3) + eps).T, box @ (np.eye(3) + eps).T, types)
                em = self.energy(coord @ (np.eye(3) - eps).T, box @ (np.eye(3) - eps).T, types)
                fd[a, b] = -(ep - em) / (2 * h)
        np.testing.assert_allclose(virial, fd, atol=1e-6)
        self.assertGreater(np.abs(virial).max(), 1e-3)

    def test_supercell_extensivity(self):
        coord, box, types = self.frame()
        e1 = self.energy(coord, box, types)
        for k, axis in [(2, 0), (3, 2)]:
            with self.subTest(k=k, axis=axis):
                big = np.concatenate([coord + m * box[axis] for m in range(k)])
                big_box = box.copy()
                big_box[axis] *= k
                ek = self.energy(big, big_box, np.tile(types, k))
                self.assertAlmostEqual(ek, k * e1, delta=1e-10 * abs(k * e1))

    def test_energy_bias_is_least_squares(self):
        a = DeepPotential(["Al", "Cu"], **SMALL)
        pure = emt_system(("Al",), nframes=3, seed=2)
        info = a.set_statistics([self.system, pure])
        counts = np.array([[16, 16]] * 3 + [[32, 0]] * 3, float)
        energies = np.concatenate([self.system.energy, pure.energy])
        predicted = np.concatenate([
            a.compute(s.coord, np.tile(s.atom_types, (3, 1)), s.box)["energy"].numpy()
            for s in (self.system, pure)])
        # Least-squares optimum: the residual is orthogonal to every type-count column...
        residual = energies - predicted
        np.testing.assert_allclose(counts.T @ residual, 0, atol=1e-8 * np.abs(energies).sum())
        # ... and moving the bias in any direction makes the squared residual larger.
        for delta in ([0.01, 0], [0, 0.01], [-0.01, 0.01]):
            worse = residual - counts @ np.array(delta)
            self.assertGreater(np.sum(worse**2), np.sum(residual**2))
        self.assertEqual(sorted(info["energy_bias"]), ["Al", "Cu"])
        np.testing.assert_allclose(a.energy_bias.numpy(),
                                   [info["energy_bias"]["Al"], info["energy_bias"]["Cu"]])
        std = np.array(info["std"])
        self.assertTrue(np.all(std > 0))

    def test_prefactors_follow_learning_rate(self):
        model = DeepPotential(["Al"], **{**SMALL, "sel": [60]})
        model.compile(total_steps=1000, learning_rate=1e-3, stop_learning_rate=1e-5)
        p_e, p_f, _ = model.prefactors()
        np.testing.assert_allclose([float(p_e), float(p_f)], [0.02, 1000.0], rtol=1e-6)
        model.optimizer.iterations.assign(1000)
        p_e, p_f, _ = model.prefactors()
        # lr = 1e-5 at the end: p = limit + (start - limit) * 1e-2.
        # (Keras keeps the learning rate in float32: relative 1e-6.)
        np.testing.assert_allclose(float(p_e), 1 + (0.02 - 1) * 1e-2, rtol=1e-6)
        np.testing.assert_allclose(float(p_f), 1 + 999 * 1e-2, rtol=1e-6)

    def test_fit_reduces_force_error_on_two_systems(self):
        pure = emt_system(("Al",), nframes=6, seed=3, repeat=(1, 1, 2))
        model = DeepPotential(["Al", "Cu"], **SMALL)
        model.set_statistics([self.system, pure])
        model.compile(total_steps=60, learning_rate=3e-3, stop_learning_rate=1e-4)
        eval_ds = make_dataset([self.system, pure], 3, shuffle=False, repeat=False)
        before = model.evaluate(eval_ds, verbose=0, return_dict=True)
        history = model.fit(make_dataset([self.system, pure], 2, seed=1), epochs=3,
                            steps_per_epoch=20, shuffle=False, verbose=0)
        after = model.evaluate(eval_ds, verbose=0, return_dict=True)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertLess(after["force_rmse"], 0.8 * before["force_rmse"])
        self.assertIn("energy_rmse_per_atom", after)

    def test_host_neighbor_lists_and_xla_fit_match_the_in_graph_path(self):
        pure = emt_system(("Al",), nframes=6, seed=3, repeat=(1, 1, 2))
        results = []
        for jit in (False, True):
            keras.utils.set_random_seed(5)
            model = DeepPotential(["Al", "Cu"], **SMALL)
            model.set_statistics([self.system, pure])
            model.compile(total_steps=8, jit_compile=jit)
            ds = make_dataset([self.system, pure], 2, seed=1,
                              neighbors=model if jit else None)
            history = model.fit(ds, epochs=2, steps_per_epoch=4, shuffle=False, verbose=0)
            results.append((history.history["loss"], [w.numpy() for w in model.weights]))
        (h1, w1), (h2, w2) = results
        np.testing.assert_allclose(h2, h1, rtol=1e-9)
        for a, b in zip(w1, w2, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)
        with self.assertRaisesRegex(ValueError, "system 0, frame 0: .*sel"):
            make_dataset([self.system], 1, neighbors=(4.5, [2, 2]))

    def test_keras_round_trip(self):
        coord, box, types = self.frame()
        inputs = {"coord": coord[None], "box": box[None], "atom_types": types[None]}
        reloaded = self.run_model_saving_test(self.model, inputs, atol=1e-12)
        self.assertEqual(reloaded.get_config(), self.model.get_config())
        np.testing.assert_array_equal(reloaded.descriptor.std.numpy(),
                                      self.model.descriptor.std.numpy())

    def test_saved_model_endpoint_with_tensorflow_alone(self):
        coord, box, types = self.frame()
        directory = self.get_temp_dir()
        self.model.export_potential(os.path.join(directory, "export"))
        np.savez(os.path.join(directory, "in.npz"), coord=coord[None], box=box[None],
                 types=types[None].astype(np.int32))
        script = textwrap.dedent("""
            import json, sys
            import numpy as np
            import tensorflow as tf
            baseline = set(sys.modules)
            d = sys.argv[1]
            x = np.load(d + "/in.npz")
            loaded = tf.saved_model.load(d + "/export")
            out = loaded.energy_and_forces(tf.constant(x["coord"]), tf.constant(x["box"]),
                                           tf.constant(x["types"]))
            np.savez(d + "/out.npz", **{k: v.numpy() for k, v in out.items()})
            leaked = sorted(m for m in set(sys.modules) - baseline
                            if m.split(".")[0] in ("keras", "mlcmk", "tf_keras"))
            json.dump(leaked, open(d + "/modules.json", "w"))
        """)
        result = subprocess.run([sys.executable, "-c", script, directory], capture_output=True,
                                text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                                timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(os.path.join(directory, "modules.json")) as f:
            self.assertEqual(json.load(f), [])
        expected = self.model.compute(coord[None], types[None], box[None])
        with np.load(os.path.join(directory, "out.npz")) as out:
            for key in ("energy", "force", "virial", "atom_energy"):
                np.testing.assert_allclose(out[key], expected[key].numpy(), atol=1e-10)

    def test_two_replica_fit_matches_one_device(self):
        from mlcmk.testing import two_cpu_strategy

        ds = make_dataset([self.system], 2, shuffle=False, repeat=True)
        results = []
        for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), two_cpu_strategy()):
            keras.utils.set_random_seed(4)
            with strategy.scope():
                model = DeepPotential(["Al", "Cu"], **SMALL)
                model.set_statistics([self.system])
                model.compile(total_steps=10)
            history = model.fit(ds, epochs=1, steps_per_epoch=3, shuffle=False, verbose=0)
            results.append((history.history, [w.numpy() for w in model.weights]))
        (h1, w1), (h2, w2) = results
        np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-8)
        for a, b in zip(w1, w2, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)

    def test_bad_inputs(self):
        with self.assertRaisesRegex(ValueError, "type_map"):
            DeepPotential("Al")
        with self.assertRaisesRegex(ValueError, "descriptor"):
            DeepPotential(["Al"], descriptor="se_x")
        with self.assertRaisesRegex(ValueError, "sel"):
            DeepPotential(["Al", "Cu"], sel=[10])
        with self.assertRaisesRegex(ValueError, "rcut_smth"):
            DeepPotential(["Al"], rcut=3.0, rcut_smth=4.0)
        with self.assertRaisesRegex(ValueError, "total_steps"):
            DeepPotential(["Al"]).compile()
        with self.assertRaisesRegex(ValueError, "batch_size"):
            make_dataset([self.system], 0)
        with self.assertRaisesRegex(ValueError, r"type_map \['Al', 'Cu'\]"):
            make_dataset([self.system], 1, type_map=["Cu", "Al"])
        with self.assertRaisesRegex(ValueError, "empty"):
            make_dataset([], 1)
        bad = emt_system(("Al",), nframes=1)
        bad.atom_types = bad.atom_types + 5
        with self.assertRaisesRegex(ValueError, "atom types"):
            DeepPotential(["Al", "Cu"], **SMALL).set_statistics([bad])
