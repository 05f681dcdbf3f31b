"""The architecture JSON format, version 1: how an :class:`~n2n_env.arch.Architecture` is
stored next to a state_dict (model files, run directories, terminal ``info``) and hashed
into its signature.

A dict with ``format: "n2n-architecture"``, ``version: 1``, ``name``, ``input_shape``,
``num_classes``, ``layers`` (each layer's ``kind`` plus only the fields that differ from a
default layer), ``blocks`` (residual spans with their optional projection) and, for a
derived architecture, ``root``, the signature of the root teacher its origins refer to. Reading
refuses anything else with a ValueError that says what is wrong, never a wrong network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from n2n_env.arch import Architecture, Block, Layer, Projection


def architecture_to_dict(arch: Architecture) -> dict[str, Any]:
    """A JSON-ready dict; only non-default layer fields are written."""
    defaults = Layer("relu")
    layers = [
        {
            "kind": layer.kind,
            **{
                f.name: getattr(layer, f.name)
                for f in dataclasses.fields(Layer)[1:]
                if getattr(layer, f.name) != getattr(defaults, f.name)
            },
        }
        for layer in arch.layers
    ]
    blocks = [
        {
            "start": b.start,
            "end": b.end,
            "stride": b.stride,
            "origin": b.origin,
            "projection": dataclasses.asdict(b.projection) if b.projection else None,
        }
        for b in arch.blocks
    ]
    root = {"root": arch.root} if arch.root else {}
    return {
        **root,
        "format": "n2n-architecture",
        "version": 1,
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "num_classes": arch.num_classes,
        "layers": layers,
        "blocks": blocks,
    }


def architecture_from_dict(data: dict[str, Any]) -> Architecture:
    """The architecture a dict from :func:`architecture_to_dict` describes; a ValueError
    naming the problem for any other dict."""
    if not isinstance(data, dict) or data.get("format") != "n2n-architecture":
        raise ValueError("not an n2n architecture (expected format 'n2n-architecture')")
    if type(data.get("version")) is not int or data["version"] != 1:
        raise ValueError(
            f"unsupported architecture version {data.get('version')!r}; this "
            "n2n reads version 1"
        )
    try:
        layers = tuple(Layer(**layer) for layer in data["layers"])
        blocks = tuple(
            Block(
                start=b["start"],
                end=b["end"],
                stride=b["stride"],
                origin=b["origin"],
                projection=Projection(**b["projection"]) if b["projection"] else None,
            )
            for b in data["blocks"]
        )
        return Architecture(
            tuple(data["input_shape"]),
            int(data["num_classes"]),
            layers,
            blocks,
            name=str(data.get("name", "")),
            root=data.get("root", ""),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed architecture JSON: {error}") from error
