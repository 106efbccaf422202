"""Deep Potential training speed: XLA-compiled steps with host neighbour lists against the
in-graph path, same run, with ASE's EMT force call timed before and after as the machine's
yardstick (DeePMD-kit's ~38 ms/step in ../shared/ANCHORS.md was measured where EMT took ~75
us/atom/step). DeePMD-kit's model settings, batch 1, 32-atom Al, 600 steps each; ms/step is the
median over 50-step intervals after the first. Writes results/deep_potential_train_speed.json.

    python benchmarks/deep_potential_train_speed.py
"""

import json
import os
import time

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from mlcmk import config
from mlcmk.data import emt, read_systems
from mlcmk.io import write_json
from mlcmk.training.potential_trainer import train_potential

MODEL = dict(rcut=6.0, rcut_smth=0.5, sel=80, neuron=[25, 50, 100], axis_neuron=16,
             fitting_neuron=[240, 240, 240], resnet_dt=True)


def emt_speed(calls=200):
    """Median EMT force-call time on 32 Al atoms, us per atom."""
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    atoms.get_forces()
    times = []
    for _ in range(calls):
        atoms.positions[0, 0] += 1e-4
        start = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times)) / len(atoms)


def main():
    config.set_precision("float64")
    al = emt.al_dataset(n_train=1000, n_test=200)
    train = read_systems(al.train, type_map=["Al"])
    test = read_systems(al.test, type_map=["Al"])
    out = {"emt_us_per_atom_force_call_before": emt_speed()}
    for jit in (True, False):
        _, result = train_potential(train, test, steps=600, model_kwargs=MODEL, seed=0,
                                    jit_compile=jit, verbose=0, log_every=50)
        out[f"jit_{jit}"] = {k: result[k] for k in
                             ("ms_per_step", "ms_per_step_steady", "first_epoch_seconds")}
        print(jit, out[f"jit_{jit}"], flush=True)
    out["emt_us_per_atom_force_call_after"] = emt_speed()
    print(json.dumps(out, indent=1))
    write_json(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "deep_potential_train_speed.json"), out)


if __name__ == "__main__":
    main()
