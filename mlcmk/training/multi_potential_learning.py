r"""DP-GEN over several structures: one Deep Potential ensemble for bulk crystals, slabs, alloys.

One ensemble of `DeepPotential`s (one type map, e.g. `["Al", "Cu"]`) is shared by all structures
and trained on the union of their labels. Each iteration of `ConcurrentLearner` explores every
structure (Langevin MD driven by the current model over a temperature ladder in randomly
strained boxes, `ASEMDExplorer`), examines every frame by the force deviation of the ensemble,
labels the candidates with EMT (at most `labels_per_structure` per structure and iteration), and
retrains every member on all labels (one `System` per structure, batches drawn per structure).

Configurations. `StructureSet` packs a frame of structure `s` (with `natoms_s` atoms) into one
float64 vector of a common width `10 + 3 * max_natoms`:

    [s, cell (9, rows are the cell vectors, Å), positions (natoms_s * 3, Å), zeros (padding)]

so every configuration of the run has the same shape, the content hash that keys its label
includes the structure, and `ConcurrentLearner`'s label store, resume and never-label-twice rules
hold unchanged. A label holds `energy` (eV), `force` (eV/Å, padded with zeros to
`(max_natoms, 3)`) and `virial` (eV).

The figure-2 table of the seed (explored against labelled, per structure) comes from the run's
files (`structure_counts`) and is part of each iteration's report (`evaluation["structures"]`),
with the force RMSE of the ensemble mean on held-out EMT MD frames of each structure.

Reference: Y. Zhang, H. Wang et al., Comput. Phys. Commun. 253, 107206 (2020) (DP-GEN);
L. Zhang, D.-Y. Lin, H. Wang, R. Car, W. E, Phys. Rev. Materials 3, 023804 (2019).
"""

import json
import math
import os

import numpy as np

from mlcmk._plotting import subplots
from mlcmk._validation import check_positive_int
from mlcmk.data.atoms import thermalize
from mlcmk.data.deepmd import System
from mlcmk.io import write_json
from mlcmk.models.deep_potential import DeepPotential
from mlcmk.models.ensemble import ACCURATE, CANDIDATE, FAILED, Ensemble, max_vector_deviation
from mlcmk.training.concurrent_learning import (
    ConcurrentLearner,
    Examiner,
    Explorer,
    Labeller,
    configuration_key,
    random_selector,
)
from mlcmk.training.potential_learning import (
    STRUCTURES,
    ASEMDExplorer,
    EMTLabeller,
    PotentialEnsembleTrainer,
    _member_forces,
    check_trust_levels,
    ensemble_errors,
    initial_configurations,
    pack_configuration,
    structure_atoms,
    unpack_configuration,
)

# The default set of `--structures all`: Al bulk (fcc, bcc, hcp), two Al surfaces, two Al-Cu
# ordered alloys.
DEFAULT_STRUCTURES = ("fcc_al", "bcc_al", "hcp_al", "fcc111_al", "fcc100_al", "l12_cu3al",
                      "b2_alcu")
COUNT_KEYS = ("explored", "accurate", "candidate", "failed", "selected", "labelled",
              "label_failures")


def parse_structures(structures, name="structures"):
    """A list of `STRUCTURES` names from a list or a comma-separated string ("all": the default
    set); a ValueError naming `name` for an empty list, an unknown or a repeated name."""
    if isinstance(structures, str):
        structures = [s.strip() for s in structures.split(",") if s.strip()]
        if structures == ["all"]:
            structures = list(DEFAULT_STRUCTURES)
    else:
        structures = list(structures)
    if not structures:
        raise ValueError(f"`{name}` is empty; expected one or more of {sorted(STRUCTURES)} "
                         "(or 'all')")
    for s in structures:
        if not isinstance(s, str) or s not in STRUCTURES:
            raise ValueError(f"`{name}` has an unknown structure {s!r}; expected names among "
                             f"{sorted(STRUCTURES)} (or 'all')")
    if len(set(structures)) != len(structures):
        raise ValueError(f"`{name}` repeats a structure: {structures}")
    return structures


