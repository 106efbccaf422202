"""Train a `ControlPolicyStack` on a control problem and compare it with the references.

`solve_control` is what `mlcmk control`, the benchmark and the tutorial run: it trains with
`model.fit`, times it, and evaluates the learned policy on fixed evaluation paths against what
the problem offers: the exact optimal cost and policy (on the same paths, so that the Monte Carlo
noise cancels), a perfect-foresight upper bound on the reward, and a rule-based policy.
"""

import os
import time

import keras
import numpy as np
from keras import ops

from mlcmk import config as mlcmk_config
from mlcmk._plotting import subplots
from mlcmk.io import write_json
from mlcmk.models.control_policy_stack import ControlPolicyStack
from mlcmk.problems.bsde.base import deserialize_problem
from mlcmk.problems.control.base import ControlProblem
from mlcmk.training.bsde_solver import _Clock, check_schedule, learning_rate_schedule
from mlcmk.training.callbacks import StopOnNonFiniteLoss


def _numpy_policy(problem):
    """The problem's exact policy (NumPy) as a tensor policy for eager rollouts."""
    def control(t, s):
        return ops.convert_to_tensor(problem.optimal_control(t, np.asarray(s)), s.dtype)

    return control


def solve_control(problem, *, iterations=2000, epochs=None, batch_size=64, learning_rate=1e-2,
                  policy_network="per_step", hidden_units=None, precision="float64", seed=0,
                  validation_size=256, eval_paths=64, eval_seed=(2024, 11), jit_compile="auto",
                  export_dir=None, output_dir=None, verbose=1, callbacks=()):
    """Trains `ControlPolicyStack` on `problem`; returns `(result dict, model)`.

    Args:
        problem: a `ControlProblem`, a registered name or a spec dict.
        iterations: training steps in all.
        epochs: epochs the iterations are split into (default one per 100 iterations, <= 40).
        batch_size, policy_network, hidden_units, seed, validation_size: see the model.
        learning_rate: initial Adam learning rate (divided by 10 at 60% and 85%).
        precision: "float64" or "float32".
        eval_paths: evaluation paths (fixed by `eval_seed`, the same for every seed and model).
        jit_compile: passed to `compile` ("auto": XLA without a strategy).
        export_dir: SavedModel with the endpoint `policy(t, s)`.
        output_dir: where `result.json` and `control.png` go.
        verbose: Keras verbosity (1: progress bar).

    Returns:
        The result has `learned_cost` (mean over the evaluation paths) and, where the problem
        offers them, `reference_cost` and `relative_error`, `optimal_cost_same_paths` and
        `excess_cost` (learned minus the exact policy on the same paths), `lp_bound_reward`,
        `rule_based_reward`, `learned_reward`, `relative_reward` (learned / bound),
        `rule_relative_reward`, `bound_holds` (bound >= both rewards on every path); also
        `ms_per_iteration` (median over epochs after the first), `history`, ...
    """
    epochs = check_schedule(iterations, epochs)
    problem = deserialize_problem(problem)
    if not isinstance(problem, ControlProblem):
        raise TypeError(f"`problem` must be a ControlProblem; received {type(problem).__name__}")
    mlcmk_config.set_precision(precision)
    mlcmk_config.set_seed(seed)
    steps_per_epoch = iterations // epochs
    model = ControlPolicyStack(problem, policy_network=policy_network, hidden_units=hidden_units,
                               batch_size=batch_size, validation_size=validation_size, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(learning_rate,
                                                                         iterations)),
                  jit_compile=jit_compile)
    clock, stopper = _Clock(), StopOnNonFiniteLoss()
    history = model.fit(epochs=epochs, steps_per_epoch=steps_per_epoch,
                        callbacks=[clock, stopper, *callbacks], verbose=verbose)
    wall = time.perf_counter() - clock.start
    steady = clock.epoch_steps[1:] if len(clock.epoch_steps) > 1 else clock.epoch_steps
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}

    result = {
        "problem": problem.name, "problem_config": problem.get_config(),
        "state_dim": problem.state_dim, "control_dim": problem.control_dim,
        "num_steps": problem.num_steps, "policy_network": policy_network,
        "hidden_units": list(model.hidden_units), "precision": precision,
        "batch_size": batch_size, "learning_rate": learning_rate, "iterations": iterations,
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "seed": seed,
        "stopped_non_finite": stopper.stopped_at is not None,
        "ms_per_iteration": 1000 * float(np.median(steady)) / steps_per_epoch,
        "first_epoch_s": clock.epoch_steps[0] if clock.epoch_steps else None,
        "wall_time_s": wall, "eval_paths": eval_paths, "history": hist,
    }
    dtype = model.compute_dtype
    s0, noise = problem.sample(eval_paths, eval_seed, dtype)
    s0, noise = np.asarray(s0), np.asarray(noise)
    learned = model.path_costs(s0, noise)
    result["learned_cost"] = float(learned.mean())
    result["learned_cost_stderr"] = float(learned.std() / np.sqrt(eval_paths))
    reference = problem.reference_cost()
    if reference is not None:
        result.update(reference_cost=float(reference), reference_source=reference.source,
                      relative_error=abs(result["learned_cost"] - reference) / abs(reference))
    if problem.optimal_control(0, s0[:1]) is not None:
        optimal = np.asarray(problem.rollout(_numpy_policy(problem), ops.convert_to_tensor(s0),
                                             ops.convert_to_tensor(noise)), dtype="float64")
        excess = learned - optimal
        result.update(optimal_cost_same_paths=float(optimal.mean()),
                      excess_cost=float(excess.mean()),
                      excess_cost_stderr=float(excess.std() / np.sqrt(eval_paths)))
        if reference is not None:
            result["relative_excess_cost"] = result["excess_cost"] / abs(float(reference))
    if hasattr(problem, "perfect_foresight_reward"):
        bound = problem.perfect_foresight_reward(s0, noise)
        rule = -np.asarray(problem.rollout(problem.rule_based_control,
                                           ops.convert_to_tensor(s0),
                                           ops.convert_to_tensor(noise)), dtype="float64")
        result.update(
            lp_bound_reward=float(bound.mean()), rule_based_reward=float(rule.mean()),
            learned_reward=float(-learned.mean()),
            relative_reward=float(-learned.mean() / bound.mean()),
            rule_relative_reward=float(rule.mean() / bound.mean()),
            bound_holds=bool(np.all(bound >= -learned - 1e-9) and np.all(bound >= rule - 1e-9)))
    if export_dir:
        model.export_policy(export_dir)
        result["export_dir"] = os.path.abspath(export_dir)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        result["output_dir"] = os.path.abspath(output_dir)
        write_json(os.path.join(output_dir, "result.json"), result)
        plot_control(result, model, os.path.join(output_dir, "control.png"))
    return result, model


