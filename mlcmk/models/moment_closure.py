r"""MomentClosure: learned heat flux and generalised-moment coefficients of a moment system.

With $\xi = (v - u)/\sqrt T$, $\hat f(\xi) = \frac{\sqrt T}{\rho} f(u + \sqrt T\xi)$ and
$W = \int w(\xi)\hat f\,d\xi$ (see `MomentAutoencoder`), the BGK equation gives, exactly,
$$\partial_t U + \partial_x F = 0,\qquad
F = \big(\rho u,\ \rho u^2 + \rho T,\ u(E + \rho T) + \rho T^{3/2}\hat q\big),$$
$$\partial_t(\rho W) + \partial_x\big(\rho u W + \rho\sqrt T\,\hat G\big)
 = \frac{\rho}{\varepsilon}(W_M - W)
 + a_1\frac{\partial_x(\rho T)}{\sqrt T} + a_2\frac{\partial_x q}{T}
 - \rho\,a_3\frac{\partial_x T}{2\sqrt T},$$
(seed eq. 15 with the source written out: the last three terms come from differentiating the
normalisation of $W$, using the conservation laws for $D_t u$ and $D_t T$), where
$$\hat q = \tfrac12\!\int\!\xi^3\hat f,\quad \hat G = \int\xi w\hat f,\quad
a_m = \int w'(\xi)\,\xi^{m-1}\hat f\,d\xi\ (m = 1, 2, 3)$$
are integrals of $\hat f$ that the moments $(U, W)$ do not determine: they are the closure.
This model learns them as functions of $z = (\log\rho, \log T, \log\varepsilon, W)$ from their
exact values on kinetic data (a priori, no time derivatives needed). Every coefficient is
Galilean invariant (no $u$ among the inputs).

Built in: (i) at $W = W_M$ every output takes its exact Maxwellian value $y_M$ (zero heat
flux; $\hat G$ and $a$ of the standard Gaussian, by Gauss–Hermite quadrature): the model is
$y_M + h(z) - h(z_{eq})$ with $z_{eq}$ at $W = W_M$. The terms of the $W$ equation nearly
cancel in smooth flow, so only the small non-equilibrium part is left to the network. As
$\varepsilon \to 0$ the stiff relaxation keeps $W - W_M = O(\varepsilon)$, so
$\hat q = O(\varepsilon)$ and the Euler equations are recovered; the equilibrium source
$\propto \partial_x T\int w\,(\xi^3 - 3\xi)\,\mathcal M$ is what builds up the heat flux
(Chapman–Enskog).
(ii) The reflection $x \to -x$, $v \to -v$ maps the odd moments $W_o \to -W_o$ and must flip
the odd outputs ($\hat q$, $\hat G_e$, $a_{1e}$, $a_{3e}$, $a_{2o}$); the model outputs
$\tfrac12(n(z) + s\odot n(Pz))$, which has this symmetry exactly.

Input: `(batch, 4 + K)` = `(rho, rho u, E, W_1..W_K, eps)`.
Output: `(batch, 1 + 4K)` = `(q_hat, G_hat, a_1, a_2, a_3)` (each block of K).
Training: `adapt(x, y, w_maxwell, y_maxwell)`, `compile(optimizer)`, `fit(x, y)`; the loss is
the mean squared error of the outputs divided by their RMS (set by `adapt`).

Reference: J. Han, C. Ma, Z. Ma, W. E, PNAS 116 (2019) 21983, section 3.3.
"""

import keras
import numpy as np
from keras import ops

from mlcmk._validation import check_positive_int, check_positive_ints
from mlcmk.models.moment_autoencoder import (
    NumpyDenseStack,
    check_heat_flux_moment,
    check_numpy_activation,
)


def output_parity(num_moments):
    """Signs of the outputs under the reflection `(q, G, a1, a2, a3)`; even moments first."""
    Ke = (num_moments + 1) // 2
    even, odd = [1.0] * Ke, [1.0] * (num_moments - Ke)
    flip = lambda block: [-s for s in block]  # noqa: E731
    # q odd; G_e odd, G_o even; a1 = int w' f: w_e' odd; a2 = int w' xi f; a3 = int w' xi^2 f.
    return np.array([-1.0] + flip(even) + odd + flip(even) + odd + even + flip(odd)
                    + flip(even) + odd)


