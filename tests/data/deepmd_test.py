import os

import numpy as np

from mlcmk.data import (
    System,
    describe,
    find_systems,
    format_description,
    read_system,
    read_systems,
    write_system,
)
from mlcmk.testing import TestCase


def _frames(rng, nframes, natoms, periodic=True, virial=True):
    box = None
    if periodic:
        # Triclinic cells, rows as vectors, different per frame.
        box = np.tile(np.diag([5.0, 6.0, 7.0]), (nframes, 1, 1))
        box += 0.3 * rng.standard_normal((nframes, 3, 3))
    return {
        "coord": 5.0 * rng.random((nframes, natoms, 3)),
        "box": box,
        "energy": rng.standard_normal(nframes) - 3.0 * natoms,
        "force": rng.standard_normal((nframes, natoms, 3)),
        "virial": rng.standard_normal((nframes, 3, 3)) if virial else None,
    }


class DeepMDRoundTripTest(TestCase):
    def test_round_trip_is_exact(self):
        rng = np.random.default_rng(0)
        frames = _frames(rng, 7, 5)
        path = os.path.join(self.get_temp_dir(), "sys")
        write_system(path, atom_types=[1, 0, 0, 1, 0], type_map=["Cu", "Al"], set_size=3, **frames)
        # DeePMD layout: flattened per-frame arrays, sets of at most set_size frames.
        self.assertEqual(
            sorted(os.listdir(path)), ["set.000", "set.001", "set.002", "type.raw", "type_map.raw"]
        )
        self.assertEqual(np.load(os.path.join(path, "set.000", "coord.npy")).shape, (3, 15))
        self.assertEqual(np.load(os.path.join(path, "set.002", "box.npy")).shape, (1, 9))
        self.assertEqual(np.load(os.path.join(path, "set.001", "virial.npy")).shape, (3, 9))
        with open(os.path.join(path, "type.raw")) as f:
            self.assertEqual(f.read().split(), ["1", "0", "0", "1", "0"])
        system = read_system(path)
        self.assertEqual((system.nframes, system.natoms), (7, 5))
        self.assertEqual(system.type_map, ["Cu", "Al"])
        np.testing.assert_array_equal(system.atom_types, [1, 0, 0, 1, 0])
        for key, value in frames.items():
            got = getattr(system, key)
            self.assertEqual(got.dtype, np.float64)
            np.testing.assert_array_equal(got, value)  # bit-exact

    def test_free_boundaries_and_no_virial(self):
        rng = np.random.default_rng(1)
        frames = _frames(rng, 3, 4, periodic=False, virial=False)
        path = os.path.join(self.get_temp_dir(), "molecule")
        write_system(path, atom_types=[0, 0, 0, 0], type_map=["Al"], **frames)
        self.assertTrue(os.path.exists(os.path.join(path, "nopbc")))
        self.assertFalse(os.path.exists(os.path.join(path, "set.000", "box.npy")))
        system = read_system(path)
        self.assertIsNone(system.box)
        self.assertIsNone(system.virial)
        self.assertFalse(system.periodic)
        np.testing.assert_array_equal(system.coord, frames["coord"])

    def test_overwrite_replaces_system_and_refuses_other_directories(self):
        rng = np.random.default_rng(2)
        path = os.path.join(self.get_temp_dir(), "sys")
        write_system(path, atom_types=[0, 0], type_map=["Al"], set_size=1, **_frames(rng, 3, 2))
        new = _frames(rng, 1, 3)
        write_system(path, atom_types=[0, 0, 0], type_map=["Al"], **new)
        system = read_system(path)
        self.assertEqual((system.nframes, system.natoms), (1, 3))
        self.assertEqual(sorted(os.listdir(path)), ["set.000", "type.raw", "type_map.raw"])
        np.testing.assert_array_equal(system.energy, new["energy"])
        # No leftovers of the temporary or the replaced directory.
        self.assertEqual(os.listdir(os.path.dirname(path)), ["sys"])
        other = os.path.join(self.get_temp_dir(), "notes")
        os.makedirs(other)
        open(os.path.join(other, "keep.txt"), "w").close()
        with self.assertRaisesRegex(ValueError, "not a DeePMD system"):
            write_system(other, atom_types=[0, 0, 0], type_map=["Al"], **new)
        self.assertEqual(os.listdir(other), ["keep.txt"])

    def test_write_validates_arguments(self):
        rng = np.random.default_rng(3)
        frames = _frames(rng, 2, 3)
        path = os.path.join(self.get_temp_dir(), "sys")
        bad = dict(frames, force=frames["force"][:, :2])
        with self.assertRaisesRegex(ValueError, r"force has shape \(2, 2, 3\)"):
            write_system(path, atom_types=[0, 0, 0], type_map=["Al"], **bad)
        bad = dict(frames, energy=np.array([1.0, np.nan]))
        with self.assertRaisesRegex(ValueError, "energy holds a non-finite value"):
            write_system(path, atom_types=[0, 0, 0], type_map=["Al"], **bad)
        with self.assertRaisesRegex(ValueError, "type index 2 outside the type map"):
            write_system(path, atom_types=[0, 2, 0], type_map=["Al", "Cu"], **frames)
        with self.assertRaisesRegex(ValueError, "set_size"):
            write_system(path, atom_types=[0, 0, 0], type_map=["Al"], set_size=0, **frames)
        self.assertFalse(os.path.exists(path))

    def test_split_and_subset(self):
        rng = np.random.default_rng(4)
        frames = _frames(rng, 10, 2)
        system = System(atom_types=[0, 0], type_map=["Al"], **frames)
        first, second = system.split(0.7, seed=3)
        self.assertEqual((first.nframes, second.nframes), (7, 3))
        merged = np.sort(np.concatenate([first.energy, second.energy]))
        np.testing.assert_array_equal(merged, np.sort(system.energy))
        again, _ = system.split(0.7, seed=3)
        np.testing.assert_array_equal(again.coord, first.coord)
        other, _ = system.split(0.7, seed=4)
        self.assertFalse(np.array_equal(other.energy, first.energy))
        np.testing.assert_array_equal(system.subset([2, 5]).virial, frames["virial"][[2, 5]])
        with self.assertRaisesRegex(ValueError, "fraction"):
            system.split(1.5)


