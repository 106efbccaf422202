r"""Base class of discrete-time stochastic control problems (Han and E, 2016).

A problem declares, the way the maths reads, the dynamics and the cost

$$ s_{t+1} = F_t(s_t, a_t, \xi_{t+1}), \quad t = 0, \dots, T - 1, \qquad
   J = E\Big[\sum_{t=0}^{T-1} c_t(s_t, a_t) + c_T(s_T)\Big], $$

through `step` (F, usually $s + b_t(s, a) + \xi$), `running_cost` (c_t), `terminal_cost`
(c_T), the initial law (`sample_initial`) and the noise (`sample_noise`). Controls are feedback
controls $a_t = A_t(s_t)$; `control_map(t, s, raw)` turns the raw output of a policy network
into a feasible control (see `mlcmk.problems.control.constraints`). Rewards are negative costs.
"""

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk.problems.base import Problem
from mlcmk.problems.control.constraints import get_constraint


class ControlProblem(Problem):
    """A discrete-time stochastic control problem (see the module docstring).

    Subclasses set `state_dim`, `control_dim`, `noise_dim`, `num_steps` in `__init__` and
    implement `step`, `running_cost`, `terminal_cost`, `sample_initial`; they override
    `control_map` for state-dependent constraints, `normalize_state` to give the policy inputs
    of order one, and `reference_cost` / `optimal_control` where an exact answer is known.

    Tensors are Keras/TensorFlow tensors of shape (batch, ...); `t` is a Python int.
    """

    state_dim = None
    control_dim = None
    noise_dim = None
    num_steps = None

    # --- the problem --------------------------------------------------------------------------
    def step(self, t, s, a, xi):
        """The next state s_{t+1} from s_t (B, n), a_t (B, m) and the noise xi_{t+1} (B, k)."""
        raise NotImplementedError(f"{type(self).__name__} must define step(t, s, a, xi)")

    def running_cost(self, t, s, a):
        """c_t(s, a), shape (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must define running_cost(t, s, a)")

    def terminal_cost(self, s):
        """c_T(s), shape (B,); zero unless overridden."""
        return ops.zeros_like(s[:, 0])

    def constraint_penalty(self, t, s, a):
        """Penalty (B,) for constraints no map covers; None (the default) when there are none."""
        return None

    def control_constraint(self):
        """The state-independent constraint applied by the default `control_map`."""
        return get_constraint(None, self.control_dim)

    @property
    def raw_control_dim(self):
        """Width of the raw policy output that `control_map` consumes."""
        return self.control_constraint().raw_dim

    def control_map(self, t, s, raw):
        """Feasible control from the raw policy output (B, raw_control_dim)."""
        return self.control_constraint().apply(raw)

    def constraint_violation(self, t, s, a):
        """Largest violation (NumPy float) of the constraints by controls a at states s."""
        return self.control_constraint().violation(np.asarray(a))

    def normalize_state(self, t, s):
        """The policy's input for state s at step t; the identity unless overridden."""
        return s

    def reference_cost(self):
        """The optimal expected cost with its source, or None where none is known."""
        return None

    def optimal_control(self, t, s):
        """The optimal feedback control (NumPy in, NumPy out), or None where none is known."""
        return None

    # --- sampling -----------------------------------------------------------------------------
    def sample_initial(self, num_paths, seed, dtype="float32"):
        """Initial states (num_paths, state_dim) from stateless random numbers."""
        raise NotImplementedError(f"{type(self).__name__} must define sample_initial")

    def sample_noise(self, num_paths, seed, dtype="float32"):
        """Noise (num_paths, num_steps, noise_dim); standard normal unless overridden."""
        return tf.cast(tf.random.stateless_normal(
            (num_paths, self.num_steps, self.noise_dim), seed, dtype="float32", alg="philox"),
            dtype)

    def sample(self, num_paths, seed, dtype="float32"):
        """`(s0, noise)` from one stateless seed (shape (2,) ints); equal seeds, equal samples."""
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        seed_s0, seed_xi = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return (self.sample_initial(num_paths, seed_s0, dtype),
                self.sample_noise(num_paths, seed_xi, dtype))

    def check_sample(self, s0, noise):
        """Raises ValueError unless s0 is (B, state_dim) and noise (B, num_steps, noise_dim)."""
        s_shape, n_shape = tuple(s0.shape), tuple(noise.shape)
        if (len(s_shape) != 2 or s_shape[1] != self.state_dim or len(n_shape) != 3
                or n_shape[1:] != (self.num_steps, self.noise_dim)):
            raise ValueError(
                f"{self.name} expects initial states of shape (batch, state_dim={self.state_dim})"
                f" and noise of shape (batch, num_steps={self.num_steps}, "
                f"noise_dim={self.noise_dim}); received shapes {s_shape} and {n_shape}")

    # --- evaluation ---------------------------------------------------------------------------
    def rollout(self, control_fn, s0, noise, penalty_weight=0.0, return_paths=False):
        """Simulates the controlled dynamics and returns the cost of each path.

        Args:
            control_fn: callable `(t, s) -> a` (tensors).
            s0: (B, state_dim); noise: (B, num_steps, noise_dim).
            penalty_weight: weight of `constraint_penalty` in the cost.
            return_paths: also return the states (B, T + 1, n) and controls (B, T, m).

        Returns:
            Costs (B,), or `(costs, states, controls)`.
        """
        s = s0
        cost = ops.zeros_like(s0[:, 0])
        states, controls = [s], []
        for t in range(self.num_steps):
            a = control_fn(t, s)
            cost = cost + self.running_cost(t, s, a)
            if penalty_weight:
                penalty = self.constraint_penalty(t, s, a)
                if penalty is not None:
                    cost = cost + penalty_weight * penalty
            s = self.step(t, s, a, noise[:, t])
            if return_paths:
                states.append(s)
                controls.append(a)
        cost = cost + self.terminal_cost(s)
        if return_paths:
            return cost, ops.stack(states, axis=1), ops.stack(controls, axis=1)
        return cost

    def evaluate_policy(self, control_fn, num_paths=1024, seed=(12345, 0), dtype="float64"):
        """Mean cost and its standard error of a policy on `num_paths` fresh paths (NumPy)."""
        s0, noise = self.sample(num_paths, seed, dtype)
        costs = np.asarray(self.rollout(control_fn, s0, noise), dtype="float64")
        return float(costs.mean()), float(costs.std() / np.sqrt(len(costs)))