@keras.saving.register_keras_serializable(package="mlcmk")
class MomentClosure(keras.Model):
    """Reflection-symmetric closure network of the moment system with K generalised moments.

    Args:
        num_moments: positive int K; the first `ceil(K/2)` moments are even, the rest odd
            (as in `MomentAutoencoder`).
        units: hidden widths.
        activation: hidden activation (one of tanh, relu, softplus, silu, sigmoid, so that
            `numpy_closure` can evaluate it).
        heat_flux_moment: bool; True when the first odd moment is the normalised heat flux
            (`MomentAutoencoder(heat_flux_moment=True)`): `q_hat` is then that input, exactly,
            and the network's `q_hat` output is unused.
    """

    def __init__(self, num_moments=4, units=(64, 64), activation="tanh", heat_flux_moment=False,
                 **kwargs):
        num_moments = check_positive_int("num_moments", num_moments)
        units = check_positive_ints("units", units, allow_empty=True)
        check_numpy_activation(activation)
        check_heat_flux_moment(heat_flux_moment, num_moments)
        super().__init__(**kwargs)
        # === Config ===
        self.heat_flux_moment = heat_flux_moment
        self.num_moments = num_moments
        self.units = list(units)
        self.activation = activation
        self.num_even = (num_moments + 1) // 2
        K, Ke = num_moments, self.num_even
        self.num_outputs = 1 + 4 * K
        # Reflection of the features (log rho, log T, log eps, W_e, W_o) and output signs.
        self._input_parity = np.array([1.0] * (3 + Ke) + [-1.0] * (K - Ke))
        self._output_parity = output_parity(K)
        # === Layers ===
        self.net = keras.Sequential(
            [keras.layers.Dense(u, activation=activation) for u in self.units]
            + [keras.layers.Dense(self.num_outputs)], name="net")

    def build(self, input_shape=None):
        K = self.num_moments
        self.net.build((None, 3 + K))
        constant = {"initializer": "zeros", "trainable": False}
        self.input_shift = self.add_weight(name="input_shift", shape=(3 + K,), **constant)
        self.input_scale = self.add_weight(name="input_scale", shape=(3 + K,),
                                           initializer="ones", trainable=False)
        self.output_equilibrium = self.add_weight(
            name="output_equilibrium", shape=(self.num_outputs,), **constant)
        self.output_scale = self.add_weight(name="output_scale", shape=(self.num_outputs,),
                                            initializer="ones", trainable=False)
        self.w_maxwell = self.add_weight(name="w_maxwell", shape=(K,), **constant)
        self.built = True

    def _validate(self, x):
        width = 4 + self.num_moments
        if x.ndim != 2 or x.shape[-1] != width:
            raise ValueError(f"MomentClosure expects inputs (batch, {width}) = (rho, rho u, E, "
                             f"W_1..W_{self.num_moments}, eps); received shape {x.shape}")

    def features(self, x):
        """Inputs -> `(log rho, log T, log eps, W)` before normalisation."""
        x = np.asarray(x, dtype=np.float64)
        self._validate(x)
        rho = x[:, 0]
        u = x[:, 1] / rho
        T = (2.0 * x[:, 2] - rho * u * u) / rho
        if np.any(rho <= 0) or np.any(T <= 0) or np.any(x[:, -1] <= 0):
            raise ValueError("MomentClosure inputs need positive density, temperature and eps")
        return np.concatenate([np.stack([np.log(rho), np.log(T), np.log(x[:, -1])], axis=1),
                               x[:, 3:-1]], axis=1)

    def adapt(self, x, y, w_maxwell, y_maxwell):
        """Sets the normalisation from training data and the Maxwellian values of the encoder.

        Args:
            x: `(n, 4 + K)` training inputs.
            y: `(n, 1 + 4K)` exact outputs.
            w_maxwell: `(K,)` generalised moments of the Maxwellian.
            y_maxwell: `(1 + 4K,)` outputs of the Maxwellian (`MomentAutoencoder.
                maxwellian_closure()`), returned exactly at `W = W_M`.
        """
        if not self.built:
            self.build((None, 4 + self.num_moments))
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[-1] != self.num_outputs or len(y) != len(x):
            raise ValueError(f"`adapt` expects y of shape (n, {self.num_outputs}) with n = "
                             f"len(x); received x {x.shape} and y {y.shape}")
        w_maxwell = np.array(w_maxwell, dtype=np.float64)
        w_maxwell[self.num_even:] = 0.0  # odd moments of the (even) Maxwellian vanish
        z = self.features(x)
        shift = np.concatenate([z[:, :3].mean(axis=0), w_maxwell])
        scale = np.sqrt(np.mean((z - shift) ** 2, axis=0))
        y_maxwell = np.where(self._output_parity > 0, np.asarray(y_maxwell, np.float64), 0.0)
        if y_maxwell.shape != (self.num_outputs,):
            raise ValueError(f"`y_maxwell` must have shape ({self.num_outputs},); received "
                             f"{y_maxwell.shape}")
        out_scale = np.sqrt(np.mean((y - y_maxwell) ** 2, axis=0))
        self.input_shift.assign(shift)
        self.input_scale.assign(1.0 / np.maximum(scale, 1e-8))
        self.output_equilibrium.assign(y_maxwell)
        self.output_scale.assign(np.maximum(out_scale, 1e-8))
        self.w_maxwell.assign(w_maxwell)
        return self

    def _symmetric(self, z):
        p_in = ops.convert_to_tensor(self._input_parity, self.compute_dtype)
        p_out = ops.convert_to_tensor(self._output_parity, self.compute_dtype)
        return 0.5 * (self.net(z) + p_out * self.net(p_in * z))

    def call(self, x):
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        rho = x[:, 0]
        u = x[:, 1] / rho
        T = (2.0 * x[:, 2] - rho * u * u) / rho
        z = ops.concatenate([ops.stack([ops.log(rho), ops.log(T), ops.log(x[:, -1])], axis=1),
                             x[:, 3:-1]], axis=1)
        z = (z - self.input_shift) * self.input_scale
        z_eq = ops.concatenate([z[:, :3], ops.zeros_like(z[:, 3:])], axis=1)
        # Exactly the Maxwellian values at W = W_M; learned deviations elsewhere.
        deviation = self._symmetric(z) - self._symmetric(z_eq)
        out = self.output_equilibrium + deviation * self.output_scale
        if self.heat_flux_moment:
            out = ops.concatenate([x[:, 3 + self.num_even:4 + self.num_even], out[:, 1:]], axis=1)
        return out

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean squared error of the outputs in units of their RMS over the training data."""
        del x, sample_weight, training
        y = ops.convert_to_tensor(y, dtype=self.compute_dtype)
        loss = ops.mean(ops.square((y_pred - y) / self.output_scale))
        # Per-replica mean: gradients are summed over replicas, the logged value is unscaled.
        import tensorflow as tf

        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def numpy_closure(self, dtype="float64"):
        """A NumPy snapshot of the network for `MomentSolver` (`(rho, T, W, eps)` calls);
        `dtype` ("float64" or "float32") is the precision of the network's arithmetic."""
        return NumpyClosure(self, dtype)

    def get_config(self):
        return {**super().get_config(), "num_moments": self.num_moments, "units": self.units,
                "activation": self.activation, "heat_flux_moment": self.heat_flux_moment}


