r"""Finite-volume solver of moment systems: the Euler equations and learned closures.

The system, in conserved variables $Q = (\rho, \rho u, E, \rho W)$ (see `MomentClosure`):
$$\partial_t U + \partial_x \big(\rho u,\ \rho u^2 + \rho T,\ u(E + \rho T) + q\big) = 0,
\qquad q = \rho T^{3/2}\hat q,$$
$$\partial_t(\rho W) + \partial_x\big(\rho u W + \rho\sqrt T\,\hat G\big)
  = \frac{\rho}{\varepsilon}(W_M - W) + a_1\frac{\partial_x(\rho T)}{\sqrt T}
  + a_2\frac{\partial_x q}{T} - \rho a_3\frac{\partial_x T}{2\sqrt T},$$
where a closure supplies $\hat q$, $\hat G$ and $a_{1,2,3}$ as functions of
$(\rho, T, W; \varepsilon)$ and $W_M$ is the Maxwellian value of $W$. With no $W$ and
$q = 0$ this is the Euler system with $\gamma = 3$ (the Maxwellian closure of the
1-D-velocity BGK equation). With `EulerClosure(velocity_dims=3)` the energy is
$E = \tfrac12\rho u^2 + \tfrac32\rho T$: the Euler equations of the monatomic gas
($\gamma = 5/3$, the Maxwellian closure of `BGK1D(velocity_dims=3)`).

Scheme: the closure is evaluated once per cell; MUSCL reconstruction of
$(\rho, u, T, W, \hat q, \hat G)$ with limited slopes (minmod by default; van Leer or
monotonized central, less diffusive, as `limiter`), local Lax–Friedrichs flux
(speed $|u| + c\sqrt T$; or, with `flux="kinetic"`, the kinetic dissipation of the
Maxwellians of the two reconstructed states for mass, momentum and energy, see
`moment_rate`), central differences for the gradients in the non-conservative source
of $W$, SSP-RK2; the stiff relaxation is integrated exactly after each stage ($\rho$ is
constant during it), so the scheme stays stable and becomes Euler's as $\varepsilon \to 0$.
Mass, momentum and energy are conserved to round-off by construction (flux differences).
The scheme (`moment_rate`, `moment_step`) is written once over an array namespace: NumPy for
`MomentSolver`, `tf.experimental.numpy` for the differentiable unrolled solve that fits a
closure a posteriori (`mlcmk.training.moment_closure.finetune_closure`).

Nothing in the scheme makes a learned system hyperbolic: `characteristic_speeds` gives the
eigenvalues of its quasi-linear form (flux Jacobian and non-conservative source) at given
states, to check that they are real and that the solver's wave-speed bound covers them
(`mlcmk.training.moment_closure.hyperbolicity_penalty` turns that into a training loss).
"""

import math
import weakref

import numpy as np

from mlcmk._threads import compiled_in_worker
from mlcmk._validation import check_bool, check_positive_number
from mlcmk.problems.kinetic.bgk import (
    _velocity_dims,
    check_state,
    periodic_shift,
    single_threaded_blas,
    slope_limiter,
)

_SQRT3 = math.sqrt(3.0)  # Euler sound speed over sqrt(T) for gamma = 3
NUMERICAL_FLUXES = ("lax_friedrichs", "kinetic")


def check_numerical_flux(name, value):
    """`value` if it names a numerical flux of the moment scheme, else a ValueError."""
    if not isinstance(value, str) or value not in NUMERICAL_FLUXES:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, NUMERICAL_FLUXES))}; "
                         f"received {value!r}")
    return value


def relaxation_speed_factor(eps, dx, frozen=3.0):
    r"""Wave-speed factor `c` of the Lax–Friedrichs flux of a relaxation moment system.

    $c = \sqrt3 + (c_f - \sqrt3)\,\varepsilon / (\varepsilon + \Delta x)$: Euler's sound
    speed when the relaxation time $\varepsilon$ is short against the time $\Delta x$ a unit
    thermal speed takes to cross a cell (the generalised moments are then relaxed to
    equilibrium within every step and the system is Euler's), the frozen bound $c_f$ when it is
    long. A frozen bound at small $\varepsilon$ only adds numerical diffusion (it smears
    shocks that Euler's bound resolves).
    """
    eps = check_positive_number("eps", eps)
    dx = check_positive_number("dx", dx)
    frozen = check_positive_number("frozen", frozen)
    return _SQRT3 + (frozen - _SQRT3) * eps / (eps + dx)


