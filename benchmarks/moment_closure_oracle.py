"""The moment scheme's own error: the learned moment system solved with exact closure values.

The closure of the moment system (`q_hat`, `G_hat`, `a`; see `MomentClosure`) is taken from the
kinetic solution itself, at the nearest of `--snapshots` times, instead of from the network:
what remains is the error of the moment scheme (Lax–Friedrichs bound, grid) and of the
generalised moments, with a perfect closure. Compared, on the same grid, with the learned
closure of a trained model (`--model_dir`, written by `LearnedMomentModel.save`, e.g. by
`mlcmk kinetic --model_dir`; without it a model is trained at the benchmark's default settings
with the heat-flux moment). Prints rho / u / T relative L2 errors at t = 0.1 and writes
`benchmarks/results/moment_closure_oracle.json`.

    python benchmarks/moment_closure_oracle.py --model_dir runs/model --num_x 100,200
"""

import argparse
import os

import numpy as np

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.data import generate_kinetic_data, initial_state
from mlcmk.problems.kinetic.moment_solver import moment_step, to_conserved, to_primitive
from mlcmk.training.moment_closure import (
    LearnedMomentModel,
    kinetic_moments,
    relative_l2_fields,
    train_moment_model,
)

HERE = os.path.dirname(os.path.abspath(__file__))


class KineticClosure:
    """Closure values of a stored kinetic solution at the solver's current time."""

    def __init__(self, autoencoder, times, snapshots, w_maxwell):
        self.autoencoder, self.times, self.snapshots = autoencoder, times, snapshots
        self.num_moments, self.w_maxwell = autoencoder.num_moments, w_maxwell
        self.time, self._cache = 0.0, {}

    def moments(self, k):
        if k not in self._cache:
            self._cache[k] = kinetic_moments(self.autoencoder, self.snapshots[k])
        return self._cache[k]

    def __call__(self, rho, T, W, eps):
        m = self.moments(int(np.argmin(np.abs(self.times - self.time))))
        return m["q_hat"], m["G_hat"], m["a"]


def oracle_solve(model, problem, f0, t_end, snapshots, speed_factor):
    """Moment solve from `f0` with the closure values of the kinetic solution."""
    times, f = problem.solve(f0, t_end, num_snapshots=snapshots)
    closure = KineticClosure(model.autoencoder, np.concatenate([[0.0], times]),
                             np.concatenate([f0[None], f]),
                             np.asarray(model.numpy_closure.w_maxwell))
    m = closure.moments(0)
    Q = to_conserved(m["rho"], m["u"], m["T"], m["W"])
    t = 0.0
    while t < t_end * (1 - 1e-12):
        _, u, T, _ = to_primitive(Q)
        dt = min(model.cfl * problem.dx / np.max(np.abs(u) + speed_factor * np.sqrt(T)),
                 t_end - t)
        closure.time = t + 0.5 * dt  # the closure of the step's midpoint
        Q = moment_step(np, closure, Q, dt, problem.dx, problem.eps, speed_factor,
                        closure.w_maxwell)
        t += dt
    return to_primitive(Q)[:3], problem.primitives(f[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--eps", default="0.1,1,10")
    parser.add_argument("--num_x", default="100,200")
    parser.add_argument("--speed_factors", default="model,3",
                        help="wave-speed bounds of the oracle solve ('model': the model's)")
    parser.add_argument("--test_cases", default="smooth:1000,smooth:1001,sod:1002")
    parser.add_argument("--snapshots", type=int, default=800)
    parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                         "moment_closure_oracle"))
    args = parser.parse_args()
    config.set_precision("float64")
    if args.model_dir:
        model = LearnedMomentModel.load(args.model_dir)
    else:
        data = generate_kinetic_data(num_runs=48, seed=0)
        model, _ = train_moment_model(data, autoencoder_epochs=15, closure_epochs=60,
                                      heat_flux_moment=True, frozen_speed_factor=5.0)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.test_cases.split(",")]
    fmt = lambda e: " / ".join(f"{e[k]:.3f}" for k in ("rho", "u", "T"))  # noqa: E731
    rows = []
    for num_x in (int(n) for n in args.num_x.split(",")):
        for eps in (float(e) for e in args.eps.split(",")):
            problem = BGK1D(eps=eps, num_x=num_x, num_v=model.autoencoder.num_v,
                            v_max=model.autoencoder.v_max)
            for kind, seed in cases:
                f0 = problem.maxwellian(*initial_state(problem, np.random.default_rng(seed),
                                                       kind))
                learned = model.solve(f0, eps, problem.dx, 0.1)[:3]
                row = {"num_x": num_x, "eps": eps, "kind": kind, "seed": seed, "oracle": {}}
                for factor in args.speed_factors.split(","):
                    c = model.wave_speed_factor(eps, problem.dx) if factor == "model" \
                        else float(factor)
                    oracle, kinetic = oracle_solve(model, problem, f0, 0.1, args.snapshots, c)
                    row["oracle"][f"{c:g}"] = relative_l2_fields(oracle, kinetic)
                row["learned"] = relative_l2_fields(learned, kinetic)
                rows.append(row)
                print(f"num_x {num_x} eps {eps:g} {kind}:{seed}  exact closure, bound "
                      + ", bound ".join(f"{c}: {fmt(e)}" for c, e in row["oracle"].items())
                      + f" | learned {fmt(row['learned'])}  (rho / u / T)", flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    write_json(args.output + ".json", {"settings": vars(args), "rows": rows})
    print(f"written {args.output}.json")


if __name__ == "__main__":
    main()