class NumpyClosure:
    """`MomentClosure` evaluated in NumPy from a copy of its weights (fast for small batches).

    Call: `(rho, T, W, eps) -> (q_hat, G_hat, a)` with shapes `(n,)`, `(n, K)`, `(n, 3, K)`.
    `dtype` ("float64" or "float32"): precision of the network's matrix products and
    activations (the input scaling, the symmetrisation and the outputs stay float64).
    `tensorflow()` gives the same function on tensors, for compiled solves.
    """

    def __init__(self, closure, dtype="float64"):
        self.num_moments = closure.num_moments
        self.num_even = closure.num_even
        self.heat_flux_moment = closure.heat_flux_moment
        self._net = NumpyDenseStack(closure.net, closure.activation, dtype)
        self.dtype = self._net.dtype.name
        get = lambda w: np.asarray(keras.ops.convert_to_numpy(w), np.float64)  # noqa: E731
        self._shift, self._scale = get(closure.input_shift), get(closure.input_scale)
        self._out_eq, self._out_scale = get(closure.output_equilibrium), get(closure.output_scale)
        self.w_maxwell = get(closure.w_maxwell)
        self._p_in = closure._input_parity
        self._p_out = closure._output_parity

    def __call__(self, rho, T, W, eps):
        return self._evaluate(np, self._net, rho, T, W, eps)

    def tensorflow(self):
        """This closure as a TensorFlow function of `(rho, T, W, eps)` float64 tensors (the
        weights as constants), to be traced into a compiled program such as
        `MomentSolver.solve(..., jit_compile=True)`; same arithmetic and precision."""
        import copy

        import tensorflow.experimental.numpy as tnp

        net = self._net.tensorflow()
        # A copy (sharing the arrays): the function must not keep this snapshot alive, which
        # keys its compiled programs in a weak dictionary (`compiled_moment_solve`).
        snapshot = copy.copy(self)
        return lambda rho, T, W, eps: snapshot._evaluate(tnp, net, rho, T, W, eps)

    def _evaluate(self, xp, net, rho, T, W, eps):
        n = rho.shape[0]
        K = self.num_moments
        log_eps = xp.log(xp.asarray(eps, np.float64)) + xp.zeros_like(rho)
        z = xp.concatenate([xp.stack([xp.log(rho), xp.log(T), log_eps], axis=1), W], axis=1)
        z = (z - self._shift) * self._scale
        z_eq = xp.concatenate([z[:, :3], xp.zeros_like(z[:, 3:])], axis=1)
        # The reflection leaves z_eq unchanged (its W part is 0, the rest even): one pass.
        out = net(xp.concatenate([z, self._p_in * z, z_eq], axis=0))
        h = 0.5 * (out[:n] + self._p_out * out[n:2 * n]) - 0.5 * (1.0 + self._p_out) * out[2 * n:]
        h = self._out_eq + h * self._out_scale
        if self.heat_flux_moment:
            h = xp.concatenate([W[:, self.num_even:self.num_even + 1], h[:, 1:]], axis=1)
        return h[:, 0], h[:, 1:1 + K], xp.reshape(h[:, 1 + K:], (n, 3, K))
