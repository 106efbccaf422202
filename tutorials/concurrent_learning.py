# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Concurrent learning: explore, examine, label, train
#
# A machine-learned model is only as good as its training data, and the data that matter are
# the configurations the model will meet when it is used, which are not known in advance.
# Concurrent learning (the EELT loop of DP-GEN and reinforced dynamics) collects them on the
# fly, using the model itself:
#
# 1. **explore**: sample configurations with the current model (MCMC on $e^{-\beta A}$,
#    biased or plain molecular dynamics);
# 2. **examine**: score each configuration by an *a posteriori* error indicator, the **model
#    deviation** $\epsilon$: the spread of an ensemble of K models trained on the same data
#    from different initialisations. Where they agree the model is trusted; where they
#    disagree it is guessing;
# 3. **label** the configurations whose deviation lies between the **trust levels**
#    $lo \le \epsilon < hi$ with the expensive reference (restrained molecular dynamics for a
#    free energy, DFT — here EMT — for a potential). Below $lo$ the model is already accurate;
#    above $hi$ the configuration is unphysical (an exploration that blew up) and is skipped;
# 4. **train** every member on all labels, and go back to 1 until almost every explored
#    configuration is accurate.
#
# `mlcmk.training.ConcurrentLearner` runs this loop with four pluggable parts and keeps its
# state on disk, so a killed run resumes where it stopped. We learn the free energy of the
# Müller–Brown surface coupled to a harmonic bath, whose exact free energy is known, then run
# the same loop for an interatomic potential (DP-GEN).
#
# In Colab, install first: `!pip install "mlcmk[tfp,md] @ git+<this repository>"`.

# %%
import os
import shutil
import time

import matplotlib.pyplot as plt
import numpy as np

import mlcmk
from mlcmk.problems.free_energy import MuellerBrownBath
from mlcmk.training.free_energy_learning import (
    ReinforcedDynamicsExplorer,
    build_free_energy_learner,
    ensemble_bias,
    free_energy_errors,
    plot_free_energy,
)

# CI runs this notebook at toy size (under a minute); the full settings reproduce
# benchmarks/concurrent_learning.py (A RMS error 0.28 kT with 160 labels, about 2 min on 2 CPU
# cores).
SMOKE = os.environ.get("MLCMK_TUTORIAL_SMOKE") == "1"
mlcmk.config.set_precision("float64")
mlcmk.config.set_seed(0)
WORK = "eelt_tutorial"
shutil.rmtree(WORK, ignore_errors=True)

# %% [markdown]
# ## The system: Müller–Brown plus a bath
# The collective variables (CVs) $s = (x, y)$ move on the Müller–Brown surface, scaled to a few
# kT, and are coupled to `num_bath` stiff harmonic modes $z_i$:
# $U(s, z) = \epsilon V_{MB}(s) + \sum_i \tfrac12 k_i(s)(z_i - a_i\cdot s)^2$.
# Integrating the bath out gives the free energy of the CVs in closed form,
# $A(s) = \epsilon V_{MB}(s) + \tfrac{1}{2\beta}\sum_i \log k_i(s)$, but the learner never sees
# it: it only sees mean forces $-\nabla_s A$ measured by restrained MD of the full system,
# which has to equilibrate the bath. The exact A is for checking the result.

# %%
problem = MuellerBrownBath(num_bath=4 if SMOKE else 20)
grid = problem.grid(81)
exact = problem.free_energy(grid.reshape(-1, 2)).reshape(grid.shape[:2])
plt.figure(figsize=(5, 4))
plt.contourf(grid[..., 0], grid[..., 1], np.minimum(exact, 10), levels=np.linspace(0, 10, 11))
plt.colorbar(label="A (kT)")
plt.title("exact free energy (cut at 10 kT)")
plt.show()

