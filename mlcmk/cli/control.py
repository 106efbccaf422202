"""`mlcmk control`: learn feedback controls of a stochastic control problem (Han and E, 2016)."""

from absl import flags

DESCRIPTION = ("Learn a feedback policy for a registered control problem (default: energy "
               "storage); compare it with exact, LP-bound and rule-based references.")

_CONFIG = flags.DEFINE_string("config", None, "JSON file of flag values; command line wins.")
_PROBLEM = flags.DEFINE_string("problem", "energy_storage",
                               "Registered control problem (`mlcmk list --kind control`).")
_DEVICES = flags.DEFINE_integer("devices", None, "energy_storage: number of storage devices n.",
                                lower_bound=1)
_DIM = flags.DEFINE_integer("dim", None, "lq_regulator: state dimension; merton_portfolio: "
                            "number of assets.", lower_bound=1)
_NUM_STEPS = flags.DEFINE_integer("num_steps", None, "Decisions T (default: the problem's).")
_ITERATIONS = flags.DEFINE_integer("iterations", 2000, "Training iterations.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs the iterations are split into.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Paths per training step.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-2, "Initial Adam learning rate.")
_POLICY = flags.DEFINE_enum("policy_network", "per_step", ["per_step", "shared"],
                            "One subnetwork per step, or one network with t as input.")
_PRECISION = flags.DEFINE_enum("precision", "float64", ["float32", "float64"], "Float type.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, validation sample and noise.")
_EVAL_PATHS = flags.DEFINE_integer("eval_paths", 64, "Evaluation paths (one LP each for "
                                   "energy_storage).", lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/control", "Where result.json and "
                                  "control.png are written.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel with policy(t, s).")
_XLA = flags.DEFINE_bool("xla", True, "Compile the training step with XLA (faster steps, slower "
                         "start); --noxla for short runs.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 bar, 2 lines.")


def _problem_kwargs(name):
    kwargs = {}
    if _NUM_STEPS.value is not None:
        kwargs["num_steps"] = _NUM_STEPS.value
    if _DEVICES.value is not None:
        if name != "energy_storage":
            raise ValueError(f"--devices applies to energy_storage only; received "
                             f"--problem={name}")
        kwargs["num_devices"] = _DEVICES.value
    if _DIM.value is not None:
        if name == "lq_regulator":
            kwargs["dim"] = _DIM.value
        elif name == "merton_portfolio":
            kwargs["num_assets"] = _DIM.value
        else:
            raise ValueError(f"--dim applies to lq_regulator and merton_portfolio; received "
                             f"--problem={name}")
    return kwargs


def main(argv):
    del argv
    import sys

    from mlcmk.cli.common import apply_config_to_flags, load_json_config

    try:
        if _CONFIG.value:
            apply_config_to_flags(flags.FLAGS, load_json_config(_CONFIG.value))
        from mlcmk.problems import get_problem_class
        from mlcmk.training.control_solver import solve_control

        cls = get_problem_class(_PROBLEM.value)
        if getattr(cls, "kind", None) != "control":
            raise ValueError(f"--problem={_PROBLEM.value!r} is a {cls.kind!r} problem, not a "
                             "control problem; see `mlcmk list --kind control`")
        problem = cls(**_problem_kwargs(cls.name))
        print(f"mlcmk control: {problem!r}")
        result, _ = solve_control(
            problem, iterations=_ITERATIONS.value, epochs=_EPOCHS.value,
            batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
            policy_network=_POLICY.value, precision=_PRECISION.value, seed=_SEED.value,
            eval_paths=_EVAL_PATHS.value, jit_compile=_XLA.value, export_dir=_EXPORT_DIR.value,
            output_dir=_OUTPUT_DIR.value, verbose=_VERBOSE.value)
    except (ValueError, TypeError) as err:
        print(f"mlcmk control: error: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    return 1 if result["stopped_non_finite"] else 0


def format_result(r):
    lines = [f"problem            {r['problem']} (state dim {r['state_dim']}, control dim "
             f"{r['control_dim']}, T = {r['num_steps']}, {r['precision']})",
             f"learned cost       {r['learned_cost']:.6g} ± {r['learned_cost_stderr']:.2g} "
             f"({r['eval_paths']} evaluation paths)"]
    if r.get("reference_cost") is not None:
        lines.append(f"exact optimum      {r['reference_cost']:.6g} ({r['reference_source']})")
    if r.get("excess_cost") is not None:
        lines.append(f"excess over exact  {r['excess_cost']:.4g} ± {r['excess_cost_stderr']:.2g}"
                     " (same paths)")
    if r.get("lp_bound_reward") is not None:
        lines += [f"reward             learned {r['learned_reward']:.4f}, rule-based "
                  f"{r['rule_based_reward']:.4f}, perfect-foresight LP bound "
                  f"{r['lp_bound_reward']:.4f}",
                  f"relative reward    learned {r['relative_reward']:.4f}, rule-based "
                  f"{r['rule_relative_reward']:.4f} (bound holds on every path: "
                  f"{r['bound_holds']})"]
    lines.append(f"time               {r['wall_time_s']:.1f} s, {r['ms_per_iteration']:.2f} ms "
                 f"per iteration, {r['iterations']} iterations")
    if r.get("output_dir"):
        lines.append(f"written            {r['output_dir']}")
    return "\n".join(lines)
