"""Train the shipped MNIST SPIRAL agent, ``mnist-recon-cpu``, on the CPU, and record the run.

A CPU-sized version of the paper's MNIST reconstruction (the GPU run is the ``mnist-recon``
configuration): a 64x64 Brush with a 16x16 grid, 6 strokes, A2C with the l2 reward and
temporal credit assignment, a narrow network. Two additions to the paper's decoder make it
learn in minutes rather than stall: spatial location heads (``SpiralConfig.spatial_locations``:
where to put a stroke is read off the image at every cell) and the location readout
(``SpiralConfig.location_readout``: what follows a location sees the image there).
``PAPER_DECODER=1`` trains without them, the control.

Every ``EVAL_MINUTES`` (default 3) the agent draws one pass, sampled at temperature 1 and
greedy, on 256 test digits from index 5,000 (never the head-to-head's first 100). The best
is kept as ``OUT/mnist-recon-cpu.pt`` (greedy first pass if greedy was the lower), the last
with its training state as ``OUT/last.pt`` (``START=OUT/last.pt`` continues it, at
``POLICY_LR`` and ``ENTROPY_COST`` when given), the curve in ``OUT/points.json`` and
``OUT/spiral_mnist_cpu_curve.png``.

A continued agent can also be grown (benchmarks/RESULTS.md, issue 8, session "sixth"):
``POLICY_CHANNELS`` above its own widens the policy (:meth:`Spiral.widened`, acting the same
until trained); ``SPATIAL_HEAD_BLOCKS`` adds residual blocks to the spatial location heads
(each starting as the identity); ``LSTM_INPUT_NORM=1`` inserts the layer norm before the
LSTM (``SpiralConfig.lstm_input_norm``), and ``RESET_LSTM=1`` re-initialises the LSTM and the
value head (a saturated LSTM has no gradient to leave saturation by); these two change what
the policy does until it is retrained. ``STEPS`` (default 6) sets the program's strokes; a
continued agent with another count is re-targeted to it (:meth:`Spiral.retargeted`: the
policy runs for any number of strokes, though it overdraws at first).

``SLEEP_MINUTES`` > 0 first teaches the policy to invert the brush on synthetic pen strokes
(behaviour cloning of programs drawn from :func:`pen_programs`, rendered by the program's own
brush, so every label is exact): the "sleep" phase of the wake-sleep algorithm (Hinton et
al. 1995), or inference compilation (Le, Baydin and Wood 2017) with a hand-written prior
over digit-like programs. It was measured to be slower than A2C from scratch
(benchmarks/RESULTS.md, issue 8) and is off by default.

``SELF_IMITATION_MINUTES`` > 0 ends the run with expert iteration (Anthony, Tian and Barber
2017) in which the expert is the agent's own search: each round draws ``SELF_DIGITS`` training
digits, reconstructs each by the best of ``SELF_PASSES`` passes (the greedy one and sampled
ones), and runs ``SELF_UPDATES`` behaviour-cloning updates towards those best programs. One
pass is thereby taught what the best of many passes finds; this is the cross-entropy method
with an amortized policy, and it needs no reward model beyond the l2 the passes are ranked by.
``ROLL_IN=1`` labels the states the greedy pass reaches instead: each candidate pass follows
the greedy one for a random number of steps before sampling (measured not to help; RESULTS,
issue 8, session "seventh"). ``TEACHER=agent.pt`` takes the labels from that fixed agent's
passes instead of the learner's own (distillation, for a grown agent that starts out worse
than the agent it was grown from).
The curve's training time counts the updates only, not these search passes (about as long
again with the defaults). The shipped agent's chain of runs is in its model card.

Run: ``SPIRAL_PPL_DATA=../shared/data .venv/bin/python benchmarks/spiral_mnist_cpu.py OUT [minutes]``
"""

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral.policy import sample_categorical
from spiral_ppl.inference.spiral.rollout import rollout
from spiral_ppl.programs.base import mean_squared_error
from spiral_ppl.plots import reconstruction_grid, training_curve

out = Path(sys.argv[1])
minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
sleep_minutes = float(os.environ.get("SLEEP_MINUTES", "0"))
self_imitation_minutes = float(os.environ.get("SELF_IMITATION_MINUTES", "0"))
self_passes, self_digits, self_updates = (int(os.environ.get(name, default)) for name, default in
                                          (("SELF_PASSES", "10"), ("SELF_DIGITS", "128"), ("SELF_UPDATES", "16")))
if min(self_passes, self_digits, self_updates) < 1:  # 0 passes or digits would fail deep in a round
    raise SystemExit(f"SELF_PASSES, SELF_DIGITS and SELF_UPDATES must be positive, got {self_passes}, "
                     f"{self_digits} and {self_updates}")
