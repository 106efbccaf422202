"""Entry point of the `mlcmk` command: `mlcmk <subcommand> [flags]`.

Each subcommand is a module with absl flags defined at module level, a `DESCRIPTION` string and
`main(argv)`. Modules are imported only when their subcommand runs, so their flags never clash.
"""

import ast
import importlib
import importlib.util
import sys

COMMANDS = {
    "bsde": "mlcmk.cli.bsde",
    "list": "mlcmk.cli.list_command",
    "fit_barron": "mlcmk.cli.fit_barron",
    "potential": "mlcmk.cli.potential",
    "kinetic": "mlcmk.cli.kinetic",
    "eelt": "mlcmk.cli.eelt",
    "control": "mlcmk.cli.control",
}

_HELP = ("-h", "--help", "-help", "help")


def _description(module_path):
    """Reads the module's `DESCRIPTION` without importing it (no TensorFlow, no flags)."""
    spec = importlib.util.find_spec(module_path)
    if spec is None or spec.origin is None:
        return "(module not found)"
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DESCRIPTION" for t in node.targets
        ):
            try:
                return ast.literal_eval(node.value).strip().splitlines()[0]
            except (ValueError, IndexError):
                break
    return ""


def usage():
    """Returns the list of subcommands with their descriptions."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: mlcmk <command> [--flags]   (mlcmk <command> --help for its flags)",
        "",
        "commands:",
    ]
    for name, module_path in COMMANDS.items():
        lines.append(f"  {name:<{width}}  {_description(module_path)}")
    return "\n".join(lines)


def run(argv=None):
    """Dispatches `argv[1]` to its subcommand module; returns an exit code for help/errors."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in _HELP:
        if len(argv) > 2 and argv[1] == "help" and argv[2] in COMMANDS:
            return run([argv[0], argv[2], "--help"])
        print(usage())
        return 0
    command, rest = argv[1], argv[2:]
    if command not in COMMANDS:
        print(f"mlcmk: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    from absl import app, flags

    module = importlib.import_module(COMMANDS[command])
    # absl's --help shows the flags and docstring of the main module (named by sys.argv[0]);
    # make the subcommand's flags and docstring the ones shown.
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    main_module = sys.modules.get("__main__")
    if main_module is not None:
        main_module.__doc__ = module.__doc__
    app.run(module.main, argv=[f"mlcmk {command}", *rest])
    return 0


if __name__ == "__main__":
    sys.exit(run())
