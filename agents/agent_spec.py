"""Agent specifications: an agent's name plus the settings that differ from its defaults.

A hyperparameter study runs one agent under several settings side by side, so a driver
needs to name "REINFORCE with learning rate 0.03" as plainly as "REINFORCE". A spec is
written ``NAME`` or ``NAME:key=value,key=value``::

    spec = AgentSpec.parse("reinforce:learning_rate=0.03,rollouts_per_update=10")
    spec.name, spec.settings   # 'reinforce', {'learning_rate': 0.03, 'rollouts_per_update': 10}
    spec.label                 # 'reinforce:learning_rate=0.03,rollouts_per_update=10'

The keys a spec accepts are the fields of the agent's config dataclass for the paper's
agents and random search (``seed`` excepted: the driver sets it), and the constructor
arguments of the Stable-Baselines3 algorithm for the SB3 agents. Values are checked, and
converted, where the spec enters: an unknown key or a value of the wrong type raises a
ValueError naming what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from agents.actor_critic import ActorCriticConfig
from agents.random_search import RandomSearchConfig
from agents.reinforce import ReinforceConfig

CONFIG_CLASSES: dict[str, type] = {"reinforce": ReinforceConfig,
                                   "actor-critic": ActorCriticConfig,
                                   "random": RandomSearchConfig}
"""Agents whose settings are the fields of a config dataclass."""
SB3_CLASSES = {"ppo": ("stable_baselines3", "PPO"), "a2c": ("stable_baselines3", "A2C"),
               "maskable-ppo": ("sb3_contrib", "MaskablePPO"),
               "recurrent-ppo": ("sb3_contrib", "RecurrentPPO")}
"""SB3 agents: (module, class) whose constructor arguments are the allowed settings."""
NAMES = ("reinforce", "actor-critic", "ppo", "a2c", "maskable-ppo", "recurrent-ppo", "random")
"""Every agent a spec may name, in the registry's order."""
DRIVER_SET = frozenset({"seed", "env", "policy", "verbose", "device", "tensorboard_log",
                        "_init_setup_model"})
"""Arguments the driver owns: never taken from a spec."""


@dataclass(frozen=True)
class AgentSpec:
    """An agent name and its non-default settings (already converted to their types)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.label)

    @classmethod
    def parse(cls, text: str) -> AgentSpec:
        """``NAME`` or ``NAME:key=value,key=value``; a ValueError says what is wrong."""
        if not isinstance(text, str):
            raise TypeError(f"an agent spec is a string, NAME or NAME:key=value,...; got "
                            f"{text!r}")
        name, colon, rest = text.strip().partition(":")
        name = name.strip()
        if name not in NAMES:
            raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(NAMES)}")
        if colon and not rest.strip():
            raise ValueError(f"{text!r} has a ':' but no settings; write NAME or "
                             "NAME:key=value,key=value")
        raw: dict[str, str] = {}
        for item in _split_top_level(rest) if rest.strip() else []:
            key, equals, value = item.partition("=")
            key = key.strip()
            if not equals or not key or not value.strip():
                raise ValueError(f"setting {item.strip()!r} of {text!r} is not key=value")
            if key in raw:
                raise ValueError(f"setting {key!r} is given twice in {text!r}")
            raw[key] = value.strip()
        allowed = allowed_settings(name) if raw else {}
        return cls(name, {key: convert(name, key, value, allowed)
                          for key, value in raw.items()})

    @property
    def label(self) -> str:
        """The canonical text of this spec (settings sorted by key): equal specs have equal
        labels, and ``AgentSpec.parse(spec.label) == spec``."""
        if not self.settings:
            return self.name
        return self.name + ":" + ",".join(f"{key}={_text(value)}"
                                          for key, value in sorted(self.settings.items()))


def allowed_settings(name: str) -> dict[str, Any]:
    """Setting name -> its type (config agents) or ``inspect.Parameter`` (SB3 agents)."""
    if name in CONFIG_CLASSES:
        hints = typing.get_type_hints(CONFIG_CLASSES[name])
        return {f.name: hints[f.name] for f in dataclasses.fields(CONFIG_CLASSES[name])
                if f.name not in DRIVER_SET}
    module_name, class_name = SB3_CLASSES[name]
    try:
        module = __import__(module_name, fromlist=[class_name])
    except ImportError as error:
        raise ValueError(f"agent {name!r} needs stable-baselines3 and sb3-contrib: "
                         f"pip install \"n2n[sb3]\" ({error})") from None
    parameters = inspect.signature(getattr(module, class_name).__init__).parameters
    return {key: parameter for key, parameter in parameters.items()
            if key != "self" and key not in DRIVER_SET
            and parameter.kind is not inspect.Parameter.VAR_KEYWORD}


def convert(name: str, key: str, value: str, allowed: dict[str, Any] | None = None) -> Any:
    """``value`` (text) as the type setting ``key`` of agent ``name`` takes (``allowed``:
    :func:`allowed_settings` of ``name``, when the caller has it already)."""
    allowed = allowed_settings(name) if allowed is None else allowed
    if key not in allowed:
        raise ValueError(f"agent {name!r} has no setting {key!r}; allowed: "
                         f"{', '.join(sorted(allowed))}")
    if name in CONFIG_CLASSES:
        return _typed(allowed[key], key, value)
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # a bare word, such as a schedule name: SB3 checks it


def _typed(kind: Any, key: str, value: str) -> Any:
    """``value`` converted to ``kind`` (int, float, bool or str, optionally ``| None``)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value.lower() == "none" and type(None) in options:
        return None
    for option in options:
        if option is bool and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if option in (int, float):
            try:
                number = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(number, bool) or not isinstance(number, int | float):
                continue
            if option is int and not float(number).is_integer():
                continue
            return option(number)
        if option is str:  # bare (shrink_policy=independent) or quoted, as specs print it
            try:
                text = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
            return text if isinstance(text, str) else value
    names = " or ".join("None" if option is type(None) else getattr(option, "__name__",
                                                                      str(option))
                        for option in options)
    raise ValueError(f"setting {key}={value!r}: expected {names}")


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, str | dict | list | tuple) else str(value)


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes (so that a setting's value
    may be a list or a dict)."""
    items, depth, quote, start = [], 0, "", 0
    for position, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:position])
            start = position + 1
    items.append(text[start:])
    return items
