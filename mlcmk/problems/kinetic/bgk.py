r"""BGK equation in one space and one (or three) velocity dimensions, on a discrete velocity grid.

$$\partial_t f + v\,\partial_x f = \frac{1}{\varepsilon}\big(\mathcal M[f] - f\big),\qquad
x \in [-L/2, L/2)\ \text{periodic},\ v \in [-v_{\max}, v_{\max}].$$

Moments use the basis $\phi(v) = (1, v, v^2/2)$: $U = (\rho, \rho u, E)$ with
$E = \tfrac12\rho u^2 + \tfrac12\rho T$ (one velocity dimension: $p = \rho T$, $\gamma = 3$).

Scheme (one time step $\Delta t$, Strang splitting):
1. relaxation over $\Delta t/2$, 2. transport over $\Delta t$, 3. relaxation over $\Delta t/2$.
Transport is conservative MUSCL (minmod slopes, upwind flux per velocity) with SSP-RK2 in time,
so $\sum_i f_{ij}$ is conserved for every velocity $v_j$. Relaxation conserves the moments, so
$\mathcal M$ is fixed during it and the relaxation has the exact solution
$f \leftarrow \mathcal M + (f - \mathcal M)e^{-h/\varepsilon}$, computed from the post-transport
moments: unconditionally stable and asymptotic-preserving ($f \to \mathcal M$ as
$\varepsilon \to 0$, giving a kinetic scheme for the Euler equations). The Maxwellian is the
*discrete* one of Mieussens: $\mathcal M = \exp(\alpha\cdot\phi(v_j))$ with $\alpha$ found by
Newton's method so that its quadrature moments equal $U$ to round-off; hence mass, momentum and
energy are conserved to round-off.

Three velocity dimensions (`velocity_dims=3`): the same equation for a gas whose distribution
lives on a tensor grid of `num_v**3` velocities $v = (v_x, v_y, v_z)$, still transported along
$x$ only (initial data depend on $x$ alone); five conserved moments
$(\rho, \rho u_x, \rho u_y, \rho u_z, E)$ with $E = \tfrac12\rho|u|^2 + \tfrac32\rho T$
($\gamma = 5/3$, the monatomic gas of the seed paper). Same scheme, the Maxwellian
$\exp(\alpha\cdot(1, v, |v|^2/2))$ again matched to the moments by Newton's method. For such
x-only flows `reduced=True` carries the two $v_x$ marginals of $f$ instead
(`ReducedVelocityGrid3D`), exactly and at the cost of two 1-D-velocity solves.

Reference: L. Mieussens, "Discrete velocity model and implicit scheme for the BGK equation of
rarefied gas dynamics", M3AS 10 (2000); J. Han, C. Ma, Z. Ma, W. E, PNAS 116 (2019) 21983.
"""

import contextlib
import math

import numpy as np

from mlcmk._threads import compiled_in_worker
from mlcmk._validation import check_bool, check_number, check_positive_int, check_positive_number
from mlcmk.problems.base import Problem
from mlcmk.problems.registry import register_problem


def _velocity_dims(value):
    if value not in (1, 3) or isinstance(value, bool):
        raise ValueError(f"`velocity_dims` must be 1 or 3; received velocity_dims={value!r}")
    return int(value)


