import json
import os

import pytest
from absl import flags

from mlcmk.cli.common import apply_config_to_flags, load_json_config, write_json


def make_flags(argv):
    values = flags.FlagValues()
    flags.DEFINE_integer("epochs", 10, "", flag_values=values)
    flags.DEFINE_float("rate", 0.1, "", flag_values=values)
    flags.DEFINE_string("name", "a", "", flag_values=values)
    values(argv)
    return values


def test_config_fills_flags_but_command_line_wins(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "rate": 1, "name": "b"}))
    values = make_flags(["prog", "--epochs=7"])
    applied = apply_config_to_flags(values, load_json_config(str(path)))
    assert sorted(applied) == ["name", "rate"]
    assert values.epochs == 7 and values.rate == 1.0 and isinstance(values.rate, float)
    assert values.name == "b"


def test_unknown_keys_and_bad_values():
    values = make_flags(["prog"])
    with pytest.raises(ValueError, match="Unknown keys in config: depth"):
        apply_config_to_flags(values, {"depth": 3, "epochs": 2})
    with pytest.raises(ValueError, match="epochs='many'"):
        apply_config_to_flags(values, {"epochs": "many"})


def test_load_json_config_rejects_non_objects(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_json_config(str(path))


def test_write_json_is_atomic_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "out" / "result.json"
    write_json(str(path), {"b": 1, "a": [1.5]})
    write_json(str(path), {"c": 2})
    assert json.loads(path.read_text()) == {"c": 2}
    assert os.listdir(path.parent) == ["result.json"]
    with pytest.raises(TypeError):
        write_json(str(path), {"bad": object()})
    assert json.loads(path.read_text()) == {"c": 2}
    assert os.listdir(path.parent) == ["result.json"]