class EulerClosure:
    """Maxwellian closure: no generalised moments, zero heat flux.

    Args:
        velocity_dims: 1 (gamma = 3, default) or 3 (monatomic gas, gamma = 5/3).
    """

    num_moments = 0
    w_maxwell = np.zeros(0)
    num_even = 0

    def __init__(self, velocity_dims=1):
        self.velocity_dims = _velocity_dims(velocity_dims)

    def __call__(self, rho, T, W, eps):
        n = np.shape(rho)[0]
        return np.zeros(n), np.zeros((n, 0)), np.zeros((n, 3, 0))

    def tensorflow(self):
        """This closure on tensors, for `MomentSolver.solve(..., jit_compile=True)`."""
        import tensorflow as tf

        def call(rho, T, W, eps):
            n = rho.shape[0]
            zeros = tf.zeros_like(rho)
            return zeros, tf.zeros((n, 0), rho.dtype), tf.zeros((n, 3, 0), rho.dtype)

        return call


def physical_flux(closure, rho, u, T, W, eps):
    """Flux `(n, 3 + K)` of the moment system and the source coefficients `a` `(n, 3, K)`."""
    q_hat, g_hat, coefficients = closure(rho, T, W, eps)
    return _flux(np, rho, u, T, W, q_hat, g_hat, _dims(closure)), coefficients


def _dims(closure):
    """Velocity dimensions of the gas a closure describes (1 unless it says otherwise)."""
    return getattr(closure, "velocity_dims", 1)


def _flux(xp, rho, u, T, W, q_hat, g_hat, dims=1):
    E = 0.5 * rho * (u**2 + dims * T)
    p = rho * T
    sqrt_t = xp.sqrt(T)
    return xp.concatenate([
        xp.stack([rho * u, rho * u**2 + p, u * (E + p) + p * sqrt_t * q_hat], axis=-1),
        (rho * u)[..., None] * W + (rho * sqrt_t)[..., None] * g_hat], axis=-1)


def to_conserved(rho, u, T, W, xp=np, dims=1):
    """Primitive `(rho, u, T, W)` -> conserved `(..., n, 3 + K)`, `E = rho (u^2 + dims T)/2`."""
    return xp.concatenate([xp.stack([rho, rho * u, 0.5 * rho * (u**2 + dims * T)], axis=-1),
                           rho[..., None] * W], axis=-1)


def to_primitive(Q, dims=1):
    """Conserved `(..., n, 3 + K)` -> `(rho, u, T, W)`."""
    rho = Q[..., 0]
    u = Q[..., 1] / rho
    T = (2.0 * Q[..., 2] - rho * u**2) / (dims * rho)
    return rho, u, T, Q[..., 3:] / rho[..., None]


def _erf(xp, x):
    if xp is np:
        from scipy.special import erf

        return erf(x)
    import tensorflow as tf

    return tf.math.erf(x)


def maxwellian_abs_moments(xp, rho, u, T, dims=1):
    r"""$\int |v_x|\,(1, v_x, |v|^2/2)\,M\,dv$ of the Maxwellian $M$ of $(\rho, u, T)$,
    `(..., 3)`, in closed form (half-range Gaussian moments, `erf`).

    The dissipation of the kinetic upwind flux $\tfrac12\int |v_x|\,m\,(f_R - f_L)\,dv$
    with $f_{L,R}$ the Maxwellians of the two states; `dims` velocity dimensions (the
    transverse ones add $(d - 1) T / 2$ per particle to the energy).
    """
    sqrt_t = xp.sqrt(T)
    s = u / sqrt_t
    tail = 0.5 * (1.0 + _erf(xp, s / math.sqrt(2.0)))  # P(v_x > 0)
    density = xp.exp(-0.5 * s**2) / math.sqrt(2.0 * math.pi)
    # Moments of (s + xi)^n over xi > -s (xi standard normal), times 2, minus the full ones.
    abs_1 = 2.0 * (s * tail + density) - s
    abs_2 = 2.0 * ((s**2 + 1.0) * tail + s * density) - (s**2 + 1.0)
    abs_3 = 2.0 * ((s**3 + 3.0 * s) * tail + (s**2 + 2.0) * density) - (s**3 + 3.0 * s)
    k0 = rho * sqrt_t * abs_1
    return xp.stack([k0, rho * T * abs_2,
                     0.5 * (rho * T * sqrt_t * abs_3 + (dims - 1) * T * k0)], axis=-1)


