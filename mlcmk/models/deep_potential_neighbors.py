r"""Neighbour lists of the Deep Potential: periodic (orthorhombic or triclinic) or free boundaries.

Layout shared by both implementations: for every atom a fixed capacity of `sum(sel)` neighbour
slots, in blocks per neighbour type (`sel[0]` slots of type 0, then `sel[1]` of type 1, ...),
sorted by distance inside each block and padded with index -1. A neighbour `j` in a slot comes
with its integer image `n` (3 ints): the vector from atom `i` to it is

    r_ij = x_j - x_i + n @ box        (rows of `box` are the cell vectors)

so that the energy depends on the coordinates and the cell differentiably, while the list itself
(integers) is computed without gradient.

Periodic images: minimum image is not enough when `rcut` exceeds half the box. A vector with
fractional components `f` has `|f_a| <= |r| / h_a`, `h_a` the distance between the faces of the
cell spanned by the other two vectors, so images `|n_a| <= ceil(rcut / h_a)` (after wrapping the
pair's fractional difference into [-1/2, 1/2]) contain every neighbour within `rcut`.

More neighbours of a type within `rcut` than its `sel` is an error (never silent truncation).

- `neighbor_list`: in-graph TensorFlow, batched over frames; memory O(B N^2 M), M the number of
  images, so meant for training frames (tens to a few hundred atoms) and export.
- `neighbor_list_numpy`: NumPy/SciPy k-d tree over the atoms and their images near the cell,
  O(N log N), for MD of large systems.
"""

import numpy as np
import tensorflow as tf

from mlcmk._validation import check_positive_ints

_FREE_BOX_TOLERANCE = 1e-12


def face_distances(box):
    """Distances between opposite faces of the cells `box` (..., 3, 3) (rows = cell vectors)."""
    a, b, c = box[..., 0, :], box[..., 1, :], box[..., 2, :]
    volume = tf.abs(tf.reduce_sum(a * tf.linalg.cross(b, c), axis=-1))
    norms = tf.stack(
        [tf.norm(tf.linalg.cross(b, c), axis=-1), tf.norm(tf.linalg.cross(c, a), axis=-1),
         tf.norm(tf.linalg.cross(a, b), axis=-1)], axis=-1)
    return volume[..., None] / norms


