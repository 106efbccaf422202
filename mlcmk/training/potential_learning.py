r"""Concurrent learning of interatomic potentials (DP-GEN style), one structure per learner.

The parts plug into `ConcurrentLearner`:
- `ASEMDExplorer`: Langevin MD (ASE) driven by the current model (one ensemble member, or the
  ensemble mean) over a ladder of temperatures in randomly strained boxes; frames every k steps;
- `ForceDeviationExaminer`: the DP-GEN model deviation, the max over atoms of the standard
  deviation (over members) of the predicted force (`max_vector_deviation`);
- `EMTLabeller`: energy, forces and virial of one configuration by an ASE calculator (EMT by
  default); an exception is recorded by the learner as that configuration's failure;
- `PotentialEnsembleTrainer`: K `DeepPotential` members (different seeds) refitted on all labels,
  each iteration continuing from the previous weights.
`build_potential_learner` assembles them for one structure (`STRUCTURES`, or any periodic
`ase.Atoms`) with trust levels 0.05 / 0.15 eV/Å (DP-GEN's usual values, see ANCHORS.md).
Several structures with one shared ensemble: `mlcmk.training.multi_potential_learning`.

Configurations. A learner handles one structure: a fixed number of atoms `natoms` with fixed
atom types (in a fixed order) and periodic boundaries. A configuration is one packed float64
vector of length `natoms * 3 + 9`: the Cartesian positions `(natoms, 3)` (Å) flattened, then the
cell `(3, 3)` (rows are the cell vectors, Å) flattened (`pack_configuration`,
`unpack_configuration`). The cell is part of the configuration because exploration strains it,
and the content hash of this vector is the key of the configuration's label, so a strained copy
is a different configuration. Atom types are not part of it: they belong to the learner.

Reference: Y. Zhang, H. Wang et al., "DP-GEN: A concurrent learning platform for the generation
of reliable deep learning based potential energy models", Comput. Phys. Commun. 253 (2020);
L. Zhang, D.-Y. Lin, H. Wang, R. Car, W. E, Phys. Rev. Materials 3, 023804 (2019).
"""

import weakref

import numpy as np

from mlcmk._validation import check_bool, check_number, check_positive_int, check_positive_number
from mlcmk.data.atoms import thermalize
from mlcmk.data.deepmd import System
from mlcmk.models.deep_potential import DeepPotential, make_dataset
from mlcmk.models.ensemble import Ensemble, as_trust_levels, max_vector_deviation
from mlcmk.training.concurrent_learning import (
    ConcurrentLearner,
    Examiner,
    Explorer,
    Labeller,
    Trainer,
)

# name -> (description, arguments of `_build_structure`). Cells of 16-32 atoms; slabs have
# 4 layers and 8 Å of vacuum between periodic images (more than any model's rcut here).
STRUCTURES = {
    "fcc_al": ("Al fcc bulk, 32 atoms", ("bulk", "Al", "fcc", 4.05, (2, 2, 2))),
    "fcc_cu": ("Cu fcc bulk, 32 atoms", ("bulk", "Cu", "fcc", 3.61, (2, 2, 2))),
    "bcc_al": ("Al bcc bulk, 16 atoms", ("bulk", "Al", "bcc", 3.20, (2, 2, 2))),
    "hcp_al": ("Al hcp bulk (ideal c/a), 16 atoms", ("hcp", "Al", 2.864, (2, 1, 2))),
    "fcc111_al": ("Al fcc(111) slab, 2x2x4, 8 Å vacuum, 16 atoms",
                  ("fcc111", "Al", 4.05, (2, 2, 4))),
    "fcc100_al": ("Al fcc(100) slab, 2x2x4, 8 Å vacuum, 16 atoms",
                  ("fcc100", "Al", 4.05, (2, 2, 4))),
    "l12_cu3al": ("Cu3Al L1_2 bulk, 32 atoms", ("l12", ("Cu", "Al"), 3.71, (2, 2, 2))),
    "b2_alcu": ("AlCu B2 (CsCl) bulk, 16 atoms", ("b2", ("Al", "Cu"), 3.05, (2, 2, 2))),
}
SLAB_VACUUM = 4.0  # Å on each side of a slab: 8 Å between periodic images