def moment_rate(xp, closure, Q, dx, eps, speed_factor, limiter="minmod",
                flux="lax_friedrichs"):
    r"""`-d/dx flux + explicit source` of cell averages `Q` `(..., n, 3 + K)`.

    Written once for NumPy (`xp = numpy`, `MomentSolver`) and TensorFlow
    (`xp = tf.experimental.numpy`, the differentiable solve of `mlcmk.training.moment_closure`);
    leading axes are independent periodic grids. `eps` and `speed_factor` broadcast against
    `(..., n)`; `closure(rho, T, W, eps)` takes `(..., n)` arrays. `limiter`: the slope
    limiter's name (`mlcmk.problems.kinetic.bgk.SLOPE_LIMITERS`).

    `flux`: the numerical flux at the interfaces, the average of the two reconstructed
    states' physical fluxes minus a dissipation. `"lax_friedrichs"` (default): $\tfrac12
    \alpha\,(Q_R - Q_L)$ with $\alpha = \max(|u| + c\sqrt T)$ over the two states.
    `"kinetic"`: for mass, momentum and energy the dissipation of the kinetic upwind flux
    between the two states' Maxwellians, $\tfrac12\int |v|\,(1, v, v^2/2)(M_R - M_L)\,dv$
    (`maxwellian_abs_moments`; for the Euler system this is the kinetic flux-vector
    splitting), about $\sqrt{2/\pi}\sqrt T$ where Lax–Friedrichs has $c\sqrt T$ with
    $c = 3$–$5$ for learned closures. For $\rho W$: $\bar W d_\rho + \tfrac12\alpha\,
    \bar\rho\,(W_R - W_L)$ with $d_\rho$ the mass dissipation and bars the means of the two
    states: the jump of $W$ keeps Lax–Friedrichs' rate, and a uniform $W$ is carried with the
    mass (a jump of $\rho W$ at Lax–Friedrichs' rate against one of $\rho$ at the kinetic rate
    would make $W$ jump where only the density does).
    """
    check_numerical_flux("flux", flux)
    dims = _dims(closure)
    rho, u, T, W = to_primitive(Q, dims)
    K = W.shape[-1]
    # The closure is evaluated once per cell; its flux outputs (q_hat, G_hat) are
    # reconstructed to the interfaces with the primitive variables.
    q_hat, g_hat, a = closure(rho, T, W, eps)
    P = xp.concatenate([xp.stack([rho, u, T], axis=-1), W, q_hat[..., None], g_hat], axis=-1)
    P_next = periodic_shift(P, -1, -2, xp)
    forward = P_next - P
    slope = slope_limiter(limiter)(periodic_shift(forward, 1, -2, xp), forward, xp)
    left = P + 0.5 * slope  # at i+1/2 from cell i
    right = periodic_shift(P - 0.5 * slope, -1, -2, xp)  # at i+1/2 from cell i+1
    # Fall back to first order where the reconstruction is not admissible.
    bad = ((left[..., 0] <= 0) | (left[..., 2] <= 0) | (right[..., 0] <= 0)
           | (right[..., 2] <= 0))[..., None]
    left = xp.where(bad, P, left)
    right = xp.where(bad, P_next, right)

    def flux_and_speed(s):
        s_rho, s_u, s_t, s_w = s[..., 0], s[..., 1], s[..., 2], s[..., 3:3 + K]
        flux = _flux(xp, s_rho, s_u, s_t, s_w, s[..., 3 + K], s[..., 4 + K:], dims)
        return flux, xp.abs(s_u) + speed_factor * xp.sqrt(s_t)

    def conserved(s):
        return to_conserved(s[..., 0], s[..., 1], s[..., 2], s[..., 3:3 + K], xp, dims)

    flux_l, speed_l = flux_and_speed(left)
    flux_r, speed_r = flux_and_speed(right)
    alpha = xp.maximum(speed_l, speed_r)[..., None]
    if flux == "lax_friedrichs":
        dissipation = 0.5 * alpha * (conserved(right) - conserved(left))
    else:
        def abs_moments(s):
            return maxwellian_abs_moments(xp, s[..., 0], s[..., 1], s[..., 2], dims)

        kinetic = 0.5 * (abs_moments(right) - abs_moments(left))
        # rho W: W's jump at Lax–Friedrichs' rate, rho's at the kinetic one, so that a uniform
        # W stays uniform where the density jumps (rho W_R - rho W_L = W_bar d(rho) +
        # rho_bar dW with the arithmetic means).
        w_bar = 0.5 * (left[..., 3:3 + K] + right[..., 3:3 + K])
        rho_bar = 0.5 * (left[..., :1] + right[..., :1])
        jump_w = right[..., 3:3 + K] - left[..., 3:3 + K]
        dissipation = xp.concatenate([
            kinetic, w_bar * kinetic[..., :1] + 0.5 * alpha * rho_bar * jump_w], axis=-1)
    interface = 0.5 * (flux_l + flux_r) - dissipation
    rate = -(interface - periodic_shift(interface, 1, -2, xp)) / dx
    if not K:
        return rate

    def gradient(g):
        return (periodic_shift(g, -1, -1, xp) - periodic_shift(g, 1, -1, xp)) / (2.0 * dx)

    derivatives = [gradient(g)[..., None] for g in _source_quantities(xp, rho, T, q_hat)]
    source = _w_source(xp, a, rho, T, *derivatives)[..., 0]
    return xp.concatenate([rate[..., :3], rate[..., 3:] + source], axis=-1)


