r"""The smooth-edition Deep Potential descriptor (se_e2_a) as a Keras layer."""

import keras
import numpy as np
from keras import ops


def smooth_switch(r, rcut_smth, rcut):
    r"""`s(r)`: `1/r` below `rcut_smth`, `0` from `rcut` on, a C^2 quintic switch between.

    `s(r) = (1/r) (u^3 (-6 u^2 + 15 u - 10) + 1)` with `u = (r - rcut_smth) / (rcut - rcut_smth)`.
    """
    u = ops.clip((r - rcut_smth) / (rcut - rcut_smth), 0.0, 1.0)
    return (u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0) / r


def _check_positive_int_list(name, value):
    if isinstance(value, int):
        value = [value]
    try:
        value = [int(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a list of positive ints; received {name}={value!r}"
                         ) from err
    if not value or any(v <= 0 for v in value):
        raise ValueError(f"`{name}` must be a list of positive ints; received {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package="mlcmk")
class SymmetricEmbedding(keras.layers.Layer):
    r"""Deep Potential smooth-edition descriptor (DeepPot-SE, `se_e2_a`).

    For atom `i` with neighbour vectors `r_ij` (in slots grouped by neighbour type, `sel[t]`
    slots for type `t`), the environment matrix has rows
    `(s, s x/r, s y/r, s z/r)`, `s = smooth_switch(r)`, normalised per neighbour type by data
    statistics (`(row - mean) / std`, set with `set_statistics`, stored as non-trainable weights;
    empty slots have row 0 before normalisation, which equals the row of a neighbour at `rcut`,
    so the descriptor stays smooth when neighbours cross the cut-off). Each neighbour type has an
    embedding net `G(s)` (tanh, residual where widths equal or double). With `R~` the normalised
    matrix, `N_c = sum(sel)` and `G_<` the first `axis_neuron` columns of `G`,

        D_i = (G^T R~)(R~^T G_<) / N_c^2,        flattened to `neuron[-1] * axis_neuron` numbers.

    `D_i` is invariant under translations, rotations and permutations of like neighbours.

    Args:
        rcut: cut-off radius, > rcut_smth.
        rcut_smth: where the switch starts, >= 0.
        sel: list of ints, neighbour slots per type (fixes the number of types).
        neuron: widths of the embedding nets, default [25, 50, 100].
        axis_neuron: columns of `G_<`, <= neuron[-1].

    Input shape: `(B, N, sum(sel), 3)` neighbour vectors `r_ij`; an all-zero vector marks an
        empty slot. Output shape: `(B, N, neuron[-1] * axis_neuron)`.
    Reference: L. Zhang, J. Han, H. Wang, W. Saidi, R. Car, W. E, "End-to-end symmetry preserving
        inter-atomic potential energy model for finite and extended systems", NeurIPS 2018.
    """

    def __init__(self, rcut=6.0, rcut_smth=0.5, sel=(80,), neuron=(25, 50, 100), axis_neuron=16,
                 **kwargs):
        rcut, rcut_smth = float(rcut), float(rcut_smth)
        if not (0.0 <= rcut_smth < rcut):
            raise ValueError(f"Need 0 <= rcut_smth < rcut; received rcut_smth={rcut_smth}, "
                             f"rcut={rcut}")
        sel = _check_positive_int_list("sel", sel)
        neuron = _check_positive_int_list("neuron", neuron)
        if not isinstance(axis_neuron, int) or not 0 < axis_neuron <= neuron[-1]:
            raise ValueError(f"`axis_neuron` must be an int in [1, neuron[-1]={neuron[-1]}]; "
                             f"received axis_neuron={axis_neuron!r}")
        super().__init__(**kwargs)
        self.rcut = rcut
        self.rcut_smth = rcut_smth
        self.sel = sel
        self.neuron = neuron
        self.axis_neuron = axis_neuron

    @property
    def ntypes(self):
        return len(self.sel)

    @property
    def output_dim(self):
        return self.neuron[-1] * self.axis_neuron

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-2] is not None:
            if input_shape[-2] != sum(self.sel) or input_shape[-1] != 3:
                raise ValueError(f"Input must have shape (B, N, sum(sel)={sum(self.sel)}, 3); "
                                 f"received {tuple(input_shape)}")
        self.mean = self.add_weight(name="mean", shape=(self.ntypes, 4), initializer="zeros",
                                    trainable=False)
        self.std = self.add_weight(name="std", shape=(self.ntypes, 4), initializer="ones",
                                   trainable=False)
        self.embedding_kernels, self.embedding_biases = [], []
        for t in range(self.ntypes):
            kernels, biases = [], []
            width = 1
            for k, units in enumerate(self.neuron):
                kernels.append(self.add_weight(
                    name=f"embedding_{t}_kernel_{k}", shape=(width, units),
                    initializer=keras.initializers.RandomNormal(
                        stddev=1.0 / np.sqrt(width + units))))
                biases.append(self.add_weight(
                    name=f"embedding_{t}_bias_{k}", shape=(units,),
                    initializer=keras.initializers.RandomNormal(stddev=1.0)))
                width = units
            self.embedding_kernels.append(kernels)
            self.embedding_biases.append(biases)

    def environment(self, vectors):
        """Raw environment matrix rows (s, s x/r, s y/r, s z/r); zeros in empty slots."""
        r2 = ops.sum(vectors**2, axis=-1, keepdims=True)
        occupied = r2 > 0
        # Safe r in empty slots keeps gradients finite.
        r = ops.sqrt(ops.where(occupied, r2, ops.ones_like(r2)))
        s = ops.where(occupied, smooth_switch(r, self.rcut_smth, self.rcut), ops.zeros_like(r))
        return ops.concatenate([s, s * vectors / r], axis=-1)

    def set_statistics(self, mean, std, floor=1e-2):
        """Sets the normalisation: mean, std of shape (ntypes, 4); std floored at `floor`."""
        mean = np.asarray(mean, np.float64).reshape(self.ntypes, 4)
        std = np.maximum(np.asarray(std, np.float64).reshape(self.ntypes, 4), floor)
        self.mean.assign(mean.astype(self.mean.dtype))
        self.std.assign(std.astype(self.std.dtype))

    def normalized_environment(self, vectors):
        env = self.environment(vectors)
        block = np.repeat(np.arange(self.ntypes), self.sel)  # neighbour type of each slot
        mean = ops.take(self.mean, block, axis=0)
        std = ops.take(self.std, block, axis=0)
        return (env - mean) / std

    def _embed(self, t, s):
        h = s
        for k, (w, b) in enumerate(zip(self.embedding_kernels[t], self.embedding_biases[t],
                                       strict=True)):
            y = ops.tanh(ops.matmul(h, w) + b)
            width_in, width_out = w.shape
            if k > 0 and width_out == width_in:
                y = y + h
            elif k > 0 and width_out == 2 * width_in:
                y = y + ops.concatenate([h, h], axis=-1)
            h = y
        return h

    def call(self, inputs):
        env = self.normalized_environment(ops.convert_to_tensor(inputs, self.compute_dtype))
        total = 0
        start = 0
        for t, count in enumerate(self.sel):
            rows = env[:, :, start:start + count]  # (B, N, sel_t, 4)
            g = self._embed(t, rows[..., :1])  # (B, N, sel_t, M1)
            total = total + ops.einsum("bnsm,bnsk->bnmk", g, rows)
            start += count
        total = total / float(sum(self.sel))
        d = ops.einsum("bnmk,bnak->bnma", total, total[:, :, :self.axis_neuron])
        shape = ops.shape(d)
        return ops.reshape(d, (shape[0], shape[1], self.output_dim))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-2], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "rcut": self.rcut, "rcut_smth": self.rcut_smth,
                "sel": list(self.sel), "neuron": list(self.neuron),
                "axis_neuron": self.axis_neuron}