def _build_structure(kind, *args):
    import ase.build

    if kind == "bulk":
        element, lattice, a, repeats = args
        return ase.build.bulk(element, lattice, a=a, cubic=True).repeat(repeats)
    if kind == "hcp":
        element, a, repeats = args
        return ase.build.bulk(element, "hcp", a=a, c=a * np.sqrt(8 / 3),
                              orthorhombic=True).repeat(repeats)
    if kind in ("fcc111", "fcc100"):
        element, a, size = args
        build = getattr(ase.build, kind)
        return build(element, size=size, a=a, vacuum=SLAB_VACUUM, periodic=True)
    if kind == "l12":  # A3B: B at the cube corner, A at the face centres
        (a_element, b_element), a, repeats = args
        atoms = ase.build.bulk(a_element, "fcc", a=a, cubic=True)
        atoms.symbols[0] = b_element
        return atoms.repeat(repeats)
    if kind == "b2":
        (a_element, b_element), a, repeats = args
        return ase.build.bulk(a_element + b_element, "cesiumchloride", a=a).repeat(repeats)
    raise ValueError(f"unknown structure kind {kind!r}")


def structure_atoms(structure):
    """The perfect periodic crystal of a `STRUCTURES` name, or a copy of a periodic `ase.Atoms`."""
    from ase import Atoms

    if isinstance(structure, Atoms):
        atoms = structure.copy()
    elif isinstance(structure, str) and structure in STRUCTURES:
        atoms = _build_structure(*STRUCTURES[structure][1])
    else:
        raise ValueError(f"`structure` must be one of {sorted(STRUCTURES)} or an ase.Atoms; "
                         f"received structure={structure!r}")
    if not all(atoms.pbc):
        raise ValueError(f"`structure` must be periodic in all directions; pbc={atoms.pbc}")
    if len(atoms) == 0:
        raise ValueError("`structure` has no atoms")
    atoms.calc = None
    return atoms