roll_in = os.environ.get("ROLL_IN") == "1"
if roll_in and "TEACHER" in os.environ:
    raise SystemExit("ROLL_IN=1 rolls in with the learner's own greedy pass; it takes no TEACHER")
eval_minutes = float(os.environ.get("EVAL_MINUTES", "3"))
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # a shared 2-core machine

root = Path(os.environ.get("SPIRAL_PPL_DATA", "../shared/data")) / "mnist"
train = sp.data.MNIST(root, split="train")
held_out = sp.data.MNIST(root, split="test").images(range(5000, 5256))
prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=64, grid_size=16),
                                steps=int(os.environ.get("STEPS", "6")))
paper_decoder = os.environ.get("PAPER_DECODER", "0") == "1"
config = sp.inference.SpiralConfig(
    batch_size=32, policy_channels=int(os.environ.get("POLICY_CHANNELS", "16")), res_blocks=2, lstm_size=128,
    location_channels=16, policy_lr=1e-3, entropy_cost=0.01, reward_scale=10.0, temporal_rewards=True,
    spatial_locations=not paper_decoder, location_readout=not paper_decoder,
)
if "START" in os.environ:
    if "PAPER_DECODER" in os.environ:  # a saved agent keeps its own decoder
        raise SystemExit("PAPER_DECODER shapes a new agent and cannot change the one START continues; unset it")
    agent = sp.inference.Spiral.load(os.environ["START"], device="cpu")
    if agent.prog.steps != prog.steps:
        agent = agent.retargeted(prog)
    if "POLICY_CHANNELS" in os.environ:  # go on with a wider policy that starts out acting the same
        agent = agent.widened(int(os.environ["POLICY_CHANNELS"]))
    grown = {}  # layers added to a trained network; every other weight is kept
    if os.environ.get("LSTM_INPUT_NORM") == "1" and not agent.config.lstm_input_norm:
        grown["lstm_input_norm"] = True  # the LSTM's input changes
    if int(os.environ.get("SPATIAL_HEAD_BLOCKS", "0")) > agent.config.spatial_head_blocks:
        grown["spatial_head_blocks"] = int(os.environ["SPATIAL_HEAD_BLOCKS"])  # identity blocks: no change
    if grown:
        bigger = sp.inference.Spiral(prog, reward="l2", device="cpu", greedy_first=agent.greedy_first,
                                     config=dataclasses.replace(agent.config, **grown))
        missing, unexpected = bigger.policy.load_state_dict(agent.policy.state_dict(), strict=False)
        assert not unexpected and all(key.startswith(("fc_norm.", "spatial_heads.")) for key in missing)
        bigger.learner.updates, bigger.train_seconds = agent.learner.updates, agent.train_seconds
        agent = bigger
    if os.environ.get("RESET_LSTM") == "1":  # a saturated LSTM has no gradient to leave saturation by
        agent.policy.lstm.reset_parameters()
        agent.policy.value_head.reset_parameters()
else:
    agent = sp.inference.Spiral(prog, reward="l2", config=config, device="cpu")
teacher = sp.inference.Spiral.load(os.environ["TEACHER"], device="cpu") if "TEACHER" in os.environ else None
for name in ("policy_lr", "entropy_cost"):  # e.g. to continue a run at a lower rate
    if name.upper() in os.environ:
        agent.set_hyperparameters(**{name: float(os.environ[name.upper()])})
grid = prog.renderer.grid_size
low, high = 2, grid - 3  # where MNIST's centred digits put their ink, in grid cells


