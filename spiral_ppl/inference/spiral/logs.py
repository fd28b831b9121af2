"""Training logs: CSV files always, TensorBoard event files when TensorBoard is installed.

``train.csv`` gets one row per logged update, ``eval.csv`` one per evaluation; files are
appended to, so a resumed run continues them. TensorBoard is not a dependency of
spiral_ppl: with ``pip install tensorboard`` the same scalars are also written as event
files (``tensorboard --logdir LOG_DIR``); without it only the CSV files are written.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

try:  # torch.utils.tensorboard imports the tensorboard package, which is optional.
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover - depends on the environment
    SummaryWriter = None


class TrainingLog:
    """Scalars of a training run in ``log_dir``.

    :param log_dir: folder of the logs (created).
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tensorboard = SummaryWriter(str(self.log_dir)) if SummaryWriter is not None else None

    def write(self, table: str, row: Mapping[str, float]) -> None:
        """Append ``row`` to ``{table}.csv`` (the header comes from the first row)."""
        path = self.log_dir / f"{table}.csv"
        new = not path.exists()
        with path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()})
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "update":
                    self.tensorboard.add_scalar(f"{table}/{key}", value, global_step=int(row["update"]))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
