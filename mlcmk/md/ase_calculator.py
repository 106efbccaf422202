"""ASE calculator of a `DeepPotential`: energy, forces and stress; NVE molecular dynamics."""

import numpy as np
import tensorflow as tf

from mlcmk._validation import check_positive_int
from mlcmk.config import PRECISIONS
from mlcmk.data.atoms import thermalize
from mlcmk.models.deep_potential_neighbors import neighbor_list_numpy

try:
    from ase.calculators.calculator import Calculator, all_changes
except ImportError as err:  # pragma: no cover - ASE is in the `md` and `test` extras
    raise ImportError("mlcmk.md needs ASE: pip install ase (extra `md`)") from err


class DeepPotentialCalculator(Calculator):
    """ASE calculator backed by a trained `DeepPotential` (or its loaded `.keras` file).

    The neighbour list is built on the host with ASE's O(N) cell list
    (`neighbor_list_numpy`); energy, forces and virial come from one compiled TensorFlow call.

    Args:
        model: a `DeepPotential`, or the path of a `.keras` file holding one.
        precision: None (the model's float type), "float32" or "float64": evaluate a copy of the
            model in this precision (float32 is ~2-3x faster on CPUs; forces then carry ~1e-6
            relative rounding).
        compress: evaluate a copy whose embedding nets are tabulated
            (`DeepPotential.compressed`; same energies to ~1e-12 relative in float64).
        skin: Verlet skin in Å: the neighbour list is built out to `rcut + skin` and reused
            until an atom has moved more than `skin / 2` (or the cell, the atoms or their
            elements change). Neighbours beyond `rcut` contribute exactly like empty slots, so
            results do not depend on the skin. If the wider list does not fit in `sel`, the
            calculator falls back to an exact list rebuilt every call.
        jit_compile: compile the force call with XLA (one compilation per system size).

    Stress is ASE's convention `(1/V) dE/d(strain)` = `-virial / V`, in eV/Å^3 (Voigt order
    xx, yy, zz, yz, xz, xy).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, precision=None, compress=False, skin=0.5, jit_compile=True,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, str):
            import keras

            model = keras.saving.load_model(model)
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"`precision` must be None or one of {PRECISIONS}; received "
                             f"precision={precision!r}")
        if not isinstance(skin, (int, float)) or not 0 <= skin < model.rcut:
            raise ValueError(f"`skin` must be a number in [0, rcut={model.rcut}) (Å); received "
                             f"skin={skin!r}")
        if compress:
            model = model.compressed(dtype=precision)
        elif precision is not None and precision != model.compute_dtype:
            model = model.copy(precision)
        self.model = model
        self.type_map = list(model.type_map)
        self.skin = float(skin)
        dtype = model.compute_dtype
        self._dtype = dtype
        self._neighbors = None  # (key, reference positions, reusable, index, image tensors)
        self.neighbor_builds = 0

        @tf.function(reduce_retracing=True, jit_compile=bool(jit_compile))
        def evaluate(coord, box, atom_types, index, image):
            return model.compute(coord, atom_types, box, index=index, image=image)

        self._evaluate = evaluate

    def _neighbor_list(self, coord, box, types):
        """`(index, image)` tensors, rebuilt only when the Verlet skin is used up."""
        key = (types.tobytes(), None if box is None else box.tobytes())
        cached = self._neighbors
        if cached is not None and cached[0] == key and cached[2] and np.max(
                np.sum((coord - cached[1]) ** 2, axis=1)) < (0.5 * self.skin) ** 2:
            return cached[3], cached[4]
        reusable = self.skin > 0
        try:
            index, image = neighbor_list_numpy(coord, box, types,
                                               rcut=self.model.rcut + self.skin,
                                               sel=self.model.sel)
        except ValueError:
            if not reusable:
                raise
            reusable = False  # the skin overflows sel: exact list, rebuilt every call
            index, image = neighbor_list_numpy(coord, box, types, rcut=self.model.rcut,
                                               sel=self.model.sel)
        self.neighbor_builds += 1
        tensors = tf.constant(index[None]), tf.constant(image[None], self._dtype)
        self._neighbors = (key, coord.copy(), reusable, *tensors)
        return tensors

    def _types(self, atoms):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.type_map))
        if unknown:
            raise ValueError(f"atoms hold elements {unknown} that the model does not know; its "
                             f"type_map is {self.type_map}")
        return np.array([self.type_map.index(s) for s in atoms.get_chemical_symbols()], np.int32)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if any(atoms.pbc) and not all(atoms.pbc):
            raise ValueError(f"pbc must be all True or all False; received {atoms.pbc}")
        types = self._types(atoms)
        coord = atoms.get_positions()
        periodic = bool(all(atoms.pbc))
        box = atoms.cell.array if periodic else None
        index, image = self._neighbor_list(coord, box, types)
        out = self._evaluate(
            tf.constant(coord[None], self._dtype),
            tf.constant((box if periodic else np.zeros((3, 3)))[None], self._dtype),
            tf.constant(types[None]), index, image)
        energy = float(out["energy"].numpy()[0])
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["energies"] = out["atom_energy"].numpy()[0].astype(np.float64)
        self.results["forces"] = out["force"].numpy()[0].astype(np.float64)
        if periodic:
            virial = out["virial"].numpy()[0].astype(np.float64)
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs periodic boundaries")


def run_nve(atoms, calculator, *, steps, timestep_fs=1.0, temperature_K=None, seed=0,
            interval=10, callback=None):
    """NVE molecular dynamics with ASE's velocity Verlet.

    Args:
        atoms: `ase.Atoms` (copied). calculator: any ASE calculator.
        steps: MD steps. timestep_fs: time step in fs.
        temperature_K: if given, Maxwell–Boltzmann velocities at this temperature (seeded),
            zero total momentum.
        interval: steps between recorded samples.
        callback: optional `callback(step, atoms)` at every recorded sample.

    Returns:
        dict of arrays `time_ps`, `potential`, `kinetic`, `total` (eV) and `temperature` (K) at
        the samples, and `drift_meV_per_atom_per_ps` (slope of a least-squares line through the
        total energy, per atom).
    """
    from ase import units
    from ase.md.verlet import VelocityVerlet

    steps = check_positive_int("steps", steps)
    atoms = atoms.copy()
    atoms.calc = calculator
    if temperature_K is not None:
        thermalize(atoms, temperature_K, np.random.default_rng(seed))
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    record = {"time_ps": [], "potential": [], "kinetic": [], "total": [], "temperature": []}

    def sample():
        step = dyn.nsteps
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        record["time_ps"].append(step * timestep_fs * 1e-3)
        record["potential"].append(epot)
        record["kinetic"].append(ekin)
        record["total"].append(epot + ekin)
        record["temperature"].append(atoms.get_temperature())
        if callback is not None:
            callback(step, atoms)

    dyn.attach(sample, interval=interval)
    dyn.run(steps)
    result = {k: np.asarray(v) for k, v in record.items()}
    if len(result["time_ps"]) > 1:
        slope = np.polyfit(result["time_ps"], result["total"], 1)[0]
    else:
        slope = float("nan")
    result["drift_meV_per_atom_per_ps"] = float(1e3 * slope / len(atoms))
    result["atoms"] = atoms
    return result
