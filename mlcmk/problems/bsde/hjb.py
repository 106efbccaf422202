r"""The Hamilton-Jacobi-Bellman equation of a linear-quadratic-Gaussian control problem."""

import math

import numpy as np
from keras import ops

from mlcmk._validation import check_number
from mlcmk.problems.bsde.base import BSDEProblem, ReferenceValue
from mlcmk.problems.registry import register_problem


def _log_mean_exp(a, axis=0):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))


@register_problem("hjb_lq", "hjb", "hjb_lqg", kind="bsde")
class HJBLQ(BSDEProblem):
    r"""HJB equation of LQG control: $u_t + \Delta u - \lambda |\nabla u|^2 = 0$, $u(T,x) = g(x)$.

    $g(x) = \ln((1 + |x|^2) / 2)$, $\sigma = \sqrt2 I$, $\mu = 0$, so $Z = \sqrt2 \nabla u$ and the
    generator is $f(t, x, y, z) = -\lambda |\nabla u|^2 = -(\lambda / 2) |z|^2$.

    The Hopf-Cole transform $w = e^{-\lambda u}$ turns it into the heat equation, so
    $u(t, x) = -\lambda^{-1} \ln E[\exp(-\lambda g(x + \sqrt2 W_{T-t}))]$ and
    $\nabla u(t,x) = E[\nabla g\, e^{-\lambda g}] / E[e^{-\lambda g}]$. Since g is radial, u is a
    one-dimensional integral over the noncentral chi-square law of $|X_T|^2$: `radial_value`
    (used by `reference_value`) evaluates it by quadrature, exact for every lambda;
    `hopf_cole_value` and `exact_z` use Monte Carlo with antithetic pairs, which is biased when
    large lambda puts the weight on rare paths. At d = 100, T = 1, lambda = 1, x0 = 0 the
    published value is 4.5901 (Han, Jentzen, E, PNAS 2018); the quadrature gives 4.590162.

    **Pulled paths.** With `pull = c > 0` the paths are simulated as
    $dX = -c X dt + \sqrt2 dW$ (exponential Euler) instead of $X = x_0 + \sqrt2 W$, and the
    generator gains $-b \cdot \nabla u = c\, x \cdot z / \sqrt2$ for the drift $b = -c x$: the
    same PDE, another BSDE, the same u(0, x0). The optimal control pulls the paths towards 0 with
    the drift $-2\lambda \nabla u$; with that drift the generator would be stationary in z at the
    exact Z. In practice the value learned under two pulls is a consistency check: where Z is
    learned they agree; where it is not, each lands near its own Z = 0 answer and they disagree
    (at d = 100, lambda = 50: y0 4.37 with c = 0, 3.93 with c = 1, exact 3.724).

    Args:
        dim, total_time, num_steps, x0, x0_spread: see `BSDEProblem`.
        lam: float >= 0, the control cost weight lambda.
        reference_samples: Monte Carlo sample size of `reference_value`.
        seed: seed of that Monte Carlo.
        pull: float >= 0, the rate c of the drift -c x of the simulated paths.
    """

    def __init__(self, dim=100, total_time=1.0, num_steps=20, x0=0.0, x0_spread=0.0, lam=1.0,
                 reference_samples=2_000_000, seed=0, pull=0.0):
        super().__init__(dim, total_time, num_steps, x0, x0_spread)
        self.lam = check_number("lam", lam, 0)
        self.reference_samples = int(reference_samples)
        self.seed = int(seed)
        self._reference = None
        self.pull = check_number("pull", pull, 0)

    def drift(self, t, x):
        return -self.pull * x

    def sample_step(self, t, x, dw):
        # Exponential Euler: exact for the drift, so a strong pull (c dt ~ 0.4 at lambda = 50)
        # does not overshoot.
        if not self.pull:
            return x + math.sqrt(2.0) * dw
        return math.exp(-self.pull * self.dt) * x + math.sqrt(2.0) * dw

    def generator(self, t, x, y, z):
        f = -0.5 * self.lam * ops.sum(z**2, axis=-1)
        if self.pull:
            f = f + (self.pull / math.sqrt(2.0)) * ops.sum(x * z, axis=-1)
        return f

    def terminal(self, x):
        return ops.log((1.0 + ops.sum(x**2, axis=-1)) / 2.0)

    # --- Hopf-Cole Monte Carlo ----------------------------------------------------------------
    def _g_np(self, y):
        return np.log((1.0 + np.sum(y**2, axis=-1)) / 2.0)

    def hopf_cole_value(self, t, x, num_samples=200_000, seed=0, chunk=20_000):
        """u(t, x) for one point x by Monte Carlo of the Hopf-Cole formula.

        Returns:
            `(value, stderr)`; stderr by the delta method on antithetic pairs.
        """
        x = np.asarray(x, dtype="float64").reshape(self.dim)
        tau = self.total_time - float(t)
        if tau <= 0:
            return float(self._g_np(x)), 0.0
        rng = np.random.default_rng(seed)
        if self.lam == 0:
            vals = []
            for start in range(0, num_samples, 2 * chunk):
                m = min(chunk, (num_samples - start + 1) // 2)
                w = rng.standard_normal((m, self.dim)) * math.sqrt(2 * tau)
                vals.append(0.5 * (self._g_np(x + w) + self._g_np(x - w)))
            v = np.concatenate(vals)
            return float(v.mean()), float(v.std() / math.sqrt(len(v)))
        logs = []
        for start in range(0, num_samples, 2 * chunk):
            m = min(chunk, (num_samples - start + 1) // 2)
            w = rng.standard_normal((m, self.dim)) * math.sqrt(2 * tau)
            a = -self.lam * self._g_np(x + w)
            b = -self.lam * self._g_np(x - w)
            mx = np.maximum(a, b)
            logs.append(mx + np.log(0.5 * (np.exp(a - mx) + np.exp(b - mx))))
        logs = np.concatenate(logs)
        shift = logs.max()
        e = np.exp(logs - shift)
        value = -(shift + math.log(e.mean())) / self.lam
        stderr = e.std() / (e.mean() * math.sqrt(len(e))) / self.lam
        return float(value), float(stderr)

    def radial_value(self, t, x):
        r"""u(t, x) for one point x by one-dimensional quadrature of the Hopf-Cole formula.

        g depends on y = x + sqrt(2 tau) xi only through $|y|^2 = 2\tau S$, and S follows the
        noncentral chi-square law with d degrees of freedom and noncentrality
        $|x|^2 / (2\tau)$. So $E[e^{-\lambda g}]$ is an integral over S, done here by adaptive
        quadrature around the peak of the integrand. Unlike Monte Carlo, it stays exact when
        large lambda puts the weight on rare paths (at d = 100, x = 0, lambda = 50 the integrand
        peaks at |y|^2 ~ 12 where typical paths have |y|^2 ~ 200: Monte Carlo with 2e6 samples
        is then 11% too high while reporting a tiny standard error).

        Returns:
            `(value, error)`: the error estimate of the quadrature.
        """
        from scipy import integrate, optimize, stats

        x = np.asarray(x, dtype="float64").reshape(self.dim)
        tau = self.total_time - float(t)
        if tau <= 0:
            return float(self._g_np(x)), 0.0
        nc = float(np.sum(x**2)) / (2 * tau)
        law = stats.ncx2(self.dim, nc) if nc > 0 else stats.chi2(self.dim)
        # Integrated over r = sqrt(S), whose density 2 r p_S(r^2) stays bounded at 0 for every d
        # (p_S itself is singular there when d = 1).
        hi = math.sqrt(law.mean() + 40 * law.std())

        def g(r):
            return np.log((1.0 + 2 * tau * r * r) / 2.0)

        def log_density(r):
            return law.logpdf(r * r) + np.log(2 * r)

        if self.lam == 0:
            value, err = integrate.quad(lambda r: g(r) * np.exp(log_density(r)), 0, np.inf,
                                        limit=200, epsabs=0, epsrel=1e-12)
            return float(value), float(err)

        def log_f(r):
            return -self.lam * g(r) + log_density(r)

        peak = optimize.minimize_scalar(lambda r: -log_f(r), bounds=(1e-9, hi),
                                        method="bounded", options={"xatol": 1e-10}).x
        shift = log_f(peak)
        total, err = 0.0, 0.0
        for a, b in ((0.0, peak), (peak, hi), (hi, np.inf)):
            v, e = integrate.quad(lambda r: np.exp(log_f(r) - shift), a, b, limit=200,
                                  epsabs=0, epsrel=1e-12)
            total, err = total + v, err + e
        value = -(shift + math.log(total)) / self.lam
        return float(value), float(err / total / self.lam)

    def reference_value(self):
        if self._reference is None:
            if self.x0_spread:
                return None
            value, err = self.radial_value(0.0, self.x0)
            self._reference = ReferenceValue(
                value, err, "Hopf-Cole formula, 1-D quadrature over the noncentral chi-square "
                "law of |X_T|^2 (exact up to the quadrature error)")
        return self._reference

    def exact_solution(self, t, x, num_samples=20_000, seed=1):
        """u(t, x) by Hopf-Cole Monte Carlo at each row of x (shape (..., d))."""
        x = np.asarray(x, dtype="float64")
        flat = x.reshape(-1, self.dim)
        out = np.array([self.hopf_cole_value(t, p, num_samples, seed + i)[0]
                        for i, p in enumerate(flat)])
        return out.reshape(x.shape[:-1])

    def exact_z(self, t, x, num_samples=20_000, seed=2):
        r"""$Z = \sqrt2 \nabla u(t, x)$ by Monte Carlo at each row of x (shape (..., d))."""
        x = np.asarray(x, dtype="float64")
        flat = x.reshape(-1, self.dim)
        tau = self.total_time - float(t)
        out = np.empty_like(flat)
        rng = np.random.default_rng(seed)
        for i, p in enumerate(flat):
            if tau <= 0:
                y = p[None]
                w = np.ones(1)
            else:
                half = rng.standard_normal((num_samples // 2, self.dim)) * math.sqrt(2 * tau)
                y = p + np.concatenate([half, -half])
                a = -self.lam * self._g_np(y)
                w = np.exp(a - a.max())
            grad_g = 2.0 * y / (1.0 + np.sum(y**2, axis=-1, keepdims=True))
            out[i] = (w[:, None] * grad_g).sum(0) / w.sum()
        return (math.sqrt(2.0) * out).reshape(x.shape)

    def get_config(self):
        return {**super().get_config(), "lam": self.lam,
                "reference_samples": self.reference_samples, "seed": self.seed,
                "pull": self.pull}


def hjb_lambda_sweep(lams, dim=100, total_time=1.0, num_samples=200_000, seed=0):
    """u(0, 0) of `hjb_lq` against lambda (the seed's figure 7, right).

    Returns:
        A list of `(lam, exact, monte_carlo, monte_carlo_stderr)`: the quadrature of
        `HJBLQ.radial_value` and the plain Hopf-Cole Monte Carlo with `num_samples` samples.
    """
    rows = []
    for lam in lams:
        p = HJBLQ(dim=dim, total_time=total_time, lam=lam)
        exact, _ = p.radial_value(0.0, p.x0)
        value, stderr = p.hopf_cole_value(0.0, p.x0, num_samples=num_samples, seed=seed)
        rows.append((float(lam), exact, value, stderr))
    return rows