def pack_configuration(positions, cell):
    """Packs positions `(natoms, 3)` and cell `(3, 3)` into one vector `(natoms * 3 + 9,)`."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or cell.shape != (3, 3):
        raise ValueError(f"expected positions (natoms, 3) and cell (3, 3); received shapes "
                         f"{positions.shape} and {cell.shape}")
    return np.concatenate([positions.ravel(), cell.ravel()])


def check_configurations(configurations, natoms, name="configurations"):
    """The configurations as float64 `(n, natoms * 3 + 9)`; a ValueError for any other shape."""
    x = np.asarray(configurations, dtype=np.float64)
    width = natoms * 3 + 9
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"`{name}` must have shape (n, {width}) (positions of {natoms} atoms "
                         f"and a 3x3 cell, packed); received shape {x.shape}")
    return x


def unpack_configuration(configurations, natoms):
    """Inverse of `pack_configuration` for a batch: `(positions (n, natoms, 3), cells (n, 3, 3))`.

    A single vector `(natoms * 3 + 9,)` is treated as a batch of one.
    """
    x = np.asarray(configurations, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    x = check_configurations(x, natoms)
    return x[:, :natoms * 3].reshape(-1, natoms, 3), x[:, natoms * 3:].reshape(-1, 3, 3)


def check_trust_levels(trust_levels):
    """`(lo, hi)` floats from a pair (or `TrustLevels`) with 0 <= lo <= hi (`as_trust_levels`)."""
    levels = as_trust_levels(trust_levels)
    return levels.lo, levels.hi


_COMPUTE_FUNCTIONS = weakref.WeakKeyDictionary()


def _compute_function(member):
    """`member.compute` as a `tf.function` (one per member, shapes relaxed), cached."""
    fn = _COMPUTE_FUNCTIONS.get(member)
    if fn is None:
        import tensorflow as tf

        ref = weakref.ref(member)  # the cache must not keep the member alive

        @tf.function(reduce_retracing=True)
        def fn(coord, atom_types, box):
            out = ref().compute(coord, atom_types, box)
            return {"energy": out["energy"], "force": out["force"]}

        _COMPUTE_FUNCTIONS[member] = fn
    return fn


def _member_predictions(members, positions, cells, atom_types, batch_size):
    """Stacked energies `(K, n)` and forces `(K, n, natoms, 3)` of every member."""
    import keras
    import tensorflow as tf

    dtype = keras.config.floatx()
    energies, forces = [], []
    for member in members:
        fn = _compute_function(member)
        e_parts, f_parts = [], []
        for start in range(0, len(positions), batch_size):
            coord = tf.constant(positions[start:start + batch_size], dtype)
            box = tf.constant(cells[start:start + batch_size], dtype)
            types = tf.constant(np.tile(atom_types, (len(coord), 1)), tf.int32)
            out = fn(coord, types, box)
            e_parts.append(out["energy"].numpy())
            f_parts.append(out["force"].numpy())
        energies.append(np.concatenate(e_parts))
        forces.append(np.concatenate(f_parts))
    return np.stack(energies), np.stack(forces)


def _member_forces(members, positions, cells, atom_types, batch_size):
    """Stacked forces `(K, n, natoms, 3)` of every member."""
    return _member_predictions(members, positions, cells, atom_types, batch_size)[1]


# ---------------------------------------------------------------------------- explorer
def _mean_calculator(members):
    """An ASE calculator of the ensemble-mean energy, forces and stress."""
    from ase.calculators.calculator import Calculator, all_changes

    from mlcmk.md.ase_calculator import DeepPotentialCalculator

    calculators = [DeepPotentialCalculator(m) for m in members]

    class _Mean(Calculator):
        implemented_properties = ["energy", "free_energy", "forces", "stress"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            results = []
            for calc in calculators:
                calc.calculate(self.atoms, ["energy", "forces", "stress"], all_changes)
                results.append(calc.results)
            for key in ("energy", "forces", "stress"):
                self.results[key] = np.mean([r[key] for r in results], axis=0)
            self.results["free_energy"] = self.results["energy"]

    return _Mean()


class ASEMDExplorer(Explorer):
    """Langevin MD (ASE) driven by the current potential, over temperatures and random strains.

    Iteration k runs `num_trajectories` trajectories; trajectory j starts from the reference
    crystal in a box strained by a random symmetric strain (components uniform in
    `[-max_strain, max_strain]`), Maxwell–Boltzmann velocities at temperature
    `ladder[(j + k) % len(ladder)]`, and runs `num_steps` Langevin steps at that
    temperature; every `sample_every` steps a frame is recorded. The ladder is `temperatures`,
    or, with `ramp=True`, its first `min(k, len(temperatures))` entries: as in DP-GEN's
    exploration jobs, the first iterations' poor models drive MD only at the low temperatures
    their training data cover (from iteration `len(temperatures)` on both agree). Everything is
    seeded by `(seed, iteration, j)`. A trajectory whose positions or forces become non-finite,
    or whose atoms move further than `max_displacement` Å from their start, stops there (its
    frames so far are kept; the examiner usually calls the last ones failed).

    Args:
        ensemble: an `Ensemble` of `DeepPotential`s.
        reference_atoms: periodic `ase.Atoms`, the structure explored.
        driver: "first" (member 0 drives the MD, as in DP-GEN) or "mean" (the ensemble mean).
        temperatures: temperature ladder, K (lowest first when `ramp` is used).
        ramp: bool, see above.
        max_strain, num_trajectories, num_steps, sample_every: see above.
        timestep_fs, friction: Langevin time step (fs) and friction (1/fs).
        max_displacement: Å, see above.
    """

    def __init__(self, ensemble, reference_atoms, driver="first",
                 temperatures=(300.0, 600.0, 900.0, 1200.0), max_strain=0.03,
                 num_trajectories=4, num_steps=200, sample_every=10, timestep_fs=2.0,
                 friction=0.02, max_displacement=3.0, ramp=False):
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
        if driver not in ("first", "mean"):
            raise ValueError(f"`driver` must be 'first' or 'mean'; received driver={driver!r}")
        temperatures = np.asarray(temperatures, dtype=np.float64).ravel()
        if temperatures.size == 0 or np.any(~(temperatures > 0)):
            raise ValueError(f"`temperatures` must be positive kelvins; received "
                             f"temperatures={temperatures.tolist()!r}")
        max_strain = check_number("max_strain", max_strain, 0, high=0.5, strict_high=True)
        for name, value in (("timestep_fs", timestep_fs), ("friction", friction),
                            ("max_displacement", max_displacement)):
            check_positive_number(name, value)
        self.ensemble = ensemble
        self.reference = structure_atoms(reference_atoms)
        self.driver = driver
        self.temperatures = temperatures
        self.ramp = check_bool("ramp", ramp)
        self.max_strain = float(max_strain)
        self.num_trajectories = check_positive_int("num_trajectories", num_trajectories)
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.sample_every = check_positive_int("sample_every", sample_every)
        if self.sample_every > self.num_steps:
            raise ValueError(f"`sample_every` ({sample_every}) must be <= `num_steps` "
                             f"({num_steps})")
        self.timestep_fs = float(timestep_fs)
        self.friction = float(friction)
        self.max_displacement = float(max_displacement)
        self.stopped = 0  # trajectories stopped early in the last call
        self._calculator = None

    def calculator(self):
        if self._calculator is None:
            if self.driver == "first":
                from mlcmk.md.ase_calculator import DeepPotentialCalculator

                self._calculator = DeepPotentialCalculator(self.ensemble.members[0])
            else:
                self._calculator = _mean_calculator(self.ensemble.members)
        return self._calculator

    def trajectory_temperatures(self, iteration):
        """The temperature (K) of each of the `num_trajectories` trajectories of `iteration`."""
        ladder = self.temperatures
        if self.ramp:
            ladder = ladder[:min(max(int(iteration), 1), len(ladder))]
        return [float(ladder[(j + iteration) % len(ladder)])
                for j in range(self.num_trajectories)]

    def explore(self, iteration, seed):
        from ase import units
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        frames = []
        self.stopped = 0
        for j, temperature in enumerate(self.trajectory_temperatures(iteration)):
            rng = np.random.default_rng([int(seed), int(iteration), j, 23])
            atoms = self.reference.copy()
            eps = rng.uniform(-self.max_strain, self.max_strain, size=(3, 3))
            eps = 0.5 * (eps + eps.T)
            atoms.set_cell(np.asarray(atoms.get_cell()) @ (np.eye(3) + eps), scale_atoms=True)
            start = atoms.get_positions().copy()
            # A fresh calculator state per trajectory (ASE caches results by atoms).
            calc = self.calculator()
            calc.reset()
            atoms.calc = calc
            thermalize(atoms, temperature, rng)
            atoms.set_constraint(FixCom())
            dyn = Langevin(atoms, self.timestep_fs * units.fs, temperature_K=temperature,
                           friction=self.friction / units.fs, fixcm=False, rng=rng)
            for _ in range(self.num_steps // self.sample_every):
                try:
                    dyn.run(self.sample_every)
                    forces = atoms.get_forces()
                except (FloatingPointError, ValueError, RuntimeError):
                    self.stopped += 1
                    break
                positions = atoms.get_positions()
                if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(forces))):
                    self.stopped += 1
                    break
                frames.append(pack_configuration(positions, atoms.get_cell()))
                if np.max(np.linalg.norm(positions - start, axis=1)) > self.max_displacement:
                    self.stopped += 1
                    break
        if not frames:
            raise RuntimeError(f"MD exploration at iteration {iteration} produced no frame")
        return np.stack(frames)


# ---------------------------------------------------------------------------- examiner
class ForceDeviationExaminer(Examiner):
    """DP-GEN model deviation: max over atoms of the force standard deviation over members.

    Args:
        ensemble: an `Ensemble` of `DeepPotential`s.
        atom_types: int array `(natoms,)`, the learner's atom types.
        batch_size: configurations evaluated together.
    """

    def __init__(self, ensemble, atom_types, batch_size=32):
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
        self.ensemble = ensemble
        self.atom_types = np.asarray(atom_types, dtype=np.int64)
        self.natoms = len(self.atom_types)
        self.batch_size = check_positive_int("batch_size", batch_size)

    def member_forces(self, configurations):
        """Forces `(K, n, natoms, 3)` predicted by every member."""
        positions, cells = unpack_configuration(
            check_configurations(configurations, self.natoms), self.natoms)
        return _member_forces(self.ensemble.members, positions, cells, self.atom_types,
                              self.batch_size)

    def examine(self, configurations):
        return max_vector_deviation(self.member_forces(configurations))


# ---------------------------------------------------------------------------- labeller
class EMTLabeller(Labeller):
    """Energy (eV), forces (eV/Å) and virial `-V * stress` (eV) of one configuration.

    Args:
        reference_atoms: periodic `ase.Atoms` giving the symbols (and their order).
        calculator: an ASE calculator or a zero-argument factory of one; default `EMT()`.

    `calls` counts the configurations given to the calculator.
    """

    def __init__(self, reference_atoms, calculator=None):
        self.reference = structure_atoms(reference_atoms)
        self.natoms = len(self.reference)
        if calculator is None:
            from ase.calculators.emt import EMT

            calculator = EMT
        if not (callable(calculator) or hasattr(calculator, "get_potential_energy")):
            raise TypeError(f"`calculator` must be an ASE calculator or a factory of one; "
                            f"received {calculator!r}")
        self._calculator = calculator
        self._instance = None
        self.calls = 0

    def _calc(self):
        if self._instance is None:
            c = self._calculator
            self._instance = c() if (isinstance(c, type) or not hasattr(c, "calculate")) else c
        return self._instance

    def label(self, configuration):
        positions, cell = unpack_configuration(configuration, self.natoms)
        atoms = self.reference.copy()
        atoms.set_cell(cell[0], scale_atoms=False)
        atoms.set_positions(positions[0])
        atoms.calc = self._calc()
        self.calls += 1
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(apply_constraint=False), dtype=np.float64)
        virial = -atoms.get_volume() * np.asarray(atoms.get_stress(voigt=False))
        return {"energy": np.float64(energy), "force": forces, "virial": virial}


# ---------------------------------------------------------------------------- trainer
class PotentialEnsembleTrainer(Trainer):
    """Fits every `DeepPotential` member to all labels, continuing from its current weights.

    The first training (of a model that was neither trained nor loaded) sets each member's
    descriptor statistics and energy bias from the labels (`set_statistics`); afterwards they
    stay fixed (they are saved with the weights). Every call starts each member from a fresh
    optimizer (DeePMD's exponential learning-rate decay from `learning_rate` to
    `stop_learning_rate` over `steps`, a zero Adam state: compiled once, reset afterwards while
    `steps` stays the same) and runs `steps` batches of `batch_size` frames, shuffled with a
    seed of `(seed, iteration, member)`; a resumed run therefore trains as an uninterrupted one.

    Args:
        ensemble: an `Ensemble` of `DeepPotential`s.
        atom_types: int array `(natoms,)`. type_map: element names.
        steps: optimizer steps per member and iteration (int or callable `iteration -> int`).
        batch_size, learning_rate, stop_learning_rate: see above.
        seed: int.
    """

    def __init__(self, ensemble, atom_types, type_map, steps=500, batch_size=1,
                 learning_rate=1e-3, stop_learning_rate=1e-5, seed=0):
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
        for i, member in enumerate(ensemble.members):
            if not isinstance(member, DeepPotential):
                raise TypeError(f"ensemble member {i} must be a DeepPotential; received "
                                f"{type(member).__name__}")
        self.ensemble = ensemble
        self.atom_types = np.asarray(atom_types, dtype=np.int64)
        self.natoms = len(self.atom_types)
        self.type_map = list(type_map)
        self.steps = steps
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.learning_rate = float(learning_rate)
        self.stop_learning_rate = float(stop_learning_rate)
        self.seed = int(seed)
        self._has_statistics = False
        self._compiled = {}  # member -> (steps, learning rates) of its last compile

    def system(self, data):
        """The labels as one `System`."""
        positions, cells = unpack_configuration(data.configurations, self.natoms)
        return System(coord=positions, box=cells, energy=np.asarray(data.labels["energy"]),
                      force=np.asarray(data.labels["force"]),
                      virial=np.asarray(data.labels["virial"]) if "virial" in data.labels
                      else None, atom_types=self.atom_types, type_map=self.type_map)

    def systems(self, data):
        """The labels as a list of `System`s (one here; one per structure in subclasses)."""
        return [self.system(data)]

    def train(self, data, iteration):
        steps = int(self.steps(iteration) if callable(self.steps) else self.steps)
        systems = self.systems(data)
        if not self._has_statistics:
            for member in self.ensemble.members:
                member.set_statistics(systems)
            self._has_statistics = True
        results = {"force_rmse": [], "energy_rmse_per_atom": []}
        for k, member in enumerate(self.ensemble.members):
            schedule = (steps, self.learning_rate, self.stop_learning_rate)
            if self._compiled.get(k) == schedule and member.optimizer is not None:
                # A fresh optimizer state (step count and moments), as a new compile gives,
                # keeping the traced train function (retracing costs more than short fits).
                for variable in member.optimizer.variables:
                    if variable.name != "learning_rate":
                        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
            else:
                member.compile(total_steps=steps, learning_rate=self.learning_rate,
                               stop_learning_rate=self.stop_learning_rate,
                               decay_steps=max(steps // 20, 1))
                self._compiled[k] = schedule
            dataset = make_dataset(systems, min(self.batch_size, len(data.keys)),
                                   seed=(self.seed * 1_000_003 + iteration * 1009 + k) % 2**31)
            history = member.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False,
                                 verbose=0)
            for name in results:
                results[name].append(float(history.history[name][-1]))
        return {f"train_{name}": float(np.mean(v)) for name, v in results.items()}

    def save(self, directory):
        self.ensemble.save_weights(directory)

    def load(self, directory):
        self.ensemble.load_weights(directory)
        self._has_statistics = True


# ---------------------------------------------------------------------------- assembly
def initial_configurations(reference_atoms, num, max_strain=0.03, max_displacement=0.15,
                           seed=0):
    """`num` packed configurations: the crystal in randomly strained boxes, atoms displaced by
    Gaussian noise of a random width up to `max_displacement` Å (seeded)."""
    atoms0 = structure_atoms(reference_atoms)
    rng = np.random.default_rng([int(seed), 5])
    out = []
    for _ in range(check_positive_int("num", num)):
        atoms = atoms0.copy()
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(np.asarray(atoms.get_cell()) @ (np.eye(3) + eps), scale_atoms=True)
        sigma = rng.uniform(0.0, max_displacement)
        positions = atoms.get_positions() + sigma * rng.standard_normal((len(atoms), 3))
        out.append(pack_configuration(positions, atoms.get_cell()))
    return np.stack(out)


def ensemble_errors(ensemble, systems, batch_size=16):
    """Energy RMSE per atom and force RMSE of the ensemble-mean prediction on `systems`."""
    de, df = [], []
    for system in systems:
        coord = np.asarray(system.coord)
        box = np.asarray(system.box)
        natoms = len(system.atom_types)
        energies, forces = _member_predictions(ensemble.members, coord, box, system.atom_types,
                                               batch_size)
        de.append((energies.mean(axis=0) - system.energy) / natoms)
        df.append((forces.mean(axis=0) - system.force).ravel())
    de, df = np.concatenate(de), np.concatenate(df)
    return {"energy_rmse_per_atom": float(np.sqrt(np.mean(de**2))),
            "force_rmse": float(np.sqrt(np.mean(df**2)))}


def build_potential_learner(structure, directory, *, num_members=4, model_kwargs=None,
                            trust_levels=(0.05, 0.15), max_iterations=5,
                            max_labels_per_iteration=30, num_initial=32, converge_fraction=0.9,
                            min_iterations=2, temperatures=(300.0, 600.0, 900.0, 1200.0),
                            max_strain=0.03, num_trajectories=4, md_steps=200, sample_every=10,
                            driver="first", ramp=False, train_steps=500, batch_size=1,
                            learning_rate=1e-3, stop_learning_rate=1e-5, calculator=None,
                            labeller=None, test_systems=None, seed=0, verbose=1):
    """Assembles a DP-GEN-style `ConcurrentLearner` for one periodic structure.

    Args:
        structure: a `STRUCTURES` name (e.g. "fcc_al", "hcp_al", "fcc111_al", "b2_alcu") or a
            periodic `ase.Atoms`.
        directory: run directory (an existing run is resumed).
        num_members: ensemble size K (members seeded `seed * 100 + k`).
        model_kwargs: `DeepPotential` arguments (rcut, sel, neuron, fitting_neuron, ...).
        trust_levels: `(lo, hi)` of the force deviation, eV/Å.
        num_initial: labelled frames of iteration 0 (strained, displaced crystals).
        temperatures, max_strain, num_trajectories, md_steps, sample_every, driver, ramp:
            exploration (see `ASEMDExplorer`).
        train_steps, batch_size, learning_rate, stop_learning_rate: training per iteration.
        calculator: ASE calculator (or factory) of the labels; default EMT.
        labeller: a ready `Labeller` instead (e.g. a wrapped `EMTLabeller`).
        test_systems: optional list of `System`s of the same structure; each iteration reports
            the ensemble-mean errors on them.
        Others: see `ConcurrentLearner`.

    Returns:
        `(learner, ensemble, labeller)`.
    """
    import keras

    lo, hi = check_trust_levels(trust_levels)
    atoms = structure_atoms(structure)
    type_map = sorted(set(atoms.get_chemical_symbols()))
    atom_types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()], np.int64)
    model_kwargs = dict(model_kwargs or {})

    def factory(member_seed):
        model = DeepPotential(type_map, **model_kwargs)
        model.build()
        return model

    ensemble = Ensemble.from_factory(factory, num_members=num_members,
                                     seeds=[seed * 100 + k for k in range(num_members)])
    keras.utils.set_random_seed(seed)
    explorer = ASEMDExplorer(ensemble, atoms, driver=driver, ramp=ramp,
                             temperatures=temperatures,
                             max_strain=max_strain, num_trajectories=num_trajectories,
                             num_steps=md_steps, sample_every=sample_every)
    examiner = ForceDeviationExaminer(ensemble, atom_types)
    if labeller is None:
        labeller = EMTLabeller(atoms, calculator=calculator)
    trainer = PotentialEnsembleTrainer(ensemble, atom_types, type_map, steps=train_steps,
                                       batch_size=batch_size, learning_rate=learning_rate,
                                       stop_learning_rate=stop_learning_rate, seed=seed)
    initial = initial_configurations(atoms, num_initial, max_strain=max_strain, seed=seed)
    evaluator = None
    if test_systems:
        test_systems = list(test_systems)

        def evaluator(iteration):
            return {f"test_{k}": v for k, v in ensemble_errors(ensemble, test_systems).items()}

    learner = ConcurrentLearner(
        explorer, examiner, labeller, trainer, directory, trust_levels=(lo, hi),
        max_iterations=max_iterations, max_labels_per_iteration=max_labels_per_iteration,
        converge_fraction=converge_fraction, min_iterations=min_iterations,
        initial_configurations=initial, evaluator=evaluator, seed=seed, verbose=verbose)
    return learner, ensemble, labeller
