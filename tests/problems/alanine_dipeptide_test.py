"""Alanine dipeptide in OpenMM: molecule, restraints, restrained MD, WHAM, reference cache."""

import os

import numpy as np
import openmm
import pytest

from mlcmk.problems.free_energy import AlanineDipeptide, wham_2d
from mlcmk.problems.free_energy.alanine_dipeptide import (
    PHI_ATOMS,
    PSI_ATOMS,
    alanine_dipeptide_positions,
    alanine_dipeptide_structure,
    compare_surfaces,
    dihedral,
    find_basins,
    periodic_interpolate,
    reference_free_energy,
    wrap,
)
from mlcmk.problems.registry import get_problem_class


@pytest.fixture(scope="module")
def problem():
    return AlanineDipeptide()


def test_molecule_has_22_atoms_right_elements_and_requested_dihedrals():
    topology, positions = alanine_dipeptide_structure(phi=-1.0, psi=2.5)
    symbols = [a.element.symbol for a in topology.atoms()]
    assert len(symbols) == 22 and topology.getNumBonds() == 21
    assert {s: symbols.count(s) for s in set(symbols)} == {"C": 6, "H": 12, "N": 2, "O": 2}
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "NME"]
    x = np.asarray(positions._value)
    assert dihedral(x, PHI_ATOMS) == pytest.approx(-1.0, abs=1e-9)
    assert dihedral(x, PSI_ATOMS) == pytest.approx(2.5, abs=1e-9)
    # Bonds have chemical lengths (0.9 to 1.6 Å).
    lengths = [np.linalg.norm(x[a.index] - x[b.index]) * 10 for a, b in topology.bonds()]
    assert 0.9 < min(lengths) and max(lengths) < 1.6


def test_alpha_carbon_is_l():
    # CORN rule: seen with HA towards the viewer, CO -> CB (R) -> N run clockwise.
    x = alanine_dipeptide_positions(-1.4, 1.3)
    ca, ha = x[8], x[9] - x[8]
    volume = np.dot(ha, np.cross(x[14] - ca, x[10] - ca))
    assert volume < 0  # CO, R clockwise seen from HA
    assert np.dot(ha, np.cross(x[10] - ca, x[6] - ca)) < 0  # R, N clockwise as well


def test_force_field_types_the_molecule_and_energy_is_sane(problem):
    _, system = problem.system()
    assert system.getNumParticles() == 22
    assert system.getNumConstraints() == 12  # every bond to hydrogen
    energy, cvs = problem.minimized_energy((-1.4, 1.3))
    # Amber ff99SB vacuum C7eq minimum: about -90 kJ/mol in this force field's zero.
    assert -200 < energy < 0
    assert np.all(np.abs(wrap(cvs - (-1.4, 1.3))) < 0.5)  # stays in the C7eq basin


def test_restraint_energy_equals_numpy_dihedrals(problem):
    context = problem.context(0)
    rng = np.random.default_rng(1)
    for phi0, psi0 in ((3.0, -3.0), (-3.1, 0.4), (0.2, 3.1)):
        _, positions = alanine_dipeptide_structure(rng.uniform(-np.pi, np.pi),
                                                   rng.uniform(-np.pi, np.pi))
        x = np.asarray(positions._value) + 0.005 * rng.standard_normal((22, 3))
        context.setPositions(x)
        context.setParameter("kappa", 37.0)
        context.setParameter("phi0", phi0)
        context.setParameter("psi0", psi0)
        energy = context.getState(getEnergy=True, groups={1}).getPotentialEnergy()._value
        d = wrap(np.array([dihedral(x, PHI_ATOMS), dihedral(x, PSI_ATOMS)]) - (phi0, psi0))
        assert energy == pytest.approx(0.5 * 37.0 * np.sum(d**2), rel=1e-9, abs=1e-9)
        assert problem.cvs(context) == pytest.approx(wrap(d + (phi0, psi0)), abs=1e-9)


def test_stiff_restrained_md_stays_at_center_with_error_bars(problem):
    centers = np.array([[-1.4, 1.3], [-0.7, 1.3]])
    kw = dict(kappa=2000.0, num_steps=1500, num_burnin=200, sample_every=10, num_blocks=5)
    r = problem.restrained_mean_force(centers, seed=[[1], [2]], **kw)
    # The restraint's standard deviation is sqrt(kT / kappa) = 0.035 rad.
    assert np.all(np.abs(wrap(r["mean_cv"] - centers)) < 0.05)
    assert np.all(np.isfinite(r["mean_force"])) and np.all(r["stderr"] > 0)
    assert np.all(r["stderr"] < 20)
    # Right of the C7eq minimum (phi ~ -80 deg) A rises towards phi = 0: the force pushes back.
    assert r["mean_force"][1, 0] < -3 * r["stderr"][1, 0]
    # Seeded: the same seed gives the same label, whatever the batch.
    again = problem.restrained_mean_force(centers[1:], seed=[[2]], **kw)
    np.testing.assert_allclose(again["mean_force"][0], r["mean_force"][1], rtol=1e-12)
    other = problem.restrained_mean_force(centers[1:], seed=[[3]], **kw)
    spread = np.hypot(r["stderr"][1], other["stderr"][0])
    assert np.all(np.abs(other["mean_force"][0] - r["mean_force"][1]) < 5 * spread)
    assert np.any(other["mean_force"][0] != r["mean_force"][1])


