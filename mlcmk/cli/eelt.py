"""`mlcmk eelt`: concurrent learning (explore, examine, label, train).

    mlcmk eelt free-energy --system mueller_brown --output_dir runs/eelt
    mlcmk eelt free-energy --explorer reinforced --output_dir runs/eelt_rid
    mlcmk eelt free-energy --system alanine_dipeptide --output_dir runs/eelt_ala2
    mlcmk eelt potential --structure fcc_al --output_dir runs/eelt_al

Prints one line per iteration (explored / accurate / candidate / failed / labelled counts and
the error against the exact free energy, or the force RMSE of the ensemble mean on held-out
EMT frames), writes `result.json`, a plot (`free_energy.png`) and the run's state (`run/`) to
--output_dir. Rerunning the same command resumes a killed run.

`eelt potential` is DP-GEN for one structure: an ensemble of Deep Potentials, Langevin MD with
member 0 over a temperature ladder in strained boxes, EMT labels of the candidates (force
deviation between --lo and --hi, default 0.05 and 0.15 eV/Å). With several structures

    mlcmk eelt potential --structures all --output_dir runs/eelt_all
    mlcmk eelt potential --structures fcc_al,hcp_al,b2_alcu --output_dir runs/eelt_3

one ensemble (types Al, Cu) is shared by all and trained on the union of their labels; each
iteration explores every structure, and prints the per-structure table (explored / accurate /
candidate / failed / labelled, test force RMSE on held-out EMT MD frames of each structure);
`result.json` holds it per iteration with totals, `figure2.png` plots it.

`--system alanine_dipeptide` (needs the `openmm` extra) learns A(phi, psi) of alanine dipeptide
(Amber ff99SB, vacuum or --solvent obc2, 300 K) from restrained OpenMM MD; energies in kJ/mol,
angles in rad (--kappa in kJ/mol/rad^2, --lo / --hi in kJ/mol/rad; defaults 500, 5, inf, and
--md_steps 10000). Its reference surface (umbrella sampling on a --reference_windows^2 grid +
WHAM) is computed first and cached under $MLCMK_CACHE_DIR/free_energy (or
~/.cache/mlcmk/free_energy); errors are over the region within 20 kJ/mol of its minimum.
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
_STRUCTURE = flags.DEFINE_string("structure", "fcc_al", "`eelt potential`: structure, one of "
                                 "fcc_al, fcc_cu, bcc_al, hcp_al, fcc111_al, fcc100_al, "
                                 "l12_cu3al, b2_alcu; 'all' or a comma-separated list: one "
                                 "ensemble for several structures (as --structures).")
_STRUCTURES = flags.DEFINE_string("structures", None, "`eelt potential`: comma-separated "
                                  "structures sharing one ensemble, or 'all' (Al fcc, bcc, hcp, "
                                  "fcc(111) and (100) slabs, L1_2 Cu3Al, B2 AlCu).")
_LABELS_PER_STRUCTURE = flags.DEFINE_integer(
    "labels_per_structure", 10, "`eelt potential` with several structures: most labels per "
    "structure and iteration.", lower_bound=1)
_INITIAL_PER_STRUCTURE = flags.DEFINE_integer(
    "initial_per_structure", 5, "`eelt potential` with several structures: labelled frames of "
    "iteration 0 per structure.", lower_bound=1)
_MODEL = flags.DEFINE_enum("model", "small", ["tiny", "small", "anchor"], "`eelt potential`: "
                           "Deep Potential size (anchor: the DeePMD-kit comparison's).")
_TRAJECTORIES = flags.DEFINE_integer("trajectories", 4, "`eelt potential`: MD trajectories per "
                                     "iteration.", lower_bound=1)
_SAMPLE_EVERY = flags.DEFINE_integer("sample_every", 10, "`eelt potential`: MD steps between "
                                     "explored frames.", lower_bound=1)
_MD_DRIVER = flags.DEFINE_enum("md_driver", "first", ["first", "mean"], "`eelt potential`: the "
                               "model driving the exploration MD: member 0 (DP-GEN) or the "
                               "ensemble mean.")
_RAMP = flags.DEFINE_boolean("ramp", False, "`eelt potential`: iteration k explores only the "
                             "first k temperatures of the ladder (300, 600, 900, 1200 K).")
_TEST_FRAMES = flags.DEFINE_integer("test_frames", 50, "`eelt potential`: held-out EMT frames "
                                    "for the force RMSE (0: none).", lower_bound=0)

MODELS = {
    "tiny": dict(rcut=4.5, rcut_smth=0.5, sel=48, neuron=(4, 8), axis_neuron=2,
                 fitting_neuron=(8, 8)),
    "small": dict(rcut=6.0, rcut_smth=0.5, sel=80, neuron=(8, 16, 32), axis_neuron=4,
                  fitting_neuron=(32, 32, 32)),
    "anchor": dict(rcut=6.0, rcut_smth=0.5, sel=80, neuron=(25, 50, 100), axis_neuron=16,
                   fitting_neuron=(240, 240, 240)),
}


def _potential_main():
    """`mlcmk eelt potential`."""
    import os
    import sys
    import time

    from mlcmk import config
    from mlcmk.io import write_json
    from mlcmk.training.potential_learning import STRUCTURES, build_potential_learner

    if _STRUCTURES.value is not None or _STRUCTURE.value == "all" or "," in _STRUCTURE.value:
        return _multi_potential_main()
    if _STRUCTURE.value not in STRUCTURES:
        print(f"mlcmk eelt: error: unknown --structure={_STRUCTURE.value!r}; expected one of "
              f"{sorted(STRUCTURES)}", file=sys.stderr)
        return 2
    lo = _LO.value if _LO.present else 0.05
    hi = _HI.value if _HI.present else 0.15
    md_steps = _MD_STEPS.value if _MD_STEPS.present else 200
    train_steps = _TRAIN_STEPS.value if _TRAIN_STEPS.present else 500
    try:
        config.set_precision(_PRECISION.value)
        test_systems = None
        kind, *args = STRUCTURES[_STRUCTURE.value][1]
        if _TEST_FRAMES.value and _STRUCTURE.value in ("fcc_al", "fcc_cu"):
            from mlcmk.data import emt, read_systems

            element, _, _, repeats = args
            # The held-out frames of `al_dataset` (same generator parameters, other seed and
            # temperatures than any training set), for this element.
            path = emt.generate_dataset(
                elements=(element,), sizes=(repeats,), n_frames=_TEST_FRAMES.value,
                seed=_SEED.value + 10_000, temperatures=(450.0, 750.0, 1050.0))
            test_systems = read_systems(path)
        elif _TEST_FRAMES.value:
            from mlcmk.training.multi_potential_learning import emt_md_frames

            # Held-out EMT MD frames (other temperatures and seed than the exploration's).
            test_systems = [emt_md_frames(_STRUCTURE.value, _TEST_FRAMES.value,
                                          temperatures=(450.0, 750.0, 1050.0),
                                          seed=_SEED.value + 10_000)]
        start = time.perf_counter()
        learner, ensemble, labeller = build_potential_learner(
            _STRUCTURE.value, os.path.join(_OUTPUT_DIR.value, "run"),
            num_members=_MEMBERS.value, model_kwargs=MODELS[_MODEL.value],
            trust_levels=(lo, hi), max_iterations=_MAX_ITERATIONS.value,
            min_iterations=_MIN_ITERATIONS.value,
            max_labels_per_iteration=_LABELS.value, num_initial=_INITIAL.value,
            converge_fraction=_CONVERGE.value, num_trajectories=_TRAJECTORIES.value,
            md_steps=md_steps, sample_every=_SAMPLE_EVERY.value, driver=_MD_DRIVER.value,
            ramp=_RAMP.value, train_steps=train_steps, test_systems=test_systems,
            seed=_SEED.value)
        print(f"mlcmk eelt potential: {_STRUCTURE.value}, {_MEMBERS.value} members "
              f"({_MODEL.value}), trust levels {lo:g} / {hi:g} eV/Å")
        log = learner.run()
    except (ValueError, TypeError) as err:
        print(f"mlcmk eelt: error: {err}", file=sys.stderr)
        return 2
    result = {"structure": _STRUCTURE.value, "model": _MODEL.value,
              "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
              "labels": log[-1]["total_labels"], "labelled_this_session": labeller.calls,
              "explored": int(sum(r["explored"] for r in log if r["iteration"] > 0)),
              "table": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                           "failed", "labelled", "total_labels")}
                        | r["evaluation"] for r in log],
              "wall_time_s": time.perf_counter() - start, "seed": _SEED.value,
              "trust_levels": [lo, hi], "md_driver": _MD_DRIVER.value, "ramp": _RAMP.value}
    write_json(os.path.join(_OUTPUT_DIR.value, "result.json"), result)
    print(f"{result['labels']} labels for {result['explored']} explored configurations, "
          f"{result['iterations']} iterations, converged {result['converged']}; written "
          f"{_OUTPUT_DIR.value}")
    return 0


_EXPLORER = flags.DEFINE_enum("explorer", "mcmc", ["mcmc", "reinforced"], "`eelt free-energy`: "
                              "MCMC on exp(-A/kT) of the ensemble mean, or reinforced dynamics "
                              "(MD biased by the ensemble-mean A where its spread is below lo).")


def _multi_potential_main():
    """`mlcmk eelt potential --structures ...`: one ensemble for several structures."""
    import os
    import sys
    import time

    from mlcmk import config
    from mlcmk.io import write_json
    from mlcmk.training.multi_potential_learning import (
        StructureSet,
        build_multi_potential_learner,
        emt_md_frames,
        plot_structure_table,
        structure_table,
    )

    lo = _LO.value if _LO.present else 0.05
    hi = _HI.value if _HI.present else 0.15
    md_steps = _MD_STEPS.value if _MD_STEPS.present else 100
    train_steps = _TRAIN_STEPS.value if _TRAIN_STEPS.present else 500
    requested = _STRUCTURES.value if _STRUCTURES.value is not None else _STRUCTURE.value
    try:
        config.set_precision(_PRECISION.value)
        structure_set = StructureSet(requested)
        names = structure_set.names
        test_systems = None
        if _TEST_FRAMES.value:
            # Held-out EMT MD frames per structure (other temperatures and seeds than the
            # exploration's).
            test_systems = {name: emt_md_frames(
                name, _TEST_FRAMES.value, temperatures=(450.0, 750.0, 1050.0),
                type_map=structure_set.type_map, seed=_SEED.value + 10_000 + s)
                for s, name in enumerate(names)}
        start = time.perf_counter()
        learner, ensemble, labeller = build_multi_potential_learner(
            names, os.path.join(_OUTPUT_DIR.value, "run"), num_members=_MEMBERS.value,
            model_kwargs=MODELS[_MODEL.value], trust_levels=(lo, hi),
            max_iterations=_MAX_ITERATIONS.value, min_iterations=_MIN_ITERATIONS.value,
            labels_per_structure=_LABELS_PER_STRUCTURE.value,
            num_initial_per_structure=_INITIAL_PER_STRUCTURE.value,
            converge_fraction=_CONVERGE.value, num_trajectories=_TRAJECTORIES.value,
            md_steps=md_steps, sample_every=_SAMPLE_EVERY.value, driver=_MD_DRIVER.value,
            ramp=_RAMP.value, train_steps=train_steps, test_systems=test_systems,
            seed=_SEED.value)
        print(f"mlcmk eelt potential: {len(names)} structures ({', '.join(names)}), one "
              f"ensemble of {_MEMBERS.value} ({_MODEL.value}, types "
              f"{structure_set.type_map}), trust levels {lo:g} / {hi:g} eV/Å", flush=True)
        log = learner.run()
    except (ValueError, TypeError) as err:
        print(f"mlcmk eelt: error: {err}", file=sys.stderr)
        return 2
    rows, totals = structure_table(log, structure_set)
    result = {"structures": names, "type_map": structure_set.type_map, "model": _MODEL.value,
              "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
              "labels": log[-1]["total_labels"], "labelled_this_session": labeller.calls,
              "explored": int(sum(r["explored"] for r in log if r["iteration"] > 0)),
              "table": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                           "failed", "labelled", "total_labels")}
                        | {k: v for k, v in r["evaluation"].items() if k != "structures"}
                        for r in log],
              "structure_table": rows, "totals": totals,
              "wall_time_s": time.perf_counter() - start, "seed": _SEED.value,
              "trust_levels": [lo, hi], "md_driver": _MD_DRIVER.value, "ramp": _RAMP.value}
    write_json(os.path.join(_OUTPUT_DIR.value, "result.json"), result)
    plot = plot_structure_table(log, structure_set,
                                os.path.join(_OUTPUT_DIR.value, "figure2.png"))
    print(f"\n{'structure':<11} {'explored':>8} {'labels':>6} {'test F RMSE (meV/Å)':>20}")
    for name in names:
        t = totals[name]
        rmse = f"{1e3 * t['test_force_rmse']:.1f}" if "test_force_rmse" in t else "-"
        print(f"{name:<11} {t['explored']:8d} {t['total_labels']:6d} {rmse:>20}")
    print(f"{result['labels']} labels for {result['explored']} explored configurations, "
          f"{result['iterations']} iterations, converged {result['converged']}; written "
          f"{_OUTPUT_DIR.value} ({os.path.basename(plot)})")
    return 0


def main(argv):
    import sys

    args = argv[1:]
    if len(args) != 1 or args[0] not in ACTIONS:
        print(f"mlcmk eelt: error: expected one action, one of {ACTIONS}; received {args}",
              file=sys.stderr)
        return 2
    if args[0] == "potential":
        return _potential_main()
    if _SYSTEM.value not in SYSTEMS:
        print(f"mlcmk eelt: error: unknown --system={_SYSTEM.value!r}; expected one of "
              f"{SYSTEMS}", file=sys.stderr)
        return 2
    if _SYSTEM.value == "alanine_dipeptide":
        return _alanine_main()

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
            train_steps=_TRAIN_STEPS.value, md_kwargs=md, seed=_SEED.value,
            explorer=_EXPLORER.value)
        print(f"mlcmk eelt free-energy: {problem!r}, {_EXPLORER.value} explorer")
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
              "wall_time_s": time.perf_counter() - start, "seed": _SEED.value,
              "explorer": _EXPLORER.value}
    write_json(os.path.join(_OUTPUT_DIR.value, "result.json"), result)
    plot_free_energy(problem, ensemble, learner.store.data().configurations,
                     os.path.join(_OUTPUT_DIR.value, "free_energy.png"))
    print(f"A RMS error {errors['a_rmse']:.3f} kT over A < 10 kT, {result['labels']} labels, "
          f"{result['iterations']} iterations, converged {result['converged']}; written "
          f"{_OUTPUT_DIR.value}")
    return 0


# `--system alanine_dipeptide` only.
_SOLVENT = flags.DEFINE_enum("solvent", "vacuum", ["vacuum", "obc2"], "alanine_dipeptide: "
                             "vacuum or OBC2 implicit solvent.")
_REF_WINDOWS = flags.DEFINE_integer("reference_windows", 24, "alanine_dipeptide: umbrella "
                                    "windows per dihedral of the reference.", lower_bound=2)
_REF_STEPS = flags.DEFINE_integer("reference_steps", 10000, "alanine_dipeptide: MD steps per "
                                  "umbrella window of the reference.", lower_bound=10)
_REF_BINS = flags.DEFINE_integer("reference_bins", 60, "alanine_dipeptide: WHAM bins per "
                                 "dihedral (the grid of the reported errors).", lower_bound=4)
_THRESHOLD = flags.DEFINE_float("threshold", 20.0, "alanine_dipeptide: errors over reference "
                                "A < threshold (kJ/mol).")


def _alanine_main():
    """`mlcmk eelt free-energy --system alanine_dipeptide`."""
    import os
    import sys
    import time

    import numpy as np

    from mlcmk import config
    from mlcmk.io import write_json
    from mlcmk.training.free_energy_learning import build_free_energy_learner

    try:
        import openmm  # noqa: F401
    except ImportError:
        print("mlcmk eelt: error: --system=alanine_dipeptide needs OpenMM; "
              'pip install "mlcmk[openmm]"', file=sys.stderr)
        return 2
    from mlcmk.problems.free_energy.alanine_dipeptide import (
        AlanineDipeptide,
        compare_surfaces,
        plot_free_energy_surface,
    )

    kappa = _KAPPA.value if _KAPPA.present else 500.0
    lo = _LO.value if _LO.present else 5.0
    hi = _HI.value
    md_steps = _MD_STEPS.value if _MD_STEPS.present else 10000
    try:
        config.set_precision(_PRECISION.value)
        if not lo <= hi:
            raise ValueError(f"trust levels must satisfy lo <= hi; received --lo={lo} "
                             f"--hi={hi}")
        problem = AlanineDipeptide(solvent=_SOLVENT.value)
        print(f"mlcmk eelt free-energy: {problem!r}; {problem.steps_per_second():.0f} MD "
              f"steps/s", flush=True)
        ref_steps = _REF_STEPS.value
        reference = problem.load_reference(
            num_windows=_REF_WINDOWS.value, kappa=200.0, num_steps=ref_steps,
            num_burnin=max(ref_steps // 20, 10), sample_every=min(20, ref_steps // 10),
            num_bins=_REF_BINS.value, seed=_SEED.value, verbose=1)
        print(f"reference: {_REF_WINDOWS.value}^2 umbrella windows x {ref_steps} steps + WHAM, "
              f"{reference['wall_time_s']:.0f} s (cached in {reference['path']})", flush=True)
        md = {"kappa": kappa, "num_steps": md_steps, "num_burnin": max(md_steps // 10, 10),
              "sample_every": min(10, md_steps // 10), "num_blocks": 10}
        start = time.perf_counter()
        learner, ensemble, labeller = build_free_energy_learner(
            problem, os.path.join(_OUTPUT_DIR.value, "run"), num_members=_MEMBERS.value,
            trust_levels=(lo, hi), max_iterations=_MAX_ITERATIONS.value,
            min_iterations=_MIN_ITERATIONS.value, max_labels_per_iteration=_LABELS.value,
            num_initial=_INITIAL.value, converge_fraction=_CONVERGE.value,
            train_steps=_TRAIN_STEPS.value, md_kwargs=md, threshold=_THRESHOLD.value,
            seed=_SEED.value)
        log = learner.run()
    except (ValueError, TypeError) as err:
        print(f"mlcmk eelt: error: {err}", file=sys.stderr)
        return 2
    grid = problem.grid(_REF_BINS.value).reshape(-1, 2)
    learned = np.mean([np.asarray(m(grid))[:, 0] for m in ensemble.members], axis=0)
    ref = reference["free_energy"]
    errors = compare_surfaces(ref, learned.reshape(ref.shape), threshold=_THRESHOLD.value)
    result = {"system": _SYSTEM.value, "problem": problem.get_config(),
              "energy_unit": "kJ/mol", "kT": problem.kT,
              "iterations": log[-1]["iteration"], "converged": log[-1]["converged"],
              "labels": log[-1]["total_labels"], "labelled_this_session": labeller.calls,
              "explored": int(sum(r["explored"] for r in log)),
              "a_rmse_kj_mol": errors["a_rmse"], "a_max_error_kj_mol": errors["a_max_error"],
              "threshold_kj_mol": _THRESHOLD.value, "basins": errors["basins"],
              "table": [{k: r[k] for k in ("iteration", "explored", "accurate", "candidate",
                                           "failed", "labelled", "total_labels")}
                        | r["evaluation"] for r in log],
              "reference": {"windows": _REF_WINDOWS.value, "steps": ref_steps,
                            "bins": _REF_BINS.value, "wall_time_s": reference["wall_time_s"]},
              "trust_levels": [lo, hi], "kappa": kappa, "md_steps": md_steps,
              "wall_time_s": time.perf_counter() - start, "seed": _SEED.value}
    write_json(os.path.join(_OUTPUT_DIR.value, "result.json"), result)
    plot_free_energy_surface(ref, learned.reshape(ref.shape),
                             os.path.join(_OUTPUT_DIR.value, "free_energy.png"),
                             labels=learner.store.data().configurations,
                             threshold=_THRESHOLD.value)
    found = sum(b["found"] for b in errors["basins"])
    print(f"A RMS error {errors['a_rmse']:.2f} kJ/mol over A < {_THRESHOLD.value:g} kJ/mol, "
          f"{found}/{len(errors['basins'])} basins found, {result['labels']} labels, "
          f"{result['iterations']} iterations, converged {result['converged']}; written "
          f"{_OUTPUT_DIR.value}")
    return 0
