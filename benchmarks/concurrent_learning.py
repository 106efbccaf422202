"""Concurrent learning (EELT) of the free energy of the Müller–Brown + harmonic-bath system.

Runs explore (MCMC on exp(-A/kT) of the ensemble mean, temperature ladder 1, 2, 4 kT) ->
examine (spread of the ensemble's mean forces, trust levels) -> label (restrained MD mean force)
-> train (4 `FreeEnergyModel`s by force matching), and reports the RMS error of A against the
exact free energy over the region A < 10 kT (target 0.5 kT), the labels used, the iterations
and the wall time. Two references from the same code: the floor set by the finite restraint
(the exact kappa-smoothed free energy A_kappa against A), and a baseline ensemble trained on the
same number of labels taken from plain MD, with the same number of optimizer steps.

Writes `benchmarks/results/concurrent_learning.json` and `.png`. About 4-6 min on 2 busy cores.
`--explorer reinforced` explores by reinforced dynamics instead (Langevin MD of the full system,
48 walkers, biased by the ensemble-mean A where the mean-force spread is below lo, switched off
by 2 lo; the CVs of 10 frames per walker, as many configurations as MCMC) and writes
`concurrent_learning_reinforced.json`, with the MCMC run's figures beside its own.

    python benchmarks/concurrent_learning.py
    python benchmarks/concurrent_learning.py --seed 1 --max_iterations 20
    python benchmarks/concurrent_learning.py --explorer reinforced --skip_baseline
"""

import argparse
import json
import os
import shutil
import time