def test_wham_recovers_a_known_periodic_free_energy():
    rng = np.random.default_rng(0)
    beta, kappa = 0.4, 30.0

    def exact(s):
        return (8 * np.cos(s[..., 0]) + 5 * np.sin(s[..., 1] + 0.3)
                + 3 * np.cos(s[..., 0] - s[..., 1]))

    n = 240  # fine grid the umbrella samples are drawn on
    t = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    fine = np.stack(np.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)
    c = -np.pi + (np.arange(12) + 0.5) * 2 * np.pi / 12
    centers = np.array([(a, b) for b in c for a in c])
    samples = []
    for center in centers:
        logw = -beta * (exact(fine) + 0.5 * kappa * np.sum(wrap(fine - center) ** 2, -1))
        w = np.exp(logw - logw.max())
        idx = rng.choice(len(fine), size=2000, p=w / w.sum())
        samples.append(wrap(fine[idx] + rng.uniform(-np.pi / n, np.pi / n, (2000, 2))))
    r = wham_2d(samples, centers, kappa, beta, num_bins=24)
    tb = -np.pi + (np.arange(24) + 0.5) * 2 * np.pi / 24
    a = exact(np.stack(np.meshgrid(tb, tb, indexing="xy"), -1))
    a -= a.min()
    region = a < 15
    assert np.all(np.isfinite(r["free_energy"][region]))
    diff = r["free_energy"][region] - a[region]
    diff -= diff.mean()
    assert np.sqrt(np.mean(diff**2)) < 0.3  # kT = 2.5
    # Without the WHAM weights (a plain histogram of all windows) the error is large.
    total = r["counts"][region]
    naive = -np.log(total) / beta
    naive -= naive.mean() - a[region].mean()
    assert np.sqrt(np.mean((naive - a[region]) ** 2)) > 1.0


def test_interpolation_basins_and_comparison():
    n = 36
    t = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    phi, psi = np.meshgrid(t, t, indexing="xy")
    p0, q0 = t[24], t[18]  # minima at (p0, q0) and (p0, q0 - pi), on cell centres
    values = 10 * (2 - np.cos(phi - p0) - np.cos(2 * (psi - q0)))
    s = np.stack([phi, psi], -1).reshape(-1, 2)
    np.testing.assert_allclose(periodic_interpolate(values, s), values.ravel(), atol=1e-12)
    np.testing.assert_allclose(periodic_interpolate(values, s + 2 * np.pi),
                               values.ravel(), atol=1e-9)
    basins = find_basins(values, threshold=5.0)
    assert len(basins) == 2
    for b, target in zip(sorted(basins, key=lambda b: b[1]), ((p0, q0 - np.pi), (p0, q0)),
                         strict=True):
        assert np.hypot(*wrap(np.array(b[:2]) - target)) < 1e-12
    same = compare_surfaces(values, values + 7.0, threshold=15.0)
    assert same["a_rmse"] < 1e-12 and all(b["found"] for b in same["basins"])
    one = compare_surfaces(values, 10 * (2 - np.cos(phi - p0) - np.cos(psi - q0)),
                           threshold=15.0)
    assert sum(b["found"] for b in one["basins"]) == 1 and one["a_rmse"] > 1


def test_reference_is_computed_once_and_cached(problem, tmp_path):
    kw = dict(num_windows=4, num_steps=100, num_burnin=10, sample_every=5, num_bins=8,
              cache_dir=str(tmp_path))
    first = reference_free_energy(problem, **kw)
    assert os.path.exists(first["path"]) and first["free_energy"].shape == (8, 8)
    assert np.nanmin(first["free_energy"]) == 0.0
    second = reference_free_energy(problem, **kw)
    np.testing.assert_array_equal(first["free_energy"], second["free_energy"])
    assert second["wall_time_s"] == first["wall_time_s"]
    other = reference_free_energy(problem, **{**kw, "seed": 1})
    assert other["path"] != first["path"]
    p = AlanineDipeptide()
    with pytest.raises(ValueError, match="load_reference"):
        p.free_energy([[0.0, 0.0]])
    p.reference = first
    grid = p.grid(8).reshape(-1, 2)
    np.testing.assert_allclose(p.free_energy(grid), first["free_energy"].ravel())
    assert p.mean_force(grid).shape == (64, 2)


def test_registry_and_units():
    assert get_problem_class("alanine_dipeptide") is AlanineDipeptide
    p = AlanineDipeptide(temperature=300.0)
    assert p.kT == pytest.approx(2.494, abs=1e-3) and p.beta == pytest.approx(1 / p.kT)
    assert AlanineDipeptide.from_config(p.get_config()).get_config() == p.get_config()
    assert openmm.Platform.getPlatformByName(p.platform).getName() == "Reference"


@pytest.mark.parametrize("kwargs, name", [
    ({"solvent": "water"}, "solvent"), ({"temperature": -1.0}, "temperature"),
    ({"platform": "CUDA"}, "platform"), ({"threads": 0}, "threads")])
def test_bad_construction_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AlanineDipeptide(**kwargs)


def test_bad_input_names_the_argument(problem):
    with pytest.raises(ValueError, match="chi"):
        problem.cv_index("chi")
    with pytest.raises(ValueError, match="centers"):
        problem.restrained_mean_force(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="kappa"):
        problem.restrained_mean_force([[0.0, 0.0]], kappa=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        problem.restrained_mean_force([[0.0, 0.0]], num_steps=0)
    with pytest.raises(ValueError, match="seed"):
        problem.restrained_mean_force([[0.0, 0.0]], seed=[[1], [2]])
    with pytest.raises(ValueError, match="kappa"):
        wham_2d([np.zeros((3, 2))], [[0.0, 0.0]], kappa=-1.0, beta=1.0)
    with pytest.raises(ValueError, match="samples"):
        wham_2d([np.zeros((3, 2))] * 2, [[0.0, 0.0]], kappa=1.0, beta=1.0)
