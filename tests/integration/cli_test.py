import json
import os
import subprocess
import sys

import pytest

import mlcmk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mlcmk.__file__)))


def run_cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "mlcmk.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize("args", [(), ("--help",), ("help",)])
def test_help_lists_commands(args):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "list" in result.stdout and "fit_barron" in result.stdout
    assert "Train a scaled two-layer network" in result.stdout


def test_subcommand_help_shows_its_flags():
    result = run_cli("fit_barron", "--help")
    assert "--width" in result.stdout and "--scaling" in result.stdout
    assert "fit a TwoLayerNetwork to the Barron teacher" in result.stdout


def test_unknown_command_exits_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr and "fit_barron" in result.stderr


def test_list():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "[regression]" in result.stdout
    assert "barron_teacher (aliases: barron)" in result.stdout
    assert "TwoLayerNetwork" in result.stdout and "ScaledResNet" in result.stdout


def test_fit_barron_with_config_and_override(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 2, "width": 64, "samples": 64, "dim": 3}))
    output = tmp_path / "result.json"
    result = run_cli(
        "fit_barron",
        f"--config={config}",
        "--width=32",
        "--test_samples=50",
        "--verbose=0",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr
    assert "relative_l2_error=" in result.stdout
    report = json.loads(output.read_text())
    assert report["flags"]["width"] == 32  # command line beats config
    assert report["flags"]["epochs"] == 2 and report["flags"]["dim"] == 3
    assert len(report["train_loss"]) == 2
    assert report["relative_l2_error"] > 0


def test_fit_barron_rejects_unknown_config_key(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"depth": 2}))
    result = run_cli("fit_barron", f"--config={config}", "--verbose=0")
    assert result.returncode != 0
    assert "Unknown keys in config: depth" in result.stderr
