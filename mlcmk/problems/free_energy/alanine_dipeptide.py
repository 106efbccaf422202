r"""Alanine dipeptide (ACE-ALA-NME) in OpenMM: free energy of the backbone dihedrals (phi, psi).

The molecule is built here from internal coordinates (no file is read or downloaded), typed by
an Amber force field shipped inside the OpenMM wheel, and simulated with Langevin dynamics on
OpenMM's CPU platform. Energies are in kJ/mol and angles in radians throughout:
`beta = 1 / (R T)` in mol/kJ (kT = 2.494 kJ/mol at 300 K), mean forces in kJ/mol/rad.

- `alanine_dipeptide_structure`: topology and positions at given (phi, psi) by NeRF placement;
- `AlanineDipeptide`: the problem (`restrained_mean_force`, `sample_cvs`, the reference A);
- `wham_2d`: periodic 2-D WHAM of umbrella histograms (NumPy);
- `reference_free_energy`: umbrella sampling on a (phi, psi) grid + WHAM, cached on disk.

Requires the `openmm` extra (`pip install "mlcmk[openmm]"`).
"""

import hashlib
import json
import os
import time

import numpy as np

from mlcmk._plotting import subplots
from mlcmk._validation import check_positive_int, check_positive_number
from mlcmk.io import atomic_file
from mlcmk.problems.base import Problem
from mlcmk.problems.registry import register_problem

GAS_CONSTANT = 0.00831446261815324  # kJ/mol/K
_REFERENCE_VERSION = 1
SOLVENTS = {"vacuum": (), "obc2": ("implicit/obc2.xml",)}
PLATFORMS = ("Reference", "CPU")

# ---------------------------------------------------------------------------- the molecule
# (residue, name, element); ACE, ALA, NME in the order of the usual alanine dipeptide PDB.
ATOMS = (
    ("ACE", "HH31", "H"), ("ACE", "CH3", "C"), ("ACE", "HH32", "H"), ("ACE", "HH33", "H"),
    ("ACE", "C", "C"), ("ACE", "O", "O"),
    ("ALA", "N", "N"), ("ALA", "H", "H"), ("ALA", "CA", "C"), ("ALA", "HA", "H"),
    ("ALA", "CB", "C"), ("ALA", "HB1", "H"), ("ALA", "HB2", "H"), ("ALA", "HB3", "H"),
    ("ALA", "C", "C"), ("ALA", "O", "O"),
    ("NME", "N", "N"), ("NME", "H", "H"), ("NME", "CH3", "C"), ("NME", "HH31", "H"),
    ("NME", "HH32", "H"), ("NME", "HH33", "H"),
)
BONDS = ((0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9), (8, 10),
         (10, 11), (10, 12), (10, 13), (8, 14), (14, 15), (14, 16), (16, 17), (16, 18),
         (18, 19), (18, 20), (18, 21))
PHI_ATOMS = (4, 6, 8, 14)  # C(ACE) - N - CA - C
PSI_ATOMS = (6, 8, 14, 16)  # N - CA - C - N(NME)


def _place(a, b, c, bond, angle, torsion):
    """NeRF: the atom d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion."""
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(torsion),
                          np.sin(angle) * np.sin(torsion)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def dihedral(positions, atoms):
    """Dihedral angles (rad, in [-pi, pi]) of atoms `(i, j, k, l)` in `positions (..., N, 3)`."""
    p = np.asarray(positions, dtype=np.float64)
    b0 = p[..., atoms[0], :] - p[..., atoms[1], :]
    b1 = p[..., atoms[2], :] - p[..., atoms[1], :]
    b2 = p[..., atoms[3], :] - p[..., atoms[2], :]
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1, -1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, -1, keepdims=True) * b1
    x = np.sum(v * w, -1)
    y = np.sum(np.cross(b1, v) * w, -1)
    return np.arctan2(y, x)