class StructureSet:
    """Named periodic structures sharing one type map; packs their frames into one width.

    Args:
        structures: list of `STRUCTURES` names or a comma-separated string (see
            `parse_structures`).
        type_map: element names; default the sorted elements of all structures.
    """

    def __init__(self, structures, type_map=None):
        self.names = parse_structures(structures)
        self.atoms = [structure_atoms(name) for name in self.names]
        elements = sorted({s for a in self.atoms for s in a.get_chemical_symbols()})
        self.type_map = list(type_map) if type_map is not None else elements
        missing = sorted(set(elements) - set(self.type_map))
        if missing:
            raise ValueError(f"`type_map`={self.type_map} lacks the elements {missing}")
        self.atom_types = [np.array([self.type_map.index(s) for s in a.get_chemical_symbols()],
                                    np.int64) for a in self.atoms]
        self.natoms = [len(a) for a in self.atoms]
        self.max_natoms = max(self.natoms)
        self.width = 10 + 3 * self.max_natoms

    def __len__(self):
        return len(self.names)

    def pack(self, index, positions, cell):
        """One configuration vector `(width,)` of structure `index`."""
        n = self.natoms[index]
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        if positions.shape != (n, 3) or cell.shape != (3, 3):
            raise ValueError(f"structure {self.names[index]!r} needs positions ({n}, 3) and a "
                             f"cell (3, 3); received shapes {positions.shape} and {cell.shape}")
        out = np.zeros(self.width)
        out[0] = index
        out[1:10] = cell.ravel()
        out[10:10 + 3 * n] = positions.ravel()
        return out

    def pack_batch(self, index, configurations):
        """Single-structure packed configurations `(n, natoms * 3 + 9)` -> `(n, width)`."""
        positions, cells = unpack_configuration(configurations, self.natoms[index])
        return np.stack([self.pack(index, p, c) for p, c in zip(positions, cells, strict=True)])

    def indices(self, configurations, name="configurations"):
        """The structure index of each configuration `(n,)`; a ValueError for a wrong shape or
        index."""
        x = np.asarray(configurations, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"`{name}` must have shape (n, {self.width}) (structure index, "
                             f"cell and up to {self.max_natoms} atoms, packed); received shape "
                             f"{x.shape}")
        index = x[:, 0]
        if not np.all((index == np.round(index)) & (index >= 0) & (index < len(self))):
            raise ValueError(f"`{name}` has structure indices outside 0..{len(self) - 1}: "
                             f"{sorted(set(index.tolist()))}")
        return index.astype(np.int64)

    def unpack(self, configuration):
        """`(index, positions (natoms, 3), cell (3, 3))` of one configuration."""
        x = np.asarray(configuration, dtype=np.float64)
        index = int(self.indices(x[None])[0])
        n = self.natoms[index]
        return index, x[10:10 + 3 * n].reshape(n, 3), x[1:10].reshape(3, 3)

    def split(self, configurations):
        """`{index: (rows, positions (m, natoms, 3), cells (m, 3, 3))}` for each structure
        present."""
        x = np.asarray(configurations, dtype=np.float64)
        index = self.indices(x)
        out = {}
        for s in np.unique(index):
            rows = np.flatnonzero(index == s)
            n = self.natoms[s]
            out[int(s)] = (rows, x[rows, 10:10 + 3 * n].reshape(-1, n, 3),
                           x[rows, 1:10].reshape(-1, 3, 3))
        return out


# ---------------------------------------------------------------------------- the four parts
class MultiStructureExplorer(Explorer):
    """MD of every structure (one `ASEMDExplorer` each, same ensemble and settings).

    Structure `s` is explored with the seed `seed * 1000 + s`; a structure whose every
    trajectory failed at once contributes no frame (counted in `empty`).
    """

    def __init__(self, ensemble, structure_set, **explorer_kwargs):
        self.structure_set = structure_set
        self.explorers = [ASEMDExplorer(ensemble, atoms, **explorer_kwargs)
                          for atoms in structure_set.atoms]
        # One calculator (one traced model function) for every structure.
        for explorer in self.explorers[1:]:
            explorer.calculator = self.explorers[0].calculator
        self.empty = []

    def explore(self, iteration, seed):
        frames, self.empty = [], []
        for s, explorer in enumerate(self.explorers):
            try:
                x = explorer.explore(iteration, int(seed) * 1000 + s)
            except RuntimeError:
                self.empty.append(self.structure_set.names[s])
                continue
            frames.append(self.structure_set.pack_batch(s, x))
        if not frames:
            raise RuntimeError(f"MD exploration at iteration {iteration} produced no frame for "
                               "any structure")
        return np.concatenate(frames)


