r"""Population-based training of SPIRAL agents on Ray Tune.

Ganin et al. (2018) train a population of learners and let population-based training
(PBT; Jaderberg et al. 2017) tune two hyper-parameters while they learn: the entropy cost
(in :math:`[2\cdot10^{-3}, 10^{-1}]`) and the policy's learning rate (in
:math:`[10^{-5}, 3\cdot10^{-4}]`). Every ``interval`` updates each member reports its
*fitness*; a member in the bottom quantile copies the weights, optimisers and replay buffer
of one in the top quantile (*exploit*, through a Tune checkpoint) and perturbs the copied
hyper-parameters by a factor of 0.8 or 1.2, or resamples them (*explore*), clipped to the
ranges above.

Fitness:

* a **conditional** agent: minus the mean l2 of one pass on held-out targets, comparable
  across members and what a reconstruction user wants;
* an **unconditional** agent: the mean score its own critic gives to its samples, as in
  the paper (each member has its own critic, so this is the critic's judgement, not an
  absolute measure).

Each member trains with :meth:`Spiral.fit <spiral_ppl.inference.Spiral.fit>`, locally in its
Tune trial (one CPU, or one GPU when ``gpus_per_member``) or with its own Ray rollout
workers (``backend=RayEpisodes(...)``; reserve their CPUs with ``cpus_per_member``).

Example (needs ``pip install spiral_ppl[distributed]``)::

    import spiral_ppl as sp
    from spiral_ppl.inference.spiral.pbt import population_based_training

    agent = sp.inference.Spiral(prog, config=sp.inference.SpiralConfig(reward={"kind": "l2"}))
    population = population_based_training(agent, digits, population=12, updates=20_000, interval=500,
                                           storage="runs/pbt")
    population.best_agent.save("best.pt")
    population.plot("runs/pbt/population.png")

Reference: Jaderberg et al., "Population Based Training of Neural Networks", 2017.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spiral_ppl import checks
from spiral_ppl.inference.spiral.distributed import import_ray
from spiral_ppl.inference.spiral.episodes import EpisodeSource
from spiral_ppl.inference.spiral.sources import split_held_out

import_ray()  # this module is Ray Tune through and through: say how to install it if it is missing
from ray import tune  # noqa: E402
from ray.tune.schedulers import PopulationBasedTraining  # noqa: E402

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral

#: The hyper-parameters PBT tunes and the ranges of Ganin et al. (2018).
SEARCH_SPACE = {"entropy_cost": (2e-3, 1e-1), "policy_lr": (1e-5, 3e-4)}
#: The configuration setting of each tuned hyper-parameter.
SETTINGS = {"entropy_cost": "a2c.entropy_cost", "policy_lr": "a2c.lr"}
CHECKPOINT_FILE = "agent.pt"


def fitness(agent: "Spiral", held_out: torch.Tensor) -> float:
    """PBT's fitness of ``agent``: minus the held-out l2 (conditional) or its critic's mean score of its samples.

    Runs one pass on ``held_out`` (for an unconditional agent, as many samples) without
    disturbing the training's random streams.
    """
    from spiral_ppl.programs.base import mean_squared_error

    images = agent.one_pass(held_out)
    if agent.conditional:
        return -float(mean_squared_error(images, held_out.to(agent.device)).mean())
    with torch.no_grad(), agent.learner.autocast():
        return float(agent.critic(images, None).float().mean())


def _clip(config: dict[str, Any]) -> dict[str, Any]:
    """PBT's explore step multiplies by 0.8 or 1.2: keep the results inside the paper's ranges."""
    for name, (low, high) in SEARCH_SPACE.items():
        config[name] = min(max(float(config[name]), low), high)
    return config


def _member(config: dict[str, Any], *, template: "Spiral", data: Any, held_out: torch.Tensor, updates: int,
            interval: int, backend: "str | EpisodeSource", threads: int) -> None:
    """One member of the population: a Tune trial that trains, reports fitness and checkpoints."""
    from spiral_ppl.inference.spiral.agent import Spiral

    torch.set_num_threads(threads)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # started from a checkpoint: a restart, or PBT's exploit of a better member
        with checkpoint.as_directory() as folder:
            agent = Spiral.load(Path(folder) / CHECKPOINT_FILE, prog=template.prog)
    else:
        torch.manual_seed(config["seed"])
        agent = copy.deepcopy(template)  # Tune may reuse this process for another member
    agent.set_hyperparameters({SETTINGS[name]: config[name] for name in SEARCH_SPACE})
    while agent.learner.updates < updates:
        steps = min(interval - agent.learner.updates % interval, updates - agent.learner.updates)
        history = agent.fit(data, steps, backend=backend, progress=False)
        score = fitness(agent, held_out)
        with tempfile.TemporaryDirectory() as folder:
            agent.save(Path(folder) / CHECKPOINT_FILE)
            tune.report(
                {"fitness": score, "update": agent.learner.updates, "entropy_cost": agent.config.a2c.entropy_cost,
                 "policy_lr": agent.config.a2c.lr, "train_l2": history[-1]["l2"],
                 "entropy": history[-1]["entropy"]},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


class MemberReports(tune.Callback):
    """Every member's reports, collected on the driver as they arrive (a member's own result
    files can lose rows when PBT restarts it from another member's checkpoint)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Record a member's fitness and hyper-parameters, for the population's plot."""
        member = int(trial.trial_id.rsplit("_", 1)[-1])  # Tune numbers its trials ..._00000, ..._00001
        self.rows.append({"member": member, "update": int(result["update"]), "fitness": float(result["fitness"]),
                          "entropy_cost": float(result["entropy_cost"]), "policy_lr": float(result["policy_lr"])})


