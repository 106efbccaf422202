"""DP-GEN-style concurrent learning of an Al potential (EMT labels): explored against labelled.

Runs `build_potential_learner("fcc_al")` (32-atom FCC Al, EMT labeller, Langevin MD driven by
ensemble member 0 at 300-1200 K in boxes strained up to 3 %, trust levels 0.05 / 0.15 eV/Å)
for a few iterations and prints the seed's figure-2 style table: per iteration explored /
accurate / candidate / failed / labelled, and the force RMSE of the ensemble mean on
`al_dataset().test` (200 held-out EMT frames, 450-1050 K) against the number of labels.
Baseline from the same code: one model of the same size trained on the same number of frames
drawn at random from `al_dataset().train` (1000 MD/displaced frames), for as many optimizer
steps as one EELT member received in total; and one trained on all ~1000 frames for
those steps (the issue's reference, at this small budget).

This is a small run, short of the issue's target comparison (EELT against ~1000 random frames
with the ANCHORS-size model trained 10^4 steps): small models, 4 members, a few hundred steps
per iteration, and the reference trained for the same small step budget.
Writes `benchmarks/results/dpgen_potentials.json`. ~5-8 min on 2 busy cores.

    python benchmarks/dpgen_potentials.py
    python benchmarks/dpgen_potentials.py --iterations 5 --train_steps 500 --members 4
"""

import argparse
import os
import shutil
import time

import numpy as np

from mlcmk import config
from mlcmk.cli.eelt import MODELS
from mlcmk.data import emt, read_systems
from mlcmk.io import write_json
from mlcmk.models.ensemble import Ensemble
from mlcmk.training.potential_learning import build_potential_learner, ensemble_errors
from mlcmk.training.potential_trainer import train_potential


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--num_initial", type=int, default=24)
    parser.add_argument("--labels_per_iteration", type=int, default=20)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--md_steps", type=int, default=100)
    parser.add_argument("--model", default="small", choices=sorted(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run_dir", default="/tmp/mlcmk_dpgen_benchmark")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "dpgen_potentials.json"))
    args = parser.parse_args()
    config.set_precision("float64")
    paths = emt.al_dataset()
    train_pool, test = read_systems(paths.train), read_systems(paths.test)
    shutil.rmtree(args.run_dir, ignore_errors=True)
    start = time.perf_counter()
    learner, ensemble, labeller = build_potential_learner(
        "fcc_al", args.run_dir, num_members=args.members, model_kwargs=MODELS[args.model],
        trust_levels=(0.05, 0.15), max_iterations=args.iterations,
        max_labels_per_iteration=args.labels_per_iteration, num_initial=args.num_initial,
        converge_fraction=None, num_trajectories=args.trajectories, md_steps=args.md_steps,
        sample_every=10, train_steps=args.train_steps, test_systems=test, seed=args.seed)
    log = learner.run()
    eelt_seconds = time.perf_counter() - start
    labels = log[-1]["total_labels"]

    # Baseline: the same number of random frames from the 1000-frame pool, same total steps.
    system = train_pool[0]
    pick = np.sort(np.random.default_rng(args.seed).choice(system.nframes, labels,
                                                           replace=False))
    steps = args.train_steps * (args.iterations + 1)
    t = time.perf_counter()
    baseline, result = train_potential(
        [system.subset(pick)], test, steps=steps, model_kwargs=MODELS[args.model],
        learning_rate=1e-3, stop_learning_rate=1e-5, decay_steps=max(steps // 20, 1),
        seed=args.seed, verbose=0)
    baseline_seconds = time.perf_counter() - t
    baseline_test = ensemble_errors(Ensemble([baseline]), test)
    # The reference: all ~1000 random frames, the same step budget.
    t = time.perf_counter()
    full, _ = train_potential(
        train_pool, test, steps=steps, model_kwargs=MODELS[args.model], learning_rate=1e-3,
        stop_learning_rate=1e-5, decay_steps=max(steps // 20, 1), seed=args.seed, verbose=0)
    full_seconds = time.perf_counter() - t
    full_test = ensemble_errors(Ensemble([full]), test)
    member0 = ensemble_errors(Ensemble([ensemble.members[0]]), test)
    pool_size = sum(s.nframes for s in train_pool)

    print(f"\nDP-GEN, fcc_al (32 atoms), {args.members} members ({args.model}), trust 0.05/0.15 "
          f"eV/Å, {args.train_steps} steps per member and iteration, seed {args.seed}")
    print(f"{'iter':>4} {'explored':>8} {'accurate':>8} {'candidate':>9} {'failed':>6} "
          f"{'labelled':>8} {'labels':>6} {'test F RMSE (meV/Å)':>20}")
    for r in log:
        print(f"{r['iteration']:4d} {r['explored']:8d} {r['accurate']:8d} {r['candidate']:9d} "
              f"{r['failed']:6d} {r['labelled']:8d} {r['total_labels']:6d} "
              f"{1e3 * r['evaluation']['test_force_rmse']:20.1f}")
    explored = sum(r["explored"] for r in log if r["iteration"] > 0)
    print(f"EELT: {labels} labels ({labeller.calls} EMT calls) for {explored} explored; test "
          f"force RMSE {1e3 * log[-1]['evaluation']['test_force_rmse']:.1f} meV/Å "
          f"(member 0 alone {1e3 * member0['force_rmse']:.1f}; {eelt_seconds:.0f} s, contended "
          "2-core machine)")
    print(f"Random baseline: {labels} random frames of al_dataset().train, {steps} steps: test "
          f"force RMSE {1e3 * baseline_test['force_rmse']:.1f} meV/Å ({baseline_seconds:.0f} s)")
    print(f"All {pool_size} random frames, {steps} steps: test force RMSE "
          f"{1e3 * full_test['force_rmse']:.1f} meV/Å ({full_seconds:.0f} s); EELT used "
          f"{100 * labels / pool_size:.1f} % of its labels")
    out = {"structure": "fcc_al", "members": args.members, "model": args.model,
           "model_kwargs": MODELS[args.model], "train_steps_per_iteration": args.train_steps,
           "seed": args.seed, "trust_levels": [0.05, 0.15],
           "table": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                        "failed", "labelled", "total_labels")}
                     | r["evaluation"] for r in log],
           "labels": labels, "emt_calls": labeller.calls, "explored": explored,
           "eelt_seconds": eelt_seconds, "eelt_member0_test": member0,
           "random_all": {"labels": pool_size, "steps": steps, **full_test,
                          "seconds": full_seconds},
           "baseline": {"labels": labels, "steps": steps, **baseline_test,
                        "seconds": baseline_seconds},
           "note": "small run; the issue's target compares with ~1000 random frames and the "
                   "ANCHORS-size model at 10^4 steps; wall times on a contended 2-core machine"}
    write_json(args.output, out)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