import keras
import numpy as np
from machine import machine_load  # benchmarks/machine.py

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.free_energy import MuellerBrownBath
from mlcmk.training.concurrent_learning import EnsembleTrainer, LabelledData
from mlcmk.training.free_energy_learning import (
    build_free_energy_learner,
    free_energy_errors,
    plot_free_energy,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def smoothed_free_energy_error(problem, kappa, threshold=10.0, num=81):
    """RMS of A_kappa - A over the region (best constant removed): the restraint's floor."""
    grid = problem.grid(num).reshape(-1, 2)
    exact = problem.free_energy(grid)
    region = grid[exact < threshold]
    sigma = 1.0 / np.sqrt(problem.beta * kappa)
    t = np.linspace(-6 * sigma, 6 * sigma, 41)
    offsets = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    weights = np.exp(-0.5 * problem.beta * kappa * np.sum(offsets**2, -1))
    weights /= weights.sum()
    a = problem.free_energy((region[:, None] + offsets).reshape(-1, 2)).reshape(len(region), -1)
    m = a.min(axis=1, keepdims=True)
    a_kappa = m[:, 0] - np.log(np.sum(weights * np.exp(-problem.beta * (a - m)), 1)) / problem.beta
    diff = a_kappa - exact[exact < threshold]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_iterations", type=int, default=15)
    parser.add_argument("--lo", type=float, default=2.0, help="trust level lo (kT per unit)")
    parser.add_argument("--labels_per_iteration", type=int, default=30)
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--kappa", type=float, default=1000.0)
    parser.add_argument("--run_dir", default="runs/concurrent_learning")
    parser.add_argument("--explorer", choices=("mcmc", "reinforced"), default="mcmc")
    parser.add_argument("--output", default=None, help="default: results/concurrent_learning"
                        "[_reinforced].json")
    parser.add_argument("--skip_baseline", action="store_true")
    args = parser.parse_args()
    suffix = "" if args.explorer == "mcmc" else "_" + args.explorer
    args.output = args.output or os.path.join(RESULTS, f"concurrent_learning{suffix}.json")
    if args.run_dir == parser.get_default("run_dir"):
        args.run_dir += suffix
    # Reinforced dynamics: 48 walkers x 10 frames (as many configurations as MCMC's 48 x 10),
    # 1000 + 10 x 200 steps of 1 / curvature bound.
    explorer_kwargs = ({"num_walkers": 48, "num_results": 10, "sample_every": 200,
                        "num_burnin": 1000} if args.explorer == "reinforced" else None)

    config.set_precision("float64")
    problem = MuellerBrownBath(seed=args.seed)
    md = {"kappa": args.kappa, "num_walkers": 16, "num_steps": 2000, "num_burnin": 300}
    shutil.rmtree(args.run_dir, ignore_errors=True)
    start, load_start = time.perf_counter(), machine_load()
    learner, ensemble, labeller = build_free_energy_learner(
        problem, args.run_dir, trust_levels=(args.lo, float("inf")),
        max_iterations=args.max_iterations, max_labels_per_iteration=args.labels_per_iteration,
        train_steps=args.train_steps, md_kwargs=md, seed=args.seed, explorer=args.explorer,
        explorer_kwargs=explorer_kwargs)
    log = learner.run()
    wall = time.perf_counter() - start
    final = free_energy_errors(problem, ensemble)
    data = learner.store.data()
    first_below = next((r["total_labels"] for r in log
                        if r["evaluation"]["a_rmse"] <= 0.5), None)
    floor = smoothed_free_energy_error(problem, args.kappa)
    result = {
        "system": "mueller_brown", "problem": problem.get_config(), "seed": args.seed,
        "settings": {"lo": args.lo, "labels_per_iteration": args.labels_per_iteration,
                     "train_steps": args.train_steps, "md": md, "ensemble": 4,
                     "explorer": args.explorer,
                     "explorer_settings": explorer_kwargs or {"temperatures_kT": [1.0, 2.0, 4.0],
                                                              "num_chains": 48,
                                                              "num_results": 10}},
        "a_rmse_kT": final["a_rmse"], "a_max_error_kT": final["a_max_error"],
        "force_rmse": final["force_rmse"], "target_a_rmse_kT": 0.5,
        "met": final["a_rmse"] <= 0.5, "labels_used": labeller.calls,
        "labels_when_first_below_target": first_below,
        "explored_total": int(sum(r["explored"] for r in log)),
        "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
        "wall_time_s": wall, "restraint_floor_a_rmse_kT": floor,
        "per_iteration": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                             "failed", "labelled", "label_failures",
                                             "total_labels", "accurate_fraction")}
                          | {"a_rmse_kT": r["evaluation"]["a_rmse"],
                             "force_rmse": r["evaluation"]["force_rmse"]} for r in log],
        "machine_load": {"start": load_start, "end": machine_load()},
    }
    mcmc_path = os.path.join(RESULTS, "concurrent_learning.json")
    if args.explorer != "mcmc" and os.path.exists(mcmc_path):
        with open(mcmc_path, encoding="utf-8") as f:
            mcmc = json.load(f)
        result["mcmc_explorer_reference"] = {
            k: mcmc.get(k) for k in ("a_rmse_kT", "force_rmse", "labels_used",
                                     "labels_when_first_below_target", "iterations",
                                     "converged", "wall_time_s", "seed")}
    print(f"EELT ({args.explorer}): A RMS error {final['a_rmse']:.3f} kT over A < 10 kT "
          f"(target 0.5), "
          f"{labeller.calls} labels, {result['iterations']} iterations, converged "
          f"{result['converged']}, {wall:.0f} s; restraint floor {floor:.3f} kT")

    if not args.skip_baseline:
        # Same number of labels from plain MD, same model and total optimizer steps.
        t = time.perf_counter()
        base_dir = args.run_dir + "_baseline"
        shutil.rmtree(base_dir, ignore_errors=True)
        _, base_ensemble, base_labeller = build_free_energy_learner(
            problem, base_dir, seed=args.seed + 1000, md_kwargs=md,
            train_steps=args.train_steps * (result["iterations"] + 1), verbose=0)
        points = problem.sample_cvs(labeller.calls, seed=args.seed + 1)
        labels = base_labeller.label_batch(points)
        keep = [i for i, r in enumerate(labels) if isinstance(r, dict)]
        base_data = LabelledData(points[keep], {
            "mean_force": np.stack([labels[i]["mean_force"] for i in keep])}, [])
        steps = args.train_steps * (result["iterations"] + 1)
        EnsembleTrainer(base_ensemble, "mean_force", steps=steps, seed=args.seed,
                        optimizer_fn=lambda: keras.optimizers.Adam(
                            keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.02))
                        ).train(base_data, 0)
        base = free_energy_errors(problem, base_ensemble)
        result["baseline_plain_md"] = {"labels": len(keep), "a_rmse_kT": base["a_rmse"],
                                       "force_rmse": base["force_rmse"],
                                       "wall_time_s": time.perf_counter() - t}
        print(f"baseline (same labels from plain MD): A RMS error {base['a_rmse']:.3f} kT")

    write_json(args.output, result)
    png = os.path.splitext(args.output)[0] + ".png"
    plot_free_energy(problem, ensemble, data.configurations, png)
    print(f"written {args.output} and {png}")


if __name__ == "__main__":
    main()
