r"""Path norm, path-norm-regularised training, Rademacher complexity and random features.

For a two-layer network $f(x) = c(m)\sum_j a_j\,\sigma(w_j\cdot x + b_j)$ the path norm is
$\|\theta\|_P = c(m)\sum_j |a_j|\,(\|w_j\|_1 + |b_j|)$ (the bias is the weight of a constant
input 1). For the ReLU activation it bounds the Barron norm of $f$, and the regularised loss of
E, Ma and Wu (seed eq. (26)),
$$J_\lambda(\theta) = \hat L_n(\theta) + \lambda\sqrt{\log(2d)/n}\;\|\theta\|_P,$$
gives a priori error estimates of order $\|f^*\|_B^2/m + \|f^*\|_B\sqrt{\log(2d)/n}$.

Reference: Weinan E, Chao Ma, Lei Wu, "A priori estimates of the population risk for two-layer
neural networks", Comm. Math. Sci. (2019); "Machine learning from a continuous viewpoint" (2020).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int
from mlcmk.layers._scaling import width_factor
from mlcmk.models.scaled_resnet import ScaledResNet
from mlcmk.models.two_layer_network import TwoLayerNetwork


def _require_built(model, name="model"):
    if not model.built:
        raise ValueError(f"`{name}` must be built (call it once or call build()) first")


def two_layer_path_norm(model):
    r"""Path norm $c(m)\sum_j \sum_k |a_{jk}|\,(\|w_j\|_1 + |b_j|)$ of a `TwoLayerNetwork`.

    Differentiable (a tensor in the model's dtype), so it can be added to a loss.
    """
    if not isinstance(model, TwoLayerNetwork):
        raise TypeError(f"`model` must be a TwoLayerNetwork; received {type(model).__name__}")
    _require_built(model)
    w = ops.abs(model.hidden.kernel)  # (d, m)
    inner = ops.sum(w, axis=0)
    if model.hidden.use_bias:
        inner = inner + ops.abs(model.hidden.bias)
    outer = ops.sum(ops.abs(model.readout.kernel), axis=1)  # (m,)
    return model.readout._factor * ops.sum(inner * outer)


def resnet_path_norm(model):
    r"""Path norm of a `ScaledResNet` (E, Ma, Wu 2019, residual networks).

    With the constant input 1 appended to the residual stream (it carries the biases),
    $\|\theta\|_P = \mathbf 1^T |V|\,\prod_{l}(I + c\,|A_l|^T|W_l|^T)\,|U|\,\mathbf 1$,
    i.e. the sum over all input-output paths of the products of absolute weights, where the
    skip connections count with weight 1 and a block's paths carry its factor `c = 1/(L M)`.
    """
    if not isinstance(model, ScaledResNet):
        raise TypeError(f"`model` must be a ScaledResNet; received {type(model).__name__}")
    _require_built(model)
    # Row vector over (stream + constant) of the summed |paths| from all inputs, built forward.
    lift = ops.abs(model.lift.kernel)  # (d, D)
    paths = ops.sum(lift, axis=0)
    if model.lift.use_bias:
        paths = paths + ops.abs(model.lift.bias)
    paths = ops.concatenate([paths, ops.ones((1,), dtype=paths.dtype)])  # constant coordinate
    for block in model.blocks:
        inner = ops.concatenate(
            [ops.abs(block.inner_kernel), ops.abs(block.bias)[None, :]], axis=0
        )  # (D + 1, M)
        hidden = ops.matmul(paths[None, :], inner)[0]  # (M,)
        update = block._factor * ops.matmul(hidden[None, :], ops.abs(block.outer_kernel))[0]
        paths = paths + ops.concatenate([update, ops.zeros((1,), dtype=paths.dtype)])
    readout = ops.concatenate(
        [ops.abs(model.readout.kernel), ops.abs(model.readout.bias)[None, :]], axis=0
    )  # (D + 1, out)
    return ops.sum(ops.matmul(paths[None, :], readout))


def path_norm(model):
    """Path norm of a `TwoLayerNetwork` or a `ScaledResNet` (dispatches on the type)."""
    if isinstance(model, TwoLayerNetwork):
        return two_layer_path_norm(model)
    if isinstance(model, ScaledResNet):
        return resnet_path_norm(model)
    raise TypeError(
        f"`model` must be a TwoLayerNetwork or a ScaledResNet; received {type(model).__name__}"
    )


def path_norm_prefactor(lam, input_dim, num_samples):
    r"""The factor $\lambda\sqrt{\log(2d)/n}$ of the path norm in the regularised loss."""
    lam = check_number("lam", lam, 0)
    input_dim = check_positive_int("input_dim", input_dim)
    num_samples = check_positive_int("num_samples", num_samples)
    return lam * math.sqrt(math.log(2 * input_dim) / num_samples)


def regularized_loss(model, x, y, lam, num_samples=None):
    r"""Seed eq. (26): $\frac{1}{2n}\sum_i (f(x_i) - y_i)^2 + \lambda\sqrt{\log(2d)/n}\|\theta\|_P$.

    Args:
        model: a `TwoLayerNetwork` or `ScaledResNet`.
        x, y: training inputs `(n, d)` and targets `(n, out)`.
        lam: float `lambda >= 0`.
        num_samples: `n` of the prefactor; defaults to `len(x)` (pass the full training-set
            size when `x` is a minibatch).

    Returns:
        `(total, empirical_risk, path_norm)` as scalar tensors.
    """
    x = ops.convert_to_tensor(x, dtype=model.compute_dtype)
    y = ops.convert_to_tensor(y, dtype=model.compute_dtype)
    n = int(x.shape[0]) if num_samples is None else num_samples
    risk = 0.5 * ops.mean(ops.sum(ops.square(model(x) - y), axis=-1))
    norm = path_norm(model)
    return risk + path_norm_prefactor(lam, int(x.shape[-1]), n) * norm, risk, norm


@keras.saving.register_keras_serializable(package="mlcmk")
class PathNormRegularized(keras.Model):
    r"""Wraps a `TwoLayerNetwork` / `ScaledResNet` and trains it on the regularised loss (26).

    `train_step` minimises $\frac{1}{2}\mathrm{MSE} + \lambda\sqrt{\log(2d)/n}\|\theta\|_P$ with
    the optimizer given to `compile`; the logged metrics are `loss` (the total), `risk` and
    `path_norm`. Calling the wrapper calls the network.

    Args:
        network: the network to train.
        lam: float `lambda >= 0`.
        num_samples: positive int, the training-set size `n` in the prefactor.
        **kwargs: base `keras.Model` arguments.
    """

    def __init__(self, network, lam, num_samples, **kwargs):
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if not isinstance(network, (TwoLayerNetwork, ScaledResNet)):
            raise TypeError(
                "`network` must be a TwoLayerNetwork or a ScaledResNet; "
                f"received {type(network).__name__}"
            )
        super().__init__(**kwargs)
        path_norm_prefactor(lam, 1, num_samples)  # validates lam and num_samples
        self.network = network
        self.lam = float(lam)
        self.num_samples = int(num_samples)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.risk_tracker = keras.metrics.Mean(name="risk")
        self.norm_tracker = keras.metrics.Mean(name="path_norm")

    def build(self, input_shape):
        if not self.network.built:
            self.network.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.network(inputs)

    @property
    def metrics(self):
        return [self.loss_tracker, self.risk_tracker, self.norm_tracker]

    def _objective(self, x, y):
        risk = 0.5 * ops.mean(ops.sum(ops.square(self.network(x) - y), axis=-1))
        norm = path_norm(self.network)
        factor = path_norm_prefactor(self.lam, int(x.shape[-1]), self.num_samples)
        return risk, norm, factor

    def train_step(self, data):
        x, y = data[0], data[1]
        ctx = tf.distribute.get_replica_context()
        replicas = 1 if ctx is None else ctx.num_replicas_in_sync
        with tf.GradientTape() as tape:
            risk, norm, factor = self._objective(x, y)
            # The risk is a per-replica mean (averaged by the gradient sum / replicas); the
            # penalty is global, so every replica contributes 1/replicas of it.
            total = risk + factor * norm
            scaled = total / replicas
        variables = self.network.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(total)
        self.risk_tracker.update_state(risk)
        self.norm_tracker.update_state(norm)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        risk, norm, factor = self._objective(x, y)
        self.loss_tracker.update_state(risk + factor * norm)
        self.risk_tracker.update_state(risk)
        self.norm_tracker.update_state(norm)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "lam": self.lam,
            "num_samples": self.num_samples,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


# ---------------------------------------------------------------- Rademacher complexity
def _neuron_correlation_sup(x, eps, num_restarts, num_steps, rng):
    r"""Per row of `eps` (shape (S, n)): max over ||w||_1 = 1 of |1/n sum_i eps_i relu(w.x_i)|.

    A lower bound of the true supremum found by optimisation: the best of the 2d vertices
    $\pm e_k$ and of projected-gradient ascent from `num_restarts` random starts on the
    $\ell^1$ sphere, parametrised as $w = v/\|v\|_1$ (the objective is 0-homogeneous in $v$).
    """
    x = tf.constant(x, tf.float64)
    eps = tf.constant(eps, tf.float64)
    num_draws, n = eps.shape
    d = x.shape[1]

    def objective(w):  # w: (S, R, d) -> (S, R), both signs covered by the absolute value
        features = tf.nn.relu(tf.einsum("nd,srd->srn", x, w))
        return tf.abs(tf.einsum("srn,sn->sr", features, eps)) / n

    vertices = tf.concat([tf.eye(d, dtype=tf.float64), -tf.eye(d, dtype=tf.float64)], axis=0)
    best = tf.reduce_max(objective(tf.tile(vertices[None], [num_draws, 1, 1])), axis=1)

    v = tf.Variable(rng.standard_normal((num_draws, num_restarts, d)))

    @tf.function
    def ascend():
        for k in tf.range(num_steps):
            # Linearly decaying step: the objective is piecewise linear, so a fixed step
            # would end up cycling around the maximiser.
            step = 0.1 * (1.0 - tf.cast(k, tf.float64) / num_steps) + 1e-4
            with tf.GradientTape() as tape:
                w = v / tf.reduce_sum(tf.abs(v), axis=-1, keepdims=True)
                value = tf.reduce_sum(objective(w))
            grad = tape.gradient(value, v)
            # Normalised steps: the objective's scale varies with eps and n.
            norm = tf.norm(grad, axis=-1, keepdims=True) + 1e-300
            v.assign(v + step * tf.reduce_sum(tf.abs(v), axis=-1, keepdims=True) * grad / norm)
            v.assign(v / tf.reduce_sum(tf.abs(v), axis=-1, keepdims=True))
        w = v / tf.reduce_sum(tf.abs(v), axis=-1, keepdims=True)
        return tf.reduce_max(objective(w), axis=1)

    return np.maximum(best.numpy(), ascend().numpy())


def rademacher_complexity(
    x, path_norm_bound=1.0, num_draws=64, num_restarts=32, num_steps=200, seed=0
):
    r"""Monte Carlo estimate of the empirical Rademacher complexity of the path-norm ball.

    The class is $\mathcal F_Q = \{c(m)\sum_j a_j\,\mathrm{relu}(w_j\cdot x):\ \|\theta\|_P\le Q\}$.
    Its elements are the convex hull of $\pm Q\,\mathrm{relu}(w\cdot x)$ with $\|w\|_1 = 1$ (ReLU is
    positively homogeneous), so
    $\hat{\mathrm{Rad}}_n(\mathcal F_Q) = Q\,\mathbb E_\varepsilon\sup_{\|w\|_1=1}
    |\frac1n\sum_i\varepsilon_i\,\mathrm{relu}(w\cdot x_i)|$.
    The expectation over the signs is a Monte Carlo mean over `num_draws` draws; each supremum
    is maximised numerically (vertices `+-e_k` and projected-gradient ascent from random
    starts), which gives a lower bound of the supremum. Append a column of ones to `x` to
    include biases. The bound of E, Ma, Wu is $2Q\sqrt{2\ln(2d)/n}$ for $\|x_i\|_\infty\le 1$.

    Args:
        x: array `(n, d)`.
        path_norm_bound: `Q > 0`.
        num_draws: number of Rademacher sign vectors.
        num_restarts: random starts of the ascent per sign vector.
        num_steps: ascent steps.
        seed: int seed of the signs and the starts.

    Returns:
        dict with `estimate`, `standard_error` (of the Monte Carlo mean), `bound` and `n`, `d`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape (n, d); received shape {x.shape}")
    if not path_norm_bound > 0:
        raise ValueError(f"`path_norm_bound` must be > 0; received {path_norm_bound!r}")
    num_draws = check_positive_int("num_draws", num_draws)
    num_restarts = check_positive_int("num_restarts", num_restarts)
    num_steps = check_positive_int("num_steps", num_steps)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    eps = rng.choice([-1.0, 1.0], size=(num_draws, n))
    sups = path_norm_bound * _neuron_correlation_sup(x, eps, num_restarts, num_steps, rng)
    return {
        "estimate": float(np.mean(sups)),
        "standard_error": float(np.std(sups, ddof=1) / math.sqrt(num_draws)),
        "bound": float(2 * path_norm_bound * math.sqrt(2 * math.log(2 * d) / n)),
        "n": n,
        "d": d,
    }


# ---------------------------------------------------------------- random features
@keras.saving.register_keras_serializable(package="mlcmk")
class RandomFeatureModel(TwoLayerNetwork):
    r"""Random feature model: a `TwoLayerNetwork` whose inner weights are frozen at initialisation.

    Only the outer weights `a` are fitted, by minimum-norm least squares
    (`fit_least_squares`): $a = \Phi^+ y$ with $\Phi_{ij} = c(m)\,\sigma(w_j\cdot x_i + b_j)$,
    the interpolant of smallest $\|a\|_2$ when `m >= n`. This is the limit of gradient descent
    from `a = 0` on the linear least-squares problem. Arguments as `TwoLayerNetwork`.
    """

    def __init__(self, width, output_dim=1, activation="relu", scaling="mean_field", **kwargs):
        super().__init__(width, output_dim, activation=activation, scaling=scaling, **kwargs)
        self.hidden.trainable = False

    def features(self, x):
        """The scaled features `Phi` of shape `(n, m)` (NumPy, float64)."""
        x = np.asarray(x)
        if not self.built:
            self.build(x.shape)
        phi = keras.ops.convert_to_numpy(self.hidden(x.astype(self.hidden.compute_dtype)))
        return phi.astype(np.float64) * width_factor(self.scaling, self.width)

    def fit_least_squares(self, x, y, ridge=0.0):
        """Sets the outer weights to the minimum-norm (or ridge) least-squares solution.

        Args:
            x: inputs `(n, d)`.
            y: targets `(n,)` or `(n, output_dim)`.
            ridge: float >= 0; 0 gives the minimum-norm solution (pseudo-inverse).

        Returns:
            The training mean squared error after the fit.
        """
        if not ridge >= 0:
            raise ValueError(f"`ridge` must be >= 0; received ridge={ridge!r}")
        y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        if y.shape[1] != self.output_dim:
            raise ValueError(
                f"`y` must have {self.output_dim} column(s); received shape {y.shape}"
            )
        phi = self.features(x)
        if ridge > 0:
            a = np.linalg.solve(phi.T @ phi + ridge * np.eye(phi.shape[1]), phi.T @ y)
        else:
            a = np.linalg.lstsq(phi, y, rcond=None)[0]
        self.readout.kernel.assign(a.astype(self.readout.kernel.dtype))
        return float(np.mean((phi @ a - y) ** 2))
