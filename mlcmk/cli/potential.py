"""`mlcmk potential train|test|md`: Deep Potential from DeePMD npy data to molecular dynamics.

  mlcmk potential train --data DIR[,DIR...] [--test_data DIR] [--steps 2000]
  mlcmk potential train --emt al            (generate EMT-labelled Al data, cached, and train)
  mlcmk potential test --model runs/potential/model.keras --data DIR
  mlcmk potential md --model runs/potential/model.keras --element Al --repeat 3 --temperature 600
"""

from absl import flags

DESCRIPTION = "Deep Potential: train on DeePMD npy data (or EMT), test, run NVE MD with ASE."

_DATA = flags.DEFINE_list("data", None, "DeePMD systems or roots holding them (comma list).")
_TEST_DATA = flags.DEFINE_list("test_data", None, "Held-out systems for `train`.")
_EMT = flags.DEFINE_enum("emt", None, ["al", "alcu"], "Generate (cached) EMT-labelled data "
                         "instead of --data: FCC Al (32 atoms) or Al-Cu alloys.")
_EMT_FRAMES = flags.DEFINE_integer("emt_frames", 1000, "Training frames of --emt.", lower_bound=2)
_MODEL = flags.DEFINE_string("model", None, "Trained model (.keras) for `test` and `md`.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/potential", "Where model.keras, "
                                  "result.json and plots are written.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Frames per step.", lower_bound=1)
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Start learning rate.")
_STOP_LR = flags.DEFINE_float("stop_learning_rate", 1e-5, "Learning rate at the last step.")
_DECAY_STEPS = flags.DEFINE_integer("decay_steps", 100, "Steps between decays.", lower_bound=1)
_RCUT = flags.DEFINE_float("rcut", 6.0, "Cut-off radius (Å).")
_RCUT_SMTH = flags.DEFINE_float("rcut_smth", 0.5, "Start of the smooth switch (Å).")
_SEL = flags.DEFINE_list("sel", ["80"], "Neighbour capacity per type (one value: all types).")
_NEURON = flags.DEFINE_list("neuron", ["25", "50", "100"], "Embedding widths.")
_AXIS_NEURON = flags.DEFINE_integer("axis_neuron", 16, "Columns of G_<.", lower_bound=1)
_FITTING = flags.DEFINE_list("fitting_neuron", ["240", "240", "240"], "Fitting widths.")
_DESCRIPTOR = flags.DEFINE_enum("descriptor", "se_e2_a", ["se_e2_a", "raw_sorted"],
                                "Descriptor (raw_sorted: non-symmetric baseline).")
_PRECISION = flags.DEFINE_enum("precision", "float64", ["float32", "float64"], "Float type.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, batches and MD velocities.")
_ELEMENT = flags.DEFINE_string("element", "Al", "`md`: FCC element of the start structure.")
_LATTICE = flags.DEFINE_float("lattice", None, "`md`: FCC lattice constant (default ASE's).")
_REPEAT = flags.DEFINE_integer("repeat", 2, "`md`: conventional cells per axis.", lower_bound=1)
_STRUCTURE = flags.DEFINE_string("structure", None, "`md`: start structure file (ASE-readable) "
                                 "instead of --element.")
_MD_STEPS = flags.DEFINE_integer("md_steps", 1000, "`md`: velocity-Verlet steps.", lower_bound=1)
_TIMESTEP = flags.DEFINE_float("timestep_fs", 1.0, "`md`: time step (fs).")
_TEMPERATURE = flags.DEFINE_float("temperature", 300.0, "`md`: initial temperature (K).")
_MD_PRECISION = flags.DEFINE_enum("md_precision", None, ["float32", "float64"],
                                  "`md`: evaluate the model in this float type.")
_COMPRESS = flags.DEFINE_boolean("compress", False, "`md`: tabulate the embedding nets "
                                 "(DeepPotential.compressed).")
_SKIN = flags.DEFINE_float("skin", 0.5, "`md`: Verlet skin of the neighbour list (Å).",
                           lower_bound=0.0)
_VERBOSE = flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress lines.")

ACTIONS = ("train", "test", "md")


def _ints(name, values):
    try:
        return [int(v) for v in values]
    except ValueError as err:
        raise ValueError(f"--{name} must be a comma list of ints; received {values!r}") from err


def _data(paths, flag, type_map=None):
    from mlcmk.data import read_systems

    if not paths:
        raise ValueError(f"--{flag} is required: DeePMD system directories or roots")
    return read_systems(paths, type_map=type_map)


