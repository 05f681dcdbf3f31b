"""A table's files in the work folder: ``table-N.md``, ``table-N.settings.json`` and
``figure-N.png``.

:func:`write_table` writes all three from the units' states (each file whole or not at
all, as ``--jobs`` workers write their copies too); :func:`recorded_settings` reads back
the settings a table was last written with, so that ``n2n paper N --report`` rewrites it
as it was made.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from n2n_env.paper.runner import UnitState
from n2n_env.paper.settings import PaperSettings

__all__ = ["SettingsFileError", "recorded_settings", "settings_path", "write_table"]


class SettingsFileError(ValueError):
    """A ``table-N.settings.json`` that is damaged, or does not hold table N's settings."""


def settings_path(work: Path, table: int) -> Path:
    """Where table ``table``'s settings are written: ``WORK/table-N.settings.json``."""
    return work / f"table-{table}.settings.json"


def recorded_settings(work: Path, table: int) -> dict[str, Any] | None:
    """The settings ``table-N.md`` was last written with, as plain values (None when
    there are none); SettingsFileError, naming the file, for a file that is not such
    settings or is another table's."""
    path = settings_path(work, table)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsFileError(f"{path} is damaged ({exc}); delete it, or give the table's "
                                "flags with --report") from None
    if not isinstance(values, dict) or values.get("table") != table:
        raise SettingsFileError(f"{path} does not hold table {table}'s n2n paper settings; "
                                "delete it, or give the table's flags with --report")
    try:
        PaperSettings.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise SettingsFileError(f"{path}: {exc}") from None
    return values


def write_table(settings: PaperSettings, states: Sequence[UnitState], work: Path, label: str,
                *, show: bool) -> Path:
    """Write ``table-N.md`` (its command naming the work folder as ``label``), the
    settings it shows and its curves (``figure-N.png``, when it has some) in ``work``;
    print the table when ``show``. Returns the table's path."""
    from n2n_env.paper import figures, report  # loaded by n2n paper when it starts

    work.mkdir(parents=True, exist_ok=True)
    try:
        figure = figures.write(settings, states, work)
    except Exception as exc:  # whatever went wrong with the figure must not cost the table
        print(f"n2n: warning: figure-{settings.table}.png not drawn ({exc})", file=sys.stderr)
        figure = None
    text = report.render(settings, states, label, figure=figure.name if figure else None)
    path = work / f"table-{settings.table}.md"
    for target, content in ((settings_path(work, settings.table),
                             json.dumps(settings.to_dict(), indent=1)), (path, text)):
        pending = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # --jobs workers too
        pending.write_text(content + "\n")
        pending.replace(target)
    if show:
        print(text)
    print(f"wrote {path}")
    return path