# %% [markdown]
# ## The four parts
# `build_free_energy_learner` assembles them:
# - the model: an `Ensemble` of K `FreeEnergyModel`s, networks $A_k(s)$ fitted to mean forces;
# - explorer: `MCMCExplorer`, random-walk Metropolis (TensorFlow Probability) on
#   $e^{-A(s)/T}$ of the ensemble mean over a ladder T = 1, 2, 4 kT, in the box of the CVs;
# - examiner: `EnsembleExaminer`, the model deviation $\epsilon(s)$ = root-mean-square spread
#   of the members' mean forces (kT per unit of s);
# - labeller: `RestrainedMDLabeller`, the mean force at $s_0$ from MD with a stiff spring
#   $\tfrac\kappa2|s - s_0|^2$: $-\nabla A(s_0) \approx \kappa\langle s - s_0\rangle$, with an
#   error bar from block averages;
# - trainer: `EnsembleTrainer`, force matching of every member on all labels.
#
# Iteration 0 labels a few frames of a short plain MD run (stuck in the deepest basin, as an
# equilibrium simulation would be). Trust levels: lo = 2 kT per unit, hi = infinity (at smoke
# size lo = 0.3: two small members trained briefly on a few labels agree too easily).

# %%
LO = 0.3 if SMOKE else 2.0
if SMOKE:
    size = dict(num_members=2, hidden_units=(16, 16), max_iterations=1,
                max_labels_per_iteration=6, num_initial=8, min_iterations=1, num_chains=8,
                num_results=4, train_steps=60, converge_fraction=None,
                md_kwargs={"num_walkers": 4, "num_steps": 300, "num_burnin": 30})
else:
    size = dict(md_kwargs={"kappa": 1000.0, "num_walkers": 16, "num_steps": 2000,
                           "num_burnin": 300})
run_dir = os.path.join(WORK, "mueller_brown")
learner, ensemble, labeller = build_free_energy_learner(problem, run_dir,
                                                        trust_levels=(LO, float("inf")),
                                                        seed=0, **size)
print(type(learner.explorer).__name__, type(learner.examiner).__name__,
      type(learner.labeller).__name__, type(learner.trainer).__name__,
      learner.trust_levels)

# %% [markdown]
# ## Running the loop
# One line per iteration: explored configurations, how many the trust levels sort into
# accurate / candidate / failed, how many candidates were labelled (at most
# `max_labels_per_iteration`, spread out by farthest-point selection), and the error of the
# ensemble-mean A against the exact one over the region A < 10 kT. The run stops when at least
# 90 % of the explored configurations are accurate.

# %%
start = time.perf_counter()
log = learner.run()
print(f"{time.perf_counter() - start:.0f} s, {labeller.calls} restrained-MD labels")

# %%
print(f"{'iter':>4} {'explored':>8} {'accurate':>8} {'candidate':>9} {'labelled':>8} "
      f"{'labels':>6} {'A RMS (kT)':>10}")
for r in log:
    print(f"{r['iteration']:4d} {r['explored']:8d} {r['accurate']:8d} {r['candidate']:9d} "
          f"{r['labelled']:8d} {r['total_labels']:6d} {r['evaluation']['a_rmse']:10.3f}")

# %% [markdown]
# ## Learned against exact
# `plot_free_energy` writes the exact A, the learned one with the labelled points, and their
# difference to a PNG, and returns the figure (shown here, as the cell's last expression); A is
# defined up to a constant, which is removed.

# %%
labels = learner.store.data().configurations
errors = free_energy_errors(problem, ensemble)
print(f"A RMS error {errors['a_rmse']:.3f} kT (max {errors['a_max_error']:.2f} kT), "
      f"mean-force RMS error {errors['force_rmse']:.2f} kT/unit, over A < 10 kT")
plot_free_energy(problem, ensemble, labels, "free_energy.png")

