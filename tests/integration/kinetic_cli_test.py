"""`mlcmk kinetic` end to end at toy size: errors, timings, plot, JSON, model reuse, bad input."""

import json
import os

from mlcmk.problems.kinetic.moment_solver import relaxation_speed_factor
from tests.integration.cli_test import run_cli


def test_kinetic_command_writes_result_and_plot_and_reuses_the_model(tmp_path):
    out, models, cache = tmp_path / "run", tmp_path / "model", tmp_path / "cache"
    common = ["--eps", "0.1", "--num_x", "24", "--num_v", "40", "--v_max", "7", "--t_end",
              "0.02", f"--output_dir={out}", f"--model_dir={models}", f"--cache_dir={cache}"]
    result = run_cli("kinetic", *common, "--train_runs", "3", "--num_moments", "2",
                     "--autoencoder_epochs", "1", "--closure_epochs", "1",
                     "--finetune_steps", "2", "--finetune_warmup_steps", "1",
                     "--finetune_restarts", "1:3e-4", "--finetune_every_snapshot",
                     "--finetune_loss_power", "2",
                     "--frozen_speed_factor", "5", "--flux", "kinetic",
                     "--hyperbolicity_weight", "0.5", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["training"]["finetune"]["steps"] == 2
    assert len(r["training"]["finetune"]["penalty_history"]) == 2  # checks at steps 0 and 2
    penalised = r["training"]["penalised_fit"]
    assert penalised["steps"] == 500 and penalised["penalty_after"] >= 0
    assert "penalised a priori fit: hyperbolicity penalty" in result.stdout
    c = r["learned_characteristics"]
    assert abs(c["bound"] - relaxation_speed_factor(0.1, 1 / 24, 5.0)) < 1e-12
    assert 0 <= c["complex_fraction"] <= 1 and c["max_speed_factor"] > 1
    assert "characteristic speeds" in result.stdout
    solver_steps = r["training"]["finetune"]["solver_steps"]
    assert (f"a posteriori fit: 2 steps through {solver_steps} solver steps, every-snapshot "
            "trajectory loss (power mean, q = 2)" in result.stdout)
    assert r["training"]["finetune"]["loss_power"] == 2
    assert "trained in" in result.stdout and "closure loss" in result.stdout
    assert r["training"]["finetune_warmup"]["steps"] == 1
    assert r["training"]["finetune_warmup"]["window"] == 1
    assert "a posteriori warm-up on one-interval windows: 1 steps" in result.stdout
    (restart,) = r["training"]["finetune_restarts"]
    assert (restart["steps"], restart["learning_rate"]) == (1, 3e-4)
    assert restart["every_snapshot"] and r["training"]["finetune"]["every_snapshot"]
    assert restart["loss_power"] == 2  # every stage fits the same power mean
    assert not r["training"]["finetune_warmup"]["every_snapshot"]  # one-interval windows
    assert restart["loss_before"] == r["training"]["finetune"]["loss_after"]
    assert "a posteriori restart 1: 1 steps at rate 0.0003" in result.stdout
    assert r["eps"] == 0.1 and r["num_x"] == 24
    for name in ("learned", "euler"):
        assert set(r["errors"][name]) == {"rho", "u", "T"}
        assert r["errors"][name]["rho"] < 0.05
    assert set(r["times_s"]) == {"kinetic", "learned", "euler"}
    assert len(r["profiles"]["kinetic"]["rho"]) == 24
    assert os.path.getsize(out / "profiles.png") > 1000
    assert os.path.getsize(out / "training.png") > 1000  # the fine-tuning's checks
    assert f"{out / 'training.png'}" in result.stdout
    assert "relative L2 error" in result.stdout
    assert os.path.exists(models / "closure.keras")
    assert r["closure_dtype"] == "float64"
    assert r["jit_compile"] is False and r["compile_s"] is None
    with open(models / "solver.json") as f:
        solver = json.load(f)
    assert solver["frozen_speed_factor"] == 5.0 and solver["closure_dtype"] == "float64"
    assert solver["flux"] == r["flux"] == "kinetic"  # fine-tuned through it, saved with it
    again = run_cli("kinetic", *common, "--initial", "sod", "--closure_dtype", "float32",
                    "--jit_compile", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "loaded the learned moment model" in again.stdout
    with open(out / "result.json") as f:
        r = json.load(f)
    assert r["closure_dtype"] == "float32"  # the solve's accuracy: the pipeline test
    assert r["flux"] == "kinetic"  # the loaded model's
    assert r["jit_compile"] is True  # compiled = NumPy: the pipeline and solver tests
    assert set(r["compile_s"]) == {"kinetic", "learned", "euler"}
    assert min(r["compile_s"].values()) > 0
    assert "all three solves compiled with XLA" in again.stdout
    assert all(0 < e < 1 for e in r["errors"]["learned"].values())
    assert not os.path.exists(out / "training.png")  # not this (loaded) model's training
    assert "training.png" not in again.stdout


def test_kinetic_command_rejects_bad_input(tmp_path):
    result = run_cli("kinetic", "--eps", "0", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "eps" in result.stderr
    result = run_cli("kinetic", "--v_max", "2", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "Velocity grid too narrow" in result.stderr
    result = run_cli("kinetic", "--frozen_speed_factor", "-1", f"--output_dir={tmp_path}",
                     f"--cache_dir={tmp_path}", "--train_runs", "1", "--num_x", "8")
    assert result.returncode == 2
    assert "frozen_speed_factor" in result.stderr
    result = run_cli("kinetic", "--hyperbolicity_weight", "-1", f"--output_dir={tmp_path}",
                     f"--cache_dir={tmp_path}", "--train_runs", "1", "--num_x", "8")
    assert result.returncode == 2
    assert "hyperbolicity_weight=-1" in result.stderr
    result = run_cli("kinetic", "--finetune_loss_power", "0.5", "--finetune_steps", "1",
                     f"--output_dir={tmp_path}", f"--cache_dir={tmp_path}", "--train_runs", "1",
                     "--num_x", "8")
    assert result.returncode == 2
    assert "finetune_loss_power" in result.stderr and "0.5" in result.stderr
    result = run_cli("kinetic", "--finetune_restarts", "200", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert "steps:learning_rate items such as 200:1e-3; received '200'" in result.stderr
