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
# # Solving a 100-dimensional PDE with Deep BSDE
#
# This tutorial solves the Hamilton-Jacobi-Bellman equation of a linear-quadratic control
# problem in 100 dimensions,
#
# $$u_t + \Delta u - \lambda |\nabla u|^2 = 0, \qquad u(T, x) = \ln\frac{1 + |x|^2}{2},$$
#
# with `mlcmk.models.DeepBSDE`, checks the value $u(0, 0)$ against the Hopf-Cole formula and —
# the part most implementations skip — checks that the gradient $Z = \sqrt2 \nabla u$ along the
# paths has really been learned. Then it declares a new equation in a few lines.
#
# In Colab, install first: `!pip install "mlcmk @ git+<this repository>"` (or `pip install -e .`
# in a clone).

# %%
import os

import keras
import numpy as np

import mlcmk
from mlcmk.problems import register_problem
from mlcmk.problems.bsde import BSDEProblem
from mlcmk.training import Y0Monitor
from mlcmk.training.bsde_solver import learning_rate_schedule

# CI runs this notebook at toy size; a real run uses the full settings.
SMOKE = os.environ.get("MLCMK_TUTORIAL_SMOKE") == "1"
ITERATIONS = 200 if SMOKE else 4000
mlcmk.config.set_precision("float64")
mlcmk.config.set_seed(0)

# %% [markdown]
# ## The equation and its reference value
# `hjb_lq` is registered in the equation library. Its reference value is the Hopf-Cole formula,
# evaluated exactly by a one-dimensional quadrature (g depends on x only through |x|^2); the
# library also has a Monte Carlo of the same formula (`hopf_cole_value`).

# %%
problem = mlcmk.problems.build_problem({"name": "hjb_lq", "dim": 100})
reference = problem.reference_value()
print(reference)

# %% [markdown]
# ## Training with `model.fit`
# Each training step draws 64 fresh Brownian paths (stateless random numbers). The default
# `z_network="gradient"` takes Z as the gradient of one scalar network, which is what makes Z
# learnable here.

# %%
model = mlcmk.models.DeepBSDE(problem)
model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(1e-3, ITERATIONS)))
history = model.fit(epochs=4, steps_per_epoch=ITERATIONS // 4,
                    callbacks=[Y0Monitor(reference)], verbose=2)
print(f"u(0, 0) = {model.y0_value():.5f}, reference {float(reference):.5f}, "
      f"relative error {abs(model.y0_value() - reference) / reference:.2e}")

# %% [markdown]
# ## Has Z been learned?
# The trivial solution Z = 0 with Y0 = E g(X_T) is already within 0.2% of the reference at
# x0 = 0, so the value alone proves little. Its loss is Var g(X_T); a solver that has learned Z
# goes far below it, and its Z matches the exact gradient (Hopf-Cole Monte Carlo here).

# %%
print(f"validation loss {model.evaluate(verbose=0):.2e}, trivial loss {model.trivial_loss:.2e}")
errors = model.z_errors(num_paths=4 if SMOKE else 32)
print("relative L2 error of Z per step:", np.round(errors["relative_l2"], 3))
print("mean cosine with the exact Z:   ", np.round(errors["cosine"], 3))


# %% [markdown]
# ## Your own equation
# Subclass `BSDEProblem`, give the generator f and the terminal condition g, register it.
# Here the heat equation with a decay term, $u_t + \Delta u - r u = 0$, $g(x) = |x|^2$
# (so $f(t, x, y, z) = -r y$ and the default $\sigma = \sqrt2 I$), whose solution is
# $u(t, x) = e^{-r(T-t)} (|x|^2 + 2 d (T - t))$.

# %%
@register_problem("tutorial_heat_with_decay", kind="bsde")
class HeatWithDecay(BSDEProblem):
    def __init__(self, dim=10, total_time=1.0, num_steps=10, x0=0.5, x0_spread=0.0, rate=0.1):
        super().__init__(dim, total_time, num_steps, x0, x0_spread)
        self.rate = rate

    def generator(self, t, x, y, z):
        return -self.rate * y

    def terminal(self, x):
        return keras.ops.sum(x**2, axis=-1)

    def exact_solution(self, t, x):
        tau = self.total_time - t
        return np.exp(-self.rate * tau) * (np.sum(np.asarray(x) ** 2, -1) + 2 * self.dim * tau)

    def exact_z(self, t, x):
        return np.sqrt(2.0) * np.exp(-self.rate * (self.total_time - t)) * 2 * np.asarray(x)


heat = HeatWithDecay()
m2 = mlcmk.models.DeepBSDE(heat)
m2.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(1e-2, ITERATIONS)))
m2.fit(epochs=2, steps_per_epoch=ITERATIONS // 2, verbose=0)
exact = heat.exact_solution(0.0, heat.x0)
print(f"u(0, x0) = {m2.y0_value():.4f}, exact {exact:.4f}")
print("worst relative error of Z:", round(max(m2.z_errors(num_paths=16)["relative_l2"]), 3))

# %% [markdown]
# ## From the command line
# `mlcmk bsde --problem hjb_lq --dim 100` runs the same training with a progress bar and writes
# `result.json` and `training.png`; `--export_dir` writes a SavedModel with `y0()` and
# `z(t, x)` endpoints that loads with TensorFlow alone.
