"""Concurrent learning (EELT) of the free energy A(phi, psi) of alanine dipeptide (OpenMM).

Alanine dipeptide (ACE-ALA-NME, 22 atoms, Amber ff99SB, vacuum, 300 K, Langevin 2 fs with
bonds to H constrained) is built from internal coordinates, no file downloaded. The loop:
explore (MCMC on exp(-A/kT) of the ensemble mean, temperature ladder 1, 2, 4 kT, periodic
features of the angles) -> examine (spread of the ensemble's mean forces, kJ/mol/rad) -> label
(restrained OpenMM MD, harmonic restraint on both dihedrals, mean force from the restrained
average) -> train (4 `FreeEnergyModel`s by force matching).

The reference surface is computed first by the benchmark itself: umbrella sampling on a 24 x 24
grid of (phi, psi) windows (kappa 200 kJ/mol/rad^2, 20 ps each) and 2-D WHAM on 60 x 60 bins,
cached under $MLCMK_CACHE_DIR/free_energy (or ~/.cache/mlcmk/free_energy). Reported: the RMS
error of A (kJ/mol) over the region within 20 kJ/mol of the minimum (target 2 kJ/mol), the
reference's basins and whether the learned surface has them, the labels, the wall time, MD speed
on OpenMM's Reference and CPU platforms, the reference's cost, and the floor that the finite
restraint of the labels sets (the kappa-smoothed reference A_kappa against A).

Writes `benchmarks/results/alanine_dipeptide.json` and `.png`. About 10 min for the reference
(once) and 10-20 min for EELT on 2 busy cores.

    python benchmarks/alanine_dipeptide.py
    python benchmarks/alanine_dipeptide.py --max_iterations 12 --md_steps 20000
"""

import argparse
import os
import shutil
import time

