"""Reading policy files: tensors and plain values only, and one clear error otherwise.

Every agent saves its policy with ``torch.save`` of tensors and plain Python values and
reads it with ``torch.load(weights_only=True)``. A truncated, damaged or foreign file is an
expected failure (a killed run, a wrong path), so it raises :class:`PolicyFileError`, a
``ValueError`` whose one-line message names the file and what it should be.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class PolicyFileError(ValueError):
    """A policy file is unreadable, damaged, or not the kind of policy expected."""


def read(path: str | os.PathLike[str], fmt: str, what: str) -> dict[str, Any]:
    """The dict saved at ``path`` whose ``format`` entry is ``fmt`` (``what`` names the
    kind of file in messages)."""
    name = os.fspath(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:
        raise PolicyFileError(f"refusing {name!r}: it holds pickled objects, which n2n never "
                              f"loads (it is not {what})") from None
    except Exception as exc:  # torch raises many types for a damaged file
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise PolicyFileError(f"cannot read {name!r} as {what}: the file is damaged, "
                              f"truncated or not a torch file ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise PolicyFileError(f"{name!r} is not {what} (format {fmt!r} expected)")
    return data


def restore(path: str | os.PathLike[str], what: str, build: Callable[[], T]) -> T:
    """``build()``, turning the errors a damaged file's contents raise into a
    :class:`PolicyFileError` naming ``path``."""
    try:
        return build()
    except PolicyFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise PolicyFileError(f"{os.fspath(path)!r} is a damaged {what}: {reason}") from None
