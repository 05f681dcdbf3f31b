"""The numbers of the paper's Tables 1-5 (Ashok et al., ICLR 2018, section 4), as data.

Each value is written as the paper prints it (``"9.4M"``, ``"127x"``, ``"+0.01%"``), so
that a reader can check it against the PDF; :func:`count` reads a printed parameter count
back as a number. Only :mod:`n2n_env.paper.report` reads this module: it prints the
paper's row beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "IMAGES", "ROWS", "TABLE1", "TABLE2", "TABLE3", "TABLE4", "TABLE5",
           "TITLES", "PaperRow", "PaperTransfer", "count", "find", "transfer"]

TITLES = {
    1: "Table 1: Summary of Compression results",
    2: "Table 2: Pruning (Baseline)",
    3: "Table 3: Knowledge distillation with hand designed models (Baseline)",
    4: "Table 4: Model Compression with Size Constraints",
    5: "Table 5: Transfer Learning Performance during first 10 iterations",
}
"""The paper's captions."""

DATASETS = {"mnist": "MNIST", "mnist-10k": "MNIST", "cifar10": "CIFAR-10",
            "cifar10-14k": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
"""The paper's dataset heading for each of our datasets that is, or is a subset of, one the
paper used; a row is compared with the paper's only under its own heading."""

IMAGES = {"MNIST": "60,000 training / 10,000 test images",
          "CIFAR-10": "50,000 training / 10,000 test images",
          "CIFAR-100": "50,000 training / 10,000 test images",
          "SVHN": "73,257 training / 26,032 test images"}
"""The size of each dataset the paper trained on (its section 4.1)."""


@dataclass(frozen=True)
class PaperRow:
    """One model row of Tables 1-4, as printed ("—" where the paper prints a dash)."""

    table: int
    dataset: str
    """The paper's dataset heading: MNIST, CIFAR-10, SVHN, CIFAR-100, Caltech256."""
    architecture: str
    """The teacher's architecture: VGG-13, VGG-19, ResNet-18, ResNet-34."""
    model: str
    """Teacher, Student (Stage1), Student (Stage1+Stage2), Pruning, Ours, FitNet-4, ..."""
    accuracy: str
    params: str
    delta: str = "—"
    """Delta accuracy against the teacher, in points."""
    compression: str = "—"
    constraint: str = "—"
    """Table 4's size constraint (N/A for teachers)."""


@dataclass(frozen=True)
class PaperTransfer:
    """One row of Table 5: a pre-trained or scratch policy on one teacher pair."""

    source: str
    target: str
    policy: str
    """Pre-trained or Scratch."""
    reward: str
    compression: str
    accuracy: str


def _t1(dataset: str, arch: str, model: str, acc: str, params: str, delta: str = "—",
        compr: str = "—") -> PaperRow:
    return PaperRow(1, dataset, arch, model, acc, params, delta, compr)


TABLE1 = (
    _t1("MNIST", "VGG-13", "Teacher", "99.54%", "9.4M"),
    _t1("MNIST", "VGG-13", "Student (Stage1)", "99.55%", "73K", "+0.01%", "127x"),
    _t1("CIFAR-10", "VGG-19", "Teacher", "91.97%", "20.2M"),
    _t1("CIFAR-10", "VGG-19", "Student (Stage1)", "92.05%", "1.7M", "+0.08%", "11.8x"),
    _t1("CIFAR-10", "VGG-19", "Student (Stage1+Stage2)", "91.64%", "984K", "-0.33%", "20.53x"),
    _t1("CIFAR-10", "ResNet-18", "Teacher", "92.01%", "11.17M"),
    _t1("CIFAR-10", "ResNet-18", "Student (Stage1)", "91.97%", "2.12M", "-0.04%", "5.26x"),
    _t1("CIFAR-10", "ResNet-18", "Student (Stage1+Stage2)", "91.81%", "1.00M", "-0.2%",
        "11.10x"),
    _t1("CIFAR-10", "ResNet-34", "Teacher", "92.05%", "21.28M"),
    _t1("CIFAR-10", "ResNet-34", "Student (Stage1)", "93.54%", "3.87M", "+1.49%", "5.5x"),
    _t1("CIFAR-10", "ResNet-34", "Student (Stage1+Stage2)", "92.35%", "2.07M", "+0.30%",
        "10.2x"),
    _t1("SVHN", "ResNet-18", "Teacher", "95.24%", "11.17M"),
    _t1("SVHN", "ResNet-18", "Student (Stage1)", "95.66%", "2.24M", "+0.42%", "4.97x"),
    _t1("SVHN", "ResNet-18", "Student (Stage1+Stage2)", "95.38%", "564K", "+0.18%", "19.8x"),
    _t1("CIFAR-100", "ResNet-18", "Teacher", "72.22%", "11.22M"),
    _t1("CIFAR-100", "ResNet-18", "Student (Stage1)", "69.64%", "4.76M", "-2.58%", "2.35x"),
    _t1("CIFAR-100", "ResNet-18", "Student (Stage1+Stage2)", "68.01%", "2.42M", "-4.21%",
        "4.64x"),
    _t1("CIFAR-100", "ResNet-34", "Teacher", "72.86%", "21.33M"),
    _t1("CIFAR-100", "ResNet-34", "Student (Stage1)", "70.11%", "4.25M", "-2.75%", "5.02x"),
    _t1("Caltech256", "ResNet-18", "Teacher", "47.65%", "11.31M"),
    _t1("Caltech256", "ResNet-18", "Student (Stage1)", "44.71%", "3.62M", "-2.94%", "3.12x"),
)
"""Table 1, every row (columns Acc., #Params, Delta Acc., Compr.)."""

TABLE2 = (
    PaperRow(2, "MNIST", "VGG-13", "Teacher", "99.54%", "9.4M"),
    PaperRow(2, "MNIST", "VGG-13", "Pruning", "99.12%", "162K", "-0.42%", "58x"),
    PaperRow(2, "MNIST", "VGG-13", "Ours", "99.55%", "73K", "+0.01%", "127x"),
    PaperRow(2, "CIFAR-10", "VGG-19", "Teacher", "91.97%", "20.2M"),
    PaperRow(2, "CIFAR-10", "VGG-19", "Pruning", "91.06%", "2.3M", "-0.91%", "8.7x"),
    PaperRow(2, "CIFAR-10", "VGG-19", "Ours", "92.05%", "1.7M", "+0.08%", "11.8x"),
)
"""Table 2 (columns Acc., #Params, Compr., Delta Acc.)."""

TABLE3 = (
    PaperRow(3, "SVHN", "ResNet-18", "Teacher", "95.24%", "11.17M"),
    PaperRow(3, "SVHN", "ResNet-18", "SqueezeNet1.1", "89.34%", "727K", "-5.90%", "15x"),
    PaperRow(3, "SVHN", "ResNet-18", "Ours", "95.38%", "564K", "+0.18%", "19.8x"),
    PaperRow(3, "CIFAR-10", "ResNet-18", "Teacher", "92.01%", "11.17M"),
    PaperRow(3, "CIFAR-10", "ResNet-18", "FitNet-4", "91.33%", "1.2M", "-0.63%", "9.3x"),
    PaperRow(3, "CIFAR-10", "ResNet-18", "VGG-small", "83.93%", "1.06M", "-8.08%", "10.5x"),
    PaperRow(3, "CIFAR-10", "ResNet-18", "Ours", "91.81%", "1.00M", "-0.20%", "11.0x"),
)
"""Table 3 (columns Acc., #Params, Compr., Delta Acc.). The paper ran SqueezeNet 1.1 on
SVHN, FitNet-4 and VGG-small on CIFAR-10."""

TABLE4 = (
    PaperRow(4, "MNIST", "VGG-13", "Teacher", "99.54%", "9.4M", compression="1x",
             constraint="N/A"),
    PaperRow(4, "MNIST", "VGG-13", "Student (Stage 1 & 2)", "98.91%", "17K",
             compression="553x", constraint="20K"),
    PaperRow(4, "CIFAR-10", "VGG-19", "Teacher", "91.97%", "20.2M", compression="1x",
             constraint="N/A"),
    PaperRow(4, "CIFAR-10", "VGG-19", "Student (Stage 1 & 2)", "90.8%", "573K",
             compression="35x", constraint="1M"),
)
"""Table 4 (columns Acc., #Params, Compr., Constr.)."""

ROWS = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4}
"""The model rows of Tables 1-4, by table number."""

