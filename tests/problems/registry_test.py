import numpy as np
import pytest

from mlcmk.problems import (
    BarronTeacher,
    Problem,
    build_problem,
    get_problem_class,
    list_problems,
    problem_aliases,
    register_problem,
    registry,
)


@pytest.fixture(autouse=True)
def clean_registry():
    classes, aliases = dict(registry._CLASSES), dict(registry._ALIASES)
    yield
    registry._CLASSES.clear()
    registry._CLASSES.update(classes)
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)


def make_toy():
    @register_problem("toy_heat", "heat", "Toy-Heat-Alias", kind="toy")
    class ToyHeat(Problem):
        def __init__(self, dim=2, horizon=1.0):
            self.dim = dim
            self.horizon = horizon

    return ToyHeat


def test_register_sets_attributes_and_aliases():
    toy = make_toy()
    assert (toy.name, toy.kind, toy.aliases) == ("toy_heat", "toy", ("heat", "toy_heat_alias"))
    assert get_problem_class("heat") is toy
    assert get_problem_class("TOY-HEAT") is toy
    assert problem_aliases()["heat"] == "toy_heat"
    assert problem_aliases()["barron"] == "barron_teacher"


def test_duplicate_name_or_alias_raises():
    make_toy()
    with pytest.raises(ValueError, match="toy_heat.*already registered"):

        @register_problem("toy_heat")
        class Other(Problem):
            pass

    with pytest.raises(ValueError, match="'heat' is already registered"):

        @register_problem("other", "heat")
        class Other2(Problem):
            pass


def test_unknown_name_lists_known_names():
    make_toy()
    with pytest.raises(ValueError, match=r"Unknown problem 'nope'.*barron_teacher.*toy_heat"):
        get_problem_class("nope")
    with pytest.raises(ValueError, match="barron_teacher"):
        build_problem({"name": "nope"})


def test_build_from_name_and_dicts():
    toy = make_toy()
    assert build_problem("heat").get_config() == {"dim": 2, "horizon": 1.0}
    built = build_problem({"name": "toy_heat", "dim": 5})
    assert isinstance(built, toy) and built.dim == 5
    built = build_problem({"name": "heat", "config": {"dim": 7, "horizon": 0.5}})
    assert built.get_config() == {"dim": 7, "horizon": 0.5}
    assert build_problem(built) is built
    with pytest.raises(ValueError, match="either keyword arguments or one 'config'"):
        build_problem({"name": "heat", "config": {}, "dim": 3})
    with pytest.raises(ValueError, match="'name' key"):
        build_problem({"dim": 3})
    with pytest.raises(TypeError):
        build_problem({"name": "heat", "depth": 3})


def test_list_problems_by_kind():
    toy = make_toy()
    everything = list_problems()
    assert list(everything) == sorted(everything)
    assert everything["barron_teacher"] is BarronTeacher
    assert list_problems(kind="toy") == {"toy_heat": toy}
    assert "hjb_lq" in list_problems(kind="bsde")
    assert "toy_heat" not in list_problems(kind="regression")


def test_barron_teacher():
    problem = build_problem({"name": "barron", "dim": 4, "num_atoms": 3, "seed": 1})
    assert BarronTeacher.from_config(problem.get_config()).get_config() == problem.get_config()
    x, y = problem.sample(50, seed=2)
    assert x.shape == (50, 4) and y.shape == (50, 1) and x.dtype == np.float32
    x2, y2 = problem.sample(50, seed=2)
    np.testing.assert_array_equal(x, x2)
    # f*(x) = mean_k a_k relu(w_k . x), with unit-norm w_k
    np.testing.assert_allclose(np.linalg.norm(problem.directions, axis=1), 1.0)
    xd = x.astype(np.float64)
    expected = np.mean(
        [
            a * np.maximum(xd @ w, 0)
            for a, w in zip(problem.weights, problem.directions, strict=True)
        ],
        axis=0,
    )
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="dim=0"):
        BarronTeacher(dim=0)
