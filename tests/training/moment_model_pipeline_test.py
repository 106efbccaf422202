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
        x, y = closure_training_data(model.autoencoder, data)
        self.assertEqual(x.shape, (4 * 2 * 32, 4 + 2))
        self.assertEqual(y.shape, (4 * 2 * 32, 1 + 4 * 2))
        # The heat-flux target is the heat flux of the snapshot.
        f = data["f"][0, 0]
        m = kinetic_moments(model.autoencoder, f)
        v = data["v"]
        heat = 0.5 * ((v[None] - m["u"][:, None]) ** 3 * f).sum(1) * (v[1] - v[0])
        np.testing.assert_allclose(y[:32, 0] * m["rho"] * m["T"] ** 1.5, heat, atol=1e-13)

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
        # with the default wave-speed bound (Euler's sqrt(3) as eps -> 0) the learned solve is
        # Euler's.
        self.assertIsNone(model.speed_factor)
        learned = model.solve(f0, 1e-9, problem.dx, 0.02)
        rho0, u0, T0 = problem.primitives(f0)
        euler = MomentSolver(problem.dx, eps=1e-9).solve(rho0, u0, T0, t_end=0.02)
        for a, b in zip(learned[:3], euler[:3], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


class MomentEquationTest(TestCase):
    """The moment system that the closure completes is exact: its terms, evaluated on BGK
    solutions, balance up to the discretisation error."""

    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_w_equation_balances_on_kinetic_data(self):
        from mlcmk.models.moment_autoencoder import MomentAutoencoder

        ae = MomentAutoencoder(num_moments=4, v_max=8.0, num_v=64)
        ae.build((None, 64))
        w_m = ae.maxwellian_moments()
        for eps in (0.01, 1.0):
            residuals = []
            for n in (100, 200):
                p = BGK1D(eps=eps, num_x=n)
                f0 = p.maxwellian(*p.random_smooth_initial(np.random.default_rng(5)))
                _, snaps, nexts, dt = p.solve(f0, 0.05, num_snapshots=1, return_next=True)
                a, b = kinetic_moments(ae, snaps[0]), kinetic_moments(ae, nexts[0])
                m = kinetic_moments(ae, 0.5 * (snaps[0] + nexts[0]))

                def grad(g, dx=p.dx):
                    return (np.roll(g, -1, 0) - np.roll(g, 1, 0)) / (2 * dx)

                rate = (b["rho"][:, None] * b["W"] - a["rho"][:, None] * a["W"]) / dt
                G = (m["rho"] * m["u"])[:, None] * m["W"] + (m["rho"] * np.sqrt(m["T"]))[
                    :, None] * m["G_hat"]
                collision = 0.5 * (a["rho"][:, None] * (w_m - a["W"])
                                   + b["rho"][:, None] * (w_m - b["W"])) / eps
                rho, T = m["rho"], m["T"]
                st = np.sqrt(T)
                q = rho * T * st * m["q_hat"]
                chain = (m["a"][:, 0] * (grad(rho * T) / st)[:, None]
                         + m["a"][:, 1] * (grad(q) / T)[:, None]
                         - m["a"][:, 2] * (rho * grad(T) / (2 * st))[:, None])
                residual = rate + grad(G) - collision - chain
                scale = np.abs(grad(G)).max(0) + np.abs(rate).max(0)
                residuals.append(np.abs(residual).max(0) / scale)
                # Without the chain-rule source the balance fails by O(1).
                self.assertGreater(np.max(np.abs(rate + grad(G) - collision).max(0) / scale),
                                   0.3)
            self.assertLess(residuals[1].max(), 0.03)
            self.assertLess(residuals[1].max(), 0.7 * residuals[0].max())

    def test_maxwellian_closure_values(self):
        from mlcmk.models.moment_autoencoder import MomentAutoencoder
        from mlcmk.problems.kinetic import conserved_from_primitive, discrete_maxwellian
        from mlcmk.problems.kinetic.bgk import VelocityGrid

        ae = MomentAutoencoder(num_moments=4, v_max=8.0, num_v=64)
        ae.build((None, 64))
        U = conserved_from_primitive([1.0, 0.4], [0.3, -0.5], [1.0, 1.6])
        m = kinetic_moments(ae, discrete_maxwellian(VelocityGrid(8.0, 64), U))
        y = np.concatenate([m["q_hat"][:, None], m["G_hat"], m["a"].reshape(2, -1)], axis=1)
        np.testing.assert_allclose(y, np.tile(ae.maxwellian_closure(), (2, 1)), atol=1e-7)
