r"""MomentAutoencoder: Galilean-invariant generalised moments of a kinetic distribution.

Encoder $\Psi$: $f \mapsto (U, W)$ with the conserved moments
$U = \int (1, v, v^2/2) f\,dv = (\rho, \rho u, E)$ passed through exactly, and
$$W_k = \int w_k(\xi)\,\hat f(\xi)\,d\xi = \frac1\rho\int w_k\Big(\frac{v-u}{\sqrt T}\Big)
f(v)\,dv,\qquad \hat f(\xi) = \frac{\sqrt T}{\rho} f(u + \sqrt T\xi),$$
with $w$ a learned network of $\xi$. The second form is the same integral after the change of
variables, evaluated by the quadrature of the velocity grid, so no interpolation is needed: a
shift of $f$ by a multiple of the grid spacing shifts $u$ by the same amount and leaves every
term of the sum unchanged, and $W$ is invariant up to round-off. The first `ceil(K/2)` weights
are even in $\xi$ and the rest odd, so under the reflection $v \to -v$ the even moments are
invariant and the odd ones change sign.

Decoder $\Phi$: $(U, W) \mapsto f(v_j) = \frac{\rho}{\sqrt T}\hat f(\xi_j)$ with
$\hat f(\xi) = \mathcal M(\xi)\exp(n(\xi, W))$ ($\mathcal M$ the standard Gaussian, $n$ a
network), corrected by $\frac{\rho}{\sqrt T}\mathcal M(\xi_j)(c_0 + c_1\xi_j + c_2\xi_j^2)$
with $c$ solving a 3x3 system, so that the quadrature moments of the reconstruction equal $U$
to round-off. Loss: $E\|f - \Phi(\Psi(f))\|^2$ (`compile(loss="mse")`, `fit(f, f)`).

Reference: J. Han, C. Ma, Z. Ma, W. E, "Uniformly accurate machine learning-based
hydrodynamic models for kinetic equations", PNAS 116 (2019) 21983, section 3.3.
"""

import math

import keras
import numpy as np
from keras import ops

from mlcmk._threads import compiled_in_worker
from mlcmk._validation import check_positive_int, check_positive_ints, check_positive_number
from mlcmk.config import PRECISIONS

# Activations with a NumPy twin: the networks of the moment model are evaluated in NumPy from
# copies of their weights at solve time (`NumpyDenseStack`), where eager TensorFlow calls on a
# hundred cells cost more than the arithmetic. Each is written over an array namespace `xp`
# (NumPy by default; `tf.experimental.numpy` in the compiled solve).
NUMPY_ACTIVATIONS = {
    "tanh": lambda x, xp=np: xp.tanh(x),
    "relu": lambda x, xp=np: xp.maximum(x, 0.0),
    "softplus": lambda x, xp=np: xp.logaddexp(0.0, x),
    "silu": lambda x, xp=np: x / (1.0 + xp.exp(-x)),
    "sigmoid": lambda x, xp=np: 1.0 / (1.0 + xp.exp(-x)),
}


def check_numpy_activation(activation):
    """`activation` must be a name in `NUMPY_ACTIVATIONS`."""
    if activation not in NUMPY_ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(NUMPY_ACTIVATIONS)}; "
                         f"received activation={activation!r}")
    return activation


def check_numpy_dtype(name, dtype):
    """`dtype` must be one of `mlcmk.config.PRECISIONS` ("float32", "float64"; a NumPy dtype
    of either is accepted); returns its name."""
    key = np.dtype(dtype).name if isinstance(dtype, (np.dtype, type)) else dtype
    if key not in PRECISIONS:
        raise ValueError(f"`{name}` must be one of {list(PRECISIONS)}; received "
                         f"{name}={dtype!r}")
    return key