class MultiStructureExaminer(Examiner):
    """Force deviation (max over atoms of the member spread) of configurations of any
    structure."""

    def __init__(self, ensemble, structure_set, batch_size=32):
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"`ensemble` must be an Ensemble; received {type(ensemble).__name__}")
        self.ensemble = ensemble
        self.structure_set = structure_set
        self.batch_size = check_positive_int("batch_size", batch_size)

    def examine(self, configurations):
        out = np.full(len(configurations), np.nan)
        for s, (rows, positions, cells) in self.structure_set.split(configurations).items():
            forces = _member_forces(self.ensemble.members, positions, cells,
                                    self.structure_set.atom_types[s], self.batch_size)
            out[rows] = max_vector_deviation(forces)
        return out


class MultiStructureLabeller(Labeller):
    """EMT (or any ASE calculator) labels of configurations of any structure; forces padded.

    `calls` counts the configurations given to the calculator; `calls_per_structure` per name.
    """

    def __init__(self, structure_set, calculator=None):
        self.structure_set = structure_set
        self.labellers = [EMTLabeller(atoms, calculator=calculator)
                          for atoms in structure_set.atoms]

    @property
    def calls(self):
        return sum(labeller.calls for labeller in self.labellers)

    @property
    def calls_per_structure(self):
        return {name: labeller.calls for name, labeller in
                zip(self.structure_set.names, self.labellers, strict=True)}

    def label(self, configuration):
        s, positions, cell = self.structure_set.unpack(configuration)
        label = self.labellers[s].label(pack_configuration(positions, cell))
        force = np.zeros((self.structure_set.max_natoms, 3))
        force[:len(positions)] = label["force"]
        return {**label, "force": force}


class MultiStructureTrainer(PotentialEnsembleTrainer):
    """`PotentialEnsembleTrainer` on one `System` per structure (batches drawn per structure,
    weighted by its number of labels)."""

    def __init__(self, ensemble, structure_set, **kwargs):
        super().__init__(ensemble, np.zeros(0, np.int64), structure_set.type_map, **kwargs)
        self.structure_set = structure_set

    def systems(self, data):
        return labelled_systems(self.structure_set, data.configurations, data.labels)


def labelled_systems(structure_set, configurations, labels):
    """One `System` per structure present in `configurations` (labels unpadded)."""
    systems = []
    for s, (rows, positions, cells) in structure_set.split(configurations).items():
        n = structure_set.natoms[s]
        virial = labels.get("virial")
        systems.append(System(
            coord=positions, box=cells, energy=np.asarray(labels["energy"])[rows],
            force=np.asarray(labels["force"])[rows, :n],
            virial=None if virial is None else np.asarray(virial)[rows],
            atom_types=structure_set.atom_types[s], type_map=structure_set.type_map,
            path=structure_set.names[s]))
    return systems


def per_structure_selector(structure_set, cap, base=None):
    """A selector choosing at most `cap` candidates of each structure (by `base`, default
    `random_selector`)."""
    cap = check_positive_int("cap", cap)
    base = base or random_selector

    def select(candidates, num, rng):
        index = structure_set.indices(candidates, "candidates")
        chosen = []
        for s in range(len(structure_set)):
            rows = np.flatnonzero(index == s)
            if len(rows):
                pick = base(candidates[rows], min(cap, len(rows)), rng)
                chosen.extend(rows[np.asarray(pick, dtype=np.int64)].tolist())
        # num (the learner's cap) is cap times the number of structures: never binding.
        return np.sort(np.asarray(chosen, dtype=np.int64))

    return select


