"""How a shipped SPIRAL agent should decode: greedy first pass, sampling temperature.

``python benchmarks/spiral_decoding.py AGENT OUT [TEMPERATURES] [--write]`` scores the
pretrained ``AGENT`` (``mnist-recon-cpu`` or ``scenes-recon-cpu``) on validation targets
that the head-to-head never uses, for each sampling temperature (comma-separated, default
1,0.5,0.35,0.25,0.15) with and without a greedy first pass: one pass, the best of 10
passes, and SMC with the agent's proposal (``agent.proposal``, which samples at the same
temperature; SMC's default intermediate targets) given as many renders as 10 passes.
Writes ``OUT/AGENT.md`` and ``OUT/AGENT.csv``.

The decoding kept does well on all three: it has the lowest mean over the three columns
of its l2 divided by the column's best (so 1 would be best at everything).

Then, at the kept decoding, the guided SMC's intermediate targets (``Decoding.smc_intermediate``
and ``Decoding.smc_tempering``, see :mod:`spiral_ppl.inference.smc`) are chosen the same way
from ``SMC_OPTIONS``, on two budgets: 10 passes' renders on every validation target and 100
passes' on the first 64. Written to ``OUT/AGENT_smc.md`` and ``OUT/AGENT_smc.csv``.

With ``--write`` both choices are saved into the package's checkpoint of ``AGENT`` (they
travel with the weights), so ``Spiral.pretrained``, ``agent.smc()`` and the head-to-head use
them. ``--reuse`` reads the measurements from the CSVs instead of taking them again.

Validation targets: MNIST test digits 5,000..5,255 (the head-to-head inverts digits 0..99);
256 MUJOCO SCENES of seed 1 (the head-to-head's are of seed 12345).
"""

import csv
import dataclasses
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch

import spiral_ppl as sp

name, out = sys.argv[1], Path(sys.argv[2])
arguments = [argument for argument in sys.argv[3:] if not argument.startswith("--")]
unknown = sorted(set(sys.argv[3:]) - set(arguments) - {"--write", "--reuse"})
if unknown:  # a mistyped --write would otherwise leave the checkpoint as it was, silently
    raise SystemExit(f"unknown options {unknown}; the options are --write and --reuse")
temperatures = [float(t) for t in arguments[0].split(",")] if arguments else [1.0, 0.5, 0.35, 0.25, 0.15]
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

agent = sp.inference.Spiral.pretrained(name, device="cpu")
if name.startswith("mnist"):
    targets = sp.data.MNIST(split="test").images(range(5000, 5256))
else:
    validation = sp.data.MujocoScenes(root=tempfile.mkdtemp(), size=256, seed=1, steps=agent.prog.steps,
                                      progress=False)
    targets = torch.stack([validation[i][0] for i in range(len(validation))])


def measure() -> list[dict]:
    ten_passes = sp.Budget(renders=10 * agent.renders_per_pass)
    guided_smc = {}
    for temperature in temperatures:
        agent.decoding = dataclasses.replace(agent.decoding, temperature=temperature)
        guided_smc[temperature] = float(agent.smc(intermediate="model", tempering=None).infer(
            agent.prog, targets, ten_passes, seed=0).l2.mean())
    rows = []
    for greedy_first in (True, False):
        for temperature in temperatures:
            agent.decoding = dataclasses.replace(agent.decoding, greedy_first=greedy_first, temperature=temperature)
            result = agent.infer(agent.prog, targets, ten_passes, seed=0)
            rows.append({"greedy_first": greedy_first, "temperature": temperature,
                         "one_pass": float(result.curve.l2[0].mean()), "best_of_10": float(result.l2.mean()),
                         "guided_smc_10": guided_smc[temperature]})
            print(rows[-1], flush=True)
    write_csv(out / f"{name}.csv", rows)
    return rows


#: Intermediate targets of the guided SMC to choose from: (smc_intermediate, smc_tempering).
SMC_OPTIONS = [("model", None), ("model", 0.01), ("proposal", 0.01), ("proposal", 0.001)]


def measure_smc() -> list[dict]:
    budgets = {"smc_10": (10, targets), "smc_100_first_64": (100, targets[:64])}
    rows = []
    for intermediate, tempering in SMC_OPTIONS:
        row = {"intermediate": intermediate, "tempering": tempering}
        for column, (passes, images) in budgets.items():
            engine = agent.smc(intermediate=intermediate, tempering=tempering)
            row[column] = float(engine.infer(agent.prog, images, sp.Budget(renders=passes * agent.renders_per_pass),
                                             seed=0).l2.mean())
        rows.append(row)
        print(rows[-1], flush=True)
    write_csv(out / f"{name}_smc.csv", rows)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    """Rows written by :func:`write_csv`, numbers as floats and switches as bools."""
    if not path.is_file():
        raise SystemExit(f"--reuse needs {path} from an earlier run; run without --reuse first")

    def value(text: str):
        if text in ("True", "False", ""):
            return {"True": True, "False": False, "": None}[text]
        try:
            return float(text)
        except ValueError:
            return text
    with open(path, newline="") as file:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(file)]


def kept(rows: list[dict], columns: tuple[str, ...]) -> dict:
    """The row with the lowest mean over ``columns`` of its l2 divided by the column's best."""
    column_best = {column: min(row[column] for row in rows) for column in columns}
    return min(rows, key=lambda row: sum(row[column] / column_best[column] for column in columns))


def write_table(path: Path, title: str, header: list[str], cells: list[list[str]], kept_row: int) -> None:
    """A Markdown table of the options, the kept one marked, written to ``path`` and printed."""
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" + (" **kept**" if index == kept_row else "")
              for index, row in enumerate(cells)]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


rows = read_csv(out / f"{name}.csv") if "--reuse" in sys.argv else measure()
best = kept(rows, ("one_pass", "best_of_10", "guided_smc_10"))
write_table(out / f"{name}.md", f"{name} on {len(targets)} validation targets (mean l2)",
            ["greedy first pass", "temperature", "one pass", "best of 10", "guided SMC, 10 passes' renders"],
            [["yes" if row["greedy_first"] else "no", f"{row['temperature']:g}", f"{row['one_pass']:.5f}",
              f"{row['best_of_10']:.5f}", f"{row['guided_smc_10']:.5f}"] for row in rows], rows.index(best))

agent.decoding = dataclasses.replace(agent.decoding, greedy_first=best["greedy_first"], temperature=best["temperature"])
smc_rows = read_csv(out / f"{name}_smc.csv") if "--reuse" in sys.argv else measure_smc()
best_smc = kept(smc_rows, ("smc_10", "smc_100_first_64"))
write_table(out / f"{name}_smc.md",
            f"{name}: guided SMC's intermediate targets at the kept decoding (mean l2; {len(targets)} validation "
            "targets at 10 passes' renders, the first 64 at 100 passes')",
            ["intermediate", "tempering (first exponent)", "10 passes' renders", "100 passes' renders"],
            [[row["intermediate"], "none" if row["tempering"] is None else f"{row['tempering']:g}",
              f"{row['smc_10']:.5f}", f"{row['smc_100_first_64']:.5f}"] for row in smc_rows], smc_rows.index(best_smc))

if "--write" in sys.argv:
    agent.decoding = dataclasses.replace(agent.decoding, smc_intermediate=best_smc["intermediate"],
                                         smc_tempering=best_smc["tempering"])
    with resources.as_file(resources.files("spiral_ppl") / "pretrained" / f"{name}.pt") as path:
        agent.save(path, training_state=False)
        print(f"wrote {agent.decoding} into {path}")