def _source_quantities(xp, rho, T, q_hat):
    """The fields whose x-derivatives enter the source of the W equations: rho T, q, T."""
    return rho * T, rho * T * xp.sqrt(T) * q_hat, T


def _w_source(xp, a, rho, T, d_pressure, d_heat_flux, d_temperature):
    """Non-conservative source of the W equations, `(..., n, K, J)`.

    `a` `(..., n, 3, K)`; the derivatives `(..., n, J)` are those of `_source_quantities`
    (along x in the solver, with respect to each conserved variable in `quasilinear_matrix`).
    """
    sqrt_t = xp.sqrt(T)[..., None, None]
    return (a[..., 0, :, None] * d_pressure[..., None, :] / sqrt_t
            + a[..., 1, :, None] * d_heat_flux[..., None, :] / sqrt_t**2
            - a[..., 2, :, None] * rho[..., None, None] * d_temperature[..., None, :]
            / (2.0 * sqrt_t))


def quasilinear_matrix(closure, Q, eps, step=1e-6):
    r"""$A(Q)$ of the moment system written as $\partial_t Q + A(Q)\,\partial_x Q = $ relaxation.

    $A$ is the Jacobian of the flux minus the non-conservative source of the $W$ equations
    (`moment_rate`), by central differences of relative size `step` in each conserved
    variable. Its eigenvalues are the characteristic speeds (`characteristic_speeds`).

    Args:
        closure: as for `MomentSolver`.
        Q: `(n, 3 + K)` conserved states.
        eps: positive float, Knudsen number (an input of learned closures).
        step: relative finite-difference step.

    Returns:
        `(n, 3 + K, 3 + K)` array.
    """
    Q = np.asarray(Q, dtype=np.float64)
    K = closure.num_moments
    if Q.ndim != 2 or Q.shape[1] != 3 + K:
        raise ValueError(f"`Q` must have shape (n, {3 + K}) for a closure with {K} moments; "
                         f"received shape {Q.shape}")
    eps = check_positive_number("eps", eps)
    dims = _dims(closure)

    def parts(Q):
        rho, u, T, W = to_primitive(Q, dims)
        q_hat, g_hat, a = closure(rho, T, W, eps)
        return (_flux(np, rho, u, T, W, q_hat, g_hat, dims),
                np.stack(_source_quantities(np, rho, T, q_hat), axis=-1), a)

    rho, _, T, _ = to_primitive(Q, dims)
    check_state(rho, T, "`Q`")
    n, m = Q.shape
    jac_flux, jac_source = np.empty((n, m, m)), np.empty((n, 3, m))
    for j in range(m):
        h = step * np.maximum(np.abs(Q[:, j]), 1.0)
        shift = np.zeros_like(Q)
        shift[:, j] = h
        (f_plus, s_plus, _), (f_minus, s_minus, _) = parts(Q + shift), parts(Q - shift)
        jac_flux[:, :, j] = (f_plus - f_minus) / (2.0 * h[:, None])
        jac_source[:, :, j] = (s_plus - s_minus) / (2.0 * h[:, None])
    _, _, a = parts(Q)
    jac_flux[:, 3:] -= _w_source(np, a, rho, T, *jac_source.transpose(1, 0, 2))
    return jac_flux


