"""Stochastic control benchmark (Han and E 2016): LQ against Riccati, energy storage against LP.

- `lq_regulator`, d = 100: learned cost against the exact Riccati optimum (target: within 0.5%),
  also on the same evaluation paths as the exact policy, so that the Monte Carlo noise cancels.
- `energy_storage`, n = 30, 40, 50 devices: reward relative to the perfect-foresight LP bound
  of each evaluation path, for the learned and the rule-based policy, spread over seeds.
- ms per iteration of every run (steady-state epochs; the first epoch pays for compilation).

Prints a table and writes `benchmarks/results/control.json`. The default run (2 seeds, 300
storage iterations, 32 evaluation paths) took 6 min on the shared 2 cores, 25+ min while they
were heavily contended; the first epoch of every run pays for tracing (~10-120 s).

    python benchmarks/control.py                       # the default, short run
    python benchmarks/control.py --seeds 0 1 2 --storage_iterations 2000
"""

import argparse
import json
import os
import time

import numpy as np
from machine import machine_load  # benchmarks/machine.py

from mlcmk.io import write_json
from mlcmk.training.control_solver import solve_control


def spread(values):
    values = np.asarray(values, dtype="float64")
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "min": float(values.min()), "max": float(values.max()),
            "values": values.tolist()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lq_dim", type=int, default=100)
    parser.add_argument("--lq_iterations", type=int, default=1000)
    parser.add_argument("--lq_eval_paths", type=int, default=4096)
    parser.add_argument("--devices", nargs="+", type=int, default=[30, 40, 50])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--storage_iterations", type=int, default=300)
    parser.add_argument("--eval_paths", type=int, default=32)
    # Measured here: XLA makes a steady energy-storage step ~1.5x faster but doubles the start
    # (~2 min more while contended), so short storage runs go without it; LQ runs with it.
    parser.add_argument("--storage_xla", action="store_true")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "control.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    out = {"settings": vars(args), "lq_regulator": None, "energy_storage": {},
           "machine_load": {"start": machine_load()}}

    # --- LQ, d = 100 ------------------------------------------------------------------------
    problem = {"name": "lq_regulator", "dim": args.lq_dim, "num_steps": 20}
    r, _ = solve_control(problem, iterations=args.lq_iterations, epochs=10, batch_size=256,
                         learning_rate=3e-2, hidden_units=(), eval_paths=args.lq_eval_paths,
                         jit_compile=True, verbose=0)
    lq = {k: r.get(k) for k in (
        "learned_cost", "learned_cost_stderr", "reference_cost", "relative_error",
        "optimal_cost_same_paths", "excess_cost", "excess_cost_stderr", "relative_excess_cost",
        "ms_per_iteration", "first_epoch_s", "wall_time_s", "iterations", "batch_size")}
    lq.update(dim=args.lq_dim, policy="linear per-step policy (hidden_units=())",
              target_met=bool(r["relative_error"] < 5e-3))
    out["lq_regulator"] = lq
    print(f"lq_regulator d={args.lq_dim}: learned {lq['learned_cost']:.4f} ± "
          f"{lq['learned_cost_stderr']:.3f}, Riccati {lq['reference_cost']:.4f}, relative error "
          f"{100 * lq['relative_error']:.3f} %, excess over the exact policy on the same paths "
          f"{100 * lq['relative_excess_cost']:.3f} %, {lq['ms_per_iteration']:.1f} ms/iteration")

    # --- energy storage ---------------------------------------------------------------------
    for n in args.devices:
        runs = []
        for seed in args.seeds:
            r, _ = solve_control({"name": "energy_storage", "num_devices": n},
                                 iterations=args.storage_iterations, epochs=4, batch_size=64,
                                 learning_rate=1e-2, seed=seed, eval_paths=args.eval_paths,
                                 jit_compile=args.storage_xla, verbose=0)
            runs.append({k: r[k] for k in (
                "seed", "learned_reward", "rule_based_reward", "lp_bound_reward",
                "relative_reward", "rule_relative_reward", "bound_holds", "ms_per_iteration",
                "first_epoch_s", "wall_time_s")} | {"validation_reward": [
                    -v for v in r["history"]["val_loss"]]})
            print(f"energy_storage n={n} seed={seed}: relative reward {r['relative_reward']:.4f}"
                  f" (rule-based {r['rule_relative_reward']:.4f}), bound holds "
                  f"{r['bound_holds']}, {r['ms_per_iteration']:.1f} ms/iteration", flush=True)
        out["energy_storage"][str(n)] = {
            "relative_reward": spread([x["relative_reward"] for x in runs]),
            "rule_relative_reward": runs[0]["rule_relative_reward"],
            "lp_bound_reward": runs[0]["lp_bound_reward"],
            "beats_rule_based": all(x["relative_reward"] > x["rule_relative_reward"]
                                    for x in runs),
            "bound_holds": all(x["bound_holds"] for x in runs),
            "ms_per_iteration": spread([x["ms_per_iteration"] for x in runs]),
            "iterations": args.storage_iterations, "runs": runs}
    out["total_wall_time_s"] = time.perf_counter() - start
    out["machine_load"]["end"] = machine_load()
    out["note"] = ("Compare timings as ratios within one run; `machine_load` has the load "
                   "average at the start and the end.")
    write_json(args.output, out)
    print(json.dumps({k: v for k, v in out.items() if k != "energy_storage"}, indent=1)[:2000])
    for n, v in out["energy_storage"].items():
        rr = v["relative_reward"]
        print(f"n={n}: relative reward {rr['mean']:.4f} ± {rr['std']:.4f} "
              f"[{rr['min']:.4f}, {rr['max']:.4f}] over {len(rr['values'])} seeds; rule-based "
              f"{v['rule_relative_reward']:.4f}; beats rule-based: {v['beats_rule_based']}")


if __name__ == "__main__":
    main()
