"""Every agent of ``n2n compress`` on real MNIST data, both stages (issue 5 results).

Runs ``n2n_env.pipeline.compress`` on ``mnist-10k`` with a CPU-sized teacher for each agent
at the same number of episodes (``--iterations`` x 5 per stage), and prints each run's
Table-1 rows, the candidates it trained and the best reward of each stage (episodes that
repeat a candidate are answered by the reward cache), and its wall time.
Run: ``python benchmarks/compress_mnist.py --data-root ../shared/datasets``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from n2n_env.pipeline import compress
from n2n_env.run_config import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--teacher", default="conv4")
    parser.add_argument("--teacher-width", type=float, default=0.5)
    parser.add_argument("--dataset", default="mnist-10k")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="final fine-tuning epochs (default: the teacher recipe's)")
    parser.add_argument("--agents", default="reinforce,random")
    parser.add_argument("--out", default=None, help="parent folder of the run directories")
    args = parser.parse_args()
    parent = Path(args.out or tempfile.mkdtemp(prefix="n2n-compress-mnist-"))
    for agent in args.agents.split(","):
        config = RunConfig(teacher=args.teacher, dataset=args.dataset,
                           data_root=args.data_root, teacher_width=args.teacher_width,
                           iterations=args.iterations, finetune_epochs=args.finetune_epochs,
                           agent=agent)
        result = compress(config, out=parent / agent, progress=False)
        trained, best = [], []
        for stage in ("removal", "shrink"):
            with open(result.out / f"metrics_{stage}.csv") as handle:
                last = list(csv.DictReader(handle))[-1]  # both columns are cumulative
            trained.append(last["evaluations"])
            best.append(f"{float(last['best_reward_so_far']):.3f}")
        print(f"\n## {agent}: {' + '.join(trained)} candidates trained (stage 1 + 2), best "
              f"reward {' / '.join(best)}, {result.seconds:.0f} s, run dir {result.out}")
        print(result.table(), flush=True)


if __name__ == "__main__":
    main()