def characteristic_speeds(closure, Q, eps, step=1e-6):
    """Eigenvalues `(n, 3 + K)` (complex, sorted by real part) of `quasilinear_matrix`.

    A system is hyperbolic at a state when they are real; the largest `|lambda - u| /
    sqrt(T)` is the wave-speed factor a Lax–Friedrichs flux needs there.
    """
    eigenvalues = np.linalg.eigvals(quasilinear_matrix(closure, Q, eps, step))
    order = np.argsort(eigenvalues.real, axis=-1)
    return np.take_along_axis(eigenvalues, order, axis=-1)


def relax_moments(xp, Q, h, eps, w_maxwell):
    """Exact solution over `h` of `d(rho W)/dt = rho (W_M - W) / eps` (rho fixed).

    `h` and `eps` broadcast against the cells `(..., n)` of `Q` `(..., n, 3 + K)`.
    """
    rho = Q[..., :1]
    W = Q[..., 3:] / rho
    W = w_maxwell + (W - w_maxwell) * xp.exp(-xp.asarray(h) / xp.asarray(eps))[..., None]
    return xp.concatenate([Q[..., :3], rho * W], axis=-1)


def moment_step(xp, closure, Q, dt, dx, eps, speed_factor, w_maxwell, limiter="minmod",
                flux="lax_friedrichs"):
    """One SSP-RK2 step of the moment system with the stiff relaxation applied to each stage.

    The relaxation acts over `dt` on the first stage and `dt/2` more on the average (which
    carries `dt/2` already): as eps -> 0 both stages are evaluated at `W = W_M`, so the scheme
    becomes Euler's (asymptotic preserving). `dt`, `eps`, `speed_factor` broadcast against
    the cells `(..., n)`; `xp`, `limiter` and `flux` as in `moment_rate`.
    """
    h = xp.asarray(dt)[..., None]

    def rate(Q):
        return moment_rate(xp, closure, Q, dx, eps, speed_factor, limiter, flux)

    Q1 = relax_moments(xp, Q + h * rate(Q), dt, eps, w_maxwell)
    return relax_moments(xp, 0.5 * (Q + Q1 + h * rate(Q1)), 0.5 * dt, eps, w_maxwell)


