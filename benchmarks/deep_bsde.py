"""Deep BSDE benchmark: accuracy over seeds, ms per iteration, FLOP rate, the reference's trap.

Prints a table and writes `benchmarks/results/deep_bsde.json`. Full run: ~20 min on 2 cores.

    python benchmarks/deep_bsde.py                       # all problems, 3 seeds
    python benchmarks/deep_bsde.py --problems hjb_lq --seeds 0
    python benchmarks/deep_bsde.py --problems black_scholes_default_risk pricing_diff_rate \
        --linear_check --output benchmarks/results/deep_bsde_option_problems.json
    python benchmarks/deep_bsde.py --problems --measure_check \
        --output benchmarks/results/deep_bsde_pricing_measures.json
    python benchmarks/deep_bsde.py --problems pricing_diff_rate --num_steps 160 \
        --output benchmarks/results/deep_bsde_pricing_n160.json
"""

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from mlcmk import config
from mlcmk.io import write_json
from mlcmk.training.bsde_solver import solve

DEFAULTS = {  # iterations and initial learning rate per problem
    "hjb_lq": (4000, 1e-3),
    "allen_cahn": (4000, 1e-3),
    "black_scholes_default_risk": (4000, 1e-3),
    "pricing_diff_rate": (4000, 1e-3),
}


