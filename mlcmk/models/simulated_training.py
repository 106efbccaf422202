"""`SimulatedTrainingModel`: the training machinery of models that learn from simulated paths."""

import keras
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_positive_int


class SimulatedTrainingModel(keras.Model):
    """Base of the models whose data are Monte Carlo paths drawn inside `train_step`.

    `DeepBSDE` and `ControlPolicyStack` share it: no data set is passed to `fit`; each training
    step draws `batch_size / replicas` fresh paths on every replica from stateless random numbers
    seeded by (`seed`, replica id, optimizer iteration) — distinct across replicas and steps,
    identical when a run is repeated or resumed — and `test_step` evaluates a fixed validation
    sample. A hand-made loss is divided by the number of replicas before the gradient; a
    non-finite loss skips the update.

    Subclasses set `self.batch_size`, `self.seed` and `self.loss_tracker` (a `keras.metrics.Mean`)
    and implement:
    - `draw_sample(num_paths, seed)`: a tuple of tensors, `seed` a stateless seed pair;
    - `sample_loss(sample, training)`: the scalar loss of a drawn sample;
    - `validation_loss()`: the scalar loss of the fixed validation sample.
    """

    # --- training -----------------------------------------------------------------------------
    def compile(self, optimizer="auto", **kwargs):
        """`optimizer="auto"`: Adam with a piecewise-constant learning-rate decay; XLA and ten
        steps per execution unless given.

        Its schedule (1e-3, then 1e-4 after 60% and 1e-5 after 85% of `decay_steps`) uses
        `kwargs.pop("decay_steps", 4000)`.
        """
        decay_steps = int(kwargs.pop("decay_steps", 4000))
        if optimizer == "auto":
            schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
                [int(0.6 * decay_steps), int(0.85 * decay_steps)], [1e-3, 1e-4, 1e-5])
            optimizer = keras.optimizers.Adam(schedule)
        if kwargs.get("jit_compile", "auto") == "auto":
            # Keras' "auto" turns XLA off on CPU-only machines, where it still saves ~10% per
            # step here; it stays off under a multi-replica strategy.
            kwargs["jit_compile"] = self.distribute_strategy.num_replicas_in_sync == 1
        # Ten steps per call into the compiled function: less Python per step (per-batch
        # callbacks then see every tenth step).
        kwargs.setdefault("steps_per_execution", 10)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips models with a custom `compile` when loading a `.keras` file; the stored
        # config holds the resolved optimizer and flags, so replaying it restores the compiled
        # state, and training resumes with the saved optimizer variables.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _replica_info(self):
        ctx = tf.distribute.get_replica_context()
        if ctx is None:
            return 0, 1
        return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync

    def replica_sample(self):
        """Fresh training sample for this replica and step (`batch_size / replicas` paths)."""
        replica, num_replicas = self._replica_info()
        if self.batch_size % num_replicas:
            raise ValueError(f"`batch_size`={self.batch_size} must be divisible by the number "
                             f"of replicas ({num_replicas})")
        step = ops.cast(self.optimizer.iterations, "int32")
        seed = ops.stack([ops.cast(self.seed * 4099 + replica, "int32"), step])
        return self.draw_sample(self.batch_size // num_replicas, seed)

    def train_step(self, data):
        _, num_replicas = self._replica_info()
        sample = self.replica_sample()
        with tf.GradientTape() as tape:
            loss = self.sample_loss(sample, training=True)
            scaled = loss / num_replicas
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        # A non-finite loss must not reach the weights: the update is skipped for it.
        finite = ops.all(ops.isfinite(loss))
        grads = [None if g is None else ops.where(finite, g, ops.zeros_like(g)) for g in grads]
        self.optimizer.apply(grads, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self.validation_loss())
        return {"loss": self.loss_tracker.result()}

    def _dummy_data(self, count):
        """`count` placeholder batches, one row per replica (the paths are drawn in the step).

        Finite on purpose: the compiled function runs up to `steps_per_execution` steps per
        call and stops early only when the data run out, so an endless placeholder would make
        an epoch of 25 steps train 30, and one validation step evaluate 10 times. tf.data's
        autotuning is off: there is nothing to tune, and with it on, the first step of a `fit`
        that follows a pause of a few seconds took 1.4-1.9 s longer (d = 100 HJB).
        """
        replicas = self.distribute_strategy.num_replicas_in_sync
        options = tf.data.Options()
        options.autotune.enabled = False
        return (tf.data.Dataset.from_tensors(tf.zeros((replicas, 1))).repeat(count)
                .with_options(options))

    def fit(self, x=None, y=None, *, epochs=1, steps_per_epoch=100, validation=True, **kwargs):
        """Trains on fresh paths: `epochs * steps_per_epoch` steps of `batch_size` paths.

        Args:
            epochs: number of epochs; each ends with the validation loss (`val_loss`).
            steps_per_epoch: training steps per epoch.
            validation: evaluate the fixed validation sample after each epoch.
            **kwargs: passed to `keras.Model.fit` (callbacks, verbose, initial_epoch, ...).
        """
        if x is not None or y is not None:
            raise ValueError(f"{type(self).__name__} draws its own paths: call fit() without "
                             "x and y")
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
        if validation:
            kwargs.setdefault("validation_steps", 1)
            kwargs.setdefault("validation_data", self._dummy_data(kwargs["validation_steps"]))
        kwargs.setdefault("shuffle", False)
        return super().fit(self._dummy_data(steps_per_epoch), epochs=epochs,
                           steps_per_epoch=steps_per_epoch, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """Loss on the fixed validation sample."""
        kwargs.setdefault("steps", 1)
        return super().evaluate(self._dummy_data(kwargs["steps"]), **kwargs)
