"""Cost of the BGK kinetic solve with three velocity dimensions against the moment solves.

The speed goal of the moment-closure issue (learned moment solve >= 10x faster than the
kinetic solve on the same spatial grid) comes from the seed paper's setting, a monatomic gas
with three velocity dimensions, where the kinetic solver carries `num_v**3` unknowns per cell.
This script times, on the same 100-cell grid and from the same `(rho, u, T)` initial data:

- the kinetic solve with `velocity_dims=3` (`num_v**3` nodes on `[-v_max, v_max]^3`; the
  coarsest `num_v` is the one the grid check admits for the data), and, at the last eps, its
  velocity-grid convergence (relative L2 differences of rho, u, T to the finest grid);
- the reduced kinetic solve of the same gas (`reduced=True`: the two `v_x` marginals on 64
  nodes, exact for these x-only flows; its relative L2 difference to the tensor grid's
  solution is reported) and the kinetic solve with one velocity dimension (64 nodes, the
  moment-closure benchmark's);
- the learned moment solve (a model trained as in `moment_closure.py`, default budget) and the
  Euler solve;
- the Euler equations of the monatomic gas (gamma = 5/3, `EulerClosure(velocity_dims=3)`):
  its time and its relative L2 errors against the 3-D kinetic solution (the classical
  baseline in this setting).

The learned model is that of the one-velocity-dimension gas (gamma = 3): no 3-D-gas closure
is trained here. Its cost does not depend on the velocity grid (3 + K moments per cell, one
closure network evaluation per cell and stage), so the ratio is the cost ratio a learned model
of the same size would have; it is not an accuracy comparison. Against the reduced kinetic
solver (what one would use for x-only BGK flows) the ratio is that of the one-dimensional
setting; the tensor grid is what a collision operator without that reduction (the seed
paper's Maxwell-molecule Boltzmann operator) or transverse structure needs.

Writes `benchmarks/results/kinetic_3d_speed.json`. ~10 min alone on 2 cores.

    python benchmarks/kinetic_3d_speed.py
    python benchmarks/kinetic_3d_speed.py --num_v 34 --eps 1
"""

import argparse
import os
import time

import numpy as np

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.data import generate_kinetic_data, initial_state, parse_cases
from mlcmk.problems.kinetic.moment_solver import EulerClosure, MomentSolver
from mlcmk.training.moment_closure import euler_solve, relative_l2_fields, train_moment_model

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(repeats, solve, *arguments):
    """`(solve(*arguments), min wall time over repeats)`."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve(*arguments)
        best = min(best, time.perf_counter() - start)
    return result, best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 0.1, 10.0])
    parser.add_argument("--num_v", type=int, nargs="+", default=[34, 40, 48],
                        help="nodes per axis of the 3-D grids (convergence at the last eps)")
    parser.add_argument("--v_max", type=float, default=7.5)
    parser.add_argument("--case", default="smooth:1000", help="kind:seed of the initial data")
    parser.add_argument("--num_x", type=int, default=100)
    parser.add_argument("--t_end", type=float, default=0.1)
    parser.add_argument("--train_runs", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the fast solves")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "kinetic_3d_speed"))
    args = parser.parse_args()
    config.set_precision("float64")
    data = generate_kinetic_data(num_runs=args.train_runs, seed=0, num_x=args.num_x,
                                 t_end=args.t_end)
    model, info = train_moment_model(data, num_moments=2, autoencoder_epochs=15,
                                     closure_epochs=60, seed=0)
    [(kind, seed)] = parse_cases(args.case)
    rows = []
    for i, eps in enumerate(args.eps):
        one = BGK1D(eps=eps, num_x=args.num_x)
        state = initial_state(one, np.random.default_rng(seed), kind)
        f0 = one.maxwellian(*state)
        row = {"eps": eps, "times_s": {}, "kinetic_3d": {}}
        _, row["times_s"]["kinetic_1d"] = _timed(args.repeats, one.solve, f0, args.t_end)
        chu = BGK1D(eps=eps, num_x=args.num_x, velocity_dims=3, reduced=True)
        reduced, row["times_s"]["kinetic_3d_reduced"] = _timed(
            args.repeats, chu.solve, chu.maxwellian(*state), args.t_end)
        reduced = chu.primitives(reduced)
        _, row["times_s"]["learned"] = _timed(args.repeats, model.solve, f0, eps, one.dx,
                                              args.t_end)
        _, row["times_s"]["euler"] = _timed(args.repeats, euler_solve, f0, one.dx, args.t_end,
                                            one.moments)
        monatomic = MomentSolver(one.dx, closure=EulerClosure(velocity_dims=3), eps=eps)
        euler_3d, row["times_s"]["euler_3d"] = _timed(args.repeats, monatomic.solve, *state,
                                                      None, args.t_end)
        grids = args.num_v if i == len(args.eps) - 1 else args.num_v[:1]
        profiles = {}
        for num_v in grids:
            three = BGK1D(eps=eps, num_x=args.num_x, v_max=args.v_max, num_v=num_v,
                          velocity_dims=3)
            g0 = three.maxwellian(*state)
            f, seconds = _timed(1, three.solve, g0, args.t_end)
            profiles[num_v] = three.primitives(f)
            row["kinetic_3d"][str(num_v)] = {
                "nodes": three.num_nodes, "time_s": seconds,
                "steps": int(np.ceil(args.t_end / three.time_step() - 1e-9)),
                "speedup_learned": seconds / row["times_s"]["learned"],
                "speedup_euler": seconds / row["times_s"]["euler"],
                "euler_3d_errors": relative_l2_fields(euler_3d, profiles[num_v]),
                "reduced_difference": relative_l2_fields(reduced, profiles[num_v])}
            print(f"eps={eps:<6g} 3-D kinetic {num_v}^3 = {three.num_nodes} nodes: "
                  f"{seconds:.1f} s | learned {row['times_s']['learned']:.3f} s "
                  f"(x{seconds / row['times_s']['learned']:.0f}) | euler "
                  f"{row['times_s']['euler']:.3f} s | 1-D kinetic "
                  f"{row['times_s']['kinetic_1d']:.3f} s | reduced 3-D kinetic "
                  f"{row['times_s']['kinetic_3d_reduced']:.3f} s (differs by u "
                  f"{row['kinetic_3d'][str(num_v)]['reduced_difference']['u']:.1e}) | "
                  f"Euler gamma 5/3 "
                  f"{row['times_s']['euler_3d']:.3f} s, errors " + ", ".join(
                      f"{k} {v:.3f}" for k, v in
                      row["kinetic_3d"][str(num_v)]["euler_3d_errors"].items()), flush=True)
        finest = profiles[grids[-1]]
        for num_v in grids[:-1]:
            row["kinetic_3d"][str(num_v)]["difference_to_finest"] = relative_l2_fields(
                profiles[num_v], finest)
            print(f"  {num_v}^3 vs {grids[-1]}^3: relative L2 differences "
                  + ", ".join(f"{k} {v:.2e}" for k, v in
                              row["kinetic_3d"][str(num_v)]["difference_to_finest"].items()))
        rows.append(row)
    write_json(args.output + ".json", {
        "settings": vars(args), "training": info, "rows": rows,
        "note": "learned / euler: models of the one-velocity-dimension gas (cost only); "
                "euler_3d: the monatomic gas's Euler equations (errors vs 3-D kinetic); "
                "fast solves: min over repeats; 3-D kinetic: one run; single-threaded BLAS"})
    print(f"written {args.output}.json")


if __name__ == "__main__":
    main()
