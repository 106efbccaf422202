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
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; received {name}={value!r}")
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
                              md_kwargs=None, threshold=10.0, seed=0, verbose=1):
    """Assembles a `ConcurrentLearner` for a 2-CV `free_energy` problem (e.g. `mueller_brown`).

    Ensemble of `FreeEnergyModel`s (inputs centred and scaled on the problem's domain; mean-force
    deviation); MCMC exploration of the ensemble-mean free energy over `temperatures`; labels by
    restrained MD; `num_initial` initial configurations from a short plain MD run
    (`problem.sample_cvs`).

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
    explorer = MCMCExplorer(ensemble_log_prob(ensemble, beta=problem.beta), domain,
                            num_chains=num_chains, num_results=num_results,
                            temperatures=temperatures,
                            step_size=0.05 * float(np.min(domain[:, 1] - domain[:, 0])))
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
    """Writes a PNG: exact A, learned A (ensemble mean, labels shown), and their difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = problem.grid(121)
    flat = grid.reshape(-1, 2)
    exact = problem.free_energy(flat).reshape(grid.shape[:2])
    learned = np.mean([np.asarray(m(flat))[:, 0] for m in ensemble.members], axis=0)
    region = exact < threshold
    learned = learned.reshape(grid.shape[:2])
    learned -= np.mean(learned[region] - exact[region])
    levels = np.linspace(0, threshold, 11)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
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
    plt.close(fig)
