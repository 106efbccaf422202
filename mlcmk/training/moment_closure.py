"""Training pipeline of the learned moment model: autoencoder, closure targets, closure, solve.

`train_moment_model(data)` fits a `MomentAutoencoder` to kinetic snapshots, computes the closure
targets from the same snapshots with the frozen encoder and fits a `MomentClosure`. The result,
a `LearnedMomentModel`, solves the moment system from a distribution `f0` with `MomentSolver`.
"""

import math
import threading
import time

import keras
import numpy as np

from mlcmk._plotting import subplots
from mlcmk._threads import in_worker_thread
from mlcmk._validation import check_bool, check_number, check_positive_int, check_positive_number
from mlcmk.models.moment_autoencoder import (
    MomentAutoencoder,
    check_numpy_dtype,
    normalised_quadrature,
)
from mlcmk.models.moment_closure import MomentClosure
from mlcmk.problems.kinetic.bgk import (
    primitive_from_conserved,
    slope_limiter,
)
from mlcmk.problems.kinetic.moment_solver import (
    MomentSolver,
    _flux,
    _source_quantities,
    _w_source,
    characteristic_speeds,
    check_numerical_flux,
    moment_step,
    relaxation_speed_factor,
    to_conserved,
    to_primitive,
)


def _batched(fn, x, batch_size=4096):
    return np.concatenate([keras.ops.convert_to_numpy(fn(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def kinetic_moments(autoencoder, f):
    """Exact moments and closure quantities of `f` `(n, num_v)` under the encoder's weights.

    Returns:
        dict of `rho, u, T` `(n,)`, `U` `(n, 3)`, `W` `(n, K)`, `q_hat` `(n,)` (heat flux over
        `rho T^{3/2}`), `G_hat` `(n, K)` (`int xi w f_hat`) and `a` `(n, 3, K)`
        (`int w'(xi) xi^m f_hat`, m = 0, 1, 2).
    """
    U, rho, u, T, xi, f_hat = normalised_quadrature(f, autoencoder.velocity_nodes,
                                                    autoencoder.dv)
    K = autoencoder.num_moments
    flat = xi.reshape(-1)
    w = _batched(autoencoder.weight_functions, flat).reshape(*xi.shape, K)
    dw = _batched(autoencoder.weight_derivatives, flat).reshape(*xi.shape, K)
    return {"rho": rho, "u": u, "T": T, "U": U,
            "W": np.einsum("nj,njk->nk", f_hat, w),
            "q_hat": 0.5 * np.sum(xi**3 * f_hat, axis=-1),
            "G_hat": np.einsum("nj,nj,njk->nk", xi, f_hat, w),
            "a": np.stack([np.einsum("nj,nj,njk->nk", xi**m, f_hat, dw) for m in range(3)],
                          axis=1)}


def closure_training_data(autoencoder, data):
    """Inputs `(n, 4 + K)` and exact outputs `(n, 1 + 4K)` of `MomentClosure` from snapshots.

    Every cell of every snapshot `data["f"]` is one sample: input `(rho, rho u, E, W, eps)`,
    output `(q_hat, G_hat, a_1, a_2, a_3)` computed from `f` by the grid quadrature.
    """
    f = data["f"]
    runs, snaps, nx, nv = f.shape
    m = kinetic_moments(autoencoder, f.reshape(-1, nv))
    eps = np.broadcast_to(data["eps"][:, None, None], (runs, snaps, nx)).reshape(-1)
    x = np.concatenate([m["U"], m["W"], eps[:, None]], axis=1)
    y = np.concatenate([m["q_hat"][:, None], m["G_hat"], m["a"].reshape(len(eps), -1)], axis=1)
    return x, y


def characteristic_summary(closure, rho, u, T, W, eps, tol=1e-6):
    """How hyperbolic a moment system is over cells `(rho, u, T, W)` (`(n,)`, W `(n, K)`).

    For a `MomentClosure` the quasi-linear matrix is exact (`characteristic_matrix`, automatic
    differentiation); for other closures (`NumpyClosure`, `EulerClosure`) it is the
    finite-difference `quasilinear_matrix`, whose error grows with the closure's curvature.

    Args:
        eps: Knudsen number, a float or one per cell `(n,)`.

    Returns:
        dict: `complex_fraction` (cells whose characteristic speeds have `|Im lambda| >
        tol sqrt(T)`: the system is not hyperbolic there), `max_imag` (largest `|Im lambda| /
        sqrt(T)`) and `max_speed_factor` (largest `|Re lambda - u| / sqrt(T)`, the factor a
        Lax–Friedrichs bound needs).
    """
    return _summary(_thermal_speeds(closure, rho, u, T, W, eps), tol)


def _thermal_speeds(closure, rho, u, T, W, eps):
    """Characteristic speeds `(n, 3 + K)` relative to `u`, in units of `sqrt(T)`."""
    rho, u, T, W = (np.asarray(a, np.float64) for a in (rho, u, T, W))
    eps = np.broadcast_to(np.asarray(eps, np.float64), rho.shape)
    if not isinstance(closure, MomentClosure):
        speeds = np.empty((len(rho), 3 + W.shape[1]), complex)
        for value in np.unique(eps):
            cells = eps == value
            speeds[cells] = characteristic_speeds(
                closure, to_conserved(rho[cells], u[cells], T[cells], W[cells]), value)
        return (speeds - u[:, None]) / np.sqrt(T)[:, None]
    import tensorflow as tf

    matrix = tf.function(characteristic_matrix(closure), reduce_retracing=True)
    return np.concatenate([np.linalg.eigvals(matrix(*(
        tf.constant(a[i:i + 4096], closure.compute_dtype) for a in (rho, T, W, eps))).numpy())
        for i in range(0, len(rho), 4096)])


def _summary(speeds, tol):
    imag = np.abs(speeds.imag)
    return {"complex_fraction": float(np.mean(imag.max(axis=1) > tol)),
            "max_imag": float(imag.max()),
            "max_speed_factor": float(np.abs(speeds.real).max())}


def kinetic_states(model, data):
    """Moments of every cell of `f0` and of every snapshot of every run of `data`.

    Returns:
        dict of `rho, u, T, eps` `(runs, cells)` and `W` `(runs, cells, K)`, with `cells =
        (1 + snapshots) * num_x` (`eps` is the run's, repeated).
    """
    f = np.concatenate([data["f0"][:, None], data["f"]], axis=1)
    runs, nv = f.shape[0], f.shape[-1]
    m = kinetic_moments(model.autoencoder, f.reshape(-1, nv))
    states = {k: m[k].reshape(runs, -1, *m[k].shape[1:]) for k in ("rho", "u", "T", "W")}
    states["eps"] = np.broadcast_to(np.asarray(data["eps"], np.float64)[:, None],
                                    states["rho"].shape).copy()
    return states


def hyperbolicity_report(model, data, tol=1e-6):
    """`characteristic_summary` of a learned model's closure at the kinetic states of `data`.

    The moments of every cell of `f0` and every snapshot of a run, with the run's `eps`,
    are the states (`kinetic_states`).

    Returns:
        dict of `(runs,)` arrays (one entry per run): `eps` and the three entries of
        `characteristic_summary`.
    """
    s = kinetic_states(model, data)
    runs = len(s["rho"])
    flat = [s[k].reshape(-1, *s[k].shape[2:]) for k in ("rho", "u", "T", "W", "eps")]
    speeds = _thermal_speeds(model.closure, *flat).reshape(runs, -1, flat[3].shape[1] + 3)
    rows = [_summary(speeds[r], tol) for r in range(runs)]
    report = {k: np.array([row[k] for row in rows]) for k in rows[0]}
    report["eps"] = s["eps"][:, 0].copy()
    return report


def characteristic_matrix(closure):
    r"""The learned system's `quasilinear_matrix` at rest, as a differentiable TF function.

    The system is Galilean invariant (its speeds at velocity `u` are `u` plus those at rest),
    so the states are taken at `u = 0`. The flux Jacobian and the derivatives of the source
    quantities are taken by automatic differentiation, so gradients with respect to the
    closure's weights flow through the matrix (`hyperbolicity_penalty`).

    Args:
        closure: `MomentClosure`.

    Returns:
        `matrix(rho, T, W, eps)` (`(n,)`, `(n,)`, `(n, K)`, `(n,)` tensors) -> `(n, 3 + K,
        3 + K)`, divided by `sqrt(T)` (its eigenvalues are the speeds in thermal units).
    """
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    call = _tensor_closure(closure)

    def matrix(rho, T, W, eps):
        Q = to_conserved(rho, tf.zeros_like(rho), T, W, tnp)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(Q)
            r, u, t, w = to_primitive(Q)
            q_hat, g_hat, a = call(r, t, w, eps)
            flux = _flux(tnp, r, u, t, w, q_hat, g_hat)
            source = tf.stack(_source_quantities(tnp, r, t, q_hat), axis=-1)
        jac_flux = tape.batch_jacobian(flux, Q)
        jac_source = tape.batch_jacobian(source, Q)
        del tape
        w_rows = _w_source(tnp, a, rho, T, jac_source[:, 0], jac_source[:, 1],
                           jac_source[:, 2])
        A = tf.concat([jac_flux[:, :3], jac_flux[:, 3:] - w_rows], axis=1)
        return A / tf.sqrt(T)[:, None, None]

    return matrix


def hyperbolicity_penalty(closure, speed_bound=None):
    r"""Differentiable measure of how far the learned system is from hyperbolic.

    Args:
        closure: `MomentClosure`.
        speed_bound: optional positive float `c`: real speeds beyond the solver's wave-speed
            bound `|u| + c sqrt(T)` are penalised too.

    Returns:
        `penalty(rho, T, W, eps)` -> scalar: the mean over the states of
        $\sum_i (\operatorname{Im}\lambda_i)^2 + \max(|\operatorname{Re}\lambda_i| - c,
        0)^2$ over the characteristic speeds $\lambda_i$ in thermal units
        (`characteristic_matrix`); zero exactly where the system is hyperbolic (with speeds
        within the bound).
    """
    import tensorflow as tf

    if speed_bound is not None:
        speed_bound = check_positive_number("speed_bound", speed_bound)
    matrix = characteristic_matrix(closure)

    def penalty(rho, T, W, eps):
        # A complex input (exact: zero imaginary part) gives the same values and gradients;
        # with a real one the gradient of `eigvals` casts complex to real and logs a warning.
        A = matrix(rho, T, W, eps)
        speeds = tf.linalg.eigvals(tf.complex(A, tf.zeros_like(A)))
        excess = tf.math.imag(speeds) ** 2
        if speed_bound is not None:
            excess += tf.nn.relu(tf.abs(tf.math.real(speeds)) - speed_bound) ** 2
        return tf.reduce_mean(tf.reduce_sum(excess, axis=-1))

    return penalty


class LearnedMomentModel:
    """A trained autoencoder + closure, with the moment-system solve from a distribution.

    Args:
        autoencoder, closure: trained `MomentAutoencoder` and `MomentClosure`.
        speed_factor: `c` of the wave-speed bound `|u| + c sqrt(T)` of the solver; `None`
            (default) for `relaxation_speed_factor(eps, dx, frozen_speed_factor)`, which is
            Euler's `sqrt(3)` at small eps.
        cfl: CFL number of the solver.
        frozen_speed_factor: the bound at large eps when `speed_factor` is None.
        limiter: slope limiter of the solver (`MomentSolver`), also used by the unrolled solve
            of `finetune_closure`.
        flux: numerical flux of the solver, `"lax_friedrichs"` (default) or `"kinetic"`
            (`moment_rate`), also that of `finetune_closure`'s unrolled solve: a closure
            fitted through one scheme is tuned to it.
        closure_dtype: "float64" (default) or "float32": precision of the closure network's
            arithmetic in `solve` (the solver itself stays float64). float32 makes the solve
            ~1.3x faster and moves its result by ~1e-7 relative (benchmarks/README.md); the
            training and `finetune_closure` are float64 (or the Keras floatx) either way.
    """

    def __init__(self, autoencoder, closure, speed_factor=None, cfl=0.4,
                 frozen_speed_factor=3.0, limiter="minmod", closure_dtype="float64",
                 flux="lax_friedrichs"):
        self.frozen_speed_factor = check_positive_number("frozen_speed_factor", frozen_speed_factor)
        self.limiter = limiter
        self.flux = flux
        self.autoencoder = autoencoder
        self.closure = closure
        self.speed_factor = speed_factor
        self.cfl = cfl
        self.numpy_encoder = autoencoder.numpy_encoder()
        self.closure_dtype = closure_dtype

    @property
    def limiter(self):
        """Slope limiter of `solve` and `finetune_closure`; checked when set."""
        return self._limiter

    @limiter.setter
    def limiter(self, value):
        slope_limiter(value)
        self._limiter = value

    @property
    def flux(self):
        """Numerical flux of `solve` and `finetune_closure`; checked when set."""
        return self._flux

    @flux.setter
    def flux(self, value):
        self._flux = check_numerical_flux("flux", value)

    @property
    def closure_dtype(self):
        """Precision of the closure network in `solve`; setting it takes a new snapshot."""
        return self._closure_dtype

    @closure_dtype.setter
    def closure_dtype(self, value):
        self._closure_dtype = check_numpy_dtype("closure_dtype", value)
        self.refresh_closure()

    def refresh_closure(self):
        """Takes a new NumPy snapshot of the closure for `solve` (after its weights changed)."""
        self.numpy_closure = self.closure.numpy_closure(self.closure_dtype)

    _SAVED_FILES = ("autoencoder.keras", "closure.keras", "solver.json")

    def save(self, directory):
        """Writes `autoencoder.keras`, `closure.keras` and `solver.json` to `directory`.

        A new folder, or one that holds only a model saved before, is written atomically
        (`mlcmk.io.atomic_directory`): a crash while saving keeps the previous model whole,
        never half old and half new. In a folder that holds other files too, the three files
        are written into it one after the other.
        """
        import os

        from mlcmk.io import atomic_directory, write_json

        def write(folder):
            self.autoencoder.save(os.path.join(folder, "autoencoder.keras"))
            self.closure.save(os.path.join(folder, "closure.keras"))
            write_json(os.path.join(folder, "solver.json"),
                       {"speed_factor": self.speed_factor, "cfl": self.cfl,
                        "frozen_speed_factor": self.frozen_speed_factor,
                        "limiter": self.limiter, "closure_dtype": self.closure_dtype,
                        "flux": self.flux})

        if os.path.isdir(directory) and set(os.listdir(directory)) - set(self._SAVED_FILES):
            write(directory)
        else:
            with atomic_directory(directory) as tmp:
                write(tmp)

    @classmethod
    def load(cls, directory):
        """Reads a model written by `save`."""
        import json
        import os

        with open(os.path.join(directory, "solver.json"), encoding="utf-8") as f:
            solver = json.load(f)
        autoencoder = keras.saving.load_model(os.path.join(directory, "autoencoder.keras"))
        closure = keras.saving.load_model(os.path.join(directory, "closure.keras"))
        return cls(autoencoder, closure, **solver)

    def initial_moments(self, f0, jit_compile=False):
        """`(rho, u, T, W)` of `f0` `(num_x, num_v)` by the encoder (its NumPy snapshot, or
        that snapshot compiled with XLA)."""
        jit_compile = check_bool("jit_compile", jit_compile)
        UW = (self.numpy_encoder.compiled() if jit_compile else self.numpy_encoder)(f0)
        rho, u, T = primitive_from_conserved(UW[:, :3])
        return rho, u, T, UW[:, 3:]

    def wave_speed_factor(self, eps, dx):
        """`c` of the solver's wave-speed bound at Knudsen number `eps` and cell width `dx`."""
        if self.speed_factor is not None:
            return self.speed_factor
        return relaxation_speed_factor(eps, dx, self.frozen_speed_factor)

    def solve(self, f0, eps, dx, t_end, jit_compile=False):
        """Learned moment solve from `f0`; returns `(rho, u, T, W)` at `t_end`.

        `jit_compile=True` runs the encoder and the time loop as XLA programs
        (`NumpyEncoder.compiled`, `MomentSolver.solve`): the first call per number of cells
        compiles them (3–4 s), later calls at any `eps`, `dx` and `t_end` reuse them until the
        closure snapshot changes (`refresh_closure`, a new `closure_dtype`).
        """
        rho, u, T, W = self.initial_moments(f0, jit_compile=jit_compile)
        solver = MomentSolver(dx, closure=self.numpy_closure, eps=eps, cfl=self.cfl,
                              speed_factor=self.wave_speed_factor(eps, dx),
                              limiter=self.limiter, flux=self.flux)
        return solver.solve(rho, u, T, W, t_end=t_end, jit_compile=jit_compile)


def _tensor_closure(closure):
    """`MomentClosure` as a differentiable `(rho, T, W, eps) -> (q_hat, G_hat, a)` on
    `(..., n)` tensors (the closure is Galilean invariant, so it is called at u = 0)."""
    import tensorflow as tf

    K = closure.num_moments

    def call(rho, T, W, eps):
        shape = tf.shape(rho)
        eps = tf.broadcast_to(eps, shape)
        x = tf.concat([tf.stack([rho, tf.zeros_like(rho), 0.5 * rho * T], axis=-1), W,
                       eps[..., None]], axis=-1)
        out = closure(tf.reshape(x, [-1, 4 + K]))
        out = tf.reshape(out, tf.concat([shape, [1 + 4 * K]], axis=0))
        return (out[..., 0], out[..., 1:1 + K],
                tf.reshape(out[..., 1 + K:], tf.concat([shape, [3, K]], axis=0)))

    return call


def trajectory_samples(model, data, window=1, cfl=None, margin=1.2, every_snapshot=False):
    """Start and end states of the a posteriori fine-tuning, from kinetic snapshots.

    A sample is a run and a start snapshot `k` (the initial state `f0` is snapshot 0): the
    moments `(rho, u, T, W)` of the kinetic solution at `t_k` (W by the encoder) and `(rho, u,
    T)` at `t_{k + window}`. The number of solver steps over a window is the same for all
    runs, so that every CFL number stays below `cfl` with speeds `margin` times the largest
    `|u| + c sqrt(T)` of the run's snapshots. With `every_snapshot` the targets are `(rho, u,
    T)` at each of `t_{k + 1}, ..., t_{k + window}` (`end` arrays `(S, window, n)`), and the
    steps a multiple of `window` (`steps_per_interval` to each snapshot).

    Returns:
        dict of `start` (tuple of `(S, n)`, `(S, n)`, `(S, n)`, `(S, n, K)`), `end` (three
        `(S, n)`, or `(S, window, n)` with `every_snapshot`), `eps` and `speed_factor`
        `(S,)`, `dt` (float), `steps` and `steps_per_interval` (ints; `None` without
        `every_snapshot`).
    """
    runs, snaps, nx = data["f"].shape[:3]
    snaps += 1  # f0 is snapshot 0
    window = int(window)
    if not 1 <= window < snaps:
        raise ValueError(f"`window` must be an int in [1, {snaps - 1}] (snapshot intervals); "
                         f"received window={window!r}")
    times = np.concatenate([[0.0], data["times"]])
    intervals = np.diff(times)
    if not np.allclose(intervals, intervals[0], rtol=1e-9):
        raise ValueError(f"the snapshots must be equally spaced in time; received {times}")
    states = kinetic_states(model, data)
    rho, u, T = (states[k].reshape(runs, snaps, nx) for k in ("rho", "u", "T"))
    W = states["W"].reshape(runs, snaps, nx, -1)
    dx = float(data["x"][1] - data["x"][0])
    factor = np.array([model.wave_speed_factor(e, dx) for e in data["eps"]])
    speed = margin * np.max(np.abs(u) + factor[:, None, None] * np.sqrt(T), axis=(1, 2))
    duration = window * intervals[0]
    steps = int(np.ceil(duration / ((cfl or model.cfl) * dx / speed.max())))
    per_interval = None
    if every_snapshot:
        per_interval = -(-steps // window)
        steps = window * per_interval
    starts = np.arange(snaps - window)
    run_index = np.repeat(np.arange(runs), len(starts))
    start_index = np.tile(starts, runs)

    def take(a, offset=0):
        return a[run_index, start_index + offset]

    if every_snapshot:
        end = tuple(np.stack([take(a, k) for k in range(1, window + 1)], axis=1)
                    for a in (rho, u, T))
    else:
        end = (take(rho, window), take(u, window), take(T, window))
    return {"start": (take(rho), take(u), take(T), take(W)), "end": end,
            "eps": data["eps"][run_index], "speed_factor": factor[run_index],
            "dt": duration / steps, "steps": steps, "steps_per_interval": per_interval,
            "dx": dx}


def sample_arrays(samples):
    """The samples as the argument list of `trajectory_loss`: `(rho, u, T, W, eps,
    speed_factor, rho_end, u_end, T_end)`."""
    return [*samples["start"], samples["eps"], samples["speed_factor"], *samples["end"]]


def trajectory_loss(model, samples, power=1.0):
    """Loss of the a posteriori fit as a TensorFlow function of a batch of samples.

    Args:
        model: `LearnedMomentModel` (its Keras closure is called: differentiable).
        samples: from `trajectory_samples` (fixes `dt`, the number of steps and `dx`).
        power: number >= 1; the mean is taken of each sample's error to this power (1, the
            default: the plain mean; `finetune_closure(loss_power=...)` takes its root).

    Returns:
        `loss(rho, u, T, W, eps, speed_factor, rho_end, u_end, T_end)` (a batch of the
        arrays of `sample_arrays`): the mean over the batch of the sum over `rho, u, T` of
        the squared relative L2 error after the unrolled solve (samples with
        `every_snapshot`: that sum averaged over the window's snapshots), each raised to
        `power`.
    """
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    closure = model.closure
    dtype = closure.compute_dtype
    call = _tensor_closure(closure)
    w_maxwell = tf.constant(np.asarray(keras.ops.convert_to_numpy(closure.w_maxwell)), dtype)
    dt, n_steps, dx = tf.constant(samples["dt"], dtype), samples["steps"], samples["dx"]
    per_interval = samples.get("steps_per_interval")
    window = samples["end"][0].shape[1] if per_interval else None  # snapshots fitted
    power = _loss_power("power", power)

    def mean(per_sample):
        return tf.reduce_mean(per_sample if power == 1 else per_sample**power)

    def error(Q, targets):  # (batch,): sum over rho, u, T of the squared relative L2 error
        return sum(tf.reduce_mean((p - t) ** 2, axis=-1) / tf.reduce_mean(t**2, axis=-1)
                   for p, t in zip(to_primitive(Q)[:3], targets, strict=True))

    def advance(Q, eps, factor, steps):
        for _ in tf.range(steps):
            Q = moment_step(tnp, call, Q, dt, dx, eps, factor, w_maxwell, model.limiter,
                            model.flux)
        return Q

    def loss(rho, u, T, W, eps, factor, *targets):
        Q = to_conserved(rho, u, T, W, tnp)
        eps, factor = eps[:, None], factor[:, None]
        if per_interval is None:
            return mean(error(advance(Q, eps, factor, n_steps), targets))
        per_sample = 0.0
        for k in range(window):  # unrolled: a few snapshots
            Q = advance(Q, eps, factor, per_interval)
            per_sample += error(Q, [t[:, k] for t in targets])
        return mean(per_sample / window)

    return loss


def finetune_closure(model, data, steps=100, batch_size=8, learning_rate=1e-3, window=None,
                     seed=0, verbose=1, jit_compile=True, check_every=10,
                     hyperbolicity_weight=0.0, state_batch=512, rollback_factor=None,
                     restarts=(), every_snapshot=False, lr_ramp_steps=0, loss_power=1.0):
    """A posteriori training: fits the closure through the moment solver to kinetic states.

    A priori (`train_moment_model`) the closure matches the kinetic fluxes and sources at
    each state; solving the moment system then lets its errors accumulate, and with few
    moments the closure is not a function of the moments at all. Here the solver itself
    (the same scheme as `MomentSolver`, in TensorFlow) is unrolled over `window` snapshot
    intervals from the kinetic moments at every snapshot, and the closure's weights are
    fitted to the kinetic `(rho, u, T)` at the end: the loss is the sum over the three
    fields of the mean squared error over the grid divided by the mean square of the kinetic
    field (the squared relative L2 error of the benchmark). With `every_snapshot` that error
    is averaged over every snapshot of the window instead (more targets from the same
    unrolled solve). Steps whose loss is not finite (a state broke down in the unrolled
    solve) are skipped and counted.

    Gradients through a long unrolled solve can throw the closure into a worse basin (the
    loss then rises for good): every `check_every` steps the loss over all samples is
    evaluated, and the weights with the lowest one (the starting weights included) are kept.
    With `rollback_factor` r, a check whose loss exceeds r times the lowest so far also sends
    the fit back to those weights, with fresh Adam moments and the rest of the same schedule
    (at its lower rate), instead of going on from the worse basin. `restarts`, `(steps,
    learning_rate)` pairs, then continue from the weights kept with fresh cosine schedules
    (fresh Adam moments, batches drawn from `seed` again, the best weights tracked anew), in
    this call: the samples and the compiled solve are shared by all stages. Fresh Adam moments
    take a step of about the full rate in every weight at once (the first steps are not
    scaled by a history of gradients), which can throw a converged closure up the loss: with
    `lr_ramp_steps` n every fresh optimizer (each stage's start, each rollback) scales its rate
    by `min(1, (i + 1) / n)` at its i-th step.

    The loss averages the samples' errors, so a few hard runs (large amplitudes, large eps)
    weigh no more than any other: with `loss_power` q > 1 it is the power mean
    `(mean e^q)^(1/q)` of the samples' errors `e` instead (in each batch and at the checks),
    which weighs the worst samples more (q -> inf: the largest error). In the benchmark q = 3
    did not lower the worst runs' errors (`benchmarks/README.md`, stop 51).

    Nothing in this loss keeps the learned system hyperbolic, and where it is not (complex
    characteristic speeds) the unrolled solve is ill-posed and its gradients erratic. With
    `hyperbolicity_weight > 0` the loss gains that weight times `hyperbolicity_penalty` (the
    mean squared imaginary part of the speeds and excess over the model's largest wave-speed
    bound, in thermal units) over `state_batch` random
    kinetic states of the training runs (`kinetic_states`) per step; the checks then rank
    weights by trajectory loss plus weighted penalty over all those states.

    The solve uses the model's wave-speed bound (`speed_factor` or `frozen_speed_factor`):
    the closure is tuned to that scheme, so set the bound before fine-tuning. Memory grows
    with `batch_size` times the number of solver steps (the tape keeps every stage).

    The fit runs in a thread of its own (`in_worker_thread`; in the caller's under a
    `tf.distribute` strategy, whose scope is per thread): XLA's compilation slows the later
    memory allocations from the malloc arena it used (glibc gives each thread its own), and
    when that was the caller's, NumPy there was slower afterwards (a (100, 64) float64 array
    ~1.8 instead of ~0.15 microseconds, the NumPy kinetic solve 1.3-1.5x). An interrupt
    (Ctrl-C) stops the fit after its current step and is raised in the caller, the weights
    as they are then.

    Args:
        model: `LearnedMomentModel`; its closure's weights are updated in place.
        data: kinetic data from `generate_kinetic_data` (the training runs).
        steps: Adam steps (cosine-decayed `learning_rate`).
        batch_size: samples per step.
        window: snapshot intervals per unrolled solve; `None` (default) for whole runs from
            the initial state (`t = 0` to the last snapshot), as the learned model is used.
        seed: seed of the batch sampling.
        verbose: 1 for a progress bar.
        jit_compile: XLA-compile the unrolled solve and its gradient.
        check_every: steps between evaluations of the full loss (each costs about
            `samples / batch_size / 3` steps); the last step is always checked.
        hyperbolicity_weight: non-negative float, weight of the hyperbolicity penalty.
        state_batch: kinetic states per step for the penalty.
        rollback_factor: None (default: no rollback) or a number > 1.
        restarts: sequence of `(steps, learning_rate)` pairs (`check_restarts`); default none.
        every_snapshot: bool, fit every snapshot of the window, not only its end.
        lr_ramp_steps: non-negative int, steps of the linear rate ramp of every fresh
            optimizer (0, the default: none).
        loss_power: number >= 1, the power of the power mean over samples (1, the default:
            the mean).

    Returns:
        info dict: `loss_before`, `loss_after` (over all samples, of the weights kept),
        `loss_history` (`[step, loss]` pairs of the checks), `best_step` (0: the starting
        weights were kept), `skipped_steps`, `steps`, `learning_rate`, `solver_steps`,
        `fit_s`, `rollbacks` (the steps whose check sent the fit back); with a
        penalty also `penalty_before`, `penalty_after` (over all states, not weighted) and
        `penalty_history` (the loss entries are then trajectory loss + weighted penalty);
        with `restarts` also `restarts`, a list of the same dicts, one per restart (its
        `fit_s` its own time). The model's NumPy closure is refreshed.
    """
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    learning_rate = check_positive_number("learning_rate", learning_rate)
    check_every = check_positive_int("check_every", check_every)
    weight = _penalty_weight(hyperbolicity_weight)
    state_batch = check_positive_int("state_batch", state_batch)
    rollback_factor = _rollback_factor("rollback_factor", rollback_factor)
    restarts = check_restarts("restarts", restarts)
    every_snapshot = check_bool("every_snapshot", every_snapshot)
    lr_ramp_steps = check_positive_int("lr_ramp_steps", lr_ramp_steps, 0)
    loss_power = _loss_power("loss_power", loss_power)
    _check_model_grid(model, data)
    stop = threading.Event()
    return in_worker_thread(lambda: _finetune(
        model, data, steps, batch_size, learning_rate, window, seed, verbose, jit_compile,
        check_every, weight, state_batch, rollback_factor, restarts, every_snapshot,
        lr_ramp_steps, loss_power, stop), stop)


def _finetune(model, data, steps, batch_size, learning_rate, window, seed, verbose, jit_compile,
              check_every, weight, state_batch, rollback_factor, restarts, every_snapshot,
              lr_ramp_steps, loss_power, stop):
    """The fit of `finetune_closure` (its arguments checked), in the thread it runs in."""
    import tensorflow as tf

    start_time = time.perf_counter()
    if window is None:
        window = data["f"].shape[1]
    samples = trajectory_samples(model, data, window=window, every_snapshot=every_snapshot)
    closure = model.closure
    dtype = closure.compute_dtype
    loss_fn = trajectory_loss(model, samples, power=loss_power)
    root = 1.0 / loss_power

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def gradient(*batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(*batch)
            if loss_power != 1:
                loss = loss**root
        return loss, tape.gradient(loss, closure.trainable_variables)

    evaluate = tf.function(loss_fn, reduce_retracing=True, jit_compile=jit_compile)
    arrays = sample_arrays(samples)
    total = len(arrays[0])

    if weight:
        states = kinetic_states(model, data)
        states = [states[k].reshape(-1, *states[k].shape[2:]) for k in ("rho", "T", "W", "eps")]
        penalty_fn = tf.function(hyperbolicity_penalty(closure, _model_speed_bound(model)),
                                 reduce_retracing=True)

        @tf.function(reduce_retracing=True)
        def penalty_gradient(*batch):
            with tf.GradientTape() as tape:
                value = penalty_fn(*batch)
            return value, tape.gradient(value, closure.trainable_variables)

    def full_loss(penalties):
        value = float(_row_mean(evaluate, arrays, dtype, 64)[0]) ** root
        if weight:
            penalty = float(_row_mean(penalty_fn, states, dtype, 4096)[0])
            penalties.append(penalty)
            value += weight * penalty
        return value

    def stage(steps, learning_rate, start_time):  # one cosine schedule from the weights now
        penalties = []
        info = {"loss_before": full_loss(penalties), "solver_steps": samples["steps"],
                "steps": steps, "samples": total, "window": int(window),
                "learning_rate": learning_rate, "every_snapshot": every_snapshot,
                "lr_ramp_steps": lr_ramp_steps, "loss_power": loss_power}
        best = (info["loss_before"], 0, [w.numpy() for w in closure.trainable_variables])
        history = [[0, info["loss_before"]]]
        check_s = 0.0
        schedule = _cosine(learning_rate, steps)

        def new_optimizer(offset):  # fresh moments, the schedule from step `offset` on
            def rate():
                value = schedule(optimizer.iterations + offset)
                if not lr_ramp_steps:
                    return value
                fresh = tf.cast(optimizer.iterations + 1, value.dtype) / lr_ramp_steps
                return value * tf.minimum(tf.ones_like(value), fresh)

            optimizer = keras.optimizers.Adam(rate)
            optimizer.build(closure.trainable_variables)
            return optimizer

        optimizer = new_optimizer(0)
        rollbacks = []
        rng = np.random.default_rng(seed)
        progress = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["loss"])
        skipped = 0
        loop_start = None
        for step in range(steps):
            if stop.is_set():  # the caller was interrupted (`in_worker_thread`)
                raise KeyboardInterrupt
            if step == 1:
                loop_start = time.perf_counter()  # after tracing and compilation
            index = rng.choice(total, size=min(batch_size, total), replace=False)
            loss, grads = gradient(*(tf.constant(a[index], dtype) for a in arrays))
            if weight:
                pick = rng.choice(len(states[0]), size=min(state_batch, len(states[0])),
                                  replace=False)
                penalty, penalty_grads = penalty_gradient(*(tf.constant(a[pick], dtype)
                                                            for a in states))
                loss = loss + weight * penalty
                grads = [g + weight * h for g, h in zip(grads, penalty_grads, strict=True)]
            if np.isfinite(float(loss)) and all(
                    bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads):
                optimizer.apply_gradients(zip(grads, closure.trainable_variables, strict=True))
                progress.update(step + 1, [("loss", float(loss))])
            else:
                skipped += 1
            if (step + 1) % check_every == 0 or step + 1 == steps:
                check_start = time.perf_counter()
                value = full_loss(penalties)
                if loop_start is not None:
                    check_s += time.perf_counter() - check_start
                history.append([step + 1, value])
                if value < best[0]:  # NaN never is
                    best = (value, step + 1, [w.numpy() for w in closure.trainable_variables])
                elif rollback_factor is not None and not value <= rollback_factor * best[0]:
                    for w, kept in zip(closure.trainable_variables, best[2], strict=True):
                        w.assign(kept)
                    optimizer = new_optimizer(step + 1)
                    rollbacks.append(step + 1)
        if loop_start is not None:
            info["s_per_step"] = (time.perf_counter() - loop_start - check_s) / (steps - 1)
        for w, value in zip(closure.trainable_variables, best[2], strict=True):
            w.assign(value)
        info["loss_after"], info["best_step"], info["loss_history"] = best[0], best[1], history
        if weight:
            info["penalty_before"] = penalties[0]
            info["penalty_after"] = penalties[[h[0] for h in history].index(best[1])]
            info["penalty_history"] = [[h[0], p]
                                       for h, p in zip(history, penalties, strict=True)]
        info["skipped_steps"], info["rollbacks"] = skipped, rollbacks
        info["fit_s"] = time.perf_counter() - start_time
        return info

    info = stage(steps, learning_rate, start_time)
    if restarts:
        info["restarts"] = [stage(n, rate, time.perf_counter()) for n, rate in restarts]
    model.refresh_closure()
    return info


def euler_solve(f0, dx, t_end, grid_moments, cfl=0.4, limiter="minmod", jit_compile=False,
                flux="lax_friedrichs"):
    """Euler (Maxwellian closure, gamma = 3) from the moments of `f0`; returns `(rho, u, T)`
    (`limiter`, `flux`, `jit_compile`: as `MomentSolver`)."""
    rho, u, T = primitive_from_conserved(grid_moments(f0))
    return MomentSolver(dx, cfl=cfl, limiter=limiter, flux=flux).solve(
        rho, u, T, t_end=t_end, jit_compile=jit_compile)[:3]


def train_moment_model(data, num_moments=2, autoencoder_epochs=30, closure_epochs=200,
                       max_autoencoder_samples=4000, batch_size=128,
                       closure_batch_size=256, learning_rate=3e-3,
                       seed=0, verbose=0, heat_flux_moment=False, frozen_speed_factor=3.0,
                       finetune_steps=0, finetune_window=None, finetune_learning_rate=1e-3,
                       finetune_batch_size=8, closure_units=(64, 64), hyperbolicity_weight=0.0,
                       hyperbolicity_steps=500, finetune_check_every=10, finetune_data=None,
                       finetune_warmup_steps=0, finetune_restarts=(),
                       finetune_rollback_factor=None, flux="lax_friedrichs",
                       finetune_every_snapshot=False, finetune_lr_ramp_steps=0,
                       finetune_loss_power=1.0):
    """Fits the autoencoder and the closure on kinetic data (from `generate_kinetic_data`).

    With `finetune_steps > 0` the closure is then fitted a posteriori through the solver
    (`finetune_closure`) on the runs of `finetune_data` (default: `data`; this fit gains
    from many more runs than the a priori one needs, `benchmarks/README.md`) over
    `finetune_window` snapshot intervals (default: whole runs from the initial state, as
    the learned model is used), after `finetune_warmup_steps` steps on windows of one snapshot
    interval (every run and start snapshot; without them a closure with more moments can be
    thrown out of its basin by the first whole-run gradients, `benchmarks/README.md`), with
    the loss over all runs evaluated every `finetune_check_every` steps (each check costs about
    `runs / finetune_batch_size / 3` steps: raise it for many runs). `finetune_restarts`,
    `(steps, learning_rate)` pairs, then continue the whole-run fit with fresh cosine schedules
    from the weights it kept (a high rate held for long can throw the fit out of a basin that a
    short high-rate schedule followed by a lower one stays in, `benchmarks/README.md`; every
    stage draws its batches from `seed`; the restarts are `finetune_closure`'s, run in the
    same call as the main fit); `finetune_rollback_factor` is each stage's
    `rollback_factor` (`finetune_closure`), `finetune_lr_ramp_steps` its `lr_ramp_steps` and
    `finetune_every_snapshot` the `every_snapshot` of the main fit and its restarts,
    `finetune_loss_power` every stage's `loss_power`.
    `closure_units` are the hidden widths of the closure network (`MomentClosure(units=...)`).
    With `hyperbolicity_weight > 0` the a priori fit is followed by `hyperbolicity_steps` steps
    of `penalised_closure_fit` (the same loss plus the weighted `hyperbolicity_penalty`), and
    the fine-tuning keeps the penalty.
    `flux` is the model's numerical flux (`LearnedMomentModel`), the one it is fine-tuned
    through.

    Returns:
        `(LearnedMomentModel, info)` with `info` the final losses and fit times (and the
        fine-tuning's under `"finetune"`, `"finetune_warmup"` and `"finetune_restarts"`, a
        list).
    """
    check_positive_number("frozen_speed_factor", frozen_speed_factor)  # before any training
    check_numerical_flux("flux", flux)
    for name, value in (("autoencoder_epochs", autoencoder_epochs),
                        ("closure_epochs", closure_epochs),
                        ("max_autoencoder_samples", max_autoencoder_samples),
                        ("batch_size", batch_size), ("closure_batch_size", closure_batch_size)):
        check_positive_int(name, value)
    check_positive_number("learning_rate", learning_rate)
    _penalty_weight(hyperbolicity_weight)
    finetune_warmup_steps = check_positive_int("finetune_warmup_steps", finetune_warmup_steps, 0)
    finetune_restarts = check_restarts("finetune_restarts", finetune_restarts)
    finetune_every_snapshot = check_bool("finetune_every_snapshot", finetune_every_snapshot)
    finetune_lr_ramp_steps = check_positive_int("finetune_lr_ramp_steps",
                                                finetune_lr_ramp_steps, 0)
    finetune_loss_power = _loss_power("finetune_loss_power", finetune_loss_power)
    for name, value in (("finetune_warmup_steps", finetune_warmup_steps),
                        ("finetune_restarts", finetune_restarts),
                        ("finetune_lr_ramp_steps", finetune_lr_ramp_steps),
                        ("finetune_loss_power", finetune_loss_power != 1)):
        if value and not finetune_steps:
            raise ValueError(f"`{name}` go with the whole-run fine-tuning: they need "
                             f"finetune_steps > 0; received finetune_steps={finetune_steps!r}")
    if finetune_steps:
        check_positive_int("finetune_batch_size", finetune_batch_size)
        check_positive_int("finetune_check_every", finetune_check_every)
        check_positive_number("finetune_learning_rate", finetune_learning_rate)
        _rollback_factor("finetune_rollback_factor", finetune_rollback_factor)
        finetune_data = data if finetune_data is None else finetune_data
        _check_velocity_grid("finetune_data", finetune_data, data["v"], "`data`")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    nv = data["f"].shape[-1]
    v_max = float(data["v"][-1])
    f = data["f"].reshape(-1, nv)
    f = f[rng.permutation(len(f))[:max_autoencoder_samples]]
    info = {}
    start = time.perf_counter()
    autoencoder = MomentAutoencoder(v_max=v_max, num_v=nv, num_moments=num_moments,
                                    heat_flux_moment=heat_flux_moment)
    autoencoder.build((None, nv))
    autoencoder.adapt(f)
    autoencoder.compile(optimizer=keras.optimizers.Adam(_cosine(learning_rate,
                        autoencoder_epochs * math.ceil(len(f) / batch_size))), loss="mse")
    history = autoencoder.fit(f, f, batch_size=batch_size, epochs=autoencoder_epochs,
                              verbose=verbose)
    info["autoencoder_loss"] = float(history.history["loss"][-1])
    info["autoencoder_fit_s"] = time.perf_counter() - start
    x, y = closure_training_data(autoencoder, data)
    closure, closure_info = fit_closure(autoencoder, x, y, epochs=closure_epochs,
                                        batch_size=closure_batch_size,
                                        learning_rate=learning_rate, units=closure_units,
                                        verbose=verbose)
    info.update(closure_info)
    info["autoencoder_samples"] = len(f)
    model = LearnedMomentModel(autoencoder, closure, frozen_speed_factor=frozen_speed_factor,
                               flux=flux)
    if hyperbolicity_weight:
        info["penalised_fit"] = penalised_closure_fit(
            model, x, y, hyperbolicity_weight, steps=hyperbolicity_steps, seed=seed,
            verbose=verbose)
    finetune = dict(batch_size=finetune_batch_size, learning_rate=finetune_learning_rate,
                    seed=seed, verbose=verbose, hyperbolicity_weight=hyperbolicity_weight,
                    check_every=finetune_check_every, rollback_factor=finetune_rollback_factor,
                    lr_ramp_steps=finetune_lr_ramp_steps, loss_power=finetune_loss_power)
    if finetune_warmup_steps:
        info["finetune_warmup"] = finetune_closure(
            model, finetune_data, steps=finetune_warmup_steps, window=1, **finetune)
    if finetune_steps:
        info["finetune"] = finetune_closure(
            model, finetune_data, steps=finetune_steps, window=finetune_window,
            restarts=finetune_restarts, every_snapshot=finetune_every_snapshot, **finetune)
    if finetune_restarts:
        info["finetune_restarts"] = info["finetune"].pop("restarts")
    return model, info


def check_restarts(name, restarts):
    """`restarts` as a list of `(steps, learning_rate)` pairs (positive int, positive number;
    None: none); ValueError (TypeError for a rate that is not a number) naming `name` otherwise."""
    if restarts is None:
        return []
    if isinstance(restarts, (str, bytes)) or not hasattr(restarts, "__iter__"):
        raise ValueError(f"`{name}` must be a sequence of (steps, learning_rate) pairs; "
                         f"received {name}={restarts!r}")
    pairs = []
    for k, pair in enumerate(restarts):
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"`{name}[{k}]` must be a (steps, learning_rate) pair; "
                             f"received {name}[{k}]={pair!r}")
        pairs.append((check_positive_int(f"{name}[{k}] steps", pair[0]),
                      check_positive_number(f"{name}[{k}] learning_rate", pair[1])))
    return pairs


def parse_restarts(name, items):
    """`(steps, learning_rate)` pairs from `"steps:rate"` strings (a command line's
    `200:1e-3`), checked by `check_restarts`; ValueError naming `name` for other text."""
    pairs = []
    for item in items:
        steps, sep, rate = str(item).partition(":")
        try:
            pairs.append((int(steps), float(rate)))
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"`{name}` takes steps:learning_rate items such as 200:1e-3; "
                             f"received {item!r}")
    return check_restarts(name, pairs)


def training_report(info):
    """Lines that summarise the `info` of `train_moment_model`: fit times and losses, the
    penalised a priori fit and the a posteriori fit when they ran (an `info` of fine-tuning
    entries only, that of a loaded model fine-tuned further, gives those lines only)."""
    lines = []
    if "autoencoder_fit_s" in info:  # absent when a loaded model is only fine-tuned further
        lines.append(f"trained in {info['autoencoder_fit_s'] + info['closure_fit_s']:.1f} s "
                     f"(autoencoder loss {info['autoencoder_loss']:.3g}, closure loss "
                     f"{info['closure_loss']:.3g})")
    if "penalised_fit" in info:
        pf = info["penalised_fit"]
        lines.append(f"penalised a priori fit: hyperbolicity penalty {pf['penalty_before']:.3g} "
                     f"-> {pf['penalty_after']:.3g}, closure loss {pf['loss_before']:.4g} -> "
                     f"{pf['loss_after']:.4g} in {pf['fit_s']:.0f} s")
    def trajectory(ft):
        return "every-snapshot trajectory" if ft.get("every_snapshot") else "trajectory"

    def stage(ft, text, loss):
        rolled = ft.get("rollbacks")
        rolled = f", rolled back at steps {', '.join(map(str, rolled))}" if rolled else ""
        ramp = ft.get("lr_ramp_steps")
        ramp = f" (rate ramped over {ramp} steps)" if ramp and ramp > 1 else ""  # 1: none
        power = ft.get("loss_power", 1)
        loss = f"{loss} loss" + (f" (power mean, q = {power:g})" if power != 1 else "")
        lines.append(f"{text}{ramp}, {loss} {ft['loss_before']:.4g} -> "
                     f"{ft['loss_after']:.4g} in {ft['fit_s']:.0f} s{rolled}")

    if "finetune_warmup" in info:
        ft = info["finetune_warmup"]
        stage(ft, f"a posteriori warm-up on one-interval windows: {ft['steps']} steps",
              "window")
    if "finetune" in info:
        ft = info["finetune"]
        stage(ft, f"a posteriori fit: {ft['steps']} steps through {ft['solver_steps']} solver "
              "steps", trajectory(ft))
    for k, ft in enumerate(info.get("finetune_restarts", ()), 1):
        stage(ft, f"a posteriori restart {k}: {ft['steps']} steps at rate "
              f"{ft['learning_rate']:.3g}", trajectory(ft))
    return lines


def _check_velocity_grid(name, data, expected, expected_name):
    """Kinetic data `name` must be on the velocity grid `expected` (that of `expected_name`):
    the encoder's moments are quadratures on the grid it was fitted on."""
    v, expected = np.asarray(data["v"], np.float64), np.asarray(expected, np.float64)
    if v.shape != expected.shape or not np.allclose(
            v, expected, rtol=0, atol=1e-12 * np.abs(expected).max()):
        raise ValueError(f"`{name}` must be on the velocity grid of {expected_name} "
                         f"({len(expected)} nodes in [{expected[0]:g}, {expected[-1]:g}]); "
                         f"received {len(v)} nodes in [{v[0]:g}, {v[-1]:g}]")


def _check_model_grid(model, data):
    """Kinetic runs `data` must be on the velocity grid of `model`'s autoencoder."""
    autoencoder = model.autoencoder
    _check_velocity_grid("data", data, np.linspace(-autoencoder.v_max, autoencoder.v_max,
                                                   autoencoder.num_v), "the model's autoencoder")


def fit_closure(autoencoder, x, y, epochs=200, batch_size=256, learning_rate=3e-3,
                units=(64, 64), verbose=0):
    """Fits a `MomentClosure` for `autoencoder` to closure inputs and targets, a priori.

    Args:
        autoencoder: the trained `MomentAutoencoder` whose moments the closure takes (its
            `num_moments`, `heat_flux_moment` and Maxwellian values set the closure's).
        x, y: inputs and exact outputs (`closure_training_data`).
        epochs, batch_size, learning_rate: Adam with a cosine-decayed rate.
        units: hidden widths of the closure network.

    Returns:
        `(closure, info)`, `info` with `closure_loss`, `closure_fit_s`, `closure_samples`.
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    check_positive_number("learning_rate", learning_rate)
    start = time.perf_counter()
    K = autoencoder.num_moments
    closure = MomentClosure(num_moments=K, heat_flux_moment=autoencoder.heat_flux_moment,
                            units=units)
    closure.build((None, 4 + K))
    closure.adapt(x, y, autoencoder.maxwellian_moments(), autoencoder.maxwellian_closure())
    steps = epochs * math.ceil(len(x) / batch_size)
    closure.compile(optimizer=keras.optimizers.Adam(_cosine(learning_rate, steps)))
    history = closure.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return closure, {"closure_loss": float(history.history["loss"][-1]),
                     "closure_fit_s": time.perf_counter() - start, "closure_samples": len(x)}


def _row_mean(fn, arrays, dtype, size):
    """Mean over all rows of `arrays` of `fn` (a batch mean, or a tuple of them), evaluated
    by batches of `size` rows and weighted by batch size: a float array, one entry per output."""
    import tensorflow as tf

    n = len(arrays[0])
    total = 0.0
    for i in range(0, n, size):
        out = fn(*(tf.constant(a[i:i + size], dtype) for a in arrays))
        total = total + np.array([float(v) for v in np.atleast_1d(out)]) * min(size, n - i)
    return total / n


def _rollback_factor(name, value):
    """None, or `value` as a float > 1 (`check_number`, naming `name`)."""
    return None if value is None else check_number(name, value, 1, strict=True)


def _loss_power(name, value):
    """`value` as a float >= 1 (`check_number`, naming `name`)."""
    return check_number(name, value, 1)


def _penalty_weight(weight):
    value = float(weight)
    if not value >= 0:
        raise ValueError(f"`hyperbolicity_weight` must be a non-negative float; received "
                         f"hyperbolicity_weight={weight!r}")
    return value


def _model_speed_bound(model):
    """The largest wave-speed factor of the model's solver (its bound at large eps)."""
    return model.speed_factor or model.frozen_speed_factor


def penalised_closure_fit(model, x, y, weight, steps=500, batch_size=512, learning_rate=1e-3,
                          seed=0, verbose=0):
    """A priori closure fit with the hyperbolicity penalty: makes the learned system hyperbolic.

    Adam on the closure's a priori loss (`MomentClosure.compute_loss`: mean squared output
    error in units of the output RMS) plus `weight` times `hyperbolicity_penalty` with the
    model's largest wave-speed bound, both over a batch of the training states `x` per step.
    Started from the plain a priori fit, it trades little of that loss for real
    characteristic speeds within the bound, which the fit through the solver
    (`finetune_closure`) needs.

    Args:
        model: `LearnedMomentModel`; its closure is updated in place.
        x, y: closure inputs and targets (`closure_training_data`).
        weight: positive float, weight of the penalty.
        steps, batch_size, learning_rate, seed: of the Adam loop (cosine-decayed rate).
        verbose: 1 for a progress bar.

    Returns:
        info dict: `loss_before`, `loss_after` (a priori loss over all of `x`),
        `penalty_before`, `penalty_after` (over all of `x`), `steps`, `fit_s`. The model's
        NumPy closure is refreshed.
    """
    import tensorflow as tf

    weight = _penalty_weight(weight)
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    start = time.perf_counter()
    closure = model.closure
    dtype = closure.compute_dtype
    K = closure.num_moments
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    rho, _, T = primitive_from_conserved(x[:, :3])
    arrays = [x, y, rho, T, x[:, 3:3 + K], x[:, -1]]
    penalty_fn = hyperbolicity_penalty(closure, _model_speed_bound(model))

    def losses(xb, yb, *states):
        prediction_error = (closure(xb) - yb) / closure.output_scale
        return tf.reduce_mean(prediction_error**2), penalty_fn(*states)

    evaluate = tf.function(losses, reduce_retracing=True)

    def full():
        return [float(v) for v in _row_mean(evaluate, arrays, dtype, 4096)]

    optimizer = keras.optimizers.Adam(_cosine(learning_rate, steps))
    optimizer.build(closure.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_step(*batch):
        with tf.GradientTape() as tape:
            fit, penalty = losses(*batch)
            loss = fit + weight * penalty
        grads = tape.gradient(loss, closure.trainable_variables)
        optimizer.apply_gradients(zip(grads, closure.trainable_variables, strict=True))
        return fit, penalty

    info = dict(zip(("loss_before", "penalty_before"), full(), strict=True))
    rng = np.random.default_rng(seed)
    progress = keras.utils.Progbar(steps, verbose=verbose)
    for step in range(steps):
        index = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        fit, penalty = train_step(*(tf.constant(a[index], dtype) for a in arrays))
        progress.update(step + 1, [("loss", float(fit)), ("penalty", float(penalty))])
    info.update(zip(("loss_after", "penalty_after"), full(), strict=True))
    info["steps"] = steps
    info["fit_s"] = time.perf_counter() - start
    model.refresh_closure()
    return info


def _cosine(learning_rate, steps):
    return keras.optimizers.schedules.CosineDecay(learning_rate, max(int(steps), 1), alpha=0.01)


def relative_l2(a, b):
    """`||a - b|| / ||b||`."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def relative_l2_fields(profiles, reference):
    """`{"rho", "u", "T"}` -> `relative_l2` of each of the profiles `(rho, u, T)` (extra
    entries ignored) against those of `reference`."""
    return {field: relative_l2(a, b) for field, a, b in
            zip(("rho", "u", "T"), profiles[:3], reference[:3], strict=True)}


def run_errors(model, data, runs=None, jit_compile=False):
    """Relative L2 errors of the learned solve of kinetic-data runs at their last snapshot.

    Run `k` is solved from its `f0` at its `eps` to the last snapshot time and `(rho, u, T)`
    are compared with those of the kinetic solution stored there (no kinetic re-solve). On the
    runs a model was fitted to this is its training error; on runs drawn the same way with
    another seed, its test error: the two tell under-fitting from poor generalisation.

    Args:
        model: a `LearnedMomentModel`.
        data: runs from `generate_kinetic_data`, on the model's velocity grid.
        runs: indices of the runs (default: all).
        jit_compile: solve with `model.solve(..., jit_compile=True)` (one compilation for
            all runs; worth it from a few runs on).

    Returns:
        list of dicts with `run`, `eps`, `is_sod` and `errors` (`rho`, `u`, `T`; `inf` where
        the learned solve broke down).
    """
    _check_model_grid(model, data)
    runs = range(len(data["eps"])) if runs is None else runs
    dx = float(data["x"][1] - data["x"][0])
    t_end = float(data["times"][-1])
    out = []
    for k in runs:
        final = kinetic_moments(model.autoencoder, data["f"][k, -1])
        reference = (final["rho"], final["u"], final["T"])
        try:
            errors = relative_l2_fields(model.solve(data["f0"][k], data["eps"][k], dx, t_end,
                                                    jit_compile=jit_compile), reference)
        except FloatingPointError:
            errors = dict.fromkeys(("rho", "u", "T"), float("inf"))
        out.append({"run": int(k), "eps": float(data["eps"][k]),
                    "is_sod": bool(data["is_sod"][k]), "errors": errors})
    return out


def compare_models(model, problem, f0, t_end, jit_compile=False):
    """Kinetic, learned-moment and Euler solves of `problem` from `f0`, with errors and times.

    Args:
        model: a `LearnedMomentModel` (or None to skip it).
        problem: a `BGK1D` (its `eps` and grid are used by all three).
        f0: `(num_x, num_v)` initial distribution.
        t_end: final time.
        jit_compile: run all three solves as XLA programs (`BGK1D.solve`,
            `LearnedMomentModel.solve`, `MomentSolver.solve` with `jit_compile=True`); their
            compilation (a first call of each) is timed apart as `compile_s`.

    Returns:
        dict with `x`, the `(rho, u, T)` profiles of `kinetic`, `learned`, `euler`, the relative
        L2 errors against the kinetic solution (`errors[name][field]`), wall times (s) and,
        with `jit_compile`, `compile_s[name]` (the first calls' times).
    """
    if problem.velocity_dims != 1:
        raise ValueError("`problem` must have velocity_dims=1 (the Euler and learned moment "
                         "models here are those of the 1-D-velocity gas); received "
                         f"velocity_dims={problem.velocity_dims}")
    out = {"x": problem.x, "eps": problem.eps, "t_end": t_end, "times_s": {}, "errors": {}}
    # Euler on the learned model's scheme (limiter and numerical flux).
    scheme = {} if model is None else {"limiter": model.limiter, "flux": model.flux}
    solvers = {"kinetic": lambda: problem.primitives(problem.solve(f0, t_end,
                                                                   jit_compile=jit_compile)),
               "euler": lambda: euler_solve(f0, problem.dx, t_end, problem.moments,
                                            jit_compile=jit_compile, **scheme)}
    if model is not None:
        solvers["learned"] = lambda: model.solve(f0, problem.eps, problem.dx, t_end,
                                                 jit_compile=jit_compile)[:3]
    if jit_compile:
        out["compile_s"] = {}
        for name, solve in solvers.items():
            start = time.perf_counter()
            solve()
            out["compile_s"][name] = time.perf_counter() - start
    for name, solve in solvers.items():
        start = time.perf_counter()
        out[name] = solve()
        out["times_s"][name] = time.perf_counter() - start
        if name != "kinetic":
            out["errors"][name] = relative_l2_fields(out[name], out["kinetic"])
    return out


def plot_comparison(result, path):
    """Plots rho, u, T of the kinetic, learned and Euler solutions to a PNG; returns the
    `Figure` (the last expression of a notebook cell, it is shown there too)."""
    fig, axes = subplots(1, 3, figsize=(13, 3.6))
    styles = {"kinetic": ("k-", "kinetic (BGK)"), "learned": ("C0--", "learned moments"),
              "euler": ("C3:", "Euler")}
    for i, field in enumerate(("density", "velocity", "temperature")):
        for name, (style, label) in styles.items():
            if name in result:
                axes[i].plot(result["x"], result[name][i], style, label=label)
        axes[i].set_title(field)
        axes[i].set_xlabel("x")
    axes[0].legend()
    fig.suptitle(f"eps = {result['eps']:g}, t = {result['t_end']:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def training_curves(info):
    """The a posteriori fit's checks from the `info` of `train_moment_model`, one entry per
    stage (warm-up, main fit, each restart) on one step axis counted from the warm-up's start.

    Returns:
        list of dicts: `label`, `steps` and `loss` (the stage's checks; the warm-up's loss is
        that of one-interval windows, the others of whole runs) and `rollbacks` (steps of the
        checks that sent the fit back). Empty without fine-tuning.
    """
    stages = [("finetune_warmup", "warm-up (window loss)"), ("finetune", "main fit")]
    stages = [(info[key], label) for key, label in stages if key in info]
    stages += [(ft, f"restart {k} (rate {ft['learning_rate']:.3g})")
               for k, ft in enumerate(info.get("finetune_restarts", ()), 1)]
    curves, offset = [], 0
    for ft, label in stages:
        history = np.asarray(ft["loss_history"], np.float64)
        curves.append({"label": label, "steps": offset + history[:, 0], "loss": history[:, 1],
                       "rollbacks": [offset + s for s in ft.get("rollbacks", ())]})
        offset += ft["steps"]
    return curves


def plot_training(info, path):
    """Plots the a posteriori fit's loss at its checks (`training_curves`) to a PNG, log
    scale, rollbacks marked; returns the curves (nothing is written without fine-tuning)."""
    curves = training_curves(info)
    if not curves:
        return curves
    fig, ax = subplots(figsize=(7, 4))
    for curve in curves:
        (line,) = ax.semilogy(curve["steps"], curve["loss"], "o-", ms=3, label=curve["label"])
        if curve["rollbacks"]:
            at = np.isin(curve["steps"], curve["rollbacks"])
            ax.semilogy(curve["steps"][at], curve["loss"][at], "x", ms=9, mew=2,
                        color=line.get_color())
    if any(curve["rollbacks"] for curve in curves):
        ax.plot([], [], "kx", ms=9, mew=2, label="check sent back (rollback)")
    ax.set_xlabel("fine-tuning step (all stages)")
    ax.set_ylabel("loss over all samples")
    ax.set_title("a posteriori fit through the moment solver")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return curves