def pen_programs(count: int, steps: int = prog.steps) -> dict[str, torch.Tensor]:
    """Digit-like programs for the sleep phase, on the 16x16 grid, each in canonical form.

    A jump to a start point in the digit box, then 2 to 5 connected quadratic strokes of one
    pen (width and pressure drawn once per digit, mostly opaque), each 3 to 9 cells long,
    turning smoothly or sharply, with a pen lift (a second jump) now and then. The labels
    can be read off the image: a jump's control point is its end point and its size and
    pressure are 0, unused steps at the end are jumps in place, and paths are written from
    their upper end (:func:`upper_end_first`).
    """
    def uniform(lowest, highest):
        return torch.randint(lowest, highest + 1, (count,))

    pen_size = torch.where(torch.rand(count) < 0.75, uniform(2, 3), uniform(1, 4))
    pen_pressure = torch.where(torch.rand(count) < 0.8, torch.full((count,), 9), uniform(5, 9))
    strokes = uniform(2, steps - 1)
    x, y = uniform(low, high), uniform(low, high)
    heading = torch.rand(count) * 2 * math.pi
    actions = {name: torch.zeros(count, steps, dtype=torch.long) for name in
               ("flag", "end_point", "control_point", "brush_size", "pressure")}
    drawn = torch.zeros(count, dtype=torch.long)
    for t in range(steps):
        lift = (t > 1) & (torch.rand(count) < 0.12) & (drawn < strokes)
        jump = torch.full((count,), t == 0) | lift
        draw = ~jump & (drawn < strokes)
        turn = torch.where(torch.rand(count) < 0.6, torch.randn(count) * 1.2, torch.rand(count) * 2 * math.pi)
        heading = heading + turn
        length = uniform(3, 9).float()
        stroke_x = (x + length * torch.cos(heading)).round().long().clamp(low - 1, high + 1)
        stroke_y = (y + length * torch.sin(heading)).round().long().clamp(low - 1, high + 1)
        next_x = torch.where(jump, uniform(low, high), torch.where(draw, stroke_x, x))
        next_y = torch.where(jump, uniform(low, high), torch.where(draw, stroke_y, y))
        # The control point: the chord's midpoint pushed sideways by up to 5 cells.
        bend = uniform(-5, 5).float() * (torch.rand(count) < 0.8)
        chord_x, chord_y = (next_x - x).float(), (next_y - y).float()
        chord = (chord_x**2 + chord_y**2).sqrt().clamp_min(1)
        control_x = ((x + next_x) / 2 - bend * chord_y / chord).round().long().clamp(0, grid - 1)
        control_y = ((y + next_y) / 2 + bend * chord_x / chord).round().long().clamp(0, grid - 1)
        end = next_y * grid + next_x
        actions["flag"][:, t] = draw.long()
        actions["end_point"][:, t] = end
        actions["control_point"][:, t] = torch.where(draw, control_y * grid + control_x, end)
        actions["brush_size"][:, t] = torch.where(draw, pen_size, 0)
        actions["pressure"][:, t] = torch.where(draw, pen_pressure, 0)
        drawn = drawn + draw.long()
        x, y = next_x, next_y
    return upper_end_first(actions)


