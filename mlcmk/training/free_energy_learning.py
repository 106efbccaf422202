r"""Concurrent learning of free energies: MCMC exploration, ensemble examination, MD labels.

The parts plug into `ConcurrentLearner`:
- `MCMCExplorer`: samples $e^{-\beta A(s)/T}$ of the current model (ensemble mean) with
  TensorFlow Probability's random-walk Metropolis, over a ladder of temperatures T, in a box;
- `EnsembleExaminer`: the model deviation of an `Ensemble` (for free energies the RMS spread of
  the predicted mean forces, as in reinforced dynamics);
- `RestrainedMDLabeller`: the mean force and its error bar by restrained MD of a problem;
- `EnsembleTrainer` (from `concurrent_learning`) fits the members to the mean forces.
`build_free_energy_learner` assembles them for a `free_energy` problem such as `mueller_brown`.
"""

import numpy as np
import tensorflow as tf

from mlcmk._plotting import subplots
from mlcmk._validation import check_positive_int, check_positive_number
from mlcmk.models.ensemble import Ensemble
from mlcmk.models.free_energy import FreeEnergyModel
from mlcmk.training.concurrent_learning import (
    ConcurrentLearner,
    EnsembleTrainer,
    Examiner,
    Explorer,
    Labeller,
    configuration_key,
    farthest_point_selector,
)


def _check_domain(domain):
    domain = np.asarray(domain, dtype=np.float64)
    if domain.ndim != 2 or domain.shape[1] != 2 or np.any(domain[:, 0] >= domain[:, 1]):
        raise ValueError(f"`domain` must be a list of (low, high) pairs with low < high; "
                         f"received domain={domain.tolist()!r}")
    return domain


def make_sampler(log_prob_fn, num_chains, num_results, num_burnin=100, thin=1, step_size=0.1,
                 temperatures=None, domain=None, dtype="float64"):
    """The compiled chain of `sample_boltzmann`: `(initial_state, seed) -> (states, accepted)`.

    Build it once and call it many times (one trace), e.g. once per exploration.
    """
    import tensorflow_probability as tfp

    dtype = tf.as_dtype(dtype)
    temps = tf.ones((num_chains,), dtype) if temperatures is None else tf.constant(
        np.asarray(temperatures), dtype=dtype)
    box = None if domain is None else tf.constant(_check_domain(domain), dtype=dtype)

    def target(s):
        lp = log_prob_fn(s) / temps
        if box is not None:
            inside = tf.reduce_all((s >= box[:, 0]) & (s <= box[:, 1]), axis=-1)
            lp = tf.where(inside, lp, tf.constant(-np.inf, dtype))
        return lp

    scale = tf.cast(step_size, dtype) * tf.sqrt(temps)[:, None]
    kernel = tfp.mcmc.RandomWalkMetropolis(
        target, new_state_fn=tfp.mcmc.random_walk_normal_fn(scale=scale))

    # One graph for the whole chain (eager execution would dispatch every step from Python).
    @tf.function(autograph=False)
    def run(start, stateless_seed):
        return tfp.mcmc.sample_chain(
            num_results=num_results, current_state=start, kernel=kernel,
            num_burnin_steps=num_burnin, num_steps_between_results=thin - 1,
            trace_fn=lambda _, results: results.is_accepted, seed=stateless_seed)

    return run


