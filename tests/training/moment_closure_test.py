"""Learned moment model end to end at toy size: data -> autoencoder -> closure -> solve."""

import numpy as np

from mlcmk import config
from mlcmk.problems.kinetic import BGK1D
from mlcmk.problems.kinetic.data import generate_kinetic_data
from mlcmk.problems.kinetic.moment_solver import MomentSolver
from mlcmk.testing import TestCase
from mlcmk.training.moment_closure import (
    closure_training_data,
    compare_models,
    kinetic_moments,
    train_moment_model,
)


class LearnedMomentModelTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_pipeline_trains_and_solves(self):
        data = generate_kinetic_data(num_runs=4, num_x=32, num_v=48, v_max=7.0, t_end=0.02,
                                     num_snapshots=2, seed=1, cache_dir=self.get_temp_dir())
        model, info = train_moment_model(data, num_moments=2, autoencoder_epochs=2,
                                         closure_epochs=2, max_autoencoder_samples=256)
        self.assertTrue(np.isfinite(info["closure_loss"]))
        # Closure inputs and targets: heat flux of the snapshot, the moment layout.
        x, y = closure_training_data(model.autoencoder, data)
        self.assertEqual(x.shape, (8, 32, 4 + 2))
        self.assertEqual(y.shape, (8, 32, 2 + 2))
        f_mid = 0.5 * (data["f"][0, 0] + data["f_next"][0, 0])
        m = kinetic_moments(model.autoencoder, f_mid)
        v = data["v"]
        heat = 0.5 * ((v[None] - m["u"][:, None]) ** 3 * f_mid).sum(1) * (v[1] - v[0])
        np.testing.assert_allclose(y[0, :, 0] * m["rho"] * m["T"] ** 1.5, heat, atol=1e-13)

        problem = BGK1D(eps=0.1, num_x=32, num_v=48, v_max=7.0)
        f0 = problem.maxwellian(*problem.random_smooth_initial(np.random.default_rng(99)))
        result = compare_models(model, problem, f0, 0.02)
        for name in ("learned", "euler"):
            self.assertEqual(set(result["errors"][name]), {"rho", "u", "T"})
            self.assertLess(result["errors"][name]["rho"], 0.05)
        # Conservation of the learned solve.
        rho, u, T, _ = model.solve(f0, 0.1, problem.dx, 0.02)
        U0 = problem.moments(f0).sum(0)
        U = np.array([rho.sum(), (rho * u).sum(), (0.5 * rho * (u**2 + T)).sum()])
        np.testing.assert_allclose(U, U0, rtol=1e-13, atol=1e-13)
        # The Euler limit is built in: at tiny eps, W stays at W_M and the heat flux at 0, so
        # with Euler's wave-speed bound the learned solve is Euler's.
        model.speed_factor = np.sqrt(3.0)
        learned = model.solve(f0, 1e-9, problem.dx, 0.02)
        rho0, u0, T0 = problem.primitives(f0)
        euler = MomentSolver(problem.dx, eps=1e-9).solve(rho0, u0, T0, t_end=0.02)
        for a, b in zip(learned[:3], euler[:3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
