"""`mlcmk eelt free-energy` end to end at toy size: table, result, plot, resume, errors."""

import json
import os

from tests.integration.cli_test import run_cli

TOY = ("--num_bath", "4", "--max_iterations", "1", "--labels_per_iteration", "4",
       "--num_initial", "5", "--train_steps", "20", "--md_steps", "100", "--md_walkers", "4",
       "--num_members", "2", "--lo", "0.1")


def test_free_energy_command_writes_result_and_resumes(tmp_path):
    out = tmp_path / "eelt"
    result = run_cli("eelt", "free-energy", "--system", "mueller_brown", *TOY,
                     f"--output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iter   0" in result.stdout and "iter   1" in result.stdout
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["iterations"] == 1 and r["labels"] == r["labelled_this_session"]
    assert 5 < r["labels"] <= 9 and r["a_rmse_kT"] > 0
    assert os.path.getsize(out / "free_energy.png") > 1000
    with open(out / "run" / "log.json") as f:
        assert [x["iteration"] for x in json.load(f)] == [0, 1]
    # The same command again reads the finished run back and labels nothing.
    again = run_cli("eelt", "free-energy", "--system", "mueller_brown", *TOY,
                    f"--output_dir={out}", timeout=300)
    assert again.returncode == 0, again.stderr
    with open(out / "result.json") as f:
        r2 = json.load(f)
    assert r2["labelled_this_session"] == 0 and r2["labels"] == r["labels"]
    assert abs(r2["a_rmse_kT"] - r["a_rmse_kT"]) < 1e-9


def test_eelt_command_rejects_bad_input(tmp_path):
    for args, message in ((("eelt",), "expected one action"),
                          (("eelt", "free-energy", "--lo", "3", "--hi", "1",
                            f"--output_dir={tmp_path}"), "lo <= hi")):
        result = run_cli(*args, timeout=300)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
