r"""Training of mean-field networks as particle discretisations of a Wasserstein gradient flow."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int
from mlcmk.models.scaled_resnet import ScaledResNet
from mlcmk.models.two_layer_network import TwoLayerNetwork


@keras.saving.register_keras_serializable(package="mlcmk")
class ParticleWassersteinFlow(keras.Model):
    r"""Trains a mean-field network as the particle discretisation of a Wasserstein gradient flow.

    A mean-field `TwoLayerNetwork` $f(x) = \frac1m\sum_j a_j\sigma(w_j\cdot x + b_j)$ is the
    integral of $a\,\sigma(w\cdot x + b)$ against the empirical measure
    $\rho = \frac1m\sum_j\delta_{u_j}$ of its particles $u_j = (a_j, w_j, b_j)$. The Wasserstein
    gradient flow of a risk $I(\rho)$ moves each particle along
    $\dot u_j = -\nabla_u \frac{\delta I}{\delta\rho}(u_j) = -m\,\nabla_{u_j} I$, so one step of
    size `time_step` = $\eta$ is plain gradient descent with learning rate $\eta m$ on the raw
    parameters. Time is then measured in units in which runs at different widths follow the
    same limiting flow, and `flow_time = iterations * time_step` is comparable across widths.

    With `weight_decay` $=\lambda$ and `temperature` $=\tau$ it is the mean-field Langevin dynamics
    of $I(\rho) + \frac\lambda2\int|u|^2d\rho + \tau\int\rho\log\rho$:
    $u_j \leftarrow u_j - \eta\,(m\nabla_{u_j}I + \lambda u_j) + \sqrt{2\eta\tau}\,\xi_j$,
    $\xi_j\sim N(0, I)$ from stateless random numbers seeded by (`seed`, variable, iteration).
    The noise is identical on every replica (the particles are shared), and the update goes
    through `keras.optimizers.SGD(time_step)`, which `compile` sets.

    For a mean-field `ScaledResNet` the particles are the neurons of the blocks, each of mass
    `1/(L M)`; their gradients are multiplied by `L M`. The lift and readout are ordinary
    parameters and follow the Euclidean gradient flow (factor 1).

    Args:
        network: a `TwoLayerNetwork` or `ScaledResNet` with `scaling="mean_field"`.
        time_step: float `eta > 0`, flow time per step.
        weight_decay: float `lambda >= 0`.
        temperature: float `tau >= 0`; 0 means deterministic (no noise).
        seed: int >= 0, seed of the noise.
        **kwargs: base `keras.Model` arguments.

    Example:
    ```python
    flow = ParticleWassersteinFlow(TwoLayerNetwork(1000), time_step=0.05)
    flow.compile(loss="mse")
    recorder = ParticleRecorder(every=10)
    flow.fit(x, y, batch_size=len(x), epochs=200, callbacks=[recorder])
    ```
    Reference: Mei, Montanari, Nguyen, PNAS (2018); Chizat, Bach, NeurIPS (2018);
    E, Ma, Wu, "Machine learning from a continuous viewpoint" (2020), section 4.
    """

    def __init__(self, network, time_step=0.1, weight_decay=0.0, temperature=0.0, seed=0,
                 **kwargs):
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if not isinstance(network, (TwoLayerNetwork, ScaledResNet)):
            raise TypeError(
                "`network` must be a TwoLayerNetwork or a ScaledResNet; "
                f"received {type(network).__name__}"
            )
        if network.scaling != "mean_field":
            raise ValueError(
                "`network` must use scaling='mean_field' for the particle flow; "
                f"received scaling={network.scaling!r}"
            )
        check_number("time_step", time_step, 0, strict=True)
        check_number("weight_decay", weight_decay, 0)
        check_number("temperature", temperature, 0)
        check_positive_int("seed", seed, 0)
        kwargs.setdefault("dtype", network.dtype_policy)
        super().__init__(**kwargs)
        # === Layers ===
        self.network = network
        # === Config ===
        self.time_step = float(time_step)
        self.weight_decay = float(weight_decay)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape):
        if not self.network.built:
            self.network.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.network(inputs)

    def fit(self, x=None, y=None, **kwargs):
        # Built before the callbacks start, so that `ParticleRecorder` sees the initial particles.
        if not self.network.built and hasattr(x, "shape"):
            self.build((None, *x.shape[1:]))
        return super().fit(x, y, **kwargs)

    def compile(self, optimizer="auto", loss="mse", **kwargs):
        """Compiles with `SGD(time_step)`; `optimizer` must stay `"auto"` (the flow fixes it)."""
        if optimizer != "auto":
            raise ValueError(
                "ParticleWassersteinFlow sets its own optimizer, SGD(learning_rate=time_step); "
                f"received optimizer={optimizer!r}. Change `time_step` instead."
            )
        self._flow_loss = loss
        super().compile(optimizer=keras.optimizers.SGD(self.time_step), loss=loss, **kwargs)

    def get_compile_config(self):
        loss = getattr(self, "_flow_loss", "mse")
        if not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(loss)
        return {"loss": loss}

    def compile_from_config(self, config):
        loss = config.get("loss", "mse")
        self.compile(loss=loss if isinstance(loss, str) else
                     keras.saving.deserialize_keras_object(loss))

    @property
    def metrics(self):
        return [self.loss_tracker]

    @property
    def flow_time(self):
        """Flow time reached: `optimizer.iterations * time_step`."""
        return int(self.optimizer.iterations.numpy()) * self.time_step

    def particle_scales(self):
        """The gradient multipliers (inverse particle masses), one per trainable variable."""
        if not self.network.built:
            raise ValueError("build the network before asking for its particle scales")
        net = self.network
        if isinstance(net, TwoLayerNetwork):
            return [1.0 / net.readout._factor for _ in net.trainable_variables]
        particle_vars = {id(v): 1.0 / b._factor for b in net.blocks for v in b.trainable_variables}
        return [particle_vars.get(id(v), 1.0) for v in net.trainable_variables]

    def particles(self):
        """The particles as NumPy arrays.

        Returns:
            For a `TwoLayerNetwork`: `{"a": (m, out), "w": (m, d), "b": (m,)}`; for a
            `ScaledResNet`: `{"a": (L, M, D), "w": (L, M, D), "b": (L, M)}`.
        """
        net = self.network
        if isinstance(net, TwoLayerNetwork):
            return {"a": np.array(net.readout.kernel), "w": np.array(net.hidden.kernel).T,
                    "b": np.array(net.hidden.bias)}
        return {"a": np.stack([np.array(b.outer_kernel) for b in net.blocks]),
                "w": np.stack([np.array(b.inner_kernel).T for b in net.blocks]),
                "b": np.stack([np.array(b.bias) for b in net.blocks])}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        ctx = tf.distribute.get_replica_context()
        replicas = 1 if ctx is None else ctx.num_replicas_in_sync
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            y_pred = self.network(x, training=True)
            # compute_loss already divides by the number of replicas (Keras 3 convention).
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
        grads = tape.gradient(loss, variables)
        step = ops.cast(self.optimizer.iterations, "int32")
        noise_scale = math.sqrt(2.0 * self.temperature / self.time_step)
        updates = []
        for index, (g, v, scale) in enumerate(
                zip(grads, variables, self.particle_scales(), strict=True)):
            g = g * scale
            extra = None
            if self.weight_decay:
                extra = self.weight_decay * v
            if self.temperature:
                seed = ops.stack([ops.cast(self.seed * 1009 + index, "int32"), step])
                xi = tf.random.stateless_normal(tuple(v.shape), seed, dtype=v.dtype)
                # SGD(eta) turns -sqrt(2 tau / eta) xi into +sqrt(2 eta tau) xi.
                extra = -noise_scale * xi if extra is None else extra - noise_scale * xi
            if extra is not None:
                # The replicas' gradients are summed: each carries its share.
                g = g + extra / replicas
            updates.append(g)
        self.optimizer.apply(updates, variables)
        self.loss_tracker.update_state(loss * replicas)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        ctx = tf.distribute.get_replica_context()
        replicas = 1 if ctx is None else ctx.num_replicas_in_sync
        loss = self.compute_loss(x=x, y=y, y_pred=self.network(x), sample_weight=sample_weight,
                                 training=False)
        self.loss_tracker.update_state(loss * replicas)
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "time_step": self.time_step,
            "weight_decay": self.weight_decay,
            "temperature": self.temperature,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


class ParticleRecorder(keras.callbacks.Callback):
    """Records the particles of a `ParticleWassersteinFlow` at the start and every `every` epochs.

    After training, `times` is the list of flow times and `snapshots` the list of
    `ParticleWassersteinFlow.particles()` dicts; `save(path)` writes them to an `.npz` file
    (`time`, and `a`, `w`, `b` stacked over time).

    Args:
        every: positive int, epochs between snapshots.
        max_particles: optional int, keep only the first this many particles (smaller files).
    """

    def __init__(self, every=1, max_particles=None):
        super().__init__()
        self.every = check_positive_int("every", every)
        self.max_particles = max_particles
        self.times = []
        self.snapshots = []

    def _record(self):
        particles = self.model.particles()
        if self.max_particles is not None:
            if particles["b"].ndim == 1:
                particles = {k: v[: self.max_particles] for k, v in particles.items()}
            else:
                particles = {k: v[:, : self.max_particles] for k, v in particles.items()}
        self.times.append(self.model.flow_time)
        self.snapshots.append(particles)

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, ParticleWassersteinFlow):
            raise TypeError("ParticleRecorder needs a ParticleWassersteinFlow model; "
                            f"received {type(self.model).__name__}")
        if not self.times:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self._record()

    def save(self, path):
        """Writes `time`, `a`, `w`, `b` (stacked over snapshots) to the `.npz` file `path`."""
        arrays = {k: np.stack([s[k] for s in self.snapshots]) for k in ("a", "w", "b")}
        np.savez(path, time=np.asarray(self.times), **arrays)