class MomentSolver:
    """Conservative finite-volume solver of the moment system of a closure.

    Args:
        dx: positive float, cell width (periodic grid).
        closure: callable `(rho, T, W, eps) -> (q_hat, G_hat, a)` with attributes
            `num_moments` and `w_maxwell` (`EulerClosure()` by default: the Euler equations),
            and optionally `velocity_dims` (1 if absent; 3: `E = rho (u^2 + 3 T) / 2`).
        eps: positive float, Knudsen number.
        cfl: positive float, time step `cfl * dx / max(|u| + speed_factor sqrt(T))`.
        speed_factor: positive float, `c` in the wave-speed bound `|u| + c sqrt(T)`
            (default: the Euler sound speed `sqrt(gamma)`, `gamma = 1 + 2 / velocity_dims`).
        limiter: slope limiter of the MUSCL reconstruction, `"minmod"` (default),
            `"van_leer"` or `"mc"` (monotonized central; the least diffusive).
        flux: numerical flux, `"lax_friedrichs"` (default) or `"kinetic"` (`moment_rate`;
            the time step keeps the bound `speed_factor` either way).
    """

    def __init__(self, dx, closure=None, eps=1.0, cfl=0.4, speed_factor=None,
                 limiter="minmod", flux="lax_friedrichs"):
        self.dx = check_positive_number("dx", dx)
        self.closure = EulerClosure() if closure is None else closure
        self.dims = _dims(self.closure)
        self.eps = check_positive_number("eps", eps)
        self.cfl = check_positive_number("cfl", cfl)
        if speed_factor is None:
            speed_factor = math.sqrt(1.0 + 2.0 / self.dims)
        self.speed_factor = check_positive_number("speed_factor", speed_factor)
        slope_limiter(limiter)
        self.limiter = limiter
        self.flux = check_numerical_flux("flux", flux)

    def rate(self, Q):
        """`-d/dx flux + explicit source` of cell averages `Q` (n, 3 + K)."""
        return moment_rate(np, self.closure, Q, self.dx, self.eps, self.speed_factor,
                           self.limiter, self.flux)

    def time_step(self, Q):
        rho, u, T, _ = to_primitive(Q, self.dims)
        return self.cfl * self.dx / np.max(np.abs(u) + self.speed_factor * np.sqrt(T))

    def solve(self, rho, u, T, W=None, t_end=0.1, jit_compile=False):
        """Advances primitive cell values to `t_end`.

        Args:
            rho, u, T: `(n,)` initial density, velocity, temperature.
            W: `(n, K)` initial generalised moments (`None` for Euler).
            t_end: positive final time.
            jit_compile: if True, run the whole time loop as one XLA program (the closure must
                offer `tensorflow()`, as `EulerClosure` and `NumpyClosure` do). The same steps
                and time steps as the NumPy loop, equal to it to round-off; the program is
                compiled on the first call for each closure, limiter, flux and number of cells
                (about 2–4 s) and reused for every `eps`, `dx`, `cfl`, `speed_factor` and
                `t_end` after that (benchmarks/README.md: 2–4x faster than NumPy for learned
                closures on 100 cells).

        Returns:
            `(rho, u, T, W)` at `t_end`.

        Raises:
            FloatingPointError: if a density or temperature stops being positive and finite.
        """
        t_end = check_positive_number("t_end", t_end)
        jit_compile = check_bool("jit_compile", jit_compile)
        rho, u, T = (np.asarray(a, dtype=np.float64) for a in (rho, u, T))
        check_state(rho, T, "initial data of the moment solver")
        K = self.closure.num_moments
        W = np.zeros((rho.shape[0], 0)) if W is None else np.asarray(W, dtype=np.float64)
        if W.shape != (rho.shape[0], K):
            raise ValueError(f"`W` must have shape ({rho.shape[0]}, {K}); received {W.shape}")
        Q = to_conserved(rho, u, T, W, dims=self.dims)
        if jit_compile:
            program = compiled_moment_solve(self.closure, self.limiter, self.flux)
            Q, t, ok = program(Q, t_end, self.dx, self.eps, self.speed_factor, self.cfl)
            if not ok:
                self._check(Q, t)  # raises: the program stopped at a state that fails it
                raise FloatingPointError(f"Moment solver broke down at t={t:.4g}")
            return to_primitive(Q, self.dims)
        t = 0.0
        # A breakdown (a non-positive or non-finite density or temperature, within a step's
        # stages too) is caught by `_check` and raised as FloatingPointError, so NumPy's
        # warnings on the way there are noise.
        with single_threaded_blas(), np.errstate(invalid="ignore", divide="ignore",
                                                 over="ignore"):
            while t < t_end * (1 - 1e-12):
                dt = min(self.time_step(Q), t_end - t)
                Q = moment_step(np, self.closure, Q, dt, self.dx, self.eps, self.speed_factor,
                                np.asarray(self.closure.w_maxwell), self.limiter, self.flux)
                self._check(Q, t)
                t += dt
        return to_primitive(Q, self.dims)

    def _check(self, Q, t):
        rho, _, T, _ = to_primitive(Q, self.dims)
        try:
            check_state(rho, T, f"moment solution at t={t:.4g}")
        except ValueError as err:
            raise FloatingPointError(f"Moment solver broke down: {err}") from err


