"""`mlcmk kinetic`: BGK kinetic solve vs learned moment model vs Euler, from one initial state."""

from absl import flags

from mlcmk.problems.kinetic.data import INITIAL_KINDS
from mlcmk.problems.kinetic.moment_solver import NUMERICAL_FLUXES

DESCRIPTION = "BGK at a Knudsen number: kinetic solver, learned moment closure and Euler compared."

_EPS = flags.DEFINE_float("eps", 0.1, "Knudsen number of the comparison run.")
_INITIAL = flags.DEFINE_enum("initial", "smooth", list(INITIAL_KINDS), "Initial data: random "
                             "Fourier modes in rho, u, T, or a random Sod-type problem.")
_SEED = flags.DEFINE_integer("seed", 1000, "Seed of the comparison's initial data (training "
                             "data use seeds (train_seed, run)).")
_NUM_X = flags.DEFINE_integer("num_x", 100, "Cells in x (periodic, length 1).")
_NUM_V = flags.DEFINE_integer("num_v", 64, "Velocity nodes.")
_V_MAX = flags.DEFINE_float("v_max", 8.0, "Velocity grid half-width.")
_T_END = flags.DEFINE_float("t_end", 0.1, "Final time.")
_TRAIN_RUNS = flags.DEFINE_integer("train_runs", 32, "Kinetic runs in the training data.")
_TRAIN_SEED = flags.DEFINE_integer("train_seed", 0, "Seed of the training data and weights.")
_NUM_MOMENTS = flags.DEFINE_integer("num_moments", 2, "Generalised moments W (2: one even, "
                                    "one odd; 4 fitted the closure data better but gave less "
                                    "robust learned dynamics in our runs).")
_HEAT_FLUX = flags.DEFINE_bool("heat_flux_moment", False, "Make the odd generalised moment the "
                               "heat flux itself (exact energy flux; better for eps <= 0.1, "
                               "worse for eps >= 1 in our runs).")
_FROZEN_SPEED = flags.DEFINE_float("frozen_speed_factor", 3.0, "Wave-speed bound c of the "
                                   "learned solve's Lax-Friedrichs flux at large eps (|u| + c "
                                   "sqrt(T); Euler's sqrt(3) as eps -> 0).")
_AE_EPOCHS = flags.DEFINE_integer("autoencoder_epochs", 15, "Autoencoder epochs.")
_CLOSURE_EPOCHS = flags.DEFINE_integer("closure_epochs", 60, "Closure epochs.")
_FINETUNE_STEPS = flags.DEFINE_integer("finetune_steps", 0, "Then fit the closure a "
                                      "posteriori through the unrolled moment solver to the "
                                      "training runs' rho, u, T (Adam steps; 0: off). Applies when "
                                      "the model is trained, not when it is loaded.")
_WARMUP_STEPS = flags.DEFINE_integer("finetune_warmup_steps", 0, "Fine-tuning steps on "
                                     "windows of one snapshot interval before the "
                                     "--finetune_steps on whole runs (0: none).")
_RESTARTS = flags.DEFINE_list("finetune_restarts", [], "Then continue the whole-run "
                              "fine-tuning with fresh cosine schedules, steps:learning_rate "
                              "each (the first stage runs at 1e-3), e.g. 200:3e-4.")
_ROLLBACK = flags.DEFINE_float("finetune_rollback_factor", None, "A fine-tuning check whose "
                               "loss exceeds this times the best so far sends the fit back to "
                               "the best weights (default: never).")
_EVERY_SNAPSHOT = flags.DEFINE_bool("finetune_every_snapshot", False, "Fit the training runs' "
                                    "rho, u, T at every stored snapshot of the whole-run "
                                    "fine-tuning (and its restarts), not only at the last.")
_LOSS_POWER = flags.DEFINE_float("finetune_loss_power", 1.0, "Power q >= 1 of the power mean "
                                 "(mean e^q)^(1/q) of the training runs' errors that the "
                                 "fine-tuning fits (1: their mean; larger q weighs the worst runs "
                                 "more).")
