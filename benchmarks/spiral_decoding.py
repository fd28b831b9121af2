"""How a shipped SPIRAL agent should decode: greedy first pass, sampling temperature.

``python benchmarks/spiral_decoding.py AGENT OUT [TEMPERATURES] [--write]`` scores the
pretrained ``AGENT`` (``mnist-recon-cpu`` or ``scenes-recon-cpu``) on validation targets
that the head-to-head never uses, for each sampling temperature (comma-separated, default
1,0.5,0.35,0.25,0.15) with and without a greedy first pass: one pass, the best of 10
passes, and SMC with the agent's proposal (``agent.proposal``, which samples at the same
temperature) given as many renders as 10 passes. Writes ``OUT/AGENT.md`` and ``OUT/AGENT.csv``.

The decoding kept does well on all three: it has the lowest mean over the three columns
of its l2 divided by the column's best (so 1 would be best at everything). With ``--write``
it is saved into the package's checkpoint of ``AGENT`` (``Spiral.temperature`` and
``Spiral.greedy_first`` travel with the weights), so ``Spiral.pretrained`` and the
head-to-head use it. ``--reuse`` reads the measurements from ``OUT/AGENT.csv`` instead of
taking them again.

Validation targets: MNIST test digits 5,000..5,255 (the head-to-head inverts digits 0..99);
256 MUJOCO SCENES of seed 1 (the head-to-head's are of seed 12345).
"""

import csv
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
        agent.temperature = temperature
        guided_smc[temperature] = float(sp.inference.SMC(agent.proposal).infer(agent.prog, targets, ten_passes,
                                                                               seed=0).l2.mean())
    rows = []
    for greedy_first in (True, False):
        for temperature in temperatures:
            agent.greedy_first, agent.temperature = greedy_first, temperature
            result = agent.infer(agent.prog, targets, ten_passes, seed=0)
            rows.append({"greedy_first": greedy_first, "temperature": temperature,
                         "one_pass": float(result.curve.l2[0].mean()), "best_of_10": float(result.l2.mean()),
                         "guided_smc_10": guided_smc[temperature]})
            print(rows[-1], flush=True)
    with open(out / f"{name}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def measured() -> list[dict]:
    if not (out / f"{name}.csv").is_file():
        raise SystemExit(f"--reuse needs {out / f'{name}.csv'} from an earlier run; run without --reuse first")
    with open(out / f"{name}.csv", newline="") as file:
        return [{"greedy_first": row["greedy_first"] == "True", "temperature": float(row["temperature"]),
                 **{column: float(row[column]) for column in ("one_pass", "best_of_10", "guided_smc_10")}}
                for row in csv.DictReader(file)]


rows = measured() if "--reuse" in sys.argv else measure()
columns = ("one_pass", "best_of_10", "guided_smc_10")
column_best = {column: min(row[column] for row in rows) for column in columns}
best = min(rows, key=lambda row: sum(row[column] / column_best[column] for column in columns))
lines = [f"{name} on {len(targets)} validation targets (mean l2)", "",
         "| greedy first pass | temperature | one pass | best of 10 | guided SMC, 10 passes' renders |",
         "|---|---|---|---|---|"]
lines += [f"| {'yes' if row['greedy_first'] else 'no'} | {row['temperature']:g} | {row['one_pass']:.5f} | "
          f"{row['best_of_10']:.5f} | {row['guided_smc_10']:.5f} |" + (" **kept**" if row is best else "")
          for row in rows]
(out / f"{name}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))

if "--write" in sys.argv:
    agent.greedy_first, agent.temperature = best["greedy_first"], best["temperature"]
    with resources.as_file(resources.files("spiral_ppl") / "pretrained" / f"{name}.pt") as path:
        agent.save(path, training_state=False)
        print(f"wrote greedy_first={agent.greedy_first}, temperature={agent.temperature:g} into {path}")