class _TensorFlowClosure:
    """A closure's `tensorflow()` function with the attributes the scheme reads."""

    def __init__(self, closure):
        if not callable(getattr(closure, "tensorflow", None)):
            raise TypeError("`jit_compile=True` needs a closure with a `tensorflow()` method "
                            "(as `EulerClosure` and `NumpyClosure` have); received a closure "
                            f"of type {type(closure).__name__}")
        self._call = closure.tensorflow()
        self.velocity_dims = _dims(closure)
        self.num_moments = closure.num_moments

    def __call__(self, rho, T, W, eps):
        return self._call(rho, T, W, eps)


_COMPILED = weakref.WeakKeyDictionary()  # closure -> {(limiter, flux): compiled solve}
# Every EulerClosure of a gas shares the programs of one instance (kept alive here).
_EULER_CLOSURES = {dims: EulerClosure(dims) for dims in (1, 3)}


def compiled_moment_solve(closure, limiter="minmod", flux="lax_friedrichs"):
    """`MomentSolver`'s time loop for `closure` as one XLA program, cached per closure.

    Returns `solve(Q, t_end, dx, eps, speed_factor, cfl) -> (Q, t, ok)` on NumPy values: the
    conserved state `(n, 3 + K)` at `t_end`, or at the first step that left a non-positive or
    non-finite density or temperature (`ok` False; `t` the time before that step), by the same
    steps as `MomentSolver.solve`. The scalars enter as tensors, so one compilation per number
    of cells serves every Knudsen number, grid spacing and final time.
    """
    if type(closure) is EulerClosure:
        closure = _EULER_CLOSURES[closure.velocity_dims]
    programs = _COMPILED.setdefault(closure, {})
    if (limiter, flux) not in programs:
        programs[limiter, flux] = _build_compiled_solve(
            _TensorFlowClosure(closure), limiter, flux, np.asarray(closure.w_maxwell, np.float64))
    return programs[limiter, flux]


def _build_compiled_solve(closure, limiter, flux, w_maxwell):
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    slope_limiter(limiter)
    check_numerical_flux("flux", flux)
    dims = closure.velocity_dims

    @tf.function(jit_compile=True)
    def solve(Q, t_end, dx, eps, speed_factor, cfl):
        def body(t, Q, ok):
            _, u, T, _ = to_primitive(Q, dims)
            dt = tf.minimum(cfl * dx / tf.reduce_max(tf.abs(u) + speed_factor * tf.sqrt(T)),
                            t_end - t)
            Q_next = moment_step(tnp, closure, Q, dt, dx, eps, speed_factor, w_maxwell,
                                 limiter, flux)
            rho, _, T, _ = to_primitive(Q_next, dims)
            ok = tf.reduce_all(tf.math.is_finite(rho) & (rho > 0)
                               & tf.math.is_finite(T) & (T > 0))
            # On a breakdown keep the state and time at it, as the NumPy loop reports them.
            return tf.where(ok, t + dt, t), Q_next, ok

        return tf.while_loop(lambda t, Q, ok: ok & (t < t_end * (1 - 1e-12)), body,
                             (tf.zeros([], Q.dtype), Q, tf.constant(True)))

    program = compiled_in_worker(solve)  # XLA compiles in a thread of its own

    def run(Q, *scalars):
        t, Q, ok = (a.numpy() for a in program(tf.constant(Q, tf.float64), *(
            tf.constant(a, tf.float64) for a in scalars)))
        return Q, float(t), bool(ok)

    return run
