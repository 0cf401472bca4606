"""Configuration dataclasses check their field types at construction (medr3_jax.config_types):
a value of the wrong type is a ValueError naming `Class.field = value` and the expected type,
for every class gin configures; the checker itself against hand-written cases."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import pytest

from medr3_jax.config_types import ConfigTypeError, check_field_types
from medr3_jax.train import _CONFIGURABLE


@dataclasses.dataclass(frozen=True)
class Example:
    n: int = 1
    x: float = 1.0
    s: str | None = None
    names: tuple[str, ...] = ()
    pair: tuple[int, float] = (1, 2.0)
    mode: Literal["a", "b"] = "a"
    flag: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": "x"}, "Example.n = 'x': expected an int"),
        ({"n": True}, "Example.n = True: expected an int"),
        ({"n": 2.0}, "Example.n = 2.0: expected an int"),
        ({"x": "1"}, "Example.x = '1': expected a number"),
        ({"s": 3}, "Example.s = 3: expected a string or None"),
        ({"names": ["a"]}, "Example.names = ['a']: expected a tuple of strings, e.g. (a, b)"),
        ({"names": ("a", 1)}, "Example.names = ('a', 1): expected a tuple of strings"),
        ({"pair": (1, 2, 3)}, "Example.pair = (1, 2, 3): expected a tuple (an int, a number)"),
        ({"mode": "c"}, "Example.mode = 'c': expected one of 'a', 'b'"),
        ({"flag": 1}, "Example.flag = 1: expected a bool"),
    ],
)
def test_a_wrong_type_names_the_field_the_value_and_the_type(kwargs, message):
    with pytest.raises(ConfigTypeError, match=re.escape(message)):
        Example(**kwargs)


def test_right_types_pass():
    Example(n=2, x=3, s="q", names=("a", "b"), pair=(1, 2), mode="b", flag=True)  # an int is a number


# One field of each gin-configurable dataclass with a value of the wrong type (a gin typo).
BAD = {
    "SamplingParams": ("temperature", "hot"),
    "PromptStyle": ("chat", "yes"),
    "RolloutConfig": ("group_size", "16"),
    "RewardWeights": ("answer", "1"),
    "RewardRules": ("format_gate", "no"),
    "OverlongConfig": ("buffer", 1.5),
    "OptimizerConfig": ("learning_rate", "1e-6"),
    "UpdateConfig": ("micro_batch", 2.0),
    "PolicyLossConfig": ("clip_low", "0.2"),
    "EvalSettings": ("samples", "4"),
    "CheckpointConfig": ("every_steps", "50"),
    "Experiment": ("num_steps", "x"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_configurable_dataclass_checks_its_types(name):
    cls = _CONFIGURABLE[name]
    field, value = BAD[name]
    assert field in {f.name for f in dataclasses.fields(cls)}
    cls()  # the defaults pass their own check
    with pytest.raises(ValueError, match=re.escape(f"{name}.{field} = {value!r}: expected")):
        cls(**{field: value})
