"""`mlcmk bsde`: solve a high-dimensional parabolic PDE with the Deep BSDE method."""

from absl import flags

DESCRIPTION = "Solve a registered PDE (default: 100-d HJB) with Deep BSDE; print and save u(0, x0)."

_CONFIG = flags.DEFINE_string("config", None, "JSON file of flag values; command line wins.")
_PROBLEM = flags.DEFINE_string("problem", "hjb_lq", "Registered BSDE problem (`mlcmk list`).")
_DIM = flags.DEFINE_integer("dim", None, "Space dimension d (default: the problem's).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", None, "Time steps N (default: the problem's).")
_TOTAL_TIME = flags.DEFINE_float("total_time", None, "Terminal time T (default: the problem's).")
_ITERATIONS = flags.DEFINE_integer("iterations", 4000, "Training iterations.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs the iterations are split into.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Paths per training step.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Initial Adam learning rate.")
_Z_NETWORK = flags.DEFINE_enum("z_network", "gradient", ["gradient", "shared", "per_step"],
                               "Parameterisation of Z (see DeepBSDE).")
_PRECISION = flags.DEFINE_enum("precision", "float64", ["float32", "float64"], "Float type.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, validation sample and paths.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/bsde", "Where result.json and "
                                  "training.png are written.")
_CHECKPOINT_DIR = flags.DEFINE_string("checkpoint_dir", None, "Resumable checkpoints here "
                                      "(rerun the same command to resume).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel with y0 and z(t, x).")
_Z_PATHS = flags.DEFINE_integer("z_error_paths", 64, "Validation paths for the Z check "
                                "(0: skip).", lower_bound=0)
_TOLERANCE = flags.DEFINE_float("tolerance", 2e-3, "Relative error of u(0, x0) against the "
                                "reference above which the command exits with status 1.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 bar, 2 lines.")


def main(argv):
    del argv
    from mlcmk.cli.common import apply_config_to_flags, load_json_config

    if _CONFIG.value:
        apply_config_to_flags(flags.FLAGS, load_json_config(_CONFIG.value))

    import sys

    from mlcmk.problems import get_problem_class
    from mlcmk.training.bsde_solver import solve

    try:
        cls = get_problem_class(_PROBLEM.value)
        if getattr(cls, "kind", None) != "bsde":
            raise ValueError(f"--problem={_PROBLEM.value!r} is a {cls.kind!r} problem, not a "
                             "BSDE problem; see `mlcmk list --kind bsde`")
        kwargs = {k: v for k, v in (("dim", _DIM.value), ("num_steps", _NUM_STEPS.value),
                                    ("total_time", _TOTAL_TIME.value)) if v is not None}
        problem = cls(**kwargs)
        print(f"mlcmk bsde: {problem!r}")
        reference = problem.reference_value()
        if reference is not None:
            print(f"reference u(0, x0) = {float(reference):.6g}"
                  + (f" ± {reference.stderr:.2g}" if reference.stderr else "")
                  + f" ({reference.source})")
        result, _ = solve(
            problem, iterations=_ITERATIONS.value, epochs=_EPOCHS.value,
            batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
            z_network=_Z_NETWORK.value, precision=_PRECISION.value, seed=_SEED.value,
            z_error_paths=_Z_PATHS.value, checkpoint_dir=_CHECKPOINT_DIR.value,
            export_dir=_EXPORT_DIR.value, output_dir=_OUTPUT_DIR.value,
            verbose=_VERBOSE.value)
    except (ValueError, TypeError) as err:
        print(f"mlcmk bsde: error: {err}", file=sys.stderr)
        return 2
    print(format_result(result))
    if result["stopped_non_finite"]:
        return 1
    if result["relative_error"] is not None:
        ok = result["relative_error"] <= _TOLERANCE.value
        print(f"check              relative error {100 * result['relative_error']:.3f} % "
              f"{'<=' if ok else '>'} {100 * _TOLERANCE.value:.3g} %: {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    return 0


def format_result(r):
    lines = [f"problem            {r['problem']} (d = {r['dim']}, {r['precision']}, "
             f"{r['z_network']} Z network)"]
    if r["y0"] is not None:
        lines.append(f"y0 = u(0, x0)      {r['y0']:.6g}")
    if r["reference"] is not None:
        lines.append(f"reference          {r['reference']:.6g} ({r['reference_source']})")
        lines.append(f"relative error     {100 * r['relative_error']:.3f} %")
    lines.append(f"validation loss    {r['final_loss']:.4g}  (trivial Z = 0 solution: "
                 f"{r['trivial_loss']:.4g}, ratio {r['loss_ratio']:.3f})")
    if r["z_relative_error"] is not None:
        lines.append(f"Z vs exact         worst relative L2 {r['z_relative_error']:.3f}, "
                     f"worst mean cosine {r['z_cosine']:.3f} (steps 1..N-1)")
    lines.append(f"time               {r['wall_time_s']:.1f} s, {r['ms_per_iteration']:.2f} ms "
                 f"per iteration, {r['iterations']} iterations")
    if r.get("output_dir"):
        lines.append(f"written            {r['output_dir']}")
    return "\n".join(lines)