def plot_control(result, model, path):
    """PNG: the validation reward against iterations, and the learned policy."""
    problem = model.problem
    hist = result["history"]
    it = result["steps_per_epoch"] * np.arange(1, len(hist.get("val_loss", [])) + 1)
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.plot(it, [-v for v in hist.get("val_loss", [])], label="learned policy (validation)")
    if "lp_bound_reward" in result:
        ax.axhline(result["lp_bound_reward"], color="k", ls="--",
                   label="perfect-foresight LP bound")
        ax.axhline(result["rule_based_reward"], color="gray", ls=":", label="rule-based policy")
    if result.get("reference_cost") is not None:
        ax.axhline(-result["reference_cost"], color="k", ls="--", label="exact optimum")
    ax.set_xlabel("iteration")
    ax.set_ylabel("expected reward (= - cost)")
    ax.legend(fontsize=8)
    ax = axes[1]
    s0, _ = model.validation_sample()
    base = np.asarray(s0, dtype="float64").mean(0)
    times = sorted({0, problem.num_steps // 2, problem.num_steps - 1})
    if hasattr(problem, "num_devices"):
        n = problem.num_devices
        prices = np.linspace(0.3, 1.7, 60) * problem.price_mean
        states = np.repeat(base[None], len(prices), 0)
        states[:, n] = prices
        for t in times:
            a = np.asarray(model.policy(t, states.astype(model.compute_dtype)))
            ax.plot(prices, a[:, :2 * n].sum(-1) - a[:, 2 * n:].sum(-1), label=f"t = {t}")
        ax.set_xlabel("price P (other state at its validation mean)")
        ax.set_ylabel("net energy charged, sum(c^W + c^G - d)")
    else:
        grid = np.linspace(-3, 3, 60)
        states = np.repeat(base[None], len(grid), 0)
        states[:, 0] = base[0] + grid
        for t in times:
            a = np.asarray(model.policy(t, states.astype(model.compute_dtype)))
            line, = ax.plot(states[:, 0], a[:, 0], label=f"learned, t = {t}")
            exact = problem.optimal_control(t, states)
            if exact is not None:
                ax.plot(states[:, 0], exact[:, 0], ls="--", color=line.get_color(),
                        label=f"exact, t = {t}")
        ax.set_xlabel("state s_1 (others at their mean)")
        ax.set_ylabel("control a_1")
    ax.legend(fontsize=8)
    fig.suptitle(f"{result['problem']}: state dim {result['state_dim']}, control dim "
                 f"{result['control_dim']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