def sample_boltzmann(log_prob_fn, initial_state, num_results, num_burnin=100, thin=1,
                     step_size=0.1, temperatures=None, domain=None, seed=(0, 0)):
    r"""Random-walk Metropolis chains (TensorFlow Probability) on `log_prob_fn / T`.

    Args:
        log_prob_fn: callable mapping states `(chains, d)` (tf tensor) to log densities
            `(chains,)`, up to a constant.
        initial_state: array `(chains, d)`.
        num_results: states kept per chain.
        num_burnin: steps discarded first.
        thin: steps between kept states.
        step_size: standard deviation of the Gaussian proposal at T = 1 (scaled by sqrt(T)).
        temperatures: optional array `(chains,)`; chain c samples `exp(log_prob / T_c)`.
        domain: optional `(d, 2)` box; the density is zero outside.
        seed: stateless seed, a pair of ints.

    Returns:
        `(states, acceptance)`: array `(num_results, chains, d)` and the mean acceptance rate.
    """
    state = tf.convert_to_tensor(initial_state)
    sampler = make_sampler(log_prob_fn, int(state.shape[0]), num_results, num_burnin, thin,
                           step_size, temperatures, domain, state.dtype)
    states, accepted = sampler(state, tf.constant(seed, dtype=tf.int32))
    return states.numpy(), float(tf.reduce_mean(tf.cast(accepted, tf.float64)))


class MCMCExplorer(Explorer):
    """Samples `exp(log_prob_fn(s) / T)` by random-walk Metropolis over a temperature ladder.

    Chains start uniformly in `domain` (seeded by iteration) and are split evenly over
    `temperatures`; after `num_burnin` steps every `thin`-th state of each chain is returned.

    Args:
        log_prob_fn: callable `(chains, d)` tf tensor -> `(chains,)` log density at T = 1,
            e.g. `-beta * A(s)` of the current model (see `ensemble_log_prob`).
        domain: `(d, 2)` box.
        num_chains: number of chains.
        num_results: states kept per chain.
        num_burnin, thin, step_size: see `sample_boltzmann`.
        temperatures: temperature ladder (in units of the model temperature).
    """

    def __init__(self, log_prob_fn, domain, num_chains=64, num_results=10, num_burnin=200,
                 thin=10, step_size=0.05, temperatures=(1.0,)):
        if not callable(log_prob_fn):
            raise TypeError(f"`log_prob_fn` must be callable; received {log_prob_fn!r}")
        self.domain = _check_domain(domain)
        for name, value in (("num_chains", num_chains), ("num_results", num_results),
                            ("thin", thin)):
            check_positive_int(name, value)
        temperatures = np.asarray(temperatures, dtype=np.float64).ravel()
        if temperatures.size == 0 or np.any(~(temperatures > 0)):
            raise ValueError(f"`temperatures` must be positive numbers; received "
                             f"temperatures={temperatures.tolist()!r}")
        self.log_prob_fn = log_prob_fn
        self.num_chains = int(num_chains)
        self.num_results = int(num_results)
        self.num_burnin = int(num_burnin)
        self.thin = int(thin)
        self.step_size = float(step_size)
        self.temperatures = temperatures
        self.acceptance = None
        self._sampler = None

    def explore(self, iteration, seed):
        import keras

        rng = np.random.default_rng([seed, iteration, 7])
        low, high = self.domain[:, 0], self.domain[:, 1]
        start = rng.uniform(low, high, size=(self.num_chains, len(low)))
        temps = np.resize(self.temperatures, self.num_chains)
        if self._sampler is None:
            self._sampler = make_sampler(
                self.log_prob_fn, self.num_chains, self.num_results, self.num_burnin, self.thin,
                self.step_size, temps, self.domain, keras.config.floatx())
        seed_pair = tf.constant([int(v) for v in rng.integers(0, 2**31 - 1, 2)], tf.int32)
        states, accepted = self._sampler(tf.constant(start.astype(keras.config.floatx())),
                                         seed_pair)
        self.acceptance = float(tf.reduce_mean(tf.cast(accepted, tf.float64)))
        states = states.numpy()
        return states.reshape(-1, states.shape[-1])


def ensemble_log_prob(ensemble, beta=1.0):
    """`s -> -beta * mean_k A_k(s)` for an ensemble of `FreeEnergyModel`s (a tf function)."""
    members = ensemble.members

    def log_prob(s):
        a = tf.add_n([tf.reshape(m(s), (-1,)) for m in members]) / len(members)
        return -beta * a

    return log_prob


