"""Helpers shared by the subcommands: JSON configs that fill in flags, atomic JSON output."""

import json

from mlcmk.io import write_json  # noqa: F401  (re-exported for the subcommands)


def load_json_config(path):
    """Reads a JSON object from `path`; raises ValueError if it is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object; received {type(config).__name__}")
    return config


def apply_config_to_flags(flag_values, config):
    """Sets flags from `config`, except flags given explicitly on the command line.

    Args:
        flag_values: an `absl.flags.FlagValues`, already parsed (usually `flags.FLAGS`).
        config: dict `{flag name: value}`, e.g. from `load_json_config`.

    Returns:
        The list of flag names set from the config.

    Raises:
        ValueError: if a key names no flag, or a value does not parse for its flag.
    """
    unknown = sorted(key for key in config if key not in flag_values)
    if unknown:
        raise ValueError(f"Unknown keys in config: {', '.join(unknown)}. They must be flag names.")
    applied = []
    for key, value in config.items():
        flag = flag_values[key]
        if flag.present:  # explicit command-line values win over the config file
            continue
        try:
            parsed = None if value is None else flag.parser.parse(value)
        except (ValueError, TypeError) as err:
            raise ValueError(f"Config value {key}={value!r} is invalid: {err}") from err
        setattr(flag_values, key, parsed)
        applied.append(key)
    return applied
