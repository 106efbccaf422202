r"""MomentClosure: learned heat flux, moment fluxes and sources of a kinetic moment system.

For the system (seed eq. 15, written in $Q = (U, \rho W)$)
$$\partial_t U + \partial_x F(U, W; \varepsilon) = 0,\qquad
\partial_t(\rho W) + \partial_x G(U, W; \varepsilon) = R(U, W; \varepsilon),$$
the known parts are exact and only normalised, Galilean-invariant pieces are learned:
$F = (\rho u, \rho u^2 + \rho T, u(E + \rho T) + \rho T^{3/2}\hat q)$,
$G = \rho u W + \rho\sqrt T\,\hat G$ and
$R = \frac{\rho}{\varepsilon}(W_M - W) + \rho\hat R$, with
$(\hat G, \hat R) = h_{G,R}(z)$ and $\hat q = h_q(z) - h_q(z_{eq})$, $h$ a network of
$z = (\log\rho, \log T, \log\varepsilon, W)$ and $z_{eq}$ the same with $W = W_M$. The heat
flux of a Maxwellian is zero exactly; as $\varepsilon \to 0$ the stiff relaxation keeps
$W - W_M = O(\varepsilon)$, so $\hat q = O(\varepsilon)$ and the Euler equations are recovered.
The equilibrium flux $\hat G(z_{eq})$ is what drives $W$ away from $W_M$ in a gradient of
$\rho, T$ (Chapman–Enskog: the heat flux grows with $\varepsilon\,\partial_x T$).

The reflection $x \to -x$, $v \to -v$ maps the odd generalised moments $W_o \to -W_o$ and must
map $\hat q \to -\hat q$, $\hat G_e \to -\hat G_e$, $\hat G_o \to \hat G_o$,
$\hat R_e \to \hat R_e$, $\hat R_o \to -\hat R_o$; $h$ is the symmetrisation
$\tfrac12(n(z) + s \odot n(Pz))$ of a network $n$ ($P$ the reflection of the inputs, $s$ the
output signs), which has this symmetry exactly.

Training (`fit(x, y)` on whole snapshots, see `closure_training_data`): the heat flux is fitted
to its exact value $\hat q = \frac{1}{2\rho}\int \xi^3 f\,dv$; the flux and source of $W$ are
fitted together through the residual of the $W$ equation on the kinetic data,
$S + \partial_x G - \rho\hat R$ with $S = \partial_t(\rho W) - \rho(W_M - W)/\varepsilon$ from
the data and $\partial_x$ a central difference, because the exact moment equation of the
Galilean-normalised $W$ has gradient terms that no local $R$ represents; the flux absorbs them.

Input: `(batch, 4 + K)` = `(rho, rho u, E, W_1..W_K, eps)` (or `(snapshots, num_x, 4 + K)`).
Output: `(batch, 1 + 2K)` = `(q_hat, G_hat_1..K, R_hat_1..K)`.

Reference: J. Han, C. Ma, Z. Ma, W. E, PNAS 116 (2019) 21983, section 3.3.
"""

import keras
import numpy as np
from keras import ops

_NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


