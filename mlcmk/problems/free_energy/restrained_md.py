r"""Restrained overdamped Langevin dynamics and the mean force it measures."""

import numpy as np

from mlcmk._validation import check_positive_int, check_positive_number


def block_average(series, num_blocks):
    """Mean and standard error of a time series by block averaging.

    Args:
        series: array `(T, ...)`, time first.
        num_blocks: int >= 2; the last `T mod num_blocks` samples are dropped. Blocks must be
            longer than the correlation time for the error to be right.

    Returns:
        `(mean, stderr)`, each of shape `series.shape[1:]`.
    """
    series = np.asarray(series, dtype=np.float64)
    num_blocks = check_positive_int("num_blocks", num_blocks, 2)
    length = series.shape[0] // num_blocks
    if length < 1:
        raise ValueError(f"A series of {series.shape[0]} samples cannot be cut into "
                         f"num_blocks={num_blocks} blocks")
    blocks = series[:length * num_blocks].reshape(num_blocks, length, *series.shape[1:])
    means = blocks.mean(axis=1)
    return means.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(num_blocks)


def restrained_mean_force(gradient_fn, centers, initial_positions, kappa, beta=1.0, dt=1e-3,
                          num_steps=2000, num_burnin=200, num_blocks=20, seed=0):
    r"""Mean force on Cartesian collective variables by restrained overdamped Langevin dynamics.

    The first d coordinates of the system are the collective variables s. Walkers move under
    $U(q) + \tfrac{\kappa}{2}|s - s_0|^2$ by the Leimkuhler–Matthews scheme (the high-friction
    limit of BAOAB), $q_{n+1} = q_n - h\nabla U_\kappa(q_n) + \sqrt{h/2\beta}\,(R_n + R_{n+1})$,
    whose invariant measure is second-order accurate in h (exact for harmonic potentials). The
    mean force is the restrained average $\kappa(\langle s\rangle - s_0) = -\nabla A_\kappa(s_0)$,
    where $e^{-\beta A_\kappa}$ is $e^{-\beta A}$ smoothed by a Gaussian of variance
    $1/\beta\kappa$; it tends to $-\nabla A(s_0)$ as $\kappa \to \infty$. Its error bar comes from
    block averaging the walker mean over the production steps.

    All centres are simulated at once (a batch axis), each with its own walkers.

    Args:
        gradient_fn: callable `q -> grad U(q)` on arrays `(..., D)` (NumPy).
        centers: array `(B, d)`, the restraint centres $s_0$.
        initial_positions: array `(B, W, D)`, W walkers per centre.
        kappa: float > 0, restraint spring constant (energy / CV unit^2).
        beta: float > 0, inverse temperature.
        dt: float > 0, time step; stable for dt * (largest stiffness) < 2.
        num_steps: production steps.
        num_burnin: equilibration steps (discarded).
        num_blocks: blocks of the error estimate.
        seed: int (one generator for the batch) or a sequence of B ints (one generator per
            centre, so that each centre's result does not depend on the batch it ran in).

    Returns:
        dict with `mean_force` `(B, d)`, `stderr` `(B, d)` and `mean_cv` `(B, d)`; rows whose
        dynamics went non-finite are NaN.
    """
    centers = np.asarray(centers, dtype=np.float64)
    q = np.array(initial_positions, dtype=np.float64)
    if centers.ndim != 2:
        raise ValueError(f"`centers` must have shape (B, d); received shape {centers.shape}")
    if q.ndim != 3 or q.shape[0] != centers.shape[0] or q.shape[2] < centers.shape[1]:
        raise ValueError(f"`initial_positions` must have shape (B, W, D) with B = "
                         f"{centers.shape[0]} and D >= {centers.shape[1]}; received shape "
                         f"{q.shape}")
    for name, value in (("kappa", kappa), ("beta", beta), ("dt", dt)):
        check_positive_number(name, value)
    for name, value in (("num_steps", num_steps), ("num_burnin", num_burnin)):
        check_positive_int(name, value, 0)
    d = centers.shape[1]
    if seed is None or isinstance(seed, (int, np.integer)):
        rng = np.random.default_rng(seed)

        def draw():
            return rng.standard_normal(q.shape)
    else:
        if len(seed) != q.shape[0]:
            raise ValueError(f"`seed` must be an int or hold one seed per centre "
                             f"({q.shape[0]}); received {len(seed)} seeds")
        rngs = [np.random.default_rng(s) for s in seed]

        def draw():
            return np.stack([r.standard_normal(q.shape[1:]) for r in rngs])
    noise_scale = np.sqrt(dt / (2.0 * beta))
    noise = draw()
    series = np.empty((num_steps, centers.shape[0], d))
    with np.errstate(all="ignore"):
        for step in range(num_burnin + num_steps):
            grad = gradient_fn(q)
            grad[..., :d] += kappa * (q[..., :d] - centers[:, None, :])
            new_noise = draw()
            q = q - dt * grad + noise_scale * (noise + new_noise)
            noise = new_noise
            if step >= num_burnin:
                series[step - num_burnin] = q[..., :d].mean(axis=1)
    mean_cv, stderr_cv = block_average(series, num_blocks)
    mean_force = kappa * (mean_cv - centers)
    stderr = kappa * stderr_cv
    bad = ~np.all(np.isfinite(mean_force), axis=-1) | ~np.all(np.isfinite(stderr), axis=-1)
    mean_force[bad] = np.nan
    stderr[bad] = np.nan
    return {"mean_force": mean_force, "stderr": stderr, "mean_cv": mean_cv}
