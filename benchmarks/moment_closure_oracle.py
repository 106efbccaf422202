"""The moment scheme's own error: the learned moment system solved with exact closure values.

The closure of the moment system (`q_hat`, `G_hat`, `a`; see `MomentClosure`) is taken from the
kinetic solution itself, at the nearest of `--snapshots` times, instead of from the network:
what remains is the error of the moment scheme (Lax–Friedrichs bound, grid) with a perfect
closure. For a heat-flux model that is done twice: with the kinetic heat flux in the energy
flux (then the generalised moments of the solution feed nothing back: this measures the
conservation laws alone), and with the solution's own heat-flux moment, as the learned solve
has it (then the W equations, with exact fluxes and sources, must carry the heat flux).
Compared, on the same grid, with the learned closure of a trained model (`--model_dir`,
written by `LearnedMomentModel.save`, e.g. by `mlcmk kinetic --model_dir`; without it a model
is trained at the benchmark's default settings with the heat-flux moment). Prints rho / u / T
relative L2 errors at t = 0.1 and writes `benchmarks/results/moment_closure_oracle.json`.

With `--local_fit_epochs N` a third closure is solved: a network of the model's shape fitted
a priori (`fit_closure`, N epochs) to the closure values of the test runs themselves (every
`--local_fit_stride`-th stored time of every case and eps on that grid). It is a local closure
of `(rho, T, W, eps)` that has seen the answers: the best case of any local closure with
these moments, evaluated (unlike the exact values) at the moment solution's own state.

With `--posteriori_fit_steps N` a fourth: a copy of the model fine-tuned through the solver
(`finetune_closure`, N steps) on the test runs themselves (`--posteriori_fit_snapshots` equally
spaced times of each; whole runs from the initial state, as the learned model is used). It is
the a posteriori counterpart of the local fit: the best this model's closure does on this grid
and scheme once it has seen the answers. It may beat the exact closure values, since it also
absorbs the scheme's error; the gap between it and the trained model is generalisation.

With `--limiter NAME` the oracle and learned solves use that slope limiter (`minmod`, the
models' default, `van_leer` or `mc`) instead of the model's; the kinetic solver keeps minmod.
With `--flux NAME` they use that numerical flux (`lax_friedrichs`, the default, or `kinetic`:
`moment_rate`) instead of the model's.

With `--kinetic_refinement R` the kinetic solution on the grid is itself compared with one on
R times finer cells (averaged back to the grid): the kinetic solver's own discretisation
error, the floor of any comparison "against the kinetic solver on the same grid"; the learned
solve's error against that finer reference is reported too, and so is the exact-closure
solve's (with the solution's own heat flux for heat-flux models).

    python benchmarks/moment_closure_oracle.py --model_dir runs/model --num_x 100,200
"""

import argparse
import os
import tempfile

import numpy as np

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.bgk import SLOPE_LIMITERS
from mlcmk.problems.kinetic.data import generate_kinetic_data, initial_state, parse_cases
from mlcmk.problems.kinetic.moment_solver import (
    NUMERICAL_FLUXES,
    moment_step,
    to_conserved,
    to_primitive,
)
from mlcmk.training.moment_closure import (
    LearnedMomentModel,
    closure_training_data,
    finetune_closure,
    fit_closure,
    kinetic_moments,
    relative_l2_fields,
    train_moment_model,
)

HERE = os.path.dirname(os.path.abspath(__file__))


