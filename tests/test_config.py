"""Configuration: presets, overrides and the one validator's messages."""

import dataclasses

import pytest

from torchlogreg import PRESETS, ConfigError, TrainConfig, preset


def test_default_preset_is_the_dataclass_defaults():
    assert PRESETS["default"] == TrainConfig()


def test_tutorial_preset_is_the_tutorials_loop():
    config = preset("tutorial")
    assert (config.optimizer, config.learning_rate, config.batch_size, config.iters) == (
        "sgd",
        0.001,
        100,
        3000,
    )
    assert config.momentum == 0 and config.schedule == "none" and config.epochs is None


def test_flags_override_a_preset_and_none_keeps_it():
    config = preset("tutorial", lr=0.1, epochs=1, batch_size=None)
    assert config.lr == 0.1 and config.epochs == 1 and config.iters is None and config.batch_size == 100


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'tutorial'"):
        preset("tutorail")


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown option 'weight_decy' \(did you mean 'weight_decay'\?\)"):
        TrainConfig().replace(weight_decy=0.1)


def test_validator_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as error:
        TrainConfig(lr=-1, batch_size=0, optimizer="sgdd", dataset="mnsit", momentum=1.5)
    message = str(error.value)
    for fragment in (
        "lr must be a number > 0, got -1",
        "batch_size must be an integer > 0, got 0",
        "optimizer must be one of sgd, adam, lbfgs, got 'sgdd' (did you mean 'sgd'?)",
        "dataset must be one of",
        "(did you mean 'mnist'?)",
        "momentum must be a number in [0, 1)",
    ):
        assert fragment in message


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"classes": (3,)}, "at least two classes"),
        ({"classes": (3, 3)}, "must not repeat"),
        ({"classes": (3, 8), "positive": 1}, "classes or positive, not both"),
        ({"patience": 2, "val_size": 0}, "patience needs a validation set"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps"),
        ({"threshold": 1.0}, "threshold must be a number in (0, 1)"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan$"),
    ],
)
def test_invalid_combinations(changes, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**changes)


def test_epochs_and_iters_are_exclusive():
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(epochs=2, iters=5)
    assert TrainConfig().replace(iters=10).epochs is None


def test_data_ruled_fields_default_to_none_and_given_values_stay():
    config = TrainConfig()
    ruled = (config.lr, config.optimizer, config.batch_size, config.val_size, config.weight_decay)
    assert ruled == (None,) * 5
    assert not config.settled and TrainConfig(optimizer="adam", lr=0.1).learning_rate == 0.1


def test_config_round_trips_through_a_dict():
    config = TrainConfig(classes=(3, 8), lr=0.2)
    assert TrainConfig.from_dict(config.to_dict()) == config


# --- generated bad values: one ConfigError, never another exception -------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.tuples(st.integers(-3, 12), st.integers(-3, 12))
    | st.lists(st.integers(-3, 12), max_size=3)
)
FIELD_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]


@settings(max_examples=400, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(FIELD_NAMES), ANY_VALUE, min_size=1, max_size=4))
def test_any_field_value_is_valid_or_one_config_error(changes):
    try:
        config = TrainConfig(**changes)
    except ConfigError:
        return
    assert config.batch_size is None or (type(config.batch_size) is int and config.batch_size > 0)
    assert (config.lr is None or config.lr > 0) and isinstance(config.nesterov, bool)
    assert config.tol >= 0 and isinstance(config.centred, bool)


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"classes": "3,8"}, "classes must be a tuple"),
        ({"positive": "3"}, "positive must be a class number"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"seed": 2**70}, r"seed must be an integer in 0\.\.2\*\*63-1"),
        ({"nesterov": "no"}, "nesterov must be True or False"),
        ({"lr": 1e39}, "lr must be at most"),
        ({"lr": 10**400}, r"lr must be at most 3.4e\+38 \(float32\), got 1000"),  # was an OverflowError
        ({"weight_decay": 1e300}, "weight_decay must be at most"),
        ({"threshold": 0.3}, "threshold applies to binary tasks"),
        ({"dataset": "/no/such/dir"}, None),  # a folder path: checked where the data is loaded
    ],
)
def test_python_api_values_are_checked_where_the_config_is_built(changes, fragment):
    if fragment is None:
        assert TrainConfig(**changes).dataset == changes["dataset"]
        return
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**changes)


def test_from_dict_refuses_unknown_keys_naming_the_closest():
    # an unknown key used to be dropped in silence, the default taken instead
    config = TrainConfig().to_dict()
    with pytest.raises(ConfigError, match=r"unknown option 'momentun' \(did you mean 'momentum'\?\)"):
        TrainConfig.from_dict({**config, "momentun": 0.5})
