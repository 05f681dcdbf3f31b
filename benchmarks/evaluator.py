"""How fast, and how faithful, is the default distillation budget? (issue 3 benchmark)

For each teacher, draws seeded random valid removal candidates and measures, in one run:

a. seconds per candidate with the default search budget (DistillationEvaluator defaults);
b. seconds per candidate with a reference loop written plainly as the paper describes it
   (DataLoader, teacher forward on every batch, from-scratch init, 5 epochs, Adam, L2
   logit loss), and the ratio b/a;
c. Kendall's tau between the two recipes' validation accuracies over the candidates (and
   between the N2N rewards they give, which is what an agent sees); with several reference
   seeds, also the tau of one reference run against another, i.e. how well the reference
   predicts itself, the most any cheaper recipe can be expected to reach (with three or
   more, also each run against the mean of the others); with several
   budget seeds (``--seeds``), each tau is the mean over the budget's seeds, followed by
   its range, since with 20 candidates one seed's tau moves by a few hundredths, and the
   tau of one seed's run against another's says how repeatable the budget itself is;
d. achieved training GFLOP/s of the default budget (3x forward FLOPs per sample, the
   usual forward+backward estimate) for the largest candidate, against the peak of a
   large convolution measured in the same run.

Run (real data, CPU):
    python benchmarks/evaluator.py --dataset mnist-10k --data-root ../shared/datasets
Teachers are trained on first use and cached under $N2N_HOME (see docs/teachers.md).
``--from-log LOG`` trains nothing: it reads the per-candidate accuracies a run printed and
prints how well each budget and the reference agree with themselves and each other.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch.utils.data import DataLoader, TensorDataset

from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.device import resolve_device, use_all_cores
from n2n_env.distill import DistillationEvaluator, DistillRecipe
from n2n_env.reward import compression_ratio, n2n_reward
from n2n_env.teacher import get_teacher
from n2n_env.training import evaluate_accuracy


def random_candidates(arch: Architecture, count: int, seed: int) -> list[Architecture]:
    """Seeded random valid removal candidates, each with its own keep probability."""
    rng = random.Random(seed)
    found: dict[str, Architecture] = {}
    while len(found) < count:
        keep_probability = rng.uniform(0.3, 0.9)
        keep = [rng.random() < keep_probability or not removable
                for removable in arch.removable()]
        student = arch.remove(keep)
        if student.degenerate_reason() is None:
            found.setdefault(student.signature(), student)
    return list(found.values())


def reference_accuracy(arch: Architecture, teacher: torch.nn.Module, data: data_mod.Dataset,
                       epochs: int, device: torch.device, seed: int) -> float:
    """The paper's recipe, written plainly: DataLoader, teacher forward per batch, scratch."""
    torch.manual_seed(seed)
    student = build_model(arch, device=device)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=128,
                        shuffle=True, drop_last=True)
    teacher.eval()
    for _ in range(epochs):
        student.train()
        for inputs, _labels in loader:
            inputs = inputs.to(device)
            with torch.no_grad():
                targets = teacher(inputs)
            loss = F.mse_loss(student(inputs), targets, reduction="none").sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return evaluate_accuracy(student, data.val)


def peak_conv_gflops(device: torch.device, seconds: float = 3.0) -> float:
    """Forward GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 32x32, batch 32)."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False, device=device)
    inputs = torch.randn(32, 256, 32, 32, device=device)
    flops = 2 * 256 * 256 * 9 * 32 * 32 * 32
    best = 0.0
    with torch.no_grad():
        conv(inputs)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conv(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def _recipe(budget: str) -> DistillRecipe:
    """``STEPS[xBATCH][@LR]`` -> recipe; what is left out keeps DistillRecipe's default."""
    size, _, lr = budget.partition("@")
    steps, _, batch = size.partition("x")
    default = DistillRecipe()
    return DistillRecipe(steps=int(steps), batch_size=int(batch) if batch else default.batch_size,
                         lr=float(lr) if lr else default.lr)


def _label(budget: str) -> str:
    recipe, default = _recipe(budget), DistillRecipe()
    text = f"{recipe.steps} x {recipe.batch_size}" + (f" @ {recipe.lr:g}"
                                                      if recipe.lr != default.lr else "")
    return text + (" (default)" if recipe == default else "")


def mean_pairwise_tau(rankings: list[list[float]]) -> float:
    """Mean Kendall tau over every pair of ``rankings``: how well one run predicts another."""
    taus = [kendalltau(a, b).statistic for i, a in enumerate(rankings) for b in rankings[i + 1:]]
    return sum(taus) / len(taus)


