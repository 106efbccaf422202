r"""Müller–Brown potential coupled to a harmonic bath: a free energy known in closed form."""

import numpy as np

from mlcmk._validation import check_number, check_positive_int, check_positive_number
from mlcmk.problems.base import Problem
from mlcmk.problems.free_energy.restrained_md import restrained_mean_force
from mlcmk.problems.registry import register_problem

# Müller & Brown, Theor. Chim. Acta 53, 75 (1979).
_MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
_MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
_MB_b = np.array([0.0, 0.0, 11.0, 0.6])
_MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
_MB_x0 = np.array([1.0, 0.0, -0.5, -1.0])
_MB_y0 = np.array([0.0, 0.5, 1.5, 1.0])


def mueller_brown(s):
    """Müller–Brown energy and gradient (original units) at `s` of shape `(..., 2)`."""
    s = np.asarray(s, dtype=np.float64)
    dx = s[..., 0:1] - _MB_x0
    dy = s[..., 1:2] - _MB_y0
    terms = _MB_A * np.exp(_MB_a * dx**2 + _MB_b * dx * dy + _MB_c * dy**2)
    energy = terms.sum(axis=-1)
    gx = (terms * (2 * _MB_a * dx + _MB_b * dy)).sum(axis=-1)
    gy = (terms * (_MB_b * dx + 2 * _MB_c * dy)).sum(axis=-1)
    return energy, np.stack([gx, gy], axis=-1)


def _ints(seed):
    return [int(v) for v in np.atleast_1d(seed)]


