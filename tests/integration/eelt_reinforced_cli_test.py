"""`mlcmk eelt free-energy --explorer reinforced` end to end at toy size."""

import json

from tests.integration.cli_test import run_cli
from tests.integration.eelt_cli_test import TOY


def test_reinforced_explorer_flag(tmp_path):
    out = tmp_path / "eelt"
    result = run_cli("eelt", "free-energy", "--explorer", "reinforced", *TOY,
                     f"--output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reinforced explorer" in result.stdout
    with open(out / "result.json") as f:
        assert json.load(f)["explorer"] == "reinforced"
    with open(out / "run" / "log.json") as f:
        log = json.load(f)
    # The explorer's defaults: 48 walkers x 10 frames.
    assert [x["iteration"] for x in log] == [0, 1] and log[1]["explored"] == 480
    bad = run_cli("eelt", "free-energy", "--explorer", "metadynamics", f"--output_dir={out}",
                  timeout=300)
    assert bad.returncode != 0 and "explorer" in bad.stderr