class EnsembleExaminer(Examiner):
    """The model deviation of an `Ensemble` (its `output_fn` and `deviation_fn`)."""

    def __init__(self, ensemble, batch_size=4096):
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
        self.ensemble = ensemble
        self.batch_size = int(batch_size)

    def examine(self, configurations):
        import keras

        x = np.asarray(configurations, dtype=keras.config.floatx())
        parts = [self.ensemble.model_deviation(x[i:i + self.batch_size])
                 for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts)


class RestrainedMDLabeller(Labeller):
    """Mean force and its error bar at each configuration by the problem's restrained MD.

    Every configuration's MD is seeded by its content hash (and `seed`), so its label does not
    depend on the batch it is computed in. Non-finite results are failures.

    Args:
        problem: a problem with `restrained_mean_force(centers, seed=[...], **md_kwargs)`.
        batch_size: configurations simulated together (vectorised).
        seed: int.
        **md_kwargs: passed on (kappa, num_walkers, num_steps, ...).
    """

    def __init__(self, problem, batch_size=32, seed=0, **md_kwargs):
        if not hasattr(problem, "restrained_mean_force"):
            raise TypeError(f"`problem` must have a restrained_mean_force method; received "
                            f"{type(problem).__name__}")
        self.problem = problem
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.md_kwargs = md_kwargs
        self.calls = 0  # configurations simulated

    def label_batch(self, configurations):
        centers = np.asarray(configurations, dtype=np.float64)
        seeds = [[self.seed, int(configuration_key(c)[:12], 16)] for c in centers]
        self.calls += len(centers)
        result = self.problem.restrained_mean_force(centers, seed=seeds, **self.md_kwargs)
        out = []
        for f, e in zip(result["mean_force"], result["stderr"], strict=True):
            if np.all(np.isfinite(f)) and np.all(np.isfinite(e)):
                out.append({"mean_force": f, "stderr": e})
            else:
                out.append(FloatingPointError("restrained MD went non-finite"))
        return out


def free_energy_errors(problem, ensemble, threshold=10.0, num=81):
    r"""RMS errors of the ensemble-mean A and mean force over the region `A_exact < threshold`.

    A is compared after removing the best constant shift (A is defined up to a constant).

    Returns:
        dict with `a_rmse`, `force_rmse`, `a_max_error` (in the problem's energy units) and the
        number of grid points.
    """
    import keras

    grid = problem.grid(num).reshape(-1, 2)
    exact = problem.free_energy(grid)
    region = grid[exact < threshold]
    x = region.astype(keras.config.floatx())
    a = np.mean([np.asarray(m(x))[:, 0] for m in ensemble.members], axis=0)
    diff = a - exact[exact < threshold]
    diff -= diff.mean()
    forces = np.mean([np.asarray(m.mean_force(x)) for m in ensemble.members], axis=0)
    force_err = forces - problem.mean_force(region)
    return {"a_rmse": float(np.sqrt(np.mean(diff**2))), "a_max_error": float(np.abs(diff).max()),
            "force_rmse": float(np.sqrt(np.mean(np.sum(force_err**2, -1)))),
            "num_points": int(len(region))}


