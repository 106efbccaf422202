"""`concurrent_learning.py` and `dpgen_structures.py` run end to end at toy size (one
iteration, a few labels and training steps) and write the JSON and plot they describe.

Not timed and not checked for accuracy (the full-size runs are): this keeps the explore,
examine, label, train and baseline stages of both scripts from breaking unseen.
"""

import math

from benchmark_scripts import load_result, run_script


def test_concurrent_learning_one_iteration(tmp_path):
    out = tmp_path / "cl.json"
    result = run_script("concurrent_learning.py", "--max_iterations", "1", "--labels_per_iteration",
                        "4", "--train_steps", "10", "--run_dir", str(tmp_path / "run"), "--output",
                        str(out), cache=tmp_path / "cache")
    r = load_result(result, out)
    assert r["iterations"] == 1 and r["labels_used"] > 0
    assert len(r["per_iteration"]) == 2  # the initial labels, then one iteration
    assert math.isfinite(r["a_rmse_kT"]) and r["a_rmse_kT"] >= r["restraint_floor_a_rmse_kT"] > 0
    assert math.isfinite(r["baseline_plain_md"]["a_rmse_kT"])
    assert r["met"] == (r["a_rmse_kT"] <= r["target_a_rmse_kT"])
    assert (tmp_path / "cl.png").exists()


def test_dpgen_structures_one_structure_one_iteration(tmp_path):
    out = tmp_path / "dps.json"
    result = run_script("dpgen_structures.py", "--structures", "fcc_al", "--members", "2",
                        "--iterations", "1", "--train_steps", "5", "--num_initial_per_structure",
                        "1", "--labels_per_structure", "2", "--trajectories", "1", "--md_steps",
                        "10", "--random_frames", "10", "--test_frames", "2", "--baseline_seeds",
                        "1", "--run_dir", str(tmp_path / "run"), "--output", str(out),
                        cache=tmp_path / "cache")
    r = load_result(result, out)
    assert r["structures"] == ["fcc_al"] and r["members"] == 2
    assert len(r["eelt_members_force_rmse"]) == 2
    assert r["labels"] >= 1 and r["emt_calls"] >= r["labels"]
    assert r["random_all"]["labels"] == 10  # --random_frames
    assert r["random_same"]["labels"] == r["labels"]  # as many random frames as EELT labels
    for test in (r["eelt_test"], r["eelt_member0_test"], r["random_all"]["test"],
                 r["random_same"]["test"]):
        assert math.isfinite(test["fcc_al"]["force_rmse"]) and test["all"] == test["fcc_al"]
    assert r["eelt_member0_test"]["all"]["force_rmse"] == r["eelt_members_force_rmse"][0]
    assert r["machine_load"]["end"]["cpus"] >= 1
    assert (tmp_path / "dps.png").exists()
