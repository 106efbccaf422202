"""One step of the backward SDE recursion."""

import keras
from keras import ops

from mlcmk.problems.bsde.base import BSDEProblem, deserialize_problem, serialize_problem


@keras.saving.register_keras_serializable(package="mlcmk")
class BSDEStep(keras.layers.Layer):
    r"""One Euler step of the backward SDE.

    $y_{n+1} = y_n - f(t_n, x_n, y_n, z_n)\,dt + z_n \cdot dw_n$.

    Args:
        problem: a `BSDEProblem`, a registered problem name or a spec dict
            (`{"name": ..., "config": {...}}`); it gives the generator f and the step dt.

    Call arguments:
        x: `(batch, d)` forward state X_{t_n}.
        y: `(batch,)` Y_{t_n}.
        z: `(batch, d)` Z_{t_n} = sigma^T grad u(t_n, X_{t_n}).
        dw: `(batch, d)` Brownian increment over the step.
        t: keyword-only, the time t_n (float or scalar tensor).

    Output shape: `(batch,)`, Y_{t_{n+1}}.
    Reference: Han, Jentzen, E, "Solving high-dimensional partial differential equations using
    deep learning", PNAS 115 (2018).
    """

    def __init__(self, problem, **kwargs):
        super().__init__(**kwargs)
        self.problem = deserialize_problem(problem)
        if not isinstance(self.problem, BSDEProblem):
            raise TypeError(
                f"`problem` must be a BSDEProblem; received problem={type(self.problem).__name__}"
            )
        self.built = True

    def call(self, x, y, z, dw, *, t):
        t = ops.cast(t, self.compute_dtype)
        f = self.problem.generator(t, x, y, z)
        return y - f * self.problem.dt + ops.sum(z * dw, axis=-1)

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "problem": serialize_problem(self.problem)}
