r"""Free energy of collective variables, learned from mean forces."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_positive_ints

CV_KINDS = ("linear", "angle")


def normalize_collective_variables(collective_variables):
    """Returns a list of `{"name", "kind", "period"}` dicts from a CV spec.

    Each entry is a kind string (`"linear"` or `"angle"`) or a dict with `"kind"` and optional
    `"name"` and `"period"` (default 2 pi for angles).
    """
    if isinstance(collective_variables, (str, dict)) or not hasattr(collective_variables,
                                                                    "__iter__"):
        raise TypeError("`collective_variables` must be a list of kind strings or dicts; "
                        f"received {collective_variables!r}")
    specs = []
    for i, cv in enumerate(collective_variables):
        if isinstance(cv, str):
            cv = {"kind": cv}
        if not isinstance(cv, dict) or "kind" not in cv:
            raise TypeError(f"`collective_variables[{i}]` must be a kind string or a dict with "
                            f"a 'kind' key; received {cv!r}")
        unknown = set(cv) - {"name", "kind", "period"}
        if unknown:
            raise ValueError(f"`collective_variables[{i}]` has unknown keys {sorted(unknown)}; "
                             "expected 'name', 'kind', 'period'")
        kind = cv["kind"]
        if kind not in CV_KINDS:
            raise ValueError(f"Unknown kind of collective variable {kind!r} in "
                             f"`collective_variables[{i}]`; expected one of {CV_KINDS}")
        period = cv.get("period")
        if kind == "angle":
            period = 2 * math.pi if period is None else float(period)
            if not period > 0:
                raise ValueError(f"`collective_variables[{i}]['period']` must be > 0; "
                                 f"received {period!r}")
        elif period is not None:
            raise ValueError(f"`collective_variables[{i}]` is linear and takes no period; "
                             f"received period={period!r}")
        specs.append({"name": str(cv.get("name", f"s{i}")), "kind": kind, "period": period})
    if not specs:
        raise ValueError("`collective_variables` must hold at least one collective variable")
    return specs


@keras.saving.register_keras_serializable(package="mlcmk")
class FreeEnergyModel(keras.Model):
    r"""A network $A(s)$ of collective variables s, trained by matching mean forces $-\nabla_s A$.

    Inputs are featurised per collective variable: an angle of period L enters as
    $(\cos 2\pi s/L, \sin 2\pi s/L)$, so that A is exactly periodic; a linear CV as
    $(s - c)/w$ with the given centre and width. The features go through a tanh MLP to a scalar.
    `call(s)` returns A of shape `(n, 1)`; `mean_force(s)` returns $-\nabla_s A$, `(n, d)`.

    Training data are `(s, f)` pairs with f a mean force (e.g. from restrained MD) and an
    optional sample weight (e.g. the inverse variance of the label). The loss is
    $\langle w\,|{-\nabla_s A(s)} - f|^2 \rangle$, computed in `train_step` with a nested
    GradientTape; `fit`, callbacks and `tf.distribute` work unchanged.

    Args:
        collective_variables: list of `"linear"` / `"angle"` or dicts `{"name", "kind",
            "period"}` (see `normalize_collective_variables`).
        hidden_units: widths of the hidden layers.
        activation: hidden activation (smooth, since its gradient is the model's force).
        center: per-CV centre of linear CVs (ignored for angles); default 0.
        scale: per-CV width of linear CVs; default 1.
        seed: int, seeds the weight initialisers.

    Input shape: `(n, d)`. Output shape: `(n, 1)`.
    Reference: L. Zhang, H. Wang, W. E, "Reinforced dynamics for enhanced sampling in large
    atomic and molecular systems", J. Chem. Phys. 148, 124113 (2018).
    """

    def __init__(self, collective_variables=("linear", "linear"), hidden_units=(64, 64, 64),
                 activation="tanh", center=None, scale=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        cvs = normalize_collective_variables(collective_variables)
        d = len(cvs)
        units = tuple(check_positive_ints("hidden_units", hidden_units, allow_empty=True))
        center = np.zeros(d) if center is None else np.asarray(center, dtype=np.float64)
        scale = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
        for name, value in (("center", center), ("scale", scale)):
            if value.shape != (d,):
                raise ValueError(f"`{name}` must have one entry per collective variable ({d}); "
                                 f"received {name}={value.tolist()!r}")
        if np.any(scale <= 0):
            raise ValueError(f"`scale` must be > 0; received scale={scale.tolist()!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an int; received seed={seed!r}")

        # === Config ===
        self.collective_variables = cvs
        self.num_cvs = d
        self.hidden_units = tuple(int(u) for u in units)
        self.activation = activation
        self.center = center
        self.scale = scale
        self.seed = int(seed)
        self._periodic = np.array([cv["kind"] == "angle" for cv in cvs])
        self._frequency = np.array([2 * math.pi / cv["period"] if cv["period"] else 0.0
                                    for cv in cvs])

        # === Layers ===
        self.hidden_layers = [
            keras.layers.Dense(u, activation=activation, dtype=self.dtype_policy,
                               kernel_initializer=keras.initializers.GlorotUniform(
                                   seed=self.seed * 1000 + i),
                               name=f"dense_{i}")
            for i, u in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(
            1, use_bias=False, dtype=self.dtype_policy, name="free_energy",
            kernel_initializer=keras.initializers.GlorotUniform(seed=self.seed * 1000 + 999))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # The input width is known from the CVs: build now, so that weights can be loaded
        # (e.g. by an ensemble resuming a run) before the first call.
        self.build((None, d))

    @property
    def num_features(self):
        return int(np.sum(np.where(self._periodic, 2, 1)))

    def build(self, input_shape=None):
        if self.built:
            return
        width = self.num_features
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        self.built = True

    def features(self, s):
        """Periodic features for angles, centred and scaled values for linear CVs."""
        s = ops.cast(s, self.compute_dtype)
        columns = []
        for i, cv in enumerate(self.collective_variables):
            si = s[:, i:i + 1]
            if cv["kind"] == "angle":
                columns += [ops.cos(self._frequency[i] * si), ops.sin(self._frequency[i] * si)]
            else:
                columns.append((si - self.center[i]) / self.scale[i])
        return ops.concatenate(columns, axis=-1)

    def call(self, inputs):
        h = self.features(inputs)
        for layer in self.hidden_layers:
            h = layer(h)
        return self.output_layer(h)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def free_energy(self, s):
        """A(s) of shape `(n,)`."""
        return ops.reshape(self(s), (-1,))

    def mean_force(self, s):
        r"""$-\nabla_s A(s)$ of shape `(n, d)`."""
        s = tf.convert_to_tensor(s, dtype=self.compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(s)
            a = self(s)
        return -tape.gradient(a, s)

    # ------------------------------------------------------------------ training
    @property
    def metrics(self):
        return [self.loss_tracker]

    def compile(self, optimizer="auto", **kwargs):
        """`optimizer="auto"`: Adam with learning rate 1e-3."""
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Restores the compiled state of a `.keras` file (Keras skips it for a custom compile).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _force_loss(self, data, training):
        s, f, weight = keras.utils.unpack_x_y_sample_weight(data)
        s = tf.convert_to_tensor(s, dtype=self.compute_dtype)
        f = tf.cast(f, self.compute_dtype)
        with tf.GradientTape() as inner:
            inner.watch(s)
            a = self(s, training=training)
        residual = ops.sum((-inner.gradient(a, s) - f) ** 2, axis=-1)
        if weight is None:
            return ops.mean(residual)
        weight = ops.reshape(ops.cast(weight, self.compute_dtype), (-1,))
        return ops.sum(weight * residual) / ops.sum(weight)

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self._force_loss(data, training=True)
            scaled = loss / replicas
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self._force_loss(data, training=False))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        return {**super().get_config(),
                "collective_variables": [dict(cv) for cv in self.collective_variables],
                "hidden_units": list(self.hidden_units), "activation": self.activation,
                "center": self.center.tolist(), "scale": self.scale.tolist(),
                "seed": self.seed}
