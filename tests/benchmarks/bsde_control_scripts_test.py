"""`benchmarks/deep_bsde.py` and `benchmarks/control.py` run end to end at toy size.

Not timed and not checked for accuracy (the full-size runs are): this checks that the scripts
still run every stage of their default path and write the JSON their READMEs describe.
"""

import json
import math

from benchmark_scripts import run_script


def test_deep_bsde_script_hjb_lq_with_float32_and_original_architecture(tmp_path):
    out = tmp_path / "out" / "deep_bsde.json"
    result = run_script("deep_bsde.py", "--problems", "hjb_lq", "--seeds", "0",
                        "--iterations", "10", "--output", str(out), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out) as f:
        r = json.load(f)
    assert list(r["problems"]) == ["hjb_lq"]
    (run,) = r["problems"]["hjb_lq"]["runs"]
    assert run["iterations"] == 10 and run["seed"] == 0
    assert math.isfinite(run["y0"]) and run["relative_error"] >= 0
    assert r["problems"]["hjb_lq"]["relative_error"]["mean"] == run["relative_error"]
    # --iterations now also sets the float32 run and the original architecture's run.
    assert r["hjb_lq_float32"]["iterations"] == 10
    assert r["hjb_lq_original_architecture"]["iterations"] == 10
    assert r["speedup_vs_original_architecture_same_run"] > 0
    assert all(v > 0 for v in r["machine"].values())


def test_control_script_lq_and_energy_storage(tmp_path):
    out = tmp_path / "control.json"
    result = run_script("control.py", "--lq_dim", "4", "--lq_iterations", "10",
                        "--lq_eval_paths", "64", "--devices", "5", "--seeds", "1",
                        "--storage_iterations", "4", "--eval_paths", "4", "--output", str(out),
                        cache=tmp_path / "cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out) as f:
        r = json.load(f)
    lq = r["lq_regulator"]
    assert lq["dim"] == 4 and lq["iterations"] == 10
    assert lq["reference_cost"] > 0 and math.isfinite(lq["learned_cost"])
    assert math.isclose(lq["excess_cost"], lq["learned_cost"] - lq["optimal_cost_same_paths"],
                        rel_tol=1e-9, abs_tol=1e-12)
    storage = r["energy_storage"]["5"]
    assert [x["seed"] for x in storage["runs"]] == [1]
    # No policy beats perfect foresight: the LP bound holds for whatever was learned.
    assert storage["bound_holds"]
    assert all(x["learned_reward"] <= x["lp_bound_reward"] + 1e-9 for x in storage["runs"])
    assert storage["relative_reward"]["values"] == [x["relative_reward"] for x in storage["runs"]]
    for when in ("start", "end"):
        assert len(r["machine_load"][when]["load_average_1_5_15_min"]) == 3