@keras.saving.register_keras_serializable(package="mlcmk")
class MomentClosure(keras.Model):
    """Reflection-symmetric closure network of a moment system with K generalised moments.

    Args:
        num_moments: positive int K; the first `ceil(K/2)` moments are even, the rest odd
            (as in `MomentAutoencoder`).
        units: hidden widths.
        activation: hidden activation (one of tanh, relu, softplus, silu, sigmoid, so that
            `numpy_closure` can evaluate it).
    """

    def __init__(self, num_moments=4, units=(64, 64), activation="tanh", **kwargs):
        if isinstance(num_moments, bool) or not isinstance(num_moments, int) or num_moments < 1:
            raise ValueError(f"`num_moments` must be a positive int; received "
                             f"num_moments={num_moments!r}")
        if not isinstance(units, (list, tuple)) or not all(
                isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units):
            raise ValueError(f"`units` must be a list of positive ints; received units={units!r}")
        if activation not in _NUMPY_ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {sorted(_NUMPY_ACTIVATIONS)}; "
                             f"received activation={activation!r}")
        super().__init__(**kwargs)
        # === Config ===
        self.num_moments = num_moments
        self.units = list(units)
        self.activation = activation
        self.num_even = (num_moments + 1) // 2
        K, Ke = num_moments, self.num_even
        # Reflection of the features (log rho, log T, log eps, W_e, W_o) and output signs.
        self._input_parity = np.array([1.0] * (3 + Ke) + [-1.0] * (K - Ke))
        self._output_parity = np.array([-1.0] + [-1.0] * Ke + [1.0] * (K - Ke)
                                       + [1.0] * Ke + [-1.0] * (K - Ke))
        # === Layers ===
        self.net = keras.Sequential(
            [keras.layers.Dense(u, activation=activation) for u in self.units]
            + [keras.layers.Dense(1 + 2 * K)], name="net")

    def build(self, input_shape=None):
        K = self.num_moments
        self.net.build((None, 3 + K))
        constant = {"initializer": "zeros", "trainable": False}
        self.input_shift = self.add_weight(name="input_shift", shape=(3 + K,), **constant)
        self.input_scale = self.add_weight(name="input_scale", shape=(3 + K,),
                                           initializer="ones", trainable=False)
        self.output_scale = self.add_weight(name="output_scale", shape=(1 + 2 * K,),
                                            initializer="ones", trainable=False)
        self.w_maxwell = self.add_weight(name="w_maxwell", shape=(K,), **constant)
        self.built = True

    def _validate(self, x):
        width = 4 + self.num_moments
        if x.shape[-1] != width:
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

    def adapt(self, x, y, w_maxwell):
        """Sets the normalisation from training data and the Maxwellian moments of the encoder.

        Args:
            x: `(snapshots, num_x, 4 + K)` training inputs.
            y: `(snapshots, num_x, 2 + K)` targets `(q_hat, S_1..S_K, 1 / dx)`.
            w_maxwell: `(K,)` generalised moments of the Maxwellian.
        """
        if not self.built:
            self.build((None, 4 + self.num_moments))
        K, Ke = self.num_moments, self.num_even
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 3 or y.ndim != 3 or y.shape[-1] != 2 + K:
            raise ValueError(f"`adapt` expects x (snapshots, num_x, {4 + K}) and y (snapshots, "
                             f"num_x, {2 + K}); received {x.shape} and {y.shape}")
        w_maxwell = np.array(w_maxwell, dtype=np.float64)
        w_maxwell[Ke:] = 0.0  # odd moments of the (even) Maxwellian vanish
        z = self.features(x.reshape(-1, x.shape[-1]))
        shift = np.concatenate([z[:, :3].mean(axis=0), w_maxwell])
        scale = np.sqrt(np.mean((z - shift) ** 2, axis=0))
        rho = x[..., 0].reshape(-1)
        T = z[:, 1]
        source = np.sqrt(np.mean((y[..., 1:1 + K].reshape(-1, K) / rho[:, None]) ** 2, axis=0))
        length = 0.1 * x.shape[1] / np.mean(y[..., -1])  # a tenth of the domain
        out_scale = np.concatenate([[np.sqrt(np.mean(y[..., 0] ** 2))],
                                    source * length / np.mean(np.exp(0.5 * T)), source])
        self.input_shift.assign(shift)
        self.input_scale.assign(1.0 / np.maximum(scale, 1e-8))
        self.output_scale.assign(np.maximum(out_scale, 1e-8))
        self.w_maxwell.assign(w_maxwell)
        return self

    def _symmetric(self, z):
        p_in = ops.convert_to_tensor(self._input_parity, self.compute_dtype)
        p_out = ops.convert_to_tensor(self._output_parity, self.compute_dtype)
        return 0.5 * (self.net(z) + p_out * self.net(p_in * z))

    def call(self, x):
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, 4 + self.num_moments))
        rho = x[:, 0]
        u = x[:, 1] / rho
        T = (2.0 * x[:, 2] - rho * u * u) / rho
        z = ops.concatenate([ops.stack([ops.log(rho), ops.log(T), ops.log(x[:, -1])], axis=1),
                             x[:, 3:-1]], axis=1)
        z = (z - self.input_shift) * self.input_scale
        z_eq = ops.concatenate([z[:, :3], ops.zeros_like(z[:, 3:])], axis=1)
        h = self._symmetric(z)
        # The heat flux of a Maxwellian is zero: subtract its value at W = W_M.
        heat = h[:, :1] - self._symmetric(z_eq)[:, :1]
        out = ops.concatenate([heat, h[:, 1:]], axis=1) * self.output_scale
        return ops.reshape(out, (*shape[:-1], 1 + 2 * self.num_moments))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Heat-flux misfit plus the residual of the W equation, both normalised."""
        del sample_weight, training
        K = self.num_moments
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        y = ops.convert_to_tensor(y, dtype=self.compute_dtype)
        rho = x[..., 0]
        u = x[..., 1] / rho
        T = (2.0 * x[..., 2] - rho * u * u) / rho
        W = x[..., 3:3 + K]
        q_hat, g_hat, r_hat = y_pred[..., 0], y_pred[..., 1:1 + K], y_pred[..., 1 + K:]
        G = (rho * u)[..., None] * W + (rho * ops.sqrt(T))[..., None] * g_hat
        dGdx = (ops.roll(G, -1, axis=1) - ops.roll(G, 1, axis=1)) * (0.5 * y[..., -1:])
        residual = (y[..., 1:1 + K] + dGdx) / rho[..., None] - r_hat
        heat = ops.mean(ops.square((q_hat - y[..., 0]) / self.output_scale[0]))
        loss = heat + ops.mean(ops.square(residual / self.output_scale[1 + K:]))
        # Per-replica mean: gradients are summed over replicas, the logged value is unscaled.
        import tensorflow as tf

        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def numpy_closure(self):
        """A NumPy snapshot of the network for `MomentSolver` (`(rho, T, W, eps)` calls)."""
        return NumpyClosure(self)

    def get_config(self):
        return {**super().get_config(), "num_moments": self.num_moments, "units": self.units,
                "activation": self.activation}


class NumpyClosure:
    """`MomentClosure` evaluated in NumPy from a copy of its weights (fast for small batches).

    Call: `(rho, T, W, eps) -> (q_hat, G_hat, R_hat)` with shapes `(n,)`, `(n, K)`, `(n, K)`.
    """

    def __init__(self, closure):
        self.num_moments = closure.num_moments
        self.num_even = closure.num_even
        self._layers = [(np.asarray(layer.kernel, np.float64), np.asarray(layer.bias, np.float64))
                        for layer in closure.net.layers]
        self._act = _NUMPY_ACTIVATIONS[closure.activation]
        get = lambda w: np.asarray(keras.ops.convert_to_numpy(w), np.float64)  # noqa: E731
        self._shift, self._scale = get(closure.input_shift), get(closure.input_scale)
        self._out_scale = get(closure.output_scale)
        self.w_maxwell = get(closure.w_maxwell)
        self._p_in = closure._input_parity
        self._p_out = closure._output_parity

    def _net(self, z):
        for i, (kernel, bias) in enumerate(self._layers):
            z = z @ kernel + bias
            if i < len(self._layers) - 1:
                z = self._act(z)
        return z

    def __call__(self, rho, T, W, eps):
        n = np.shape(rho)[0]
        K = self.num_moments
        z = np.concatenate([np.stack([np.log(rho), np.log(T), np.full(n, np.log(eps))], axis=1),
                            W], axis=1)
        z = (z - self._shift) * self._scale
        z_eq = np.concatenate([z[:, :3], np.zeros_like(z[:, 3:])], axis=1)
        both = self._net(np.concatenate([z, self._p_in * z, z_eq, self._p_in * z_eq], axis=0))
        h = 0.5 * (both[:n] + self._p_out * both[n:2 * n])
        h[:, 0] -= 0.5 * (both[2 * n:3 * n, 0] + self._p_out[0] * both[3 * n:, 0])
        h *= self._out_scale
        return h[:, 0], h[:, 1:1 + K], h[:, 1 + K:]