# ---------------------------------------------------------------------------- reference data
def emt_md_frames(structure, num_frames, *, temperatures=(300.0, 600.0, 900.0, 1200.0),
                  max_strain=0.03, sample_every=10, burn_in=20, timestep_fs=2.0, friction=0.02,
                  type_map=None, calculator=None, seed=0):
    """`num_frames` EMT-labelled frames of Langevin MD *with EMT itself* (the reference data of
    a structure: held-out test frames, or the random-frames baseline).

    Trajectories cycle over `temperatures`, each from the crystal in a randomly strained box,
    `burn_in` steps, then a frame every `sample_every` steps; as many trajectories as
    temperatures (frames split evenly). Returns a `System` (virials included).
    """
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    num_frames = check_positive_int("num_frames", num_frames)
    reference = structure_atoms(structure)
    symbols = reference.get_chemical_symbols()
    type_map = list(type_map) if type_map is not None else sorted(set(symbols))
    temperatures = [float(t) for t in temperatures]
    per_trajectory = math.ceil(num_frames / len(temperatures))
    coord, box, energy, force, virial = [], [], [], [], []
    for j, temperature in enumerate(temperatures):
        rng = np.random.default_rng([int(seed), j, 41])
        atoms = reference.copy()
        eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(np.asarray(atoms.get_cell()) @ (np.eye(3) + eps), scale_atoms=True)
        atoms.calc = calculator() if calculator is not None else EMT()
        thermalize(atoms, temperature, rng)
        atoms.set_constraint(FixCom())
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, fixcm=False, rng=rng)
        dyn.run(burn_in)
        for _ in range(min(per_trajectory, num_frames - len(coord))):
            dyn.run(sample_every)
            coord.append(atoms.get_positions())
            box.append(np.asarray(atoms.get_cell()))
            energy.append(atoms.get_potential_energy())
            force.append(atoms.get_forces(apply_constraint=False))
            virial.append(-atoms.get_volume() * atoms.get_stress(voigt=False))
    return System(coord=np.array(coord), box=np.array(box), energy=np.array(energy),
                  force=np.array(force), virial=np.array(virial),
                  atom_types=np.array([type_map.index(s) for s in symbols], np.int64),
                  type_map=type_map, path=structure if isinstance(structure, str) else None)


# ---------------------------------------------------------------------------- the table
def structure_counts(learner, structure_set, iteration):
    """Per-structure figure-2 counts of `iteration` from the run's files:
    `{name: {explored, accurate, candidate, failed, selected, labelled, label_failures}}`."""
    it = learner.iteration_dir(iteration)
    with np.load(os.path.join(it, "explored.npz")) as f:
        configurations = f["configurations"]
    with np.load(os.path.join(it, "examined.npz")) as f:
        classes, selected = f["classes"], f["selected"]
    with open(os.path.join(it, "labelled.json"), encoding="utf-8") as f:
        labelled = json.load(f)
    index = structure_set.indices(configurations)
    key_structure = {configuration_key(configurations[i]): int(index[i]) for i in selected}
    out = {}
    for s, name in enumerate(structure_set.names):
        mine = index == s
        out[name] = {
            "explored": int(mine.sum()),
            "accurate": int(np.sum(mine & (classes == ACCURATE))),
            "candidate": int(np.sum(mine & (classes == CANDIDATE))),
            "failed": int(np.sum(mine & (classes == FAILED))),
            "selected": int(np.sum(index[selected] == s)) if len(selected) else 0,
            "labelled": sum(key_structure.get(k) == s for k in labelled["labelled"]),
            "label_failures": sum(key_structure.get(k) == s for k in labelled["failed"]),
        }
    return out


