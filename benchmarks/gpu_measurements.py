"""Helpers of ``benchmarks/gpu_measurements.sh`` (the GPU figures of benchmarks/RESULTS.md).

Subcommands, writing JSON or reading it:

- ``brush-sweep``: strokes per second of the compiled Brush at 64x64 (grid 32, every stroke
  inked, as in ``bench_brush.py``) over a range of batches, timed per call with CUDA events
  (median of ``--calls`` calls after a warm-up), so the batch at which the GPU saturates
  shows. Each timed call is one ``Brush.step`` of the whole batch, launch overhead included,
  as a SPIRAL rollout pays it.
- ``brush-tiles``: the brush's tiled painting (the CPU's path) forced on ``--device``,
  against painting every pixel, on random inked strokes at several canvas sizes: the largest
  difference and, at its pixel, both paintings, the distance to the curve as the kernel
  computes it and in float64 from 100,001 points of the curve, the stroke's reach and
  whether the pixel's tile was chosen. Traces why the two differ on a GPU (they agree to
  1e-5 on the CPU), and times both.
- ``evaluate``: one greedy pass of a trained agent (``RUN/agent.pt``) on the first
  ``--digits`` MNIST test digits, with the blank canvas's l2 and, for reference, the shipped
  ``mnist-recon-cpu`` agent's one pass on the same digits.
- ``summary``: the tables of the JSON files above and the pytest-benchmark JSON files of
  ``bench_brush.py`` and ``bench_spiral.py``, printed as Markdown.

Run ``python benchmarks/gpu_measurements.py SUBCOMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import torch

import spiral_ppl as sp


def environment() -> dict:
    """The device and library versions the figures were measured with."""
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    return info


def _timed_step(brush, state, action, device: str) -> float:
    """Seconds of one ``brush.step``: CUDA events on a GPU, the host clock elsewhere."""
    if torch.device(device).type != "cuda":
        started = time.perf_counter()
        brush.step(state, action)
        return time.perf_counter() - started
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    brush.step(state, action)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000


def brush_sweep(batches: list[int], calls: int, device: str, eager_up_to: int) -> dict:
    """Strokes per second of ``Brush.step`` at each batch, compiled (and eager up to ``eager_up_to``)."""
    rows = []
    for compiled in (True, False):
        for batch in batches:
            if not compiled and batch > eager_up_to:
                continue  # eager keeps tens of (batch, 4096) float temporaries alive
            brush = sp.renderers.Brush(canvas_size=64, grid_size=32, compile=compiled)
            generator = torch.Generator().manual_seed(batch)
            action = {c.name: torch.randint(0, c.size, (batch,), generator=generator).to(device)
                      for c in brush.action_space}
            action["flag"].fill_(1)  # every stroke inked
            state = brush.initial_state(batch, device=device)
            started = time.perf_counter()
            canvas = brush.step(state, action).canvas  # compiles (dynamic shapes: once) and warms up
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            first_call = time.perf_counter() - started
            ink = float(canvas.mean())
            if not (0 < ink < 1) or not bool(torch.isfinite(canvas).all()):
                raise RuntimeError(f"batch {batch}: the canvases are not inked sensibly (mean {ink})")
            for _ in range(3):
                brush.step(state, action)
            times = [_timed_step(brush, state, action, device) for _ in range(calls)]
            median = statistics.median(times)
            # Fewest bytes: each canvas read once and written once (float32, 64x64).
            moved = batch * 2 * 4 * 64 * 64
            rows.append({"batch": batch, "compiled": compiled, "calls": calls, "median_ms": 1000 * median,
                         "min_ms": 1000 * min(times), "strokes_per_second": batch / median,
                         "canvas_bytes_per_second": moved / median, "first_call_s": first_call, "mean_ink": ink})
            print(f"brush b{batch:>7} {'compiled' if compiled else 'eager   '}: median {1000 * median:8.3f} ms "
                  f"({batch / median:>13,.0f} strokes/s; canvas traffic {moved / median / 1e12:.2f} TB/s); "
                  f"first call {first_call:.1f} s", flush=True)
            del state, canvas
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {"rows": rows, "compile_seconds": sp.compiling.compile_seconds()}


def _curve_distance_float64(start, control, end, x: float, y: float) -> float:
    """Distance from the pixel centre ``(x, y)`` to a quadratic Bezier curve, in float64 from
    100,001 of its points: the reference for the kernel's closed-form distance."""
    tau = torch.linspace(0, 1, 100_001, dtype=torch.float64)[:, None]
    start, control, end = (point.double().cpu()[None] for point in (start, control, end))
    points = (1 - tau) ** 2 * start + 2 * (1 - tau) * tau * control + tau**2 * end
    return float((points - torch.tensor([x, y], dtype=torch.float64)).norm(dim=1).min())


