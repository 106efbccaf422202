r"""Deep Potential (DeepPot-SE): a many-body potential energy surface learned from labelled frames.

`E = sum_i E_{t_i}(D_i)`: the `SymmetricEmbedding` descriptor of each atom's environment goes
through a fitting net of its type; forces `F = -dE/dx` and the virial `W = -dE/d(strain)` come
from automatic differentiation (exact derivatives of the same energy).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_positive_int, check_positive_ints
from mlcmk.layers.symmetric_embedding import SymmetricEmbedding
from mlcmk.models.deep_potential_neighbors import neighbor_list, neighbor_list_numpy

DESCRIPTORS = ("se_e2_a", "raw_sorted")


@keras.saving.register_keras_serializable(package="mlcmk")
class SortedEnvironmentDescriptor(SymmetricEmbedding):
    """Non-symmetric baseline: the normalised environment matrix of the distance-sorted
    neighbour slots, flattened (`sum(sel) * 4` numbers). Invariant to translations and to
    permutations (slots are sorted) but not to rotations: the seed's figure-3 comparison.
    """

    @property
    def output_dim(self):
        return sum(self.sel) * 4

    def build(self, input_shape=None):
        self.mean = self.add_weight(name="mean", shape=(self.ntypes, 4), initializer="zeros",
                                    trainable=False)
        self.std = self.add_weight(name="std", shape=(self.ntypes, 4), initializer="ones",
                                   trainable=False)

    def call(self, inputs):
        env = self.normalized_environment(ops.convert_to_tensor(inputs, self.compute_dtype))
        shape = ops.shape(env)
        return ops.reshape(env, (shape[0], shape[1], self.output_dim))


@keras.saving.register_keras_serializable(package="mlcmk")
class FittingNetwork(keras.layers.Layer):
    """Per-type fitting nets on atomic descriptors: tanh layers, `x + dt * tanh(W x + b)` where
    widths repeat (`resnet_dt`, dt trainable, initialised near 0.1), linear output per atom.

    Input: descriptors (B, N, F) and types (B, N). Output: atomic energies (B, N) (without bias).
    """

    def __init__(self, ntypes, neuron=(240, 240, 240), resnet_dt=True, **kwargs):
        super().__init__(**kwargs)
        self.ntypes = int(ntypes)
        self.neuron = check_positive_ints("neuron", neuron, allow_scalar=True)
        self.resnet_dt = bool(resnet_dt)

    def build(self, input_shape):
        width_in = input_shape[-1]
        self.kernels, self.biases, self.dts = [], [], []
        for t in range(self.ntypes):
            kernels, biases, dts = [], [], []
            width = width_in
            for k, units in enumerate([*self.neuron, 1]):
                kernels.append(self.add_weight(
                    name=f"fitting_{t}_kernel_{k}", shape=(width, units),
                    initializer=keras.initializers.RandomNormal(
                        stddev=1.0 / np.sqrt(width + units))))
                biases.append(self.add_weight(
                    name=f"fitting_{t}_bias_{k}", shape=(units,),
                    initializer=keras.initializers.RandomNormal(stddev=1.0)
                    if k < len(self.neuron) else "zeros"))
                if self.resnet_dt and k < len(self.neuron) and units == width:
                    dts.append(self.add_weight(
                        name=f"fitting_{t}_dt_{k}", shape=(units,),
                        initializer=keras.initializers.RandomNormal(mean=0.1, stddev=0.001)))
                else:
                    dts.append(None)
                width = units
            self.kernels.append(kernels)
            self.biases.append(biases)
            self.dts.append(dts)

    def _net(self, t, h):
        last = len(self.kernels[t]) - 1
        for k, (w, b, dt) in enumerate(zip(self.kernels[t], self.biases[t], self.dts[t],
                                           strict=True)):
            y = ops.matmul(h, w) + b
            if k == last:
                return y[..., 0]
            y = ops.tanh(y)
            if w.shape[0] == w.shape[1]:
                y = h + (y * dt if dt is not None else y)
            h = y
        raise AssertionError("unreachable")

    def call(self, descriptors, atom_types):
        if self.ntypes == 1:
            return self._net(0, descriptors)
        out = 0
        for t in range(self.ntypes):
            mask = ops.cast(ops.equal(atom_types, t), descriptors.dtype)
            out = out + mask * self._net(t, descriptors)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def get_config(self):
        return {**super().get_config(), "ntypes": self.ntypes, "neuron": list(self.neuron),
                "resnet_dt": self.resnet_dt}


def _as_int_list(name, value, length):
    value = [value] * length if isinstance(value, int) else list(value)
    if len(value) != length:
        raise ValueError(f"`{name}` must have one entry per type ({length}); received "
                         f"{name}={value!r}")
    return check_positive_ints(name, value)


@keras.saving.register_keras_serializable(package="mlcmk")
class DeepPotential(keras.Model):
    r"""Deep Potential energy model with forces and virial, trained with the DeePMD loss.

    Inputs (dict): `coord` (B, N, 3), `atom_types` (B, N) ints indexing `type_map`, optional
    `box` (B, 3, 3) with cell vectors as rows (absent or all zeros: free boundaries).
    Outputs (dict): `energy` (B,), `atom_energy` (B, N), `force` (B, N, 3) = -dE/dx,
    `virial` (B, 3, 3) = -dE/d(strain) (stress = -virial / volume).

    Training (`fit` on `make_dataset(...)`): DeePMD-kit's loss
    `p_e mean(dE^2) / N + p_f mean(dF^2) + p_v mean(dW^2) / N` with each prefactor moving from its
    start to its limit value with the learning rate, `p = limit + (start - limit) lr / lr0`.
    Call `set_statistics(systems)` first: descriptor normalisation and the per-type energy bias
    (least squares, on the type counts, of the frame energies minus those of the initial nets).

    Args:
        type_map: list of element names; the index of a name is its type.
        rcut, rcut_smth: cut-off and switch start (Å).
        sel: neighbour capacity per type (int: same for all types).
        neuron: embedding widths. axis_neuron: columns of `G_<`.
        fitting_neuron: fitting net widths. resnet_dt: residual fitting layers with a
            trainable step.
        descriptor: "se_e2_a" (symmetric) or "raw_sorted" (non-symmetric baseline).
        start_pref_e, limit_pref_e, start_pref_f, limit_pref_f, start_pref_v, limit_pref_v:
            loss prefactors (DeePMD defaults 0.02 -> 1, 1000 -> 1, 0 -> 0).
    Reference: L. Zhang et al., NeurIPS 2018; H. Wang et al., DeePMD-kit, CPC 228 (2018).
    """

    def __init__(self, type_map, rcut=6.0, rcut_smth=0.5, sel=80, neuron=(25, 50, 100),
                 axis_neuron=16, fitting_neuron=(240, 240, 240), resnet_dt=True,
                 descriptor="se_e2_a", start_pref_e=0.02, limit_pref_e=1.0, start_pref_f=1000.0,
                 limit_pref_f=1.0, start_pref_v=0.0, limit_pref_v=0.0, **kwargs):
        if isinstance(type_map, str) or not type_map or not all(
                isinstance(n, str) for n in type_map):
            raise ValueError(f"`type_map` must be a non-empty list of element names; received "
                             f"type_map={type_map!r}")
        if len(set(type_map)) != len(type_map):
            raise ValueError(f"`type_map` has repeated names: {type_map!r}")
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"`descriptor` must be one of {DESCRIPTORS}; received "
                             f"descriptor={descriptor!r}")
        prefs = dict(start_pref_e=start_pref_e, limit_pref_e=limit_pref_e,
                     start_pref_f=start_pref_f, limit_pref_f=limit_pref_f,
                     start_pref_v=start_pref_v, limit_pref_v=limit_pref_v)
        for name, value in prefs.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative number; received {value!r}")
        super().__init__(**kwargs)
        # === Config ===
        self.type_map = list(type_map)
        self.sel = _as_int_list("sel", sel, len(self.type_map))
        self.descriptor_type = descriptor
        self.prefs = {k: float(v) for k, v in prefs.items()}
        # === Layers ===
        descriptor_cls = SymmetricEmbedding if descriptor == "se_e2_a" else \
            SortedEnvironmentDescriptor
        self.descriptor = descriptor_cls(rcut=rcut, rcut_smth=rcut_smth, sel=self.sel,
                                         neuron=neuron, axis_neuron=axis_neuron,
                                         dtype=self.dtype_policy, name="descriptor")
        self.fitting = FittingNetwork(len(self.type_map), fitting_neuron, resnet_dt,
                                      dtype=self.dtype_policy, name="fitting")
        self.energy_bias = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.energy_rmse = keras.metrics.RootMeanSquaredError(name="energy_rmse_per_atom")
        self.force_rmse = keras.metrics.RootMeanSquaredError(name="force_rmse")
        self._lr0 = None

    @property
    def rcut(self):
        return self.descriptor.rcut

    @property
    def ntypes(self):
        return len(self.type_map)

    def build(self, input_shape=None):
        if self.built:
            return
        nnei = sum(self.sel)
        self.descriptor.build((None, None, nnei, 3))
        self.fitting.build((None, None, self.descriptor.output_dim))
        self.energy_bias = self.add_weight(name="energy_bias", shape=(self.ntypes,),
                                           initializer="zeros", trainable=False)
        self.built = True

    # --- inference copies ---------------------------------------------------------------------
    def copy(self, dtype=None):
        """A new model with the same config and weights, in `dtype` (default: this model's)."""
        if not self.built:
            self.build()
        config = self.get_config()
        if dtype is not None:
            config["dtype"] = dtype
        copy = self.__class__.from_config(config)
        copy.build()
        copy.set_weights([np.asarray(w).astype(copy.compute_dtype) for w in self.get_weights()])
        return copy

    def compressed(self, stride=0.01, r_min=0.5, dtype=None):
        """An inference copy whose embedding nets are piecewise quintic tables.

        See `SymmetricEmbedding.tabulate`: energies and forces agree with this model to ~1e-10
        relative at the default `stride` (float64). The copy is for evaluation (MD,
        `compute`): its tables are not trained and not saved. Whether it is faster depends on
        the size (a gather of `6 neuron[-1]` numbers per neighbour replaces three dense layers;
        see benchmarks/deep_potential.py).

        Args:
            stride: grid spacing of the normalised switch value. r_min: smallest neighbour
                distance covered by the table (Å). dtype: precision of the copy.
        """
        if self.descriptor_type != "se_e2_a":
            raise ValueError(f"Only the se_e2_a descriptor can be compressed; this model has "
                             f"descriptor={self.descriptor_type!r}")
        copy = self.copy(dtype)
        copy.descriptor.tabulate(stride=stride, r_min=r_min)
        return copy

    # --- physics ------------------------------------------------------------------------------
    def neighbor_list(self, coord, box, atom_types):
        """In-graph neighbour list `(index, image)` for this model's rcut and sel."""
        return neighbor_list(coord, box, atom_types, rcut=self.rcut, sel=self.sel)

    def _neighbor_vectors(self, coord, box, index, image):
        valid = index >= 0
        gathered = tf.gather(coord, tf.maximum(index, 0), batch_dims=1)  # (B, N, nnei, 3)
        vectors = gathered - coord[:, :, None, :] + tf.einsum("bnsk,bkl->bnsl", image, box)
        return tf.where(valid[..., None], vectors, tf.zeros_like(vectors))

    def atomic_energies(self, coord, box, atom_types, index, image):
        """Atomic energies (B, N) from positions and a given neighbour list."""
        vectors = self._neighbor_vectors(coord, box, index, image)
        descriptors = self.descriptor(vectors)
        energies = self.fitting(descriptors, atom_types)
        return energies + tf.gather(self.energy_bias, atom_types)

    def compute(self, coord, atom_types, box=None, index=None, image=None):
        """Energy, atomic energies, forces and virial (dict), see the class docstring.

        `index`, `image`: a precomputed neighbour list (e.g. `neighbor_list_numpy`); computed
        in graph when None.
        """
        dtype = self.compute_dtype
        coord = tf.convert_to_tensor(coord, dtype)
        atom_types = tf.cast(atom_types, tf.int32)
        batch = tf.shape(coord)[0]
        box = tf.zeros((batch, 3, 3), dtype) if box is None else tf.convert_to_tensor(box, dtype)
        if index is None:
            index, image = self.neighbor_list(coord, box, atom_types)
        image = tf.cast(image, dtype)
        strain = tf.zeros((batch, 3, 3), dtype)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([coord, strain])
            # Column-vector convention r -> (I + e) r, i.e. rows x -> x (I + e)^T.
            deformation = tf.eye(3, dtype=dtype) + tf.linalg.matrix_transpose(strain)
            atom_energy = self.atomic_energies(coord @ deformation, box @ deformation,
                                               atom_types, index, image)
            energy = tf.reduce_sum(atom_energy, axis=-1)
        grad_coord, grad_strain = tape.gradient(energy, [coord, strain])
        return {"energy": energy, "atom_energy": atom_energy, "force": -grad_coord,
                "virial": -grad_strain}

    def call(self, inputs, training=False):
        return self.compute(inputs["coord"], inputs["atom_types"], inputs.get("box"),
                            index=inputs.get("index"), image=inputs.get("image"))

    # --- statistics -------------------------------------------------------------------------
    def set_statistics(self, systems, max_frames=200):
        """Sets the descriptor normalisation and the per-type energy bias from training systems.

        Args:
            systems: list of objects with `coord` (F, N, 3), `box` (F, 3, 3) or None,
                `atom_types` (N,), `energy` (F,) (e.g. `mlcmk.data.deepmd.System`).
            max_frames: frames per system (evenly spaced) used for the statistics.

        Returns:
            dict with `energy_bias` (per type) and the statistics.
        """
        if not self.built:
            self.build()
        systems = list(systems)
        if not systems:
            raise ValueError("`systems` is empty")
        sums = np.zeros((self.ntypes, 4))
        squares = np.zeros((self.ntypes, 4))
        slots = np.zeros(self.ntypes)
        frames = []  # per system: (picked coord, box, types, reference energies)
        for system in systems:
            types = np.asarray(system.atom_types, np.int64)
            if types.min() < 0 or types.max() >= self.ntypes:
                raise ValueError(f"atom types {sorted(set(types.tolist()))} outside "
                                 f"[0, {self.ntypes}) of type_map={self.type_map}")
            nframes = len(system.energy)
            pick = np.linspace(0, nframes - 1, min(nframes, max_frames)).astype(int)
            coord = np.asarray(system.coord)[pick]
            box = np.zeros((len(pick), 3, 3)) if system.box is None else \
                np.asarray(system.box)[pick]
            frames.append((coord, box, types, np.asarray(system.energy, np.float64)[pick]))
            for start in range(0, len(pick), 16):
                c = tf.constant(coord[start:start + 16], self.compute_dtype)
                b = tf.constant(box[start:start + 16], self.compute_dtype)
                t = tf.constant(np.tile(types, (len(c), 1)), tf.int32)
                index, image = self.neighbor_list(c, b, t)
                env = self.descriptor.environment(
                    self._neighbor_vectors(c, b, index, tf.cast(image, c.dtype))).numpy()
                start_slot = 0
                for k, width in enumerate(self.sel):
                    block = env[:, :, start_slot:start_slot + width].reshape(-1, 4)
                    sums[k] += block.sum(axis=0)
                    squares[k] += (block**2).sum(axis=0)
                    slots[k] += len(block)
                    start_slot += width
        slots = np.maximum(slots, 1)[:, None]
        mean_s = sums[:, :1] / slots
        std_s = np.sqrt(np.maximum(squares[:, :1] / slots - mean_s**2, 0))
        std_xyz = np.sqrt(squares[:, 1:].sum(axis=1, keepdims=True) / (3 * slots))
        mean = np.concatenate([mean_s, np.zeros((self.ntypes, 3))], axis=1)
        std = np.concatenate([std_s, np.repeat(std_xyz, 3, axis=1)], axis=1)
        self.descriptor.set_statistics(mean, std)
        # Least squares of the frame energies not yet explained by the (initial) fitting nets
        # on the type counts: the model starts with the right mean energy per type, so training
        # does not spend its steps removing an offset that forces cannot see.
        self.energy_bias.assign(tf.zeros_like(self.energy_bias))
        counts, residuals = [], []
        for coord, box, types, energy in frames:
            predicted = []
            for start in range(0, len(coord), 16):
                c = tf.constant(coord[start:start + 16], self.compute_dtype)
                b = tf.constant(box[start:start + 16], self.compute_dtype)
                t = tf.constant(np.tile(types, (len(c), 1)), tf.int32)
                index, image = self.neighbor_list(c, b, t)
                predicted.append(tf.reduce_sum(self.atomic_energies(
                    c, b, t, index, tf.cast(image, c.dtype)), axis=-1).numpy())
            residuals.append(energy - np.concatenate(predicted))
            counts.append(np.tile(np.bincount(types, minlength=self.ntypes), (len(coord), 1)))
        a = np.concatenate(counts).astype(np.float64)
        bias = np.linalg.lstsq(a, np.concatenate(residuals), rcond=None)[0]
        self.energy_bias.assign(bias.astype(self.energy_bias.dtype))
        return {"energy_bias": dict(zip(self.type_map, bias.tolist(), strict=True)),
                "mean": mean.tolist(), "std": self.descriptor.std.numpy().tolist()}

    # --- training ---------------------------------------------------------------------------
    def compile(self, optimizer="auto", *, total_steps=None, learning_rate=1e-3,
                stop_learning_rate=1e-5, decay_steps=100, **kwargs):
        """`optimizer="auto"`: Adam with DeePMD's staircase exponential decay from
        `learning_rate` to `stop_learning_rate` over `total_steps` in steps of `decay_steps`.
        """
        if optimizer == "auto":
            if total_steps is None:
                raise ValueError("optimizer='auto' needs `total_steps` for its learning-rate "
                                 "decay; e.g. compile(total_steps=2000)")
            rate = (stop_learning_rate / learning_rate) ** (decay_steps / max(total_steps, 1))
            schedule = keras.optimizers.schedules.ExponentialDecay(
                learning_rate, decay_steps, rate, staircase=True)
            optimizer = keras.optimizers.Adam(schedule)
        # The in-graph neighbour list has dynamic shapes (image counts) and an overflow check
        # that XLA cannot compile: XLA only with `make_dataset(..., neighbors=model)`.
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        # lr0 of the prefactor rule: the schedule at step 0, or the constant rate.
        lr = getattr(self.optimizer, "_learning_rate", None)
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            self._lr0 = float(ops.convert_to_numpy(lr(0)))
        elif lr is not None:
            self._lr0 = float(ops.convert_to_numpy(lr))

    @property
    def metrics(self):
        return [self.loss_tracker, self.energy_rmse, self.force_rmse]

    def prefactors(self):
        """Current (p_e, p_f, p_v) from the optimizer's learning rate."""
        if self._lr0 is None:
            ratio = 1.0
        else:
            ratio = ops.cast(self.optimizer.learning_rate, self.compute_dtype) / self._lr0
        p = self.prefs
        return tuple(p[f"limit_pref_{k}"] + (p[f"start_pref_{k}"] - p[f"limit_pref_{k}"]) * ratio
                     for k in ("e", "f", "v"))

    def compute_potential_loss(self, x, y, prediction):
        natoms = ops.cast(ops.shape(x["coord"])[1], self.compute_dtype)
        p_e, p_f, p_v = self.prefactors()
        e_ref = ops.cast(y["energy"], self.compute_dtype)
        f_ref = ops.cast(y["force"], self.compute_dtype)
        # DeePMD-kit's normalisation: squared energy and virial errors divided by N (not N^2).
        loss_e = ops.mean((prediction["energy"] - e_ref) ** 2) / natoms
        loss_f = ops.mean((prediction["force"] - f_ref) ** 2)
        loss = p_e * loss_e + p_f * loss_f
        if self.prefs["start_pref_v"] > 0 or self.prefs["limit_pref_v"] > 0:
            weight = ops.cast(y["find_virial"], self.compute_dtype)[:, None, None]
            diff = prediction["virial"] - ops.cast(y["virial"], self.compute_dtype)
            loss = loss + p_v * ops.mean(weight * diff**2) / natoms
        return loss

    def _update_metrics(self, x, y, prediction, loss):
        natoms = ops.cast(ops.shape(x["coord"])[1], self.compute_dtype)
        self.loss_tracker.update_state(loss)
        self.energy_rmse.update_state(ops.cast(y["energy"], self.compute_dtype) / natoms,
                                      prediction["energy"] / natoms)
        self.force_rmse.update_state(ops.cast(y["force"], self.compute_dtype),
                                     prediction["force"])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            prediction = self(x, training=True)
            loss = self.compute_potential_loss(x, y, prediction)
            scaled = loss / replicas
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return self._update_metrics(x, y, prediction, loss)

    def test_step(self, data):
        x, y = data[0], data[1]
        prediction = self(x, training=False)
        loss = self.compute_potential_loss(x, y, prediction)
        return self._update_metrics(x, y, prediction, loss)

    def get_config(self):
        d = self.descriptor
        return {**super().get_config(), "type_map": list(self.type_map), "rcut": d.rcut,
                "rcut_smth": d.rcut_smth, "sel": list(self.sel), "neuron": list(d.neuron),
                "axis_neuron": d.axis_neuron, "fitting_neuron": list(self.fitting.neuron),
                "resnet_dt": self.fitting.resnet_dt, "descriptor": self.descriptor_type,
                **self.prefs}

    # --- export ---------------------------------------------------------------------------
    def export_potential(self, filepath):
        """SavedModel with `energy_and_forces(coord, box, atom_types)` (TensorFlow alone).

        `coord` (B, N, 3), `box` (B, 3, 3) (zeros: free boundaries), `atom_types` (B, N) int32;
        returns a dict with `energy`, `atom_energy`, `force`, `virial`.
        """
        if not self.built:
            self.build()
        dtype = self.compute_dtype
        archive = keras.export.ExportArchive()
        archive.track(self)

        def energy_and_forces(coord, box, atom_types):
            return self.compute(coord, atom_types, box)

        archive.add_endpoint(
            "energy_and_forces", energy_and_forces,
            input_signature=[tf.TensorSpec((None, None, 3), dtype, name="coord"),
                             tf.TensorSpec((None, 3, 3), dtype, name="box"),
                             tf.TensorSpec((None, None), tf.int32, name="atom_types")])
        archive.write_out(filepath, verbose=False)
        return filepath


def make_dataset(systems, batch_size=1, *, shuffle=True, seed=0, repeat=True, type_map=None,
                 neighbors=None):
    """`tf.data` of per-system batches (frames of one system share their atom count).

    Args:
        systems: list of objects with `coord`, `box` (or None), `atom_types`, `energy`, `force`,
            `virial` (or None) (e.g. `mlcmk.data.deepmd.System`).
        batch_size: frames per batch (a system with fewer frames gives batches of all of them;
            with `repeat`, incomplete batches are dropped, reshuffled each pass).
        shuffle: shuffle frames inside each system and pick systems at random, weighted by
            their frame counts (seeded).
        repeat: repeat forever (use `steps_per_epoch` in `fit`).
        type_map: optional list of element names; each system's `type_map` must equal it
            (read the systems with `read_systems(..., type_map=...)`).
        neighbors: optional `DeepPotential` (or `(rcut, sel)`): each frame's neighbour list is
            computed once on the host (`neighbor_list_numpy`) and added to the inputs as
            `index`/`image`, so the model skips its in-graph list and the training step can be
            compiled with XLA (`compile(jit_compile=True)`). Overflowing `sel` is a ValueError
            here, naming the system and frame.

    Returns:
        A `tf.data.Dataset` of `(x, y)` dicts for `DeepPotential.fit`.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    systems = list(systems)
    if not systems:
        raise ValueError("`systems` is empty")
    if neighbors is not None:
        rcut, sel = (neighbors.rcut, neighbors.sel) if isinstance(neighbors, DeepPotential) \
            else neighbors
    datasets, weights = [], []
    dtype = keras.config.floatx()
    for number, system in enumerate(systems):
        coord = np.asarray(system.coord, dtype)
        nframes, natoms = coord.shape[:2]
        if type_map is not None and list(getattr(system, "type_map", type_map)) != list(type_map):
            raise ValueError(f"system {number} has type_map {system.type_map}, the model "
                             f"{type_map}; read it with read_system(..., type_map=...)")
        box = np.zeros((nframes, 3, 3), dtype) if system.box is None else \
            np.asarray(system.box, dtype)
        virial = getattr(system, "virial", None)
        find_virial = np.full((nframes,), 0.0 if virial is None else 1.0, dtype)
        virial = np.zeros((nframes, 3, 3), dtype) if virial is None else np.asarray(virial, dtype)
        types = np.tile(np.asarray(system.atom_types, np.int32), (nframes, 1))
        x = {"coord": coord, "box": box, "atom_types": types}
        if neighbors is not None:
            lists = []
            for frame in range(nframes):
                try:
                    lists.append(neighbor_list_numpy(
                        coord[frame], None if system.box is None else box[frame], types[0],
                        rcut=rcut, sel=sel))
                except ValueError as err:
                    raise ValueError(f"system {number}, frame {frame}: {err}") from err
            x["index"] = np.stack([index for index, _ in lists]).astype(np.int32)
            x["image"] = np.stack([image for _, image in lists]).astype(dtype)
        y = {"energy": np.asarray(system.energy, dtype),
             "force": np.asarray(system.force, dtype).reshape(nframes, natoms, 3),
             "virial": virial, "find_virial": find_virial}
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(nframes, seed=seed + number, reshuffle_each_iteration=True)
        # Training (repeat): full batches only, so that every replica gets frames; a system
        # with fewer frames than `batch_size` gives one batch of all its frames.
        ds = ds.batch(min(batch_size, nframes), drop_remainder=repeat)
        if repeat:
            ds = ds.repeat()
        datasets.append(ds)
        weights.append(float(nframes))
    if len(datasets) == 1:
        ds = datasets[0]
    elif shuffle or repeat:
        ds = tf.data.Dataset.sample_from_datasets(
            datasets, weights=[w / sum(weights) for w in weights], seed=seed,
            stop_on_empty_dataset=False)
    else:
        ds = datasets[0]
        for other in datasets[1:]:
            ds = ds.concatenate(other)
    return ds.prefetch(2)