def structure_table(log, structure_set):
    """Rows `(iteration, structure, counts..., test errors)` and per-structure totals from the
    reports of a multi-structure run (explored totals exclude iteration 0, the initial set)."""
    rows, totals = [], {}
    for report in log:
        per = report["evaluation"].get("structures", {})
        for name in structure_set.names:
            row = {"iteration": report["iteration"], "structure": name, **per.get(name, {})}
            rows.append(row)
            t = totals.setdefault(name, {k: 0 for k in COUNT_KEYS} | {"initial_labels": 0})
            for k in COUNT_KEYS:
                if report["iteration"] > 0:
                    t[k] += int(row.get(k, 0))
            if report["iteration"] == 0:
                t["initial_labels"] += int(row.get("labelled", 0))
    for name, t in totals.items():
        t["total_labels"] = t["initial_labels"] + t["labelled"]
        last = [r for r in rows if r["structure"] == name][-1]
        for k in ("test_force_rmse", "test_energy_rmse_per_atom"):
            if k in last:
                t[k] = last[k]
    return rows, totals


def format_structure_table(report, structure_set):
    """Lines of one iteration's per-structure table."""
    per = report["evaluation"].get("structures", {})
    lines = [f"  {'structure':<11} {'explored':>8} {'accurate':>8} {'candidate':>9} "
             f"{'failed':>6} {'labelled':>8} {'test F RMSE (meV/Å)':>20}"]
    for name in structure_set.names:
        r = per.get(name, {})
        rmse = r.get("test_force_rmse")
        lines.append(f"  {name:<11} {r.get('explored', 0):8d} {r.get('accurate', 0):8d} "
                     f"{r.get('candidate', 0):9d} {r.get('failed', 0):6d} "
                     f"{r.get('labelled', 0):8d} "
                     f"{'-' if rmse is None else f'{1e3 * rmse:.1f}':>20}")
    return "\n".join(lines)