def brush_tiles(sizes: list[int], batch: int, device: str, calls: int) -> dict:
    """Tiled against every-pixel painting of the same strokes on ``device`` (see the module docstring)."""
    from spiral_ppl.renderers import brush as kernels

    rows = []
    for size in sizes:
        brush = sp.renderers.Brush(canvas_size=size, grid_size=min(32, size), compile=False)
        generator = torch.Generator().manual_seed(size)
        action = {c.name: torch.randint(0, c.size, (batch,), generator=generator) for c in brush.action_space}
        action["flag"].fill_(1)
        position = torch.randint(0, brush.grid_size**2, (batch,), generator=generator).to(device)
        stroke, _ = brush._stroke(position, action, torch.device(device))
        canvas = torch.zeros(batch, brush.channels, size, size, device=device)
        tiles = brush._tiles(torch.device(device))

        def every_pixel():
            return kernels._paint_every_pixel(canvas, None, *stroke, *brush._pixels(torch.device(device)))

        def tiled():
            near = kernels._tiles_near_strokes(*stroke[:6], tiles.first, tiles.last)
            stroke_of, tile_of = near.nonzero(as_tuple=True)
            return kernels._paint_tiles(canvas, None, stroke_of, tile_of, *stroke, tiles), near

        reference, (painted, near) = every_pixel(), tiled()
        difference = (painted - reference).abs()
        worst = int(difference.flatten().argmax())
        b, c, y, x = (int(i) for i in torch.unravel_index(torch.tensor(worst), difference.shape))
        start, control, end, radius, edge = (value[b] for value in stroke[:5])
        pixel_x, pixel_y = torch.tensor([float(x)], device=device), torch.tensor([float(y)], device=device)
        kernel_distance = float(kernels._stroke_distance(start[None], control[None], end[None], pixel_x, pixel_y))
        chosen = [tile for tile in range(near.shape[1]) if bool(near[b, tile])
                  and bool(((tiles.pixel_x[tile] == x) & (tiles.pixel_y[tile] == y)).any())]
        synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        seconds = {}
        for name, paint in (("every_pixel", every_pixel), ("tiles", tiled)):
            paint()
            times = []
            for _ in range(calls):
                synchronize()
                started = time.perf_counter()
                paint()
                synchronize()
                times.append(time.perf_counter() - started)
            seconds[name] = statistics.median(times)
        row = {"canvas_size": size, "batch": batch, "max_abs_difference": float(difference.max()),
               "pixels_differing_over_1e-5": int((difference > 1e-5).sum()),
               "worst": {"canvas": b, "channel": c, "x": x, "y": y, "every_pixel": float(reference[b, c, y, x]),
                         "tiles": float(painted[b, c, y, x]), "kernel_distance": kernel_distance,
                         "float64_distance": _curve_distance_float64(start, control, end, x, y),
                         "reach": float(radius + edge / 2), "tile_chosen": bool(chosen),
                         "start": start.tolist(), "control": control.tolist(), "end": end.tolist()},
               "strokes_per_second": {name: batch / value for name, value in seconds.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "device": device}


def evaluate(run: Path, digits: int, device: str, reference: str | None) -> dict:
    """One pass of ``run/agent.pt`` (and of the pretrained ``reference``) on MNIST test digits."""
    targets = sp.data.MNIST(split="test", image_size=64).images(range(digits))
    result = {"digits": f"MNIST test 0..{digits - 1}"}
    agents = {"trained": sp.inference.Spiral.load(run / "agent.pt", device=device)}
    if reference:
        agents[reference] = sp.inference.Spiral.pretrained(reference, device=device)
    for name, agent in agents.items():
        started = time.perf_counter()
        metrics = agent.evaluate(targets)
        seconds = time.perf_counter() - started
        result[name] = {**metrics, "ratio_to_blank": metrics["eval_l2"] / metrics["blank_l2"],
                        "strokes": agent.prog.steps, "train_seconds": agent.train_seconds, "eval_seconds": seconds}
        print(f"{name}: one pass l2 {metrics['eval_l2']:.4f} (blank {metrics['blank_l2']:.4f}, "
              f"{metrics['eval_l2'] / metrics['blank_l2']:.2f}x) with {agent.prog.steps} strokes after "
              f"{agent.train_seconds / 60:.1f} min of training", flush=True)
    if (run / "eval.csv").exists():  # agent.pt holds the weights alone; the update count is in the log
        with open(run / "eval.csv", newline="") as stream:
            result["trained"]["updates"] = int(list(csv.DictReader(stream))[-1]["update"])
    return result


def _benchmarks(path: Path, key: str) -> list[tuple[str, float, float, float]]:
    """(name, mean s, median s, rate) of a pytest-benchmark JSON file."""
    try:
        benchmarks = json.loads(path.read_text())["benchmarks"]
    except (OSError, ValueError, KeyError):  # not written, or empty when no benchmark ran
        return []
    rows = []
    for bench in benchmarks:
        stats = bench["stats"]
        rows.append((bench["param"], stats["mean"], stats["median"], bench["extra_info"].get(key, float("nan"))))
    return rows


def _benchmark_table(path: Path, key: str, rate: str, digits: int, title: str) -> list[str]:
    """Markdown lines of a pytest-benchmark JSON file: each case's mean and median time (ms,
    to ``digits`` decimals) and its rate ``extra_info[key]``; none when nothing was measured."""
    rows = _benchmarks(path, key)
    if not rows:
        return []
    table = [f"| {name} | {1000 * mean:.{digits}f} | {1000 * median:.{digits}f} | {value:,.0f} |"
             for name, mean, median, value in rows]
    return [title, "", f"| case | mean ms | median ms | {rate} |", "|---|---:|---:|---:|", *table, ""]


def summary(folder: Path) -> str:
    """Markdown tables of the measurements in ``folder``."""
    lines = []
    gpu = json.loads((folder / "gpu.json").read_text()) if (folder / "gpu.json").exists() else {}
    if "environment" in gpu:
        lines += [f"environment: {gpu['environment']}", ""]
    lines += _benchmark_table(folder / "brush.json", "strokes_per_second", "strokes / s", 3,
                              "bench_brush.py (mean of the rounds; strokes/s = batch / mean)")
    if "brush_sweep" in gpu:
        lines += ["brush sweep (CUDA events, median per call)", "",
                  "| batch | kernel | median ms | strokes / s | canvas TB/s |", "|---:|---|---:|---:|---:|"]
        lines += [f"| {row['batch']:,} | {'compiled' if row['compiled'] else 'eager'} | {row['median_ms']:.3f} | "
                  f"{row['strokes_per_second']:,.0f} | {row['canvas_bytes_per_second'] / 1e12:.2f} |"
                  for row in gpu["brush_sweep"]["rows"]]
        lines.append("")
    lines += _benchmark_table(folder / "spiral.json", "agent_steps_per_second", "agent steps / s", 1,
                              "bench_spiral.py (mean of 5 updates; agent steps/s = batch * 6 / mean)")
    if (folder / "eval.csv").exists():
        with open(folder / "eval.csv", newline="") as stream:
            rows = list(csv.DictReader(stream))
        lines += ["training: one pass l2 on the held-out digits (eval.csv)", "",
                  "| update | training s | eval_l2 | blank_l2 | ratio |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {row['update']} | {float(row['seconds']):.0f} | {float(row['eval_l2']):.4f} | "
                  f"{float(row['blank_l2']):.4f} | {float(row['eval_l2']) / float(row['blank_l2']):.2f} |"
                  for row in rows]
        lines.append("")
    if "final_eval" in gpu:
        lines += [f"final evaluation: {json.dumps(gpu['final_eval'])}", ""]
    return "\n".join(lines)


def _update_json(path: Path, key: str, value) -> None:
    content = json.loads(path.read_text()) if path.exists() else {}
    content[key] = value
    content["environment"] = environment()
    path.write_text(json.dumps(content, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("brush-sweep", help="strokes per second of the Brush over batches")
    sweep.add_argument("--batches", default="1024,4096,16384,65536,262144")
    sweep.add_argument("--calls", type=int, default=30, help="timed calls per batch")
    sweep.add_argument("--eager-up-to", type=int, default=65536, help="largest batch timed eagerly too")
    sweep.add_argument("--device", default="cuda")
    sweep.add_argument("--json", type=Path, required=True, help="JSON file to add the rows to (key brush_sweep)")
    traced = commands.add_parser("brush-tiles", help="tiled against every-pixel painting on one device")
    traced.add_argument("--sizes", default="16,64,128", help="canvas sizes, comma-separated")
    traced.add_argument("--batch", type=int, default=4096)
    traced.add_argument("--calls", type=int, default=10, help="timed calls of each painting")
    traced.add_argument("--device", default="cuda")
    traced.add_argument("--json", type=Path, required=True, help="JSON file to add the rows to (key brush_tiles)")
    final = commands.add_parser("evaluate", help="one pass of a trained agent on MNIST test digits")
    final.add_argument("run", type=Path, help="run folder of spiral-ppl train (holding agent.pt)")
    final.add_argument("--digits", type=int, default=1000)
    final.add_argument("--device", default="cuda")
    final.add_argument("--reference", default="mnist-recon-cpu", help="a shipped agent to evaluate too ('' for none)")
    final.add_argument("--json", type=Path, required=True, help="JSON file to add the result to (key final_eval)")
    tables = commands.add_parser("summary", help="Markdown tables of the measurements in a folder")
    tables.add_argument("folder", type=Path)
    options = parser.parse_args()
    if options.command == "brush-sweep":
        batches = [int(batch) for batch in options.batches.split(",")]
        _update_json(options.json, "brush_sweep", brush_sweep(batches, options.calls, options.device,
                                                              options.eager_up_to))
    elif options.command == "brush-tiles":
        sizes = [int(size) for size in options.sizes.split(",")]
        _update_json(options.json, "brush_tiles", brush_tiles(sizes, options.batch, options.device, options.calls))
    elif options.command == "evaluate":
        _update_json(options.json, "final_eval", evaluate(options.run, options.digits, options.device,
                                                          options.reference or None))
    else:
        print(summary(options.folder))


if __name__ == "__main__":
    main()