def build_free_energy_learner(problem, directory, num_members=4, hidden_units=(64, 64, 64),
                              trust_levels=(2.0, float("inf")), max_iterations=15,
                              max_labels_per_iteration=30, num_initial=20, converge_fraction=0.9,
                              min_iterations=4,
                              temperatures=(1.0, 2.0, 4.0), num_chains=48, num_results=10,
                              train_steps=1000, batch_size=64, learning_rate=3e-3,
                              md_kwargs=None, threshold=10.0, seed=0, verbose=1,
                              explorer="mcmc", explorer_kwargs=None):
    """Assembles a `ConcurrentLearner` for a 2-CV `free_energy` problem (e.g. `mueller_brown`).

    Ensemble of `FreeEnergyModel`s (inputs centred and scaled on the problem's domain; mean-force
    deviation); MCMC exploration of the ensemble-mean free energy over `temperatures`; labels by
    restrained MD; `num_initial` initial configurations from a short plain MD run
    (`problem.sample_cvs`).

    `explorer="reinforced"` explores by reinforced dynamics instead
    (`ReinforcedDynamicsExplorer` of the full system biased by the ensemble mean, switched by
    the model deviation between `switch_levels`, default `(lo, 2 lo)` of the trust levels);
    `explorer_kwargs` are passed to the explorer (then `temperatures`, `num_chains` and
    `num_results` apply to MCMC only).

    Returns:
        `(learner, ensemble, labeller)`.
    """
    import keras

    domain = np.asarray(problem.domain, dtype=np.float64)
    center, scale = domain.mean(axis=1), (domain[:, 1] - domain[:, 0]) / 2
    # Angles (a problem's `cv_kinds`, e.g. alanine dipeptide's phi, psi) enter periodically.
    cv_kinds = getattr(problem, "cv_kinds", ("linear",) * len(problem.collective_variables))
    kinds = [{"name": n, "kind": k} for n, k in zip(problem.collective_variables, cv_kinds,
                                                    strict=True)]

    def factory(member_seed):
        model = FreeEnergyModel(kinds, hidden_units=hidden_units, center=center, scale=scale,
                                seed=member_seed)
        model.build((None, len(kinds)))
        return model

    ensemble = Ensemble.from_factory(factory, num_members=num_members,
                                     seeds=[seed * 100 + k for k in range(num_members)],
                                     output_fn=lambda m, s: m.mean_force(s))
    if explorer == "mcmc":
        explorer = MCMCExplorer(ensemble_log_prob(ensemble, beta=problem.beta), domain,
                                **{"num_chains": num_chains, "num_results": num_results,
                                   "temperatures": temperatures,
                                   "step_size": 0.05 * float(np.min(domain[:, 1] - domain[:, 0])),
                                   **(explorer_kwargs or {})})
    elif explorer == "reinforced":
        lo = float(trust_levels[0])
        explorer = ReinforcedDynamicsExplorer(
            problem, ensemble_bias(ensemble),
            **{"switch_levels": (lo, 2 * lo), **(explorer_kwargs or {})})
    else:
        raise ValueError(f"`explorer` must be 'mcmc' or 'reinforced'; received "
                         f"explorer={explorer!r}")
    labeller = RestrainedMDLabeller(problem, seed=seed, **(md_kwargs or {}))
    trainer = EnsembleTrainer(
        ensemble, target="mean_force", steps=train_steps, batch_size=batch_size,
        weight_key=None, seed=seed,
        # Each iteration's fit ends at a small learning rate, so that the members' spread is
        # their disagreement, not the noise of the last Adam steps.
        optimizer_fn=lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            learning_rate, train_steps, alpha=0.02)))
    initial = problem.sample_cvs(num_initial, seed=seed)
    learner = ConcurrentLearner(
        explorer, EnsembleExaminer(ensemble), labeller, trainer, directory,
        trust_levels=trust_levels, max_iterations=max_iterations,
        max_labels_per_iteration=max_labels_per_iteration,
        converge_fraction=converge_fraction, min_iterations=min_iterations,
        initial_configurations=initial,
        selector=farthest_point_selector,
        evaluator=lambda k: free_energy_errors(problem, ensemble, threshold=threshold),
        seed=seed, verbose=verbose)
    return learner, ensemble, labeller


