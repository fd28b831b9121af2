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

from spiral_ppl.io import atomic_path

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
        """Append ``row`` to ``{table}.csv``.

        The header is the union of the columns seen so far: a run resumed with other metrics
        (say, on Ray workers after a local start) widens the file, rewritten atomically,
        and rows without a column leave it empty.
        """
        path = self.log_dir / f"{table}.csv"
        values = {key: f"{value:.6g}" if isinstance(value, float) else value for key, value in row.items()}
        header, earlier = [], []
        if path.exists():
            with path.open(newline="") as stream:
                reader = csv.DictReader(stream)
                header = list(reader.fieldnames or [])
                if set(row) - set(header):
                    earlier = list(reader)
        columns = header + [key for key in row if key not in header]
        if path.exists() and columns == header:
            with path.open("a", newline="") as stream:
                csv.DictWriter(stream, fieldnames=columns).writerow(values)
        else:
            with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=columns)
                writer.writeheader()
                writer.writerows(earlier + [values])
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "update":
                    self.tensorboard.add_scalar(f"{table}/{key}", value, global_step=int(row["update"]))

    def discard_after(self, update: int) -> None:
        """Drop the rows of every table logged after ``update``: a run resumed from a checkpoint
        of that update redoes them, and each update should appear once."""
        for path in sorted(self.log_dir.glob("*.csv")):
            with path.open(newline="") as stream:
                reader = csv.DictReader(stream)
                header, rows = list(reader.fieldnames or []), list(reader)
            if "update" not in header:
                continue
            kept = [row for row in rows if int(float(row["update"])) <= update]
            if len(kept) < len(rows):
                with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
                    writer = csv.DictWriter(stream, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(kept)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
