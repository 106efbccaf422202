r"""The (extended) method of successive approximations: training a ResNet as a control problem.

A residual network $x_{t+1} = g_t(x_t, \theta_t) = x_t + \delta\,\sigma(x_t W_t + b_t)$,
$t = 0..T-1$, is a discrete control system with the controls $\theta_t = (W_t, b_t)$. Training
minimises $J(\theta) = \frac1N\sum_i \Phi(x^i_T, y^i) + \sum_t R(\theta_t)$ with
$R(\theta) = \gamma\|\theta\|^2$. With the Hamiltonian
$H_t(x, p, \theta) = p\cdot g_t(x, \theta)$, the discrete Pontryagin maximum principle says that
optimal controls maximise $\frac1N\sum_i H_t(x^i_t, p^i_{t+1}, \theta) - R(\theta)$ along the
states $x_{t+1} = \nabla_p H_t$ and the costates $p_t = \nabla_x H_t(x_t, p_{t+1}, \theta_t)$,
$p_T = -\nabla_x\Phi(x_T, y)$ (the back-propagated gradients, with a minus sign).

The method of successive approximations (MSA) alternates a forward pass (states), a backward pass
(costates) and the maximisation of the Hamiltonian in each layer. The basic MSA (`rho = 0`) can
diverge; the extended MSA of Li, Chen, Tai and E maximises the extended Hamiltonian
$$\tilde H_t = \frac1N\sum_i\Big[H_t(x^i_t, p^i_{t+1}, \theta)
 - \frac\rho2\|x^i_{t+1} - g_t(x^i_t,\theta)\|^2
 - \frac\rho2\|p^i_t - \nabla_x H_t(x^i_t, p^i_{t+1}, \theta)\|^2\Big] - R(\theta),$$
whose penalties keep the new controls where the frozen states and costates stay valid; for
`rho` large enough every iteration decreases $J$.

Reference: Qianxiao Li, Long Chen, Cheng Tai, Weinan E, "Maximum principle based algorithms for
deep learning", JMLR 18 (2018); E, Ma, Wu, "Machine learning from a continuous viewpoint" (2020),
section 5.5.
"""


import keras
import tensorflow as tf
from keras import ops

from mlcmk._validation import check_number, check_positive_int

TERMINAL_LOSSES = ("mse", "softmax_cross_entropy")
READOUTS = ("sum", "slice")


def _replicas():
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return None, 0, 1
    return ctx, ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def _all_gather(value):
    """Concatenates `value` over the replicas along axis 0 (equal local sizes), any strategy."""
    ctx, replica, replicas = _replicas()
    if replicas == 1:
        return value
    slot = ops.cast(ops.one_hot(replica, replicas), value.dtype)
    slot = ops.reshape(slot, (replicas,) + (1,) * len(value.shape))
    stacked = ctx.all_reduce(tf.distribute.ReduceOp.SUM, slot * value[None])
    return ops.reshape(stacked, (-1, *value.shape[1:]))


