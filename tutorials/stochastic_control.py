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
# # Learning feedback controls with `ControlPolicyStack`
#
# Han and E (2016) solve a stochastic control problem
#
# $$ s_{t+1} = F_t(s_t, a_t, \xi_{t+1}), \qquad
#    \min_{a} E\Big[\sum_{t<T} c_t(s_t, a_t) + c_T(s_T)\Big] $$
#
# by one network per time step for the feedback control $a_t = A_t(s_t)$: the dynamics are
# simulated inside the graph, the noise plays the role of data, and the mean cost is the loss.
# This tutorial checks the method where the answer is known exactly (a linear-quadratic
# regulator, solved by the Riccati recursion), then runs the paper's energy-storage example and
# measures it against a bound that no policy can beat, and finally declares a new problem with
# a linear constraint on the controls.
#
# In Colab, install first: `!pip install "mlcmk @ git+<this repository>"`.

# %%
import os

import keras
import numpy as np
import tensorflow as tf

import mlcmk
from mlcmk.models import ControlPolicyStack
from mlcmk.problems import register_problem
from mlcmk.problems.control import ControlProblem, LinearConstraints
from mlcmk.training.bsde_solver import learning_rate_schedule
from mlcmk.training.control_solver import solve_control

# CI runs this notebook at toy size; a real run uses the full settings.
SMOKE = os.environ.get("MLCMK_TUTORIAL_SMOKE") == "1"
mlcmk.config.set_precision("float64")
mlcmk.config.set_seed(0)

# %% [markdown]
# ## 1. An exact answer: the linear-quadratic regulator
# `lq_regulator` in 10 dimensions: $s' = s + (As + Ba)\Delta t + \sigma \sqrt{\Delta t}\,\xi$,
# quadratic costs. The library computes the optimal gains $K_t$ ($a_t = -K_t s_t$) and the
# optimal expected cost, noise included, by the discrete Riccati recursion. A linear policy
# (`hidden_units=()`) can represent the optimum exactly, so the learned cost must reach it.

# %%
lq = mlcmk.problems.build_problem({"name": "lq_regulator", "dim": 3 if SMOKE else 10,
                                  "num_steps": 4 if SMOKE else 20})
iterations = 100 if SMOKE else 1000
model = ControlPolicyStack(lq, hidden_units=(), batch_size=256)
model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(3e-2, iterations)),
              jit_compile=not SMOKE)
model.fit(epochs=5, steps_per_epoch=iterations // 5, verbose=0)

s0, noise = lq.sample(4096, (1, 2), "float64")
learned = model.path_costs(np.asarray(s0), np.asarray(noise))
gains = lq.gains()
optimal = np.asarray(lq.rollout(lambda t, s: -tf.matmul(s, tf.constant(gains[t].T)), s0, noise))
print(f"Riccati optimum        {float(lq.reference_cost()):.4f}")
print(f"exact policy (MC)      {optimal.mean():.4f} ± {optimal.std() / 64:.4f}")
print(f"learned policy (MC)    {learned.mean():.4f}   excess on the same paths "
      f"{100 * (learned - optimal).mean() / optimal.mean():.3f} %")
d = lq.dim
points = np.vstack([np.zeros(d), np.eye(d)])
a = np.asarray(model.policy(0, points))
gain = -(a[1:] - a[0]).T
print("relative error of the gain K_0:",
      np.linalg.norm(gain - gains[0]) / np.linalg.norm(gains[0]))

# %% [markdown]
# ## 2. Energy storage: n devices, a stochastic price and wind
# The state is $(x, P, W) \in \mathbb{R}^{n+2}$ (stored energy, price, wind), the control
# $(c^W, c^G, d) \in \mathbb{R}^{3n}$ (charge from wind, charge from the grid, discharge), with
# rate, capacity and shared-wind constraints that the policy meets by construction. The price
# and wind do not depend on the controls, so with perfect foresight of one path the best
# reward is a linear program: an upper bound for every policy on that path. A threshold rule
# gives a lower reference.

# %%
spec = ({"name": "energy_storage", "num_devices": 3, "num_steps": 4} if SMOKE
        else {"name": "energy_storage", "num_devices": 30})
result, storage_model = solve_control(spec, iterations=20 if SMOKE else 1000,
                                      epochs=1 if SMOKE else 10, eval_paths=4 if SMOKE else 64,
                                      jit_compile=not SMOKE, verbose=0)
print(f"reward relative to the perfect-foresight bound: learned "
      f"{result['relative_reward']:.3f}, rule-based {result['rule_relative_reward']:.3f}")
print("bound above both policies on every path:", result["bound_holds"])

# %% [markdown]
# The learned policy as a function of the price (other state at its mean): it charges when
# power is cheap and sells when it is dear, and the early steps differ from the last one, where
# stored energy is only worth its salvage value.

# %%
problem = storage_model.problem
n = problem.num_devices
base = storage_model.validation_sample()[0].mean(0)
prices = np.linspace(0.4, 1.6, 7)
states = np.repeat(base[None], len(prices), 0)
states[:, n] = prices
for t in (0, problem.num_steps - 1):
    a = np.asarray(storage_model.policy(t, states))
    net = a[:, :2 * n].sum(-1) - a[:, 2 * n:].sum(-1)
    print(f"t = {t:2d}  net charge at prices {np.round(prices, 2)}: {np.round(net, 3)}")


# %% [markdown]
# ## 3. A new problem in a few lines, with a linear constraint
# Steer a 2-d state towards the origin with a control limited by $a_1 + a_2 \le 1$,
# $a_1 - a_2 \le 0.5$ and $|a_i| \le 1$. `LinearConstraints` maps the network's raw output onto
# this polygon (Dykstra projections and a radial retraction to its Chebyshev centre), so the
# constraint holds for every state; an empty polygon would raise a ValueError.

# %%
@register_problem("tutorial_steering", kind="control")
class Steering(ControlProblem):
    def __init__(self, num_steps=10):
        self.num_steps = num_steps
        self.state_dim = self.control_dim = self.noise_dim = 2
        self._constraint = LinearConstraints(
            2, a_ub=[[1, 1], [1, -1], [1, 0], [-1, 0], [0, 1], [0, -1]],
            b_ub=[1, 0.5, 1, 1, 1, 1])

    def control_constraint(self):
        return self._constraint

    def step(self, t, s, a, xi):
        return s + 0.2 * a + 0.05 * xi

    def running_cost(self, t, s, a):
        return tf.reduce_sum(s**2, -1) + 0.1 * tf.reduce_sum(a**2, -1)

    def sample_initial(self, num_paths, seed, dtype="float32"):
        return 2.0 * tf.random.stateless_normal((num_paths, 2), seed, dtype=dtype)


steer = ControlPolicyStack(Steering(num_steps=4 if SMOKE else 10), hidden_units=(16,))
steer.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=not SMOKE)
steer.fit(epochs=1 if SMOKE else 2, steps_per_epoch=20 if SMOKE else 300, verbose=0)
states = np.random.default_rng(0).normal(scale=10.0, size=(1000, 2))  # far outside training
a = np.asarray(steer.policy(2, states))
print("largest violation on 1000 far-away states:", steer.problem.constraint_violation(2, states,
                                                                                        a))
print("mean cost:", float(steer.evaluate(verbose=0)))