def single_threaded_blas():
    """Context limiting BLAS to one thread (if threadpoolctl is installed).

    The solvers work on small arrays, for which threaded BLAS only costs synchronisation
    (tens of times slower on a loaded machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


class VelocityGrid:
    """Uniform velocity nodes `v_j` on `[-v_max, v_max]` with equal quadrature weights `dv`.

    For distributions that vanish (to round-off) near `±v_max` the rectangle rule is
    spectrally accurate.

    Args:
        v_max: positive float, half-width of the velocity interval.
        num_v: int >= 8, number of nodes.
    """

    num_axes = 1

    def __init__(self, v_max=8.0, num_v=64):
        self.v_max = check_positive_number("v_max", v_max)
        self.num_v = check_positive_int("num_v", num_v, minimum=8)
        self.v = np.linspace(-self.v_max, self.v_max, self.num_v)
        self.dv = 2.0 * self.v_max / (self.num_v - 1)
        self.basis = np.stack([np.ones_like(self.v), self.v, 0.5 * self.v**2])  # (3, num_v)

    def moments(self, f):
        """`(..., num_v)` -> `(..., 3)`: `(rho, rho u, E)` by the quadrature of the grid."""
        f = np.asarray(f, dtype=np.float64)
        if f.shape[-1] != self.num_v:
            raise ValueError(f"`f` must have last axis num_v={self.num_v}; received shape "
                             f"{f.shape}")
        return np.einsum("...j,kj->...k", f, self.basis) * self.dv

    @property
    def num_nodes(self):
        return self.num_v

    @property
    def vx(self):
        """Transport velocity of each node."""
        return self.v

    def edge_values(self, f):
        """`f` at the two end nodes `v = ±v_max`, `(..., 2)`."""
        return f[..., [0, -1]]

    def conserved(self, rho, u, T):
        return conserved_from_primitive(rho, u, T)

    def primitives(self, U):
        return primitive_from_conserved(U)

    def maxwellian(self, U):
        return discrete_maxwellian(self, U)

    def get_config(self):
        return {"v_max": self.v_max, "num_v": self.num_v}


class VelocityGrid3D:
    """Tensor grid of `num_v**3` uniform velocity nodes on `[-v_max, v_max]^3`, flattened.

    Node `j` has velocity `nodes[j] = (v_x, v_y, v_z)`; quadrature weight `dv**3`. Moments are
    the five conserved ones `(rho, rho u_x, rho u_y, rho u_z, E)`, `E = (rho |u|^2 + 3 rho T)/2`.

    Args:
        v_max: positive float, half-width of the velocity cube.
        num_v: int >= 8, nodes per axis (the grid holds `num_v**3`).
    """

    num_axes = 3

    def __init__(self, v_max=7.5, num_v=36):
        line = VelocityGrid(v_max, num_v)  # one axis
        self.v_max, self.num_v, self.axis, self.dv = line.v_max, line.num_v, line.v, line.dv
        mesh = np.meshgrid(self.axis, self.axis, self.axis, indexing="ij")
        self.nodes = np.stack([m.ravel() for m in mesh], axis=-1)  # (num_v**3, 3)
        self.weight = self.dv**3
        self.basis = np.concatenate([np.ones((1, self.num_nodes)), self.nodes.T,
                                     0.5 * np.sum(self.nodes**2, axis=1)[None]])  # (5, N)
        upper = np.triu_indices(5)
        self._pairs = upper
        self._pair_basis = self.basis[upper[0]] * self.basis[upper[1]]  # (15, N)
        self._edge = np.any(np.abs(np.abs(self.nodes) - self.v_max) < 1e-12 * self.v_max,
                            axis=1)

    @property
    def num_nodes(self):
        return self.num_v**3

    @property
    def vx(self):
        """Transport velocity `v_x` of each node."""
        return self.nodes[:, 0]

    def moments(self, f):
        """`(..., num_v**3)` -> `(..., 5)`: `(rho, rho u_x, rho u_y, rho u_z, E)`."""
        f = np.asarray(f, dtype=np.float64)
        if f.shape[-1] != self.num_nodes:
            raise ValueError(f"`f` must have last axis num_v**3={self.num_nodes}; received "
                             f"shape {f.shape}")
        return (f.reshape(-1, self.num_nodes) @ self.basis.T).reshape(
            *f.shape[:-1], 5) * self.weight

    def edge_values(self, f):
        """`f` at the nodes on the faces of the velocity cube."""
        return f[..., self._edge]

    @staticmethod
    def conserved(rho, u, T):
        """`(rho, u_x, T)` (no transverse velocity) -> `(..., 5)` conserved moments."""
        rho, u, T = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (rho, u, T)))
        zero = np.zeros_like(rho)
        return np.stack([rho, rho * u, zero, zero, 0.5 * rho * (u**2 + 3.0 * T)], axis=-1)

    @staticmethod
    def primitives(U):
        """`(..., 5)` -> `(rho, u_x, T)`, `T = (2 E / rho - |u|^2) / 3`."""
        U = np.asarray(U, dtype=np.float64)
        rho = U[..., 0]
        u = U[..., 1:4] / rho[..., None]
        T = (2.0 * U[..., 4] / rho - np.sum(u**2, axis=-1)) / 3.0
        return rho, u[..., 0], T

    def maxwellian(self, U, tol=1e-13, max_iterations=30):
        """Maxwellian `exp(alpha . (1, v, |v|^2/2))` on the grid whose quadrature moments equal
        `U` `(..., 5)` to round-off (Newton's method from the continuous Maxwellian).

        Returns:
            `(..., num_v**3)` array.
        """
        U = np.asarray(U, dtype=np.float64)
        shape = U.shape[:-1]
        U = U.reshape(-1, 5)
        rho = U[:, 0]
        u = U[:, 1:4] / rho[:, None]
        T = (2.0 * U[:, 4] / rho - np.sum(u**2, axis=-1)) / 3.0
        check_state(rho, T, "moments given to the Maxwellian")
        alpha = np.concatenate([
            (np.log(rho) - 1.5 * np.log(2 * np.pi * T) - 0.5 * np.sum(u**2, axis=-1) / T)[:, None],
            u / T[:, None], (-1.0 / T)[:, None]], axis=1)
        rows, cols = self._pairs

        def evaluate(alpha):
            M = np.exp(alpha @ self.basis)  # (n, N)

            def jacobian():
                pairs = (M @ self._pair_basis.T) * self.weight  # (n, 15)
                out = np.empty((len(rho), 5, 5))
                out[:, rows, cols] = pairs
                out[:, cols, rows] = pairs
                return out

            return M, (M @ self.basis.T) * self.weight - U, jacobian

        M = _newton_maxwellian(alpha, evaluate, rho, tol, max_iterations)
        return M.reshape(*shape, self.num_nodes)

    def get_config(self):
        return {"v_max": self.v_max, "num_v": self.num_v}


class ReducedVelocityGrid3D:
    r"""Three velocity dimensions reduced to `v_x` for flows that depend on x alone (Chu).

    A distribution `f(x, v)` whose data do not depend on y, z and carry no transverse velocity
    is represented by its two marginals on the `v_x` grid of `VelocityGrid`:
    $g = \int f\,dv_y dv_z$ and $h = \int \tfrac12(v_y^2 + v_z^2) f\,dv_y dv_z$, stored side by
    side as `(..., 2 num_v)`. BGK maps to BGK for `(g, h)` with the Maxwellian pair
    `(G, T G)`, `G` the 1-D discrete Maxwellian of `(rho, u, T)`: mass, momentum and the
    energy `E = int v^2/2 g + int h = rho (u^2 + 3 T) / 2` are conserved to round-off; it
    discretises the same solution as the tensor grid at the cost of two 1-D distributions.

    Args:
        v_max: positive float, half-width of the `v_x` interval.
        num_v: int >= 8, `v_x` nodes.
    """

    num_axes = 1  # transverse axes are integrated exactly

    def __init__(self, v_max=8.0, num_v=64):
        self.line = VelocityGrid(v_max, num_v)
        self.v_max, self.num_v, self.dv = self.line.v_max, self.line.num_v, self.line.dv

    @property
    def num_nodes(self):
        return 2 * self.num_v

    @property
    def vx(self):
        """Transport velocity of each node: `v_x` for `g`, then again for `h`."""
        return np.concatenate([self.line.v, self.line.v])

    def split(self, f):
        """`(..., 2 num_v)` -> `(g, h)`."""
        f = np.asarray(f, dtype=np.float64)
        if f.shape[-1] != self.num_nodes:
            raise ValueError(f"`f` must have last axis 2 num_v={self.num_nodes} (g, then h); "
                             f"received shape {f.shape}")
        return f[..., :self.num_v], f[..., self.num_v:]

    def moments(self, f):
        """`(..., 2 num_v)` -> `(..., 3)`: `(rho, rho u, E)`, `E = rho (u^2 + 3 T) / 2`."""
        g, h = self.split(f)
        U = self.line.moments(g)
        U[..., 2] += np.sum(h, axis=-1) * self.dv
        return U

    def edge_values(self, f):
        g, h = self.split(f)
        return np.concatenate([self.line.edge_values(g), self.line.edge_values(h)], -1)

    @staticmethod
    def conserved(rho, u, T):
        return VelocityGrid3D.conserved(rho, u, T)[..., [0, 1, 4]]

    @staticmethod
    def primitives(U):
        """`(..., 3)` -> `(rho, u, T)`, `T = (2 E / rho - u^2) / 3`."""
        U = np.asarray(U, dtype=np.float64)
        rho = U[..., 0]
        u = U[..., 1] / rho
        return rho, u, (2.0 * U[..., 2] / rho - u**2) / 3.0

    def maxwellian(self, U):
        """The pair `(G, T G)` `(..., 2 num_v)` whose moments equal `U` to round-off."""
        rho, u, T = self.primitives(U)
        G = discrete_maxwellian(self.line, conserved_from_primitive(rho, u, T))
        return np.concatenate([G, T[..., None] * G], axis=-1)

    def get_config(self):
        return self.line.get_config()


def primitive_from_conserved(U):
    """`(..., 3)` conserved `(rho, rho u, E)` -> `(rho, u, T)` each of shape `(...)`."""
    U = np.asarray(U, dtype=np.float64)
    rho = U[..., 0]
    u = U[..., 1] / rho
    T = (2.0 * U[..., 2] - rho * u**2) / rho
    return rho, u, T


def conserved_from_primitive(rho, u, T):
    """`(rho, u, T)` -> `(..., 3)` conserved `(rho, rho u, E)`, `E = rho (u^2 + T) / 2`."""
    rho, u, T = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (rho, u, T)))
    return np.stack([rho, rho * u, 0.5 * rho * (u**2 + T)], axis=-1)


def check_state(rho, T, where="state"):
    """Raises ValueError unless all densities and temperatures are positive and finite."""
    rho = np.asarray(rho)
    T = np.asarray(T)
    if not np.all(np.isfinite(rho)) or np.any(rho <= 0):
        raise ValueError(f"Density must be positive and finite in the {where}; received min "
                         f"rho={np.nanmin(rho):.4g}")
    if not np.all(np.isfinite(T)) or np.any(T <= 0):
        raise ValueError(f"Temperature must be positive and finite in the {where}; received min "
                         f"T={np.nanmin(T):.4g}")


def check_velocity_grid(grid, rho, u, T, tol=1e-8):
    """Raises ValueError if Maxwellians of `(rho, u, T)` lose mass outside the velocity grid.

    Checks the continuous Gaussian mass outside `[-v_max - dv/2, v_max + dv/2]` (relative to
    rho; on a 3-D grid summed over the three axes, `u` along x) against `tol`, and that the
    thermal speed is resolved (`sqrt(T) >= 1.5 dv`).
    """
    check_state(rho, T)
    u = np.asarray(u, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    edge = grid.v_max + 0.5 * grid.dv
    s = np.sqrt(2.0 * T)
    outside = 0.5 * (_erfc((edge - u) / s) + _erfc((edge + u) / s))
    # Transverse axes of a tensor grid (no transverse velocity): the same tails about 0.
    outside = outside + (grid.num_axes - 1) * _erfc(edge / s)
    worst = float(np.max(outside))
    if worst > tol:
        i = int(np.argmax(outside))
        raise ValueError(
            f"Velocity grid too narrow: v_max={grid.v_max:g} leaves a fraction {worst:.3g} "
            f"(> {tol:g}) of the mass outside the grid for u={u.ravel()[i]:.4g}, "
            f"T={np.broadcast_to(T, outside.shape).ravel()[i]:.4g}; increase v_max.")
    if np.sqrt(np.min(T)) < 1.5 * grid.dv:
        raise ValueError(f"Velocity grid too coarse: dv={grid.dv:.4g} does not resolve the "
                         f"thermal speed sqrt(T)={np.sqrt(np.min(T)):.4g}; increase num_v.")


def check_distribution_support(grid, f, tol=1e-6):
    """Raises ValueError if `f` carries mass at the edge nodes of the velocity grid."""
    f = np.asarray(f, dtype=np.float64)
    if not np.all(np.isfinite(f)):
        raise ValueError("`f` contains non-finite values")
    scale = np.max(np.abs(f))
    edge = np.max(np.abs(grid.edge_values(f)))
    if scale == 0 or edge > tol * scale:
        raise ValueError(f"Velocity grid too narrow for `f`: the edge nodes v=±{grid.v_max:g} "
                         f"hold {edge / max(scale, 1e-300):.3g} of the peak value (> {tol:g}); "
                         "mass would leave the grid. Increase v_max.")


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def discrete_maxwellian(grid, U, tol=1e-14, max_iterations=30):
    """Maxwellian on the velocity grid whose quadrature moments equal `U` to round-off.

    Solves for `alpha` in `M_j = exp(alpha_0 + alpha_1 xi_j + alpha_2 xi_j^2)`,
    `xi_j = (v_j - u) / sqrt(T)`, by Newton's method started from the continuous Maxwellian
    (the moment equations in the `xi` basis are an invertible linear map of those in the
    `(1, v, v^2/2)` basis, so matching one matches the other).

    Args:
        grid: a `VelocityGrid`.
        U: `(..., 3)` conserved moments with positive density and temperature.

    Returns:
        `(..., num_v)` array.
    """
    U = np.asarray(U, dtype=np.float64)
    rho, u, T = primitive_from_conserved(U)
    check_state(rho, T, "moments given to the Maxwellian")
    shape = rho.shape
    rho = rho.reshape(-1)
    alpha, evaluate = _maxwellian_newton_start(np, grid.v, grid.dv, rho, u.reshape(-1),
                                               T.reshape(-1))
    M = _newton_maxwellian(alpha, evaluate, rho, tol, max_iterations)
    return M.reshape(*shape, grid.num_v)


def _maxwellian_newton_start(xp, v, dv, rho, u, T):
    """Start `alpha` `(n, 3)` (the continuous Maxwellian) and `evaluate(alpha) -> (M,
    residual, jacobian)` of the discrete-Maxwellian equations in the `xi` basis on the nodes
    `v` (spacing `dv`), over the array namespace `xp` (NumPy, or `tf.experimental.numpy` in the
    compiled solve)."""
    s = xp.sqrt(T)
    xi = (v[None, :] - u[:, None]) / s[:, None]  # (n, num_v)
    basis = xp.stack([xp.ones_like(xi), xi, xi**2], axis=1)  # (n, 3, num_v)
    # Targets in the xi basis: (rho, 0, rho) for the exact (rho, u, T) of U.
    target = xp.stack([rho, xp.zeros_like(rho), rho], axis=1)
    alpha = xp.stack([xp.log(rho / xp.sqrt(2 * np.pi * T) * s), xp.zeros_like(rho),
                      -0.5 * xp.ones_like(rho)], axis=1)

    def evaluate(alpha):
        M = xp.exp(xp.einsum("nk,nkj->nj", alpha, basis)) / s[:, None]
        return (M, xp.einsum("nkj,nj->nk", basis, M) * dv - target,
                lambda: xp.einsum("nkj,nlj,nj->nkl", basis, basis, M) * dv)

    return alpha, evaluate


def _newton_maxwellian(alpha, evaluate, rho, tol, max_iterations):
    """Newton's method on the exponents `alpha` `(n, k)` of a discrete Maxwellian.

    `evaluate(alpha)` returns the Maxwellian `M`, the residual `(n, k)` of its moment
    equations and a callable giving their Jacobian `(n, k, k)`; iterates until the residual
    relative to `rho` is below `tol`. Returns `M`.
    """
    for _ in range(max_iterations):
        M, residual, jacobian = evaluate(alpha)
        error = np.max(np.abs(residual) / rho[:, None])
        if error < tol:
            return M
        alpha = alpha - np.linalg.solve(jacobian(), residual[..., None])[..., 0]
    raise ValueError(_NOT_CONVERGED.format(f"{error:.3g}"))


_NOT_CONVERGED = ("Discrete Maxwellian did not converge (relative moment error {}); the "
                  "velocity grid is probably too narrow or too coarse for these moments.")


def periodic_shift(a, shift, axis, xp=np):
    """`xp.roll(a, shift, axis)`: entry `i` moves to `i + shift` (periodic).

    For NumPy arrays by two slices and one concatenation, several times faster than `np.roll`
    on the small arrays of these solvers (~2 against ~7 microseconds per call on 100 cells);
    other `xp` (`tf.experimental.numpy`) use their `roll`.
    """
    if xp is not np:
        return xp.roll(a, shift, axis=axis)
    n = a.shape[axis]
    cut = n - shift % n
    head, tail = [slice(None)] * a.ndim, [slice(None)] * a.ndim
    head[axis], tail[axis] = slice(cut, None), slice(None, cut)
    return np.concatenate((a[tuple(head)], a[tuple(tail)]), axis=axis)


def minmod(a, b, xp=np):
    """Elementwise minmod limiter (`xp`: NumPy or `tf.experimental.numpy`)."""
    return xp.where(a * b > 0, xp.sign(a) * xp.minimum(xp.abs(a), xp.abs(b)), 0.0)


def monotonized_central(a, b, xp=np):
    """Monotonized-central limiter: `min(2|a|, 2|b|, |a + b| / 2)` with the common sign, else 0."""
    magnitude = xp.minimum(2.0 * xp.minimum(xp.abs(a), xp.abs(b)), 0.5 * xp.abs(a + b))
    return xp.where(a * b > 0, xp.sign(a) * magnitude, 0.0)


def van_leer(a, b, xp=np):
    """Van Leer's limiter: the harmonic mean `2ab / (a + b)` where `a, b` share a sign, else 0."""
    same = a * b > 0
    return xp.where(same, 2.0 * a * b / xp.where(same, a + b, 1.0), 0.0)


SLOPE_LIMITERS = {"minmod": minmod, "van_leer": van_leer, "mc": monotonized_central}


def slope_limiter(name):
    """The limiter function `(a, b, xp) -> slope` named `name` (a key of `SLOPE_LIMITERS`).

    All three are TVD slope limiters of second-order MUSCL, from the most diffusive to the
    least: `minmod` <= `van_leer` <= `mc` in magnitude.
    """
    if not isinstance(name, str) or name not in SLOPE_LIMITERS:
        raise ValueError(f"`limiter` must be one of {sorted(SLOPE_LIMITERS)}; received {name!r}")
    return SLOPE_LIMITERS[name]


@register_problem("bgk_1d", "bgk", kind="kinetic")
class BGK1D(Problem):
    r"""BGK equation, periodic in x on `[-length/2, length/2)`, one or three velocity dimensions.

    Args:
        eps: positive float, Knudsen number (relaxation time).
        num_x: int >= 4, number of cells in x.
        v_max: positive float, velocity grid half-width.
        num_v: int >= 8, velocity nodes (per axis with `velocity_dims=3`).
        length: positive float, period in x.
        cfl: float in (0, 1], time step `cfl * dx / v_max`.
        velocity_dims: 1 (default) or 3. With 3 the distribution lives on the tensor grid
            `VelocityGrid3D` (`num_v**3` nodes, a monatomic gas with `E = rho (u^2 + 3 T) / 2`);
            distributions are `(num_x, num_v**3)` and `moments` returns the five conserved
            moments, while `maxwellian`, `primitives` and the initial data keep `(rho, u, T)`
            with `u` along x. The learned moment models of this package are for
            `velocity_dims=1`.
        reduced: with `velocity_dims=3`, use `ReducedVelocityGrid3D` instead (the two
            `v_x` marginals `(g, h)`, `(num_x, 2 num_v)`; exact for these x-only flows and as
            cheap as two 1-D-velocity solves). The tensor grid is what a collision operator
            without this reduction, or transverse structure, would need.

    Example:
    ```python
    problem = BGK1D(eps=0.1, num_x=100)
    f0 = problem.maxwellian(*problem.sod_initial())
    f = problem.solve(f0, t_end=0.1)
    rho, u, T = problem.primitives(f)
    ```
    """

    def __init__(self, eps=0.1, num_x=100, v_max=8.0, num_v=64, length=1.0, cfl=0.5,
                 velocity_dims=1, reduced=False):
        self.eps = check_positive_number("eps", eps)
        self.num_x = check_positive_int("num_x", num_x, minimum=4)
        self.v_max = check_positive_number("v_max", v_max)
        self.num_v = check_positive_int("num_v", num_v, minimum=8)
        self.length = check_positive_number("length", length)
        self.cfl = check_number("cfl", cfl, 0, strict=True, high=1)
        self.velocity_dims = _velocity_dims(velocity_dims)
        if not isinstance(reduced, (bool, np.bool_)) or (reduced and self.velocity_dims != 3):
            raise ValueError(f"`reduced` must be a bool, True only with velocity_dims=3; "
                             f"received reduced={reduced!r}, velocity_dims={velocity_dims!r}")
        self.reduced = bool(reduced)
        if self.velocity_dims == 1:
            grid_class = VelocityGrid
        else:
            grid_class = ReducedVelocityGrid3D if self.reduced else VelocityGrid3D
        self.grid = grid_class(self.v_max, self.num_v)
        self.num_nodes = self.grid.num_nodes
        self.dx = self.length / self.num_x
        self.x = -0.5 * self.length + (np.arange(self.num_x) + 0.5) * self.dx

    # ------------------------------------------------------------------ moments
    def moments(self, f):
        """`(..., num_x, num_nodes)` -> `(..., num_x, 3)` conserved moments (5 on the tensor
        grid of `velocity_dims=3`)."""
        return self.grid.moments(f)

    def primitives(self, f):
        """Returns `(rho, u, T)` of `f`, each `(..., num_x)` (`u` along x)."""
        return self.grid.primitives(self.moments(f))

    def maxwellian(self, rho, u, T):
        """Discrete Maxwellian `(num_x, num_nodes)` of cell values `(rho, u, T)`; checks the grid.

        Scalars are broadcast to all cells.
        """
        rho, u, T = (np.broadcast_to(np.asarray(a, dtype=np.float64), (self.num_x,))
                     for a in (rho, u, T))
        check_velocity_grid(self.grid, rho, u, T)
        return self.grid.maxwellian(self.grid.conserved(rho, u, T))

    # ------------------------------------------------------------------ initial data
    def random_smooth_initial(self, rng, num_modes=3, amplitude=(0.5, 0.5, 0.5)):
        """Random Fourier modes in `(rho, u, T)` about `(1, 0, 1)`.

        Each field is `base + a r g(x)` with `g` a sum of `num_modes` random modes (coefficients
        `N(0, 1) / k`) scaled to `max|g| = 1`, `r ~ U(0, 1)` and `a` from `amplitude`.

        Returns:
            `(rho, u, T)`, each of shape `(num_x,)`.
        """
        fields = []
        for base, a in zip((1.0, 0.0, 1.0), amplitude, strict=True):
            k = np.arange(1, num_modes + 1)
            c = rng.standard_normal((2, num_modes)) / k
            phase = 2 * np.pi * np.outer(self.x / self.length, k)
            g = np.sin(phase) @ c[0] + np.cos(phase) @ c[1]
            g = g / np.max(np.abs(g))
            fields.append(base + a * rng.uniform(0, 1) * g)
        return tuple(fields)

    def sod_initial(self, rho=(1.0, 0.125), T=(1.0, 0.8), u=(0.0, 0.0)):
        """Sod-type double Riemann problem: left state on `|x| < length/4`, right elsewhere."""
        inside = np.abs(self.x) < 0.25 * self.length
        pick = [np.where(inside, a[0], a[1]) for a in (rho, u, T)]
        return pick[0], pick[1], pick[2]

    def random_sod_initial(self, rng):
        """Sod-type problem with random states: rho_L, T_L ~ U(0.8, 1.2),
        rho_R ~ U(0.125, 0.5), T_R ~ U(0.6, 1.0), u = 0."""
        return self.sod_initial(rho=(rng.uniform(0.8, 1.2), rng.uniform(0.125, 0.5)),
                                T=(rng.uniform(0.8, 1.2), rng.uniform(0.6, 1.0)))

    # ------------------------------------------------------------------ scheme
    def time_step(self):
        """The CFL time step `cfl * dx / v_max`."""
        return self.cfl * self.dx / self.v_max

    def _transport_rate(self, f, xp=np):
        v = self.grid.vx
        forward = periodic_shift(f, -1, 0, xp) - f  # f_{i+1} - f_i
        slope = minmod(periodic_shift(forward, 1, 0, xp), forward, xp)
        left = f + 0.5 * slope  # value at i+1/2 from cell i
        right = periodic_shift(f - 0.5 * slope, -1, 0, xp)  # value at i+1/2 from cell i+1
        flux = xp.where(v > 0, v * left, v * right)  # flux at i+1/2
        return -(flux - periodic_shift(flux, 1, 0, xp)) / self.dx

    def transport(self, f, dt, xp=np):
        """One SSP-RK2 step of `f_t + v f_x = 0` (MUSCL, minmod, upwind); conservative
        (`xp`: the array namespace, NumPy or `tf.experimental.numpy`)."""
        f1 = f + dt * self._transport_rate(f, xp)
        return 0.5 * (f + f1 + dt * self._transport_rate(f1, xp))

    def relax(self, f, h, maxwellian=None):
        """Exact relaxation `f <- M + (f - M) exp(-h / eps)` with M from the moments of `f`."""
        if maxwellian is None:
            maxwellian = self.grid.maxwellian(self.moments(f))
        return maxwellian + (f - maxwellian) * math.exp(-h / self.eps), maxwellian

    def solve(self, f0, t_end, num_snapshots=None, return_next=False, jit_compile=False):
        """Advances `f0` to `t_end` with Strang splitting.

        Args:
            f0: `(num_x, num_nodes)` initial distribution.
            t_end: positive final time; the last step is shortened to hit it.
            num_snapshots: if given, also returns `num_snapshots` states at equally spaced times
                `t_end * k / num_snapshots`, k = 1..num_snapshots (on the step grid: the
                steps are shortened so that every snapshot time is hit).
            return_next: with `num_snapshots`, also returns the state one step
                `dt` after each snapshot (for time derivatives).
            jit_compile: if True (one velocity dimension), run the time loop as one XLA
                program (one call per snapshot interval, and one per next state): the same
                steps, equal to the NumPy loop to round-off, compiled on the first call per
                grid (about 2–3 s; every eps, t_end and number of snapshots reuse it).

        Returns:
            `f(t_end)`; or `(times, snapshots)` / `(times, snapshots, next_states, dt)`.
        """
        t_end = check_positive_number("t_end", t_end)
        if check_bool("jit_compile", jit_compile) and self.velocity_dims != 1:
            raise ValueError("`jit_compile=True` needs velocity_dims=1; received "
                             f"velocity_dims={self.velocity_dims}")
        f = np.array(f0, dtype=np.float64)
        if f.shape != (self.num_x, self.num_nodes):
            raise ValueError(f"`f0` must have shape (num_x, num_nodes)=({self.num_x}, "
                             f"{self.num_nodes}); received {f.shape}")
        check_distribution_support(self.grid, f)
        if np.any(f < 0):
            raise ValueError(f"`f0` must be non-negative; received min {f.min():.3g}")
        check_state(*self.primitives(f)[::2], where="initial data")
        segments = (1 if num_snapshots is None
                    else check_positive_int("num_snapshots", num_snapshots))
        dt_max = self.time_step()
        steps = max(1, math.ceil(t_end / segments / dt_max - 1e-9))
        dt = t_end / segments / steps
        if jit_compile:
            program = _compiled_bgk_solve(self)
            decay = math.exp(-0.5 * dt / self.eps)

            def advance(f, n, _):  # -> (f after n steps, None)
                f, converged = program(f, n, dt, decay)
                if not converged:
                    raise ValueError(_NOT_CONVERGED.format("above the tolerance"))
                return f, None
        else:
            def advance(f, n, maxwellian):  # -> (f after n steps, its Maxwellian)
                for _ in range(n):
                    f, maxwellian = self._step(f, dt, maxwellian)
                return f, maxwellian
        times, snaps, nexts = [], [], []
        maxwellian = None
        with single_threaded_blas():
            for k in range(segments):
                f, maxwellian = advance(f, steps, maxwellian)
                if num_snapshots is not None:
                    times.append(t_end * (k + 1) / segments)
                    snaps.append(f.copy())
                    if return_next:
                        nexts.append(advance(f, 1, maxwellian)[0])
        if num_snapshots is None:
            return f
        if return_next:
            return np.array(times), np.stack(snaps), np.stack(nexts), dt
        return np.array(times), np.stack(snaps)

    def _step(self, f, dt, maxwellian):
        # The Maxwellian after the second half relaxation equals the one before it (relaxation
        # conserves the moments), so it serves as the first half relaxation of the next step.
        f, _ = self.relax(f, 0.5 * dt, maxwellian)
        f = self.transport(f, dt)
        f, maxwellian = self.relax(f, 0.5 * dt)
        return f, maxwellian


_COMPILED_BGK = {}  # (v_max, num_v, num_x, dx) -> compiled solve


def _compiled_bgk_solve(problem, tol=1e-14, max_iterations=30):
    """`BGK1D.solve`'s time loop (one velocity dimension) as one XLA program, per grid.

    Returns `solve(f, steps, dt, decay) -> (f, converged)` on NumPy values, `decay =
    exp(-dt / (2 eps))`: the steps of `_step`, with the discrete Maxwellian by the Newton
    iteration of `discrete_maxwellian` (same start, tolerance and iteration limit;
    `converged` False if it ever hit the limit).
    """
    grid = problem.grid
    key = (grid.v_max, grid.num_v, problem.num_x, problem.dx)
    if key in _COMPILED_BGK:
        return _COMPILED_BGK[key]
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    v, basis_v, dv = tf.constant(grid.v), tf.constant(grid.basis), grid.dv

    def maxwellian(f):  # `discrete_maxwellian` of the moments of `f`, and whether it converged
        U = tf.einsum("nj,kj->nk", f, basis_v) * dv
        rho = U[:, 0]
        u = U[:, 1] / rho
        T = (2.0 * U[:, 2] - rho * u**2) / rho
        alpha, evaluate = _maxwellian_newton_start(tnp, v, dv, rho, u, T)

        def error(alpha):
            return tf.reduce_max(tf.abs(evaluate(alpha)[1]) / rho[:, None])

        def newton(i, alpha, _):
            _, residual, jacobian = evaluate(alpha)
            alpha = alpha - tf.linalg.solve(jacobian(), residual[..., None])[..., 0]
            return i + 1, alpha, error(alpha)

        _, alpha, last_error = tf.while_loop(
            lambda i, alpha, e: (i < max_iterations) & (e >= tol), newton,
            (0, alpha, error(alpha)))
        return evaluate(alpha)[0], last_error < tol

    @tf.function(jit_compile=True)
    def solve(f, steps, dt, decay):
        def step(i, f, M, converged):  # `_step`: half relaxation, transport, half relaxation
            f = problem.transport(M + (f - M) * decay, dt, tnp)
            M, ok = maxwellian(f)
            return i + 1, M + (f - M) * decay, M, converged & ok

        M, converged = maxwellian(f)
        _, f, _, converged = tf.while_loop(lambda i, *_: i < steps, step,
                                           (0, f, M, converged))
        return f, converged

    program = compiled_in_worker(solve)  # XLA compiles in a thread of its own

    def run(f, steps, dt, decay):
        f, converged = program(tf.constant(f, tf.float64), tf.constant(steps, tf.int32),
                               tf.constant(dt, tf.float64), tf.constant(decay, tf.float64))
        return f.numpy(), bool(converged)

    _COMPILED_BGK[key] = run
    return run
