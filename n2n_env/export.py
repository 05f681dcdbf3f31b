"""Export a compressed student for use without n2n.

:func:`export_student` (``n2n export``) writes the student in one of :data:`FORMATS`:

* ``onnx``: an ONNX graph (opset :data:`ONNX_OPSET`) with input ``input`` of shape
  ``[batch, C, H, W]`` and output ``logits`` of shape ``[batch, classes]``, the batch
  dimension dynamic. It is written by PyTorch's TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)``), which needs no package beyond torch; the
  torch.export-based one would also need ``onnxscript`` (and ``onnx-ir``) and takes
  seconds per network instead of a fraction of one. Checking the file needs ``onnx`` and
  ``onnxruntime``, the ``n2n[export]`` extra.
* ``torchscript``: ``torch.jit.trace`` of the student, loadable by plain
  ``torch.jit.load`` (tracing, not scripting: the network's forward walks its
  architecture's execution order in Python, which tracing unrolls into a fixed graph).
* ``state_dict``: the package's own model-file format (:func:`~n2n_env.run_files.save_student`).

Every format is checked before it is put in place: the file is written beside its
destination, loaded back the way a user without n2n would load it (onnxruntime,
``torch.jit.load``; :func:`load_student` for ``state_dict``), run on a random batch of
another size than the one traced, and renamed over the destination only if its outputs
equal the PyTorch student's within ``atol`` (absolute). Otherwise :class:`ExportError`
says by how much they differ, and nothing is written.

PyTorch 2.9+ calls both TorchScript and its ONNX exporter deprecated (they still work; their
warnings are silenced here). Should a later torch drop ``dynamo=False``, switching to
``dynamo=True`` with ``dynamic_shapes`` and adding ``onnxscript`` to the extra is the way on.

Every student the package builds is an ``N2NNet`` from :func:`~n2n_env.build.build_model`;
nothing here looks at layer kinds, so an export covers whatever that function can build.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from n2n_env.arch import Architecture
from n2n_env.build import N2NNet
from n2n_env.run_files import architecture_path, save_student
from n2n_env.student_loading import OpenedStudent, load_student, open_student

__all__ = ["ATOL", "FORMATS", "INPUT_NAME", "ONNX_OPSET", "OUTPUT_NAME", "ExportError",
           "ExportResult", "default_export_path", "export_student", "load_student"]

FORMATS = ("onnx", "torchscript", "state_dict")
"""What :func:`export_student` writes."""
ONNX_OPSET = 17
"""ONNX operator set of exported graphs (onnxruntime has run it since 1.11)."""
INPUT_NAME, OUTPUT_NAME = "input", "logits"
"""Names of the ONNX graph's input and output."""
ATOL = 1e-4
"""Largest absolute difference allowed between an exported file's outputs and the student's."""
EXPORT_EXTRA = 'pip install "n2n[export]"'
"""How to install what ONNX export needs."""
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}
_TORCH_DEPRECATIONS = (
    # torch 2.9+ marks the TorchScript-based ONNX exporter and TorchScript as deprecated;
    # both still work, and these warnings would only confuse a user who asked for them.
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, r"The feature will be removed"),
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
)


class ExportError(RuntimeError):
    """An export could not be made: a package it needs is missing, or the written file does
    not reproduce the student's outputs."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_student` wrote and how well it reproduced the student."""

    format: str
    path: Path
    """The exported file (for ``state_dict``, the ``.pt``; its ``.json`` is in ``files``)."""
    files: tuple[Path, ...]
    architecture: Architecture
    source: Path | None
    """The model file read (``None`` for a model passed in memory)."""
    max_abs_diff: float
    """Largest absolute difference between the file's outputs and the student's."""
    batch_size: int
    """Size of the random batch the check ran."""
    checked_with: str
    """What loaded the file for the check: ``onnxruntime X.Y``, ``torch.jit.load`` or
    ``load_student``."""


# ------------------------------------------------------------------ exporting


def default_export_path(path: str | os.PathLike[str], format: str,
                        stage: str | None = None) -> Path:
    """Where :func:`export_student` writes ``path``'s student by default: inside a run
    directory (``student.onnx``, ``student.torchscript.pt``, ``student.state_dict.pt``;
    ``student-<stage>...`` for a stage's student), beside a student file ``NAME.pt``
    (``NAME.onnx``, ...)."""
    _check_format(format)
    where = Path(path)
    if where.is_dir():
        stem = where / ("student" if stage is None else f"student-{stage}")
    else:
        stem = (where.with_suffix(".pt") if where.suffix == ".json" else where).with_suffix("")
    return stem.with_name(stem.name + _SUFFIXES[format])


