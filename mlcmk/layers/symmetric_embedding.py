r"""The smooth-edition Deep Potential descriptor (se_e2_a) as a Keras layer."""

import keras
import numpy as np
from keras import ops

from mlcmk._validation import (
    check_number,
    check_positive_int,
    check_positive_ints,
    check_positive_number,
)


def smooth_switch(r, rcut_smth, rcut):
    r"""`s(r)`: `1/r` below `rcut_smth`, `0` from `rcut` on, a C^2 quintic switch between.

    `s(r) = (1/r) (u^3 (-6 u^2 + 15 u - 10) + 1)` with `u = (r - rcut_smth) / (rcut - rcut_smth)`.
    """
    u = ops.clip((r - rcut_smth) / (rcut - rcut_smth), 0.0, 1.0)
    return (u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0) / r


def quintic_hermite(f0, f1, d0, d1, s0, s1, h):
    """Coefficients `(n, 6, M)` of the quintics on `[0, h]` with the given end values `f`,
    first derivatives `d` and second derivatives `s` (each `(n, M)`), lowest power first."""
    a = f1 - f0 - d0 * h - 0.5 * s0 * h**2
    b = d1 - d0 - s0 * h
    c = s1 - s0
    c3 = (20.0 * a - 8.0 * b * h + c * h**2) / (2.0 * h**3)
    c4 = (-30.0 * a + 14.0 * b * h - 2.0 * c * h**2) / (2.0 * h**4)
    c5 = (12.0 * a - 6.0 * b * h + c * h**2) / (2.0 * h**5)
    return np.stack([f0, d0, 0.5 * s0, c3, c4, c5], axis=1)


def _residual_repeat(k, kernel_shape):
    """Skip connection of embedding layer `k`: the input tiled 1x (equal widths) or 2x
    (doubling widths), else none (0). The first layer never has one."""
    width_in, width_out = kernel_shape
    if k > 0 and width_out in (width_in, 2 * width_in):
        return width_out // width_in
    return 0


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
        rcut = check_positive_number("rcut", rcut)
        rcut_smth = check_number("rcut_smth", rcut_smth, 0, high=rcut, strict_high=True)
        sel = check_positive_ints("sel", sel, allow_scalar=True)
        neuron = check_positive_ints("neuron", neuron, allow_scalar=True)
        axis_neuron = check_positive_int("axis_neuron", axis_neuron)
        if axis_neuron > neuron[-1]:
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
            repeat = _residual_repeat(k, w.shape)
            if repeat:
                y = y + ops.concatenate([h] * repeat, axis=-1)
            h = y
        return h

    # --- tabulation (model compression) ----------------------------------------------------
    def embedding_derivatives(self, t, z):
        """Embedding net `t` and its first two derivatives at normalised inputs `z` (NumPy).

        Forward-mode differentiation by hand, in float64, from the current weights.

        Returns:
            `(G, G', G'')`, each `(len(z), neuron[-1])`.
        """
        h = np.asarray(z, np.float64).reshape(-1, 1)
        dh, d2h = np.ones_like(h), np.zeros_like(h)
        for k, (w, b) in enumerate(zip(self.embedding_kernels[t], self.embedding_biases[t],
                                       strict=True)):
            w = np.asarray(keras.ops.convert_to_numpy(w), np.float64)
            b = np.asarray(keras.ops.convert_to_numpy(b), np.float64)
            a, da, d2a = h @ w + b, dh @ w, d2h @ w
            y = np.tanh(a)
            slope = 1.0 - y**2
            dy = slope * da
            d2y = slope * d2a - 2.0 * y * slope * da**2
            repeat = _residual_repeat(k, w.shape)
            if repeat:
                y, dy, d2y = (y + np.tile(h, repeat), dy + np.tile(dh, repeat),
                              d2y + np.tile(d2h, repeat))
            h, dh, d2h = y, dy, d2y
        return h, dh, d2h

    def tabulate(self, stride=0.01, r_min=0.5):
        r"""Replaces the embedding nets by piecewise quintic tables (DeePMD-style compression).

        On a uniform grid of the net's input (the normalised switch value `(s - mean) / std`,
        spacing `stride`) that covers `s` in `[0, s(r_min)]`, each interval holds the quintic
        that matches `G`, `G'` and `G''` of the net at both ends, so the tabulated `G` is C^2
        and its error falls like `stride^6`. Evaluation is a
        gather and a Horner scheme instead of three dense layers: the MD force call gets several
        times cheaper. Neighbours closer than `r_min` use the first interval's polynomial
        (extrapolation). The tables are constants of the current weights: call `tabulate` again
        after training (or use `untabulate`); they are not saved with the model.

        Args:
            stride: positive float, grid spacing of the normalised `s`.
            r_min: positive float, the smallest neighbour distance the table covers (Å).
        """
        open_interval = {"strict": True, "strict_high": True}
        stride = check_number("stride", stride, 0, high=1, **open_interval)  # 1/Å
        r_min = check_number("r_min", r_min, 0, high=self.rcut, **open_interval)  # up to rcut
        if not self.built:
            raise ValueError("Build the layer (and set its statistics) before `tabulate`")
        s_max = float(keras.ops.convert_to_numpy(
            smooth_switch(np.float64(r_min), self.rcut_smth, self.rcut)))
        mean = np.asarray(keras.ops.convert_to_numpy(self.mean), np.float64)[:, 0]
        std = np.asarray(keras.ops.convert_to_numpy(self.std), np.float64)[:, 0]
        tables = []
        for t in range(self.ntypes):
            lower, step = -mean[t] / std[t], float(stride)  # in the net's normalised input
            intervals = int(np.ceil(s_max / std[t] / step))
            if intervals > 200_000:
                raise ValueError(f"A table of {intervals} intervals for neighbour type {t} is "
                                 f"too large: raise `stride` (received {stride}) or `r_min` "
                                 f"(received {r_min})")
            nodes = lower + step * np.arange(intervals + 1)
            g, dg, d2g = self.embedding_derivatives(t, nodes)
            coefficients = quintic_hermite(g[:-1], g[1:], dg[:-1], dg[1:], d2g[:-1], d2g[1:],
                                           step)  # (intervals, 6, M)
            tables.append((lower, step, ops.convert_to_tensor(
                coefficients.reshape(intervals, -1), self.compute_dtype)))
        self._tables = tables

    def untabulate(self):
        """Goes back to evaluating the embedding nets."""
        self._tables = None

    @property
    def tabulated(self):
        return getattr(self, "_tables", None) is not None

    def _embed_tabulated(self, t, z):
        lower, step, table = self._tables[t]
        intervals = ops.shape(table)[0]
        position = (z[..., 0] - lower) / step
        index = ops.clip(ops.cast(ops.floor(ops.stop_gradient(position)), "int32"), 0,
                         intervals - 1)
        x = (z[..., 0] - lower - ops.cast(index, z.dtype) * step)[..., None]
        powers = ops.concatenate([ops.ones_like(x), x, x**2, x**3, x**4, x**5], axis=-1)
        c = ops.reshape(ops.take(table, index, axis=0), (*ops.shape(index), 6, -1))
        return ops.einsum("...k,...km->...m", powers, c)

    def call(self, inputs):
        env = self.normalized_environment(ops.convert_to_tensor(inputs, self.compute_dtype))
        total = 0
        start = 0
        for t, count in enumerate(self.sel):
            rows = env[:, :, start:start + count]  # (B, N, sel_t, 4)
            if self.tabulated:
                g = self._embed_tabulated(t, rows[..., :1])
            else:
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
