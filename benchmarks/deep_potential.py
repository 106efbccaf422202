"""Deep Potential benchmark against the DeePMD-kit figures of `../shared/ANCHORS.md`.

EMT-labelled FCC Al (32 atoms; 1000 training frames at 300-1200 K, 200 held-out frames from other
seeds at 450-1050 K) and Al-Cu alloys (FCC/L1_2/B2, vacancies; 16-32 atoms), DeePMD-kit's model
(se_e2_a, rcut 6, rcut_smth 0.5, sel 80, embedding [25, 50, 100], axis 16, fitting [240]*3
resnet_dt; Adam 1e-3 -> 1e-5, decay_steps 100, batch 1, prefactors 0.02 -> 1 and 1000 -> 1),
float64. Measures

- held-out energy / force RMSE after a fixed step budget (default 2000, one seed),
- training ms per step (median over logging intervals after the first, which holds tracing and
  XLA compilation; neighbour lists computed once per frame, XLA-compiled steps),
- the same budget with a non-symmetric descriptor (raw sorted neighbour coordinates; seed fig. 3),
- MD speed in us per atom per velocity-Verlet step for 32, 256, 864 atoms (float64, float32,
  float32 with the tabulated embedding, and float32 without Verlet skin and XLA), with ASE's EMT
  measured in the same run,
- NVE energy drift (velocity Verlet, 32 atoms, 2 fs steps) with the trained model over 2 ps by
  default: the 10 ps of the issue take ~4x longer here (--nve_ps 10).

Writes `benchmarks/results/deep_potential.json`. Default run ~10 min on 2 contended cores once the
data are cached (generating them adds ~2 min for Al and ~3 min for Al-Cu, once).

    python benchmarks/deep_potential.py
    python benchmarks/deep_potential.py --steps 500 --skip_alcu --nve_ps 1     # quick look
    python benchmarks/deep_potential.py --nve_only --nve_ps 10                  # adds nve_10ps
    python benchmarks/deep_potential.py --md_only                               # MD speed, NVE
"""

import argparse
import json
import os
import time

import numpy as np
from machine import machine_load  # benchmarks/machine.py

from mlcmk import config
from mlcmk.data import emt, read_systems, thermalize
from mlcmk.io import write_json
from mlcmk.training.potential_trainer import plot_parity, predict_systems, train_potential

MODEL = dict(rcut=6.0, rcut_smth=0.5, sel=80, neuron=[25, 50, 100], axis_neuron=16,
             fitting_neuron=[240, 240, 240], resnet_dt=True)


