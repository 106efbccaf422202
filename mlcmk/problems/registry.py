"""Registry of problems by name, with aliases and kinds ("bsde", "control", "regression", ...)."""

_CLASSES = {}  # canonical name -> class
_ALIASES = {}  # alias -> canonical name


def _normalise(name):
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"A problem name must be a non-empty string; received name={name!r}")
    return name.strip().lower().replace("-", "_")


def _same_class(a, b):
    # A module imported twice (e.g. reloaded) re-registers an equal class; that is not a clash.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_problem(name, *aliases, kind=None):
    """Class decorator registering a problem under `name` and optional `aliases`.

    Sets `cls.name`, `cls.kind` and `cls.aliases`.

    Args:
        name: canonical name (lower case, underscores).
        *aliases: further names that resolve to the same class.
        kind: optional string grouping problems, e.g. `"bsde"`, `"control"`.

    Example:
    ```python
    @register_problem("hjb_lq", "hjb", kind="bsde")
    class HJBLQ(Problem):
        ...
    ```
    """
    canonical = _normalise(name)
    alias_names = tuple(_normalise(a) for a in aliases)
    if kind is not None and not isinstance(kind, str):
        raise ValueError(f"`kind` must be a string or None; received kind={kind!r}")

    def decorator(cls):
        if not isinstance(cls, type):
            raise TypeError(f"register_problem decorates classes; received {cls!r}")
        for key in (canonical, *alias_names):
            owner = _CLASSES.get(key) or _CLASSES.get(_ALIASES.get(key))
            if owner is not None and not _same_class(owner, cls):
                raise ValueError(
                    f"Problem name {key!r} is already registered to "
                    f"{owner.__module__}.{owner.__qualname__}"
                )
        cls.name = canonical
        cls.kind = kind
        cls.aliases = alias_names
        _CLASSES[canonical] = cls
        for alias in alias_names:
            _ALIASES[alias] = canonical
        return cls

    return decorator


def _unknown(name):
    known = ", ".join(sorted(_CLASSES)) or "(none)"
    aliases = ", ".join(f"{a} -> {c}" for a, c in sorted(_ALIASES.items()))
    message = f"Unknown problem {name!r}. Known problems: {known}."
    if aliases:
        message += f" Aliases: {aliases}."
    return ValueError(message)


def get_problem_class(name):
    """Returns the class registered under `name` or one of its aliases."""
    key = _normalise(name)
    key = _ALIASES.get(key, key)
    if key not in _CLASSES:
        raise _unknown(name)
    return _CLASSES[key]


def build_problem(spec):
    """Builds a problem from a spec.

    Args:
        spec: a name (`"barron_teacher"`), a dict `{"name": ..., **kwargs}` or
            `{"name": ..., "config": {...}}`, or an already built problem (returned unchanged).

    Returns:
        The problem instance.
    """
    if isinstance(spec, str):
        return get_problem_class(spec)()
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"A problem spec dict needs a 'name' key; received spec={spec!r}")
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        if "config" in kwargs:
            if len(kwargs) > 1 or not isinstance(kwargs["config"], dict):
                raise ValueError(
                    "A problem spec holds either keyword arguments or one 'config' dict, "
                    f"not both; received spec={spec!r}"
                )
            kwargs = kwargs["config"]
        return get_problem_class(spec["name"]).from_config(dict(kwargs))
    if hasattr(spec, "get_config") and getattr(type(spec), "name", None) in _CLASSES:
        return spec
    raise ValueError(f"A problem spec must be a name, a dict or a problem; received spec={spec!r}")


def list_problems(kind=None):
    """Returns `{canonical name: class}` sorted by name, only of `kind` when given."""
    return {name: cls for name, cls in sorted(_CLASSES.items()) if kind is None or cls.kind == kind}


def problem_aliases():
    """Returns `{alias: canonical name}` sorted by alias."""
    return dict(sorted(_ALIASES.items()))