@register_problem("mueller_brown", "muller_brown", "mueller_brown_bath", kind="free_energy")
class MuellerBrownBath(Problem):
    r"""Müller–Brown potential in the CVs s = (x, y), coupled to `num_bath` harmonic bath modes.

    $$U(s, z) = \epsilon\,V_{MB}(s) + \sum_{i=1}^{n} \tfrac12 k_i(s)\,(z_i - a_i\cdot s)^2,\qquad
    k_i(s) = k^0_i\,\bigl(1 + m \sin(w_i\cdot s + \varphi_i)\bigr).$$
    The bath integrates out in closed form, so the free energy of the CVs is exact:
    $$A(s) = \epsilon V_{MB}(s) + \frac{1}{2\beta}\sum_i \log k_i(s) + \text{const},$$
    the Müller–Brown surface (scaled by $\epsilon$ to a few kT) plus an entropic term of about
    1 kT that the bath's s-dependent stiffness adds. The couplings $a_i$ make the CVs and the
    bath move together, so restrained MD has to equilibrate the bath to measure the mean force.
    Bath parameters (stiffness $k^0_i$ log-uniform in `bath_stiffness`, wave vectors $w_i$,
    phases, couplings) are drawn from `seed`. Energies are in units of kT when `beta=1`.

    Args:
        num_bath: int >= 0, number of bath modes n.
        energy_scale: float > 0, $\epsilon$.
        beta: float > 0, inverse temperature.
        bath_stiffness: `(low, high)` range of $k^0_i$.
        stiffness_modulation: m in [0, 1).
        wave_number: typical $|w_i|$.
        coupling: scale of the couplings $a_i$.
        seed: int, seeds the bath parameters.
    """

    collective_variables = ("x", "y")
    domain = ((-1.7, 1.3), (-0.5, 2.2))

    def __init__(self, num_bath=20, energy_scale=0.05, beta=1.0, bath_stiffness=(200.0, 800.0),
                 stiffness_modulation=0.5, wave_number=2.0, coupling=0.3, seed=0):
        num_bath = check_positive_int("num_bath", num_bath, 0)
        for name, value in (("energy_scale", energy_scale), ("beta", beta)):
            check_positive_number(name, value)
        low, high = (float(v) for v in bath_stiffness)
        if not 0 < low <= high:
            raise ValueError(f"`bath_stiffness` must be (low, high) with 0 < low <= high; "
                             f"received bath_stiffness={bath_stiffness!r}")
        stiffness_modulation = check_number("stiffness_modulation", stiffness_modulation, 0,
                                            high=1, strict_high=True)
        self.num_bath = int(num_bath)
        self.energy_scale = float(energy_scale)
        self.beta = float(beta)
        self.bath_stiffness = [low, high]
        self.stiffness_modulation = float(stiffness_modulation)
        self.wave_number = float(wave_number)
        self.coupling = float(coupling)
        self.seed = seed
        rng = np.random.default_rng(seed)
        n = self.num_bath
        self._k0 = np.exp(rng.uniform(np.log(low), np.log(high), n))
        self._w = self.wave_number * rng.standard_normal((n, 2)) / np.sqrt(2)
        self._phase = rng.uniform(0, 2 * np.pi, n)
        self._a = self.coupling * rng.standard_normal((n, 2))
        grid = self.grid(121)
        self._offset = 0.0
        self._offset = float(self.free_energy(grid.reshape(-1, 2)).min())

    @property
    def dim(self):
        """Number of coordinates, 2 CVs + bath."""
        return 2 + self.num_bath

    def cv_index(self, name):
        """Index of the collective variable `name` ("x" or "y")."""
        if name not in self.collective_variables:
            raise ValueError(f"Unknown collective variable {name!r} of {type(self).__name__}; "
                             f"expected one of {self.collective_variables}")
        return self.collective_variables.index(name)

    def grid(self, num=101):
        """A `(num, num, 2)` grid over `domain`."""
        (x0, x1), (y0, y1) = self.domain
        x, y = np.meshgrid(np.linspace(x0, x1, num), np.linspace(y0, y1, num), indexing="xy")
        return np.stack([x, y], axis=-1)

    def _stiffness(self, s):
        phase = s @ self._w.T + self._phase  # (..., n)
        k = self._k0 * (1 + self.stiffness_modulation * np.sin(phase))
        dk = (self._k0 * self.stiffness_modulation * np.cos(phase))[..., None] * self._w
        return k, dk  # (..., n), (..., n, 2)

    def potential(self, q):
        """U(q) at `q` of shape `(..., 2 + num_bath)`."""
        q = np.asarray(q, dtype=np.float64)
        s, z = q[..., :2], q[..., 2:]
        v, _ = mueller_brown(s)
        k, _ = self._stiffness(s)
        return self.energy_scale * v + 0.5 * np.sum(k * (z - s @ self._a.T) ** 2, axis=-1)

    def gradient(self, q):
        """grad U(q), same shape as `q`."""
        q = np.asarray(q, dtype=np.float64)
        s, z = q[..., :2], q[..., 2:]
        _, gv = mueller_brown(s)
        k, dk = self._stiffness(s)
        u = z - s @ self._a.T
        gs = (self.energy_scale * gv + 0.5 * np.einsum("...i,...ij->...j", u**2, dk)
              - (k * u) @ self._a)
        return np.concatenate([gs, k * u], axis=-1)

    def free_energy(self, s):
        """Exact A(s) (kT units when beta = 1), zero at its minimum over `domain`; `(n,)`."""
        s = np.asarray(s, dtype=np.float64)
        v, _ = mueller_brown(s)
        k, _ = self._stiffness(s)
        entropic = 0.5 / self.beta * np.sum(np.log(k / self._k0), axis=-1)
        return self.energy_scale * v + entropic - self._offset

    def mean_force(self, s):
        """Exact mean force -grad A(s), `(n, 2)`."""
        s = np.asarray(s, dtype=np.float64)
        _, gv = mueller_brown(s)
        k, dk = self._stiffness(s)
        return -(self.energy_scale * gv + 0.5 / self.beta * np.einsum("...i,...ij->...j",
                                                                       1 / k, dk))

    def curvature_bound(self):
        """A bound on the largest eigenvalue of the Hessian of U where A < ~20 kT (plus bath).

        The Müller–Brown part is bounded by 4000 (original units) over the basins; the bath adds
        at most (1 + m) (max k0 + sum_i k0_i |a_i|^2).
        """
        bath = (1 + self.stiffness_modulation) * (
            (self._k0.max() if self.num_bath else 0.0) + np.sum(self._k0 * np.sum(self._a**2, 1)))
        return 4000.0 * self.energy_scale + bath

    def sample_cvs(self, num, num_steps=2000, seed=0):
        """CVs of `num` independent plain (unrestrained) MD walkers after `num_steps` steps.

        Walkers start in the deepest Müller–Brown minimum, as a short equilibrium run would;
        a realistic source of the first labels of concurrent learning.
        """
        rng = np.random.default_rng(seed)
        q = self.initial_positions(np.array([[-0.558, 1.442]]), num, rng)[0]
        dt = 1.0 / self.curvature_bound()
        scale = np.sqrt(dt / (2.0 * self.beta))
        noise = rng.standard_normal(q.shape)
        for _ in range(num_steps):
            new_noise = rng.standard_normal(q.shape)
            q = q - dt * self.gradient(q) + scale * (noise + new_noise)
            noise = new_noise
        return q[:, :2]

    def initial_positions(self, centers, num_walkers, rng):
        """Walkers at the restraint centres with the bath drawn from its conditional law."""
        centers = np.asarray(centers, dtype=np.float64)
        s = np.repeat(centers[:, None, :], num_walkers, axis=1)
        k, _ = self._stiffness(s)
        z = s @ self._a.T + rng.standard_normal(k.shape) / np.sqrt(self.beta * k)
        return np.concatenate([s, z], axis=-1)

    def restrained_mean_force(self, centers, kappa=1000.0, num_walkers=16, dt=None,
                              num_steps=3000, num_burnin=300, num_blocks=20, seed=0):
        """Mean force at `centers` `(B, 2)` by restrained MD; see `restrained_mean_force`.

        `dt` defaults to 1 / (kappa + a bound on the curvature of U), a stable step. `seed`
        is an int or one seed per centre (then each result is independent of the batch).
        """
        centers = np.atleast_2d(np.asarray(centers, dtype=np.float64))
        if centers.shape[-1] != 2:
            raise ValueError(f"`centers` must have shape (B, 2); received shape {centers.shape}")
        if dt is None:
            dt = 1.0 / (kappa + self.curvature_bound())
        if seed is None or isinstance(seed, (int, np.integer)):
            rng = np.random.default_rng(seed)
            q0 = self.initial_positions(centers, num_walkers, rng)
            noise_seed = int(rng.integers(2**31))
        else:
            q0 = np.concatenate([self.initial_positions(c[None], num_walkers,
                                                        np.random.default_rng([*_ints(s), 0]))
                                 for c, s in zip(centers, seed, strict=True)])
            noise_seed = [[*_ints(s), 1] for s in seed]
        return restrained_mean_force(self.gradient, centers, q0, kappa=kappa, beta=self.beta,
                                     dt=dt, num_steps=num_steps, num_burnin=num_burnin,
                                     num_blocks=num_blocks, seed=noise_seed)

    def smoothed_mean_force(self, s, kappa, num=41):
        r"""$-\nabla A_\kappa(s)$, the exact mean force of a restraint of stiffness kappa.

        By quadrature of $e^{-\beta A}$ against the restraint's Gaussian on a (num x num) grid
        of +-6 standard deviations; what restrained MD measures without sampling error.
        """
        s = np.atleast_2d(np.asarray(s, dtype=np.float64))
        sigma = 1.0 / np.sqrt(self.beta * kappa)
        t = np.linspace(-6 * sigma, 6 * sigma, num)
        dx, dy = np.meshgrid(t, t, indexing="ij")
        offsets = np.stack([dx.ravel(), dy.ravel()], axis=-1)
        points = s[:, None, :] + offsets  # (B, m, 2)
        a = self.free_energy(points.reshape(-1, 2)).reshape(points.shape[:2])
        logw = -self.beta * a - 0.5 * self.beta * kappa * np.sum(offsets**2, axis=-1)
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return kappa * np.einsum("bm,mj->bj", w, offsets)