def plot_free_energy(problem, ensemble, labels, path, threshold=10.0):
    """Writes a PNG: exact A, learned A (ensemble mean, labels shown), and their difference;
    returns the `Figure` (the last expression of a notebook cell, it is shown there too)."""
    grid = problem.grid(121)
    flat = grid.reshape(-1, 2)
    exact = problem.free_energy(flat).reshape(grid.shape[:2])
    learned = np.mean([np.asarray(m(flat))[:, 0] for m in ensemble.members], axis=0)
    region = exact < threshold
    learned = learned.reshape(grid.shape[:2])
    learned -= np.mean(learned[region] - exact[region])
    levels = np.linspace(0, threshold, 11)
    fig, axes = subplots(1, 3, figsize=(15, 4.4))
    for ax, values, title in ((axes[0], exact, "exact A (kT)"),
                              (axes[1], learned, "learned A (kT), labels shown")):
        cs = ax.contourf(grid[..., 0], grid[..., 1], np.minimum(values, threshold), levels=levels)
        fig.colorbar(cs, ax=ax)
        ax.set_title(title)
    axes[1].plot(labels[:, 0], labels[:, 1], "w.", ms=3)
    error = np.where(region, learned - exact, np.nan)
    cs = axes[2].contourf(grid[..., 0], grid[..., 1], error, levels=np.linspace(-1.5, 1.5, 13),
                          cmap="RdBu_r", extend="both")
    fig.colorbar(cs, ax=axes[2])
    axes[2].set_title(f"learned - exact where A < {threshold:g} kT")
    for ax in axes:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------------------- reinforced dynamics
def switching_function(deviation, lo, hi):
    r"""The bias switch of reinforced dynamics: 1 below `lo`, 0 above `hi`, smooth between.

    $$\sigma(\epsilon) = \begin{cases} 1 & \epsilon \le lo \\
    \tfrac12\bigl(1 + \cos\frac{\pi(\epsilon - lo)}{hi - lo}\bigr) & lo < \epsilon < hi \\
    0 & \epsilon \ge hi, \end{cases}$$
    continuously differentiable and non-increasing; a non-finite deviation gives 0. With
    `lo == hi` it is a step (1 below, 0 from `lo` on).

    Args:
        deviation: array of model deviations.
        lo, hi: levels, `0 <= lo <= hi`.

    Returns:
        Array of the shape of `deviation`, values in [0, 1].
    """
    lo, hi = _check_levels(lo, hi, "switch_levels")
    deviation = np.asarray(deviation, dtype=np.float64)
    if hi > lo:
        t = np.clip((deviation - lo) / (hi - lo), 0.0, 1.0)
        sigma = 0.5 * (1.0 + np.cos(np.pi * t))
    else:
        sigma = (deviation < lo).astype(np.float64)
    return np.where(np.isfinite(deviation), sigma, 0.0)


def _check_levels(lo, hi, name):
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be two numbers (lo, hi); received {name}="
                         f"{(lo, hi)!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"`{name}` must be finite numbers with 0 <= lo <= hi; received "
                         f"{name}={(lo, hi)!r}")
    return lo, hi


def ensemble_bias(ensemble):
    """`s -> (mean force, deviation)` of an `Ensemble` of `FreeEnergyModel`s, for the biased MD.

    The members' outputs (`ensemble.output_fn`, which must be the mean force `-grad A` as in
    `build_free_energy_learner`) are computed in one compiled graph; the mean force is their
    average, the deviation `ensemble.deviation_fn` of them (the examiner's model deviation).
    """
    import keras

    if not isinstance(ensemble, Ensemble):
        raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
    members, output_fn = ensemble.members, ensemble.output_fn

    @tf.function(autograph=False, reduce_retracing=True)
    def outputs(s):
        return tf.stack([output_fn(m, s) for m in members])

    def bias(s):
        out = outputs(tf.constant(np.asarray(s, dtype=keras.config.floatx()))).numpy()
        out = out.astype(np.float64)
        mean = out[0] + np.mean(out - out[0], axis=0)
        return mean, np.asarray(ensemble.deviation_fn(out), dtype=np.float64)

    return bias


