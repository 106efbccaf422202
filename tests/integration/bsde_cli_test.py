"""`mlcmk bsde` end to end at toy size: result JSON, plot, export, errors."""

import json
import os

from tests.integration.cli_test import run_cli


def test_bsde_command_writes_result_plot_and_export(tmp_path):
    out, export = tmp_path / "run", tmp_path / "saved"
    result = run_cli("bsde", "--problem", "black_scholes_barenblatt", "--dim", "4",
                     "--num_steps", "10", "--iterations", "400", "--epochs", "4",
                     "--learning_rate", "0.01", "--z_error_paths", "16", "--verbose", "0",
                     "--tolerance", "0.02", f"--output_dir={out}", f"--export_dir={export}",
                     timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "result.json") as f:
        r = json.load(f)
    for key in ("problem", "dim", "y0", "reference", "relative_error", "final_loss",
                "trivial_loss", "z_relative_error", "z_cosine", "ms_per_iteration",
                "wall_time_s", "iterations", "seed"):
        assert key in r, key
    assert r["problem"] == "black_scholes_barenblatt" and r["dim"] == 4
    assert r["relative_error"] < 0.02
    assert r["final_loss"] < r["trivial_loss"]
    assert os.path.getsize(out / "training.png") > 1000
    assert os.path.exists(export / "saved_model.pb")
    assert "relative error" in result.stdout and "ok" in result.stdout


def test_bsde_command_rejects_bad_input():
    result = run_cli("bsde", "--problem", "no_such_equation")
    assert result.returncode == 2
    assert "hjb_lq" in result.stderr
    result = run_cli("bsde", "--problem", "hjb_lq", "--num_steps", "0")
    assert result.returncode == 2
    assert "num_steps" in result.stderr
    result = run_cli("bsde", "--problem", "barron_teacher")
    assert result.returncode == 2
    assert "not a BSDE problem" in result.stderr