_HYPERBOLICITY = flags.DEFINE_float("hyperbolicity_weight", 0.0, "Weight of the penalty on "
                                    "complex characteristic speeds (and speeds beyond "
                                    "--frozen_speed_factor) of the learned system, in a "
                                    "penalised a priori fit and in the fine-tuning (0: off).")
_CLOSURE_DTYPE = flags.DEFINE_enum("closure_dtype", None, ["float64", "float32"], "Precision "
                                   "of the closure network in the learned solve (default: the "
                                   "model's, float64 for a new one; float32 is ~1.3x faster and "
                                   "moves the result by ~1e-7).")
_FLUX = flags.DEFINE_enum("flux", None, list(NUMERICAL_FLUXES), "Numerical flux of "
                          "the learned and Euler solves, the one a new model is fine-tuned "
                          "through (default: the model's, lax_friedrichs for a new one; kinetic: "
                          "the Maxwellians' kinetic dissipation for mass, momentum and energy, "
                          "less diffusive).")
_JIT = flags.DEFINE_bool("jit_compile", False, "Run the kinetic, learned and Euler solves "
                         "as XLA programs (compiled on their first calls, timed apart; the "
                         "learned one 2-5x faster on 100 cells, the kinetic one 1-1.7x).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Kinetic data cache (default "
                                 "$MLCMK_CACHE_DIR/kinetic or ~/.cache/mlcmk/kinetic).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Load the trained model from here if "
                                 "present, else train and save it here.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/kinetic", "Where result.json, "
                                  "profiles.png and (after fine-tuning) training.png are "
                                  "written.")
_VERBOSE = flags.DEFINE_integer("verbose", 0, "Keras verbosity during training.")


def main(argv):
    del argv
    import os
    import sys

    import numpy as np

    from mlcmk import config
    from mlcmk.io import write_json
    from mlcmk.problems.kinetic import BGK1D
    from mlcmk.problems.kinetic.data import generate_kinetic_data, initial_state
    from mlcmk.training.moment_closure import (
        LearnedMomentModel,
        characteristic_summary,
        compare_models,
        parse_restarts,
        plot_comparison,
        plot_training,
        train_moment_model,
        training_report,
    )

    config.set_precision("float64")
    try:
        restarts = parse_restarts("finetune_restarts", _RESTARTS.value)
        problem = BGK1D(eps=_EPS.value, num_x=_NUM_X.value, v_max=_V_MAX.value,
                        num_v=_NUM_V.value)
        f0 = problem.maxwellian(*initial_state(problem, np.random.default_rng(_SEED.value),
                                               _INITIAL.value))
        model_dir = _MODEL_DIR.value
        info = {}
        if model_dir and os.path.exists(os.path.join(model_dir, "closure.keras")):
            model = LearnedMomentModel.load(model_dir)
            print(f"loaded the learned moment model from {model_dir}")
        else:
            data = generate_kinetic_data(num_runs=_TRAIN_RUNS.value, seed=_TRAIN_SEED.value,
                                         num_x=_NUM_X.value, v_max=_V_MAX.value,
                                         num_v=_NUM_V.value, t_end=_T_END.value,
                                         cache_dir=_CACHE_DIR.value)
            print(f"training data: {data['f'].shape[0]} runs ({data['path']})")
            model, info = train_moment_model(
                data, num_moments=_NUM_MOMENTS.value, autoencoder_epochs=_AE_EPOCHS.value,
                closure_epochs=_CLOSURE_EPOCHS.value, seed=_TRAIN_SEED.value,
                verbose=_VERBOSE.value, heat_flux_moment=_HEAT_FLUX.value,
                frozen_speed_factor=_FROZEN_SPEED.value, finetune_steps=_FINETUNE_STEPS.value,
                finetune_warmup_steps=_WARMUP_STEPS.value,
                finetune_restarts=restarts, finetune_rollback_factor=_ROLLBACK.value,
                finetune_every_snapshot=_EVERY_SNAPSHOT.value,
                finetune_loss_power=_LOSS_POWER.value,
                hyperbolicity_weight=_HYPERBOLICITY.value,
                flux=_FLUX.value or "lax_friedrichs")
            print("\n".join(training_report(info)))
            if model_dir:
                model.save(model_dir)
        if _CLOSURE_DTYPE.value:
            model.closure_dtype = _CLOSURE_DTYPE.value
        if _FLUX.value:
            model.flux = _FLUX.value
        result = compare_models(model, problem, f0, _T_END.value, jit_compile=_JIT.value)
        # Is the learned system hyperbolic at its final state, and does the solver's
        # wave-speed bound cover its characteristic speeds?
        characteristics = characteristic_summary(
            model.closure, *model.solve(f0, problem.eps, problem.dx, _T_END.value),
            problem.eps)
        characteristics["bound"] = float(model.wave_speed_factor(problem.eps, problem.dx))
    except (ValueError, TypeError) as err:
        print(f"mlcmk kinetic: error: {err}", file=sys.stderr)
        return 2
    out_dir = _OUTPUT_DIR.value
    os.makedirs(out_dir, exist_ok=True)
    plot_comparison(result, os.path.join(out_dir, "profiles.png"))
    written = ["result.json", "profiles.png"]
    training_png = os.path.join(out_dir, "training.png")
    if plot_training(info, training_png):
        written.append("training.png")
    elif os.path.exists(training_png):  # an earlier run's, not this model's (loaded)
        os.remove(training_png)
    summary = {
        "eps": problem.eps, "initial": _INITIAL.value, "seed": _SEED.value,
        "num_x": problem.num_x, "num_v": problem.num_v, "v_max": problem.v_max,
        "t_end": _T_END.value, "closure_dtype": model.closure_dtype, "flux": model.flux,
        "jit_compile": _JIT.value, "compile_s": result.get("compile_s"),
        "errors": result["errors"], "times_s": result["times_s"],
        "speedup_learned_vs_kinetic": result["times_s"]["kinetic"] / result["times_s"]["learned"],
        "training": info, "learned_characteristics": characteristics,
        "profiles": {name: {f: np.asarray(a).tolist() for f, a in
                            zip(("rho", "u", "T"), result[name], strict=True)}
                     for name in ("kinetic", "learned", "euler")},
        "x": np.asarray(result["x"]).tolist(),
    }
    write_json(os.path.join(out_dir, "result.json"), summary)
    print(format_result(summary))
    print(f"written            {', '.join(os.path.join(out_dir, n) for n in written)}")
    return 0


