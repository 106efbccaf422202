"""The moment-closure benchmark scripts run end to end at toy size.

They are not timed here (speed and accuracy figures come from full-size runs); this checks
that the option paths of `moment_closure.py`, `moment_closure_oracle.py` and
`moment_closure_compiled.py` still run and write what they say. The oracle's
`--posteriori_fit_steps` path once broke for several stops because nothing ran it.
"""

import json
import os

import numpy as np
from benchmark_scripts import run_script

from mlcmk.problems.kinetic.data import generate_kinetic_data


def test_training_benchmark_then_oracle_and_compiled_on_its_saved_model(tmp_path):
    cache, model, out = tmp_path / "cache", tmp_path / "model", tmp_path / "out"
    result = run_script(
        "moment_closure.py", "--train_runs", "3", "--num_moments", "2", "--heat_flux_moment",
        "1", "--autoencoder_epochs", "1", "--closure_epochs", "1", "--num_x", "16",
        "--t_end", "0.02", "--finetune_steps", "1", "--finetune_check_every", "1",
        "--finetune_batch", "2", "--test_cases", "sod:1002", "--repeats", "1",
        "--fit_check_runs", "1", "--flux", "kinetic", "--closure_dtype", "float32",
        "--save_model", str(model), "--output", str(out / "train"), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "train.json") as f:
        r = json.load(f)
    assert len(r["rows"]) == 5  # one case at each of the five eps
    assert r["settings"]["flux"] == "kinetic"
    assert r["training"]["finetune"]["steps"] == 1
    assert r["machine_load"]["end"]["cpus"] >= 1
    for row in r["rows"]:
        for name in ("learned", "euler"):
            assert all(np.isfinite(row["errors"][name][k]) for k in ("rho", "u", "T"))
        assert row["speedup"] > 0
    assert (out / "train.png").exists() and os.path.isdir(model)

    # The saved model fine-tuned further on the runs of two seeds with the larger eps, then
    # saved and scored.
    eps = np.concatenate([generate_kinetic_data(num_runs=3, seed=seed, num_x=16, t_end=0.02,
                                                cache_dir=str(cache / "kinetic"))["eps"]
                          for seed in (0, 2)])
    min_eps = float(np.sort(eps)[2])  # four of the six runs
    result = run_script(
        "moment_closure.py", "--model_dir", str(model), "--continue_finetune",
        "--finetune_runs", "3", "--finetune_seeds", "0,2", "--finetune_steps", "1",
        "--finetune_min_eps", repr(min_eps), "--finetune_lr_ramp", "2",
        "--finetune_loss_power", "2", "--finetune_restarts", "1:1e-4",
        "--finetune_check_every", "1", "--finetune_batch", "2", "--finetune_every_snapshot",
        "--num_x", "16", "--t_end", "0.02",
        "--test_cases", "sod:1002", "--repeats", "1", "--fit_check_runs", "1",
        "--save_model", str(tmp_path / "model2"), "--output", str(out / "continued"),
        cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "continued.json") as f:
        r = json.load(f)
    assert r["training"]["loaded_from"] == str(model)
    assert r["training"]["finetune"]["steps"] == 1 and r["training"]["finetune"]["every_snapshot"]
    assert r["training"]["finetune"]["samples"] == 4  # whole runs: one sample per run kept
    assert r["training"]["finetune"]["lr_ramp_steps"] == 2
    assert "fine-tuned on 4 runs" in result.stdout
    assert "a posteriori fit: 1 steps through" in result.stdout
    assert "(rate ramped over 2 steps)" in result.stdout
    assert "every-snapshot trajectory loss (power mean, q = 2) " in result.stdout
    assert [s["steps"] for s in r["training"]["finetune_restarts"]] == [1]
    assert [s["loss_power"] for s in [r["training"]["finetune"],
                                      *r["training"]["finetune_restarts"]]] == [2, 2]
    assert r["settings"]["flux"] == "kinetic"  # the saved model's flux
    assert len(r["rows"]) == 5 and os.path.isdir(tmp_path / "model2")
    assert "a posteriori fit: 1 steps" in result.stdout
    # The scored model is the one in memory, not --model_dir's as saved: the saved model
    # (kinetic flux) scored through the Lax-Friedrichs flux does not give the errors above.
    result = run_script(
        "moment_closure.py", "--model_dir", str(model), "--flux", "lax_friedrichs",
        "--num_x", "16", "--t_end", "0.02", "--test_cases", "sod:1002", "--repeats", "1",
        "--fit_check_runs", "0", "--closure_dtype", "float32", "--output",
        str(out / "other_flux"), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "train.json") as f:
        trained = json.load(f)
    with open(out / "other_flux.json") as f:
        other = json.load(f)
    assert other["settings"]["flux"] == "lax_friedrichs"
    for a, b in zip(trained["rows"], other["rows"], strict=True):
        assert a["eps"] == b["eps"]
        assert abs(b["errors"]["learned"]["u"] / a["errors"]["learned"]["u"] - 1) > 1e-6
    result = run_script("moment_closure.py", "--continue_finetune", "--finetune_seeds", "0,1",
                        "--finetune_runs", "2", cache=cache)
    assert result.returncode == 2 and "--finetune_seeds must not hold 1" in result.stderr
    result = run_script("moment_closure.py", "--continue_finetune", "--finetune_steps", "1",
                        "--finetune_runs", "2", cache=cache)
    assert result.returncode == 2 and "--continue_finetune needs --model_dir" in result.stderr
    result = run_script("moment_closure.py", "--continue_finetune", "--model_dir", str(model),
                        "--finetune_steps", "1", "--finetune_runs", "2",
                        "--finetune_warmup_steps", "5", cache=cache)
    assert result.returncode == 2 and "does not take --finetune_warmup_steps" in result.stderr
    result = run_script("moment_closure.py", "--finetune_min_eps", "0.1", cache=cache)
    assert result.returncode == 2 and "--finetune_min_eps needs --finetune_runs" in result.stderr
    result = run_script("moment_closure.py", "--finetune_lr_ramp", "-1", cache=cache)
    assert result.returncode == 2 and "--finetune_lr_ramp must be a non-negative" in result.stderr
    result = run_script("moment_closure.py", "--finetune_loss_power", "0.5", cache=cache)
    assert result.returncode == 2 and "--finetune_loss_power must be a number >= 1" in result.stderr

    result = run_script(
        "moment_closure_oracle.py", "--model_dir", str(model), "--eps", "1", "--num_x", "16",
        "--speed_factors", "model,3", "--test_cases", "smooth:1000", "--snapshots", "4",
        "--kinetic_refinement", "2", "--local_fit_epochs", "1", "--local_fit_stride", "2",
        "--posteriori_fit_steps", "1", "--posteriori_fit_snapshots", "2",
        "--output", str(out / "oracle"), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "oracle.json") as f:
        (row,) = json.load(f)["rows"]
    assert row["num_x"] == 16 and row["eps"] == 1.0
    assert len(row["oracle"]) == 2 and "3" in row["oracle"]  # the model's bound and 3
    assert len(row["oracle_state_heat_flux"]) == 2  # the model has the heat-flux moment
    for key in ("learned", "kinetic_grid_error", "learned_vs_refined", "local_fit",
                "posteriori_fit"):
        assert row[key] is not None and all(np.isfinite(row[key][k]) for k in ("rho", "u", "T"))
    # A refined reference is a different solution: its error against the grid's is not zero.
    assert row["kinetic_grid_error"]["rho"] > 0
    before, after = row["posteriori_fit_loss"]
    assert np.isfinite(before) and np.isfinite(after)

    result = run_script(
        "moment_closure_compiled.py", "--model_dir", str(model), "--closure_dtype", "float64",
        "--num_x", "16", "--t_end", "0.02", "--test_cases", "sod:1002", "--repeats", "1",
        "--output", str(out / "compiled.json"), cache=cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "compiled.json") as f:
        compiled = json.load(f)
    rows = compiled["rows"]
    assert "num_moments" not in compiled["settings"]  # the loaded model's, not a flag's
    assert compiled["closure"]["num_moments"] == 2 and compiled["closure"]["flux"]
    assert len(rows) == 5
    for row in rows:  # the XLA programs solve what the NumPy loops solve
        assert row["kinetic_max_difference"] < 1e-12
        assert row["learned_u_max_difference"] < 1e-9
        assert row["speedup"]["numpy"] > 0 and row["speedup"]["xla"] > 0