@dataclass
class Population:
    """What :func:`population_based_training` returns."""

    best_agent: "Spiral"  #: the member with the highest final fitness, loaded from its last checkpoint
    best_hyperparameters: dict[str, float]
    history: list[dict[str, Any]]  #: one row per report: member, update, fitness, entropy_cost, policy_lr
    results: Any  #: Ray Tune's ``ResultGrid``, for anything else

    def plot(self, path: str | Path | None = None):
        """Fitness, entropy cost and learning rate of every member against updates."""
        from spiral_ppl.plots import plot_population

        return plot_population(self.history, path)


def population_based_training(
    agent: "Spiral",
    data: Any,
    *,
    updates: int,
    population: int = 4,
    interval: int = 100,
    storage: str | Path,
    name: str = "spiral-pbt",
    eval_data: Any = None,
    eval_size: int = 64,
    backend: "str | EpisodeSource" = "local",
    cpus_per_member: float = 1,
    gpus_per_member: float = 0,
    quantile_fraction: float = 0.25,
    seed: int = 0,
    keep_checkpoints: int | None = None,
    synchronous: bool = True,
    progress: bool = False,
) -> Population:
    """Train ``population`` copies of ``agent`` for ``updates`` updates each under PBT.

    :param agent: the template: its program, reward, conditioning and configuration (the
        entropy cost and policy learning rate are sampled per member from :data:`SEARCH_SPACE`).
    :param data: training images, as for :meth:`Spiral.fit`.
    :param interval: updates between fitness reports, exploits and checkpoints.
    :param storage: folder of Tune's results and checkpoints (resumable with Ray Tune's ``Tuner.restore``).
    :param eval_data: held-out targets of the fitness; by default the last ``eval_size``
        items of ``data``, which are then left out of training.
    :param quantile_fraction: share of the population that exploits, and that is copied.
    :param synchronous: every member waits at each ``interval`` until all have reported,
        then the bottom quantile exploits (reproducible; a slow member holds the others up).
        ``False``: members exploit whenever they report, against the scores known then.
    :param keep_checkpoints: checkpoints kept per member (``None``: all). An exploit copies
        a member's latest checkpoint, which must still exist: keep at least a few.
    """
    ray = import_ray()
    for label, value in (("updates", updates), ("population", population), ("interval", interval)):
        checks.positive_int(label, value)
    if population < 2:
        raise ValueError("population-based training needs a population of at least 2")
    if not 0 < quantile_fraction <= 0.5:
        raise ValueError(f"quantile_fraction must lie in (0, 0.5], got {quantile_fraction!r}")
    train, held_out = split_held_out(data, eval_data, eval_size, agent.prog.channels, agent.prog.image_size)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)

    search = {name_: tune.loguniform(low, high) for name_, (low, high) in SEARCH_SPACE.items()}
    generator = torch.Generator().manual_seed(seed)
    scheduler = PopulationBasedTraining(
        time_attr="update", metric="fitness", mode="max", perturbation_interval=interval,
        hyperparam_mutations=search, custom_explore_fn=_clip,
        # with a small population, the bottom quantile must hold at least one member
        quantile_fraction=max(quantile_fraction, 1 / population),
        synch=synchronous,
    )
    reports = MemberReports()
    trainable = tune.with_parameters(_member, template=agent, data=train, held_out=held_out, updates=updates,
                                     interval=interval, backend=backend, threads=max(1, int(cpus_per_member)))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_member, "gpu": gpus_per_member}),
        param_space={**search, "seed": tune.sample_from(lambda _: int(torch.randint(2**31, (), generator=generator)))},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=population),
        run_config=tune.RunConfig(name=name, storage_path=str(Path(storage).resolve()), verbose=1 if progress else 0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
                                  callbacks=[reports]),
    )
    with warnings.catch_warnings():
        # Tune suggests reusing trial processes; members that reused one lost their exploits
        # (the restored checkpoint never reached them), so each restart gets a fresh process.
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} PBT member(s) failed; first error: {results.errors[0]}")
    history = sorted(reports.rows, key=lambda row: (row["member"], row["update"]))
    best = results.get_best_result(metric="fitness", mode="max", scope="last")
    from spiral_ppl.inference.spiral.agent import Spiral

    with best.checkpoint.as_directory() as folder:
        best_agent = Spiral.load(Path(folder) / CHECKPOINT_FILE, prog=agent.prog, device=agent.device)
    hyperparameters = {name_: float(best.metrics[name_]) for name_ in SEARCH_SPACE}
    if not all(math.isfinite(value) for value in hyperparameters.values()):
        raise RuntimeError(f"the best member reported non-finite hyper-parameters {hyperparameters}")
    return Population(best_agent, hyperparameters, history, results)
