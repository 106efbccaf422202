r"""Labelled atomistic data sets: configurations of metals labelled with an ASE calculator.

ASE's effective-medium theory (EMT) calculator for Al, Cu and Al–Cu stands in for DFT: it is cheap
(tens of µs per atom), smooth and ships with ASE, so data sets are generated locally, never
downloaded. Any other ASE calculator can be passed instead.

Each data set mixes
- Langevin molecular dynamics at several temperatures in randomly strained periodic boxes (frames
  spaced by a few MD steps after a short equilibration), and
- strained lattices with random Gaussian displacements,
optionally with one vacancy, on FCC (random occupancy for alloys), L1_2 (A3B) and B2 (CsCl)
lattices of several sizes. Frames with the same atoms are grouped into one DeePMD `npy` system
(atoms sorted by element, so the type vector depends only on the composition), e.g. `Al32`, `Al31`,
`Al24Cu8` under the data set's root directory.

Data sets are cached under `~/.cache/mlcmk/deepmd` (`$MLCMK_CACHE_DIR/deepmd` when the environment
variable is set, or the `cache_dir` argument) in a directory keyed by a hash of every generation
parameter, and generated only when missing. The same parameters and seed give the same frames.

Example:
```python
from mlcmk.data import emt, read_systems
paths = emt.al_dataset(n_train=1000, n_test=200)
train, test = read_systems(paths.train), read_systems(paths.test)
```
"""

import collections
import hashlib
import json
import os
import shutil

import numpy as np

from mlcmk._validation import (
    check_number,
    check_positive_int,
    check_positive_ints,
    check_positive_number,
)
from mlcmk.data.atoms import thermalize
from mlcmk.data.deepmd import write_system
from mlcmk.io import temporary_sibling

# Bumped whenever the generator changes what a given set of parameters produces.
_GENERATOR_VERSION = 1

STRUCTURES = ("fcc", "L12", "B2")

DatasetPaths = collections.namedtuple("DatasetPaths", ["train", "test"])


def default_cache_dir():
    """`$MLCMK_CACHE_DIR/deepmd` if the variable is set, else `~/.cache/mlcmk/deepmd`."""
    root = os.environ.get("MLCMK_CACHE_DIR")
    if root:
        return os.path.join(os.path.expanduser(root), "deepmd")
    return os.path.join(os.path.expanduser("~"), ".cache", "mlcmk", "deepmd")


def _import_ase():
    try:
        import ase  # noqa: F401
        from ase.calculators.emt import EMT  # noqa: F401
    except ImportError as e:  # pragma: no cover - ASE is in the `md` and `test` extras
        raise ImportError(
            "mlcmk.data.emt needs ASE; install it with `pip install mlcmk[md]`"
        ) from e


def _atomic_volume(symbol, lattice_constants):
    """Volume per atom from the given FCC lattice constant or ASE's reference state."""
    from ase.data import atomic_numbers, reference_states

    if symbol in lattice_constants:
        return lattice_constants[symbol] ** 3 / 4.0
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element {symbol!r} in `elements`")
    state = reference_states[atomic_numbers[symbol]]
    if state is not None and state.get("symmetry") == "fcc":
        return state["a"] ** 3 / 4.0
    if state is not None and state.get("symmetry") == "bcc":
        return state["a"] ** 3 / 2.0
    raise ValueError(
        f"no FCC/BCC reference lattice constant for {symbol!r}; pass "
        f"lattice_constants={{{symbol!r}: a}} (FCC lattice constant in Å)"
    )


def _base_structure(structure, size, elements, fractions, lattice_constants, rng):
    """A perfect periodic crystal, atoms sorted by element order in `elements`."""
    from ase import Atoms

    if structure == "fcc":
        basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    elif structure == "L12":
        basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    else:  # B2
        basis = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    cells = np.array(
        [[i, j, k] for i in range(size[0]) for j in range(size[1]) for k in range(size[2])]
    )
    fractional = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    sublattice = np.tile(np.arange(len(basis)), len(cells))
    n = len(fractional)

    if len(elements) == 1:
        species = np.zeros(n, dtype=int)
    elif structure == "fcc":
        fraction = fractions[rng.integers(len(fractions))]
        n_second = int(round(fraction * n))
        species = np.zeros(n, dtype=int)
        species[rng.permutation(n)[:n_second]] = 1
    else:
        # Ordered: L12 puts the minority species on the cube corners (A3B), B2 one species per
        # simple-cubic sublattice; which element takes which sublattice is drawn at random.
        minority = int(rng.integers(2))
        species = np.where(sublattice == 0, minority, 1 - minority)
    counts = np.bincount(species, minlength=len(elements))
    volume = (
        sum(
            c * _atomic_volume(el, lattice_constants)
            for c, el in zip(counts, elements, strict=True)
        )
        / n
    )  # Vegard, per atom
    a = (volume * len(basis)) ** (1.0 / 3.0)
    order = np.argsort(species, kind="stable")
    symbols = [elements[s] for s in species[order]]
    cell = np.diag(np.asarray(size, dtype=float) * a)
    return Atoms(
        symbols,
        scaled_positions=fractional[order] / np.asarray(size, dtype=float),
        cell=cell,
        pbc=True,
    )


