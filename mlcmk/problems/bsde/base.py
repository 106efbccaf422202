r"""Base class for the semilinear parabolic PDEs solved by the Deep BSDE method.

A problem declares, the way the maths reads,

$$ u_t + \tfrac12 \sigma\sigma^T : \nabla^2 u + \mu \cdot \nabla u
   + f(t, x, u, \sigma^T \nabla u) = 0, \qquad u(T, x) = g(x), $$

through `drift` (mu), `diffusion` (sigma), `generator` (f) and `terminal` (g). The forward process
`dX = mu dt + sigma dW`, `X_0 = x0` is simulated on the uniform grid `t_n = n T / N`, and along it
`Y_t = u(t, X_t)`, `Z_t = sigma^T grad u(t, X_t)` solve the backward SDE
`dY = -f(t, X, Y, Z) dt + Z . dW`.

`sigma` is diagonal: `diffusion(t, x)` returns a tensor that broadcasts against `x` (a scalar for
additive noise, `s * x` for geometric Brownian motion). That covers every equation in the library;
a full matrix would change `diffusion_apply` only.
"""

import math

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int, check_positive_number
from mlcmk.problems.base import Problem


@tf.function(jit_compile=True)
def _standard_normals(shape, seed):
    """Float32 standard normals of a static `shape` from a stateless `seed`, by ThreeFry.

    Compiled by XLA, where ThreeFry draws these about 1.9x as fast as Philox on CPU (1.3 against
    2.4 ms for the 128,000 normals of a d = 100, N = 20, batch-64 training step, a third of the
    step); TensorFlow's own kernel has no ThreeFry, hence XLA also when called eagerly.
    """
    return tf.random.stateless_normal(shape, seed, dtype="float32", alg="threefry")


class ReferenceValue(float):
    """A float that also says where it comes from and how precise it is."""

    def __new__(cls, value, stderr=0.0, source=""):
        obj = super().__new__(cls, value)
        obj.stderr = float(stderr)
        obj.source = source
        return obj

    def __repr__(self):
        err = f" ± {self.stderr:.2g}" if self.stderr else ""
        return f"ReferenceValue({float(self):.6g}{err}, source={self.source!r})"


