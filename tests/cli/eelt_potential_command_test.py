"""`mlcmk eelt potential --structures ...` end to end at toy size: table, result, plot, resume."""

import json
import os

from tests.integration.cli_test import run_cli

TOY = ("--model", "tiny", "--num_members", "2", "--max_iterations", "1", "--min_iterations",
       "1", "--train_steps", "10", "--md_steps", "10", "--sample_every", "5", "--trajectories",
       "1", "--labels_per_structure", "2", "--initial_per_structure", "2", "--test_frames", "3")


def test_multi_structure_potential_writes_table_result_and_plot(tmp_path):
    out = tmp_path / "run"
    args = ("eelt", "potential", "--structures", "b2_alcu,fcc100_al", *TOY,
            "--md_driver", "mean", "--ramp", f"--output_dir={out}")
    result = run_cli(*args, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "b2_alcu" in result.stdout and "fcc100_al" in result.stdout
    assert "per structure" in result.stdout
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["structures"] == ["b2_alcu", "fcc100_al"]
    assert r["type_map"] == ["Al", "Cu"]
    assert r["md_driver"] == "mean" and r["ramp"] is True
    assert [row["iteration"] for row in r["table"]] == [0, 1]
    assert sum(t["total_labels"] for t in r["totals"].values()) == r["labels"]
    assert r["labelled_this_session"] == r["labels"]
    assert sum(t["explored"] for t in r["totals"].values()) == r["explored"]
    for t in r["totals"].values():
        assert 0 < t["test_force_rmse"] < 10
    assert os.path.getsize(out / "figure2.png") > 1000
    # Rerunning resumes the finished run: nothing is labelled again.
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    with open(out / "result.json") as f:
        r2 = json.load(f)
    assert r2["labelled_this_session"] == 0
    assert r2["labels"] == r["labels"]


def test_multi_structure_potential_rejects_bad_structures(tmp_path):
    result = run_cli("eelt", "potential", "--structures", "fcc_al,fcc_xx",
                     f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "`structures` has an unknown structure 'fcc_xx'" in result.stderr
    result = run_cli("eelt", "potential", "--structures", "", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "`structures` is empty" in result.stderr