def _strain(atoms, max_strain, rng):
    """Applies a random symmetric strain with components uniform in [-max_strain, max_strain]."""
    eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(np.asarray(atoms.get_cell()) @ (np.eye(3) + eps), scale_atoms=True)


def _make_calculator(calculator):
    if calculator is None:
        from ase.calculators.emt import EMT

        return EMT()
    if isinstance(calculator, type) or not hasattr(calculator, "get_potential_energy"):
        if not callable(calculator):
            raise TypeError(
                "`calculator` must be an ASE calculator or a zero-argument factory of one; "
                f"received {calculator!r}"
            )
        return calculator()
    return calculator


def _calculator_key(calculator):
    if calculator is None:
        return "ase.calculators.emt.EMT"
    calc = _make_calculator(calculator)
    params = calc.todict() if hasattr(calc, "todict") else {}
    return f"{type(calc).__module__}.{type(calc).__qualname__}:" + json.dumps(
        params, sort_keys=True, default=str
    )


def _label(atoms):
    """Energy, forces, cell and virial `-V * stress` of `atoms` with its attached calculator."""
    return (
        atoms.get_positions().copy(),
        np.asarray(atoms.get_cell()).copy(),
        float(atoms.get_potential_energy()),
        atoms.get_forces(apply_constraint=False).copy(),
        -atoms.get_volume() * atoms.get_stress(voigt=False),
    )


def _validate(params):
    elements = params["elements"]
    if (
        not isinstance(elements, (list, tuple))
        or not 1 <= len(elements) <= 2
        or len(set(elements)) != len(elements)
        or not all(isinstance(e, str) for e in elements)
    ):
        raise ValueError(
            f"`elements` must be one or two distinct element symbols; received {elements!r}"
        )
    for s in params["structures"]:
        if s not in STRUCTURES:
            raise ValueError(f"`structures` entries must be in {STRUCTURES}; received {s!r}")
        if s in ("L12", "B2") and len(elements) != 2:
            raise ValueError(f"structure {s!r} needs two `elements`; received {elements!r}")
    if not params["structures"]:
        raise ValueError("`structures` is empty")
    if any(len(size) != 3 for size in params["sizes"]):
        raise ValueError(f"`sizes` entries must be 3 positive ints; received {params['sizes']!r}")
    if not params["sizes"]:
        raise ValueError("`sizes` is empty")
    if not params["temperatures"]:
        raise ValueError("`temperatures` is empty")
    for element in elements:
        _atomic_volume(element, params["lattice_constants"])