# %% [markdown]
# ## The model deviation
# The deviation is the loop's only knowledge of where the model is wrong. It is small near the
# labels and grows away from them; the explorer's samples that land where it exceeds lo are the
# next candidates. Its value is also a fair guess of the actual error of the mean force
# (right panel), which is what makes it a usable *a posteriori* indicator.

# %%
flat = grid.reshape(-1, 2)
region = exact < 10  # where A is below 10 kT
deviation = ensemble.model_deviation(flat).reshape(grid.shape[:2])
mean_force, _ = ensemble.predict(flat)
error = np.linalg.norm(mean_force - problem.mean_force(flat), axis=-1).reshape(grid.shape[:2])
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
cs = axes[0].contourf(grid[..., 0], grid[..., 1], np.where(region, deviation, np.nan), 12)
axes[0].contour(grid[..., 0], grid[..., 1], deviation, levels=[learner.trust_levels.lo],
                colors="r")
axes[0].plot(labels[:, 0], labels[:, 1], "w.", ms=4)
axes[0].set_title("model deviation (red: lo)")
fig.colorbar(cs, ax=axes[0])
axes[1].loglog(deviation[region], error[region], ".", ms=2, alpha=0.4)
axes[1].set_xlabel("model deviation (kT/unit)")
axes[1].set_ylabel("|mean-force error| (kT/unit)")
plt.show()
print(f"correlation of log deviation and log error: "
      f"{np.corrcoef(np.log(deviation[region]), np.log(error[region] + 1e-12))[0, 1]:.2f}")

# %% [markdown]
# ## Reinforced dynamics
# Instead of MCMC on the model, reinforced dynamics explores with molecular dynamics of the
# whole system (CVs and bath) plus a bias that cancels the current free energy where the
# ensemble agrees: the force on the CVs is $-\nabla_s U + \sigma(\epsilon(s))\nabla_s \bar A(s)$,
# with $\sigma = 1$ below a deviation level and 0 above a higher one. Where the model is right
# the walkers see a flat landscape and cross barriers freely; where it is not, the bias is off
# and they stay physical. `build_free_energy_learner(..., explorer="reinforced")` (or
# `mlcmk eelt free-energy --explorer reinforced`) uses it in the loop; here one exploration
# with the trained ensemble.

# %%
rid = ReinforcedDynamicsExplorer(problem, ensemble_bias(ensemble), switch_levels=(LO, 2 * LO),
                                 num_walkers=16 if SMOKE else 48, num_results=5 if SMOKE else 10,
                                 sample_every=20 if SMOKE else 200,
                                 num_burnin=50 if SMOKE else 1000)
plain = ReinforcedDynamicsExplorer(problem, None, num_walkers=rid.num_walkers,
                                   num_results=rid.num_results, sample_every=rid.sample_every,
                                   num_burnin=rid.num_burnin)
explored_rid, explored_plain = rid.explore(1, 0), plain.explore(1, 0)
print(f"bias switched on at {100 * rid.bias_fraction:.0f} % of the recorded steps")
fig, ax = plt.subplots(figsize=(5, 4))
ax.contour(grid[..., 0], grid[..., 1], exact, levels=np.linspace(0, 10, 11), colors="0.6")
ax.plot(*explored_plain.T, "b.", ms=3, label="plain MD")
ax.plot(*explored_rid.T, "r.", ms=3, label="reinforced dynamics")
ax.legend()
plt.show()

# %% [markdown]
# ## Resuming
# Every stage of every iteration is written atomically to the run directory (explored and
# examined configurations, one file per label keyed by a hash of the configuration, the
# trained weights, a report). Building the learner again on the same directory and calling
# `run()` reads the finished iterations back and carries on from the first unfinished stage;
# nothing is labelled twice, and a run killed at any point ends as an uninterrupted one would.
# Here the run is extended by one iteration (`max_iterations` is not part of a run's fixed
# settings): only the new iteration costs labels. A run that had converged would just be read
# back.

