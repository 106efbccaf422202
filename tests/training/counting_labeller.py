"""Test helper shared by the DP-GEN tests: a labeller that counts, and a simulated kill."""

from mlcmk.training.concurrent_learning import configuration_key


class Kill(BaseException):
    """Stands for the process being killed."""


class Counting:
    """Labeller mixin: records every configuration key it labels; optionally killed after
    `kill_after` labels (`class CountingLabeller(Counting, EMTLabeller)`)."""

    def __init__(self, *args, kill_after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = []
        self.kill_after = kill_after

    def label(self, configuration):
        if self.kill_after is not None and len(self.keys) >= self.kill_after:
            raise Kill
        self.keys.append(configuration_key(configuration))
        return super().label(configuration)
