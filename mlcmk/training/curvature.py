r"""Curvature of the squared loss: the largest Gauss-Newton eigenvalue, for choosing GD steps."""


import keras
import numpy as np
import tensorflow as tf

from mlcmk._validation import check_positive_int, check_positive_number


def gauss_newton_max_eigenvalue(model, x, iterations=500, rtol=1e-7, seed=0):
    r"""Largest eigenvalue of the Gauss-Newton matrix of the mean-squared error at the weights.

    For the loss $R(\theta) = \frac1N\sum_{k=1}^N (f_k(\theta) - y_k)^2$ over the $N$ entries of
    `model(x)`, the Gauss-Newton matrix is $G = \frac2N J^\top J$ with $J = \partial f/\partial
    \theta$ (the Hessian without the residual term; it does not depend on `y`). Its largest
    eigenvalue is $\frac2N\lambda_{\max}(JJ^\top)$, found by power iteration on the $N$-vector
    side, each iteration one vector-Jacobian and one (forward-mode) Jacobian-vector product (no
    $J$ is formed).
    Full-batch gradient descent on a quadratic with this Hessian is stable for a learning rate
    below $2/\lambda_{\max}$; a rate $c/\lambda_{\max}$, $0 < c < 2$, is the usual choice.

    For a `ParticleWassersteinFlow` the raw parameters move with rate `time_step * m`, so the
    stable flow-time step is $c/(m\lambda_{\max})$ with $\lambda_{\max}$ of the network.

    Args:
        model: a built Keras model with trainable variables.
        x: array `(n, ...)`, the inputs (all of them: full batch).
        iterations: positive int, most power iterations.
        rtol: float > 0, stop when the eigenvalue estimate changes by less than `rtol` relatively.
        seed: int >= 0, seed of the random start vector.

    Returns:
        `(eigenvalue, iterations_done)`: a Python float and int.
    """
    iterations = check_positive_int("iterations", iterations)
    rtol = check_positive_number("rtol", rtol)
    seed = check_positive_int("seed", seed, 0)
    if not model.built or not model.trainable_variables:
        raise ValueError("`model` must be built and have trainable variables")
    dtype = model.compute_dtype
    x = tf.convert_to_tensor(np.asarray(x), dtype=dtype)
    variables = model.trainable_variables

    @tf.function
    def jjt(u):
        with tf.GradientTape() as tape:
            s = tf.reduce_sum(model(x) * u)
        jt_u = tape.gradient(s, variables)
        with tf.autodiff.ForwardAccumulator([v.value for v in variables], jt_u) as accumulator:
            out = model(x)
        return accumulator.jvp(out)

    shape = tuple(keras.ops.shape(model(x[:1])))[1:]
    rng = np.random.default_rng(seed)
    u = tf.constant(rng.standard_normal((x.shape[0], *shape)), dtype=dtype)
    u = u / tf.norm(u)
    value = 0.0
    done = 0
    for done in range(1, iterations + 1):
        w = jjt(u)
        new = float(tf.reduce_sum(u * w))
        norm = tf.norm(w)
        if float(norm) == 0.0:
            return 0.0, done
        u = w / norm
        if abs(new - value) <= rtol * abs(new):
            value = new
            break
        value = new
    count = int(np.prod((x.shape[0], *shape)))
    return 2.0 * value / count, done
