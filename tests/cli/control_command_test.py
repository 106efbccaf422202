"""`mlcmk control` end to end at toy size: result JSON, plot, export, errors."""

import json
import os

from tests.integration.cli_test import run_cli


def test_control_command_writes_result_plot_and_export(tmp_path):
    out, export = tmp_path / "run", tmp_path / "saved"
    result = run_cli("control", "--problem", "energy_storage", "--devices", "3", "--num_steps",
                     "6", "--iterations", "40", "--epochs", "2", "--eval_paths", "8",
                     "--verbose", "0", "--noxla", f"--output_dir={out}", f"--export_dir={export}",
                     timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "result.json") as f:
        r = json.load(f)
    for key in ("learned_reward", "rule_based_reward", "lp_bound_reward", "relative_reward",
                "ms_per_iteration", "history", "bound_holds"):
        assert key in r, key
    assert r["state_dim"] == 5 and r["control_dim"] == 9
    assert r["bound_holds"]
    assert r["lp_bound_reward"] >= r["learned_reward"]
    assert r["lp_bound_reward"] >= r["rule_based_reward"]
    assert os.path.getsize(out / "control.png") > 1000
    assert os.path.exists(export / "saved_model.pb")
    assert "relative reward" in result.stdout


def test_control_command_rejects_bad_input():
    result = run_cli("control", "--problem", "energy_storage", "--num_steps", "-2")
    assert result.returncode == 2
    assert "num_steps" in result.stderr
    result = run_cli("control", "--problem", "hjb_lq")
    assert result.returncode == 2
    assert "not a control problem" in result.stderr
    result = run_cli("control", "--problem", "lq_regulator", "--devices", "3")
    assert result.returncode == 2
    assert "--devices" in result.stderr