def neighbor_list(coord, box, atom_types, *, rcut, sel):
    """In-graph neighbour list with fixed capacity per neighbour type.

    Args:
        coord: (B, N, 3) float tensor of positions.
        box: (B, 3, 3) cells (rows = cell vectors), or None for free boundaries. A frame whose
            box is all zeros (determinant 0) is treated as free.
        atom_types: (B, N) int tensor, values in `[0, len(sel))`.
        rcut: cut-off radius (float).
        sel: list of ints, the capacity per neighbour type.

    Returns:
        `(index, image)`: (B, N, sum(sel)) int32 neighbour indices (-1 = empty slot) and
        (B, N, sum(sel), 3) images in the dtype of `coord` (integers; zeros in empty slots).

    Raises:
        tf.errors.InvalidArgumentError: when an environment holds more neighbours of a type than
            its `sel`; the message names the type, `sel` and the largest count.
    """
    sel = check_positive_ints("sel", sel, allow_scalar=True)
    coord = tf.stop_gradient(tf.convert_to_tensor(coord))
    dtype = coord.dtype
    batch, natoms = tf.shape(coord)[0], tf.shape(coord)[1]
    atom_types = tf.cast(atom_types, tf.int32)
    if box is None:
        box = tf.zeros((batch, 3, 3), dtype)
    box = tf.stop_gradient(tf.cast(box, dtype))
    periodic = tf.abs(tf.linalg.det(box)) > _FREE_BOX_TOLERANCE  # (B,)
    eye = tf.eye(3, batch_shape=[batch], dtype=dtype)
    safe_box = tf.where(periodic[:, None, None], box, eye)
    pfloat = tf.cast(periodic, dtype)

    # Pair differences, wrapped into the cell in fractional coordinates.
    diff = coord[:, None, :, :] - coord[:, :, None, :]  # (B, N, N, 3): x_j - x_i
    frac = tf.einsum("bijk,bkl->bijl", diff, tf.linalg.inv(safe_box))
    image0 = -tf.round(frac) * pfloat[:, None, None, None]

    # Images needed per axis and frame; enumerate the largest range over the batch.
    n_axis = tf.cast(tf.math.ceil(rcut / face_distances(safe_box)), tf.int32)
    n_axis = n_axis * tf.cast(periodic, tf.int32)[:, None]  # (B, 3)
    n_max = tf.reduce_max(n_axis, axis=0)
    grids = tf.meshgrid(tf.range(-n_max[0], n_max[0] + 1), tf.range(-n_max[1], n_max[1] + 1),
                        tf.range(-n_max[2], n_max[2] + 1), indexing="ij")
    shifts = tf.reshape(tf.stack(grids, axis=-1), (-1, 3))  # (M, 3)
    nimages = tf.shape(shifts)[0]
    image_ok = tf.reduce_all(tf.abs(shifts)[None] <= n_axis[:, None, :], axis=-1)  # (B, M)
    shifts = tf.cast(shifts, dtype)

    images = image0[:, :, :, None, :] + shifts[None, None, None]  # (B, N, N, M, 3)
    vectors = diff[:, :, :, None, :] + tf.einsum("bijmk,bkl->bijml", images, box)
    dist = tf.norm(vectors, axis=-1)  # (B, N, N, M)
    is_self = (tf.eye(natoms, dtype=tf.bool)[None, :, :, None]
               & tf.reduce_all(tf.equal(images, 0.0), axis=-1))
    within = (dist < rcut) & ~is_self & image_ok[:, None, None, :]

    dist = tf.reshape(dist, (batch, natoms, natoms * nimages))
    within = tf.reshape(within, (batch, natoms, natoms * nimages))
    images = tf.reshape(images, (batch, natoms, natoms * nimages, 3))
    neighbor_type = tf.repeat(atom_types, nimages, axis=1)[:, None, :]  # (B, 1, N*M)
    inf = tf.constant(np.inf, dtype)

    indices, image_blocks = [], []
    for t, capacity in enumerate(sel):
        mask = within & tf.equal(neighbor_type, t)
        count = tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1))
        check = tf.debugging.Assert(
            count <= capacity,
            [f"Neighbour overflow: an environment holds more neighbours of type {t} within "
             f"rcut={rcut} than sel[{t}]={capacity} (raise sel). Largest count:", count])
        with tf.control_dependencies([check]):
            masked = tf.where(mask, dist, inf)
        # Pad the candidates so that top_k always has `capacity` of them.
        masked = tf.pad(masked, [[0, 0], [0, 0], [0, capacity]], constant_values=np.inf)
        neg, slot = tf.math.top_k(-masked, k=capacity, sorted=True)
        valid = tf.math.is_finite(neg)
        slot = tf.where(valid, slot, 0)
        index = tf.where(valid, slot // nimages, -1)
        image = tf.gather(images, slot, batch_dims=2)
        image = tf.where(valid[..., None], image, tf.zeros_like(image))
        indices.append(index)
        image_blocks.append(image)
    return tf.concat(indices, axis=-1), tf.concat(image_blocks, axis=-2)


def neighbor_list_numpy(coord, box, atom_types, *, rcut, sel):
    """NumPy neighbour list of one frame, same layout as `neighbor_list` (k-d tree, O(N log N)).

    Args:
        coord: (N, 3) positions. box: (3, 3) cell or None (free boundaries).
        atom_types: (N,) ints. rcut: cut-off. sel: capacities per neighbour type.

    Returns:
        `(index, image)`: (N, sum(sel)) int32 and (N, sum(sel), 3) float64.

    Raises:
        ValueError: when an environment holds more neighbours of a type than its `sel`.
    """
    from scipy.spatial import cKDTree

    sel = check_positive_ints("sel", sel, allow_scalar=True)
    coord = np.asarray(coord, np.float64)
    atom_types = np.asarray(atom_types, np.int64)
    natoms = len(coord)
    if box is None or abs(np.linalg.det(np.asarray(box, np.float64))) <= _FREE_BOX_TOLERANCE:
        pairs = cKDTree(coord).sparse_distance_matrix(cKDTree(coord), rcut,
                                                      output_type="ndarray")
        i, j, d = pairs["i"], pairs["j"], pairs["v"]
        shift = np.zeros((len(i), 3))
        keep = (d < rcut) & (i != j)
    else:
        box = np.asarray(box, np.float64)
        frac = coord @ np.linalg.inv(box)
        base = np.floor(frac)
        inside = frac - base  # wrapped into [0, 1)
        normals = np.cross(box[[1, 2, 0]], box[[2, 0, 1]])
        margin = rcut * np.linalg.norm(normals, axis=1) / abs(np.linalg.det(box))
        n = np.ceil(margin).astype(int)
        shifts = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"),
                          axis=-1).reshape(-1, 3)
        images = inside[None] + shifts[:, None]  # (M, N, 3)
        near = np.all((images > -margin - 1e-9) & (images < 1 + margin + 1e-9), axis=-1)
        image_of, atom_of = np.nonzero(near)
        extended = images[image_of, atom_of] @ box
        pairs = cKDTree(inside @ box).sparse_distance_matrix(cKDTree(extended), rcut,
                                                             output_type="ndarray")
        i, k, d = pairs["i"], pairs["j"], pairs["v"]
        j = atom_of[k]
        # extended_k = x_j + (s - base_j) box and wrapped x_i = x_i - base_i box.
        shift = shifts[image_of[k]] - base[j] + base[i]
        keep = (d < rcut) & ~((i == j) & np.all(shift == 0, axis=-1))
    i, j, d, shift = i[keep], j[keep], d[keep], shift[keep]
    # r_ij = x_j - x_i + shift @ box, the convention of `neighbor_list`.
    tj = atom_types[j]
    order = np.lexsort((d, tj, i))
    i, j, tj, shift = i[order], j[order], tj[order], shift[order]
    offsets = np.concatenate([[0], np.cumsum(sel)[:-1]])
    # Rank of each pair inside its (i, type) group.
    group = i * len(sel) + tj
    counts = np.bincount(group, minlength=natoms * len(sel))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(i)) - starts[group]
    for t, capacity in enumerate(sel):
        worst = counts[t::len(sel)].max(initial=0)
        if worst > capacity:
            raise ValueError(
                f"Neighbour overflow: an environment holds {worst} neighbours of type {t} within "
                f"rcut={rcut}, more than sel[{t}]={capacity}; raise `sel`.")
    index = np.full((natoms, sum(sel)), -1, np.int32)
    image = np.zeros((natoms, sum(sel), 3))
    slot = offsets[tj] + rank
    index[i, slot] = j
    image[i, slot] = shift
    return index, image