class NumpyDenseStack:
    """A `keras.Sequential` of `Dense` layers (hidden `activation`, linear output) evaluated in
    NumPy from a copy of its weights.

    `dtype` ("float64" or "float32") is the precision of the arithmetic: inputs are cast to it
    and outputs returned as float64 (float32 halves the cost of the matrix products and the
    activations; the result then agrees with float64 to ~1e-7 relative).
    """

    def __init__(self, sequential, activation, dtype="float64"):
        self.dtype = np.dtype(check_numpy_dtype("dtype", dtype))
        self._layers = [(np.asarray(layer.kernel, np.float64).astype(self.dtype),
                         np.asarray(layer.bias, np.float64).astype(self.dtype))
                        for layer in sequential.layers]
        self._act = NUMPY_ACTIVATIONS[check_numpy_activation(activation)]

    def __call__(self, z):
        return self.evaluate(np, self._layers, z)

    def evaluate(self, xp, layers, z):
        """The stack on `z` with the array namespace `xp` and weights `layers` (this stack's
        own, or their copies as constants of another framework: `tensorflow`)."""
        z = xp.asarray(z, self.dtype)
        for i, (kernel, bias) in enumerate(layers):
            z = z @ kernel + bias
            if i < len(layers) - 1:
                z = self._act(z, xp)
        return xp.asarray(z, np.float64)

    def tensorflow(self):
        """The same stack as a TensorFlow function of a float64 tensor (weights as constants,
        arithmetic in `dtype`), to be traced into a compiled program."""
        import tensorflow as tf
        import tensorflow.experimental.numpy as tnp

        layers = [(tf.constant(kernel), tf.constant(bias)) for kernel, bias in self._layers]
        return lambda z: self.evaluate(tnp, layers, z)


def check_heat_flux_moment(heat_flux_moment, num_moments):
    """`heat_flux_moment` must be a bool, and True only with at least two moments."""
    if not isinstance(heat_flux_moment, bool) or (heat_flux_moment and num_moments < 2):
        raise ValueError(f"`heat_flux_moment` must be a bool, True only with num_moments >= 2; "
                         f"received heat_flux_moment={heat_flux_moment!r}, "
                         f"num_moments={num_moments!r}")


