r"""Deep learning of feedback controls for stochastic control problems (Han and E, 2016)."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int, check_positive_ints
from mlcmk.models.simulated_training import SimulatedTrainingModel
from mlcmk.problems.bsde.base import deserialize_problem, serialize_problem
from mlcmk.problems.control.base import ControlProblem

POLICY_NETWORKS = ("per_step", "shared")


def _uniform(limit, seed):
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


@keras.saving.register_keras_serializable(package="mlcmk")
class PolicySubnetworks(keras.layers.Layer):
    """T feedback networks $A_t(s)$ with weights stacked on a leading time axis.

    With `shared=False` step t uses slice t of every weight (one subnetwork per step, all held
    in one tensor, so that a step's network is a gather, also for a tensor t); with
    `shared=True` one network takes `t / T` as an extra input. A linear path
    `s W_t + b_t` (zero at the start) is added to the networks' output when `linear_skip`.

    Args:
        num_steps: T.
        output_dim: width of the output.
        hidden_units: widths of the hidden layers (empty: the linear policy only).
        activation: hidden activation.
        shared: one network with t as input instead of T networks.
        linear_skip: add the linear path.
        seed: int, seeds the initial weights.

    Call arguments: `s` of shape (B, n); `t`: a Python int, a scalar int tensor or (B,) ints.
    Output shape: (B, output_dim).
    """

    def __init__(self, num_steps, output_dim, hidden_units=(), activation="relu", shared=False,
                 linear_skip=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_steps = int(num_steps)
        self.output_dim = int(output_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self._activation = keras.activations.get(activation)
        self.shared = bool(shared)
        self.linear_skip = bool(linear_skip) or not self.hidden_units
        self.seed = int(seed)

    def build(self, input_shape):
        stacks = 1 if self.shared else self.num_steps
        width = input_shape[-1] + (1 if self.shared else 0)
        self.kernels, self.biases = [], []
        fan_in = width
        for i, units in enumerate(self.hidden_units):
            limit = math.sqrt(6.0 / (fan_in + units))
            self.kernels.append(self.add_weight(
                name=f"kernel_{i}", shape=(stacks, fan_in, units),
                initializer=_uniform(limit, self.seed * 7919 + i)))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(stacks, units),
                                               initializer="zeros"))
            fan_in = units
        # Output layers start at zero: the policy starts from the control of raw output 0.
        self.out_kernel = None
        if self.hidden_units:
            self.out_kernel = self.add_weight(name="out_kernel",
                                              shape=(stacks, fan_in, self.output_dim),
                                              initializer="zeros")
        self.skip_kernel = None
        if self.linear_skip:
            self.skip_kernel = self.add_weight(name="skip_kernel",
                                               shape=(stacks, width, self.output_dim),
                                               initializer="zeros")
        self.out_bias = self.add_weight(name="out_bias", shape=(stacks, self.output_dim),
                                        initializer="zeros")

    def _dense(self, h, kernel, bias, index):
        if index is None:  # shared: slice 0
            out = ops.matmul(h, kernel[0])
            return out if bias is None else out + bias[0]
        if isinstance(index, int):
            out = ops.matmul(h, kernel[index])
            return out if bias is None else out + bias[index]
        if len(index.shape) == 0:
            out = ops.matmul(h, ops.take(kernel, index, axis=0))
            return out if bias is None else out + ops.take(bias, index, axis=0)
        out = ops.einsum("bi,bio->bo", h, ops.take(kernel, index, axis=0))
        return out if bias is None else out + ops.take(bias, index, axis=0)

    def call(self, s, t=0):
        if self.shared:
            index = None
            tt = ops.cast(t, s.dtype) / self.num_steps
            tt = ops.broadcast_to(ops.reshape(tt, (-1, 1)), (ops.shape(s)[0], 1))
            x = ops.concatenate([s, tt], axis=-1)
        else:
            index = t if isinstance(t, int) else ops.clip(ops.cast(t, "int32"), 0,
                                                          self.num_steps - 1)
            x = s
        h = x
        for kernel, bias in zip(self.kernels, self.biases, strict=True):
            h = self._activation(self._dense(h, kernel, bias, index))
        out = self._dense(h, self.out_kernel, self.out_bias, index) if self.hidden_units \
            else None
        if self.linear_skip:
            skip = self._dense(x, self.skip_kernel, None if out is not None else self.out_bias,
                               index)
            out = skip if out is None else out + skip
        return out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps,
                "output_dim": self.output_dim, "hidden_units": list(self.hidden_units),
                "activation": self.activation, "shared": self.shared,
                "linear_skip": self.linear_skip, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mlcmk")
class ControlPolicyStack(SimulatedTrainingModel):
    r"""Feedback controls $a_t = A_t(s_t)$ of a stochastic control problem, trained end to end.

    The dynamics $s_{t+1} = F_t(s_t, a_t, \xi_{t+1})$ of `problem` are simulated inside the
    graph with the controls of the policy networks, and the sample mean of the cost
    $\sum_t c_t(s_t, a_t) + c_T(s_T)$ is the loss: the dynamics play the role of a residual
    network, the noise the role of data, and all T networks are trained together by SGD.
    Controls go through `problem.control_map`, so every control the policy emits satisfies
    the problem's constraints (bounds, simplex, linear inequalities), whatever the state.

    `policy_network="per_step"` (the original method) holds one subnetwork per step, stacked
    into one tensor per weight; `"shared"` uses one network with t as input. Both add a linear
    path `s W_t` so that linear feedback (LQ problems) is represented exactly.

    Training draws `batch_size` fresh paths per step from stateless random numbers seeded by
    (`seed`, replica, iteration): distinct on every replica, reproducible, and continued
    correctly after a restart. `test_step` evaluates a fixed sample of `validation_size` paths
    (`val_loss` is the mean cost there). Call `fit(epochs=..., steps_per_epoch=...)` without
    data.

    Args:
        problem: a `ControlProblem`, a registered name or a spec dict.
        policy_network: `"per_step"` or `"shared"`.
        hidden_units: widths of the hidden layers (default (n + 10, n + 10), n the state
            dimension, as in the paper; `()` gives a linear policy).
        activation: hidden activation.
        linear_skip: add the linear path.
        batch_size: global number of paths per training step.
        validation_size: number of paths of the fixed validation sample.
        penalty_weight: weight of `problem.constraint_penalty` in the loss (only for
            constraints that no map covers).
        seed: seeds the weights, the validation sample and the training noise.

    Example:
    ```python
    model = mlcmk.models.ControlPolicyStack("lq_regulator", hidden_units=())
    model.compile(optimizer="auto")
    model.fit(epochs=10, steps_per_epoch=100)
    model.evaluate(), model.problem.reference_cost()
    ```
    Reference: Jiequn Han, Weinan E, "Deep learning approximation for stochastic control
    problems", NIPS Deep Reinforcement Learning Workshop (2016), arXiv:1611.07422.
    """

    def __init__(self, problem, policy_network="per_step", hidden_units=None, activation="relu",
                 linear_skip=True, batch_size=64, validation_size=1024, penalty_weight=0.0,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        problem = deserialize_problem(problem)
        if not isinstance(problem, ControlProblem):
            raise TypeError(f"`problem` must be a ControlProblem; received "
                            f"{type(problem).__name__}")
        if policy_network not in POLICY_NETWORKS:
            raise ValueError(f"`policy_network` must be one of {POLICY_NETWORKS}; received "
                             f"policy_network={policy_network!r}")
        batch_size = check_positive_int("batch_size", batch_size)
        validation_size = check_positive_int("validation_size", validation_size)
        seed = check_positive_int("seed", seed, 0)
        n = problem.state_dim
        if hidden_units is None:
            hidden_units = (n + 10, n + 10)
        units = tuple(check_positive_ints("hidden_units", hidden_units, allow_empty=True))
        penalty_weight = check_number("penalty_weight", penalty_weight, 0)
        _check_dimensions(problem)

        # === Config ===
        self.problem = problem
        self.policy_network = policy_network
        self.hidden_units = tuple(int(u) for u in units)
        self.activation = activation
        self.linear_skip = bool(linear_skip)
        self.batch_size = int(batch_size)
        self.validation_size = int(validation_size)
        self.penalty_weight = float(penalty_weight)
        self.seed = int(seed)
        dtype = keras.config.floatx()
        val_s0, val_noise = problem.sample(self.validation_size, (self.seed, 2**30), dtype)
        self._val_s0, self._val_noise = np.asarray(val_s0), np.asarray(val_noise)

        # === Layers ===
        self.subnetworks = PolicySubnetworks(
            problem.num_steps, problem.raw_control_dim, self.hidden_units, activation,
            shared=policy_network == "shared", linear_skip=linear_skip, seed=self.seed,
            dtype=self.dtype_policy, name="subnetworks")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.build()

    def build(self, input_shape=None):
        self.subnetworks.build((None, self.problem.state_dim))
        self.built = True

    # --- the policy ---------------------------------------------------------------------------
    def _control(self, t, s):
        raw = self.subnetworks(self.problem.normalize_state(t, s), t=t)
        return self.problem.control_map(t, s, raw)

    def policy(self, t, s):
        """The learned feedback control a_t = A_t(s) for states s (B, state_dim).

        Args:
            t: step index 0..T-1: a Python int, a scalar int tensor or (B,) ints.
            s: states, shape (B, state_dim).
        """
        s = ops.convert_to_tensor(s, self.compute_dtype)
        if len(s.shape) != 2 or s.shape[-1] != self.problem.state_dim:
            raise ValueError(f"`s` must have shape (batch, state_dim={self.problem.state_dim}) "
                             f"for {self.problem.name}; received shape {tuple(s.shape)}")
        if isinstance(t, (int, np.integer)):
            if not 0 <= t < self.problem.num_steps:
                raise ValueError(f"`t` must be a step in [0, {self.problem.num_steps - 1}]; "
                                 f"received t={t}")
            t = int(t)
        else:
            t = ops.clip(ops.cast(t, "int32"), 0, self.problem.num_steps - 1)
        return self._control(t, s)

    def simulate(self, s0, noise, return_paths=False):
        """Runs the controlled dynamics from s0 (B, n) with noise (B, T, k).

        Returns:
            The cost of each path (B,), or `(costs, states (B, T+1, n), controls (B, T, m))`.
        """
        s0 = ops.convert_to_tensor(s0, self.compute_dtype)
        noise = ops.convert_to_tensor(noise, self.compute_dtype)
        self.problem.check_sample(s0, noise)
        return self.problem.rollout(self._control, s0, noise, self.penalty_weight,
                                    return_paths=return_paths)

    def call(self, inputs, training=False):
        """inputs: `(s0, noise)`; returns the cost of each path, shape (B,)."""
        s0, noise = inputs
        return self.simulate(s0, noise)

    # --- training (fresh noise each step: SimulatedTrainingModel) --------------------------
    def draw_sample(self, num_paths, seed):
        return self.problem.sample(num_paths, seed, dtype=self.compute_dtype)

    def sample_loss(self, sample, training=False):
        s0, noise = sample
        return ops.mean(self.problem.rollout(self._control, s0, noise, self.penalty_weight))

    def validation_loss(self):
        costs = self.problem.rollout(self._control, ops.cast(self._val_s0, self.compute_dtype),
                                     ops.cast(self._val_noise, self.compute_dtype),
                                     self.penalty_weight)
        return ops.mean(costs)

    def training_sample(self):
        """Fresh `(s0, noise)` for this replica and step (see `replica_sample`)."""
        return self.replica_sample()

    def validation_sample(self):
        """The fixed validation sample `(s0, noise)` as NumPy arrays."""
        return self._val_s0, self._val_noise

    def path_costs(self, s0, noise, batch=4096):
        """Costs (NumPy, float64) of the learned policy on given paths, in batches."""
        fn = tf.function(lambda a, b: self.simulate(a, b))
        out = []
        for i in range(0, len(s0), batch):
            out.append(np.asarray(fn(ops.convert_to_tensor(s0[i:i + batch], self.compute_dtype),
                                     ops.convert_to_tensor(noise[i:i + batch],
                                                           self.compute_dtype))))
        return np.concatenate(out).astype("float64")

    # --- serving ------------------------------------------------------------------------------
    def policy_model(self):
        """A `keras.Model` sharing the weights: input (B, 1 + n) = [t, s], output a_t(s)."""
        policy = ControlPolicy(self)
        # Keras exports only models that have been called once.
        policy(ops.zeros((1, 1 + self.problem.state_dim), self.compute_dtype))
        return policy

    def export_policy(self, path):
        """Exports a SavedModel with the endpoint `policy(t, s)` (t: int32 scalar).

        The SavedModel needs TensorFlow only: `tf.saved_model.load(path).policy(t, s)`.
        """
        archive = keras.export.ExportArchive()
        archive.track(self)
        archive.add_endpoint(
            "policy", lambda t, s: self.policy(t, s),
            input_signature=[tf.TensorSpec((), tf.int32),
                             tf.TensorSpec((None, self.problem.state_dim), self.compute_dtype)])
        archive.write_out(path, verbose=False)
        return path

    def get_config(self):
        return {**super().get_config(), "problem": serialize_problem(self.problem),
                "policy_network": self.policy_network, "hidden_units": list(self.hidden_units),
                "activation": self.activation, "linear_skip": self.linear_skip,
                "batch_size": self.batch_size, "validation_size": self.validation_size,
                "penalty_weight": self.penalty_weight, "seed": self.seed}


class ControlPolicy(keras.Model):
    """The policy of a `ControlPolicyStack` as a one-input model: [t, s] (B, 1 + n) -> a (B, m).

    Column 0 holds the step index t (rounded, clipped to 0..T-1); the weights are shared.
    """

    def __init__(self, stack, **kwargs):
        super().__init__(dtype=stack.dtype_policy, **kwargs)
        self.stack = stack

    def build(self, input_shape):
        # The weights belong to `stack`, already built.
        self.built = True

    def call(self, inputs):
        t = ops.cast(ops.round(inputs[:, 0]), "int32")
        return self.stack.policy(t, inputs[:, 1:])


def _check_dimensions(problem):
    """Runs control_map and step once on zeros; mismatched dimensions raise a ValueError."""
    dtype = "float64"
    n, m = problem.state_dim, problem.control_dim
    s = ops.zeros((2, n), dtype)
    raw = ops.zeros((2, problem.raw_control_dim), dtype)
    a = problem.control_map(0, s, raw)
    if tuple(a.shape) != (2, m):
        raise ValueError(f"{problem.name}: control_map returned controls of shape "
                         f"{tuple(a.shape)[1:]}, but control_dim={m}; the control dimension "
                         "must match")
    xi = ops.zeros((2, problem.noise_dim), dtype)
    try:
        s_next = problem.step(0, s, a, xi)
    except (ValueError, tf.errors.InvalidArgumentError) as err:
        raise ValueError(f"{problem.name}: step failed on states of dimension state_dim={n} and "
                         f"controls of dimension control_dim={m}; the dimensions must match "
                         f"the dynamics: {err}") from err
    if tuple(s_next.shape) != (2, n):
        raise ValueError(f"{problem.name}: step returned states of shape "
                         f"{tuple(s_next.shape)[1:]}, but state_dim={n}; the state dimension "
                         "must match")
    cost = problem.running_cost(0, s, a)
    if tuple(cost.shape) != (2,):
        raise ValueError(f"{problem.name}: running_cost must return shape (batch,); received "
                         f"{tuple(cost.shape)}")