class DeepMDSeveralSystemsTest(TestCase):
    def _write_three(self, root):
        rng = np.random.default_rng(5)
        write_system(
            os.path.join(root, "al", "bulk"),
            atom_types=[0] * 4,
            type_map=["Al"],
            **_frames(rng, 3, 4),
        )
        write_system(
            os.path.join(root, "cu"), atom_types=[0] * 2, type_map=["Cu"], **_frames(rng, 2, 2)
        )
        write_system(
            os.path.join(root, "mix"),
            atom_types=[0, 1, 1],
            type_map=["Cu", "Al"],
            **_frames(rng, 4, 3, periodic=False, virial=False),
        )

    def test_union_type_map_and_reindexing(self):
        root = self.get_temp_dir()
        self._write_three(root)
        self.assertEqual(
            [os.path.relpath(p, root) for p in find_systems(root)],
            [os.path.join("al", "bulk"), "cu", "mix"],
        )
        systems = read_systems(root)
        self.assertEqual([s.natoms for s in systems], [4, 2, 3])
        for s in systems:
            self.assertEqual(s.type_map, ["Al", "Cu"])  # first appearance, sorted paths
        np.testing.assert_array_equal(systems[0].atom_types, [0, 0, 0, 0])
        np.testing.assert_array_equal(systems[1].atom_types, [1, 1])
        # "mix" was written as Cu=0, Al=1: re-indexed so that the elements stay the same.
        np.testing.assert_array_equal(systems[2].atom_types, [1, 0, 0])
        self.assertEqual(systems[2].formula, "Al2Cu1")
        # A given type map (with an extra element) is used as is.
        given = read_systems(
            [os.path.join(root, "mix"), os.path.join(root, "cu")], type_map=["H", "Cu", "Al"]
        )
        self.assertEqual([s.name for s in given], ["mix", "cu"])
        np.testing.assert_array_equal(given[0].atom_types, [1, 2, 2])
        np.testing.assert_array_equal(given[1].atom_types, [1, 1])

    def test_unknown_element_names_type_map_file(self):
        root = self.get_temp_dir()
        self._write_three(root)
        with self.assertRaisesRegex(ValueError, r"cu/type_map.raw: element 'Cu' is not in"):
            read_systems(root, type_map=["Al"])

    def test_describe(self):
        root = self.get_temp_dir()
        self._write_three(root)
        systems = read_systems(root)
        summary = describe(systems)
        self.assertEqual(summary["n_systems"], 3)
        self.assertEqual(summary["n_frames"], 9)
        self.assertEqual((summary["n_atoms_min"], summary["n_atoms_max"]), (2, 4))
        self.assertEqual(summary["atoms_per_type"], {"Al": 3 * 4 + 4 * 2, "Cu": 2 * 2 + 4 * 1})
        self.assertEqual(summary["periodic_systems"], 2)
        self.assertEqual(summary["virial_frames"], 5)
        e = np.concatenate([s.energy / s.natoms for s in systems])
        f = np.concatenate([s.force.reshape(-1, 3) for s in systems])
        self.assertAlmostEqual(summary["energy_per_atom_min"], e.min(), places=12)
        self.assertAlmostEqual(summary["energy_per_atom_std"], e.std(), places=12)
        self.assertAlmostEqual(summary["force_rms"], np.sqrt(np.mean(f**2)), places=12)
        self.assertAlmostEqual(summary["force_max_abs"], np.linalg.norm(f, axis=1).max(), places=12)
        self.assertIn("9 frame(s)", format_description(summary))
        with self.assertRaisesRegex(ValueError, "share one type map"):
            describe([systems[0], read_system(os.path.join(root, "mix"))])


