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
1-D-velocity BGK equation).

Scheme: the closure is evaluated once per cell; MUSCL reconstruction of
$(\rho, u, T, W, \hat q, \hat G)$ with minmod slopes, local Lax–Friedrichs flux
(speed $|u| + c\sqrt T$), central differences for the gradients in the non-conservative source
of $W$, SSP-RK2; the stiff relaxation is integrated exactly after each stage ($\rho$ is
constant during it), so the scheme stays stable and becomes Euler's as $\varepsilon \to 0$.
Mass, momentum and energy are conserved to round-off by construction (flux differences).
"""

import math

import numpy as np

from mlcmk.problems.kinetic.bgk import (
    _positive_number,
    check_state,
    minmod,
    single_threaded_blas,
)

_SQRT3 = math.sqrt(3.0)  # Euler sound speed over sqrt(T) for gamma = 3


def relaxation_speed_factor(eps, dx, frozen=3.0):
    r"""Wave-speed factor `c` of the Lax–Friedrichs flux of a relaxation moment system.

    $c = \sqrt3 + (c_f - \sqrt3)\,\varepsilon / (\varepsilon + \Delta x)$: Euler's sound
    speed when the relaxation time $\varepsilon$ is short against the time $\Delta x$ a unit
    thermal speed takes to cross a cell (the generalised moments are then relaxed to
    equilibrium within every step and the system is Euler's), the frozen bound $c_f$ when it is
    long. A frozen bound at small $\varepsilon$ only adds numerical diffusion (it smears
    shocks that Euler's bound resolves).
    """
    eps = _positive_number("eps", eps)
    dx = _positive_number("dx", dx)
    frozen = _positive_number("frozen", frozen)
    return _SQRT3 + (frozen - _SQRT3) * eps / (eps + dx)


class EulerClosure:
    """Maxwellian closure: no generalised moments, zero heat flux."""

    num_moments = 0
    w_maxwell = np.zeros(0)
    num_even = 0

    def __call__(self, rho, T, W, eps):
        n = np.shape(rho)[0]
        return np.zeros(n), np.zeros((n, 0)), np.zeros((n, 3, 0))


def physical_flux(closure, rho, u, T, W, eps):
    """Flux `(n, 3 + K)` of the moment system and the source coefficients `a` `(n, 3, K)`."""
    q_hat, g_hat, coefficients = closure(rho, T, W, eps)
    return _flux(rho, u, T, W, q_hat, g_hat), coefficients


def _flux(rho, u, T, W, q_hat, g_hat):
    E = 0.5 * rho * (u**2 + T)
    p = rho * T
    sqrt_t = np.sqrt(T)
    return np.concatenate([
        np.stack([rho * u, rho * u**2 + p, u * (E + p) + p * sqrt_t * q_hat], axis=1),
        (rho * u)[:, None] * W + (rho * sqrt_t)[:, None] * g_hat], axis=1)


def to_conserved(rho, u, T, W):
    """Primitive `(rho, u, T, W)` -> conserved `(n, 3 + K)`."""
    return np.concatenate([np.stack([rho, rho * u, 0.5 * rho * (u**2 + T)], axis=1),
                           rho[:, None] * W], axis=1)


def to_primitive(Q):
    """Conserved `(n, 3 + K)` -> `(rho, u, T, W)`."""
    rho = Q[:, 0]
    u = Q[:, 1] / rho
    T = (2.0 * Q[:, 2] - rho * u**2) / rho
    return rho, u, T, Q[:, 3:] / rho[:, None]


class MomentSolver:
    """Conservative finite-volume solver of the moment system of a closure.

    Args:
        dx: positive float, cell width (periodic grid).
        closure: callable `(rho, T, W, eps) -> (q_hat, G_hat, a)` with attributes
            `num_moments` and `w_maxwell` (`EulerClosure()` by default: the Euler equations).
        eps: positive float, Knudsen number.
        cfl: positive float, time step `cfl * dx / max(|u| + speed_factor sqrt(T))`.
        speed_factor: positive float, `c` in the wave-speed bound `|u| + c sqrt(T)`
            (`sqrt(3)`, the Euler sound speed, by default).
    """

    def __init__(self, dx, closure=None, eps=1.0, cfl=0.4, speed_factor=_SQRT3):
        self.dx = _positive_number("dx", dx)
        self.closure = EulerClosure() if closure is None else closure
        self.eps = _positive_number("eps", eps)
        self.cfl = _positive_number("cfl", cfl)
        self.speed_factor = _positive_number("speed_factor", speed_factor)

    def rate(self, Q):
        """`-d/dx flux + explicit source` of cell averages `Q` (n, 3 + K)."""
        rho, u, T, W = to_primitive(Q)
        n = rho.shape[0]
        K = self.closure.num_moments
        # The closure is evaluated once per cell; its flux outputs (q_hat, G_hat) are
        # reconstructed to the interfaces with the primitive variables.
        q_hat, g_hat, a = self.closure(rho, T, W, self.eps)
        P = np.concatenate([np.stack([rho, u, T], axis=1), W, q_hat[:, None], g_hat], axis=1)
        forward = np.roll(P, -1, axis=0) - P
        slope = minmod(np.roll(forward, 1, axis=0), forward)
        left = P + 0.5 * slope  # at i+1/2 from cell i
        right = np.roll(P - 0.5 * slope, -1, axis=0)  # at i+1/2 from cell i+1
        # Fall back to first order where the reconstruction is not admissible.
        bad = (left[:, 0] <= 0) | (left[:, 2] <= 0) | (right[:, 0] <= 0) | (right[:, 2] <= 0)
        if np.any(bad):
            left[bad] = P[bad]
            right[bad] = np.roll(P, -1, axis=0)[bad]
        states = np.concatenate([left, right], axis=0)
        s_rho, s_u, s_t, s_w = states[:, 0], states[:, 1], states[:, 2], states[:, 3:3 + K]
        flux = _flux(s_rho, s_u, s_t, s_w, states[:, 3 + K], states[:, 4 + K:])
        q_states = to_conserved(s_rho, s_u, s_t, s_w)
        speed = np.abs(s_u) + self.speed_factor * np.sqrt(s_t)
        alpha = np.maximum(speed[:n], speed[n:])[:, None]
        interface = 0.5 * (flux[:n] + flux[n:]) - 0.5 * alpha * (q_states[n:] - q_states[:n])
        rate = -(interface - np.roll(interface, 1, axis=0)) / self.dx
        if K:
            sqrt_t = np.sqrt(T)

            def gradient(g):
                return (np.roll(g, -1) - np.roll(g, 1)) / (2.0 * self.dx)

            rate[:, 3:] += (a[:, 0] * (gradient(rho * T) / sqrt_t)[:, None]
                            + a[:, 1] * (gradient(rho * T * sqrt_t * q_hat) / T)[:, None]
                            - a[:, 2] * (rho * gradient(T) / (2.0 * sqrt_t))[:, None])
        return rate

    def time_step(self, Q):
        rho, u, T, _ = to_primitive(Q)
        return self.cfl * self.dx / np.max(np.abs(u) + self.speed_factor * np.sqrt(T))

    def relax(self, Q, h):
        """Exact solution over `h` of `d(rho W)/dt = rho (W_M - W) / eps` (rho fixed)."""
        if not self.closure.num_moments:
            return Q
        rho = Q[:, :1]
        W = Q[:, 3:] / rho
        w_m = np.asarray(self.closure.w_maxwell)
        W = w_m + (W - w_m) * math.exp(-h / self.eps)
        return np.concatenate([Q[:, :3], rho * W], axis=1)

    def solve(self, rho, u, T, W=None, t_end=0.1):
        """Advances primitive cell values to `t_end`.

        Args:
            rho, u, T: `(n,)` initial density, velocity, temperature.
            W: `(n, K)` initial generalised moments (`None` for Euler).
            t_end: positive final time.

        Returns:
            `(rho, u, T, W)` at `t_end`.
        """
        t_end = _positive_number("t_end", t_end)
        rho, u, T = (np.asarray(a, dtype=np.float64) for a in (rho, u, T))
        check_state(rho, T, "initial data of the moment solver")
        K = self.closure.num_moments
        W = np.zeros((rho.shape[0], 0)) if W is None else np.asarray(W, dtype=np.float64)
        if W.shape != (rho.shape[0], K):
            raise ValueError(f"`W` must have shape ({rho.shape[0]}, {K}); received {W.shape}")
        Q = to_conserved(rho, u, T, W)
        t = 0.0
        with single_threaded_blas():
            while t < t_end * (1 - 1e-12):
                dt = min(self.time_step(Q), t_end - t)
                # SSP-RK2 with the stiff relaxation applied to every stage (dt to the first,
                # dt/2 more to the average, which carries dt/2 already): as eps -> 0 both
                # stages are evaluated at W = W_M, so the scheme becomes Euler's (AP).
                Q1 = self.relax(Q + dt * self.rate(Q), dt)
                self._check(Q1, t)
                Q = self.relax(0.5 * (Q + Q1 + dt * self.rate(Q1)), 0.5 * dt)
                self._check(Q, t)
                t += dt
        return to_primitive(Q)

    @staticmethod
    def _check(Q, t):
        rho, _, T, _ = to_primitive(Q)
        try:
            check_state(rho, T, f"moment solution at t={t:.4g}")
        except ValueError as err:
            raise FloatingPointError(f"Moment solver broke down: {err}") from err