import numpy as np
from machine import machine_load  # benchmarks/machine.py

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.free_energy import AlanineDipeptide
from mlcmk.problems.free_energy.alanine_dipeptide import (
    compare_surfaces,
    find_basins,
    plot_free_energy_surface,
    wrap,
)
from mlcmk.training.free_energy_learning import build_free_energy_learner

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def smoothed_reference_error(problem, reference, kappa, threshold=20.0):
    """RMS of A_kappa - A over the region (best constant removed), A_kappa by Gaussian smoothing
    of exp(-beta A) on the reference grid: the floor set by the labels' finite restraint."""
    a = reference["free_energy"]
    n = a.shape[0]
    t = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    d = wrap(t[:, None] - t[None, :])
    kernel = np.exp(-0.5 * problem.beta * kappa * d**2)  # separable, periodic
    w = np.where(np.isfinite(a), np.exp(-problem.beta * np.where(np.isfinite(a), a, 0)), 0.0)
    smooth = kernel @ w @ kernel.T / (kernel.sum(1)[:, None] * kernel.sum(1)[None, :])
    a_kappa = -np.log(smooth) / problem.beta
    region = np.isfinite(a) & (a < threshold)
    diff = a_kappa[region] - a[region]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_iterations", type=int, default=10)
    parser.add_argument("--min_iterations", type=int, default=4)
    parser.add_argument("--lo", type=float, default=5.0, help="trust level lo (kJ/mol/rad)")
    parser.add_argument("--labels_per_iteration", type=int, default=30)
    parser.add_argument("--num_initial", type=int, default=20)
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--kappa", type=float, default=500.0, help="kJ/mol/rad^2")
    parser.add_argument("--md_steps", type=int, default=10000)
    parser.add_argument("--reference_windows", type=int, default=24)
    parser.add_argument("--reference_steps", type=int, default=10000)
    parser.add_argument("--reference_bins", type=int, default=60)
    parser.add_argument("--threshold", type=float, default=20.0, help="kJ/mol")
    parser.add_argument("--run_dir", default="runs/alanine_dipeptide")
    parser.add_argument("--output", default=os.path.join(RESULTS, "alanine_dipeptide.json"))
    args = parser.parse_args()

    config.set_precision("float64")
    problem = AlanineDipeptide()
    speed = {"Reference": problem.steps_per_second(5000),
             "CPU_1_thread": AlanineDipeptide(platform="CPU").steps_per_second(5000)}
    print(f"MD speed (steps/s): Reference {speed['Reference']:.0f}, CPU (1 thread) "
          f"{speed['CPU_1_thread']:.0f}", flush=True)
    reference = problem.load_reference(
        num_windows=args.reference_windows, kappa=200.0, num_steps=args.reference_steps,
        num_burnin=max(args.reference_steps // 20, 10),
        sample_every=min(20, args.reference_steps // 10), num_bins=args.reference_bins,
        seed=args.seed, verbose=1)
    ref = reference["free_energy"]
    ref_basins = find_basins(ref, args.threshold)
    print(f"reference: {reference['wall_time_s']:.0f} s; basins (deg, kJ/mol): "
          + ", ".join(f"({np.degrees(p):.0f}, {np.degrees(q):.0f}) {a:.1f}"
                      for p, q, a in ref_basins), flush=True)

    md = {"kappa": args.kappa, "num_steps": args.md_steps,
          "num_burnin": max(args.md_steps // 10, 10), "sample_every": 10, "num_blocks": 10}
    shutil.rmtree(args.run_dir, ignore_errors=True)
    start, load_start = time.perf_counter(), machine_load()
    learner, ensemble, labeller = build_free_energy_learner(
        problem, args.run_dir, trust_levels=(args.lo, float("inf")),
        max_iterations=args.max_iterations, min_iterations=args.min_iterations,
        max_labels_per_iteration=args.labels_per_iteration, num_initial=args.num_initial,
        train_steps=args.train_steps, md_kwargs=md, threshold=args.threshold, seed=args.seed)
    log = learner.run()
    wall = time.perf_counter() - start
    grid = problem.grid(ref.shape[0]).reshape(-1, 2)
    learned = np.mean([np.asarray(m(grid))[:, 0] for m in ensemble.members], axis=0)
    learned = learned.reshape(ref.shape)
    final = compare_surfaces(ref, learned, threshold=args.threshold)
    floor = smoothed_reference_error(problem, reference, args.kappa, args.threshold)
    found = sum(b["found"] for b in final["basins"])
    result = {
        "system": "alanine_dipeptide", "problem": problem.get_config(), "seed": args.seed,
        "energy_unit": "kJ/mol", "kT_kj_mol": problem.kT,
        "md_steps_per_second": speed,
        "reference": {"method": "umbrella sampling + 2-D WHAM",
                      "settings": reference["settings"],
                      "wall_time_s": reference["wall_time_s"],
                      "basins": [{"phi_deg": np.degrees(p), "psi_deg": np.degrees(q),
                                  "a_kj_mol": a} for p, q, a in ref_basins]},
        "settings": {"lo_kj_mol_rad": args.lo, "labels_per_iteration": args.labels_per_iteration,
                     "num_initial": args.num_initial, "train_steps": args.train_steps,
                     "md": md, "ensemble": 4, "temperatures_kT": [1.0, 2.0, 4.0]},
        "a_rmse_kj_mol": final["a_rmse"], "a_max_error_kj_mol": final["a_max_error"],
        "region_points": final["num_points"], "threshold_kj_mol": args.threshold,
        "target_a_rmse_kj_mol": 2.0, "met": final["a_rmse"] <= 2.0,
        "basins": final["basins"], "basins_found": f"{found}/{len(final['basins'])}",
        "labels_used": labeller.calls, "explored_total": int(sum(r["explored"] for r in log)),
        "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
        "wall_time_s": wall, "restraint_floor_a_rmse_kj_mol": floor,
        "per_iteration": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                             "failed", "labelled", "label_failures",
                                             "total_labels", "accurate_fraction")}
                          | {"a_rmse_kj_mol_interpolated": r["evaluation"]["a_rmse"],
                             "force_rmse": r["evaluation"]["force_rmse"]} for r in log],
        "machine_load": {"start": load_start, "end": machine_load()},
    }
    print(f"EELT: A RMS error {final['a_rmse']:.2f} kJ/mol over A < {args.threshold:g} kJ/mol "
          f"(target 2), {found}/{len(final['basins'])} basins found, {labeller.calls} labels, "
          f"{result['iterations']} iterations, converged {result['converged']}, {wall:.0f} s; "
          f"restraint floor {floor:.2f} kJ/mol", flush=True)
    write_json(args.output, result)
    png = os.path.splitext(args.output)[0] + ".png"
    plot_free_energy_surface(ref, learned, png, labels=learner.store.data().configurations,
                             threshold=args.threshold)
    print(f"written {args.output} and {png}")


if __name__ == "__main__":
    main()