class DeepMDMalformedTest(TestCase):
    """Every malformed input gives a ValueError that names the file and the problem."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(6)
        self.path = os.path.join(self.get_temp_dir(), "sys")
        write_system(
            self.path, atom_types=[0, 1, 0], type_map=["Al", "Cu"], set_size=2, **_frames(rng, 4, 3)
        )

    def _file(self, *parts):
        return os.path.join(self.path, *parts)

    def _assert_error(self, file, problem, **kwargs):
        with self.assertRaises(ValueError) as ctx:
            read_system(self.path, **kwargs)
        message = str(ctx.exception)
        self.assertIn(file, message)
        self.assertRegex(message, problem)

    def test_missing_files(self):
        for name in ["coord.npy", "energy.npy", "force.npy", "box.npy"]:
            with self.subTest(name=name):
                self.setUp()
                os.remove(self._file("set.001", name))
                self._assert_error(self._file("set.001", name), "required file is missing")
        self.setUp()
        os.remove(self._file("type.raw"))
        self._assert_error(self._file("type.raw"), "required file is missing")
        self.setUp()
        os.remove(self._file("type_map.raw"))
        self._assert_error(self._file("type_map.raw"), "required file is missing")
        self.setUp()
        os.remove(self._file("set.000", "virial.npy"))
        self._assert_error(self._file("set.000", "virial.npy"), "other sets .* have virial.npy")

    def test_no_sets(self):
        for name in ["set.000", "set.001"]:
            for f in os.listdir(self._file(name)):
                os.remove(self._file(name, f))
            os.rmdir(self._file(name))
        self._assert_error(self._file("set.000"), "no set.* directory")

    def test_malformed_npy(self):
        with open(self._file("set.000", "force.npy"), "wb") as f:
            f.write(b"not an array")
        self._assert_error(self._file("set.000", "force.npy"), "not a readable .npy")
        self.setUp()
        np.save(self._file("set.000", "energy.npy"), np.array(["a", "b"]))
        self._assert_error(self._file("set.000", "energy.npy"), "expected a numeric array")

    def test_wrong_shapes(self):
        np.save(self._file("set.000", "coord.npy"), np.zeros((2, 8)))
        self._assert_error(
            self._file("set.000", "coord.npy"), r"shape \(2, 8\); expected \(nframes, 9\)"
        )
        self.setUp()
        np.save(self._file("set.001", "box.npy"), np.zeros((2, 3, 3)))
        self._assert_error(self._file("set.001", "box.npy"), r"expected \(nframes, 9\)")
        self.setUp()
        np.save(self._file("set.001", "energy.npy"), np.zeros((2, 2)))
        self._assert_error(self._file("set.001", "energy.npy"), r"expected \(nframes,\)")

    def test_mismatched_frames(self):
        np.save(self._file("set.001", "force.npy"), np.zeros((3, 9)))
        self._assert_error(self._file("set.001", "force.npy"), "holds 3 frames but coord.npy .* 2")
        self.setUp()
        np.save(self._file("set.000", "energy.npy"), np.zeros(1))
        self._assert_error(self._file("set.000", "energy.npy"), "holds 1 frames")
        self.setUp()
        np.save(self._file("set.000", "virial.npy"), np.zeros((5, 9)))
        self._assert_error(self._file("set.000", "virial.npy"), "holds 5 frames")

    def test_non_finite(self):
        for name, bad in [("coord.npy", np.nan), ("force.npy", np.inf), ("virial.npy", -np.inf)]:
            with self.subTest(name=name):
                self.setUp()
                array = np.load(self._file("set.001", name))
                array[1, 4] = bad
                np.save(self._file("set.001", name), array)
                self._assert_error(self._file("set.001", name), r"non-finite value .* \(1, 4\)")

    def test_singular_box(self):
        box = np.load(self._file("set.000", "box.npy"))
        box[1] = [1, 0, 0, 2, 0, 0, 0, 0, 1]
        np.save(self._file("set.000", "box.npy"), box)
        self._assert_error(self._file("set.000", "box.npy"), "frame 1 has a singular box")

    def test_bad_types(self):
        with open(self._file("type.raw"), "w") as f:
            f.write("0\n1\nx\n")
        self._assert_error(self._file("type.raw"), "'x' is not an integer")
        with open(self._file("type.raw"), "w") as f:
            f.write("0\n2\n0\n")
        self._assert_error(self._file("type.raw"), r"type index 2 is outside the type map")
        with open(self._file("type.raw"), "w") as f:
            f.write("0\n1\n0\n0\n")  # 4 atoms, coord holds 3
        self._assert_error(self._file("set.000", "coord.npy"), r"expected \(nframes, 12\)")
        with open(self._file("type.raw"), "w") as f:
            f.write("")
        self._assert_error(self._file("type.raw"), "is empty")

    def test_bad_type_map(self):
        with open(self._file("type_map.raw"), "w") as f:
            f.write("Al\nAl\n")
        self._assert_error(self._file("type_map.raw"), "repeated element names")
        with open(self._file("type_map.raw"), "w") as f:
            f.write("Al\nCu\n")
        self._assert_error(
            self._file("type_map.raw"), "element 'Cu' is not in the given", type_map=["Al", "Ni"]
        )

    def test_missing_type_map_uses_given_one(self):
        os.remove(self._file("type_map.raw"))
        system = read_system(self.path, type_map=["Al", "Cu"])
        self.assertEqual(system.formula, "Al2Cu1")

    def test_not_a_directory(self):
        with self.assertRaisesRegex(ValueError, "nowhere: not a directory"):
            read_system(os.path.join(self.path, "nowhere"))
        with self.assertRaisesRegex(ValueError, "no DeePMD system"):
            read_systems(self._file("set.000"))
