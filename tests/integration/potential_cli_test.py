"""`mlcmk potential train|test|md` end to end at toy size: JSON, plots, model file, errors."""

import json
import os

from mlcmk.data import write_system
from tests.integration.cli_test import run_cli
from tests.models.deep_potential_test import emt_system

TOY = ["--rcut", "4.5", "--rcut_smth", "1.0", "--sel", "60", "--neuron", "4,8",
       "--axis_neuron", "3", "--fitting_neuron", "16,16", "--verbose", "1"]


def write(directory, system):
    write_system(directory, coord=system.coord, atom_types=system.atom_types,
                 type_map=system.type_map, energy=system.energy, force=system.force,
                 box=system.box, virial=system.virial)
    return str(directory)


def test_train_test_md(tmp_path):
    train = write(tmp_path / "train" / "AlCu", emt_system(("Al", "Cu"), nframes=6, seed=0))
    pure = write(tmp_path / "train" / "Al", emt_system(("Al",), nframes=4, seed=1,
                                                       repeat=(1, 1, 2)))
    test = write(tmp_path / "test", emt_system(("Al", "Cu"), nframes=3, seed=2))
    out = tmp_path / "run"
    result = run_cli("potential", "train", f"--data={train},{pure}", f"--test_data={test}",
                     "--steps", "40", "--decay_steps", "10", f"--output_dir={out}", *TOY,
                     timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step" in result.stdout and "ms/step" in result.stdout
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["steps"] == 40 and r["type_map"] == ["Al", "Cu"]
    assert r["test"]["frames"] == 3 and r["test"]["force_rmse"] > 0
    assert os.path.getsize(out / "parity.png") > 1000

    result = run_cli("potential", "test", f"--model={out / 'model.keras'}", f"--data={test}",
                     f"--output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "test.json") as f:
        t = json.load(f)
    # The same model on the same frames: the test command reproduces the training report.
    assert abs(t["force_rmse"] - r["test"]["force_rmse"]) < 1e-9
    assert os.path.getsize(out / "test_parity.png") > 1000

    result = run_cli("potential", "md", f"--model={out / 'model.keras'}", "--repeat", "2",
                     "--md_steps", "20", "--timestep_fs", "0.5", f"--output_dir={out}",
                     timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "md.json") as f:
        md = json.load(f)
    assert md["natoms"] == 32 and md["us_per_atom_per_step"] > 0


def test_errors(tmp_path):
    result = run_cli("potential", "fly")
    assert result.returncode == 2 and "train, test, md" in result.stderr
    result = run_cli("potential", "train", f"--data={tmp_path}", "--steps", "1", *TOY)
    assert result.returncode == 2 and "no DeePMD system" in result.stderr
    result = run_cli("potential", "test", f"--data={tmp_path}")
    assert result.returncode == 2 and "--model is required" in result.stderr