def format_result(r):
    lines = [f"BGK eps = {r['eps']:g}, {r['initial']} initial data (seed {r['seed']}), "
             f"{r['num_x']} cells x {r['num_v']} velocities, t = {r['t_end']:g}",
             "relative L2 error vs kinetic    rho        u          T        wall time"]
    lines.append(f"  kinetic (reference)                                      "
                 f"{r['times_s']['kinetic']:.3f} s")
    for name in ("learned", "euler"):
        e = r["errors"][name]
        lines.append(f"  {name:<29} {e['rho']:.3e}  {e['u']:.3e}  {e['T']:.3e}  "
                     f"{r['times_s'][name]:.3f} s")
    if r.get("jit_compile"):
        lines.append("all three solves compiled with XLA (compilation " + ", ".join(
            f"{name} {r['compile_s'][name]:.2f} s" for name in ("kinetic", "learned", "euler"))
            + "; not in the wall times)")
    lines.append(f"learned / kinetic speed-up: {r['speedup_learned_vs_kinetic']:.2f}x")
    c = r["learned_characteristics"]
    lines.append(f"learned system at t = {r['t_end']:g}: complex characteristic speeds in "
                 f"{100 * c['complex_fraction']:.1f}% of cells (not hyperbolic there); "
                 f"max |lambda - u| / sqrt(T) {c['max_speed_factor']:.2f}, solver bound "
                 f"{c['bound']:.2f}")
    if c["max_speed_factor"] > c["bound"]:
        lines.append("  warning: the Lax-Friedrichs bound is below the learned system's speeds "
                     "(raise --frozen_speed_factor, or fine-tune with --hyperbolicity_weight)")
    return "\n".join(lines)