TABLE5 = (
    PaperTransfer("resnet18", "resnet34", "Pre-trained", "0.81", "78.1%", "79.5%"),
    PaperTransfer("resnet18", "resnet34", "Scratch", "0.50", "34.8%", "82.4%"),
    PaperTransfer("resnet34", "resnet18", "Pre-trained", "0.76", "65.5%", "82.3%"),
    PaperTransfer("resnet34", "resnet18", "Scratch", "0.53", "39.7%", "82.8%"),
    PaperTransfer("vgg11", "vgg19", "Pre-trained", "0.52", "46.0%", "71.7%"),
    PaperTransfer("vgg11", "vgg19", "Scratch", "-0.07", "20.2%", "42.5%"),
)
"""Table 5: mean reward, compression and accuracy of the first 10 iterations (CIFAR-10)."""


def count(printed: str) -> int:
    """A parameter count as printed (``"9.4M"``, ``"73K"``, ``"984K"``) as a number."""
    text = printed.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    return round(float(number) * scale)


def find(rows: tuple[PaperRow, ...], dataset: str, architecture: str, model: str
         ) -> PaperRow | None:
    """The row of ``rows`` for this dataset heading, teacher and model, if the paper has one."""
    for row in rows:
        if (row.dataset, row.architecture, row.model) == (dataset, architecture, model):
            return row
    return None


def transfer(source: str, target: str, policy: str) -> PaperTransfer | None:
    """Table 5's row for this teacher pair (zoo names) and policy, if the paper has one."""
    for row in TABLE5:
        if (row.source, row.target, row.policy) == (source, target, policy):
            return row
    return None