class KineticClosure:
    """Closure values of a stored kinetic solution at the solver's current time.

    With `state_heat_flux=True` (heat-flux models only) the heat flux is the solution's own
    heat-flux moment, as in the learned solve; only `G_hat` and `a` come from the kinetic
    solution. Otherwise all three do, and the conservation laws see the exact heat flux
    whatever the generalised moments of the solution are.
    """

    def __init__(self, autoencoder, times, snapshots, w_maxwell, state_heat_flux=False):
        self.autoencoder, self.times, self.snapshots = autoencoder, times, snapshots
        self.num_moments, self.w_maxwell = autoencoder.num_moments, w_maxwell
        self.state_heat_flux = state_heat_flux
        self.time, self._cache = 0.0, {}

    def moments(self, k):
        if k not in self._cache:
            self._cache[k] = kinetic_moments(self.autoencoder, self.snapshots[k])
        return self._cache[k]

    def __call__(self, rho, T, W, eps):
        m = self.moments(int(np.argmin(np.abs(self.times - self.time))))
        q_hat = W[:, (self.num_moments + 1) // 2] if self.state_heat_flux else m["q_hat"]
        return q_hat, m["G_hat"], m["a"]


def oracle_solve(model, problem, times, f, t_end, speed_factor, state_heat_flux=False):
    """Moment solve from `f[0]` with the closure values of the kinetic solution `f` at
    `times` (`times[0] = 0`); `state_heat_flux` as in `KineticClosure`."""
    closure = KineticClosure(model.autoencoder, times, f,
                             np.asarray(model.numpy_closure.w_maxwell), state_heat_flux)
    m = closure.moments(0)
    Q = to_conserved(m["rho"], m["u"], m["T"], m["W"])
    t = 0.0
    while t < t_end * (1 - 1e-12):
        _, u, T, _ = to_primitive(Q)
        dt = min(model.cfl * problem.dx / np.max(np.abs(u) + speed_factor * np.sqrt(T)),
                 t_end - t)
        closure.time = t + 0.5 * dt  # the closure of the step's midpoint
        Q = moment_step(np, closure, Q, dt, problem.dx, problem.eps, speed_factor,
                        closure.w_maxwell, model.limiter, model.flux)
        t += dt
    return to_primitive(Q)


def w_deviation_error(W, w_kinetic, model):
    """Per generalised moment: RMS of `W - W_kinetic` over the RMS of the kinetic solution's
    non-equilibrium part `W_kinetic - W_M` (1 means an error as large as what is modelled)."""
    w_m = np.asarray(model.numpy_closure.w_maxwell)
    return [float(e) for e in np.sqrt(np.mean((W - w_kinetic) ** 2, axis=0)
                                      / np.mean((w_kinetic - w_m) ** 2, axis=0))]


def refined_kinetic(problem, kind, seed, t_end, factor):
    """`(rho, u, T)` of the kinetic solution on `factor` times finer cells, cell-averaged back
    to `problem`'s grid (the same initial data, sampled on the finer cells)."""
    fine = BGK1D(eps=problem.eps, num_x=factor * problem.num_x, num_v=problem.grid.num_v,
                 v_max=problem.grid.v_max)
    f0 = fine.maxwellian(*initial_state(fine, np.random.default_rng(seed), kind))
    f = fine.solve(f0, t_end)
    return problem.primitives(f.reshape(problem.num_x, factor, -1).mean(axis=1))


def local_fit(model, data, epochs):
    """The model with its closure refitted, a priori, to the closure values of `data`, and
    the fit's `info`."""
    x, y = closure_training_data(model.autoencoder, data)
    closure, info = fit_closure(model.autoencoder, x, y, epochs=epochs,
                                units=model.closure.units)
    print(f"closure fitted to {len(x)} cells of the test runs: loss {info['closure_loss']:.3g} "
          f"in {info['closure_fit_s']:.0f} s", flush=True)
    return LearnedMomentModel(model.autoencoder, closure, speed_factor=model.speed_factor,
                              cfl=model.cfl, frozen_speed_factor=model.frozen_speed_factor,
                              limiter=model.limiter, flux=model.flux), info


def posteriori_fit(model, data, steps):
    """A copy of the model with its closure fine-tuned through the solver on `data`
    (`finetune_closure`, whole runs), and the fit's `info`."""
    with tempfile.TemporaryDirectory() as directory:
        model.save(directory)
        copy = LearnedMomentModel.load(directory)
    info = finetune_closure(copy, data, steps=steps, verbose=0)
    print(f"closure fine-tuned through the solver on the {len(data['eps'])} test runs: "
          f"trajectory loss {info['loss_before']:.3g} -> {info['loss_after']:.3g} (step "
          f"{info['best_step']}) in {info['fit_s']:.0f} s", flush=True)
    return copy, info


def solve_variant(variant, key, grid_rows, fmt):
    """Solves every case of `grid_rows` with `variant` (a `LearnedMomentModel`) and records
    the errors under `key` (None where the solve broke down) and its W errors."""
    for row, problem, f0, kinetic, w_kinetic in grid_rows:
        try:
            solution = variant.solve(f0, row["eps"], problem.dx, 0.1)
            row[key] = relative_l2_fields(solution[:3], kinetic)
            row["w_error_" + key] = w_deviation_error(solution[3], w_kinetic, variant)
            text = fmt(row[key]) + " (W error " + " ".join(
                f"{e:.3f}" for e in row["w_error_" + key]) + ")"
        except FloatingPointError as err:  # a learned system can break down
            row[key], text = None, f"broke down ({err})"
        print(f"num_x {problem.num_x} eps {row['eps']:g} {row['kind']}:{row['seed']}  "
              f"{key.replace('_', ' ')}: {text} | learned {fmt(row['learned'])}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--eps", default="0.1,1,10")
    parser.add_argument("--num_x", default="100,200")
    parser.add_argument("--speed_factors", default="model,3",
                        help="wave-speed bounds of the oracle solve ('model': the model's)")
    parser.add_argument("--test_cases", default="smooth:1000,smooth:1001,sod:1002")
    parser.add_argument("--snapshots", type=int, default=800)
    parser.add_argument("--limiter", default=None, choices=sorted(SLOPE_LIMITERS),
                        help="slope limiter of the moment solves (default: the model's)")
    parser.add_argument("--flux", default=None, choices=NUMERICAL_FLUXES,
                        help="numerical flux of the moment solves (default: the model's)")
    parser.add_argument("--kinetic_refinement", type=int, default=0,
                        help="also solve the kinetic equation on this many times finer cells")
    parser.add_argument("--local_fit_epochs", type=int, default=0,
                        help="fit a closure to the test runs themselves (0: no such fit)")
    parser.add_argument("--local_fit_stride", type=int, default=8,
                        help="every how many stored times the local fit takes")
    parser.add_argument("--posteriori_fit_steps", type=int, default=0,
                        help="fine-tune a copy of the model through the solver on the test "
                             "runs themselves (0: no such fit)")
    parser.add_argument("--posteriori_fit_snapshots", type=int, default=5,
                        help="equally spaced times of each test run in that fit (a divisor "
                             "of --snapshots)")
    parser.add_argument("--output", default=os.path.join(HERE, "results",
                                                         "moment_closure_oracle"))
    args = parser.parse_args()
    if args.posteriori_fit_steps and (args.posteriori_fit_snapshots < 1
                                      or args.snapshots % args.posteriori_fit_snapshots):
        parser.error(f"--posteriori_fit_snapshots must divide --snapshots ({args.snapshots}); "
                     f"received {args.posteriori_fit_snapshots}")
    config.set_precision("float64")
    if args.model_dir:
        model = LearnedMomentModel.load(args.model_dir)
    else:
        data = generate_kinetic_data(num_runs=48, seed=0)
        model, _ = train_moment_model(data, autoencoder_epochs=15, closure_epochs=60,
                                      heat_flux_moment=True, frozen_speed_factor=5.0)
    if args.limiter:
        model.limiter = args.limiter
    args.limiter = model.limiter  # recorded in the JSON's settings
    if args.flux:
        model.flux = args.flux
    args.flux = model.flux
    cases = parse_cases(args.test_cases)
    fmt = lambda e: " / ".join(f"{e[k]:.3f}" for k in ("rho", "u", "T"))  # noqa: E731
    rows = []
    for num_x in (int(n) for n in args.num_x.split(",")):
        grid_rows, fit_f, fit_eps, post = [], [], [], {"f0": [], "f": [], "eps": []}
        for eps in (float(e) for e in args.eps.split(",")):
            problem = BGK1D(eps=eps, num_x=num_x, num_v=model.autoencoder.num_v,
                            v_max=model.autoencoder.v_max)
            for kind, seed in cases:
                f0 = problem.maxwellian(*initial_state(problem, np.random.default_rng(seed),
                                                       kind))
                times, f = problem.solve(f0, 0.1, num_snapshots=args.snapshots)
                times, f = np.concatenate([[0.0], times]), np.concatenate([f0[None], f])
                kinetic = problem.primitives(f[-1])
                learned = model.solve(f0, eps, problem.dx, 0.1)
                w_kinetic = kinetic_moments(model.autoencoder, f[-1])["W"]
                row = {"num_x": num_x, "eps": eps, "kind": kind, "seed": seed, "oracle": {}}
                refined = None
                if args.kinetic_refinement > 1:
                    refined = refined_kinetic(problem, kind, seed, 0.1, args.kinetic_refinement)
                    row["kinetic_grid_error"] = relative_l2_fields(kinetic, refined)
                    row["learned_vs_refined"] = relative_l2_fields(learned[:3], refined)
                    print(f"num_x {num_x} eps {eps:g} {kind}:{seed}  kinetic solution against "
                          f"{args.kinetic_refinement}x finer cells "
                          f"{fmt(row['kinetic_grid_error'])} | learned against it "
                          f"{fmt(row['learned_vs_refined'])}", flush=True)
                for factor in args.speed_factors.split(","):
                    c = model.wave_speed_factor(eps, problem.dx) if factor == "model" \
                        else float(factor)
                    oracle = oracle_solve(model, problem, times, f, 0.1, c)
                    row["oracle"][f"{c:g}"] = relative_l2_fields(oracle[:3], kinetic)
                    if model.autoencoder.heat_flux_moment:
                        oracle = oracle_solve(model, problem, times, f, 0.1, c,
                                              state_heat_flux=True)
                        row.setdefault("oracle_state_heat_flux", {})[f"{c:g}"] = \
                            relative_l2_fields(oracle[:3], kinetic)
                        row.setdefault("w_error_oracle_state_heat_flux", {})[f"{c:g}"] = \
                            w_deviation_error(oracle[3], w_kinetic, model)
                    if refined is not None:  # the last oracle solve, against the finer cells
                        row.setdefault("oracle_vs_refined", {})[f"{c:g}"] = \
                            relative_l2_fields(oracle[:3], refined)
                row["learned"] = relative_l2_fields(learned[:3], kinetic)
                row["w_error_learned"] = w_deviation_error(learned[3], w_kinetic, model)
                grid_rows.append((row, problem, f0, kinetic, w_kinetic))
                if args.local_fit_epochs:
                    fit_f.append(f[::args.local_fit_stride])
                    fit_eps.append(eps)
                if args.posteriori_fit_steps:
                    stride = args.snapshots // args.posteriori_fit_snapshots
                    post["f0"].append(f0)
                    post["f"].append(f[stride::stride])
                    post["eps"].append(eps)
                    post_times, post_x = times[stride::stride], problem.x
                print(f"num_x {num_x} eps {eps:g} {kind}:{seed}  exact closure, bound "
                      + ", bound ".join(f"{c}: {fmt(e)}" for c, e in row["oracle"].items())
                      + "".join(f" | state's heat flux, bound {c}: {fmt(e)}" for c, e in
                                row.get("oracle_state_heat_flux", {}).items())
                      + f" | learned {fmt(row['learned'])}  (rho / u / T)\n    W error "
                      "(|W - W_kinetic| / |W_kinetic - W_M| per moment): learned "
                      + " ".join(f"{e:.3f}" for e in row["w_error_learned"])
                      + "".join(f" | state's heat flux, bound {c}: "
                                + " ".join(f"{e:.3f}" for e in w) for c, w in
                                row.get("w_error_oracle_state_heat_flux", {}).items())
                      + "".join(f"\n    against {args.kinetic_refinement}x finer cells: exact "
                                f"closure (state's heat flux for heat-flux models), bound {c}: "
                                f"{fmt(e)}" for c, e in row.get("oracle_vs_refined", {}).items()),
                      flush=True)
        if args.local_fit_epochs:
            local, info = local_fit(model, {"f": np.stack(fit_f), "eps": np.array(fit_eps)},
                                    args.local_fit_epochs)
            for row in grid_rows:
                row[0]["local_fit_loss"] = info["closure_loss"]
            solve_variant(local, "local_fit", grid_rows, fmt)
        if args.posteriori_fit_steps:
            data = {k: np.stack(v) for k, v in post.items()}
            data.update(times=post_times, x=post_x, v=problem.grid.v)
            tuned, info = posteriori_fit(model, data, args.posteriori_fit_steps)
            for row in grid_rows:
                row[0]["posteriori_fit_loss"] = [info["loss_before"], info["loss_after"]]
            solve_variant(tuned, "posteriori_fit", grid_rows, fmt)
        rows += [r[0] for r in grid_rows]
        # After every grid, so that a long run that stops keeps what it measured.
        write_json(args.output + ".json", {"settings": vars(args), "rows": rows})
        print(f"written {args.output}.json ({num_x} cells done)", flush=True)


if __name__ == "__main__":
    main()
