"""`mlcmk eelt potential` end to end at toy size: table, result, resume, errors."""

import json

from tests.integration.cli_test import run_cli

TOY = ("--structure", "fcc_al", "--model", "tiny", "--num_members", "2", "--max_iterations", "1",
       "--labels_per_iteration", "3", "--num_initial", "5", "--train_steps", "10",
       "--md_steps", "20", "--sample_every", "5", "--trajectories", "2", "--test_frames", "10",
       "--lo", "0.0", "--hi", "1e9")


def test_potential_command_writes_result_and_resumes(tmp_path):
    out = tmp_path / "eelt"
    result = run_cli("eelt", "potential", *TOY, f"--output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iter   0" in result.stdout and "iter   1" in result.stdout
    with open(out / "result.json") as f:
        r = json.load(f)
    # Everything explored is a candidate (lo = 0): 3 of the 8 frames are labelled.
    assert r["iterations"] == 1 and r["labels"] == r["labelled_this_session"] == 8
    assert r["explored"] == 8 and r["table"][1]["candidate"] == 8
    assert r["table"][1]["test_force_rmse"] > 0
    again = run_cli("eelt", "potential", *TOY, f"--output_dir={out}", timeout=300)
    assert again.returncode == 0, again.stderr
    with open(out / "result.json") as f:
        r2 = json.load(f)
    assert r2["labelled_this_session"] == 0 and r2["labels"] == r["labels"]


def test_potential_command_rejects_bad_input(tmp_path):
    for args, message in ((("eelt", "potential", "--structure", "hcp_zz"), "unknown --structure"),
                          (("eelt", "potential", "--lo", "0.3", "--hi", "0.1",
                            f"--output_dir={tmp_path}"), "lo <= hi")):
        result = run_cli(*args, timeout=300)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