def export_student(source: str | os.PathLike[str] | torch.nn.Module, format: str, *,
                   out: str | os.PathLike[str] | None = None, stage: str | None = None,
                   batch_size: int = 4, seed: int = 0, atol: float = ATOL) -> ExportResult:
    """Write the student at ``source`` as ``format`` (one of :data:`FORMATS`), check it, and
    say where and how well it reproduces the student.

    ``source`` is what :func:`load_student` takes (with ``stage``), or a model from
    :func:`~n2n_env.build.build_model` (then ``out`` is required). ``out`` is the file to
    write, or a directory to write the default name into (default:
    :func:`default_export_path`); a ``state_dict`` export's ``out`` ends in ``.pt``, and its
    architecture goes beside it in ``.json``. The written file is loaded back and run on a
    random batch of ``batch_size`` inputs (seeded by ``seed``); if any output differs from
    the student's by more than ``atol``, :class:`ExportError` is raised and nothing is
    written. ONNX export needs the ``n2n[export]`` extra (``onnx`` and ``onnxruntime``).
    """
    _check_format(format)
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(atol, int | float) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    runtime = _onnxruntime() if format == "onnx" else None  # before any work: fail fast
    if isinstance(source, torch.nn.Module):
        if stage is not None:
            raise ValueError("a stage picks a student of a run directory, not of a model")
        if out is None:
            raise ValueError("give out= (the file to write) when exporting a model in memory")
        if not isinstance(getattr(source, "architecture", None), Architecture):
            raise TypeError("export takes a model from n2n_env.build.build_model (it carries "
                            f".architecture), got {type(source).__name__}")
        model = copy.deepcopy(source).cpu().eval()
        opened = OpenedStudent(model, (), Path("student"))
        origin = None
    else:
        opened = open_student(source, stage, "cpu")
        origin = opened.files[0]
    target = _target(opened, format, out)
    written = (target, architecture_path(target)) if format == "state_dict" else (target,)
    mine = {p.resolve() for p in opened.files}
    for path in written:
        if path.resolve() in mine:
            raise ValueError(f"exporting to {os.fspath(target)!r} would overwrite the student "
                             f"being exported ({path}); choose another --out")
    model, arch = opened.model, opened.model.architecture
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(batch_size, *arch.input_shape, generator=generator)
    with torch.no_grad():
        expected = model(batch)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    staged = target.with_name(f".{target.stem}.{tag}{target.suffix}")
    staged_files = ((staged, architecture_path(staged)) if format == "state_dict"
                    else (staged,))
    try:
        with _quiet_torch():
            if format == "onnx":
                assert runtime is not None
                actual = _onnx_round_trip(model, staged, batch, runtime)
                checked_with = f"onnxruntime {runtime.__version__}"
            elif format == "torchscript":
                actual = _torchscript_round_trip(model, staged, batch)
                checked_with = "torch.jit.load"
            else:
                save_student(staged, model, arch)
                with torch.no_grad():
                    actual = load_student(staged)(batch)
                checked_with = "load_student"
        diff = _max_abs_diff(actual, expected)
        if not diff <= atol:
            raise ExportError(
                f"the {format} export of {origin or 'the model'} does not reproduce the "
                f"student: max abs difference {diff:.3g} on a random batch of {batch_size} "
                f"exceeds {atol:g}; nothing was written to {target}")
        for staged_file, final in reversed(list(zip(staged_files, written))):
            os.replace(staged_file, final)  # a state_dict's JSON before its weights
    finally:
        for staged_file in staged_files:
            with contextlib.suppress(OSError):
                staged_file.unlink()
    return ExportResult(format, target, written, arch, origin, diff, batch_size, checked_with)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from: {', '.join(FORMATS)}")


def _target(opened: OpenedStudent, format: str, out: str | os.PathLike[str] | None) -> Path:
    default = opened.stem.with_name(opened.stem.name + _SUFFIXES[format])
    if out is None:
        return default
    target = Path(out)
    if target.is_dir() or os.fspath(out).endswith(("/", os.sep)):
        return target / default.name
    if format == "state_dict" and target.suffix != ".pt":
        raise ValueError(f"a state_dict export ends in .pt (its architecture goes beside it "
                         f"in .json), got --out {os.fspath(target)!r}")
    return target


def _onnxruntime() -> ModuleType:
    """onnxruntime, after making sure onnx (which checks the graph) is there too."""
    missing = []
    modules = {}
    for name in ("onnx", "onnxruntime"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: "
                          f"{EXPORT_EXTRA}")
    return modules["onnxruntime"]


def _onnx_round_trip(model: N2NNet, path: Path, batch: torch.Tensor,
                     runtime: ModuleType) -> torch.Tensor:
    """Write ``model`` to ``path`` as ONNX, check the graph, and run it on ``batch``."""
    import onnx

    torch.onnx.export(model, (_example(batch),), os.fspath(path), dynamo=False,
                      opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"the ONNX graph PyTorch wrote is not valid ONNX: {exc}") from exc
    options = runtime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = runtime.InferenceSession(os.fspath(path), options,
                                       providers=["CPUExecutionProvider"])
    declared = session.get_inputs()[0].shape
    if isinstance(declared[0], int):
        raise ExportError(f"the ONNX graph fixed its batch dimension to {declared[0]}; it "
                          "should be free")
    (outputs,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
    return torch.from_numpy(np.asarray(outputs))


def _torchscript_round_trip(model: N2NNet, path: Path, batch: torch.Tensor) -> torch.Tensor:
    """Trace ``model`` to ``path``, load it back with plain ``torch.jit.load``, run ``batch``."""
    example = _example(batch)
    with torch.no_grad():
        traced = torch.jit.trace(model, (example,))
    torch.jit.save(traced, os.fspath(path))
    loaded = torch.jit.load(os.fspath(path), map_location="cpu")
    with torch.no_grad():
        return loaded(batch)


def _example(batch: torch.Tensor) -> torch.Tensor:
    """The input traced: one sample more than the check's batch, so the check shows that the
    batch dimension of the file is free and not fixed to the traced size."""
    return torch.zeros(batch.shape[0] + 1, *batch.shape[1:])


def _max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if tuple(actual.shape) != tuple(expected.shape):
        raise ExportError(f"the exported file returns outputs of shape {tuple(actual.shape)}, "
                          f"the student {tuple(expected.shape)}")
    return float((actual.to(expected.dtype) - expected).abs().max())


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, message in _TORCH_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
