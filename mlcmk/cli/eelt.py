"""`mlcmk eelt free-energy`: concurrent learning (explore, examine, label, train) of a free energy.

    mlcmk eelt free-energy --system mueller_brown --output_dir runs/eelt

Prints one line per iteration (explored / accurate / candidate / failed / labelled counts and
the error against the exact free energy), writes `result.json`, `free_energy.png` and the
run's state (`run/`) to --output_dir. Rerunning the same command resumes a killed run.
"""

from absl import flags

DESCRIPTION = "Concurrent learning (EELT) of a free energy of collective variables."

ACTIONS = ("free-energy", "potential")
SYSTEMS = ("mueller_brown", "alanine_dipeptide")

_SYSTEM = flags.DEFINE_string("system", "mueller_brown", f"System, one of {SYSTEMS}.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/eelt", "Where the run is written.")
_MAX_ITERATIONS = flags.DEFINE_integer("max_iterations", 15, "Last iteration.", lower_bound=1)
_MIN_ITERATIONS = flags.DEFINE_integer("min_iterations", 4, "First iteration at which the "
                                       "convergence rule may stop the run.", lower_bound=1)
_LABELS = flags.DEFINE_integer("labels_per_iteration", 30, "Most labels per iteration.",
                               lower_bound=1)
_INITIAL = flags.DEFINE_integer("num_initial", 20, "Labels of iteration 0 (plain MD frames).",
                                lower_bound=1)
_LO = flags.DEFINE_float("lo", 2.0, "Trust level lo of the mean-force spread (kT / CV unit).")
_HI = flags.DEFINE_float("hi", float("inf"), "Trust level hi (spread above it: failed).")
_CONVERGE = flags.DEFINE_float("converge_fraction", 0.9, "Stop when this fraction of explored "
                               "configurations is accurate.")
_MEMBERS = flags.DEFINE_integer("num_members", 4, "Ensemble size.", lower_bound=2)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1000, "Optimizer steps per member and "
                                    "iteration.", lower_bound=1)
_KAPPA = flags.DEFINE_float("kappa", 1000.0, "Restraint spring constant (kT / CV unit^2).")
_MD_STEPS = flags.DEFINE_integer("md_steps", 2000, "Restrained MD production steps.",
                                 lower_bound=10)
_MD_WALKERS = flags.DEFINE_integer("md_walkers", 16, "Walkers per restrained MD.",
                                   lower_bound=1)
_NUM_BATH = flags.DEFINE_integer("num_bath", 20, "Bath modes of mueller_brown.", lower_bound=0)
_PRECISION = flags.DEFINE_enum("precision", "float64", ["float32", "float64"], "Float type.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the system, models, exploration and MD.")


def main(argv):
    import sys

    args = argv[1:]
    if len(args) != 1 or args[0] not in ACTIONS:
        print(f"mlcmk eelt: error: expected one action, one of {ACTIONS}; received {args}",
              file=sys.stderr)
        return 2
    if args[0] == "potential":
        print("mlcmk eelt: error: `eelt potential` (DP-GEN) needs the DeepPotential model, "
              "which this build does not have yet", file=sys.stderr)
        return 2
    if _SYSTEM.value not in SYSTEMS:
        print(f"mlcmk eelt: error: unknown --system={_SYSTEM.value!r}; expected one of "
              f"{SYSTEMS}", file=sys.stderr)
        return 2
    if _SYSTEM.value == "alanine_dipeptide":
        print("mlcmk eelt: error: --system=alanine_dipeptide needs OpenMM, which this build "
              "does not support yet; use --system=mueller_brown", file=sys.stderr)
        return 2

    import os
    import time

    from mlcmk import config
    from mlcmk.io import write_json
    from mlcmk.problems.free_energy import MuellerBrownBath
    from mlcmk.training.free_energy_learning import (
        build_free_energy_learner,
        free_energy_errors,
        plot_free_energy,
    )

    try:
        config.set_precision(_PRECISION.value)
        problem = MuellerBrownBath(num_bath=_NUM_BATH.value, seed=_SEED.value)
        md = {"kappa": _KAPPA.value, "num_walkers": _MD_WALKERS.value,
              "num_steps": _MD_STEPS.value, "num_burnin": max(_MD_STEPS.value // 10, 10)}
        start = time.perf_counter()
        learner, ensemble, labeller = build_free_energy_learner(
            problem, os.path.join(_OUTPUT_DIR.value, "run"), num_members=_MEMBERS.value,
            trust_levels=(_LO.value, _HI.value), max_iterations=_MAX_ITERATIONS.value,
            min_iterations=_MIN_ITERATIONS.value, max_labels_per_iteration=_LABELS.value,
            num_initial=_INITIAL.value, converge_fraction=_CONVERGE.value,
            train_steps=_TRAIN_STEPS.value, md_kwargs=md, seed=_SEED.value)
        print(f"mlcmk eelt free-energy: {problem!r}")
        log = learner.run()
    except (ValueError, TypeError) as err:
        print(f"mlcmk eelt: error: {err}", file=sys.stderr)
        return 2
    errors = free_energy_errors(problem, ensemble)
    result = {"system": _SYSTEM.value, "problem": problem.get_config(),
              "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
              "labels": log[-1]["total_labels"], "labelled_this_session": labeller.calls,
              "explored": int(sum(r["explored"] for r in log)),
              "a_rmse_kT": errors["a_rmse"], "force_rmse": errors["force_rmse"],
              "wall_time_s": time.perf_counter() - start, "seed": _SEED.value}
    write_json(os.path.join(_OUTPUT_DIR.value, "result.json"), result)
    plot_free_energy(problem, ensemble, learner.store.data().configurations,
                     os.path.join(_OUTPUT_DIR.value, "free_energy.png"))
    print(f"A RMS error {errors['a_rmse']:.3f} kT over A < 10 kT, {result['labels']} labels, "
          f"{result['iterations']} iterations, converged {result['converged']}; written "
          f"{_OUTPUT_DIR.value}")
    return 0
