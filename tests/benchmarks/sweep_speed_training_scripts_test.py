"""`hjb_lambda_sweep.py`, `deep_bsde_speed.py`, `extended_msa.py` and `two_layer_heatmap.py`
run end to end at toy size and write the JSON their docstrings describe.

Not timed (the full-size runs are): this keeps their option paths from breaking unseen. The
one accuracy check is the sweep's Monte Carlo, unbiased at small lambda, against the exact
value by quadrature.
"""

import math

from benchmark_scripts import load_result, run_script


def test_hjb_lambda_sweep(tmp_path):
    out = tmp_path / "sweep.json"
    result = run_script("hjb_lambda_sweep.py", "--lams", "0", "1", "--bsde_lams", "1",
                        "--iterations", "10", "--output", str(out), cache=tmp_path / "cache")
    r = load_result(result, out)
    assert [row["lam"] for row in r["monte_carlo"]] == [0.0, 1.0]
    for row in r["monte_carlo"]:
        assert abs(row["monte_carlo"] - row["exact"]) < 5 * row["stderr"]
    (bsde,) = r["deep_bsde"]
    assert bsde["lam"] == 1.0 and math.isfinite(bsde["y0"])
    assert bsde["reference"] == r["monte_carlo"][1]["exact"]  # the same exact value
    assert (tmp_path / "sweep.png").exists()


def test_deep_bsde_speed(tmp_path):
    out = tmp_path / "speed.json"
    result = run_script("deep_bsde_speed.py", "--blocks", "2", "--output", str(out),
                        cache=tmp_path / "cache")
    r = load_result(result, out)
    assert r["config"]["blocks"] == 2 and len(r["blocks"]) == 2
    assert r["ratio_median"] > 0 and r["ours_ms_median"] > 0
    for block in r["blocks"]:
        assert math.isfinite(block["ours_loss"]) and math.isfinite(block["reference_style_loss"])
    assert r["final"]["ours_y0_rel_error"] >= 0
    result = run_script("deep_bsde_speed.py", "--blocks", "1", cache=tmp_path / "cache")
    assert result.returncode == 2 and "--blocks must be >= 2" in result.stderr


def test_extended_msa_toy(tmp_path):
    out = tmp_path / "emsa"
    result = run_script("extended_msa.py", "--toy-iterations", "3", "--digits-iterations", "0",
                        "--out", str(out), cache=tmp_path / "cache")
    r = load_result(result, str(out) + ".json")
    assert sorted(r["toy"]) == ["Adagrad", "Adam", "E-MSA", "SGD"]
    assert "digits" not in r  # --digits-iterations 0 skips it (scikit-learn is optional)
    for run in r["toy"].values():
        assert len(run["loss"]) == 3 and all(math.isfinite(v) for v in run["loss"])
        assert math.isfinite(run["test"]["test_mse"]) and run["median_s_per_iteration"] > 0
    # The same zero initialisation: every method starts from the same objective.
    assert len({round(run["loss"][0], 9) for run in r["toy"].values()}) == 1
    assert r["machine_load"]["end"]["cpus"] >= 1


def test_two_layer_heatmap_one_cell(tmp_path):
    out = tmp_path / "heat"
    result = run_script("two_layer_heatmap.py", "--log-m", "1", "--log-n", "1", "--dim", "2",
                        "--max-steps", "20", "--chunk", "10", "--out", str(out),
                        cache=tmp_path / "cache")
    r = load_result(result, str(out) + ".json")
    assert r["widths"] == [10] and r["sizes"] == [10]
    assert sorted(row["scaling"] for row in r["rows"]) == ["conventional", "mean_field"]
    for row in r["rows"]:
        assert row["m"] == 10 and row["n"] == 10 and row["steps"] <= 20
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["test_error"])
    assert (tmp_path / "heat.png").exists()