def train(name, train_sys, test_sys, steps, seed, descriptor="se_e2_a", out_dir=None):
    print(f"\n== {name}: {steps} steps, descriptor {descriptor}")
    model, result = train_potential(
        train_sys, test_sys, steps=steps, batch_size=1, learning_rate=1e-3,
        stop_learning_rate=1e-5, decay_steps=100, seed=seed,
        model_kwargs={**MODEL, "descriptor": descriptor}, log_every=max(steps // 20, 1),
        printer=lambda line: print("  " + line, flush=True))
    test = result["test"]
    print(f"  held-out: energy {1e3 * test['energy_rmse_per_atom']:.2f} meV/atom, force "
          f"{1e3 * test['force_rmse']:.1f} meV/Å; {result['ms_per_step_steady']:.1f} ms/step "
          f"after the first epoch ({result['first_epoch_seconds']:.0f} s: tracing, XLA)")
    if out_dir:
        plot_parity(test_sys, predict_systems(model, test_sys),
                    os.path.join(out_dir, f"deep_potential_{name}_parity.png"), name)
    summary = {"steps": result["steps"], "seed": seed, "descriptor": descriptor,
               "ms_per_step": result["ms_per_step"], "train_seconds": result["train_seconds"],
               "ms_per_step_steady": result["ms_per_step_steady"],
               "first_epoch_seconds": result["first_epoch_seconds"],
               "test_energy_rmse_meV_per_atom": 1e3 * test["energy_rmse_per_atom"],
               "test_force_rmse_meV_per_A": 1e3 * test["force_rmse"],
               "train_energy_rmse_meV_per_atom": 1e3 * result["train"]["energy_rmse_per_atom"],
               "train_force_rmse_meV_per_A": 1e3 * result["train"]["force_rmse"],
               "test_frames": test["frames"]}
    return model, summary


MD_VARIANTS = {  # name -> DeepPotentialCalculator options
    "deep_potential_float64": {},
    "deep_potential_float32": {"precision": "float32"},
    "deep_potential_float32_compressed": {"precision": "float32", "compress": True},
    "deep_potential_float32_plain": {"precision": "float32", "skin": 0.0, "jit_compile": False},
}


def md_speed(model, repeats=(2, 4, 6), steps=(10, 4, 2), rounds=7):
    """Wall time per atom and MD step (velocity Verlet, 2 fs, 600 K) for the model and for EMT.

    All variants run side by side: `rounds` rounds of `steps` MD steps each, in turn, so that a
    change of load on a shared machine hits them alike; medians over the rounds of the time and
    of the per-round ratio to EMT. Default calculator: Verlet skin 0.5 Å and XLA; `_plain` is
    neither (the neighbour list is rebuilt every step and the graph runs without XLA).
    """
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.verlet import VelocityVerlet

    from mlcmk.md import DeepPotentialCalculator

    out = {}
    for rep, n in zip(repeats, steps, strict=True):
        dyns = {}
        for name in ("emt", *MD_VARIANTS):
            atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(rep)
            thermalize(atoms, 600.0, np.random.default_rng(rep))
            atoms.calc = EMT() if name == "emt" else DeepPotentialCalculator(
                model, **MD_VARIANTS[name])
            dyns[name] = VelocityVerlet(atoms, timestep=2.0 * units.fs)
            dyns[name].run(3)  # warm-up: tracing and XLA compilation
        natoms = len(atoms)
        times = {name: [] for name in dyns}
        for _ in range(rounds):
            for name, dyn in dyns.items():
                t = time.perf_counter()
                dyn.run(n)
                times[name].append(1e6 * (time.perf_counter() - t) / n / natoms)
        row = {name: float(np.median(v)) for name, v in times.items()}
        for name in MD_VARIANTS:
            ratios = np.array(times[name]) / np.array(times["emt"])
            row[f"ratio_{name.removeprefix('deep_potential_')}_to_emt"] = float(np.median(ratios))
        row["rounds"], row["steps_per_round"] = rounds, n
        out[str(natoms)] = row
        print(f"  {natoms:4d} atoms, us/atom/step: EMT {row['emt']:.0f}, " + ", ".join(
            f"{name.removeprefix('deep_potential_')} {row[name]:.0f} "
            f"({row['ratio_' + name.removeprefix('deep_potential_') + '_to_emt']:.2f}x)"
            for name in MD_VARIANTS), flush=True)
    return out


def nve_drift(model, ps, timestep_fs, temperature):
    from ase.build import bulk

    from mlcmk.md import DeepPotentialCalculator, run_nve

    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    steps = int(round(ps * 1000 / timestep_fs))
    t = time.perf_counter()
    out = run_nve(atoms, DeepPotentialCalculator(model), steps=steps, timestep_fs=timestep_fs,
                  temperature_K=temperature, seed=0, interval=max(steps // 200, 1))
    seconds = time.perf_counter() - t
    result = {"natoms": len(atoms), "length_ps": ps, "timestep_fs": timestep_fs,
              "initial_temperature_K": temperature,
              "mean_temperature_K": float(np.mean(out["temperature"])),
              "drift_meV_per_atom_per_ps": out["drift_meV_per_atom_per_ps"],
              "total_energy_std_meV_per_atom": float(1e3 * np.std(out["total"]) / len(atoms)),
              "potential_energy_std_meV_per_atom":
                  float(1e3 * np.std(out["potential"]) / len(atoms)),
              "seconds": seconds, "us_per_atom_per_step": 1e6 * seconds / steps / len(atoms)}
    print(f"  NVE {ps} ps ({steps} steps of {timestep_fs} fs, 32 atoms, "
          f"<T> {result['mean_temperature_K']:.0f} K): drift "
          f"{result['drift_meV_per_atom_per_ps']:.4f} meV/atom/ps, std of E_tot "
          f"{result['total_energy_std_meV_per_atom']:.4f} meV/atom")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--alcu_steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_alcu", action="store_true")
    parser.add_argument("--skip_raw", action="store_true")
    parser.add_argument("--nve_ps", type=float, default=2.0)
    parser.add_argument("--timestep_fs", type=float, default=2.0)
    parser.add_argument("--nve_only", action="store_true",
                        help="train the Al model, run NVE for --nve_ps and add the result as "
                             "`nve_<ps>ps` to the existing JSON")
    parser.add_argument("--md_only", action="store_true",
                        help="train the Al model, measure MD speed and NVE (--nve_ps) and "
                             "replace those entries of the existing JSON")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "deep_potential.json"))
    args = parser.parse_args()
    config.set_precision("float64")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    start = time.perf_counter()
    results = {"model": MODEL, "precision": "float64",
               "machine_load": {"start": machine_load()},
               "notes": "compare times as ratios within this run (EMT is measured alongside); "
                        "`machine_load` has the load average at the start and the end."}

    t = time.perf_counter()
    al = emt.al_dataset(n_train=1000, n_test=200)
    al_train = read_systems(al.train, type_map=["Al"])
    al_test = read_systems(al.test, type_map=["Al"])
    results["al_data"] = {"train": al.train, "test": al.test, "seconds": time.perf_counter() - t,
                          "train_frames": sum(len(s.energy) for s in al_train),
                          "test_frames": sum(len(s.energy) for s in al_test)}
    if args.nve_only or args.md_only:
        model, summary = train("al", al_train, al_test, args.steps, args.seed)
        with open(args.output) as f:
            previous = json.load(f)
        if args.md_only:
            print("\n== MD speed (velocity Verlet steps), us per atom per step")
            previous["md_speed_us_per_atom_per_step"] = md_speed(model)
            previous["nve"] = {**nve_drift(model, args.nve_ps, args.timestep_fs, 600.0),
                               "model": summary}
        else:
            previous[f"nve_{args.nve_ps:g}ps"] = {
                **nve_drift(model, args.nve_ps, args.timestep_fs, 600.0), "model": summary}
        write_json(args.output, previous)
        print(f"updated {args.output}")
        return
    model, results["al"] = train("al", al_train, al_test, args.steps, args.seed,
                                 out_dir=out_dir)
    if not args.skip_raw:
        _, results["al_raw_sorted"] = train("al_raw_sorted", al_train, al_test, args.steps,
                                            args.seed, descriptor="raw_sorted")
        results["symmetry_gap"] = {
            "force_rmse_ratio_raw_to_se_e2_a": results["al_raw_sorted"]["test_force_rmse_meV_per_A"]
            / results["al"]["test_force_rmse_meV_per_A"],
            "energy_rmse_ratio_raw_to_se_e2_a":
                results["al_raw_sorted"]["test_energy_rmse_meV_per_atom"]
                / results["al"]["test_energy_rmse_meV_per_atom"]}
    print("\n== MD speed (velocity Verlet steps), us per atom per step")
    results["md_speed_us_per_atom_per_step"] = md_speed(model)
    print("\n== NVE")
    results["nve"] = nve_drift(model, args.nve_ps, args.timestep_fs, 600.0)
    if not args.skip_alcu:
        t = time.perf_counter()
        alcu = emt.alcu_dataset(n_train=1000, n_test=200)
        alcu_train = read_systems(alcu.train)
        alcu_test = read_systems(alcu.test, type_map=alcu_train[0].type_map)
        results["alcu_data"] = {
            "train": alcu.train, "test": alcu.test, "seconds": time.perf_counter() - t,
            "systems": {s.path.rsplit("/", 1)[-1]: len(s.energy) for s in alcu_train},
            "train_frames": sum(len(s.energy) for s in alcu_train),
            "test_frames": sum(len(s.energy) for s in alcu_test)}
        _, results["alcu"] = train("alcu", alcu_train, alcu_test, args.alcu_steps, args.seed,
                                   out_dir=out_dir)
    results["anchors_deepmd_kit"] = {
        "ms_per_step": 38, "2000_steps_energy_meV_per_atom": [1.8, 5.0],
        "2000_steps_force_meV_per_A": [41, 55], "10000_steps_energy_meV_per_atom": 3.5,
        "10000_steps_force_meV_per_A": 24.7,
        "md_us_per_atom_per_step_uncompressed": {"32": 337, "256": 340, "864": 371},
        "md_us_per_atom_per_step_compressed": {"32": 204, "256": 152, "864": 142},
        "emt_us_per_atom_per_step": {"32": 75, "256": 67, "864": 66},
        "nve_drift_meV_per_atom_per_ps": 0.01}
    results["wall_seconds"] = time.perf_counter() - start
    results["machine_load"]["end"] = machine_load()
    write_json(args.output, results)
    print(json.dumps({k: results[k] for k in ("al", "md_speed_us_per_atom_per_step", "nve")},
                     indent=1, default=float))
    print(f"wrote {args.output} ({results['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