def matmul_gflops(dtype, n=2048, repeats=10):
    a = tf.random.normal((n, n), dtype=dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    t = time.perf_counter()
    for _ in range(repeats):
        f(a).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def gradient_net_flops(batch, steps, dim, hidden):
    """Multiply-add FLOPs of one training step of the one-hidden-layer gradient network.

    Forward (x W), the input gradient (W^T s) and the three products of their backward pass
    with the weights: 5 matmuls of batch * steps * (dim + 1) * hidden, 2 FLOPs each.
    """
    return 10 * batch * steps * (dim + 1) * hidden


def risk_neutral_price(problem, num_paths=1_000_000, seed=0, chunk=50_000):
    """e^{-rT} E_Q g(X_T) by plain Monte Carlo with exact GBM at drift r = R^l (the linear case
    R^b = R^l of pricing_diff_rate); returns (value, standard error)."""
    rng = np.random.default_rng(seed)
    r, sigma, t = problem.rate_lend, problem.sigma_bar, problem.total_time
    total, total_sq = 0.0, 0.0
    for _ in range(num_paths // chunk):
        x = problem.x0 * np.exp((r - 0.5 * sigma**2) * t
                                + sigma * np.sqrt(t) * rng.standard_normal((chunk, problem.dim)))
        g = np.asarray(problem.terminal(x), dtype="float64") * np.exp(-r * t)
        total, total_sq = total + g.sum(), total_sq + (g**2).sum()
    n = chunk * (num_paths // chunk)
    mean = total / n
    return mean, float(np.sqrt((total_sq / n - mean**2) / n))


def linear_pricing_check(seed, iterations):
    """pricing_diff_rate with R^b = R^l: a linear equation whose answer Monte Carlo knows."""
    from mlcmk.problems.bsde import PricingDiffRate

    problem = PricingDiffRate(rate_borrow=0.04)
    value, stderr = risk_neutral_price(problem)
    rows = {"monte_carlo": value, "monte_carlo_stderr": stderr}
    for extremes in (True, False):
        r, _ = solve(problem, iterations=iterations, learning_rate=1e-3, seed=seed, verbose=0,
                     z_error_paths=0, extremes=extremes)
        rows[f"extremes_{extremes}"] = {"y0": r["y0"], "relative_error": abs(r["y0"] - value)
                                        / value, "loss_ratio": r["loss_ratio"]}
        print(f"pricing, linear case (R^b = R^l), extremes={extremes}: y0 {r['y0']:.4f} vs "
              f"Monte Carlo {value:.4f} +- {stderr:.4f}: rel.err "
              f"{rows[f'extremes_{extremes}']['relative_error']:.2e}, loss/trivial "
              f"{r['loss_ratio']:.3f}", flush=True)
    return rows


def switching_policy_price(problem, threshold, num_paths=200_000, num_steps=50, seed=0,
                           chunk=50_000):
    """A lower bound on u(0, x0) of pricing_diff_rate, independent of Deep BSDE.

    The generator is the larger of two linear ones, f = max_r [-r y + (r - mu) s] over
    r in {R^l, R^b}, so u(0, x0) = sup over adapted r_t of E[exp(-int r dt) g(X_T)] with
    dX = r_t X dt + sigma X dW. Any policy gives a lower bound; this one borrows (r = R^b) while
    max_i X_i < threshold and lends above it. Exact GBM steps with the policy frozen over each of
    `num_steps` steps. Returns (value, standard error).
    """
    rng = np.random.default_rng(seed)
    dt = problem.total_time / num_steps
    sig = problem.sigma_bar
    values = []
    for _ in range(num_paths // chunk):
        logx = np.full((chunk, problem.dim), np.log(problem.x0[0]))
        discount = np.zeros(chunk)
        for _ in range(num_steps):
            r = np.where(np.exp(logx.max(axis=1)) < threshold, problem.rate_borrow,
                         problem.rate_lend)
            discount += r * dt
            logx += ((r - 0.5 * sig**2) * dt)[:, None] \
                + sig * np.sqrt(dt) * rng.standard_normal(logx.shape)
        g = np.asarray(problem.terminal(np.exp(logx)), dtype="float64")
        values.append(np.exp(-discount) * g)
    v = np.concatenate(values)
    return float(v.mean()), float(v.std() / np.sqrt(len(v)))


def learned_policy_price(model, problem, num_paths=200_000, seed=0, chunk=20_000):
    """Value of a trained DeepBSDE's own borrow/lend decisions on pricing_diff_rate.

    Along exact GBM paths under the policy's measure (dX = r_t X dt + sigma X dW), the policy
    borrows (r = R^b) where the learned stock holding s = sum(Z) / sigma exceeds the learned
    wealth Y and lends otherwise, over each of the N steps; Y follows the same measure,
    Y_{n+1} = (Y_n + Z_n . dW_n) e^{r_n dt}, so the discounted Y is a martingale with mean y0.
    u(0, x0) is the sup over policies, so the plain estimate E[e^{-int r} g(X_T)] is a lower
    bound (up to Monte Carlo error) that uses nothing of the network but its decisions;
    `y0 + E[e^{-int r} (g - Y_N)]` is the same expectation with the learned hedge as a
    control variate. Returns a dict of both with standard errors, and the borrowing fraction.
    """
    rng = np.random.default_rng(seed)
    n_steps, dt, sig = problem.num_steps, problem.dt, problem.sigma_bar
    y0 = model.y0_value()
    plain, controlled, borrowing = [], [], []
    for _ in range(num_paths // chunk):
        x = np.tile(np.asarray(problem.x0, np.float64), (chunk, 1))
        y = np.full(chunk, y0)
        discount = np.zeros(chunk)
        for n in range(n_steps):
            z = np.asarray(model.z(n * dt, x), np.float64)
            r = np.where(z.sum(axis=1) / sig > y, problem.rate_borrow, problem.rate_lend)
            borrowing.append(np.mean(r == problem.rate_borrow))
            dw = np.sqrt(dt) * rng.standard_normal(x.shape)
            y = (y + np.sum(z * dw, axis=1)) * np.exp(r * dt)
            x = x * np.exp(((r - 0.5 * sig**2) * dt)[:, None] + sig * dw)
            discount += r * dt
        g = np.asarray(problem.terminal(x), np.float64)
        plain.append(np.exp(-discount) * g)
        controlled.append(y0 + np.exp(-discount) * (g - y))
    plain, controlled = np.concatenate(plain), np.concatenate(controlled)
    root = np.sqrt(len(plain))
    return {"lower_bound": float(plain.mean()), "stderr": float(plain.std() / root),
            "control_variate": float(controlled.mean()),
            "control_variate_stderr": float(controlled.std() / root),
            "borrowing_fraction": float(np.mean(borrowing)), "num_paths": len(plain)}


def clairvoyant_upper_bound(problem, num_paths=2_000_000, seed=7, chunk=50_000,
                            num_rates=201):
    """An upper bound on u(0, x0) of pricing_diff_rate (information relaxation).

    Every asset sees the same rate, so X_T = e^{int r dt} X^0_T with X^0 the driftless GBM,
    and a policy's payoff is h(R, m) = e^{-R} g(e^R m), m = max_i X^0_{T,i}, R = int r dt in
    [R^l T, R^b T]. Choosing R after seeing m (the sup over anticipating policies) can only do
    better: E[max_R h(R, m)] >= u(0, x0). Returns (value, standard error).
    """
    rng = np.random.default_rng(seed)
    T, sig, x0 = problem.total_time, problem.sigma_bar, float(problem.x0[0])
    rates = np.linspace(problem.rate_lend * T, problem.rate_borrow * T, num_rates)[:, None]
    values = []
    for _ in range(num_paths // chunk):
        z = rng.standard_normal((chunk, problem.dim)).max(axis=1)
        m = x0 * np.exp(-0.5 * sig**2 * T + sig * np.sqrt(T) * z)
        x = np.exp(rates) * m[None, :]  # the maximum asset under each total rate
        payoff = np.exp(-rates) * np.asarray(problem.terminal(x[..., None]), np.float64)
        values.append(payoff.max(axis=0))
    v = np.concatenate(values)
    return float(v.mean()), float(v.std() / np.sqrt(len(v)))


def dual_bounds(step_counts, num_fit_paths, num_bound_paths, hedging_loss=False):
    """pricing_diff_rate at d = 100: primal-dual bounds on the time-discrete value for each N
    (and, with `hedging_loss`, the smallest loss E|g - Y_N|^2 any hedge on that grid reaches)."""
    from mlcmk.problems.bsde import PricingDiffRate
    from mlcmk.problems.bsde.rate_bounds import primal_dual_bounds

    rows = []
    for n in step_counts:
        b = primal_dual_bounds(PricingDiffRate(num_steps=n), num_fit_paths=num_fit_paths,
                               num_bound_paths=num_bound_paths, hedging_loss=hedging_loss,
                               verbose=0)
        rows.append(b.as_dict())
        if hedging_loss:
            rows[-1]["hedging_floor_ratio"] = b.hedging_loss / b.terminal_variance
            print(f"pricing_diff_rate N = {n:4d}: smallest hedging loss {b.hedging_loss:.3f} = "
                  f"{rows[-1]['hedging_floor_ratio']:.3f} of Var g", flush=True)
        print(f"pricing_diff_rate N = {n:4d}: lower {b.lower:.5f} +- {b.lower_se:.5f}, upper "
              f"{b.upper:.5f} +- {b.upper_se:.5f}, regression {b.regression:.5f}, borrowing "
              f"{b.borrow_fraction:.0%}, tail ratio {b.tail_ratio:.1f}, {b.seconds:.0f} s",
              flush=True)
    return {"num_fit_paths": num_fit_paths, "num_bound_paths": num_bound_paths, "rows": rows,
            "published_reference": PricingDiffRate.published_value}


def pricing_z_check(seeds, iterations, num_steps=20, num_fit_paths=6000, num_bound_paths=6000):
    """pricing_diff_rate: Deep BSDE against the regression of the primal-dual bounds on the
    same grid: y0 against the bracket, the learned Z against the regression's Z, and the loss
    against the smallest loss a hedge on this grid can reach."""
    from mlcmk.problems.bsde import PricingDiffRate
    from mlcmk.problems.bsde.rate_bounds import primal_dual_bounds

    problem = PricingDiffRate(num_steps=num_steps)
    bounds = primal_dual_bounds(problem, num_fit_paths=num_fit_paths,
                                num_bound_paths=num_bound_paths, hedging_loss=True, verbose=0)
    floor = bounds.hedging_loss / bounds.terminal_variance
    print(f"pricing_diff_rate N = {num_steps} bounds [{bounds.lower:.5f}, {bounds.upper:.5f}] "
          f"(+- {bounds.lower_se:.5f} / {bounds.upper_se:.5f}); smallest hedging loss "
          f"{bounds.hedging_loss:.3f} = {floor:.3f} of Var g = {bounds.terminal_variance:.2f}",
          flush=True)
    rows = []
    for seed in seeds:
        r, model = solve(problem, iterations=iterations, learning_rate=1e-3, seed=seed,
                         verbose=0, z_error_paths=0)
        errors = model.z_errors(num_paths=64, exact_z=bounds.z)
        row = {"seed": seed, "y0": r["y0"], "loss_ratio": r["loss_ratio"],
               "relative_error_to_grid_value": (r["y0"] - bounds.midpoint) / bounds.midpoint,
               "relative_error_to_reference": r["relative_error"],
               "z_relative_l2": errors["relative_l2"], "z_cosine": errors["cosine"],
               "z_relative_l2_max": max(errors["relative_l2"]),
               "z_cosine_min": min(errors["cosine"])}
        rows.append(row)
        to_grid = row["relative_error_to_grid_value"]
        print(f"pricing_diff_rate seed {seed}: y0 {r['y0']:.4f} ({to_grid:+.2e} "
              f"to the grid's value, |{r['relative_error']:.2e}| to the reference), loss/Var g "
              f"{r['loss_ratio']:.3f} (floor {floor:.3f}); Z against the regression: rel. L2 "
              f"max {row['z_relative_l2_max']:.3f}, cosine min {row['z_cosine_min']:.4f}",
              flush=True)
    return {"num_steps": num_steps, "bounds": bounds.as_dict(), "loss_floor_ratio": floor,
            "runs": rows}


def policy_check(seeds, iterations):
    """pricing_diff_rate: the learned y0 against the Monte Carlo value of the learned policy."""
    from mlcmk.problems.bsde import PricingDiffRate

    rows = []
    for seed in seeds:
        problem = PricingDiffRate()
        r, model = solve(problem, iterations=iterations, learning_rate=1e-3, seed=seed,
                         verbose=0, z_error_paths=0)
        value = learned_policy_price(model, problem, seed=1000 + seed)
        reference = problem.reference_value()
        row = {"seed": seed, "y0": r["y0"], "relative_error": r["relative_error"],
               "loss_ratio": r["loss_ratio"], **value,
               "lower_bound_relative_error": (value["lower_bound"] - reference) / reference,
               "control_variate_relative_error":
                   (value["control_variate"] - reference) / reference}
        rows.append(row)
        print(f"pricing_diff_rate seed {seed}: y0 {r['y0']:.4f} (rel.err "
              f"{r['relative_error']:.2e}); learned policy by Monte Carlo "
              f"{value['lower_bound']:.4f} +- {value['stderr']:.4f}, with the learned hedge as "
              f"control variate {value['control_variate']:.4f} +- "
              f"{value['control_variate_stderr']:.4f} (reference {reference}); borrowing "
              f"{value['borrowing_fraction']:.2f} of the decisions", flush=True)
    return rows


def measure_check(seeds, iterations):
    """pricing_diff_rate solved under two measures (the same PDE), and policy lower bounds."""
    from mlcmk.problems.bsde import PricingDiffRate

    rows = {}
    for measure in ("physical", "lending"):
        runs = []
        for seed in seeds:
            r, _ = solve(PricingDiffRate(measure=measure), iterations=iterations,
                         learning_rate=1e-3, seed=seed, verbose=0, z_error_paths=0)
            runs.append({k: r[k] for k in ("seed", "y0", "relative_error", "loss_ratio")})
            print(f"pricing_diff_rate, paths under the {measure} measure, seed {seed}: y0 "
                  f"{r['y0']:.4f} (reference: rel.err {r['relative_error']:.2e}), "
                  f"loss/trivial {r['loss_ratio']:.3f}", flush=True)
        rows[measure] = runs
    problem = PricingDiffRate()
    bounds = []
    for threshold in (np.inf, 160.0, 150.0, 145.0, 140.0):
        value, stderr = switching_policy_price(problem, threshold)
        bounds.append({"threshold": threshold, "lower_bound": value, "stderr": stderr})
        print(f"switching policy (borrow while max_i X_i < {threshold}): lower bound "
              f"{value:.4f} +- {stderr:.4f}", flush=True)
    rows["policy_lower_bounds"] = bounds
    return rows


def summarise(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", nargs="*", default=list(DEFAULTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations for every run (default: each problem's own, 4000; "
                             "2000 for the original architecture)")
    parser.add_argument("--num_steps", type=int, default=None,
                        help="time steps N for every problem in --problems (default: each "
                             "problem's own, e.g. 20); a finer grid lowers the smallest loss "
                             "a hedge can reach")
    parser.add_argument("--skip_reference_arch", action="store_true")
    parser.add_argument("--linear_check", action="store_true",
                        help="also solve pricing_diff_rate with R^b = R^l against Monte Carlo")
    parser.add_argument("--policy_check", action="store_true",
                        help="also price pricing_diff_rate's learned borrow/lend policy by "
                             "Monte Carlo (a lower bound on u(0, x0))")
    parser.add_argument("--clairvoyant_bound", action="store_true",
                        help="also an upper bound on pricing_diff_rate's u(0, x0) from "
                             "anticipating rate choices")
    parser.add_argument("--dual_bounds", nargs="*", type=int, default=None, metavar="N",
                        help="also primal-dual Monte Carlo bounds on pricing_diff_rate's value "
                             "on grids of N steps (default 20 40 80 160)")
    parser.add_argument("--dual_paths", nargs=2, type=int, default=[4000, 4000],
                        metavar=("FIT", "BOUND"))
    parser.add_argument("--hedging_floor", action="store_true",
                        help="with --dual_bounds: also the smallest loss any hedge on each grid "
                             "can reach, as a fraction of Var g(X_T)")
    parser.add_argument("--pricing_z_check", nargs="*", type=int, default=None, metavar="N",
                        help="also pricing_diff_rate's y0, Z and loss against the primal-dual "
                             "regression on the same grid, for grids of N steps (default 20)")
    parser.add_argument("--measure_check", action="store_true",
                        help="also solve pricing_diff_rate with paths under the lending measure "
                             "and compute switching-policy lower bounds")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                        "deep_bsde.json"))
    args = parser.parse_args()

    out = {"machine": {"matmul_gflops_float32": matmul_gflops(tf.float32),
                       "matmul_gflops_float64": matmul_gflops(tf.float64)}}
    m = out["machine"]
    print(f"dense matmul 2048^2: {m['matmul_gflops_float32']:.1f} GFLOP/s float32, "
          f"{m['matmul_gflops_float64']:.1f} GFLOP/s float64")
    out["problems"] = {}
    for name in args.problems:
        iterations, lr = DEFAULTS.get(name, (4000, 1e-3))
        iterations = args.iterations or iterations
        rows = []
        spec = name if args.num_steps is None else {"name": name, "num_steps": args.num_steps}
        for seed in args.seeds:
            r, model = solve(spec, iterations=iterations, learning_rate=lr, seed=seed,
                             verbose=0, z_error_paths=32)
            r.pop("history")
            r.pop("epoch_times_s")
            n = model.problem
            flops = gradient_net_flops(64, n.num_steps - 1, n.dim, model.hidden_units[0])
            r["gflops_per_s"] = flops / (r["ms_per_iteration"] / 1e3) / 1e9
            r["fraction_of_matmul_rate"] = r["gflops_per_s"] / out["machine"][
                "matmul_gflops_float64"]
            rows.append(r)
            print(f"{name:28s} seed {seed}: y0 {r['y0']:.5f} rel.err {r['relative_error']:.2e} "
                  f"loss/trivial {r['loss_ratio']:.3f} "
                  f"Z rel {r['z_relative_error'] if r['z_relative_error'] is None else round(r['z_relative_error'], 3)} "  # noqa: E501
                  f"cos {r['z_cosine'] if r['z_cosine'] is None else round(r['z_cosine'], 4)} "
                  f"{r['ms_per_iteration']:.2f} (min {r['ms_per_iteration_min']:.2f}) ms/it, "
                  f"{r['wall_time_s']:.0f} s, "
                  f"0.2% after {r['time_to_0.2%_s']} s", flush=True)
        out["problems"][name] = {
            "runs": rows,
            **{k: summarise(rows, k) for k in ("relative_error", "loss_ratio", "z_relative_error",
                                              "z_cosine", "ms_per_iteration",
                                              "ms_per_iteration_min", "wall_time_s",
                                              "time_to_0.2%_s", "first_epoch_s")},
        }
    if "hjb_lq" in args.problems:
        # float32, and the original architecture (per-step subnetworks with batch normalisation,
        # lr 1e-2, y0 uniform in [0, 1], 2000 iterations) run here in the same process;
        # --iterations, where given, sets both.
        r32, _ = solve("hjb_lq", iterations=args.iterations or 4000, precision="float32",
                       seed=0, verbose=0, z_error_paths=32)
        r32.pop("history")
        r32.pop("epoch_times_s")
        out["hjb_lq_float32"] = r32
        print(f"hjb_lq float32: rel.err {r32['relative_error']:.2e} loss/trivial "
              f"{r32['loss_ratio']:.3f} {r32['ms_per_iteration']:.2f} ms/it", flush=True)
        if not args.skip_reference_arch:
            rr, _ = solve("hjb_lq", iterations=args.iterations or 2000, learning_rate=1e-2,
                          z_network="per_step", seed=0, verbose=0, z_error_paths=32)
            rr.pop("history")
            rr.pop("epoch_times_s")
            out["hjb_lq_original_architecture"] = rr
            print(f"hjb_lq original architecture: rel.err {rr['relative_error']:.2e} "
                  f"loss/trivial {rr['loss_ratio']:.3f} Z rel {rr['z_relative_error']:.3f} "
                  f"cos {rr['z_cosine']:.3f} {rr['ms_per_iteration']:.2f} ms/it", flush=True)
            ours = out["problems"]["hjb_lq"]["ms_per_iteration"]["mean"]
            ours_min = out["problems"]["hjb_lq"]["ms_per_iteration_min"]["min"]
            out["speedup_vs_original_architecture_same_run"] = rr["ms_per_iteration"] / ours
            out["speedup_vs_reference_anchor_46ms"] = {"median": 46.0 / ours,
                                                       "fastest_epoch": 46.0 / ours_min}
            print("speed-up over the original architecture (same run, medians): "
                  f"{rr['ms_per_iteration'] / ours:.2f}x; over the reference's 46 ms/iter "
                  f"(ANCHORS): {46.0 / ours:.2f}x median, {46.0 / ours_min:.2f}x fastest epoch")
    if args.linear_check:
        out["pricing_linear_check"] = linear_pricing_check(args.seeds[0],
                                                           args.iterations or 4000)
    if args.policy_check:
        out["pricing_policy_check"] = policy_check(args.seeds, args.iterations or 4000)
    if args.clairvoyant_bound:
        from mlcmk.problems.bsde import PricingDiffRate

        value, stderr = clairvoyant_upper_bound(PricingDiffRate())
        out["pricing_clairvoyant_upper_bound"] = {"value": value, "stderr": stderr}
        print(f"pricing_diff_rate clairvoyant upper bound: {value:.4f} +- {stderr:.4f}")
    if args.dual_bounds is not None:
        out["pricing_dual_bounds"] = dual_bounds(args.dual_bounds or [20, 40, 80, 160],
                                                 *args.dual_paths, args.hedging_floor)
    if args.pricing_z_check is not None:
        out["pricing_z_check"] = [pricing_z_check(args.seeds, args.iterations or 4000, n)
                                  for n in args.pricing_z_check or [20]]
    if args.measure_check:
        out["pricing_measure_check"] = measure_check(args.seeds, args.iterations or 4000)
    config.set_precision("float32")
    write_json(args.output, out)
    print("written", args.output)


if __name__ == "__main__":
    main()