def plot_structure_table(log, structure_set, path):
    """PNG of the figure-2 table: labelled against explored per structure, the candidate
    fraction per iteration, and the test force RMSE per iteration (per structure)."""
    rows, totals = structure_table(log, structure_set)
    names = structure_set.names
    fig, axes = subplots(1, 3, figsize=(16, 4.5))
    x = np.arange(len(names))
    explored = [totals[n]["explored"] for n in names]
    labelled = [totals[n]["total_labels"] for n in names]
    axes[0].bar(x - 0.2, explored, 0.4, label="explored")
    axes[0].bar(x + 0.2, labelled, 0.4, label="labelled (incl. initial)")
    axes[0].set_xticks(x, names, rotation=30, ha="right")
    axes[0].set_yscale("log")
    axes[0].set_title("configurations explored vs labelled")
    axes[0].legend()
    for name in names:
        mine = [r for r in rows if r["structure"] == name and r["iteration"] > 0]
        its = [r["iteration"] for r in mine]
        axes[1].plot(its, [r.get("candidate", 0) / max(r.get("explored", 0), 1) for r in mine],
                     "o-", label=name)
        rmse = [(r["iteration"], r["test_force_rmse"]) for r in rows
                if r["structure"] == name and "test_force_rmse" in r]
        if rmse:
            axes[2].plot(*zip(*rmse, strict=True), "o-", label=name)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("candidate fraction")
    axes[1].set_title("candidates / explored")
    axes[1].legend(fontsize=7)
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("force RMSE (eV/Å)")
    axes[2].set_yscale("log")
    axes[2].set_title("ensemble mean, held-out EMT MD frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------- assembly
def build_multi_potential_learner(structures, directory, *, num_members=4, model_kwargs=None,
                                  trust_levels=(0.05, 0.15), max_iterations=5,
                                  labels_per_structure=10, num_initial_per_structure=5,
                                  converge_fraction=0.9, min_iterations=2,
                                  temperatures=(300.0, 600.0, 900.0, 1200.0), max_strain=0.03,
                                  num_trajectories=2, md_steps=100, sample_every=10,
                                  driver="first", ramp=False, train_steps=500, batch_size=1,
                                  learning_rate=1e-3, stop_learning_rate=1e-5, calculator=None,
                                  labeller=None, test_systems=None, type_map=None, seed=0,
                                  verbose=1):
    """Assembles a DP-GEN `ConcurrentLearner` over several structures with one shared ensemble.

    Args:
        structures: list of `STRUCTURES` names, or a comma-separated string, or "all"
            (`DEFAULT_STRUCTURES`).
        directory: run directory (an existing run is resumed).
        labels_per_structure: most labels per structure and iteration (the iteration's cap is
            this times the number of structures).
        num_initial_per_structure: labelled frames of iteration 0 per structure (strained,
            displaced crystals).
        num_trajectories, md_steps, sample_every, temperatures, max_strain, driver, ramp: MD per
            structure and iteration (see `ASEMDExplorer`).
        test_systems: optional `{name: System}` of held-out frames (see `emt_md_frames`); each
            iteration reports the ensemble-mean errors per structure and over all.
        labeller: a ready `Labeller` (e.g. a wrapped `MultiStructureLabeller`).
        type_map: element names (default: the structures' elements, sorted).
        Others: see `build_potential_learner` and `ConcurrentLearner`.

    Returns:
        `(learner, ensemble, labeller)`; `labeller.structure_set` is the `StructureSet`.
    """
    import keras

    lo, hi = check_trust_levels(trust_levels)
    structure_set = StructureSet(structures, type_map=type_map)
    labels_per_structure = check_positive_int("labels_per_structure", labels_per_structure)
    num_initial_per_structure = check_positive_int("num_initial_per_structure",
                                              num_initial_per_structure)
    if test_systems is not None:
        test_systems = dict(test_systems)
        unknown = sorted(set(test_systems) - set(structure_set.names))
        if unknown:
            raise ValueError(f"`test_systems` has structures {unknown} not in the run's "
                             f"{structure_set.names}")
    # The structure index is part of every stored configuration: a run directory belongs to
    # one list of structures (and type map).
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "structures.json")
    settings = {"structures": structure_set.names, "type_map": structure_set.type_map}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != settings:
            raise ValueError(f"`directory` {directory!r} holds a run of {previous}; received "
                             f"{settings}; use a new directory")
    else:
        write_json(path, settings)
    model_kwargs = dict(model_kwargs or {})

    def factory(member_seed):
        model = DeepPotential(structure_set.type_map, **model_kwargs)
        model.build()
        return model

    ensemble = Ensemble.from_factory(factory, num_members=num_members,
                                     seeds=[seed * 100 + k for k in range(num_members)])
    keras.utils.set_random_seed(seed)
    explorer = MultiStructureExplorer(
        ensemble, structure_set, driver=driver, ramp=ramp, temperatures=temperatures,
        max_strain=max_strain, num_trajectories=num_trajectories, num_steps=md_steps,
        sample_every=sample_every)
    examiner = MultiStructureExaminer(ensemble, structure_set)
    if labeller is None:
        labeller = MultiStructureLabeller(structure_set, calculator=calculator)
    labeller.structure_set = structure_set
    trainer = MultiStructureTrainer(ensemble, structure_set, steps=train_steps,
                                    batch_size=batch_size, learning_rate=learning_rate,
                                    stop_learning_rate=stop_learning_rate, seed=seed)
    initial = np.concatenate([
        structure_set.pack_batch(s, initial_configurations(
            atoms, num_initial_per_structure, max_strain=max_strain, seed=seed * 1000 + s))
        for s, atoms in enumerate(structure_set.atoms)])
    learner = None

    def evaluator(iteration):
        per = structure_counts(learner, structure_set, iteration)
        out = {}
        if test_systems:
            for name, system in test_systems.items():
                per[name].update({f"test_{k}": v for k, v in
                                  ensemble_errors(ensemble, [system]).items()})
            out.update({f"test_{k}": v for k, v in
                        ensemble_errors(ensemble, list(test_systems.values())).items()})
        out["structures"] = per
        if verbose:
            print(f"iteration {iteration}, per structure:\n"
                  + format_structure_table({"evaluation": out}, structure_set), flush=True)
        return out

    learner = ConcurrentLearner(
        explorer, examiner, labeller, trainer, directory, trust_levels=(lo, hi),
        max_iterations=max_iterations,
        max_labels_per_iteration=labels_per_structure * len(structure_set),
        converge_fraction=converge_fraction, min_iterations=min_iterations,
        initial_configurations=initial,
        selector=per_structure_selector(structure_set, labels_per_structure),
        evaluator=evaluator, seed=seed, verbose=verbose)
    return learner, ensemble, labeller
