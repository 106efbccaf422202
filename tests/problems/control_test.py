"""Control problems: exact references against Monte Carlo, LP bounds, constraint maps, errors."""

import numpy as np
import tensorflow as tf
from keras import ops

from mlcmk import config
from mlcmk.problems import build_problem, list_problems
from mlcmk.problems.control import (
    Box,
    EnergyStorage,
    LinearConstraints,
    LQRegulator,
    MertonPortfolio,
    Simplex,
    get_constraint,
)
from mlcmk.testing import TestCase


def _linear_policy(gains):
    return lambda t, s: -tf.matmul(s, tf.constant(gains[t].T, s.dtype))


class ControlProblemsTest(TestCase):
    def setUp(self):
        super().setUp()
        config.set_precision("float64")

    def test_registry_and_config_round_trip(self):
        names = set(list_problems(kind="control"))
        self.assertLessEqual({"lq_regulator", "merton_portfolio", "energy_storage"}, names)
        for problem in (LQRegulator(dim=4, control_dim=2, constraint={"type": "box", "low": -1,
                                                                       "high": 1}),
                        MertonPortfolio(num_assets=3, max_position=0.5),
                        EnergyStorage(num_devices=3, num_steps=5)):
            again = build_problem({"name": problem.name, "config": problem.get_config()})
            self.assertEqual(again.get_config(), problem.get_config())

    def test_lq_riccati_value_matches_monte_carlo(self):
        problem = LQRegulator(dim=3, control_dim=2, num_steps=6, x0=0.5, sigma=0.8)
        gains = problem.gains()
        s0, noise = problem.sample(100_000, (1, 2), "float64")
        costs = np.asarray(problem.rollout(_linear_policy(gains), s0, noise))
        reference = float(problem.reference_cost())
        self.assertLess(abs(costs.mean() - reference), 4 * costs.std() / np.sqrt(len(costs)))
        # The noise term is a sizeable part of the value: dropping it would fail the check.
        self.assertGreater(problem._c[0], 20 * costs.std() / np.sqrt(len(costs)))
        # Optimality: perturbed gains cost more on the same paths.
        for seed in range(3):
            delta = 0.3 * np.random.default_rng(seed).standard_normal(gains[0].shape)
            worse = [k + delta for k in gains]
            other = np.asarray(problem.rollout(_linear_policy(worse), s0, noise))
            self.assertGreater(other.mean(), costs.mean())
        # Value function: V_T = terminal cost, V_0 averaged over s0 = the reference.
        s = np.random.default_rng(0).standard_normal((5, 3))
        np.testing.assert_allclose(problem.cost_to_go(6, s), np.sum(s**2, -1), rtol=1e-12)

    def test_lq_scalar_riccati_by_hand(self):
        problem = LQRegulator(dim=1, num_steps=1, total_time=1.0, coupling=0.0, x0=0.0,
                              x0_std=1.0, sigma=1.0)
        # One step: s' = s + a + w, cost s^2 + a^2 + s'^2: a* = -s/2, value E[1.5 s^2] + 1.
        self.assertAlmostEqual(problem.gains()[0][0, 0], 0.5, places=14)
        self.assertAlmostEqual(float(problem.reference_cost()), 2.5, places=14)

    def test_merton_closed_form_matches_monte_carlo(self):
        problem = MertonPortfolio(num_assets=3, num_steps=4)
        a_star = problem.optimal_amounts()

        def constant(amounts):
            return lambda t, s: tf.broadcast_to(tf.constant(amounts, s.dtype),
                                                (tf.shape(s)[0], 3))

        s0, noise = problem.sample(200_000, (3, 4), "float64")
        costs = np.asarray(problem.rollout(constant(a_star), s0, noise))
        self.assertLess(abs(costs.mean() - problem.reference_cost()),
                        4 * costs.std() / np.sqrt(len(costs)))
        for delta in (0.2, -0.2):
            other = np.asarray(problem.rollout(constant(a_star + delta), s0, noise))
            self.assertGreater(other.mean(), costs.mean())
        bounded = MertonPortfolio(num_assets=3, num_steps=4, correlation=0.0, max_position=0.3)
        # Uncorrelated assets: the box optimum is Merton's amount clipped to the box.
        np.testing.assert_allclose(bounded.optimal_amounts(),
                                   np.clip(bounded._mu / (2.0 * 0.2**2), -0.3, 0.3), atol=1e-8)

    def test_energy_storage_lp_bounds_every_policy(self):
        problem = EnergyStorage(num_devices=3, num_steps=8)
        s0, noise = problem.sample(16, (5, 6), "float64")
        bound = problem.perfect_foresight_reward(s0, noise)
        rule = -np.asarray(problem.rollout(problem.rule_based_control, s0, noise))
        rng = np.random.default_rng(0)
        raws = [rng.standard_normal((16, problem.num_steps, 9)) * 3 for _ in range(5)]
        for raw in raws:
            def random_policy(t, s, raw=raw):
                return problem.control_map(t, s, ops.convert_to_tensor(raw[:, t]))

            reward = -np.asarray(problem.rollout(random_policy, s0, noise))
            self.assertTrue(np.all(bound >= reward - 1e-9))
        self.assertTrue(np.all(bound >= rule - 1e-9))
        # The rule-based policy is feasible and earns money; the bound is strictly above it.
        _, states, controls = problem.rollout(problem.rule_based_control, s0, noise,
                                              return_paths=True)
        states, controls = np.asarray(states), np.asarray(controls)
        for t in range(problem.num_steps):
            self.assertLessEqual(problem.constraint_violation(t, states[:, t], controls[:, t]),
                                 1e-12)
        self.assertGreater(rule.mean(), 0)
        self.assertGreater(bound.mean(), 1.05 * rule.mean())

    def test_energy_storage_lp_matches_a_hand_written_lp(self):
        # One device, two steps, no wind: the LP written out by hand in (c0, d0, c1, d1).
        from scipy.optimize import linprog

        problem = EnergyStorage(num_devices=1, num_steps=2, wind_mean=0.0, salvage=0.3)
        s0, noise = problem.sample(3, (1, 1), "float64")
        bound = problem.perfect_foresight_reward(s0, noise)
        price, _ = problem.exogenous_paths(s0, noise)
        rc, rd = problem.charge_rate[0], problem.discharge_rate[0]
        cap, v = problem.capacity[0], problem.salvage * problem.price_mean
        ec, ed = problem.charge_efficiency[0], problem.discharge_efficiency[0]
        for b, x0 in enumerate(np.asarray(s0)[:, 0]):
            p0, p1 = price[b]
            gain = np.array([-p0 + v * ec, p0 * ed - v, -p1 + v * ec, p1 * ed - v])
            a_ub = [[1, 0, 0, 0], [ec, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                    [ec**2, -ec, ec, 0], [0, 0, 0, 1], [-ec, 1, 0, 1]]
            b_ub = [rc, cap - x0, rd, x0, rc, cap - x0, rd, x0]
            res = linprog(-gain, A_ub=a_ub, b_ub=b_ub, bounds=[(0, None)] * 4)
            self.assertAlmostEqual(bound[b], -res.fun + v * x0, places=9)

    def test_constraint_maps_are_feasible_for_any_input(self):
        rng = np.random.default_rng(0)
        raw = np.concatenate([rng.standard_normal((200, 4)), 1e4 * rng.standard_normal(
            (200, 4))])
        box = Box(4, low=[-1, 0, None, -2], high=[1, None, 3, -1], smooth_map="tanh")
        self.assertEqual(box.violation(np.asarray(box(ops.convert_to_tensor(raw)))), 0.0)
        simplex = Simplex(4, total=2.0)
        a = np.asarray(simplex(ops.convert_to_tensor(raw)))
        self.assertLessEqual(simplex.violation(a), 1e-12)
        slack = Simplex(3, total=1.0, inequality=True)
        self.assertEqual(slack.raw_dim, 4)
        self.assertLessEqual(slack.violation(np.asarray(slack(ops.convert_to_tensor(raw)))),
                             1e-12)
        linear = LinearConstraints(4, a_ub=[[1, 1, 0, 0], [0, -1, 1, 0], [-1, 0, 0, 0],
                                            [0, 0, -1, 0], [0, 0, 0, 1], [0, 0, 0, -1]],
                                   b_ub=[1, 0.5, 0, 0, 2, 2], a_eq=[[1, 0, 0, 1]], b_eq=[0.5])
        self.assertEqual(linear.raw_dim, 3)
        a = np.asarray(linear(ops.convert_to_tensor(raw[:, :3])))
        self.assertLessEqual(linear.violation(a), 1e-9)
        # Inside the set the map is the identity around the centre (interior raw stays put).
        small = 1e-3 * rng.standard_normal((10, 3))
        a = np.asarray(linear(ops.convert_to_tensor(small)))
        np.testing.assert_allclose(a, linear.centre + small @ linear._null.T, atol=1e-12)

    def test_dykstra_approaches_the_euclidean_projection(self):
        from scipy.optimize import minimize

        a_ub, b_ub = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]]), np.array([1.0, 1.0, 0.0])
        constraint = LinearConstraints(2, a_ub, b_ub, iterations=200)
        points = np.array([[2.0, 0.3], [0.5, 3.0], [-1.0, -0.2]])
        raw = points - constraint._centre
        mapped = np.asarray(constraint(ops.convert_to_tensor(raw)))
        for p, m in zip(points, mapped, strict=True):
            res = minimize(lambda y, p=p: np.sum((y - p) ** 2), np.zeros(2),
                           constraints=[{"type": "ineq", "fun": lambda y: b_ub - a_ub @ y}])
            np.testing.assert_allclose(m, res.x, atol=1e-5)

    def test_infeasible_constraints_raise(self):
        with self.assertRaisesRegex(ValueError, "low\\[1\\]"):
            Box(2, low=[0, 2], high=[1, 1])
        with self.assertRaisesRegex(ValueError, "total"):
            Simplex(3, total=-1)
        with self.assertRaisesRegex(ValueError, "Infeasible linear constraints"):
            LinearConstraints(2, a_ub=[[1, 0], [-1, 0]], b_ub=[0, -1])  # x <= 0 and x >= 1
        with self.assertRaisesRegex(ValueError, "equalities"):
            LinearConstraints(2, a_eq=[[1, 1], [2, 2]], b_eq=[1, 3])
        with self.assertRaisesRegex(ValueError, "a_ub"):
            LinearConstraints(2, a_ub=[[1, 0, 0]], b_ub=[1])
        with self.assertRaisesRegex(ValueError, "control dimension"):
            get_constraint({"type": "box", "dim": 3, "low": 0, "high": 1}, dim=2)
        with self.assertRaisesRegex(ValueError, "Infeasible"):
            LQRegulator(dim=2, constraint={"type": "linear", "a_ub": [[1, 1], [-1, -1]],
                                           "b_ub": [-1, -1]})

    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "num_steps=-3"):
            LQRegulator(num_steps=-3)
        with self.assertRaisesRegex(ValueError, "total_time"):
            LQRegulator(total_time=-1.0)
        with self.assertRaisesRegex(ValueError, "num_steps"):
            EnergyStorage(num_steps=0)
        with self.assertRaisesRegex(ValueError, "x0"):
            LQRegulator(dim=3, x0=[1.0, 2.0])
        with self.assertRaisesRegex(ValueError, "control_cost"):
            LQRegulator(control_cost=0.0)
        with self.assertRaisesRegex(ValueError, "correlation"):
            MertonPortfolio(num_assets=3, correlation=-0.9)
        problem = LQRegulator(dim=2, num_steps=3)
        with self.assertRaisesRegex(ValueError, "state_dim=2"):
            problem.check_sample(tf.zeros((4, 3)), tf.zeros((4, 3, 2)))

    def test_penalty_enters_the_cost_with_its_weight(self):
        class Penalised(LQRegulator):
            def constraint_penalty(self, t, s, a):
                return tf.nn.relu(tf.reduce_sum(a**2, -1) - 1.0)

        problem = Penalised(dim=2, num_steps=3)
        s0, noise = problem.sample(32, (0, 0), "float64")

        def policy(t, s):
            return 2.0 * s

        _, states, controls = problem.rollout(policy, s0, noise, return_paths=True)
        penalty = sum(np.maximum(np.sum(np.asarray(controls)[:, t] ** 2, -1) - 1, 0)
                      for t in range(3))
        self.assertGreater(penalty.sum(), 0)
        plain = np.asarray(problem.rollout(policy, s0, noise))
        weighted = np.asarray(problem.rollout(policy, s0, noise, penalty_weight=10.0))
        np.testing.assert_allclose(weighted - plain, 10.0 * penalty, rtol=1e-12)
