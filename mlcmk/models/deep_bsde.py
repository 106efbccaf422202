r"""The Deep BSDE method for high-dimensional semilinear parabolic PDEs."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_positive_int, check_positive_ints
from mlcmk.layers.bsde_step import BSDEStep
from mlcmk.models.simulated_training import SimulatedTrainingModel
from mlcmk.problems.bsde.base import BSDEProblem, deserialize_problem, serialize_problem

Z_NETWORKS = ("gradient", "shared", "per_step")


@keras.saving.register_keras_serializable(package="mlcmk")
class StackedDense(keras.layers.Layer):
    """`num_stacks` independent dense layers applied to axis 1 at once: (B, S, i) -> (B, S, o).

    One einsum replaces S small matmuls; used for the per-time-step subnetworks of `DeepBSDE`.
    """

    def __init__(self, num_stacks, units, use_bias=True, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_stacks = int(num_stacks)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(self.num_stacks, input_shape[-1], self.units),
            initializer=self.kernel_initializer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.num_stacks, self.units),
                                        initializer="zeros")

    def call(self, inputs):
        out = ops.einsum("bsi,sio->bso", inputs, self.kernel)
        return out + self.bias if self.use_bias else out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "num_stacks": self.num_stacks, "units": self.units,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="mlcmk")
class StackedBatchNormalization(keras.layers.Layer):
    """Batch normalisation of (B, S, H) inputs with statistics per (step, unit) over the batch."""

    def __init__(self, momentum=0.99, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.bn = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon,
                                                  dtype=self.dtype_policy)

    def build(self, input_shape):
        self.bn.build((None, input_shape[1] * input_shape[2]))

    def call(self, inputs, training=None):
        s, h = inputs.shape[1], inputs.shape[2]
        out = self.bn(ops.reshape(inputs, (-1, s * h)), training=training)
        return ops.reshape(out, (-1, s, h))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


# Initial sharpness of the smooth-max (> 0) and smooth-min (< 0) features (`extremes=True`).
# Near T the gradient of a best-of payoff sits on the largest coordinate alone, one whose lead
# over the second is a fraction of the spread: the sharpnesses 16 and 32 and a deeper network
# of the features bring the learned Z to within ~4% of Var g(X_T) of the regression hedge on
# pricing_diff_rate (six sharpnesses up to 8 and 32 units: ~14%).
_EXTREME_SHARPNESS = (-8.0, -4.0, -2.0, 2.0, 4.0, 8.0, 16.0, 32.0)
_EXTREME_UNITS = (64, 64, 64)  # hidden widths of the network of the extreme features


@keras.saving.register_keras_serializable(package="mlcmk")
class DeepBSDE(SimulatedTrainingModel):
    r"""Deep BSDE solver: learns $u(0, x_0)$ and $Z = \sigma^T \nabla u$ along the forward paths.

    The forward process X of `problem` is simulated on its grid $t_0 < \dots < t_N$; the model
    starts from trainable $Y_0 \approx u(0, x_0)$ (and $Z_0$), steps
    $Y_{n+1} = Y_n - f(t_n, X_n, Y_n, Z_n)\,dt + Z_n \cdot dW_n$ with $Z_n$ from a network, and
    minimises $E|g(X_N) - Y_N|^2$. Paths do not depend on the network, so $Z_n$ for all steps is
    one batched computation; only the scalar Y recursion runs step by step.

    `z_network` chooses how $Z_n$ is parameterised:
    - `"gradient"` (default): one scalar network $\phi(t, x)$ shared by all steps, and
      $Z = \sigma^T \nabla_x \phi$ by automatic differentiation. Z is then a gradient, as it is in
      the PDE, and a wide first layer with orthogonal initialisation makes an isotropic quadratic
      part of $\phi$ (so $Z \propto x$) easy to reach. This is what learns Z on `hjb_lq`, where the
      original architecture is stuck at the trivial solution Z = 0.
      With `quadratic=True` (default) the potential also carries Taylor terms about the centre:
      the gradient there, $G(t)$ linear in t; an isotropic quadratic
      $\tfrac12 (q_0 + q_1 t/T) |\tilde x|^2$; and a small network of $(t, |\tilde x|^2)$. A
      finite set of random-direction features represents an isotropic quadratic only with a
      non-radial error (15% of |Z| on `hjb_lq` without these terms, 2% with them); the main
      network learns what the Taylor terms do not.
    - `"shared"`: one network $(t, x) \mapsto Z$ shared by all steps.
    - `"per_step"`: the original method, one subnetwork per time step (here batched into one
      einsum), with batch normalisation by default, output divided by d.

    Inputs of the networks are centred on the solution of the drift ODE $\dot m = \mu(t, m)$,
    $m(0) = x_0$ (the mean of $X_t$ for linear drift) and divided per step by the RMS $s_t$ of
    $X_t - m_t$ on the validation sample (both stored as weights). The "gradient" potential is
    $u \approx s_t^2 \Phi(t, (x - m_t)/s_t)$ plus a centre gradient $G(t) \cdot x$, so that in
    diffusive scaling $\Phi$ keeps one shape over time.

    Training draws `batch_size` fresh paths per step from stateless random numbers seeded by
    (`seed`, replica, iteration): different on every replica, reproducible, and continued
    correctly after a restart. `test_step` evaluates a fixed sample of `validation_size` paths.
    Call `fit(epochs=..., steps_per_epoch=...)` without data.

    Args:
        problem: a `BSDEProblem`, registered name or spec dict.
        z_network: `"gradient"`, `"shared"` or `"per_step"`.
        hidden_units: widths of the hidden layers; default (64,) for "gradient" and (d + 10,
            d + 10) otherwise.
        activation: hidden activation; default "softplus" for "gradient" (smooth, so that the
            gradient is) and "relu" otherwise.
        batch_norm: batch normalisation in the per-step subnetworks (default True for
            "per_step", and only available there).
        batch_size: global number of paths per training step.
        validation_size: number of paths of the fixed validation sample.
        y0_init: initial Y0: `"auto"` (the Y0 of the trivial solution Z = 0, from the backward
            recursion with Z = 0 along the validation paths), a float, or a `(low, high)` range
            drawn uniformly as in the original method.
        seed: int, seeds the weights, the validation sample and the training paths.
        quadratic: add the Taylor terms (centre gradient, isotropic quadratic, radial network) to
            the "gradient" potential.
        extremes: add smooth maxima and minima of the coordinates of $\tilde x$ (log-mean-exp
            at a few trainable sharpnesses of either sign) and a small network of them and t to
            the "gradient" potential: for terminal conditions of best-of / worst-of type such as
            `pricing_diff_rate` and `black_scholes_default_risk`. Default (None): on for the
            "gradient" network when the problem sets `extremal_terminal = True`.

    Example:
    ```python
    model = mlcmk.models.DeepBSDE("hjb_lq")
    model.compile(optimizer="auto")
    model.fit(epochs=20, steps_per_epoch=100, callbacks=[mlcmk.training.Y0Monitor()])
    model.y0_value(), model.problem.reference_value()
    ```
    Reference: Han, Jentzen, E, PNAS 115 (2018) 8505; E, Han, Jentzen, Commun. Math. Stat. 5 (2017).
    """

    def __init__(self, problem, z_network="gradient", hidden_units=None, activation=None,
                 batch_norm=None, batch_size=64, validation_size=256, y0_init="auto", seed=0,
                 quadratic=True, extremes=None, **kwargs):
        super().__init__(**kwargs)
        problem = deserialize_problem(problem)
        if not isinstance(problem, BSDEProblem):
            raise TypeError(f"`problem` must be a BSDEProblem; received {type(problem).__name__}")
        if z_network not in Z_NETWORKS:
            raise ValueError(f"`z_network` must be one of {Z_NETWORKS}; received "
                             f"z_network={z_network!r}")
        batch_size = check_positive_int("batch_size", batch_size)
        validation_size = check_positive_int("validation_size", validation_size)
        seed = check_positive_int("seed", seed, 0)
        d = problem.dim
        if hidden_units is None:
            hidden_units = (64,) if z_network == "gradient" else (d + 10, d + 10)
        if activation is None:
            activation = "softplus" if z_network == "gradient" else "relu"
        if batch_norm is None:
            batch_norm = z_network == "per_step"
        if batch_norm and z_network != "per_step":
            raise ValueError(f"`batch_norm=True` needs z_network='per_step'; received "
                             f"z_network={z_network!r}")
        if not (y0_init == "auto" or isinstance(y0_init, (int, float))
                or (isinstance(y0_init, (tuple, list)) and len(y0_init) == 2)):
            raise ValueError(f"`y0_init` must be 'auto', a float or a (low, high) pair; "
                             f"received y0_init={y0_init!r}")

        # === Config ===
        self.problem = problem
        self.z_network = z_network
        self.hidden_units = tuple(check_positive_ints("hidden_units", hidden_units))
        self.activation = activation
        self.batch_norm = bool(batch_norm)
        self.batch_size = int(batch_size)
        self.validation_size = int(validation_size)
        self.y0_init = list(y0_init) if isinstance(y0_init, (tuple, list)) else y0_init
        self.seed = int(seed)
        self.quadratic_term = bool(quadratic) and z_network == "gradient"
        if extremes is None:
            extremes = z_network == "gradient" and problem.extremal_terminal
        if extremes and z_network != "gradient":
            raise ValueError(f"`extremes=True` needs z_network='gradient'; received "
                             f"z_network={z_network!r}")
        self.extremes = bool(extremes)
        self.random_x0 = problem.x0_spread > 0
        self.first_z_step = 0 if self.random_x0 else 1
        self.num_z_steps = problem.num_steps - self.first_z_step
        grid = problem.time_grid()
        self._times = grid  # NumPy, N + 1 points

        # Fixed validation sample and input statistics (deterministic given the seed).
        dtype = keras.config.floatx()
        self._val_x, self._val_dw = problem.sample_paths(
            self.validation_size, (self.seed, 2**30), dtype=dtype)
        val_x = np.asarray(self._val_x, dtype="float64")
        # Input centre: the drift ODE dm/dt = mu(t, m) from x0, free of sampling noise (a sample
        # mean of a few hundred paths in 100 dimensions is off by several percent of |X - x0|
        # and shifts the centre from step to step). Input scale: one number, the RMS of
        # X_T - m_T, so that the normalisation keeps isotropic functions isotropic.
        mean = [problem.x0.astype("float64")]
        for n in range(problem.num_steps):
            m = np.asarray(problem.drift(grid[n], mean[-1][None]), dtype="float64")[0]
            mean.append(mean[-1] + m * problem.dt)
        self._x_mean_init = np.stack(mean)  # (N + 1, d)
        spread = np.sqrt(np.mean((val_x - self._x_mean_init) ** 2, axis=(0, 2)))  # (N + 1,)
        floor = 1e-3 * spread.max() if spread.max() > 0 else 1.0
        self._x_scale_init = np.maximum(spread, floor)
        terminal = np.asarray(problem.terminal(self._val_x[:, -1]), dtype="float64")
        self._trivial_loss = float(terminal.var())
        # Y0 is learned as y0_start + y_scale * offset: Adam moves each weight by about the
        # learning rate per step, so the offset in units of the spread of g(X_T) makes one
        # learning rate fit problems whose values are O(0.05) (Allen-Cahn) or O(50) (options).
        self._y_scale = float(max(terminal.std(), 0.1 * abs(terminal.mean()), 1e-6))
        if self.y0_init == "auto":
            # The Z = 0 solution along each validation path, by the backward recursion
            # Y_n = Y_{n+1} + f(t_n, X_n, Y_{n+1}, 0) dt from Y_N = g(X_N), averaged.
            y = ops.convert_to_tensor(terminal.astype(dtype))
            zeros = ops.zeros_like(self._val_x[:, 0])
            for n in reversed(range(problem.num_steps)):
                y = y + problem.generator(grid[n], self._val_x[:, n], y, zeros) * problem.dt
            self._y0_start = float(np.mean(np.asarray(y, dtype="float64")))
        elif isinstance(self.y0_init, list):
            low, high = self.y0_init
            self._y0_start = float(np.random.default_rng(self.seed).uniform(low, high))
        else:
            self._y0_start = float(self.y0_init)

        # === Layers ===
        init_seed = self.seed * 7919
        self.bsde_step = BSDEStep(problem, dtype=self.dtype_policy, name="bsde_step")
        self.z_layers = []
        if z_network == "per_step":
            s = self.num_z_steps
            if self.batch_norm:
                self.z_layers.append(StackedBatchNormalization(name="bn_in"))
            for i, units in enumerate(self.hidden_units):
                self.z_layers.append(StackedDense(
                    s, units, use_bias=not self.batch_norm, name=f"dense_{i}",
                    kernel_initializer=keras.initializers.GlorotUniform(init_seed + i)))
                if self.batch_norm:
                    self.z_layers.append(StackedBatchNormalization(name=f"bn_{i}"))
                self.z_layers.append(keras.layers.Activation(activation, name=f"act_{i}"))
            self.z_layers.append(StackedDense(
                s, d, use_bias=not self.batch_norm, name="dense_out",
                kernel_initializer=keras.initializers.GlorotUniform(init_seed + 99)))
            if self.batch_norm:
                self.z_layers.append(StackedBatchNormalization(name="bn_out"))
        else:
            for i, units in enumerate(self.hidden_units):
                # Orthogonal first layer: its features span all directions of x evenly.
                init = (keras.initializers.Orthogonal(seed=init_seed + i) if i == 0
                        else keras.initializers.GlorotUniform(seed=init_seed + i))
                self.z_layers.append(keras.layers.Dense(
                    units, activation=activation, kernel_initializer=init,
                    name=f"dense_{i}"))
            out_units = 1 if z_network == "gradient" else d
            # Zero output layer: training starts from Z = 0, the trivial solution.
            # (A constant added to phi does not change Z: no bias in the gradient network.)
            self.z_layers.append(keras.layers.Dense(out_units, kernel_initializer="zeros",
                                                    use_bias=z_network != "gradient",
                                                    name="dense_out"))
        self.radial_layers = []
        if self.quadratic_term:
            self.radial_layers = [
                keras.layers.Dense(16, activation="softplus", name="radial_dense",
                                   kernel_initializer=keras.initializers.GlorotUniform(
                                       init_seed + 77)),
                keras.layers.Dense(1, kernel_initializer="zeros", use_bias=False,
                                   name="radial_out")]
        self.centre_layers = []
        if self.quadratic_term:
            self.centre_layers = [
                keras.layers.Dense(d, kernel_initializer="zeros", name="centre_out")]
        self.extreme_layers = []
        if self.extremes:
            self.extreme_layers = [
                keras.layers.Dense(units, activation="softplus", name=f"extreme_dense_{i}",
                                   kernel_initializer=keras.initializers.GlorotUniform(
                                       init_seed + 88 + i))
                for i, units in enumerate(_EXTREME_UNITS)]
            self.extreme_layers.append(keras.layers.Dense(
                1, kernel_initializer="zeros", use_bias=False, name="extreme_out"))
        self.y0_layers = []
        if self.random_x0:
            for i, units in enumerate(self.hidden_units):
                self.y0_layers.append(keras.layers.Dense(
                    units, activation="softplus", name=f"y0_dense_{i}",
                    kernel_initializer=keras.initializers.GlorotUniform(init_seed + 50 + i)))
            self.y0_layers.append(keras.layers.Dense(
                1, kernel_initializer="zeros", name="y0_out"))

        self.loss_tracker = keras.metrics.Mean(name="loss")
        # Input shapes follow from the problem, so the model is built at once (fit, checkpoint
        # restore and export need the weights before the first call).
        self.build()

    # --- building -----------------------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:
            return
        d, n = self.problem.dim, self.problem.num_steps
        s_steps = self.num_z_steps
        self.x_mean = self.add_weight(
            name="x_mean", shape=(n + 1, d), trainable=False,
            initializer=keras.initializers.Constant(self._x_mean_init))
        self.x_scale = self.add_weight(
            name="x_scale", shape=(n + 1,), trainable=False,
            initializer=keras.initializers.Constant(self._x_scale_init))
        # Saved with the model, so that a reloaded model does not depend on re-sampling.
        self.y0_start = self.add_weight(name="y0_start", shape=(), trainable=False,
                                        initializer=keras.initializers.Constant(self._y0_start))
        self.y_scale = self.add_weight(name="y_scale", shape=(), trainable=False,
                                       initializer=keras.initializers.Constant(self._y_scale))
        if not self.random_x0:
            self.y0_offset = self.add_weight(name="y0_offset", shape=(), initializer="zeros")
            self.z0 = self.add_weight(name="z0", shape=(d,), initializer="zeros")
        else:
            shape = (None, d)
            for layer in self.y0_layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        if self.quadratic_term:
            self.quadratic = self.add_weight(name="quadratic", shape=(2,), initializer="zeros")
            self.radial_layers[0].build((None, s_steps, 2))
            self.radial_layers[1].build((None, s_steps, 16))
            self.centre_layers[0].build((None, s_steps, 1))
        if self.extremes:
            k = len(_EXTREME_SHARPNESS)
            self.extreme_sharpness = self.add_weight(
                name="extreme_sharpness", shape=(k,),
                initializer=keras.initializers.Constant(_EXTREME_SHARPNESS))
            shape = (None, s_steps, k + 1)
            for layer in self.extreme_layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        shape = (None, s_steps, d) if self.z_network == "per_step" else (None, s_steps, d + 1)
        for layer in self.z_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    # --- the solution -------------------------------------------------------------------------
    def _z_from_states(self, x, t, mean, scale, training=False):
        """Z for states x (B, S, d) at times t (S,), input centres `mean` (S, d), scales (S,)."""
        scale = ops.reshape(scale, (1, -1, 1))
        if self.z_network == "per_step":
            h = (x - mean) / scale
            for layer in self.z_layers:
                if isinstance(layer, StackedBatchNormalization):
                    h = layer(h, training=training)
                else:
                    h = layer(h)
            return h / self.problem.dim
        t_in = ops.broadcast_to(ops.reshape(t / self.problem.total_time, (1, -1, 1)),
                                (ops.shape(x)[0], ops.shape(x)[1], 1))

        def net(h):
            h = ops.concatenate([h, t_in], axis=-1)
            for layer in self.z_layers:
                h = layer(h)
            return h

        if self.z_network == "shared":
            return net((x - mean) / scale)
        # u(t, x) ~ s_t^2 Phi(t, (x - m_t) / s_t): in diffusive scaling Phi keeps one shape over
        # time, and grad_x u = s_t grad Phi.
        with tf.GradientTape() as tape:
            tape.watch(x)
            xn = (x - mean) / scale
            phi = ops.sum(net(xn))
            # Isotropic quadratic part 1/2 q(t) |x~|^2, q linear in t: the second-order
            # Taylor term of u about m_t, which the network only has to correct.
            if self.quadratic_term:
                r2 = ops.sum(xn**2, axis=-1, keepdims=True)
                q = self.quadratic[0] + self.quadratic[1] * t_in
                h = ops.concatenate([t_in, r2 / self.problem.dim], axis=-1)
                for layer in self.radial_layers:
                    h = layer(h)
                phi = phi + ops.sum(0.5 * q * r2 + h)
        grad = tape.gradient(phi, x) * scale**2
        if self.extremes:
            grad = grad + self._extreme_gradient(xn, t_in) * scale
        if self.quadratic_term:
            # grad u at the centre m_t, which the s_t-scaled part cannot give when s_t -> 0.
            h = t_in[:1, :, :]
            for layer in self.centre_layers:
                h = layer(h)
            # In units of spread(g(X_T)) / spread(X_T), the natural size of grad u.
            grad = grad + h * (self.y_scale / self.x_scale[-1])
        return self.problem.diffusion_apply(ops.reshape(t, (1, -1, 1)), x, grad)

    def _extreme_gradient(self, xn, t_in):
        """Gradient in x~ of the smooth-extremes part of the potential, (B, S, d).

        The part is a small network of t and the smooth maxima and minima of the coordinates,
        e_k = (1/b_k) log mean_i exp(b_k x~_i) for sharpnesses b_k of either sign: payoffs of
        best-of and worst-of type depend on x through one order statistic, which a few ridge
        functions w . x~ represent only coarsely in 100 dimensions. Its gradient is
        sum_k (d net / d e_k) softmax_i(b_k x~), written out with one pass of exponentials
        over (B, S, k, d): 10-25% cheaper in training than differentiating the log-sum-exp
        twice, and these exponentials are most of a step on `pricing_diff_rate`.
        """
        b = self.extreme_sharpness
        a = ops.expand_dims(xn, -2) * ops.expand_dims(b, -1)  # (B, S, k, d)
        a_max = ops.stop_gradient(ops.max(a, axis=-1, keepdims=True))
        e = ops.exp(a - a_max)
        total = ops.sum(e, axis=-1, keepdims=True)
        weights = e / total  # softmax over the coordinates = d e_k / d x~
        lse = (a_max + ops.log(total))[..., 0]
        feats = (lse - ops.log(ops.cast(self.problem.dim, xn.dtype))) / b  # (B, S, k)
        with tf.GradientTape() as tape:
            tape.watch(feats)
            h = ops.concatenate([t_in, feats], axis=-1)
            for layer in self.extreme_layers:
                h = layer(h)
            value = ops.sum(h)
        d_feats = tape.gradient(value, feats)  # (B, S, k)
        return ops.sum(ops.expand_dims(d_feats, -1) * weights, axis=-2)

    def _z_steps(self, x, training=False):
        """Z at all trained grid steps for paths x (B, N + 1, d); returns (B, S, d)."""
        a, b = self.first_z_step, self.problem.num_steps
        t = ops.cast(self._times[a:b], x.dtype)
        return self._z_from_states(x[:, a:b], t, self.x_mean[a:b], self.x_scale[a:b],
                                   training=training)

    @property
    def y0(self):
        """The learned Y0 = u(0, x0) as a scalar tensor (fixed x0 only)."""
        return self.y0_start + self.y_scale * self.y0_offset

    def initial_value(self, x0):
        """Y0 for starting points x0 of shape (B, d); returns (B,)."""
        if not self.random_x0:
            return ops.broadcast_to(ops.cast(self.y0, x0.dtype), ops.shape(x0)[:1])
        h = (x0 - self.x_mean[0]) / self.x_scale[0]
        for layer in self.y0_layers:
            h = layer(h)
        return self.y0_start + self.y_scale * h[:, 0]

    def y0_value(self):
        """The learned u(0, x0) as a float (fixed x0 only)."""
        if self.random_x0:
            raise ValueError("y0_value() needs a fixed x0; use initial_value(x0) with "
                             f"x0_spread={self.problem.x0_spread}")
        return float(ops.convert_to_numpy(self.y0))

    def z(self, t, x):
        """Z(t, x) = sigma^T grad u at the grid time nearest to t, for x of shape (B, d)."""
        x = ops.convert_to_tensor(x, self.compute_dtype)
        if x.shape[-1] != self.problem.dim:
            raise ValueError(f"`x` must have shape (batch, {self.problem.dim}) for "
                             f"{self.problem.name}; received shape {tuple(x.shape)}")
        n_steps = self.problem.num_steps
        n = ops.clip(ops.cast(ops.round(ops.cast(t, x.dtype) / self.problem.dt), "int32"),
                     0, n_steps - 1)
        if self.z_network == "per_step":
            a = self.first_z_step
            xs = ops.repeat(ops.expand_dims(x, 1), n_steps - a, axis=1)
            times = ops.cast(self._times[a:n_steps], x.dtype)
            zs = self._z_from_states(xs, times, self.x_mean[a:n_steps], self.x_scale[a:n_steps])
            z = ops.take(zs, ops.maximum(n - a, 0), axis=1)
        else:
            tn = ops.reshape(ops.cast(n, x.dtype) * self.problem.dt, (1,))
            mean = ops.expand_dims(ops.take(self.x_mean, n, axis=0), 0)
            scale = ops.reshape(ops.take(self.x_scale, n, axis=0), (1,))
            z = self._z_from_states(ops.expand_dims(x, 1), tn, mean, scale)[:, 0]
        if not self.random_x0:
            z0 = ops.broadcast_to(ops.cast(self.z0, x.dtype), ops.shape(x))
            z = ops.where(n <= 0, z0, z)
        return z

    def simulate(self, x, dw, training=False):
        """Runs the BSDE along given paths.

        Args:
            x: (B, N + 1, d) forward paths; dw: (B, N, d) their Brownian increments.

        Returns:
            `(y_N, z)`: Y at T, shape (B,), and Z at every step, shape (B, N, d).
        """
        x = ops.convert_to_tensor(x, self.compute_dtype)
        dw = ops.convert_to_tensor(dw, self.compute_dtype)
        n_steps, d = self.problem.num_steps, self.problem.dim
        if tuple(x.shape[1:]) != (n_steps + 1, d) or tuple(dw.shape[1:]) != (n_steps, d):
            raise ValueError(
                f"Paths must have shapes (batch, N + 1, d) = (batch, {n_steps + 1}, {d}) and "
                f"(batch, N, d) for {self.problem.name} with d={d}, N={n_steps}; received "
                f"x shape {tuple(x.shape)}, dw shape {tuple(dw.shape)}")
        z = self._z_steps(x, training=training)
        if not self.random_x0:
            z0 = ops.broadcast_to(ops.cast(self.z0, z.dtype), ops.shape(x[:, :1]))
            z = ops.concatenate([z0, z], axis=1)
        y = self.initial_value(x[:, 0])
        # Unstacked once: the gradient of N separate slices z[:, n] would be N dense (B, N, d)
        # tensors summed, O(N^2) work and memory per step (4x the steps cost 15x the time).
        xs, zs, dws = (ops.unstack(a, axis=1) for a in (x, z, dw))
        for n in range(n_steps):
            y = self.bsde_step(xs[n], y, zs[n], dws[n], t=float(self._times[n]))
        return y, z

    def call(self, inputs, training=False):
        """inputs: `(x, dw)` paths; returns Y_N of shape (B,)."""
        x, dw = inputs
        return self.simulate(x, dw, training=training)[0]

    def path_loss(self, x, dw, training=False):
        y_n, _ = self.simulate(x, dw, training=training)
        return ops.mean((self.problem.terminal(x[:, -1]) - y_n) ** 2)

    # --- training (fresh paths each step: SimulatedTrainingModel) --------------------------
    def draw_sample(self, num_paths, seed):
        return self.problem.sample_paths(num_paths, seed, dtype=self.compute_dtype)

    def sample_loss(self, sample, training=False):
        x, dw = sample
        return self.path_loss(x, dw, training=training)

    def validation_loss(self):
        return self.path_loss(ops.cast(self._val_x, self.compute_dtype),
                              ops.cast(self._val_dw, self.compute_dtype))

    def training_paths(self):
        """Fresh training paths `(x, dw)` for this replica and step (see `replica_sample`)."""
        return self.replica_sample()

    # --- diagnostics --------------------------------------------------------------------------
    @property
    def trivial_loss(self):
        """Var g(X_T) on the validation sample: the loss of Z = 0 with the best constant Y0."""
        return self._trivial_loss

    def validation_paths(self):
        """The fixed validation sample `(x, dw)` as NumPy arrays."""
        return np.asarray(self._val_x), np.asarray(self._val_dw)

    def z_errors(self, num_paths=64, exact_z=None):
        """Learned Z against the exact one on validation paths, per time step.

        Args:
            num_paths: number of validation paths used.
            exact_z: callable `(t, x) -> Z`; default `problem.exact_z`.

        Returns:
            A dict of lists over steps n = 1..N-1: `relative_l2` (sqrt(sum|Z - Z*|^2 /
            sum|Z*|^2)) and `cosine` (mean cosine between Z and Z*), or None without an exact Z.
        """
        exact_z = exact_z or self.problem.exact_z
        x, dw = self.validation_paths()
        x, dw = x[:num_paths], dw[:num_paths]
        _, z = self.simulate(ops.convert_to_tensor(x), ops.convert_to_tensor(dw))
        z = np.asarray(z, dtype="float64")
        rel, cos = [], []
        for n in range(1, self.problem.num_steps):
            ze = exact_z(self._times[n], x[:, n].astype("float64"))
            if ze is None:
                return None
            zl = z[:, n]
            rel.append(float(math.sqrt(np.sum((zl - ze) ** 2) / np.sum(ze**2))))
            norms = np.linalg.norm(zl, axis=-1) * np.linalg.norm(ze, axis=-1)
            cos.append(float(np.mean(np.sum(zl * ze, -1) / np.maximum(norms, 1e-300))))
        return {"relative_l2": rel, "cosine": cos}

    # --- serving ------------------------------------------------------------------------------
    def export_solution(self, path):
        """Exports a SavedModel with endpoints `y0()` (or `u0(x)` for random x0) and `z(t, x)`.

        The SavedModel needs TensorFlow only: `tf.saved_model.load(path).z(t, x)`.
        """
        dtype = self.compute_dtype
        d = self.problem.dim
        archive = keras.export.ExportArchive()
        archive.track(self)
        if self.random_x0:
            archive.add_endpoint("u0", lambda x0: self.initial_value(x0),
                                 input_signature=[tf.TensorSpec((None, d), dtype)])
        else:
            archive.add_endpoint("y0", lambda: ops.convert_to_tensor(self.y0),
                                 input_signature=[])
        archive.add_endpoint("z", lambda t, x: self.z(t, x),
                             input_signature=[tf.TensorSpec((), dtype),
                                              tf.TensorSpec((None, d), dtype)])
        archive.write_out(path, verbose=False)
        return path

    def get_config(self):
        return {**super().get_config(), "problem": serialize_problem(self.problem),
                "z_network": self.z_network, "hidden_units": list(self.hidden_units),
                "activation": self.activation, "batch_norm": self.batch_norm,
                "batch_size": self.batch_size, "validation_size": self.validation_size,
                "y0_init": self.y0_init, "seed": self.seed, "quadratic": self.quadratic_term,
                "extremes": self.extremes}
