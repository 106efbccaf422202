r"""Reader and writer for the DeePMD-kit `npy` system format.

A *system* is a directory that holds frames of one set of atoms (fixed number, fixed types):

```
system/
  type.raw          natoms integers, one per line: the type index of each atom
  type_map.raw      the element name of each type index, one per line
  nopbc             empty file, present only for free (non-periodic) boundaries
  set.000/
    coord.npy       (nframes, natoms * 3) Cartesian coordinates, Å
    box.npy         (nframes, 9) cell vectors as rows, Å (absent with `nopbc`)
    energy.npy      (nframes,) total energy, eV
    force.npy       (nframes, natoms * 3) forces, eV/Å
    virial.npy      (nframes, 9) virial, eV (optional)
  set.001/ ...
```

The virial follows DeePMD's sign convention, $W = -\partial E / \partial \varepsilon = -V \sigma$
with $\sigma$ the stress in ASE's convention (positive under tension) and $V$ the cell volume.

Every problem found while reading (missing file, malformed array, wrong shape, frames that do not
match between files, NaN or infinity, a type index or element outside the type map) raises
`ValueError` naming the file and the problem.

Reference: DeePMD-kit documentation, "Data: System" and "Formats of a data system".
"""

import dataclasses
import os

import numpy as np

from mlcmk._validation import check_number
from mlcmk.io import atomic_directory

_REQUIRED_SET_FILES = ("coord.npy", "energy.npy", "force.npy")


@dataclasses.dataclass(eq=False)
class System:
    """Frames of one set of atoms, as NumPy arrays in DeePMD units (Å, eV, eV/Å).

    Attributes:
        coord: float64 `(nframes, natoms, 3)` Cartesian coordinates.
        box: float64 `(nframes, 3, 3)` cell vectors as rows, or `None` for free boundaries.
        energy: float64 `(nframes,)` total energies.
        force: float64 `(nframes, natoms, 3)` forces.
        virial: float64 `(nframes, 3, 3)` virials (`-V * stress`), or `None`.
        atom_types: int64 `(natoms,)` type index of each atom into `type_map`.
        type_map: list of element names.
        path: the directory the system was read from, or `None`.
    """

    coord: np.ndarray
    box: np.ndarray | None
    energy: np.ndarray
    force: np.ndarray
    virial: np.ndarray | None
    atom_types: np.ndarray
    type_map: list
    path: str | None = None

    def __post_init__(self):
        self.type_map = [str(name) for name in self.type_map]
        self.atom_types = _check_atom_types(self.atom_types, self.type_map, "atom_types")
        natoms = self.atom_types.shape[0]
        self.coord = _check_array(self.coord, "coord", (None, natoms, 3))
        nframes = self.coord.shape[0]
        self.energy = _check_array(self.energy, "energy", (nframes,))
        self.force = _check_array(self.force, "force", (nframes, natoms, 3))
        if self.box is not None:
            self.box = _check_array(self.box, "box", (nframes, 3, 3))
            volume = np.linalg.det(self.box)
            if np.any(np.abs(volume) <= 0.0):
                frame = int(np.argmin(np.abs(volume)))
                raise ValueError(
                    f"`box` of frame {frame} is singular (volume {volume[frame]!r}); "
                    "expected three independent cell vectors"
                )
        if self.virial is not None:
            self.virial = _check_array(self.virial, "virial", (nframes, 3, 3))

    @property
    def natoms(self):
        """Number of atoms in every frame."""
        return int(self.atom_types.shape[0])

    @property
    def nframes(self):
        """Number of frames."""
        return int(self.coord.shape[0])

    @property
    def periodic(self):
        """Whether the frames are periodic (have a box)."""
        return self.box is not None

    @property
    def name(self):
        """A short label: the directory name, or the formula."""
        if self.path:
            return os.path.basename(os.path.normpath(self.path))
        return self.formula

    @property
    def formula(self):
        """Element counts in type-map order, e.g. `Al24Cu8`."""
        counts = np.bincount(self.atom_types, minlength=len(self.type_map))
        return "".join(
            f"{name}{count}" for name, count in zip(self.type_map, counts, strict=True) if count
        )

    def __repr__(self):
        boundary = "periodic" if self.periodic else "free"
        virial = "with virial" if self.virial is not None else "no virial"
        return (
            f"System({self.name!r}, natoms={self.natoms}, nframes={self.nframes}, "
            f"{self.formula}, {boundary}, {virial})"
        )

    def subset(self, indices):
        """Returns a new `System` with the frames `indices` (an int array or a slice)."""
        if not isinstance(indices, slice):
            indices = np.asarray(indices)
            if indices.dtype == bool:
                indices = np.flatnonzero(indices)
            if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
                raise ValueError(
                    f"`indices` must be a 1-D integer array or a slice; received {indices!r}"
                )
        return System(
            coord=self.coord[indices],
            box=None if self.box is None else self.box[indices],
            energy=self.energy[indices],
            force=self.force[indices],
            virial=None if self.virial is None else self.virial[indices],
            atom_types=self.atom_types,
            type_map=list(self.type_map),
            path=self.path,
        )

    def split(self, fraction, seed=0):
        """Splits the frames at random into two systems.

        Args:
            fraction: float in (0, 1), share of frames in the first system.
            seed: int, seed of the permutation; the same seed gives the same split.

        Returns:
            `(first, second)`, with `round(fraction * nframes)` frames in `first` (at least one
            frame in each when `nframes >= 2`), frames in their original order within each.
        """
        fraction = check_number("fraction", fraction, 0, strict=True, high=1, strict_high=True)
        if self.nframes < 2:
            raise ValueError(
                f"cannot split system {self.name!r} with {self.nframes} frame(s); need at least 2"
            )
        n_first = min(max(int(round(fraction * self.nframes)), 1), self.nframes - 1)
        order = np.random.default_rng(seed).permutation(self.nframes)
        return self.subset(np.sort(order[:n_first])), self.subset(np.sort(order[n_first:]))

    def with_type_map(self, type_map):
        """Returns the system with `atom_types` re-indexed into the list of names `type_map`."""
        type_map = [str(name) for name in type_map]
        mapping = []
        for name in self.type_map:
            if name not in type_map:
                raise ValueError(
                    f"element {name!r} of system {self.name!r} is not in type_map={type_map!r}"
                )
            mapping.append(type_map.index(name))
        return dataclasses.replace(
            self, atom_types=np.asarray(mapping, dtype=np.int64)[self.atom_types], type_map=type_map
        )