def _generate_frames(params, calculator):
    """Yields `(atoms_types_key, labels)` for every frame, deterministically from the seed."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    elements = list(params["elements"])
    n_frames = params["n_frames"]
    n_md = int(round(params["md_fraction"] * n_frames))
    n_md_traj = -(-n_md // params["frames_per_trajectory"])
    seeds = np.random.SeedSequence(params["seed"])

    def configuration(rng):
        structure = params["structures"][rng.integers(len(params["structures"]))]
        size = params["sizes"][rng.integers(len(params["sizes"]))]
        atoms = _base_structure(
            structure, tuple(size), elements, params["fractions"], params["lattice_constants"], rng
        )
        if rng.random() < params["vacancy_fraction"] and len(atoms) > 1:
            del atoms[int(rng.integers(len(atoms)))]
        _strain(atoms, params["max_strain"], rng)
        atoms.calc = calculator
        return atoms

    # MD: temperatures taken in turn so that each is equally represented.
    children = seeds.spawn(n_md_traj + (n_frames - n_md))
    remaining = n_md
    for j in range(n_md_traj):
        rng = np.random.default_rng(children[j])
        temperature = params["temperatures"][j % len(params["temperatures"])]
        atoms = configuration(rng)
        thermalize(atoms, temperature, rng)
        # The centre of mass stays fixed through a constraint (ASE's recommended replacement of
        # Langevin's fixcm); the labels are the unconstrained forces.
        atoms.set_constraint(FixCom())
        dyn = Langevin(
            atoms,
            params["timestep_fs"] * units.fs,
            temperature_K=temperature,
            friction=params["friction"] / units.fs,
            fixcm=False,
            rng=rng,
        )
        if params["equilibration"]:
            dyn.run(params["equilibration"])
        for _ in range(min(params["frames_per_trajectory"], remaining)):
            dyn.run(params["stride"])
            yield atoms.get_chemical_symbols(), _label(atoms)
            remaining -= 1
    # Strained lattices with Gaussian displacements of a random width up to max_displacement.
    for j in range(n_md_traj, len(children)):
        rng = np.random.default_rng(children[j])
        atoms = configuration(rng)
        sigma = rng.uniform(0.0, params["max_displacement"])
        atoms.positions += sigma * rng.standard_normal(atoms.positions.shape)
        yield atoms.get_chemical_symbols(), _label(atoms)


def generate_dataset(
    *,
    elements=("Al",),
    structures=None,
    sizes=((2, 2, 2),),
    n_frames=200,
    temperatures=(300.0, 600.0, 900.0, 1200.0),
    md_fraction=0.8,
    frames_per_trajectory=10,
    stride=5,
    equilibration=40,
    timestep_fs=2.0,
    friction=0.02,
    max_strain=0.03,
    max_displacement=0.15,
    vacancy_fraction=0.0,
    fractions=(0.25, 0.5, 0.75),
    lattice_constants=None,
    seed=0,
    calculator=None,
    calculator_key=None,
    cache_dir=None,
    name=None,
):
    """Generates (or finds in the cache) a labelled data set and returns its root directory.

    Args:
        elements: one or two element symbols, e.g. `("Al",)` or `("Al", "Cu")`.
        structures: lattices drawn at random per configuration, from `"fcc"` (random occupancy for
            two elements, drawn from `fractions`), `"L12"` (A3B) and `"B2"` (CsCl; two elements);
            default `("fcc",)` for one element, `("fcc", "L12", "B2")` for two.
        sizes: repeats of the conventional cell (FCC/L12: 4 atoms, B2: 2 atoms), drawn at random.
        n_frames: total number of frames.
        temperatures: Langevin temperatures in K, taken in turn by successive MD trajectories.
        md_fraction: share of frames from MD; the rest are displaced lattices.
        frames_per_trajectory: MD frames per trajectory (each from a new configuration and box).
        stride: MD steps between frames.
        equilibration: MD steps before the first frame.
        timestep_fs: MD time step, fs.
        friction: Langevin friction, 1/fs.
        max_strain: bound of the random symmetric strain of every box.
        max_displacement: bound (Å) of the Gaussian displacement width of the lattice frames.
        vacancy_fraction: probability that a configuration has one atom removed.
        fractions: alloy fractions of the second element on random FCC lattices.
        lattice_constants: dict of FCC lattice constants (Å) per element; default ASE's reference
            states (Al 4.05, Cu 3.61), Vegard's law for alloys.
        seed: int; the same parameters and seed give identical data.
        calculator: ASE calculator or a zero-argument factory of one; default `EMT()`.
        calculator_key: string identifying the calculator in the cache key; default its class and
            `todict()` parameters. Give one when those do not identify the calculator.
        cache_dir: directory holding cached data sets; default `default_cache_dir()`.
        name: prefix of the data set's directory name; default the elements joined by `-`.

    Returns:
        The path of the data set's root directory, holding one DeePMD system per composition and
        `dataset.json` with the parameters; read it with `mlcmk.data.read_systems`.
    """
    _import_ase()
    if structures is None:
        structures = ("fcc",) if len(elements) == 1 else STRUCTURES
    params = {
        "elements": list(elements),
        "structures": list(structures),
        "sizes": [check_positive_ints("sizes", s) for s in sizes],
        "n_frames": check_positive_int("n_frames", n_frames),
        "temperatures": [check_positive_number("temperatures", t) for t in temperatures],
        "md_fraction": check_number("md_fraction", md_fraction, 0, high=1),
        "frames_per_trajectory": check_positive_int("frames_per_trajectory",
                                                    frames_per_trajectory),
        "stride": check_positive_int("stride", stride),
        "equilibration": check_positive_int("equilibration", equilibration, minimum=0),
        "timestep_fs": check_positive_number("timestep_fs", timestep_fs),
        "friction": check_positive_number("friction", friction),
        "max_strain": check_number("max_strain", max_strain, 0),
        "max_displacement": check_number("max_displacement", max_displacement, 0),
        "vacancy_fraction": check_number("vacancy_fraction", vacancy_fraction, 0, high=1),
        "fractions": [check_number("fractions", f, 0, strict=True, high=1, strict_high=True)
                      for f in fractions],
        "lattice_constants": {str(k): float(v) for k, v in (lattice_constants or {}).items()},
        "seed": int(seed),
    }
    _validate(params)
    key = {
        **params,
        "calculator": calculator_key or _calculator_key(calculator),
        "version": _GENERATOR_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = os.path.abspath(os.fspath(cache_dir or default_cache_dir()))
    path = os.path.join(cache_dir, f"{name or '-'.join(params['elements'])}-{digest}")
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return path

    os.makedirs(cache_dir, exist_ok=True)
    tmp = temporary_sibling(path)
    os.mkdir(tmp)  # mkdir's permissions: a shared cache stays readable to the group
    try:
        calc = _make_calculator(calculator)
        groups = {}
        for symbols, labels in _generate_frames(params, calc):
            groups.setdefault(tuple(symbols), []).append(labels)
        summary = []
        for symbols, frames in groups.items():
            type_map = list(params["elements"])
            atom_types = np.asarray([type_map.index(s) for s in symbols])
            coord, box, energy, force, virial = (np.asarray(a) for a in zip(*frames, strict=True))
            system = write_system(
                os.path.join(tmp, _formula(symbols, type_map)),
                coord=coord,
                box=box,
                energy=energy,
                force=force,
                virial=virial,
                atom_types=atom_types,
                type_map=type_map,
            )
            summary.append(
                {"name": system.name, "natoms": system.natoms, "nframes": system.nframes}
            )
        with open(os.path.join(tmp, "dataset.json"), "w", encoding="utf-8") as f:
            json.dump({"parameters": key, "systems": summary}, f, indent=2, sort_keys=True)
            f.write("\n")
        try:
            os.rename(tmp, path)
        except OSError:
            # Generated concurrently by another process: keep the finished one.
            if not os.path.isfile(os.path.join(path, "dataset.json")):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _formula(symbols, type_map):
    counts = collections.Counter(symbols)
    return "".join(f"{el}{counts[el]}" for el in type_map if counts[el])


def al_dataset(n_train=1000, n_test=200, *, seed=0, cache_dir=None, **kwargs):
    """EMT-labelled FCC Al, 32 atoms, as in `../shared/ANCHORS.md` (DeePMD-kit comparison).

    Training frames: Langevin MD at 300, 600, 900, 1200 K in randomly strained boxes plus strained
    and displaced lattices. Held-out test frames: other seeds (`seed + 10_000`) and temperatures
    450, 750, 1050 K.

    Returns:
        `DatasetPaths(train, test)`, root directories for `mlcmk.data.read_systems`.
    """
    common = {"elements": ("Al",), "sizes": ((2, 2, 2),), "cache_dir": cache_dir, **kwargs}
    train = generate_dataset(n_frames=n_train, seed=seed, **common)
    test = generate_dataset(
        n_frames=n_test, seed=seed + 10_000, temperatures=(450.0, 750.0, 1050.0), **common
    )
    return DatasetPaths(train, test)


def alcu_dataset(n_train=1000, n_test=200, *, seed=0, cache_dir=None, **kwargs):
    """EMT-labelled Al–Cu: random FCC alloys (25/50/75 % Cu), L1_2 and B2, 10 % with a vacancy.

    Sizes 2x2x2 conventional cells: 32 atoms on FCC/L1_2, 16 on B2 (31 and 15 with a vacancy), so
    several compositions and sizes train together. Training at 300–1200 K, test from other seeds
    (`seed + 10_000`) at 450, 750, 1050 K.

    Returns:
        `DatasetPaths(train, test)`.
    """
    common = {
        "elements": ("Al", "Cu"),
        "sizes": ((2, 2, 2),),
        "vacancy_fraction": 0.1,
        "cache_dir": cache_dir,
        **kwargs,
    }
    train = generate_dataset(n_frames=n_train, seed=seed, **common)
    test = generate_dataset(
        n_frames=n_test, seed=seed + 10_000, temperatures=(450.0, 750.0, 1050.0), **common
    )
    return DatasetPaths(train, test)