@keras.saving.register_keras_serializable(package="mlcmk")
class MomentAutoencoder(keras.Model):
    """Autoencoder of distributions `f(v_j)` on a uniform velocity grid into `(U, W)`.

    Args:
        v_max: positive float, velocity grid half-width (grid as `VelocityGrid`).
        num_v: int >= 8, number of velocity nodes.
        num_moments: positive int K, number of generalised moments W.
        encoder_units: hidden widths of the weight network `w(xi)`.
        decoder_units: hidden widths of the decoder network `n(xi, W)`.
        activation: hidden activation (one of tanh, relu, softplus, silu, sigmoid, so that
            `numpy_encoder` can evaluate it).
        heat_flux_moment: bool; if True (needs K >= 2), the first odd weight is fixed to
            `(xi^3 - 3 xi) / 2`, so that this moment is the normalised heat flux
            `q / (rho T^{3/2})` and the energy flux of the moment system needs no closure.

    Input shape: `(batch, num_v)` distributions. Output shape: `(batch, num_v)` reconstructions.
    `encode` gives `(batch, 3 + K)` = `(rho, rho u, E, W)`; `decode` inverts it.
    """

    def __init__(self, v_max=8.0, num_v=64, num_moments=4, encoder_units=(32, 32),
                 decoder_units=(64, 64), activation="tanh", heat_flux_moment=False, **kwargs):
        v_max = check_positive_number("v_max", v_max)
        num_v = check_positive_int("num_v", num_v, 8)
        num_moments = check_positive_int("num_moments", num_moments)
        check_heat_flux_moment(heat_flux_moment, num_moments)
        check_numpy_activation(activation)
        super().__init__(**kwargs)
        # === Config ===
        self.heat_flux_moment = heat_flux_moment
        self.v_max = float(v_max)
        self.num_v = num_v
        self.num_moments = num_moments
        self.encoder_units = check_positive_ints("encoder_units", encoder_units, allow_empty=True)
        self.decoder_units = check_positive_ints("decoder_units", decoder_units, allow_empty=True)
        self.activation = activation
        self.num_even = (num_moments + 1) // 2
        self.dv = 2.0 * self.v_max / (num_v - 1)
        self._v = np.linspace(-self.v_max, self.v_max, num_v)
        self._parity = np.array([1.0] * self.num_even + [-1.0] * (num_moments - self.num_even))
        # === Layers ===
        # Random biases: with zero biases an odd activation makes every w(xi) odd at the start
        # and the even moments constant.
        init = keras.initializers.RandomUniform(-1.0, 1.0)
        self.weight_net = keras.Sequential(
            [keras.layers.Dense(u, activation=activation, bias_initializer=init)
             for u in self.encoder_units]
            + [keras.layers.Dense(num_moments)], name="weight_net")
        self.decoder_net = keras.Sequential(
            [keras.layers.Dense(u, activation=activation) for u in self.decoder_units]
            + [keras.layers.Dense(1, kernel_initializer="zeros")], name="decoder_net")

    def build(self, input_shape=None):
        self.weight_net.build((None, 1))
        self.decoder_net.build((None, 1 + self.num_moments))
        # Deviations W - W_M are small near equilibrium; the decoder sees them rescaled.
        self.deviation_scale = self.add_weight(
            name="deviation_scale", shape=(self.num_moments,), initializer="ones",
            trainable=False)
        self.built = True

    def adapt(self, f, batch_size=4096):
        """Sets the decoder's input scale to `1 / std(W - W_M)` over the samples `f`."""
        if not self.built:
            self.build((None, self.num_v))
        f = np.asarray(f)
        W = np.concatenate([keras.ops.convert_to_numpy(self.encode(f[i:i + batch_size]))[:, 3:]
                            for i in range(0, len(f), batch_size)])
        deviation = W - self.maxwellian_moments()
        scale = np.sqrt(np.mean(deviation**2, axis=0))
        self.deviation_scale.assign(1.0 / np.maximum(scale, 1e-8))
        return self

    def _maxwellian_moments_graph(self):
        x, weights = np.polynomial.hermite_e.hermegauss(40)
        weights = ops.convert_to_tensor(weights / math.sqrt(2.0 * math.pi), self.compute_dtype)
        return ops.matmul(weights[None, :], self.weight_functions(x))[0]

    @property
    def velocity_nodes(self):
        """The velocity nodes `(num_v,)` (NumPy float64, spacing `dv`) of the quadrature."""
        return self._v

    # ------------------------------------------------------------------ pieces
    def _grid(self):
        return ops.convert_to_tensor(self._v, dtype=self.compute_dtype)

    def weight_functions(self, xi):
        """`w(xi)`: `(...,)` -> `(..., K)`; the first `ceil(K/2)` even, the rest odd.

        With `heat_flux_moment`, `w_{ceil(K/2)+1} = (xi^3 - 3 xi) / 2` (fixed).
        """
        xi = ops.convert_to_tensor(xi, dtype=self.compute_dtype)
        shape = ops.shape(xi)
        flat = ops.reshape(xi, (-1, 1))
        parity = ops.convert_to_tensor(self._parity, dtype=self.compute_dtype)
        w = 0.5 * (self.weight_net(flat) + parity * self.weight_net(-flat))
        if self.heat_flux_moment:
            Ke = self.num_even
            heat = 0.5 * (flat**3 - 3.0 * flat)
            w = ops.concatenate([w[:, :Ke], heat, w[:, Ke + 1:]], axis=1)
        return ops.reshape(w, (*shape, self.num_moments))

    def weight_derivatives(self, xi):
        """`w'(xi)`: `(...,)` -> `(..., K)`, by automatic differentiation."""
        import tensorflow as tf

        xi = tf.convert_to_tensor(xi, dtype=self.compute_dtype)
        flat = tf.reshape(xi, (-1,))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(flat)
            w = self.weight_functions(flat)
            parts = [w[:, k] for k in range(self.num_moments)]
        # Each w_k(xi_i) depends on xi_i only, so the gradient of the sum is the derivative.
        derivative = tf.stack([tape.gradient(part, flat) for part in parts], axis=-1)
        del tape
        return tf.reshape(derivative, (*xi.shape, self.num_moments))

    def conserved(self, f):
        """`(batch, num_v)` -> `(batch, 3)` quadrature moments `(rho, rho u, E)`."""
        f = ops.convert_to_tensor(f, dtype=self.compute_dtype)
        v = self._grid()
        basis = ops.stack([ops.ones_like(v), v, 0.5 * v * v], axis=0)  # (3, num_v)
        return ops.matmul(f, ops.transpose(basis)) * self.dv

    @staticmethod
    def _primitives(U):
        rho = U[:, 0]
        u = U[:, 1] / rho
        T = (2.0 * U[:, 2] - rho * u * u) / rho
        return rho, u, T

    def encode(self, f):
        """`(batch, num_v)` -> `(batch, 3 + K)`: `(rho, rho u, E, W)`."""
        f = ops.convert_to_tensor(f, dtype=self.compute_dtype)
        U = self.conserved(f)
        rho, u, T = self._primitives(U)
        xi = (self._grid()[None, :] - u[:, None]) / ops.sqrt(T)[:, None]
        w = self.weight_functions(xi)  # (batch, num_v, K)
        W = ops.einsum("bj,bjk->bk", f, w) * self.dv / rho[:, None]
        return ops.concatenate([U, W], axis=-1)

    def numpy_encoder(self):
        """`encode` in NumPy from a copy of the weights (`NumpyEncoder`): the fast path for the
        initial moments of a solve."""
        return NumpyEncoder(self)

    def decode(self, UW):
        """`(batch, 3 + K)` -> `(batch, num_v)` with quadrature moments equal to `U`."""
        UW = ops.convert_to_tensor(UW, dtype=self.compute_dtype)
        U, W = UW[:, :3], UW[:, 3:]
        rho, u, T = self._primitives(U)
        sqrt_t = ops.sqrt(T)
        xi = (self._grid()[None, :] - u[:, None]) / sqrt_t[:, None]  # (batch, num_v)
        batch = ops.shape(xi)[0]
        W = (W - self._maxwellian_moments_graph()) * self.deviation_scale
        W_rep = ops.broadcast_to(W[:, None, :], (batch, self.num_v, self.num_moments))
        net_in = ops.concatenate([xi[..., None], W_rep], axis=-1)
        net = ops.reshape(self.decoder_net(ops.reshape(net_in, (-1, 1 + self.num_moments))),
                          (batch, self.num_v))
        gauss = ops.exp(-0.5 * xi * xi) / math.sqrt(2.0 * math.pi) * (rho / sqrt_t)[:, None]
        raw = gauss * ops.exp(ops.clip(net, -30.0, 30.0))
        # Moment correction in the xi basis: targets (rho, 0, rho) <=> U exactly.
        basis = ops.stack([ops.ones_like(xi), xi, xi * xi], axis=1)  # (batch, 3, num_v)
        target = ops.stack([rho, ops.zeros_like(rho), rho], axis=1)
        residual = target - ops.einsum("bkj,bj->bk", basis, raw) * self.dv
        matrix = ops.einsum("bkj,blj,bj->bkl", basis, basis, gauss) * self.dv
        c = ops.solve(matrix, residual[..., None])[..., 0]
        return raw + gauss * ops.einsum("bk,bkj->bj", c, basis)

    def call(self, f):
        return self.decode(self.encode(f))

    def maxwellian_moments(self, order=60, power=0):
        """`int xi^power w(xi) M(xi) dxi` (M the standard Gaussian) by Gauss–Hermite: `(K,)`.

        `power=0` gives the generalised moments `W_M` of every Maxwellian; `power=1` their
        normalised fluxes.
        """
        x, weights = np.polynomial.hermite_e.hermegauss(order)
        w = keras.ops.convert_to_numpy(self.weight_functions(x))
        return (weights * x**power / math.sqrt(2.0 * math.pi)) @ w

    def maxwellian_closure(self, order=60):
        """Closure outputs of the Maxwellian, `(1 + 4K,)`: `(q_hat, G_hat, a_1, a_2, a_3)`.

        `q_hat = 0`, `G_hat = int xi w M`, `a_m = int w'(xi) xi^(m-1) M` with `M` the standard
        Gaussian (Gauss–Hermite quadrature of `order` points); see `MomentClosure`.
        """
        x, weights = np.polynomial.hermite_e.hermegauss(order)
        weights = weights / math.sqrt(2.0 * math.pi)
        w = keras.ops.convert_to_numpy(self.weight_functions(x))
        dw = keras.ops.convert_to_numpy(self.weight_derivatives(x))
        return np.concatenate([[0.0], (weights * x) @ w,
                               *[(weights * x**m) @ dw for m in range(3)]])

    def get_config(self):
        return {**super().get_config(), "v_max": self.v_max, "num_v": self.num_v,
                "num_moments": self.num_moments, "encoder_units": self.encoder_units,
                "decoder_units": self.decoder_units, "activation": self.activation,
                "heat_flux_moment": self.heat_flux_moment}


