"""Neighbour lists (in-graph and NumPy) against a brute-force search over many images."""

import itertools

import numpy as np
import tensorflow as tf

from mlcmk.models.deep_potential_neighbors import neighbor_list, neighbor_list_numpy
from mlcmk.testing import TestCase


def brute_force(coord, box, types, rcut, ntypes, reach=4):
    """Per atom and type: sorted list of (distance, j, image) within rcut over |n| <= reach."""
    shifts = [np.zeros(3)] if box is None else \
        [np.array(n, float) for n in itertools.product(range(-reach, reach + 1), repeat=3)]
    result = []
    for i in range(len(coord)):
        per_type = [[] for _ in range(ntypes)]
        for j in range(len(coord)):
            for n in shifts:
                if j == i and not n.any():
                    continue
                vec = coord[j] - coord[i] + (0 if box is None else n @ box)
                d = np.linalg.norm(vec)
                if d < rcut:
                    per_type[types[j]].append((d, j, tuple(n.astype(int))))
        result.append([sorted(p) for p in per_type])
    return result


def random_frame(rng, natoms, box, ntypes=2):
    frac = rng.uniform(-0.3, 1.3, (natoms, 3))  # some atoms outside the cell on purpose
    coord = frac @ box if box is not None else rng.uniform(0, 6, (natoms, 3))
    return coord, rng.integers(0, ntypes, natoms)


class NeighborListTest(TestCase):
    def check(self, coord, box, types, rcut, sel, index, image):
        expected = brute_force(coord, box, types, rcut, len(sel))
        offsets = np.concatenate([[0], np.cumsum(sel)[:-1]])
        for i in range(len(coord)):
            for t, cap in enumerate(sel):
                slots = slice(offsets[t], offsets[t] + cap)
                idx, img = index[i, slots], image[i, slots]
                got = [(j, tuple(np.rint(n).astype(int))) for j, n in zip(idx, img, strict=True)
                       if j >= 0]
                want = [(j, n) for _, j, n in expected[i][t]]
                self.assertEqual(sorted(got), sorted(want), f"atom {i}, type {t}")
                self.assertTrue(np.all(idx[len(got):] == -1), "padding must follow neighbours")
                dist = [np.linalg.norm(coord[j] - coord[i] + (0 if box is None else
                                                              np.asarray(n) @ box))
                        for j, n in got]
                self.assertTrue(np.all(np.diff(dist) >= -1e-12), "slots must be sorted")

    def boxes(self):
        rng = np.random.default_rng(3)
        ortho = np.diag([5.0, 6.0, 7.0])
        tri = np.array([[5.0, 0.0, 0.0], [2.1, 4.6, 0.0], [-1.3, 1.7, 4.9]])
        small = np.array([[3.0, 0.0, 0.0], [1.4, 2.8, 0.0], [0.9, -1.1, 3.2]])  # rcut >> box/2
        return rng, [("ortho", ortho), ("triclinic", tri), ("small_triclinic", small),
                     ("free", None)]

    def test_in_graph_matches_brute_force(self):
        rng, boxes = self.boxes()
        rcut, sel = 4.5, [160, 160]
        for name, box in boxes:
            with self.subTest(box=name):
                coord, types = random_frame(rng, 10, box)
                b = None if box is None else tf.constant(box[None])
                index, image = neighbor_list(tf.constant(coord[None]), b,
                                             tf.constant(types[None]), rcut=rcut, sel=sel)
                self.check(coord, box, types, rcut, sel, index.numpy()[0], image.numpy()[0])

    def test_numpy_matches_brute_force(self):
        rng, boxes = self.boxes()
        rcut, sel = 4.5, [160, 160]
        for name, box in boxes:
            with self.subTest(box=name):
                coord, types = random_frame(rng, 10, box)
                index, image = neighbor_list_numpy(coord, box, types, rcut=rcut, sel=sel)
                self.check(coord, box, types, rcut, sel, index, image)

    def test_atoms_near_the_cutoff(self):
        rcut = 3.0
        coord = np.array([[0.0, 0.0, 0.0], [rcut - 1e-9, 0.0, 0.0], [0.0, rcut + 1e-9, 0.0],
                          [0.0, 0.0, -rcut + 1e-9]])
        types = np.zeros(4, int)
        box = np.diag([20.0, 20.0, 20.0])
        for b in (box, None):
            index, _ = neighbor_list(tf.constant(coord[None]), None if b is None else
                                     tf.constant(b[None]), tf.constant(types[None]),
                                     rcut=rcut, sel=[5])
            self.assertEqual(sorted(j for j in index.numpy()[0, 0] if j >= 0), [1, 3])
            index_np, _ = neighbor_list_numpy(coord, b, types, rcut=rcut, sel=[5])
            self.assertEqual(sorted(j for j in index_np[0] if j >= 0), [1, 3])

    def test_batch_of_different_boxes(self):
        rng = np.random.default_rng(5)
        boxes = [np.diag([4.0, 4.5, 5.0]), np.array([[9.0, 0, 0], [1.0, 9.0, 0], [0, 2.0, 9.0]])]
        frames = [random_frame(rng, 6, b, ntypes=1) for b in boxes]
        coord = np.stack([f[0] for f in frames])
        types = np.zeros((2, 6), int)
        index, image = neighbor_list(tf.constant(coord), tf.constant(np.stack(boxes)),
                                     tf.constant(types), rcut=4.0, sel=[80])
        for k in range(2):
            self.check(coord[k], boxes[k], types[k], 4.0, [80], index.numpy()[k],
                       image.numpy()[k])

    def test_overflow_is_an_error(self):
        coord = np.random.default_rng(0).uniform(0, 3, (12, 3))
        types = np.zeros(12, int)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"sel\[0\]=4"):
            neighbor_list(tf.constant(coord[None]), None, tf.constant(types[None]),
                          rcut=6.0, sel=[4])
        with self.assertRaisesRegex(ValueError, r"11 neighbours of type 0.*sel\[0\]=4"):
            neighbor_list_numpy(coord, None, types, rcut=6.0, sel=[4])

    def test_overflow_inside_tf_function(self):
        fn = tf.function(lambda c, t: neighbor_list(c, None, t, rcut=6.0, sel=[3]))
        coord = np.random.default_rng(0).uniform(0, 3, (1, 8, 3))
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "Neighbour overflow"):
            fn(tf.constant(coord), tf.zeros((1, 8), tf.int32))

    def test_bad_sel(self):
        with self.assertRaisesRegex(ValueError, "sel"):
            neighbor_list_numpy(np.zeros((2, 3)), None, [0, 0], rcut=1.0, sel=[0])
