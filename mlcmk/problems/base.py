"""Base class of problem declarations."""

import inspect


class Problem:
    """Base class of a maths-shaped problem declaration.

    Subclasses keep one attribute per constructor argument (same name); `get_config` reads them
    back, so `type(p).from_config(p.get_config())` rebuilds an equal problem. Registered
    subclasses carry `name`, `kind` and `aliases` set by `register_problem`.
    """

    name = None
    kind = None
    aliases = ()

    def get_config(self):
        """Returns the constructor keyword arguments of this problem as a dict."""
        config = {}
        signature = inspect.signature(type(self).__init__)
        for parameter in list(signature.parameters.values())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if not hasattr(self, parameter.name):
                raise NotImplementedError(
                    f"{type(self).__name__} does not store its constructor argument "
                    f"{parameter.name!r} as an attribute; store it or override get_config()."
                )
            config[parameter.name] = getattr(self, parameter.name)
        return config

    @classmethod
    def from_config(cls, config):
        """Builds a problem from the output of `get_config`."""
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"