def alanine_dipeptide_positions(phi=-1.4, psi=1.3):
    """Positions (Å, `(22, 3)`) of L-alanine dipeptide at backbone dihedrals (phi, psi) (rad).

    Standard bond lengths and angles (trans peptide bonds, tetrahedral sp3 centres); not
    minimised, so energies are only sane after a minimisation.
    """
    deg = np.pi / 180
    tet = 109.5 * deg
    x = np.zeros((22, 3))
    # Backbone CH3(ACE) - C - N - CA - C - N - CH3(NME).
    x[1] = [0.0, 0.0, 0.0]
    x[4] = [1.52, 0.0, 0.0]
    x[6] = x[4] + 1.335 * np.array([-np.cos(116.6 * deg), np.sin(116.6 * deg), 0.0])
    x[8] = _place(x[1], x[4], x[6], 1.458, 121.9 * deg, np.pi)  # omega(ACE) = 180
    x[14] = _place(x[4], x[6], x[8], 1.525, 111.2 * deg, phi)
    x[16] = _place(x[6], x[8], x[14], 1.335, 116.2 * deg, psi)
    x[18] = _place(x[8], x[14], x[16], 1.449, 121.9 * deg, np.pi)  # omega(NME) = 180
    # Carbonyl oxygens (cis to the next CA) and amide hydrogens (trans to the previous O).
    x[5] = _place(x[8], x[6], x[4], 1.229, 122.9 * deg, 0.0)
    x[15] = _place(x[18], x[16], x[14], 1.229, 122.9 * deg, 0.0)
    x[7] = _place(x[5], x[4], x[6], 1.01, 119.8 * deg, np.pi)
    x[17] = _place(x[15], x[14], x[16], 1.01, 119.8 * deg, np.pi)
    # L-alanine: CB at phi - 120 deg, HA at phi + 120 deg about N-CA (seen from C(ACE)).
    x[10] = _place(x[4], x[6], x[8], 1.53, 110.5 * deg, phi - 120 * deg)
    x[9] = _place(x[4], x[6], x[8], 1.09, 109.5 * deg, phi + 120 * deg)
    # Methyl hydrogens, staggered.
    for h, (a, b, c) in zip(((0, 2, 3), (11, 12, 13), (19, 20, 21)),
                            ((6, 4, 1), (6, 8, 10), (14, 16, 18)), strict=True):
        for k, atom in enumerate(h):
            x[atom] = _place(x[a], x[b], x[c], 1.09, tet, np.pi + k * 2 * np.pi / 3)
    return x


def alanine_dipeptide_structure(phi=-1.4, psi=1.3):
    """`(topology, positions)`: an OpenMM Topology with bonds and positions (nm) at (phi, psi)."""
    from openmm import app, unit

    topology = app.Topology()
    chain = topology.addChain()
    residues, atoms = {}, []
    for res_name, name, symbol in ATOMS:
        if res_name not in residues:
            residues[res_name] = topology.addResidue(res_name, chain)
        atoms.append(topology.addAtom(name, app.Element.getBySymbol(symbol),
                                      residues[res_name]))
    for i, j in BONDS:
        topology.addBond(atoms[i], atoms[j])
    positions = alanine_dipeptide_positions(phi, psi) / 10.0
    return topology, unit.Quantity(positions, unit.nanometer)


def _check_angles(centers, name="centers"):
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim == 1:
        centers = centers[None]
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (B, 2) (phi, psi in rad); received shape "
                         f"{centers.shape}")
    if not np.all(np.isfinite(centers)):
        raise ValueError(f"`{name}` must be finite; received {centers.tolist()!r}")
    return centers


def wrap(angle):
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _ints(seed):
    return [int(v) for v in np.atleast_1d(seed)]


def _seed32(seed):
    """A positive 31-bit int from an int or a sequence of ints (OpenMM seeds are ints)."""
    return int(np.random.default_rng(_ints(seed)).integers(1, 2**31 - 1))


