"""Names of teachers that are not in the zoo: a torchvision model or the user's own code.

A teacher is named by a zoo name (``conv4``, ``vgg13``, ...), a teacher checkpoint
(``.pt``), or one of these specs:

* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None,
  num_classes=...)``, for example ``torchvision:resnet18``; nothing is downloaded.
* ``PATH.py:FUNCTION``: ``FUNCTION`` from the Python file ``PATH`` returns the model;
  it may take ``num_classes`` and ``input_shape`` keyword arguments, which receive the
  dataset's.

This module only reads the names (no torch); :mod:`n2n_env.imported_teachers` builds and
imports the models.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["TORCHVISION", "TeacherSpec", "parse_teacher_spec"]

TORCHVISION = "torchvision:"
SPEC_FORMS = "'torchvision:NAME' or 'path/to/file.py:FUNCTION'"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher imported from torchvision or from a file."""

    source: Literal["torchvision", "file"]
    name: str
    """The torchvision model name, or the function in ``path``."""
    path: Path | None = None

    @property
    def text(self) -> str:
        """The spec as written on the command line."""
        return TORCHVISION + self.name if self.path is None else f"{self.path}:{self.name}"

    def slug(self) -> str:
        """A file-name-safe name for caches and run directories: the model name, and for a
        file the digest of its content (editing the file makes a new teacher)."""
        if self.path is None:
            return f"torchvision-{self.name}"
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:8]
        return f"{self.path.stem}-{self.name}-{digest}"


def parse_teacher_spec(text: str) -> TeacherSpec | None:
    """The spec ``text`` names, None for a zoo name or a checkpoint, or a ValueError saying
    what is wrong with a spec (a missing file, a bad function name)."""
    if not isinstance(text, str):
        raise ValueError(f"a teacher name must be a string, got {text!r}")
    if text.startswith(TORCHVISION):
        name = text[len(TORCHVISION):]
        if not _IDENTIFIER.match(name):
            raise ValueError(f"teacher {text!r}: {name!r} is not a torchvision model name; "
                             f"use {SPEC_FORMS}")
        return TeacherSpec("torchvision", name)
    if ".py:" not in text:
        return None
    location, _, function = text.rpartition(":")
    path = Path(location)
    if not _IDENTIFIER.match(function):
        raise ValueError(f"teacher {text!r}: {function!r} is not a function name; "
                         f"use {SPEC_FORMS}")
    if not path.is_file():
        raise ValueError(f"teacher {text!r}: no Python file at {path}")
    return TeacherSpec("file", function, path)


def cache_name(teacher: str, weights: str | None = None) -> str:
    """The name a trained or loaded teacher is cached under: a zoo name as it is, a spec's
    :meth:`~TeacherSpec.slug`, plus the digest of the weights file when one is given."""
    spec = parse_teacher_spec(teacher)
    name = teacher if spec is None else spec.slug()
    if weights is not None:
        name += "-weights-" + hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:8]
    return name


def check_teacher_name(teacher: object, zoo_names: tuple[str, ...],
                       extra: tuple[str, ...] = ()) -> str:
    """``teacher`` if it names a teacher (a zoo name, a ``.pt`` checkpoint, a spec, or one of
    ``extra``), else a ValueError listing the forms allowed."""
    if isinstance(teacher, str) and (teacher in zoo_names or teacher in extra
                                     or teacher.endswith(".pt")):
        return teacher
    if isinstance(teacher, str) and parse_teacher_spec(teacher) is not None:
        return teacher
    raise ValueError(f"unknown teacher {teacher!r}; use a zoo name ({', '.join(zoo_names)}), "
                     f"a checkpoint path ending in .pt, {SPEC_FORMS}")


def check_teacher_weights(teacher: str, weights: object, width: float) -> str | None:
    """``weights`` (a state_dict file for an imported teacher at width 1) or None, else a
    ValueError saying why they cannot apply."""
    if weights is None:
        return None
    if not isinstance(weights, str):
        raise ValueError(f"teacher weights must be a file path, got {weights!r}")
    if parse_teacher_spec(teacher) is None:
        raise ValueError(f"teacher weights apply to an imported teacher ({SPEC_FORMS}), not "
                         f"to {teacher!r}")
    if width != 1.0:
        raise ValueError(f"teacher weights fit the model at width 1, not {width:g}")
    if not Path(weights).is_file():
        raise ValueError(f"no teacher weights file at {weights}")
    return weights