def mean_run(runs: list[list[float]]) -> list[float]:
    """Each candidate's accuracy averaged over ``runs``."""
    return [sum(values) / len(values) for values in zip(*runs)]


def leave_one_out_tau(rankings: list[list[float]]) -> float:
    """Mean Kendall tau of each run against the mean of the other runs: how well one run of
    a recipe predicts the average of its reruns."""
    taus = []
    for index, run in enumerate(rankings):
        others = [ranking for other, ranking in enumerate(rankings) if other != index]
        taus.append(kendalltau(run, mean_run(others)).statistic)
    return sum(taus) / len(taus)


def _spread(values: list[float]) -> str:
    """``mean`` for one value, ``mean (min-max)`` for several."""
    text = f"{sum(values) / len(values):.3f}"
    return text + (f" ({min(values):.2f} to {max(values):.2f})" if len(values) > 1 else "")


def agreement_from_log(path: Path) -> None:
    """Print, for each teacher of a logged run, the rank agreements of its budgets and of
    its reference, from the per-candidate accuracies the run printed."""
    runs: dict[str, dict[str, list[list[float]]]] = {}
    for line in path.read_text().splitlines():
        found = re.match(r"\s+(\S+) candidate\s+\d+:", line)
        if not found:
            continue
        teacher = runs.setdefault(found.group(1), {})
        for recipe, accuracies in re.findall(r"(\S+): ((?:\d\.\d+ ?)+) \(", line):
            teacher.setdefault(recipe, []).append([float(a) for a in accuracies.split()])
        references = [float(a) for a in re.findall(r"reference (\d\.\d+)", line)]
        teacher.setdefault("reference", []).append(references)
    print("| teacher | recipe | runs | tau (accuracy) vs reference mean | run vs run | "
          "run vs the mean of the other runs |")
    print("|---|---|---|---|---|---|")
    for name, recipes in runs.items():
        target = mean_run([list(run) for run in zip(*recipes["reference"])])
        for recipe, per_candidate in recipes.items():
            seeds = [list(run) for run in zip(*per_candidate)]
            taus = [kendalltau(run, target).statistic for run in seeds]
            pairwise = mean_pairwise_tau(seeds) if len(seeds) > 1 else float("nan")
            held_out = leave_one_out_tau(seeds) if len(seeds) > 2 else float("nan")
            versus = "-" if recipe == "reference" else _spread(taus)
            print(f"| {name} | {recipe} | {len(seeds)} | {versus} | {pairwise:.3f} | "
                  f"{held_out:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist-10k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--teachers", default="conv4:0.5,vgg13:0.25",
                        help="comma-separated name:width pairs")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=20)
    default = DistillRecipe()
    parser.add_argument("--budgets", default=f"{default.steps}x{default.batch_size}",
                        help="comma-separated budgets to compare, each STEPS[xBATCH][@LR] "
                             "(optimizer steps, batch size, Adam learning rate; what is left "
                             "out is DistillRecipe's default)")
    parser.add_argument("--reference-repeats", type=int, default=1,
                        help="run the reference with this many seeds; the mean accuracy is "
                             "the target, and the mean tau between two seeds' runs is how "
                             "well the reference predicts itself")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run every budget with this many seeds (--seed, --seed + 1, ...); "
                             "the taus are then means over the seeds, with their range")
    parser.add_argument("--reference-epochs", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-log", type=Path, default=None, metavar="LOG",
                        help="train nothing: print the rank agreements of a logged run")
    args = parser.parse_args()
    if args.from_log is not None:
        agreement_from_log(args.from_log)
        return
    device = resolve_device(args.device)
    if device.type == "cpu":
        use_all_cores()
    data = data_mod.load(args.dataset, root=args.data_root)
    peak = peak_conv_gflops(device)
    print(f"device {device}, {torch.get_num_threads()} threads, peak conv {peak:.1f} GFLOP/s")
    budgets = args.budgets.split(",")
    rows = []
    for spec in args.teachers.split(","):
        name, width = spec.split(":")
        teacher, record = get_teacher(name, args.dataset, width=float(width),
                                      data_root=args.data_root, device=device,
                                      epochs=args.teacher_epochs)
        seeds = range(args.seed, args.seed + args.seeds)
        evaluators = {budget: [DistillationEvaluator(teacher, data, _recipe(budget),
                                                     device=device, seed=seed)
                               for seed in seeds]
                      for budget in budgets}
        candidates = random_candidates(teacher.architecture, args.candidates, args.seed)
        largest = max(candidates, key=lambda arch: arch.flops())
        fast: dict[str, list[list[float]]] = {budget: [[] for _ in seeds] for budget in budgets}
        fast_seconds = dict.fromkeys(budgets, 0.0)
        largest_rate = dict.fromkeys(budgets, 0.0)
        slow: list[list[float]] = [[] for _ in range(args.reference_repeats)]
        slow_seconds = 0.0
        for index, arch in enumerate(candidates):
            line = f"  {name} candidate {index:2d}: {arch.num_params():>9,} params"
            for budget, per_seed in evaluators.items():
                results = [evaluator.evaluate(arch) for evaluator in per_seed]
                for accuracies, result in zip(fast[budget], results):
                    accuracies.append(result.accuracy)
                seconds = sum(result.wall_seconds for result in results)
                fast_seconds[budget] += seconds
                if arch is largest:
                    largest_rate[budget] = (3 * arch.flops() * results[0].samples_seen
                                            / results[0].wall_seconds / 1e9)
                line += f"  {budget}: " + " ".join(f"{result.accuracy:.4f}" for result in results)
                line += f" ({seconds / len(results):.1f}s)"
            for repeat, accuracies in enumerate(slow):
                start = time.perf_counter()
                accuracies.append(reference_accuracy(arch, teacher, data, args.reference_epochs,
                                                     device, args.seed + repeat))
                slow_seconds += time.perf_counter() - start
                line += f"  reference {accuracies[-1]:.4f} ({time.perf_counter() - start:.1f}s)"
            print(line, flush=True)
        target = mean_run(slow)
        per_reference = slow_seconds / len(candidates) / len(slow)
        self_tau = mean_pairwise_tau(slow) if len(slow) > 1 else float("nan")
        if len(slow) > 1:
            pairs = len(slow) * (len(slow) - 1) // 2
            print(f"  {name}: reference run vs another seed's run, mean Kendall tau "
                  f"{self_tau:.3f} over {pairs} pair{'s' if pairs > 1 else ''}")
            if len(slow) > 2:
                print(f"  {name}: reference run vs the mean of the other {len(slow) - 1} runs, "
                      f"mean Kendall tau {leave_one_out_tau(slow):.3f}")
        compressions = [compression_ratio(arch.num_params(), teacher.architecture.num_params())
                        for arch in candidates]
        target_rewards = [n2n_reward(c, a, record.val_accuracy)
                          for c, a in zip(compressions, target)]
        for budget in budgets:
            taus, per_run_taus, reward_taus = [], [], []
            for accuracies in fast[budget]:
                taus.append(kendalltau(accuracies, target).statistic)
                per_run_taus.append(sum(kendalltau(accuracies, run).statistic for run in slow)
                                    / len(slow))
                rewards = [n2n_reward(c, a, record.val_accuracy)
                           for c, a in zip(compressions, accuracies)]
                reward_taus.append(kendalltau(rewards, target_rewards).statistic)
            budget_self_tau = (mean_pairwise_tau(fast[budget]) if len(seeds) > 1
                               else float("nan"))
            rows.append((name, width, record.val_accuracy, _label(budget),
                         fast_seconds[budget] / len(candidates) / len(seeds), per_reference,
                         _spread(taus), _spread(per_run_taus), self_tau, budget_self_tau,
                         _spread(reward_taus), largest_rate[budget]))
    print(f"\n| teacher | width | teacher val acc | budget (steps x batch) | s/candidate | "
          f"reference s/candidate | speed-up | tau (accuracy) vs reference mean | "
          f"tau (accuracy) vs one reference run | reference run vs reference run | "
          f"budget run vs budget run | tau (reward) vs reference mean | "
          f"GFLOP/s, largest candidate (peak {peak:.0f}) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, width, accuracy, label, fast_s, slow_s, tau, per_run_tau, self_tau,
         budget_self_tau, reward_tau, rate) in rows:
        print(f"| {name} | {width} | {accuracy:.4f} | {label} | {fast_s:.2f} | {slow_s:.2f} | "
              f"{slow_s / fast_s:.1f}x | {tau} | {per_run_tau} | {self_tau:.3f} | "
              f"{budget_self_tau:.3f} | {reward_tau} | {rate:.1f} ({rate / peak:.0%}) |")


if __name__ == "__main__":
    main()