class BSDEProblem(Problem):
    r"""A semilinear parabolic PDE with its forward-backward SDE (see the module docstring).

    Subclasses implement `generator(t, x, y, z)` and `terminal(x)`, and override `drift`,
    `diffusion` or `sample_step` where the forward process is not `X + sigma dW`.

    Args:
        dim: positive int, space dimension d.
        total_time: float > 0, terminal time T.
        num_steps: positive int, number N of time steps.
        x0: float or sequence of d floats, the starting point `x0` (a float is repeated).
        x0_spread: float >= 0. With a positive value the starting points are drawn uniformly
            from the box `x0 +- x0_spread`, and `DeepBSDE` learns `u(0, x)` on it (a network in
            place of the scalar `y0`).

    Example:
    ```python
    @register_problem("my_heat", kind="bsde")
    class MyHeat(BSDEProblem):
        # u_t + 1/2 Lap u = 0, u(T, x) = |x|^2  =>  u(t, x) = |x|^2 + d (T - t)
        def generator(self, t, x, y, z):
            return ops.zeros_like(y)

        def terminal(self, x):
            return ops.sum(x**2, axis=-1)
    ```
    """

    # True when g depends on x mainly through the largest or smallest coordinate (best-of /
    # worst-of payoffs): `DeepBSDE` then adds smooth max/min features by default (`extremes`).
    extremal_terminal = False

    def __init__(self, dim, total_time, num_steps, x0=0.0, x0_spread=0.0):
        self.dim = check_positive_int("dim", dim)
        self.total_time = check_positive_number("total_time", total_time)
        self.num_steps = check_positive_int("num_steps", num_steps)
        x0_arr = np.asarray(x0, dtype="float64")
        if x0_arr.ndim == 0:
            x0_arr = np.full((self.dim,), float(x0_arr))
        if x0_arr.shape != (self.dim,) or not np.all(np.isfinite(x0_arr)):
            raise ValueError(
                f"`x0` must be a finite float or a sequence of dim={self.dim} floats; "
                f"received x0 with shape {x0_arr.shape}"
            )
        self.x0 = x0_arr
        self.x0_spread = check_number("x0_spread", x0_spread, 0)

    # --- the equation -------------------------------------------------------------------------
    @property
    def dt(self):
        return self.total_time / self.num_steps

    def time_grid(self):
        """The N + 1 grid points `t_n = n T / N` as a NumPy array."""
        return np.linspace(0.0, self.total_time, self.num_steps + 1)

    def drift(self, t, x):
        """mu(t, x); zero unless overridden."""
        return ops.zeros_like(x)

    def diffusion(self, t, x):
        """The diagonal of sigma(t, x), broadcastable against x; sqrt(2) unless overridden."""
        return math.sqrt(2.0)

    def diffusion_apply(self, t, x, v):
        """sigma(t, x) v (equal to sigma^T v, as sigma is diagonal)."""
        return self.diffusion(t, x) * v

    def generator(self, t, x, y, z):
        """f(t, x, y, z): y has shape (batch,), z shape (batch, d); returns shape (batch,)."""
        raise NotImplementedError(f"{type(self).__name__} must define generator(t, x, y, z)")

    def terminal(self, x):
        """g(x): x has shape (..., d); returns shape (...)."""
        raise NotImplementedError(f"{type(self).__name__} must define terminal(x)")

    def reference_value(self):
        """u(0, x0) with its source and precision, or None where no reference is known."""
        return None

    def exact_solution(self, t, x):
        """u(t, x) in closed form (NumPy in, NumPy out), or None where none is known."""
        return None

    def exact_z(self, t, x):
        """sigma^T grad u(t, x) in closed form or by an independent Monte Carlo, or None."""
        return None

    # --- the forward process ------------------------------------------------------------------
    def sample_step(self, t, x, dw):
        """One step of the forward process; Euler-Maruyama unless overridden."""
        return x + self.drift(t, x) * self.dt + self.diffusion_apply(t, x, dw)

    def sample_initial(self, num_paths, seed, dtype="float32"):
        """Starting points, shape (num_paths, d): x0, or uniform in x0 +- x0_spread."""
        x0 = tf.cast(self.x0, dtype)
        if self.x0_spread == 0:
            return tf.broadcast_to(x0, (num_paths, self.dim))
        u = tf.random.stateless_uniform(
            (num_paths, self.dim), seed, minval=-1.0, maxval=1.0, dtype=dtype
        )
        return x0 + self.x0_spread * u

    def sample_paths(self, num_paths, seed, dtype="float32"):
        """Simulates the forward process with stateless random numbers.

        Args:
            num_paths: number of paths (an int, or a scalar int tensor of known value).
            seed: shape (2,) int tensor or pair of ints; equal seeds give equal paths.
            dtype: float dtype of the result.

        Returns:
            `(x, dw)`: x of shape (num_paths, N + 1, d), dw of shape (num_paths, N, d).
        """
        count = tf.get_static_value(num_paths)  # the value itself for a Python or NumPy int
        if count is None:
            raise ValueError(f"`num_paths` must be an int or a scalar int tensor of known value; "
                             f"received num_paths={num_paths!r}")
        count = check_positive_int("num_paths", count)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        seed_x0, seed_dw = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        # Normals are drawn in float32 and cast: a float64 draw costs 2-3x more (a quarter of a
        # training step at d = 100), and the increments need no more than 24 bits of mantissa;
        # everything after the draw runs in `dtype`.
        dw = tf.cast(_standard_normals((count, self.num_steps, self.dim), seed_dw),
                     dtype) * math.sqrt(self.dt)
        x = self.sample_initial(count, seed_x0, dtype)
        grid = self.time_grid()
        xs = [x]
        for n in range(self.num_steps):
            x = self.sample_step(tf.constant(grid[n], dtype), x, dw[:, n])
            xs.append(x)
        return tf.stack(xs, axis=1), dw

    def get_config(self):
        x0 = self.x0.tolist()
        if np.all(self.x0 == self.x0[0]):
            x0 = float(self.x0[0])
        return {
            "dim": self.dim,
            "total_time": self.total_time,
            "num_steps": self.num_steps,
            "x0": x0,
            "x0_spread": self.x0_spread,
        }


def serialize_problem(problem):
    """`{"name": ..., "config": {...}}` of a registered problem (JSON-friendly)."""
    if getattr(type(problem), "name", None) is None:
        raise ValueError(
            f"Problem {type(problem).__name__} is not registered; decorate it with "
            "@register_problem(name, kind='bsde') so that models using it can be saved."
        )
    return {"name": type(problem).name, "config": problem.get_config()}


def deserialize_problem(spec):
    """A problem from a spec dict or name; a problem instance is returned unchanged."""
    from mlcmk.problems.registry import build_problem

    if isinstance(spec, Problem):
        return spec
    return build_problem(spec)