# ---------------------------------------------------------------------------- the problem
@register_problem("alanine_dipeptide", "ala2", kind="free_energy")
class AlanineDipeptide(Problem):
    r"""Alanine dipeptide (22 atoms, Amber ff99SB, vacuum or OBC2 implicit solvent) in OpenMM.

    Collective variables are the backbone dihedrals phi = C(ACE)-N-CA-C and psi = N-CA-C-N(NME)
    (radians, periodic on [-pi, pi)). Dynamics: `LangevinMiddleIntegrator` at `temperature`,
    friction 1/ps, time step `timestep` fs with bonds to hydrogen constrained, on OpenMM's
    `platform`: "Reference" (default; for 22 atoms about ten times faster than "CPU", whose
    per-step overhead dominates) or "CPU" with `threads` threads. Energies are in kJ/mol,
    `beta = 1 / (R T)`.

    Restraints are a harmonic `CustomTorsionForce` on each dihedral with the periodic
    difference, $\tfrac{\kappa}{2}\,\min(|\theta - \theta_0|, 2\pi - |\theta - \theta_0|)^2$;
    the mean force is $\kappa\langle\mathrm{wrap}(s - s_0)\rangle \approx -\nabla A(s_0)$, the
    sign convention of `MuellerBrownBath` (so `RestrainedMDLabeller` works unchanged).

    `free_energy` / `mean_force` are those of a reference surface (`load_reference`), umbrella
    sampling + WHAM computed by `reference_free_energy`, interpolated periodically.

    Args:
        temperature: K.
        solvent: "vacuum" or "obc2" (implicit solvent, OBC2 GB).
        timestep: fs.
        friction: 1/ps.
        platform: "Reference" or "CPU".
        threads: threads of the CPU platform.
    """

    collective_variables = ("phi", "psi")
    cv_kinds = ("angle", "angle")
    domain = ((-np.pi, np.pi), (-np.pi, np.pi))

    def __init__(self, temperature=300.0, solvent="vacuum", timestep=2.0, friction=1.0,
                 platform="Reference", threads=1):
        for name, value in (("temperature", temperature), ("timestep", timestep),
                            ("friction", friction)):
            check_positive_number(name, value)
        if solvent not in SOLVENTS:
            raise ValueError(f"`solvent` must be one of {sorted(SOLVENTS)}; received "
                             f"solvent={solvent!r}")
        if platform not in PLATFORMS:
            raise ValueError(f"`platform` must be one of {PLATFORMS}; received "
                             f"platform={platform!r}")
        check_positive_int("threads", threads)
        self.temperature = float(temperature)
        self.solvent = solvent
        self.timestep = float(timestep)
        self.friction = float(friction)
        self.platform = platform
        self.threads = int(threads)
        self.kT = GAS_CONSTANT * self.temperature
        self.beta = 1.0 / self.kT
        self._system = None
        self._minimized = None
        self.reference = None

    # ------------------------------------------------------------------ OpenMM plumbing
    def cv_index(self, name):
        """Index of the collective variable `name` ("phi" or "psi")."""
        if name not in self.collective_variables:
            raise ValueError(f"Unknown collective variable {name!r} of {type(self).__name__}; "
                             f"expected one of {self.collective_variables}")
        return self.collective_variables.index(name)

    def system(self):
        """`(topology, system)`: the force field plus restraint forces (kappa = 0, off)."""
        if self._system is None:
            import openmm
            from openmm import app

            topology, _ = alanine_dipeptide_structure()
            forcefield = app.ForceField("amber99sb.xml", *SOLVENTS[self.solvent])
            system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff,
                                             constraints=app.HBonds)
            for name, atoms in (("phi", PHI_ATOMS), ("psi", PSI_ATOMS)):
                force = openmm.CustomTorsionForce(
                    f"0.5*kappa*min(d, 2*pi-d)^2; d = abs(theta - {name}0); pi = {np.pi!r}")
                force.addGlobalParameter("kappa", 0.0)
                force.addGlobalParameter(f"{name}0", 0.0)
                force.addTorsion(*atoms, [])
                force.setForceGroup(1)
                system.addForce(force)
            self._system = (topology, system)
        return self._system

    def context(self, seed=0):
        """A fresh OpenMM Context (CPU platform) whose integrator is seeded by `seed`."""
        import openmm
        from openmm import unit

        _, system = self.system()
        integrator = openmm.LangevinMiddleIntegrator(
            self.temperature * unit.kelvin, self.friction / unit.picosecond,
            self.timestep * unit.femtosecond)
        integrator.setRandomNumberSeed(_seed32(seed))
        platform = openmm.Platform.getPlatformByName(self.platform)
        properties = {"Threads": str(self.threads)} if self.platform == "CPU" else {}
        return openmm.Context(system, integrator, platform, properties)

    def prepare(self, context, center, kappa, seed):
        """Positions built at `center`, minimised under the restraint, velocities by `seed`."""
        from openmm import unit

        context.setParameter("kappa", float(kappa))
        context.setParameter("phi0", float(center[0]))
        context.setParameter("psi0", float(center[1]))
        _, positions = alanine_dipeptide_structure(*center)
        context.setPositions(positions)
        context.applyConstraints(1e-6)
        import openmm

        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 500)
        context.setVelocitiesToTemperature(self.temperature * unit.kelvin, _seed32(seed))

    @staticmethod
    def cvs(context):
        """(phi, psi) of a context's current positions, `(2,)`."""
        x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        return np.array([dihedral(x, PHI_ATOMS), dihedral(x, PSI_ATOMS)])

    def minimized_energy(self, center=(-1.4, 1.3)):
        """Potential energy (kJ/mol) and CVs of the minimised molecule started at `center`."""
        context = self.context(0)
        self.prepare(context, center, 0.0, 0)
        energy = context.getState(getEnergy=True).getPotentialEnergy()._value
        return energy, self.cvs(context)

    def steps_per_second(self, num_steps=2000):
        """Plain MD speed (steps per second of wall time) on this machine."""
        context = self.context(0)
        self.prepare(context, (-1.4, 1.3), 0.0, 0)
        context.getIntegrator().step(100)
        start = time.perf_counter()
        context.getIntegrator().step(num_steps)
        context.getState(getEnergy=True)
        return num_steps / (time.perf_counter() - start)

    # ------------------------------------------------------------------ sampling
    def run_restrained(self, context, center, kappa, num_steps, sample_every):
        """CV samples `(num_steps // sample_every, 2)` of restrained MD from the context's state."""
        context.setParameter("kappa", float(kappa))
        context.setParameter("phi0", float(center[0]))
        context.setParameter("psi0", float(center[1]))
        integrator = context.getIntegrator()
        samples = np.empty((num_steps // sample_every, 2))
        for i in range(len(samples)):
            integrator.step(sample_every)
            samples[i] = self.cvs(context)
        return samples

    def restrained_mean_force(self, centers, kappa=500.0, num_steps=10000, num_burnin=1000,
                              sample_every=10, num_blocks=10, seed=0):
        r"""Mean force $-\nabla A$ (kJ/mol/rad) at `centers` `(B, 2)` by restrained MD.

        One trajectory per centre: built at the centre, minimised under the restraint
        $\tfrac{\kappa}{2}|\mathrm{wrap}(s - s_0)|^2$, `num_burnin` steps of equilibration,
        `num_steps` of production with the CVs read every `sample_every` steps. The mean force
        is $\kappa\langle\mathrm{wrap}(s - s_0)\rangle$, its error bar from `num_blocks` block
        averages.

        Args:
            centers: array `(B, 2)` of (phi, psi) in rad.
            kappa: float > 0, kJ/mol/rad^2.
            seed: int (the batch's generator) or one seed per centre (ints or int lists), so
                that a centre's result does not depend on the batch it ran in.

        Returns:
            dict with `mean_force`, `stderr` and `mean_cv` (wrapped), each `(B, 2)`.
        """
        from mlcmk.problems.free_energy.restrained_md import block_average

        centers = _check_angles(centers)
        check_positive_number("kappa", kappa)
        for name, value, low in (("num_steps", num_steps, 1), ("num_burnin", num_burnin, 0),
                                 ("sample_every", sample_every, 1)):
            check_positive_int(name, value, low)
        if num_steps // sample_every < num_blocks:
            raise ValueError(f"`num_steps` // `sample_every` = {num_steps // sample_every} "
                             f"samples cannot fill num_blocks={num_blocks} blocks")
        if seed is None or isinstance(seed, (int, np.integer)):
            rng = np.random.default_rng(seed)
            seeds = [[int(v)] for v in rng.integers(0, 2**31 - 1, len(centers))]
        else:
            if len(seed) != len(centers):
                raise ValueError(f"`seed` must be an int or hold one seed per centre "
                                 f"({len(centers)}); received {len(seed)} seeds")
            seeds = [_ints(s) for s in seed]
        mean_force = np.full(centers.shape, np.nan)
        stderr = np.full(centers.shape, np.nan)
        mean_cv = np.full(centers.shape, np.nan)
        for b, (center, s) in enumerate(zip(centers, seeds, strict=True)):
            context = self.context([*s, 1])
            try:
                self.prepare(context, center, kappa, [*s, 2])
                context.getIntegrator().step(num_burnin)
                samples = self.run_restrained(context, center, kappa, num_steps, sample_every)
            except Exception:  # OpenMM raises on NaN coordinates  # noqa: BLE001
                continue
            finally:
                del context
            d = wrap(samples - center)
            mean_d, err_d = block_average(d, num_blocks)
            mean_force[b] = kappa * mean_d
            stderr[b] = kappa * err_d
            mean_cv[b] = wrap(center + mean_d)
        return {"mean_force": mean_force, "stderr": stderr, "mean_cv": mean_cv}

    def sample_cvs(self, num, num_steps=500, seed=0):
        """CVs of plain MD from the minimised C7eq structure, one frame every `num_steps` steps.

        A realistic source of the first labels of concurrent learning.
        """
        num = check_positive_int("num", num)
        context = self.context([*_ints(seed), 3])
        self.prepare(context, (-1.4, 1.3), 0.0, [*_ints(seed), 4])
        context.getIntegrator().step(num_steps)
        return self.run_restrained(context, (0.0, 0.0), 0.0, num * num_steps, num_steps)

    # ------------------------------------------------------------------ reference surface
    def load_reference(self, **kwargs):
        """Computes or reads the cached reference surface (see `reference_free_energy`)."""
        self.reference = reference_free_energy(self, **kwargs)
        return self.reference

    def _require_reference(self):
        if self.reference is None:
            raise ValueError("This AlanineDipeptide has no reference free energy; call "
                             "load_reference() first")
        return self.reference

    def grid(self, num=72):
        """A `(num, num, 2)` periodic grid of (phi, psi) over [-pi, pi) (cell centres)."""
        t = -np.pi + (np.arange(num) + 0.5) * 2 * np.pi / num
        phi, psi = np.meshgrid(t, t, indexing="xy")
        return np.stack([phi, psi], axis=-1)

    def free_energy(self, s):
        """Reference A(s) (kJ/mol, zero at its minimum), periodic bilinear interpolation; `(n,)`."""
        ref = self._require_reference()
        return periodic_interpolate(ref["free_energy"], s)

    def mean_force(self, s):
        """-grad A of the reference by central differences of the interpolant, `(n, 2)`."""
        s = np.asarray(s, dtype=np.float64)
        h = np.pi / self._require_reference()["free_energy"].shape[0]
        out = []
        for i in range(2):
            e = np.zeros(2)
            e[i] = h
            with np.errstate(invalid="ignore"):  # NaN next to never-visited bins (A = inf)
                out.append(-(self.free_energy(s + e) - self.free_energy(s - e)) / (2 * h))
        return np.stack(out, axis=-1)


def periodic_interpolate(values, s):
    """Bilinear interpolation of `values[i_psi, i_phi]` on the cell-centre grid of [-pi, pi)^2."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    s = np.asarray(s, dtype=np.float64)
    u = (wrap(s) + np.pi) / (2 * np.pi) * n - 0.5  # grid coordinates
    u = np.round(u, 9)  # exactly on a node at the cell centres despite rounding
    i0 = np.floor(u).astype(int)
    t = u - i0
    i0 %= n
    i1 = (i0 + 1) % n
    x0, y0, x1, y1 = i0[..., 0], i0[..., 1], i1[..., 0], i1[..., 1]
    tx, ty = t[..., 0], t[..., 1]
    out = np.zeros(np.shape(tx))
    for w, v in (((1 - tx) * (1 - ty), values[y0, x0]), (tx * (1 - ty), values[y0, x1]),
                 ((1 - tx) * ty, values[y1, x0]), (tx * ty, values[y1, x1])):
        out += np.where(w > 0, w * np.where(w > 0, v, 0.0), 0.0)  # inf only where it weighs
    return out


# ---------------------------------------------------------------------------- WHAM
def wham_2d(samples, centers, kappa, beta, num_bins=36, tol=1e-8, max_iterations=10000):
    r"""Periodic 2-D WHAM of umbrella windows on [-pi, pi)^2.

    Window k samples $p(s)\,e^{-\beta w_k(s)}/Z_k$ with $w_k(s) = \tfrac{\kappa}{2}
    |\mathrm{wrap}(s - c_k)|^2$. The self-consistent equations
    $p(b) = \sum_k n_k(b) / \sum_k N_k e^{f_k - \beta w_k(b)}$,
    $e^{-f_k} = \sum_b p(b) e^{-\beta w_k(b)}$ are solved as the minimum of a convex function
    of f (L-BFGS, gradient below `tol` per sample).

    Args:
        samples: list of arrays `(N_k, 2)` (or one array `(K, N, 2)`), CV samples per window.
        centers: array `(K, 2)`.
        kappa: restraint constant (energy / rad^2); a float or one per window.
        beta: inverse temperature (1 / energy).
        num_bins: bins per dimension.

    Returns:
        dict with `free_energy` `(num_bins, num_bins)` indexed [psi bin, phi bin] (energy
        units, zero at the minimum, inf in empty bins), `counts`, `window_f` and `iterations`.
    """
    centers = _check_angles(centers)
    if len(samples) != len(centers):
        raise ValueError(f"`samples` must hold one array per window ({len(centers)}); received "
                         f"{len(samples)}")
    kappa = np.broadcast_to(np.asarray(kappa, dtype=np.float64), (len(centers),))
    if np.any(~(kappa > 0)):
        raise ValueError(f"`kappa` must be > 0; received kappa={kappa.tolist()!r}")
    if not beta > 0:
        raise ValueError(f"`beta` must be > 0; received beta={beta!r}")
    width = 2 * np.pi / num_bins
    mid = -np.pi + (np.arange(num_bins) + 0.5) * width
    phi, psi = np.meshgrid(mid, mid, indexing="xy")
    bins = np.stack([phi.ravel(), psi.ravel()], axis=-1)  # (M, 2), index psi * n + phi
    counts = np.zeros((len(centers), num_bins * num_bins))
    for k, x in enumerate(samples):
        idx = np.floor((wrap(np.asarray(x, dtype=np.float64)) + np.pi) / width).astype(int)
        idx = np.clip(idx, 0, num_bins - 1)
        counts[k] = np.bincount(idx[:, 1] * num_bins + idx[:, 0], minlength=num_bins**2)
    n_k = counts.sum(axis=1)
    total = counts.sum(axis=0)
    bias = 0.5 * kappa[:, None] * np.sum(wrap(bins[None] - centers[:, None]) ** 2, -1)
    log_c = -beta * bias  # (K, M)
    log_n = np.log(n_k)[:, None]
    occupied = total > 0
    log_total = np.where(occupied, np.log(np.where(occupied, total, 1.0)), -np.inf)

    # WHAM's equations are the stationarity conditions of a convex function of the window
    # free energies f (Zhu & Hummer, J. Comput. Chem. 33, 453 (2012)),
    # L(f) = -sum_k N_k f_k + sum_b n_b log sum_k N_k exp(f_k - beta w_k(b)),
    # minimised here by L-BFGS (the plain self-consistent iteration converges very slowly).
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    keep = occupied
    log_c_kept = log_c[:, keep]
    n_b = total[keep]

    def objective(f):
        g = log_n + f[:, None] + log_c_kept  # (K, M')
        denominator = logsumexp(g, axis=0)
        value = -np.dot(n_k, f) + np.dot(n_b, denominator)
        grad = -n_k + np.exp(g - denominator) @ n_b
        return value, grad

    solution = minimize(objective, np.zeros(len(centers)), jac=True, method="L-BFGS-B",
                        options={"maxiter": max_iterations, "gtol": tol * n_k.sum(),
                                 "ftol": 1e-15})
    f = solution.x - solution.x[0]
    iteration = int(solution.nit)
    log_p = log_total - logsumexp(log_n + f[:, None] + log_c, axis=0)
    a = -log_p / beta
    a -= a[occupied].min()
    return {"free_energy": a.reshape(num_bins, num_bins), "counts": total.reshape(
        num_bins, num_bins), "window_f": f / beta, "iterations": iteration}


# ---------------------------------------------------------------------------- reference
def default_cache_dir():
    """`$MLCMK_CACHE_DIR/free_energy` if the variable is set, else `~/.cache/mlcmk/free_energy`."""
    root = os.environ.get("MLCMK_CACHE_DIR")
    if root:
        return os.path.join(os.path.expanduser(root), "free_energy")
    return os.path.join(os.path.expanduser("~"), ".cache", "mlcmk", "free_energy")


def reference_free_energy(problem, num_windows=24, kappa=200.0, num_steps=5000,
                          num_burnin=500, sample_every=10, num_bins=36, seed=0, cache_dir=None,
                          verbose=0):
    r"""Reference A(phi, psi) by umbrella sampling on a periodic grid and 2-D WHAM, cached.

    `num_windows`^2 windows at the cell centres of [-pi, pi)^2, restraint `kappa` (kJ/mol/rad^2),
    visited in a serpentine sweep by one continuing trajectory (`num_burnin` steps after each
    move, then `num_steps` with CVs every `sample_every`). The result (A on a `num_bins`^2
    grid, kJ/mol, zero at the minimum) is stored in `cache_dir` under a hash of all settings
    and re-read on the next call.

    Returns:
        dict with `free_energy`, `counts`, `settings`, `wall_time_s`, `path`.
    """
    for name, value in (("num_windows", num_windows), ("num_steps", num_steps),
                        ("num_bins", num_bins), ("sample_every", sample_every)):
        check_positive_int(name, value)
    if not kappa > 0:
        raise ValueError(f"`kappa` must be > 0; received kappa={kappa!r}")
    settings = {"version": _REFERENCE_VERSION, "problem": problem.get_config(),
                "num_windows": int(num_windows), "kappa": float(kappa),
                "num_steps": int(num_steps), "num_burnin": int(num_burnin),
                "sample_every": int(sample_every), "num_bins": int(num_bins), "seed": int(seed)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    path = os.path.join(cache_dir, f"alanine_dipeptide_reference_{key}.npz")
    if os.path.exists(path):
        with np.load(path) as data:
            return {"free_energy": data["free_energy"], "counts": data["counts"],
                    "settings": settings, "wall_time_s": float(data["wall_time_s"]),
                    "path": path}
    start = time.perf_counter()
    t = -np.pi + (np.arange(num_windows) + 0.5) * 2 * np.pi / num_windows
    centers = []
    for j, psi in enumerate(t):
        for phi in (t if j % 2 == 0 else t[::-1]):
            centers.append((phi, psi))
    centers = np.array(centers)
    context = problem.context([seed, 5])
    problem.prepare(context, centers[0], kappa, [seed, 6])
    samples = []
    for k, center in enumerate(centers):
        problem.run_restrained(context, center, kappa, num_burnin, num_burnin) \
            if num_burnin else None
        samples.append(problem.run_restrained(context, center, kappa, num_steps, sample_every))
        if verbose and (k + 1) % num_windows == 0:
            print(f"  umbrella windows {k + 1}/{len(centers)}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    result = wham_2d(samples, centers, kappa, problem.beta, num_bins=num_bins)
    wall = time.perf_counter() - start
    with atomic_file(path, binary=True) as f:
        np.savez(f, free_energy=result["free_energy"], counts=result["counts"],
                 centers=centers, samples=np.array(samples, dtype=np.float32),
                 wall_time_s=wall)
    return {"free_energy": result["free_energy"], "counts": result["counts"],
            "settings": settings, "wall_time_s": wall, "path": path}


# ---------------------------------------------------------------------------- analysis
def find_basins(values, threshold=np.inf, radius=3):
    """Local minima of a periodic grid `values[i_psi, i_phi]` on the cell centres of [-pi, pi)^2.

    A point is a minimum if it is the smallest within `radius` cells (periodically) and below
    `threshold`. Returns a list of `(phi, psi, value)` (rad), lowest first.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    finite = np.where(np.isfinite(values), values, np.inf)
    neighbourhood = np.full_like(finite, np.inf)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx or dy:
                neighbourhood = np.minimum(neighbourhood, np.roll(finite, (dy, dx), (0, 1)))
    t = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    rows, cols = np.nonzero((finite < neighbourhood) & (finite < threshold))
    basins = [(float(t[c]), float(t[r]), float(finite[r, c])) for r, c in zip(rows, cols,
                                                                             strict=True)]
    return sorted(basins, key=lambda b: b[2])


def compare_surfaces(reference, learned, threshold=20.0, basin_tolerance=0.436):
    """Errors of a learned surface against the reference on the reference's grid (kJ/mol).

    Both are arrays `[i_psi, i_phi]` on the same cell-centre grid. The RMS and max errors are
    over the cells with reference A < `threshold` after removing the best constant shift.
    A reference basin (`find_basins`, below `threshold`) is found if the learned surface has a
    local minimum within `basin_tolerance` (rad, periodic distance; default 25 degrees).
    """
    reference = np.asarray(reference, dtype=np.float64)
    learned = np.asarray(learned, dtype=np.float64)
    region = np.isfinite(reference) & (reference < threshold)
    diff = learned[region] - reference[region]
    diff -= diff.mean()
    ref_basins = find_basins(reference, threshold)
    learned_basins = find_basins(learned - np.min(learned[region]))
    found = []
    for phi, psi, a in ref_basins:
        near = [b for b in learned_basins
                if np.hypot(*wrap(np.array(b[:2]) - (phi, psi))) < basin_tolerance]
        found.append({"phi_deg": np.degrees(phi), "psi_deg": np.degrees(psi), "a_kj_mol": a,
                      "found": bool(near),
                      "learned": ([np.degrees(near[0][0]), np.degrees(near[0][1])]
                                  if near else None)})
    return {"a_rmse": float(np.sqrt(np.mean(diff**2))), "a_max_error": float(np.abs(diff).max()),
            "num_points": int(region.sum()), "basins": found}


def plot_free_energy_surface(reference, learned, path, labels=None, threshold=20.0):
    """PNG of reference and learned A(phi, psi) (kJ/mol, degrees) and their difference;
    returns the `Figure` (the last expression of a notebook cell, it is shown there too)."""
    reference = np.asarray(reference, dtype=np.float64)
    learned = np.asarray(learned, dtype=np.float64)
    n = reference.shape[0]
    t = np.degrees(-np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n)
    region = np.isfinite(reference) & (reference < threshold)
    learned = learned - np.mean(learned[region] - reference[region])
    levels = np.linspace(0, 2 * threshold, 21)
    fig, axes = subplots(1, 3, figsize=(15, 4.4))
    for ax, values, title in ((axes[0], reference, "reference A (kJ/mol), umbrella + WHAM"),
                              (axes[1], learned, "learned A (kJ/mol), labels shown")):
        cs = ax.contourf(t, t, np.minimum(np.where(np.isfinite(values), values, np.inf),
                                          2 * threshold), levels=levels)
        fig.colorbar(cs, ax=ax)
        ax.set_title(title)
    if labels is not None and len(labels):
        labels = np.degrees(np.asarray(labels))
        axes[1].plot(labels[:, 0], labels[:, 1], "w.", ms=3)
    error = np.where(region, learned - reference, np.nan)
    cs = axes[2].contourf(t, t, error, levels=np.linspace(-6, 6, 13), cmap="RdBu_r",
                          extend="both")
    fig.colorbar(cs, ax=axes[2])
    axes[2].set_title(f"learned - reference where A < {threshold:g} kJ/mol")
    for ax in axes:
        ax.set_xlabel("phi (deg)")
        ax.set_ylabel("psi (deg)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