def normalised_quadrature(f, v, dv, xp=np):
    """The quadrature of `f` `(n, num_v)` on the nodes `v` (spacing `dv`), in float64 (`xp`:
    the array namespace, NumPy by default).

    Returns:
        `(U, rho, u, T, xi, f_hat)`: the conserved moments `U` `(n, 3)`, the primitives
        `(n,)`, the normalised velocities `xi = (v - u) / sqrt(T)` `(n, num_v)` and the
        quadrature weights `f dv / rho` of the normalised distribution `f_hat` in `xi` (so that
        `int g(xi) f_hat dxi = sum_j g(xi_j) f_hat_j`).
    """
    f = xp.asarray(f, np.float64)
    U = xp.stack([xp.sum(f, axis=-1), xp.matmul(f, v), 0.5 * xp.matmul(f, v**2)], axis=-1) * dv
    rho, u, T = MomentAutoencoder._primitives(U)
    xi = (v[None, :] - u[:, None]) / xp.sqrt(T)[:, None]
    return U, rho, u, T, xi, f * dv / rho[:, None]


class NumpyEncoder:
    """`MomentAutoencoder.encode` evaluated in NumPy float64 from a copy of its weights.

    Call: `f` `(n, num_v)` -> `(n, 3 + K)` = `(rho, rho u, E, W)`, as `encode` (the same
    quadrature; equal to round-off in float64). Later training of the autoencoder does not
    reach a snapshot: take a new one. `compiled()` gives the same function as an XLA program.
    """

    def __init__(self, autoencoder):
        self._net = NumpyDenseStack(autoencoder.weight_net, autoencoder.activation)
        self._v, self._dv = autoencoder.velocity_nodes, autoencoder.dv
        self._parity = autoencoder._parity
        self._heat = autoencoder.num_even if autoencoder.heat_flux_moment else None
        self._compiled = None

    def weight_functions(self, xi):
        """`w(xi)`: `(...,)` -> `(..., K)` (see `MomentAutoencoder.weight_functions`)."""
        xi = np.asarray(xi, np.float64)
        return self._weights(np, self._net, xi.reshape(-1, 1)).reshape(*xi.shape, -1)

    def _weights(self, xp, net, flat):
        w = 0.5 * (net(flat) + self._parity * net(-flat))
        if self._heat is not None:
            w = xp.concatenate([w[:, :self._heat], 0.5 * (flat**3 - 3.0 * flat),
                                w[:, self._heat + 1:]], axis=1)
        return w

    def __call__(self, f):
        return self._encode(np, self._net, f)

    def _encode(self, xp, net, f):
        U, _, _, _, xi, f_hat = normalised_quadrature(f, self._v, self._dv, xp)
        w = xp.reshape(self._weights(xp, net, xp.reshape(xi, (-1, 1))), (*xi.shape, -1))
        W = xp.einsum("bj,bjk->bk", f_hat, w)
        return xp.concatenate([U, W], axis=-1)

    def compiled(self):
        """This encoder as one XLA program: `f` (NumPy) -> `(n, 3 + K)` (NumPy), equal to the
        NumPy call to round-off and ~2-4x faster on 100 x 64 values (compiled on the first
        call for each shape of `f`, in a thread of its own; cached with the snapshot)."""
        if self._compiled is None:
            import tensorflow as tf
            import tensorflow.experimental.numpy as tnp

            net = self._net.tensorflow()
            program = compiled_in_worker(tf.function(
                lambda f: self._encode(tnp, net, f), jit_compile=True))
            self._compiled = lambda f: program(tf.constant(f, tf.float64)).numpy()
        return self._compiled
