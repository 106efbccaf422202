"""`mlcmk eelt free-energy --system alanine_dipeptide` end to end at toy size."""

import json
import os

from tests.integration.cli_test import run_cli

TOY = ("--system", "alanine_dipeptide", "--reference_windows", "4", "--reference_steps", "100",
       "--reference_bins", "8", "--max_iterations", "1", "--min_iterations", "1",
       "--labels_per_iteration", "3", "--num_initial", "4", "--train_steps", "20",
       "--md_steps", "200", "--num_members", "2", "--lo", "0.1")


def test_alanine_free_energy_writes_result_plot_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCMK_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eelt"
    result = run_cli("eelt", "free-energy", *TOY, f"--output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "steps/s" in result.stdout and "reference: 4^2 umbrella windows" in result.stdout
    assert "iter   0" in result.stdout and "iter   1" in result.stdout
    assert os.listdir(tmp_path / "cache" / "free_energy")  # the cached reference
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["energy_unit"] == "kJ/mol" and abs(r["kT"] - 2.494) < 1e-3
    assert r["iterations"] == 1 and r["labels"] == r["labelled_this_session"]
    assert 4 < r["labels"] <= 7 and r["a_rmse_kj_mol"] > 0
    assert r["basins"] and all("found" in b for b in r["basins"])
    assert [row["iteration"] for row in r["table"]] == [0, 1]
    assert os.path.getsize(out / "free_energy.png") > 1000
    # The same command again reads the finished run (and the reference) back, labels nothing.
    again = run_cli("eelt", "free-energy", *TOY, f"--output_dir={out}", timeout=300)
    assert again.returncode == 0, again.stderr
    with open(out / "result.json") as f:
        r2 = json.load(f)
    assert r2["labelled_this_session"] == 0 and r2["labels"] == r["labels"]
    assert abs(r2["a_rmse_kj_mol"] - r["a_rmse_kj_mol"]) < 1e-9
    assert r2["reference"]["wall_time_s"] == r["reference"]["wall_time_s"]


def test_alanine_free_energy_rejects_bad_input(tmp_path):
    result = run_cli("eelt", "free-energy", "--system", "alanine_dipeptide", "--lo", "3",
                     "--hi", "1", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "lo <= hi" in result.stderr
