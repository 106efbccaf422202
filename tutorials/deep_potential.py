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
# # A Deep Potential for aluminium: from labelled data to molecular dynamics
#
# A Deep Potential writes the energy of a configuration as a sum of atomic energies,
# $E = \sum_i E_{t_i}(D_i)$, where the descriptor $D_i$ of atom $i$'s neighbourhood (within
# `rcut`) is invariant to translations, rotations and permutations of like atoms by
# construction (`mlcmk.layers.SymmetricEmbedding`, the smooth edition `se_e2_a`). Forces
# $-\partial E / \partial x$ and the virial come from automatic differentiation, so they are
# exact derivatives of the learned energy — which is what keeps molecular dynamics stable.
#
# Here ASE's effective-medium theory (EMT) stands in for DFT: we label frames of FCC Al with it,
# train, check the held-out errors, and run NVE molecular dynamics with the trained model.
#
# In Colab, install first: `!pip install "mlcmk[md] @ git+<this repository>"`.

# %%
import os

import numpy as np
from ase.build import bulk

import mlcmk
from mlcmk.data import describe, emt, format_description, read_systems
from mlcmk.md import DeepPotentialCalculator, run_nve
from mlcmk.models import DeepPotential
from mlcmk.models.deep_potential import make_dataset
from mlcmk.training.potential_trainer import error_metrics, plot_parity, predict_systems

# CI runs this notebook at toy size; a real run uses the full settings (~2 min of data
# generation once, ~2 min of training on 2 CPU cores).
SMOKE = os.environ.get("MLCMK_TUTORIAL_SMOKE") == "1"
mlcmk.config.set_precision("float64")
mlcmk.config.set_seed(0)

# %% [markdown]
# ## Labelled data
# `emt.al_dataset` runs Langevin MD of 32-atom FCC Al at 300–1200 K in randomly strained boxes
# (plus displaced lattices), labels every frame with EMT, and writes the DeePMD `npy` format
# (cached under `~/.cache/mlcmk/deepmd`). The held-out frames come from other seeds and
# temperatures (450–1050 K).

# %%
paths = emt.al_dataset(n_train=40 if SMOKE else 1000, n_test=10 if SMOKE else 200)
train = read_systems(paths.train, type_map=["Al"])
test = read_systems(paths.test, type_map=["Al"])
print(format_description(describe(train)))

# %% [markdown]
# ## The model
# DeePMD-kit's settings for this system: cut-off 6 Å with a smooth switch from 0.5 Å, room for
# 80 neighbours, embedding nets [25, 50, 100] with 16 axis columns, fitting nets [240, 240, 240].
# `set_statistics` normalises the environment matrix by the data and fits the per-type energy
# bias by least squares; training then only learns the deviations.

# %%
size = dict(neuron=[8, 16], axis_neuron=4, fitting_neuron=[32, 32]) if SMOKE else {}
model = DeepPotential(["Al"], rcut=6.0, rcut_smth=0.5, sel=80, **size)
print(model.set_statistics(train)["energy_bias"])

# %% [markdown]
# ## Training with `model.fit`
# The loss is DeePMD's: $p_e \overline{\Delta E^2}/N + p_f \overline{|\Delta F|^2}$, with
# the prefactors moving from (0.02, 1000) to (1, 1) as the learning rate decays from 1e-3 to
# 1e-5: forces first, energies later. One frame per step.

# %%
steps = 100 if SMOKE else 2000
model.compile(total_steps=steps, learning_rate=1e-3, stop_learning_rate=1e-5, decay_steps=100)
# make_dataset shuffles the frames itself; shuffle=False tells Keras not to try.
history = model.fit(make_dataset(train, batch_size=1), epochs=4, steps_per_epoch=steps // 4,
                    shuffle=False, verbose=2)

# %% [markdown]
# ## Held-out errors
# Energies per atom and force components on frames the model never saw. `plot_parity` writes
# the parity plot to a PNG and returns the figure (shown here, as the cell's last expression).

# %%
predictions = predict_systems(model, test)
metrics = error_metrics(test, predictions)
print(f"energy RMSE {1e3 * metrics['energy_rmse_per_atom']:.2f} meV/atom, "
      f"force RMSE {1e3 * metrics['force_rmse']:.1f} meV/Å")
plot_parity(test, predictions, "deep_potential_parity.png", "held-out EMT Al")

# %% [markdown]
# The forces are exact derivatives of the energy: compare with a central difference.

# %%
frame = test[0]
coord, box, types = frame.coord[:1], frame.box[:1], frame.atom_types[None]
force = model.compute(coord, types, box)["force"].numpy()[0, 0, 0]
h = 1e-5
shifted = [coord.copy(), coord.copy()]
shifted[0][0, 0, 0] += h
shifted[1][0, 0, 0] -= h
e_plus, e_minus = (model.compute(c, types, box)["energy"].numpy()[0] for c in shifted)
print(f"force {force:.8f} eV/Å, -dE/dx by finite differences {-(e_plus - e_minus) / (2 * h):.8f}")

# %% [markdown]
# ## Molecular dynamics
# `DeepPotentialCalculator` is an ASE calculator (energy, forces, stress). NVE dynamics with
# velocity Verlet should conserve the total energy while kinetic and potential energy exchange.

# %%
atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
md = run_nve(atoms, DeepPotentialCalculator(model), steps=20 if SMOKE else 1000,
             timestep_fs=2.0, temperature_K=600, interval=5)
print(f"<T> = {np.mean(md['temperature']):.0f} K, std of E_pot "
      f"{1e3 * np.std(md['potential']) / 32:.2f} meV/atom, std of E_tot "
      f"{1e3 * np.std(md['total']) / 32:.4f} meV/atom, drift "
      f"{md['drift_meV_per_atom_per_ps']:.4f} meV/atom/ps")

# %% [markdown]
# ## Saving and deployment
# The `.keras` file reloads with Keras; `export_potential` writes a SavedModel with an
# `energy_and_forces(coord, box, atom_types)` endpoint that needs only TensorFlow.

# %%
model.save("al_potential.keras")
model.export_potential("al_potential_savedmodel")
import tensorflow as tf  # noqa: E402

loaded = tf.saved_model.load("al_potential_savedmodel")
out = loaded.energy_and_forces(tf.constant(coord), tf.constant(box),
                               tf.constant(types, tf.int32))
print(float(out["energy"][0]), float(model.compute(coord, types, box)["energy"][0]))