class ReinforcedDynamicsExplorer(Explorer):
    r"""Langevin dynamics of the full system, biased by the current free energy where trusted.

    Reinforced dynamics (Zhang, Wang & E 2018): the walkers move in the potential U(q) of the
    whole system (CVs and the other degrees of freedom) plus a bias on the collective variables
    s that cancels the current estimate of the free energy where the ensemble agrees. The force
    on the CVs is
    $$F_s = -\nabla_s U(q) + \sigma(\epsilon(s))\,\nabla_s \bar A(s),$$
    with $\bar A$ the ensemble mean and $\sigma$ the `switching_function` of the model deviation
    $\epsilon$ (1 below `switch_levels[0]`, 0 above `switch_levels[1]`). Where the model is
    right the walkers see a flat free-energy surface in s and diffuse over it freely; where it
    is not trusted they feel the true barriers. The CVs reflect at the walls of `domain`.

    The dynamics is overdamped Langevin at the problem's inverse temperature beta, in the
    Leimkuhler–Matthews discretisation (second order for the invariant density):
    $q_{n+1} = q_n + \Delta t\,F(q_n) + \sqrt{\Delta t / 2\beta}\,(\xi_n + \xi_{n+1})$.
    `num_walkers` walkers start uniformly in `domain` (the other coordinates drawn by
    `problem.initial_positions`), seeded by iteration; after `num_burnin` steps the CVs of every
    walker are recorded every `sample_every` steps, `num_results` times.

    Args:
        problem: the full system, e.g. `MuellerBrownBath`: `gradient(q)` of U for coordinates
            `q` `(n, dim)` whose first `d = len(collective_variables)` entries are the CVs,
            `beta`, `collective_variables` and `initial_positions(centers, num_walkers, rng)`;
            and `curvature_bound()` unless `dt` is given.
        bias: callable `s (n, d) -> (mean_force (n, d), deviation (n,))` of the current model,
            e.g. `ensemble_bias(ensemble)`; None: no bias (plain Langevin dynamics).
        domain: `(d, 2)` box of the CVs (default `problem.domain`).
        switch_levels: `(lo, hi)` of the switching function, in units of the deviation.
        num_walkers, num_results, sample_every, num_burnin: see above.
        dt: time step (default `1 / problem.curvature_bound()`, a stable step for U; a learned
            bias of similar curvature keeps it stable).

    After `explore`, `bias_fraction` is the mean of sigma at the recorded steps and
    `mean_deviation` the mean model deviation there.
    Reference: L. Zhang, H. Wang, W. E, "Reinforced dynamics for enhanced sampling in large
    atomic and molecular systems", J. Chem. Phys. 148, 124113 (2018).
    """

    def __init__(self, problem, bias=None, domain=None, switch_levels=(2.0, 4.0),
                 num_walkers=48, num_results=10, sample_every=100, num_burnin=500, dt=None):
        for method in ("gradient", "initial_positions"):
            if not callable(getattr(problem, method, None)):
                raise TypeError(f"`problem` must have a {method} method; received "
                                f"{type(problem).__name__}")
        if bias is not None and not callable(bias):
            raise TypeError(f"`bias` must be callable or None; received {bias!r}")
        self.num_cvs = len(problem.collective_variables)
        if domain is None:
            domain = getattr(problem, "domain", None)
            if domain is None:
                raise ValueError("`domain` must be given for a problem without a domain")
        self.domain = _check_domain(domain)
        if len(self.domain) != self.num_cvs:
            raise ValueError(f"`domain` must have one (low, high) pair per collective variable "
                             f"({self.num_cvs}); received domain={self.domain.tolist()!r}")
        if not isinstance(switch_levels, (tuple, list)) or len(switch_levels) != 2:
            raise ValueError(f"`switch_levels` must be a pair (lo, hi); received "
                             f"switch_levels={switch_levels!r}")
        self.switch_levels = _check_levels(*switch_levels, "switch_levels")
        for name, value, low in (("num_walkers", num_walkers, 1), ("num_results", num_results, 1),
                                 ("sample_every", sample_every, 1),
                                 ("num_burnin", num_burnin, 0)):
            check_positive_int(name, value, low)
        if dt is None:
            if not callable(getattr(problem, "curvature_bound", None)):
                raise ValueError("`dt` must be given for a problem without curvature_bound")
            dt = 1.0 / float(problem.curvature_bound())
        dt = check_positive_number("dt", dt)
        beta = float(problem.beta)
        if not np.isfinite(beta) or beta <= 0:
            raise ValueError(f"`problem.beta` must be a finite number > 0; received {beta!r}")
        self.problem = problem
        self.bias = bias
        self.beta = beta
        self.num_walkers = int(num_walkers)
        self.num_results = int(num_results)
        self.sample_every = int(sample_every)
        self.num_burnin = int(num_burnin)
        self.dt = float(dt)
        self.bias_fraction = None
        self.mean_deviation = None

    @property
    def num_steps(self):
        """Steps per exploration."""
        return self.num_burnin + self.num_results * self.sample_every

    def _reflect(self, s):
        low, width = self.domain[:, 0], self.domain[:, 1] - self.domain[:, 0]
        y = np.mod(s - low, 2 * width)
        return low + width - np.abs(y - width)

    def force(self, q):
        """`(force, sigma, deviation)` at coordinates `q` `(n, dim)`: the biased force."""
        d = self.num_cvs
        force = -np.asarray(self.problem.gradient(q), dtype=np.float64)
        if self.bias is None:
            zeros = np.zeros(len(q))
            return force, zeros, zeros
        mean_force, deviation = self.bias(q[:, :d])
        mean_force = np.asarray(mean_force, dtype=np.float64).reshape(len(q), d)
        deviation = np.asarray(deviation, dtype=np.float64).reshape(len(q))
        sigma = switching_function(deviation, *self.switch_levels)
        # mean force = -grad A, so the bias force +sigma grad A is -sigma * mean force.
        force[:, :d] -= sigma[:, None] * np.where(sigma[:, None] > 0, mean_force, 0.0)
        return force, sigma, deviation

    def run(self, iteration, seed):
        """The trajectory: `(num_results, num_walkers, dim)` recorded coordinates."""
        rng = np.random.default_rng([seed, iteration, 11])
        low, high = self.domain[:, 0], self.domain[:, 1]
        start = rng.uniform(low, high, size=(self.num_walkers, self.num_cvs))
        q = np.concatenate([self.problem.initial_positions(c[None], 1, rng)[0]
                            for c in start]).astype(np.float64)
        d = self.num_cvs
        scale = np.sqrt(self.dt / (2.0 * self.beta))
        noise = rng.standard_normal(q.shape)
        frames, sigmas, deviations = [], [], []
        for step in range(1, self.num_steps + 1):
            force, sigma, deviation = self.force(q)
            new_noise = rng.standard_normal(q.shape)
            q = q + self.dt * force + scale * (noise + new_noise)
            noise = new_noise
            q[:, :d] = self._reflect(q[:, :d])
            if not np.all(np.isfinite(q)):
                raise FloatingPointError(f"reinforced dynamics went non-finite at step {step}; "
                                         f"lower dt={self.dt!r}")
            if step > self.num_burnin and (step - self.num_burnin) % self.sample_every == 0:
                frames.append(q.copy())
                sigmas.append(sigma)
                deviations.append(deviation)
        self.bias_fraction = float(np.mean(sigmas))
        self.mean_deviation = float(np.mean(deviations))
        return np.stack(frames)

    def explore(self, iteration, seed):
        frames = self.run(iteration, seed)
        return frames[..., :self.num_cvs].reshape(-1, self.num_cvs)