# %%
print(sorted(os.listdir(run_dir)))
more = dict(size, max_iterations=log[-1]["iteration"] + 1)
learner2, ensemble2, labeller2 = build_free_energy_learner(
    problem, run_dir, trust_levels=(LO, float("inf")), seed=0, **more)
log2 = learner2.run()
print(f"iterations {[r['iteration'] for r in log2]}; labels requested in this session: "
      f"{labeller2.calls} (labelled in new iterations: "
      f"{sum(r['labelled'] for r in log2[len(log):])})")

# %% [markdown]
# ## DP-GEN: a potential for aluminium
# The same loop learns an interatomic potential (`build_potential_learner`): an ensemble of
# Deep Potentials, Langevin MD with member 0 over a temperature ladder in strained boxes as
# explorer, the maximal per-atom force deviation as model deviation (trust levels 0.05 and 0.15
# eV/Å; at smoke size hi = 2 eV/Å, since a model trained for 20 steps deviates more), and
# EMT standing in for DFT as labeller. Explored frames that are accurate or failed cost
# nothing; only the candidates in between are labelled.

# %%
from mlcmk.training import build_potential_learner  # noqa: E402

tiny = dict(rcut=4.5, rcut_smth=0.5, sel=24, neuron=(4, 8), axis_neuron=2,
            fitting_neuron=(8, 8))
pot_learner, pot_ensemble, emt_labeller = build_potential_learner(
    "fcc_al", os.path.join(WORK, "fcc_al"), num_members=2 if SMOKE else 4,
    model_kwargs=tiny, trust_levels=(0.05, 2.0 if SMOKE else 0.15),
    max_iterations=1 if SMOKE else 5,
    num_initial=6 if SMOKE else 32, num_trajectories=2 if SMOKE else 4,
    md_steps=20 if SMOKE else 200, train_steps=20 if SMOKE else 500,
    max_labels_per_iteration=5 if SMOKE else 30, min_iterations=1, verbose=0)
pot_log = pot_learner.run()
print(f"{'iter':>4} {'explored':>8} {'accurate':>8} {'candidate':>9} {'failed':>6} "
      f"{'labelled':>8}")
for r in pot_log:
    print(f"{r['iteration']:4d} {r['explored']:8d} {r['accurate']:8d} {r['candidate']:9d} "
          f"{r['failed']:6d} {r['labelled']:8d}")
explored = sum(r["explored"] for r in pot_log[1:])
print(f"{emt_labeller.calls} EMT calls for {explored} explored frames (after iteration 0)")

# %% [markdown]
# ## Full size
# With `SMOKE = False` the free-energy part runs the benchmark's settings (20 bath modes, 4
# members of 64-64-64, 30 labels per iteration, restrained MD of 16 walkers x 2000 steps).
# `benchmarks/concurrent_learning.py` (A RMS error over A < 10 kT, target 0.5 kT; labels at
# the end, and when the error first fell below the target):
#
# | explorer | seed | A RMS error | labels | below 0.5 kT at | iterations |
# | --- | --- | --- | --- | --- | --- |
# | MCMC, T = 1, 2, 4 kT | 0 | 0.29 kT | 263 | 260 labels | 9 |
# | reinforced dynamics | 0 | 0.23 kT | 155 | 110 labels | 5 |
# | MCMC, T = 1, 2, 4 kT | 1 | 0.20 kT | 151 | 140 labels | 5 |
# | reinforced dynamics | 1 | 0.15 kT | 170 | 110 labels | 5 |
#
# Seed 0 of MCMC against 2.2 kT for an ensemble trained on 160 labels from plain MD. The restraint
# ($\kappa$ = 1000) alone limits the error to 0.09 kT. From the command line:
#
#     mlcmk eelt free-energy --output_dir runs/eelt
#     mlcmk eelt free-energy --explorer reinforced --output_dir runs/eelt_rid
#     mlcmk eelt potential --structure fcc_al --model tiny --output_dir runs/eelt_al
