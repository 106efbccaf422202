"""The library's PNG writers leave matplotlib's backend and pyplot's figures alone."""

import os
import pathlib

import matplotlib
import matplotlib.figure
import numpy as np

import mlcmk
from mlcmk._plotting import subplots
from mlcmk.testing import TestCase


class PlottingTest(TestCase):
    def test_subplots_draws_and_saves_without_pyplot(self):
        import matplotlib.pyplot as plt

        before = plt.get_fignums()
        fig, axes = subplots(1, 2, figsize=(4, 2))
        self.assertEqual(axes.shape, (2,))
        self.assertEqual(tuple(fig.get_size_inches()), (4.0, 2.0))
        axes[0].plot([0, 1], [1, 0])
        path = os.path.join(self.get_temp_dir(), "two.png")
        fig.savefig(path, dpi=50)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertEqual(plt.get_fignums(), before)  # nothing left for pyplot to close
        _, ax = subplots()
        self.assertTrue(hasattr(ax, "plot"))  # one Axes, as pyplot.subplots() gives

    def test_a_plotting_function_keeps_the_callers_backend(self):
        # A notebook's inline backend stands in as "svg": `matplotlib.use("Agg")` inside a
        # plotting function (the old way) would switch it for the rest of the session.
        from mlcmk.training.moment_closure import plot_comparison

        x = np.linspace(-0.5, 0.5, 20)
        profiles = (1 + 0 * x, 0.1 * np.sin(2 * np.pi * x), 1 + 0 * x)
        result = {"x": x, "eps": 0.1, "t_end": 0.1, "kinetic": profiles, "euler": profiles}
        previous = matplotlib.get_backend()
        matplotlib.use("svg")
        try:
            path = os.path.join(self.get_temp_dir(), "profiles.png")
            fig = plot_comparison(result, path)
            self.assertEqual(matplotlib.get_backend(), "svg")
        finally:
            matplotlib.use(previous)
        self.assertGreater(os.path.getsize(path), 1000)
        # The figure comes back, for a notebook to show (three panels, two curves each).
        self.assertIsInstance(fig, matplotlib.figure.Figure)
        self.assertEqual([len(ax.get_lines()) for ax in fig.axes], [2, 2, 2])

    def test_no_module_selects_a_backend_or_uses_pyplot(self):
        patterns = ("matplotlib.use(", "import matplotlib.pyplot", "from matplotlib import pyplot")
        root = pathlib.Path(mlcmk.__file__).parent
        offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                     if path.name != "_plotting.py"  # (its docstring names them)
                     and any(pattern in path.read_text() for pattern in patterns)]
        self.assertEqual(offenders, [])

    def test_parity_plot_returns_its_figure(self):
        from types import SimpleNamespace

        from mlcmk.training.potential_trainer import plot_parity

        rng = np.random.default_rng(0)
        system = SimpleNamespace(atom_types=np.zeros(4, int), energy=rng.normal(size=3),
                                 force=rng.normal(size=(3, 4, 3)))
        prediction = {"energy": system.energy + 0.04, "force": system.force}
        path = os.path.join(self.get_temp_dir(), "parity.png")
        fig = plot_parity([system], [prediction], path, "toy")
        self.assertGreater(os.path.getsize(path), 1000)
        self.assertIsInstance(fig, matplotlib.figure.Figure)
        # Energies per atom (offset 0.04 / 4 atoms = 10 meV/atom) and exact forces.
        self.assertEqual([ax.get_title() for ax in fig.axes],
                         ["RMSE 10.00 meV/atom", "RMSE 0.0 meV/Å"])