def _check_atom_types(atom_types, type_map, what):
    if len(type_map) == 0:
        raise ValueError("`type_map` is empty; expected at least one element name")
    if len(set(type_map)) != len(type_map):
        raise ValueError(f"`type_map` has repeated names: {type_map!r}")
    atom_types = np.asarray(atom_types)
    if atom_types.ndim != 1 or atom_types.shape[0] == 0:
        raise ValueError(
            f"`{what}` must be a non-empty 1-D array of ints; received shape {atom_types.shape}"
        )
    if not np.issubdtype(atom_types.dtype, np.integer):
        raise ValueError(f"`{what}` must hold ints; received dtype {atom_types.dtype}")
    bad = (atom_types < 0) | (atom_types >= len(type_map))
    if np.any(bad):
        raise ValueError(
            f"`{what}` holds type index {int(atom_types[bad][0])} outside the type map "
            f"{type_map!r} (expected 0..{len(type_map) - 1})"
        )
    return atom_types.astype(np.int64)


def _check_array(value, what, shape):
    """Converts to float64 and checks the shape (None = any) and finiteness; names `what`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} cannot be read as float64 numbers: {e}") from None
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        expected = "(" + ", ".join("nframes" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{what} has shape {array.shape}; expected {expected}")
    if not np.all(np.isfinite(array)):
        index = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{what} holds a non-finite value {array[tuple(index)]!r} at index {tuple(index)}"
        )
    return array


# === Writing ===


def write_system(
    directory,
    *,
    coord,
    atom_types,
    type_map,
    energy,
    force,
    box=None,
    virial=None,
    set_size=None,
):
    """Writes frames as a DeePMD `npy` system, atomically.

    The system is written to a temporary directory next to `directory` and renamed into place, so a
    crash leaves either the previous contents or the complete new system. An existing `directory`
    is replaced only if it is a DeePMD system (holds `type.raw`) or empty.

    Args:
        directory: path of the system directory.
        coord: `(nframes, natoms, 3)` Cartesian coordinates, Å.
        atom_types: `(natoms,)` ints, type index of each atom into `type_map`.
        type_map: list of element names.
        energy: `(nframes,)` total energies, eV.
        force: `(nframes, natoms, 3)` forces, eV/Å.
        box: `(nframes, 3, 3)` cell vectors as rows, Å; `None` for free boundaries (writes the
            `nopbc` marker and no `box.npy`).
        virial: optional `(nframes, 3, 3)` virials `-V * stress`, eV.
        set_size: frames per `set.NNN` directory; `None` puts all frames in `set.000`.

    Returns:
        The `System` that was written.
    """
    system = System(
        coord=coord,
        box=box,
        energy=energy,
        force=force,
        virial=virial,
        atom_types=atom_types,
        type_map=type_map,
        path=os.fspath(directory),
    )
    nframes = system.nframes
    if set_size is None:
        set_size = nframes
    if not isinstance(set_size, (int, np.integer)) or set_size <= 0:
        raise ValueError(f"`set_size` must be a positive int or None; received {set_size!r}")
    for name in system.type_map:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"element names must be non-empty without spaces; received {name!r}")

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise ValueError(f"`directory` {directory!r} exists and is not a directory")
        if os.listdir(directory) and not os.path.exists(os.path.join(directory, "type.raw")):
            raise ValueError(
                f"`directory` {directory!r} exists, is not empty and is not a DeePMD system "
                "(no type.raw); refusing to replace it"
            )
    with atomic_directory(directory) as tmp:
        _write_raw(os.path.join(tmp, "type.raw"), [str(t) for t in system.atom_types])
        _write_raw(os.path.join(tmp, "type_map.raw"), system.type_map)
        if box is None:
            open(os.path.join(tmp, "nopbc"), "w").close()
        n = system.natoms
        for i, start in enumerate(range(0, nframes, set_size)):
            frames = slice(start, min(start + set_size, nframes))
            set_dir = os.path.join(tmp, f"set.{i:03d}")
            os.makedirs(set_dir)
            np.save(os.path.join(set_dir, "coord.npy"), system.coord[frames].reshape(-1, n * 3))
            np.save(os.path.join(set_dir, "energy.npy"), system.energy[frames])
            np.save(os.path.join(set_dir, "force.npy"), system.force[frames].reshape(-1, n * 3))
            if system.box is not None:
                np.save(os.path.join(set_dir, "box.npy"), system.box[frames].reshape(-1, 9))
            if system.virial is not None:
                np.save(os.path.join(set_dir, "virial.npy"), system.virial[frames].reshape(-1, 9))
    system.path = directory
    return system


def _write_raw(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# === Reading ===


def _read_raw(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().split()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from None


def _load_npy(path):
    if not os.path.isfile(path):
        raise ValueError(f"{path}: required file is missing")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # np.load raises several types for a broken file
        raise ValueError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(array, np.ndarray) or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{path}: expected a numeric array; found dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{path}: non-finite value {array[index]!r} at index {index}")
    return array


def _load_frames(path, width, nframes=None):
    """Loads `(nframes, width)` (`width=None`: `(nframes,)` or `(nframes, 1)`)."""
    array = _load_npy(path)
    if width is None:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(f"{path}: shape {array.shape}; expected (nframes,) or (nframes, 1)")
    else:
        if array.ndim == 1 and nframes == 1 and array.shape[0] == width:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"{path}: shape {array.shape}; expected (nframes, {width})")
    if array.shape[0] == 0:
        raise ValueError(f"{path}: holds no frames")
    if nframes is not None and array.shape[0] != nframes:
        raise ValueError(
            f"{path}: holds {array.shape[0]} frames but coord.npy of the same set holds {nframes}"
        )
    return array


def is_system(directory):
    """Whether `directory` looks like a DeePMD system (holds `type.raw`)."""
    return os.path.isfile(os.path.join(os.fspath(directory), "type.raw"))


def read_system(directory, type_map=None):
    """Reads a DeePMD `npy` system.

    Args:
        directory: path of the system directory.
        type_map: optional list of element names (the global type map of a training run). The
            system's `atom_types` are re-indexed into it; every element of the system must be in
            it. If the system has no `type_map.raw`, its `type.raw` indexes `type_map` directly.

    Returns:
        A `System`.

    Raises:
        ValueError: naming the file, for a missing required file, a malformed array, a wrong
            shape, frames that do not match between files, NaN/inf, or an unknown element.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory (expected a DeePMD system)")
    type_path = os.path.join(directory, "type.raw")
    if not os.path.isfile(type_path):
        raise ValueError(f"{type_path}: required file is missing")
    tokens = _read_raw(type_path)
    if not tokens:
        raise ValueError(f"{type_path}: is empty; expected one type index per atom")
    try:
        atom_types = np.asarray([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not _is_int(t))
        raise ValueError(f"{type_path}: {bad!r} is not an integer type index") from None
    if np.any(atom_types < 0):
        raise ValueError(f"{type_path}: negative type index {int(atom_types.min())}")

    map_path = os.path.join(directory, "type_map.raw")
    if os.path.isfile(map_path):
        local_map = _read_raw(map_path)
        if not local_map:
            raise ValueError(f"{map_path}: is empty; expected one element name per type")
        if len(set(local_map)) != len(local_map):
            raise ValueError(f"{map_path}: repeated element names {local_map!r}")
    elif type_map is not None:
        local_map = [str(name) for name in type_map]
    else:
        raise ValueError(
            f"{map_path}: required file is missing (or pass `type_map` to name the types)"
        )
    if atom_types.max() >= len(local_map):
        raise ValueError(
            f"{type_path}: type index {int(atom_types.max())} is outside the type map "
            f"{local_map!r} of {len(local_map)} element(s)"
        )
    if type_map is not None:
        type_map = [str(name) for name in type_map]
        used = sorted(set(atom_types.tolist()))
        for t in used:
            if local_map[t] not in type_map:
                raise ValueError(
                    f"{map_path}: element {local_map[t]!r} is not in the given "
                    f"type_map={type_map!r}"
                )
    natoms = atom_types.shape[0]

    periodic = not os.path.exists(os.path.join(directory, "nopbc"))
    set_dirs = sorted(
        name
        for name in os.listdir(directory)
        if name.startswith("set.") and os.path.isdir(os.path.join(directory, name))
    )
    if not set_dirs:
        raise ValueError(f"{os.path.join(directory, 'set.000')}: no set.* directory found")
    parts = {"coord": [], "box": [], "energy": [], "force": [], "virial": []}
    virial_sets = []
    for name in set_dirs:
        set_dir = os.path.join(directory, name)
        coord = _load_frames(os.path.join(set_dir, "coord.npy"), natoms * 3)
        nframes = coord.shape[0]
        parts["coord"].append(coord.reshape(nframes, natoms, 3))
        energy = _load_frames(os.path.join(set_dir, "energy.npy"), None, nframes)
        parts["energy"].append(energy)
        force = _load_frames(os.path.join(set_dir, "force.npy"), natoms * 3, nframes)
        parts["force"].append(force.reshape(nframes, natoms, 3))
        if periodic:
            box_path = os.path.join(set_dir, "box.npy")
            if not os.path.isfile(box_path):
                raise ValueError(
                    f"{box_path}: required file is missing (write an empty `nopbc` file in "
                    f"{directory} for free boundaries)"
                )
            box = _load_frames(box_path, 9, nframes).reshape(nframes, 3, 3)
            volume = np.linalg.det(box)
            if np.any(np.abs(volume) <= 1e-12):
                frame = int(np.argmin(np.abs(volume)))
                raise ValueError(
                    f"{box_path}: frame {frame} has a singular box (volume {volume[frame]!r})"
                )
            parts["box"].append(box)
        virial_path = os.path.join(set_dir, "virial.npy")
        if os.path.isfile(virial_path):
            parts["virial"].append(_load_frames(virial_path, 9, nframes).reshape(nframes, 3, 3))
            virial_sets.append(name)
    if virial_sets and len(virial_sets) != len(set_dirs):
        missing = next(name for name in set_dirs if name not in virial_sets)
        raise ValueError(
            f"{os.path.join(directory, missing, 'virial.npy')}: required file is missing "
            f"(other sets of the system have virial.npy: {virial_sets})"
        )

    system = System(
        coord=np.concatenate(parts["coord"]),
        box=np.concatenate(parts["box"]) if periodic else None,
        energy=np.concatenate(parts["energy"]),
        force=np.concatenate(parts["force"]),
        virial=np.concatenate(parts["virial"]) if virial_sets else None,
        atom_types=atom_types,
        type_map=local_map,
        path=os.path.abspath(directory),
    )
    if type_map is not None:
        system = system.with_type_map(type_map)
    return system


def _is_int(token):
    try:
        int(token)
    except ValueError:
        return False
    return True


def find_systems(root):
    """Returns the sorted paths of all DeePMD systems at or below `root` (dirs with `type.raw`)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root}: not a directory")
    if is_system(root):
        return [os.path.abspath(root)]
    found = []
    for current, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if is_system(current):
            found.append(os.path.abspath(current))
            dirs[:] = []  # set.* directories hold no systems
    return sorted(found)


def read_systems(directories_or_root, type_map=None):
    """Reads several DeePMD systems with one shared type map.

    Args:
        directories_or_root: a path (a system, or a root searched recursively for systems: every
            directory that holds `type.raw`), or a list of such paths.
        type_map: optional list of element names. If `None`, the union of the systems' type maps
            in order of first appearance (systems in the order given, roots sorted by path).

    Returns:
        A list of `System`, every one with `atom_types` indexing the same `type_map`.
    """
    if isinstance(directories_or_root, (str, os.PathLike)):
        directories_or_root = [directories_or_root]
    paths = []
    for entry in directories_or_root:
        entry = os.fspath(entry)
        found = find_systems(entry)
        if not found:
            raise ValueError(f"{entry}: no DeePMD system (directory with type.raw) found")
        paths.extend(p for p in found if p not in paths)
    systems = [read_system(path, type_map=type_map) for path in paths]
    if type_map is None:
        union = []
        for system in systems:
            union.extend(name for name in system.type_map if name not in union)
        type_map = union
    return [system.with_type_map(type_map) for system in systems]


def describe(systems):
    """Summarises systems: counts and the ranges of energies, forces and virials.

    Args:
        systems: a `System` or a list of them (sharing one type map, as `read_systems` returns).

    Returns:
        A dict with `n_systems`, `n_frames`, `n_atoms_min`/`max`, `type_map`, `atoms_per_type`
        (atoms of each element summed over frames), `periodic_systems`, `virial_frames`,
        energy per atom (`energy_per_atom_min`/`max`/`mean`/`std`, eV), force components
        (`force_rms`, `force_max_abs` = largest |F| of an atom, eV/Å) and `virial_max_abs`
        (eV, `None` without virials).
    """
    if isinstance(systems, System):
        systems = [systems]
    systems = list(systems)
    if not systems or not all(isinstance(s, System) for s in systems):
        raise ValueError(f"`systems` must be a non-empty list of System; received {systems!r}")
    type_map = list(systems[0].type_map)
    for s in systems[1:]:
        if s.type_map != type_map:
            raise ValueError(
                f"systems do not share one type map: {type_map!r} vs {s.type_map!r} "
                f"(read them with read_systems or System.with_type_map)"
            )
    e_per_atom = np.concatenate([s.energy / s.natoms for s in systems])
    forces = np.concatenate([s.force.reshape(-1, 3) for s in systems])
    virials = [s.virial for s in systems if s.virial is not None]
    atoms_per_type = np.zeros(len(type_map), dtype=np.int64)
    for s in systems:
        atoms_per_type += s.nframes * np.bincount(s.atom_types, minlength=len(type_map))
    return {
        "n_systems": len(systems),
        "n_frames": int(sum(s.nframes for s in systems)),
        "n_atoms_min": int(min(s.natoms for s in systems)),
        "n_atoms_max": int(max(s.natoms for s in systems)),
        "type_map": type_map,
        "atoms_per_type": dict(zip(type_map, atoms_per_type.tolist(), strict=True)),
        "periodic_systems": int(sum(s.periodic for s in systems)),
        "virial_frames": int(sum(s.nframes for s in systems if s.virial is not None)),
        "energy_per_atom_min": float(e_per_atom.min()),
        "energy_per_atom_max": float(e_per_atom.max()),
        "energy_per_atom_mean": float(e_per_atom.mean()),
        "energy_per_atom_std": float(e_per_atom.std()),
        "force_rms": float(np.sqrt(np.mean(forces**2))),
        "force_max_abs": float(np.linalg.norm(forces, axis=1).max()),
        "virial_max_abs": float(max(np.abs(v).max() for v in virials)) if virials else None,
    }


def format_description(summary):
    """Formats the dict from `describe` as a few human-readable lines."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["atoms_per_type"].items())
    lines = [
        f"{summary['n_systems']} system(s), {summary['n_frames']} frame(s), "
        f"{summary['n_atoms_min']}-{summary['n_atoms_max']} atoms, "
        f"{summary['periodic_systems']} periodic; atoms x frames: {counts}",
        f"energy per atom: {summary['energy_per_atom_min']:.4f} .. "
        f"{summary['energy_per_atom_max']:.4f} eV (mean {summary['energy_per_atom_mean']:.4f}, "
        f"std {summary['energy_per_atom_std'] * 1e3:.2f} meV)",
        f"force: rms {summary['force_rms']:.4f} eV/Å, max |F| {summary['force_max_abs']:.4f} eV/Å",
    ]
    if summary["virial_max_abs"] is not None:
        lines.append(
            f"virial: {summary['virial_frames']} frame(s), max |W| "
            f"{summary['virial_max_abs']:.4f} eV"
        )
    return "\n".join(lines)
