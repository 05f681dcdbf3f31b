"""Teachers built from a torchvision model or the user's own code (see
:mod:`n2n_env.teacher_spec` for the names), imported through :func:`n2n_env.import_model`.

Without weights, the imported architecture is trained like a zoo teacher (with the
dataset's teacher recipe, cached by :func:`n2n_env.teacher.get_teacher`), optionally at a
fraction of its width: :func:`scale_widths` multiplies every free width (the tied groups
of :meth:`~n2n_env.arch.Architecture.width_groups`, never the input or the classes) as
the zoo's ``width`` does, so a torchvision ResNet-18 can be trained on a laptop. With
weights (a state_dict of the user's model), the model is loaded as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import math
import os
from typing import Any

import torch
from torch import nn

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.build import N2NNet
from n2n_env.model_import import import_model
from n2n_env.teacher_spec import TeacherSpec
from n2n_env.transitions import set_width

__all__ = ["build_module", "imported_architecture", "load_weighted_teacher", "scale_widths"]


def build_module(spec: TeacherSpec, input_shape: tuple[int, int, int], num_classes: int
                 ) -> nn.Module:
    """The model ``spec`` names, for ``num_classes`` classes, with fresh weights."""
    if spec.source == "torchvision":
        import torchvision

        allowed = torchvision.models.list_models(module=torchvision.models)
        if spec.name not in allowed:
            raise ValueError(f"unknown torchvision classification model {spec.name!r}; "
                             f"allowed: {', '.join(allowed)}")
        return torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes)
    assert spec.path is not None
    module_spec = importlib.util.spec_from_file_location(f"n2n_user_{spec.path.stem}", spec.path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot load Python file {spec.path}")
    user_module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(user_module)
    function = getattr(user_module, spec.name, None)
    if not callable(function):
        found = sorted(n for n, v in vars(user_module).items()
                       if callable(v) and not n.startswith("_"))
        raise ValueError(f"{spec.path} has no function {spec.name!r}; it defines: "
                         f"{', '.join(found) or 'nothing callable'}")
    accepted = inspect.signature(function).parameters
    offered = {"num_classes": num_classes, "input_shape": input_shape}
    model = function(**{key: value for key, value in offered.items() if key in accepted})
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec.text} returned {type(model).__name__}, not an nn.Module")
    return model


def scale_widths(arch: Architecture, width: float) -> Architecture:
    """``arch`` with every free width multiplied by ``width`` (rounded, at least 1), as a new
    root teacher. A width that a grouped conv outputs or receives is rounded up to a
    multiple of its groups; a ValueError says so if the result still does not build."""
    width = validate.number("width", width, above=0)
    if width == 1.0:
        return arch
    needs: dict[tuple[str, int], int] = {}  # producer -> groups its width must divide into
    for i, layer in enumerate(arch.layers):
        if layer.groups > 1:
            for slot in (("layer", i), arch.input_slots()[("layer", i)]):
                needs[slot] = math.lcm(needs.get(slot, 1), layer.groups)
    layers, blocks = list(arch.layers), list(arch.blocks)
    for variable in arch.shrink_variables():
        groups = math.lcm(1, *(needs.get(slot, 1) for slot in variable.slots))
        scaled = max(1, round(variable.value * width))
        set_width(layers, blocks, variable.slots, -(-scaled // groups) * groups)
    scaled_arch = dataclasses.replace(arch, layers=tuple(layers), blocks=tuple(blocks),
                                      name=f"{arch.name}-w{width:g}")
    reason = scaled_arch.degenerate_reason()
    if reason is not None:
        raise ValueError(f"{arch.name} at width {width:g} does not build: {reason}; try "
                         "another width")
    return scaled_arch


@functools.lru_cache(maxsize=16)
def _imported(text: str, slug: str, input_shape: tuple[int, int, int], num_classes: int,
              spec: TeacherSpec) -> Architecture:
    del text, slug  # part of the cache key only
    module = build_module(spec, input_shape, num_classes)
    return import_model(module, input_shape, name=spec.name).architecture


def imported_architecture(spec: TeacherSpec, input_shape: tuple[int, int, int],
                          num_classes: int, width: float = 1.0) -> Architecture:
    """The architecture of the model ``spec`` names (remembered per spec, shape and
    classes, and per file content), scaled to ``width``."""
    shape = tuple(input_shape)
    arch = _imported(spec.text, spec.slug(), shape, num_classes, spec)  # type: ignore[arg-type]
    return scale_widths(arch, width)


def load_weighted_teacher(spec: TeacherSpec, input_shape: tuple[int, int, int],
                          num_classes: int, weights: str | os.PathLike[str],
                          device: torch.device | str = "cpu") -> N2NNet:
    """The model ``spec`` names holding the state_dict in ``weights`` (read with
    ``weights_only=True``), imported as a teacher network on ``device``."""
    module = build_module(spec, input_shape, num_classes)
    try:
        state: Any = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"no teacher weights file at {weights}") from None
    except Exception as error:
        raise ValueError(f"cannot read teacher weights {weights}: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{weights} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{weights} does not fit {spec.text}: {error}") from error
    return import_model(module, input_shape, name=spec.name).build(device=device)
