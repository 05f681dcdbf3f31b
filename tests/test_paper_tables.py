"""The paper's cells beside ours: each table takes the paper's rows for its own dataset and
teacher, in the columns the table prints, and dashes where the paper ran no such pair.

No unit runs here: the bodies are written from settings alone, every one of our cells
``pending``, so these tests read only the paper's side of each row.
"""

from __future__ import annotations

import pytest
from paper_runs import row_cells

from n2n_env.paper import report
from n2n_env.paper.settings import PaperSettings
from n2n_env.paper.tables import BODIES

DASHES = ["—"] * 4


def rows(settings: PaperSettings) -> dict[str, list[str]]:
    """Each body row's cells after the first, by the row's name."""
    return {name: rest for name, *rest in map(row_cells, BODIES[settings.table](settings, [])[2:])}


def test_table1_on_cifar_takes_the_papers_resnet18_rows_not_mnists() -> None:
    table = rows(PaperSettings(1, dataset="cifar10-14k", teacher="resnet18"))
    assert table["Teacher (ResNet-18)"][:4] == ["92.01%", "11.17M", "—", "—"]
    assert table["Student (Stage1), REINFORCE"][:4] == ["91.97%", "2.12M", "-0.04%", "5.26x"]
    assert table["Student (Stage1+Stage2), REINFORCE"][:4] == [
        "91.81%", "1.00M", "-0.2%", "11.10x"]
    for name in ("Student (Stage1), random search", "Student (Stage1+Stage2), random search"):
        assert table[name][:4] == DASHES  # random search is ours alone
    assert all(cells[4] == "pending" for cells in table.values())


def test_table1_default_is_the_papers_mnist_vgg13_row() -> None:
    table = rows(PaperSettings(1))
    assert table["Teacher (VGG-13)"][:4] == ["99.54%", "9.4M", "—", "—"]
    assert table["Student (Stage1), REINFORCE"][:4] == ["99.55%", "73K", "+0.01%", "127x"]
    assert table["Student (Stage1+Stage2), REINFORCE"][:4] == DASHES  # none for MNIST


@pytest.mark.parametrize(("dataset", "teacher", "pruning", "ours"), [
    ("mnist-10k", "vgg13", ["99.12%", "162K", "58x", "-0.42%"],
     ["99.55%", "73K", "127x", "+0.01%"]),
    ("cifar10-14k", "vgg19", ["91.06%", "2.3M", "8.7x", "-0.91%"],
     ["92.05%", "1.7M", "11.8x", "+0.08%"]),
])
def test_table2_takes_the_pruning_rows_of_its_dataset_in_its_column_order(
        dataset: str, teacher: str, pruning: list[str], ours: list[str]) -> None:
    table = rows(PaperSettings(2, dataset=dataset, teacher=teacher))
    assert next(v for k, v in table.items() if k.startswith("Pruning (best of"))[:4] == pruning
    assert table["Ours: Student (Stage1), REINFORCE, the pruning reference"][:4] == ours


@pytest.mark.parametrize(("dataset", "teacher", "student"), [
    ("mnist-10k", "vgg13", ["98.91%", "17K", "553x", "20K"]),
    ("cifar10-14k", "vgg19", ["90.8%", "573K", "35x", "1M"]),
])
def test_table4_takes_the_constrained_row_of_its_dataset(
        dataset: str, teacher: str, student: list[str]) -> None:
    table = rows(PaperSettings(4, dataset=dataset, teacher=teacher))
    assert table["Student (Stage 1 & 2), REINFORCE"][:4] == student


def test_table3_default_takes_cifar10_resnet18_and_squeezenet_from_svhn() -> None:
    table = rows(PaperSettings(3))
    assert table["Teacher (ResNet-18)"][:4] == ["92.01%", "11.17M", "—", "—"]
    assert table["FitNet-4"][:4] == ["91.33%", "1.2M", "9.3x", "-0.63%"]
    assert table["VGG-small"][:4] == ["83.93%", "1.06M", "10.5x", "-8.08%"]
    assert table["SqueezeNet1.1 (paper: on SVHN)"][:4] == ["89.34%", "727K", "15x", "-5.90%"]
    assert table["Ours: Student (Stage1+Stage2), REINFORCE"][:4] == [
        "91.81%", "1.00M", "11.0x", "-0.20%"]


def test_table3_on_svhn_has_only_squeezenet_and_says_so_without_a_note() -> None:
    settings = PaperSettings(3, dataset="svhn")
    table = rows(settings)
    assert table["Teacher (ResNet-18)"][:4] == ["95.24%", "11.17M", "—", "—"]
    assert table["SqueezeNet1.1"][:4] == ["89.34%", "727K", "15x", "-5.90%"]
    assert table["FitNet-4"][:4] == table["VGG-small"][:4] == DASHES
    assert ("- Paper: SVHN (73,257 training / 26,032 test images), ResNet-18 at full width."
            in report.render(settings, [], "work"))


@pytest.mark.parametrize("table", [1, 2, 3, 4])
def test_a_pair_the_paper_never_ran_reads_dashes_and_says_so(table: int) -> None:
    settings = PaperSettings(table, dataset="digits", teacher="conv4", teacher_width=0.25)
    for name, cells in rows(settings).items():
        assert cells[:4] == DASHES, name
    text = report.render(settings, [], "work")
    assert (f"- Paper: its Table {table} has no Conv4 on digits (nor on the dataset it is "
            "drawn from), so the paper's columns read —.") in text


@pytest.mark.parametrize(("settings", "line"), [
    (PaperSettings(1, dataset="cifar10-14k", teacher="resnet18"),
     "- Paper: CIFAR-10 (50,000 training / 10,000 test images), ResNet-18 at full width."),
    (PaperSettings(1), "- Paper: MNIST (60,000 training / 10,000 test images), VGG-13 at full "
                       "width."),
    (PaperSettings(3), "- Paper: CIFAR-10 (50,000 training / 10,000 test images), ResNet-18 "
                       "at full width; SqueezeNet 1.1 on SVHN (73,257 training / 26,032 test "
                       "images)."),
    (PaperSettings(4, dataset="cifar10-14k", teacher="vgg19"),
     "- Paper: CIFAR-10 (50,000 training / 10,000 test images), VGG-19 at full width, "
     "params <= 1M."),
])
def test_the_paper_line_names_the_data_of_the_rows_shown(
        settings: PaperSettings, line: str) -> None:
    assert line in report.render(settings, [], "work")