@keras.saving.register_keras_serializable(package="mlcmk")
class ResidualControlNetwork(keras.Model):
    r"""Residual network $x_{t+1} = x_t + \delta\,\sigma(x_t W_t + b_t)$ seen as a control system.

    The input of width `d` is lifted to `width` by repetition (`width` must be a multiple of
    `d`); the output is the sum of the final state's coordinates (`readout="sum"`, one output)
    or its first `output_dim` coordinates (`readout="slice"`). The controls are stacked:
    `kernel` of shape `(T, D, D)`, `bias` `(T, D)`. Trained by gradient descent with any Keras
    optimizer on $J = \frac1N\sum_i\Phi_i + \gamma\sum_t\|\theta_t\|^2$ (`train_step`);
    `ExtendedMSA` trains the same network by the maximum principle.

    Args:
        num_layers: positive int `T`.
        width: positive int `D`, width of the state.
        step_size: float `delta > 0`.
        activation: activation name or callable `sigma` (elementwise).
        readout: `"sum"` or `"slice"`.
        output_dim: positive int (1 for `"sum"`).
        terminal_loss: `"mse"` (`Phi = |f(x) - y|^2`) or `"softmax_cross_entropy"` (integer
            labels, the outputs are logits).
        regularization: float `gamma >= 0`.
        kernel_initializer: initializer of `W` and `b`; `"zeros"` as in the paper's toy.
        **kwargs: base `keras.Model` arguments.

    Input shape: `(batch, d)`. Output shape: `(batch, output_dim)`.
    """

    def __init__(self, num_layers=20, width=5, step_size=0.25, activation="tanh", readout="sum",
                 output_dim=1, terminal_loss="mse", regularization=1e-3,
                 kernel_initializer="zeros", **kwargs):
        num_layers = check_positive_int("num_layers", num_layers)
        width = check_positive_int("width", width)
        output_dim = check_positive_int("output_dim", output_dim)
        check_number("step_size", step_size, 0, strict=True)
        check_number("regularization", regularization, 0)
        if readout not in READOUTS:
            raise ValueError(f"`readout` must be one of {READOUTS}; received readout={readout!r}")
        if readout == "sum" and output_dim != 1:
            raise ValueError(f"readout='sum' has one output; received output_dim={output_dim}")
        if readout == "slice" and output_dim > width:
            raise ValueError(f"`output_dim` must be <= width={width}; received {output_dim}")
        if terminal_loss not in TERMINAL_LOSSES:
            raise ValueError(f"`terminal_loss` must be one of {TERMINAL_LOSSES}; "
                             f"received terminal_loss={terminal_loss!r}")
        super().__init__(**kwargs)
        # === Config ===
        self.num_layers = int(num_layers)
        self.width = int(width)
        self.step_size = float(step_size)
        self.activation = keras.activations.get(activation)
        self.readout = readout
        self.output_dim = int(output_dim)
        self.terminal_loss = terminal_loss
        self.regularization = float(regularization)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None or self.width % d:
            raise ValueError(f"`width`={self.width} must be a multiple of the input dimension; "
                             f"received input_shape={tuple(input_shape)}")
        self.input_dim = int(d)
        self.kernel = self.add_weight(name="kernel", initializer=self.kernel_initializer,
                                      shape=(self.num_layers, self.width, self.width))
        self.bias = self.add_weight(name="bias", initializer=self.kernel_initializer,
                                    shape=(self.num_layers, self.width))
        self.built = True

    def _build_from(self, x):
        if not self.built and hasattr(x, "shape"):
            self.build((None, *x.shape[1:]))

    def fit(self, x=None, y=None, **kwargs):
        self._build_from(x)  # the custom steps never call the model on symbolic inputs
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        self._build_from(x)
        return super().evaluate(x, y, **kwargs)

    # ------------------------------------------------------------------ dynamics
    def lift(self, inputs):
        return ops.tile(inputs, (1, self.width // self.input_dim))

    def layer_map(self, x, kernel, bias):
        """`g(x, theta) = x + delta * sigma(x W + b)`; broadcasts over leading axes."""
        return x + self.step_size * self.activation(ops.matmul(x, kernel) + bias[..., None, :])

    def output(self, state):
        if self.readout == "sum":
            return ops.sum(state, axis=-1, keepdims=True)
        return state[..., : self.output_dim]

    def forward_states(self, inputs):
        """The states `[x_0, ..., x_T]` (a list of `(batch, D)` tensors)."""
        states = [self.lift(ops.cast(inputs, self.compute_dtype))]
        for t in range(self.num_layers):
            states.append(self.layer_map(states[-1], self.kernel[t], self.bias[t]))
        return states

    def call(self, inputs):
        return self.output(self.forward_states(inputs)[-1])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def sample_losses(self, state, y):
        """Per-sample terminal losses `Phi_i`, shape `(batch,)`."""
        out = self.output(state)
        if self.terminal_loss == "mse":
            y = ops.reshape(ops.cast(y, out.dtype), (-1, self.output_dim))
            return ops.sum(ops.square(out - y), axis=-1)
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        return keras.losses.sparse_categorical_crossentropy(labels, out, from_logits=True)

    def regularizer(self, kernel=None, bias=None):
        """`gamma * (|W|^2 + |b|^2)`, per layer when `kernel` has a leading layer axis."""
        kernel = self.kernel if kernel is None else kernel
        bias = self.bias if bias is None else bias
        return self.regularization * (ops.sum(ops.square(kernel), axis=(-2, -1))
                                      + ops.sum(ops.square(bias), axis=-1))

    def objective(self, x, y):
        """`J = mean_i Phi_i + gamma * sum_t |theta_t|^2`."""
        states = self.forward_states(x)
        return ops.mean(self.sample_losses(states[-1], y)) + ops.sum(self.regularizer())

    def costates(self, states, y):
        r"""Costates `[p_0, ..., p_T]`: $p_T = -\nabla\Phi$, $p_t = \nabla_x H_t(x_t, p_{t+1})$."""
        x_final = states[-1]
        with tf.GradientTape() as tape:
            tape.watch(x_final)
            total = ops.sum(self.sample_losses(x_final, y))
        costates = [-tape.gradient(total, x_final)]
        for t in reversed(range(self.num_layers)):
            costates.insert(0, self.hamiltonian_state_gradient(
                states[t], costates[0], self.kernel[t], self.bias[t]))
        return costates

    def hamiltonian_state_gradient(self, x, p, kernel, bias):
        r"""$\nabla_x (p\cdot g(x,\theta)) = p + \delta\,(p\odot\sigma'(xW+b))W^T$ (batched)."""
        z = ops.matmul(x, kernel) + bias[..., None, :]
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = ops.sum(self.activation(z))
        slope = tape.gradient(s, z)  # sigma'(z): the activation acts elementwise
        return p + self.step_size * ops.matmul(p * slope, ops.swapaxes(kernel, -1, -2))

    # ------------------------------------------------------------------ gradient training
    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        x, y = data[0], data[1]
        _, _, replicas = _replicas()
        with tf.GradientTape() as tape:
            states = self.forward_states(x)
            objective = ops.mean(self.sample_losses(states[-1], y)) + ops.sum(self.regularizer())
            # The risk is a per-replica mean; the regulariser is shared by the replicas.
            scaled = objective / replicas
        variables = [self.kernel, self.bias]
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        # J at the controls the step started from, as ExtendedMSA logs it.
        self.loss_tracker.update_state(objective)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y = data[0], data[1]
        self.loss_tracker.update_state(self.objective(x, y))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "width": self.width,
            "step_size": self.step_size,
            "activation": keras.activations.serialize(self.activation),
            "readout": self.readout,
            "output_dim": self.output_dim,
            "terminal_loss": self.terminal_loss,
            "regularization": self.regularization,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="mlcmk")
class ExtendedMSA(ResidualControlNetwork):
    r"""A `ResidualControlNetwork` trained by the extended method of successive approximations.

    Each `train_step` (one iteration on the batch) runs the forward pass storing the states,
    the backward pass for the costates, and then maximises the extended Hamiltonian of every
    layer with states and costates frozen. The per-layer problems are independent, so they are
    solved at once as one batch of `T` problems by TensorFlow Probability's L-BFGS
    (`lbfgs_iterations` iterations, warm-started at the current controls plus a Gaussian
    perturbation of size `perturbation`, seeded by (`seed`, iteration)). `rho = 0` is the
    basic MSA. The new controls are written through `SGD(1.0)` with the gradient
    `theta_old - theta_new` (so `fit`, checkpoints and `tf.distribute` work unchanged); under a
    strategy the replicas' batches are gathered and every replica solves the same problems.
    The logged `loss` is `J` at the controls the iteration started from.

    Args:
        rho: float >= 0, weight of the two penalties.
        lbfgs_iterations: positive int, L-BFGS iterations per layer and step.
        perturbation: float >= 0, standard deviation of the warm-start perturbation.
        seed: int >= 0.
        Other arguments: as `ResidualControlNetwork` (paper defaults for the sin x toy).

    Reference: Li, Chen, Tai, E, JMLR 18 (2018), algorithm 2 (E-MSA).
    """

    def __init__(self, *args, rho=1.0, lbfgs_iterations=10, perturbation=0.005, seed=0,
                 **kwargs):
        check_number("rho", rho, 0)
        lbfgs_iterations = check_positive_int("lbfgs_iterations", lbfgs_iterations)
        check_number("perturbation", perturbation, 0)
        check_positive_int("seed", seed, 0)
        super().__init__(*args, **kwargs)
        self.rho = float(rho)
        self.lbfgs_iterations = int(lbfgs_iterations)
        self.perturbation = float(perturbation)
        self.seed = int(seed)

    def compile(self, optimizer="auto", **kwargs):
        """Compiles with `SGD(1.0)`, the carrier of the MSA update; `optimizer` must be "auto"."""
        if optimizer != "auto":
            raise ValueError("ExtendedMSA writes the maximisers through SGD(1.0); received "
                             f"optimizer={optimizer!r}. Use ResidualControlNetwork for "
                             "gradient-based optimizers.")
        super().compile(optimizer=keras.optimizers.SGD(1.0), **kwargs)

    def get_compile_config(self):
        return {"optimizer": "auto"}

    def compile_from_config(self, config):
        self.compile()

    def extended_hamiltonian(self, theta, states, costates):
        r"""Batched $-\tilde H_t$ (to be minimised) for `theta` of shape `(T, D*D + D)`.

        `states` and `costates` are the stacked `(T + 1, N, D)` tensors of the frozen pass.
        Returns shape `(T,)`.
        """
        d = self.width
        kernel = ops.reshape(theta[:, : d * d], (-1, d, d))
        bias = theta[:, d * d:]
        x_now, x_next = states[:-1], states[1:]
        p_now, p_next = costates[:-1], costates[1:]
        mapped = self.layer_map(x_now, kernel, bias)
        value = ops.mean(ops.sum(p_next * mapped, axis=-1), axis=-1) - self.regularizer(
            kernel, bias)
        if self.rho:
            state_gap = ops.sum(ops.square(x_next - mapped), axis=-1)
            grad_x = self.hamiltonian_state_gradient(x_now, p_next, kernel, bias)
            costate_gap = ops.sum(ops.square(p_now - grad_x), axis=-1)
            value = value - 0.5 * self.rho * ops.mean(state_gap + costate_gap, axis=-1)
        return -value

    def msa_update(self, x, y):
        """One (E-)MSA iteration on `(x, y)`: returns `(J at the old controls, new theta)`."""
        import tensorflow_probability as tfp

        states = self.forward_states(x)
        loss = ops.mean(self.sample_losses(states[-1], y)) + ops.sum(self.regularizer())
        costates = self.costates(states, y)
        states = ops.stack(states)
        costates = ops.stack(costates)
        theta = ops.concatenate(
            [ops.reshape(self.kernel, (self.num_layers, -1)), self.bias], axis=1)
        start = theta
        if self.perturbation:
            step = ops.cast(self.optimizer.iterations, "int32")
            seed = ops.stack([ops.cast(self.seed, "int32"), step])
            start = theta + self.perturbation * tf.random.stateless_normal(
                tuple(theta.shape), seed, dtype=theta.dtype)

        def value_and_gradients(position):
            with tf.GradientTape() as tape:
                tape.watch(position)
                values = self.extended_hamiltonian(position, states, costates)
                total = ops.sum(values)  # the layers are independent: one gradient for all
            return values, tape.gradient(total, position)

        result = tfp.optimizer.lbfgs_minimize(
            value_and_gradients, initial_position=start,
            max_iterations=self.lbfgs_iterations, num_correction_pairs=10, tolerance=0.0,
            x_tolerance=0.0, f_relative_tolerance=0.0)
        new_theta = result.position
        # A failed line search can leave non-finite values: keep the old controls then.
        new_theta = ops.where(ops.isfinite(new_theta), new_theta, theta)
        return loss, theta, new_theta

    def train_step(self, data):
        x, y = data[0], data[1]
        _, _, replicas = _replicas()
        x = _all_gather(ops.convert_to_tensor(x))
        y = _all_gather(ops.convert_to_tensor(y))
        loss, theta, new_theta = self.msa_update(x, y)
        delta = (theta - new_theta) / replicas
        d = self.width
        grads = [ops.reshape(delta[:, : d * d], self.kernel.shape), delta[:, d * d:]]
        self.optimizer.apply(grads, [self.kernel, self.bias])
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        return {**super().get_config(), "rho": self.rho,
                "lbfgs_iterations": self.lbfgs_iterations,
                "perturbation": self.perturbation, "seed": self.seed}