def _train():
    from mlcmk.data import emt, read_systems
    from mlcmk.training.potential_trainer import train_potential

    if _EMT.value:
        make = emt.al_dataset if _EMT.value == "al" else emt.alcu_dataset
        paths = make(n_train=_EMT_FRAMES.value, n_test=max(_EMT_FRAMES.value // 5, 2),
                     seed=_SEED.value)
        train = read_systems(paths.train)
        test = read_systems(paths.test, type_map=train[0].type_map)
        print(f"EMT data: {paths.train} (train), {paths.test} (test)")
    else:
        train = _data(_DATA.value, "data")
        test = _data(_TEST_DATA.value, "test_data", train[0].type_map) \
            if _TEST_DATA.value else None
    print(f"training systems: {len(train)}, frames {sum(len(s.energy) for s in train)}, "
          f"type_map {train[0].type_map}")
    kwargs = {"rcut": _RCUT.value, "rcut_smth": _RCUT_SMTH.value,
              "sel": _ints("sel", _SEL.value), "neuron": _ints("neuron", _NEURON.value),
              "axis_neuron": _AXIS_NEURON.value,
              "fitting_neuron": _ints("fitting_neuron", _FITTING.value),
              "descriptor": _DESCRIPTOR.value}
    if len(kwargs["sel"]) == 1:
        kwargs["sel"] = kwargs["sel"][0]
    _, result = train_potential(
        train, test, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
        learning_rate=_LR.value, stop_learning_rate=_STOP_LR.value,
        decay_steps=_DECAY_STEPS.value, model_kwargs=kwargs, precision=_PRECISION.value,
        seed=_SEED.value, output_dir=_OUTPUT_DIR.value, verbose=_VERBOSE.value)
    for part in ("train", "test"):
        if part in result:
            m = result[part]
            print(f"{part:5s} energy RMSE {1e3 * m['energy_rmse_per_atom']:.3f} meV/atom, "
                  f"force RMSE {1e3 * m['force_rmse']:.2f} meV/Å ({m['frames']} frames)")
    print(f"{result['ms_per_step']:.1f} ms/step; model {result['model_path']}")
    return 0


def _load_model():
    import keras

    import mlcmk  # noqa: F401  (registers the classes)

    if not _MODEL.value:
        raise ValueError("--model is required: a .keras file written by `mlcmk potential train`")
    from mlcmk import config

    config.set_precision(_PRECISION.value)
    return keras.saving.load_model(_MODEL.value)


def _test():
    import os

    from mlcmk.io import write_json
    from mlcmk.training.potential_trainer import error_metrics, plot_parity, predict_systems

    model = _load_model()
    systems = _data(_DATA.value, "data", model.type_map)
    predictions = predict_systems(model, systems)
    metrics = error_metrics(systems, predictions)
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    metrics["parity_png"] = os.path.join(_OUTPUT_DIR.value, "test_parity.png")
    plot_parity(systems, predictions, metrics["parity_png"])
    metrics["model"] = _MODEL.value
    write_json(os.path.join(_OUTPUT_DIR.value, "test.json"), metrics)
    print(f"energy RMSE {1e3 * metrics['energy_rmse_per_atom']:.3f} meV/atom, force RMSE "
          f"{1e3 * metrics['force_rmse']:.2f} meV/Å over {metrics['frames']} frames")
    print(f"wrote {os.path.join(_OUTPUT_DIR.value, 'test.json')} and {metrics['parity_png']}")
    return 0


def _md():
    import os
    import time

    import numpy as np

    from mlcmk.io import write_json
    from mlcmk.md import DeepPotentialCalculator, run_nve

    model = _load_model()
    if _STRUCTURE.value:
        from ase.io import read

        atoms = read(_STRUCTURE.value)
    else:
        from ase.build import bulk

        atoms = bulk(_ELEMENT.value, "fcc", a=_LATTICE.value, cubic=True).repeat(_REPEAT.value)
    calc = DeepPotentialCalculator(model, precision=_MD_PRECISION.value,
                                   compress=_COMPRESS.value, skin=_SKIN.value)
    every = max(1, _MD_STEPS.value // 20)

    def progress(step, a):
        if _VERBOSE.value:
            print(f"step {step:6d}  T {a.get_temperature():7.1f} K  "
                  f"E_tot {a.get_total_energy() / len(a):.6f} eV/atom")

    start = time.perf_counter()
    out = run_nve(atoms, calc, steps=_MD_STEPS.value, timestep_fs=_TIMESTEP.value,
                  temperature_K=_TEMPERATURE.value, seed=_SEED.value, interval=every,
                  callback=progress)
    seconds = time.perf_counter() - start
    result = {"natoms": len(atoms), "steps": _MD_STEPS.value, "timestep_fs": _TIMESTEP.value,
              "temperature_K": _TEMPERATURE.value, "seconds": seconds,
              "neighbor_list_builds": calc.neighbor_builds, "compress": _COMPRESS.value,
              "us_per_atom_per_step": 1e6 * seconds / (len(atoms) * _MD_STEPS.value),
              "drift_meV_per_atom_per_ps": out["drift_meV_per_atom_per_ps"],
              "final_temperature_K": float(out["temperature"][-1]),
              "total_energy_std_meV_per_atom": float(1e3 * np.std(out["total"]) / len(atoms))}
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    write_json(os.path.join(_OUTPUT_DIR.value, "md.json"), result)
    print(f"{len(atoms)} atoms, {_MD_STEPS.value} steps: drift "
          f"{result['drift_meV_per_atom_per_ps']:.4f} meV/atom/ps, "
          f"{result['us_per_atom_per_step']:.0f} us/atom/step")
    return 0


def main(argv):
    import sys

    action = argv[1] if len(argv) > 1 else None
    if action not in ACTIONS or len(argv) > 2:
        print(f"mlcmk potential: give one action of {', '.join(ACTIONS)}; received "
              f"{argv[1:]!r}", file=sys.stderr)
        return 2
    try:
        return {"train": _train, "test": _test, "md": _md}[action]()
    except (ValueError, TypeError, OSError) as err:
        print(f"mlcmk potential {action}: error: {err}", file=sys.stderr)
        return 2