def upper_end_first(programs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same drawings, each pen-down path written from its upper end and the paths from the
    uppermost start down, so that an image has one program (a path read backwards draws the
    same ink: the stroke from a to b through c is the stroke from b to a through c)."""
    count, steps = programs["flag"].shape
    result = {name: torch.zeros_like(value) for name, value in programs.items()}
    for row in range(count):
        paths, position = [], 0  # each path: its start, then (end, control, size, pressure) per stroke
        for t in range(steps):
            end = int(programs["end_point"][row, t])
            if programs["flag"][row, t]:
                paths[-1].append((end, int(programs["control_point"][row, t]),
                                  int(programs["brush_size"][row, t]), int(programs["pressure"][row, t])))
            elif end != position:
                paths.append([end])
            position = end
        ordered = []
        for path in filter(lambda path: len(path) > 1, paths):  # a jump that draws nothing is dropped
            points = [path[0]] + [stroke[0] for stroke in path[1:]]
            if (points[-1] // grid, points[-1] % grid) < (points[0] // grid, points[0] % grid):
                path = [points[-1]] + [(points[i], *path[i + 1][1:]) for i in range(len(path) - 2, -1, -1)]
            ordered.append(path)
        ordered.sort(key=lambda path: (path[0] // grid, path[0] % grid))
        slot, position = 0, 0  # the brush starts at grid point 0
        for path in ordered:
            if path[0] != position:  # (a path that starts where the last one ended needs no jump)
                result["end_point"][row, slot] = result["control_point"][row, slot] = position = path[0]
                slot += 1
            for end, control, size, pressure in path[1:]:
                result["flag"][row, slot], result["end_point"][row, slot] = 1, end
                result["control_point"][row, slot], result["brush_size"][row, slot] = control, size
                result["pressure"][row, slot] = pressure
                position, slot = end, slot + 1
        result["end_point"][row, slot:] = result["control_point"][row, slot:] = position
    return result


def greedy_until(switch: torch.Tensor):
    """A chooser that decodes row ``i`` greedily before step ``switch[i]`` and samples from then on."""
    def choose(t: int, component, logits: torch.Tensor) -> torch.Tensor:
        return torch.where(t < switch, logits.argmax(-1), sample_categorical(component, logits))
    return choose


def rolled_in_best(digits: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The best of ``self_passes`` passes that follow the greedy pass for a random number of
    steps (0 to T-1, one per digit) and sample the rest; the greedy pass is a candidate too.

    Behaviour cloning of whole sampled passes teaches the policy from the states sampled
    passes reach; at test time the greedy pass reaches others. Rolling in greedily (DAgger's
    roll-in with the learner, Ross, Gordon and Bagnell 2011) labels the states one pass
    actually visits with what search finds from there."""
    count, steps = digits.shape[0], prog.steps
    switch = torch.randint(steps, (count,), generator=generator).repeat(self_passes)
    switch[:count] = steps  # the first copy of every digit is the greedy pass
    with torch.no_grad():
        episode = rollout(agent.policy, prog, count * self_passes, digits.repeat(self_passes, 1, 1, 1),
                          choose=greedy_until(switch))
    l2 = mean_squared_error(episode.final.float(), digits.repeat(self_passes, 1, 1, 1)).view(self_passes, count)
    best = l2.argmin(0) * count + torch.arange(count)
    return {name: value[best] for name, value in episode.actions.items()}


def best_of_passes() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training digits and the best program of ``self_passes`` passes (the agent's own, or
    the teacher's) on each: the labels of one round of self-imitation."""
    seed = agent.learner.updates  # a new draw every round, also when a run is continued
    generator = torch.Generator().manual_seed(seed)
    digits = train.images(torch.randint(len(train), (self_digits,), generator=generator).tolist())
    if roll_in:
        return digits, rolled_in_best(digits, generator)
    expert = agent if teacher is None else teacher
    expert.temperature, expert.greedy_first = 1.0, True  # the greedy pass is a candidate too
    search = expert.infer(prog, digits, sp.Budget(renders=self_passes * prog.steps), seed=seed)
    return digits, search.actions


points, best, self_rounds = [], float("inf"), 0


def evaluate(phase: str) -> None:
    """One pass on the held-out digits, sampled and greedy; keep the best agent."""
    global best
    scores = {}
    for decoding, greedy in (("sampled", False), ("greedy", True)):
        agent.temperature, agent.greedy_first = 1.0, greedy
        scores[decoding] = float(agent.infer(prog, held_out, sp.Budget(renders=prog.steps), seed=0).l2.mean())
    point = (agent.train_seconds, agent.learner.updates, min(scores.values()), phase, scores)
    points.append(point)
    print(f"{point[0]:7.1f}s  update {point[1]:5d}  held-out l2 sampled {scores['sampled']:.4f} "
          f"greedy {scores['greedy']:.4f}  ({phase})", flush=True)
    if point[2] < best:
        best = point[2]
        agent.greedy_first = scores["greedy"] < scores["sampled"]
        agent.save(out / "mnist-recon-cpu.pt", training_state=False)
    agent.save(out / "last.pt")
    (out / "points.json").write_text(json.dumps(points))


evaluate("start")
for phase, phase_minutes in (("sleep", sleep_minutes), ("A2C", minutes), ("self-imitation", self_imitation_minutes)):
    started = time.perf_counter()
    while time.perf_counter() - started < 60 * phase_minutes:
        chunk_started = time.perf_counter()
        while time.perf_counter() - chunk_started < 60 * eval_minutes:
            if phase == "sleep":
                programs = pen_programs(25 * agent.config.batch_size)
                agent.imitate((prog.render(programs), programs), 25, progress=False)
            elif phase == "self-imitation":
                agent.imitate(best_of_passes(), self_updates, progress=False)
                self_rounds += 1
            else:
                agent.fit(train, 10, progress=False)
        evaluate(phase)

agent = sp.inference.Spiral.load(out / "mnist-recon-cpu.pt", device="cpu")
test = sp.data.MNIST(root, split="test").images(range(1000))
one_pass = agent.evaluate(test)
best_of_10 = agent.infer(prog, test[:256], sp.Budget(renders=10 * prog.steps), seed=0)
best_point = min(points, key=lambda point: point[2])
summary = {
    "config": dataclasses.asdict(agent.config),
    "sleep_minutes": sleep_minutes,
    "self_imitation": {"minutes": self_imitation_minutes, "passes": self_passes, "digits": self_digits,
                       "updates": self_updates, "rounds": self_rounds},
    "updates_of_best": best_point[1],
    "train_seconds_of_best": best_point[0],
    "greedy_first": agent.greedy_first,
    "test_l2_one_pass_first_1000": one_pass["eval_l2"],
    "blank_l2": one_pass["blank_l2"],
    "test_l2_best_of_10_first_256": float(best_of_10.l2.mean()),
    "points": points,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
training_curve([point[:3] for point in points], out / "spiral_mnist_cpu_curve.png",
               baselines={"blank canvas": one_pass["blank_l2"]},
               title=f"Conditional SPIRAL on MNIST, 64x64, {prog.steps} strokes, CPU",
               xlabel="training time (minutes, 1 CPU thread)", ylabel="held-out l2, one pass (256 test digits)")
reconstruction_grid(test[:10], {"one pass": agent.one_pass(test[:10]), "best of 10": best_of_10.images[:10]},
                    out / "spiral_mnist_cpu_samples.png")
print(json.dumps({k: v for k, v in summary.items() if k not in ("points", "config")}, indent=1))
