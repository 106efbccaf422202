"""`mlcmk list`: the registered problems (by kind, with aliases) and the public models."""

from absl import flags

DESCRIPTION = "List the registered problems (grouped by kind, with aliases) and the models."

_KIND = flags.DEFINE_string("kind", None, "Only list problems of this kind, e.g. 'bsde'.")


def main(argv):
    del argv
    import mlcmk
    from mlcmk.models import list_models
    from mlcmk.problems import list_problems

    problems = list_problems(kind=_KIND.value)
    by_kind = {}
    for name, cls in problems.items():
        by_kind.setdefault(cls.kind or "other", []).append((name, cls))
    print(f"mlcmk {mlcmk.__version__}")
    print("problems:")
    if not problems:
        print("  (none)")
    for kind in sorted(by_kind):
        print(f"  [{kind}]")
        for name, cls in by_kind[kind]:
            aliases = f" (aliases: {', '.join(cls.aliases)})" if cls.aliases else ""
            print(f"    {name}{aliases}  {cls.__name__}")
    print("models:")
    for name in list_models():
        print(f"  {name}")
