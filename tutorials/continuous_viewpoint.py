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
# # Machine learning from a continuous viewpoint
#
# Three ideas of E, Ma and Wu (2020), each as a few lines of Keras:
#
# 1. a mean-field two-layer network is a cloud of particles, and gradient descent with step
#    $\eta m$ is the particle discretisation of a Wasserstein gradient flow
#    (`ParticleWassersteinFlow`);
# 2. the path norm controls the generalisation gap: its Rademacher complexity is at most
#    $2Q\sqrt{2\ln(2d)/n}$, and the regularised loss of eq. (26) gives width-independent error
#    (`path_norm`, `rademacher_complexity`, `PathNormRegularized`);
# 3. a residual network is a control problem, trainable by the maximum principle
#    (`ExtendedMSA`).
#
# In Colab, install first: `!pip install "mlcmk @ git+<this repository>"` (or `pip install -e .`
# in a clone).

# %%
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import mlcmk
from mlcmk.training import (
    ExtendedMSA,
    ParticleRecorder,
    ParticleWassersteinFlow,
    PathNormRegularized,
    RandomFeatureModel,
    path_norm,
    rademacher_complexity,
)

# CI runs this notebook at toy size; a real run uses the full settings.
SMOKE = os.environ.get("MLCMK_TUTORIAL_SMOKE") == "1"
mlcmk.config.set_precision("float64")
mlcmk.config.set_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Particles in a Wasserstein gradient flow
# Fit $y = \mathrm{ReLU}(x_1)$ in $d = 2$ with two widths. With time measured as
# `iterations * time_step` the two loss curves follow the same mean-field limit.

# %%
x = rng.uniform(-1, 1, size=(200, 2))
y = np.maximum(x[:, :1], 0)
epochs = 20 if SMOKE else 400
curves, recorders = {}, {}
for width in (100, 1000):
    flow = ParticleWassersteinFlow(mlcmk.TwoLayerNetwork(width), time_step=0.2)
    flow.compile(loss="mse")
    recorders[width] = ParticleRecorder(every=max(1, epochs // 4))
    history = flow.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0,
                       callbacks=[recorders[width]])
    curves[width] = history.history["loss"]
    print(f"m = {width}: loss {curves[width][0]:.4f} -> {curves[width][-1]:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for width, loss in curves.items():
    axes[0].semilogy(0.2 * np.arange(1, len(loss) + 1), loss, label=f"m = {width}")
axes[0].set_xlabel("flow time")
axes[0].set_ylabel("training MSE")
axes[0].legend()
snaps = recorders[1000].snapshots
for snap, time in zip(snaps, recorders[1000].times, strict=True):
    # Each neuron as a point: direction angle of w and outer weight a (times |w|).
    angle = np.arctan2(snap["w"][:, 1], snap["w"][:, 0])
    axes[1].scatter(angle, snap["a"][:, 0] * np.linalg.norm(snap["w"], axis=1), s=2,
                    label=f"t = {time:.1f}")
axes[1].set_xlabel("angle of w")
axes[1].set_ylabel("a |w|")
axes[1].legend()
plt.show()

# %% [markdown]
# ## 2. Path norm and Rademacher complexity
# `ReLU(x_1)` written as one neuron has path norm exactly 1. The Monte Carlo estimate of the
# Rademacher complexity of the path-norm ball lies below the bound and decays like $n^{-1/2}$.

# %%
one = mlcmk.TwoLayerNetwork(1)
one.build((None, 5))
one.hidden.kernel.assign(np.eye(5)[:, :1])
one.readout.kernel.assign(np.ones((1, 1)))
print("path norm of ReLU(x_1):", float(path_norm(one)))
for n in (50, 200) if SMOKE else (50, 200, 800, 3200):
    r = rademacher_complexity(rng.uniform(-1, 1, size=(n, 10)), num_draws=16 if SMOKE else 64,
                              num_restarts=8, num_steps=50 if SMOKE else 200)
    print(f"n = {n:5d}: estimate {r['estimate']:.4f} +- {r['standard_error']:.4f}, "
          f"bound {r['bound']:.4f}")

# %% [markdown]
# Regularised training keeps the path norm (and the test error) independent of the width; the
# random feature model (inner weights frozen, minimum-norm least squares) is the comparison.

# %%
n, d = 100, 10
x = rng.uniform(-1, 1, size=(n, d))
y = np.maximum(x[:, :1], 0) + 0.1 * rng.standard_normal((n, 1))
x_test = rng.uniform(-1, 1, size=(2000, d))
y_test = np.maximum(x_test[:, :1], 0)
for width in (10, 200) if SMOKE else (10, 100, 1000):
    for lam in (0.0, 0.1):
        net = mlcmk.TwoLayerNetwork(width)
        model = PathNormRegularized(net, lam=lam, num_samples=n)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(x, y, batch_size=n, epochs=100 if SMOKE else 3000, verbose=0)
        test = np.mean((np.asarray(net(x_test)) - y_test) ** 2)
        print(f"m = {width:4d} lambda = {lam}: test error {test:.2e}, "
              f"path norm {float(path_norm(net)):.3f}")
    features = RandomFeatureModel(width)
    features.fit_least_squares(x, y)
    test = np.mean((np.asarray(features(x_test)) - y_test) ** 2)
    print(f"m = {width:4d} random features: test error {test:.2e}")

# %% [markdown]
# ## 3. A residual network as a control problem
# The toy of Li, Chen, Tai and E: fit $\sin x$ with 20 residual tanh layers of width 5 from
# zero weights. The extended MSA solves one small L-BFGS problem per layer per iteration (all
# layers at once); the basic MSA (`rho = 0`) jumps around.

# %%
x = rng.uniform(-np.pi, np.pi, size=(100, 1))
y = np.sin(x)
iterations = 3 if SMOKE else 50
for rho in (0.0, 10.0):
    model = ExtendedMSA(rho=rho)
    model.compile()
    loss = model.fit(x, y, batch_size=100, epochs=iterations, verbose=0).history["loss"]
    print(f"rho = {rho:4}: loss {np.round(loss[:6], 3)} ... {loss[-1]:.4f}")
adam = mlcmk.training.ResidualControlNetwork()
adam.compile(optimizer=keras.optimizers.Adam(0.005))
loss = adam.fit(x, y, batch_size=100, epochs=iterations, verbose=0).history["loss"]
print(f"Adam: loss {loss[-1]:.4f} after {iterations} iterations")
