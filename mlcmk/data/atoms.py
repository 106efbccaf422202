"""Conversions between `System` frames and `ase.Atoms` (needs ASE: `pip install mlcmk[md]`)."""

import numpy as np

from mlcmk.data.deepmd import System


def _ase():
    try:
        import ase
        import ase.calculators.singlepoint
    except ImportError as e:  # pragma: no cover - ASE is in the `md` and `test` extras
        raise ImportError(
            "mlcmk.data's ASE helpers need ASE; install it with `pip install mlcmk[md]`"
        ) from e
    return ase


def frames_to_atoms(system, index, *, labels=True):
    """Returns frame `index` of `system` as `ase.Atoms`.

    Args:
        system: a `System`.
        index: int, the frame.
        labels: if True, attaches a `SinglePointCalculator` holding the frame's energy, forces and,
            when the system has virials and a box, the stress `-virial / volume`.

    Returns:
        `ase.Atoms` with the elements of `system.type_map`, periodic in all three directions when
        the system has a box.
    """
    ase = _ase()
    if not isinstance(system, System):
        raise TypeError(f"`system` must be a mlcmk.data.System; received {type(system).__name__}")
    if not -system.nframes <= index < system.nframes:
        raise ValueError(
            f"`index` must be a frame of {system!r} (0..{system.nframes - 1}); received {index!r}"
        )
    symbols = [system.type_map[t] for t in system.atom_types]
    if system.box is None:
        atoms = ase.Atoms(symbols, positions=system.coord[index], pbc=False)
    else:
        atoms = ase.Atoms(symbols, positions=system.coord[index], cell=system.box[index], pbc=True)
    if labels:
        results = {"energy": float(system.energy[index]), "forces": system.force[index].copy()}
        if system.virial is not None and system.box is not None:
            stress = -system.virial[index] / abs(np.linalg.det(system.box[index]))
            results["stress"] = stress
        atoms.calc = ase.calculators.singlepoint.SinglePointCalculator(atoms, **results)
    return atoms


def label_frames(frames, calculator=None, *, virial=True):
    """Computes energy, forces and virial of a list of `ase.Atoms` with an ASE calculator.

    Args:
        frames: list of `ase.Atoms` with the same elements in the same order and the same boundary
            conditions (all periodic or all free).
        calculator: an ASE calculator used for every frame; `None` uses each frame's own `calc`.
        virial: whether to compute virials `-V * stress` (periodic frames only).

    Returns:
        A dict with `coord`, `box` (or `None`), `energy`, `force`, `virial` (or `None`) and
        `symbols` (list of str).
    """
    _ase()
    frames = list(frames)
    if not frames:
        raise ValueError("`frames` is empty; expected at least one ase.Atoms")
    symbols = frames[0].get_chemical_symbols()
    periodic = bool(np.all(frames[0].pbc))
    for i, atoms in enumerate(frames):
        if atoms.get_chemical_symbols() != symbols:
            raise ValueError(
                f"frame {i} has elements {atoms.get_chemical_formula()!r} in another order than "
                f"frame 0 ({frames[0].get_chemical_formula()!r}); a system needs the same atoms"
            )
        if np.any(atoms.pbc) and not np.all(atoms.pbc):
            raise ValueError(
                f"frame {i} has pbc={atoms.pbc.tolist()}; the DeePMD format supports only fully "
                "periodic or free boundaries"
            )
        if bool(np.all(atoms.pbc)) != periodic:
            raise ValueError(f"frame {i} has other boundary conditions than frame 0")
    coord, box, energy, force, vir = [], [], [], [], []
    for atoms in frames:
        if calculator is not None:
            atoms = atoms.copy()
            atoms.calc = calculator
        elif atoms.calc is None:
            raise ValueError("a frame has no calculator attached and `calculator` is None")
        coord.append(atoms.get_positions())
        energy.append(atoms.get_potential_energy())
        force.append(atoms.get_forces(apply_constraint=False))
        if periodic:
            box.append(np.asarray(atoms.get_cell()))
            if virial:
                vir.append(-atoms.get_volume() * atoms.get_stress(voigt=False))
    return {
        "coord": np.asarray(coord, dtype=np.float64),
        "box": np.asarray(box, dtype=np.float64) if periodic else None,
        "energy": np.asarray(energy, dtype=np.float64),
        "force": np.asarray(force, dtype=np.float64),
        "virial": np.asarray(vir, dtype=np.float64) if periodic and virial else None,
        "symbols": symbols,
    }


def system_from_atoms(frames, calculator=None, *, type_map=None, virial=True):
    """Labels `ase.Atoms` frames (see `label_frames`) and returns them as a `System`.

    Args:
        frames: list of `ase.Atoms` with the same elements in the same order.
        calculator: ASE calculator, or `None` to use each frame's own.
        type_map: list of element names; default: the elements in order of first appearance.
        virial: whether to compute virials (periodic frames only).
    """
    labelled = label_frames(frames, calculator, virial=virial)
    symbols = labelled.pop("symbols")
    if type_map is None:
        type_map = list(dict.fromkeys(symbols))
    type_map = [str(name) for name in type_map]
    missing = sorted(set(symbols) - set(type_map))
    if missing:
        raise ValueError(f"elements {missing} of the frames are not in type_map={type_map!r}")
    atom_types = np.asarray([type_map.index(s) for s in symbols], dtype=np.int64)
    return System(atom_types=atom_types, type_map=type_map, **labelled)


def thermalize(atoms, temperature_K, rng=None):
    """Draws Maxwell–Boltzmann momenta for `atoms` at `temperature_K` (kelvin), in place, then
    removes the centre-of-mass momentum.

    ASE 3.29 renamed `MaxwellBoltzmannDistribution` to `thermalize_momenta` and deprecated the
    old name; this calls whichever the installed ASE has, with the same `rng` draws.
    """
    from ase.md import velocitydistribution

    new = getattr(velocitydistribution, "thermalize_momenta", None)
    if new is not None:
        new(atoms, temperature_K, rng=rng)
    else:  # pragma: no cover - ASE < 3.29
        velocitydistribution.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K,
                                                          rng=rng)
    velocitydistribution.Stationary(atoms)
