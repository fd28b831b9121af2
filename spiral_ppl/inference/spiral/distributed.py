r"""Training a SPIRAL agent with rollout workers on Ray: ``agent.fit(data, steps, backend="ray")``.

Ganin et al. (2018) train each learner with 64 CPU actors that render episodes while the
learner, on GPUs, updates the policy and the critic. This module does the same on Ray:

* each **rollout worker** is a Ray actor holding its own copy of the program (the renderer
  runs there: MuJoCo, libmypaint or the brush on the worker's CPU) and of the policy; a
  *task* asks it for ``episodes_per_task`` episodes with the weights of a given version,
  and it sends back the actions, their log-probabilities under those weights
  (:math:`\log\mu`), the canvases it drew and the final renders;
* the **learner** (the driver process, on the agent's device, a GPU when there is one)
  gathers ``batch_size`` episodes, replays the recorded canvases through its current weights
  (:func:`~spiral_ppl.inference.spiral.rollout.replay`, no rendering) to get
  :math:`\log\pi`, the entropies and the values, corrects for the lag between the two
  policies with V-trace (:mod:`~spiral_ppl.inference.spiral.vtrace`), takes the A2C step,
  puts the final renders in the replay buffer and trains the critic on it
  (:mod:`~spiral_ppl.inference.spiral.training`);
* a worker that returns gets its next task at once, with the newest weights, so workers
  never wait for the learner: their episodes are up to ``workers`` versions behind, which
  is what V-trace is for.

**Nothing is lost or done twice.** The driver draws each task's targets and seed and keeps
the task until its episodes are consumed. When a worker dies (its process killed, its
node gone), Ray restarts the actor (up to ``max_restarts`` times) and the driver sends the
*same* task again, so every update consumes exactly ``batch_size`` episodes from tasks
that were each consumed once. :attr:`RayEpisodes.ledger` records which tasks fed which
update.

**Local mode and clusters.** With no cluster, the first ``fit`` starts Ray on this machine
(``ray.init()``); the workers are then processes here. On a cluster started with
``ray start --head`` (and ``ray start --address=HEAD:6379`` on the other nodes, each with
``spiral_ppl`` installed), pass ``RayEpisodes(address="auto")`` or call
``ray.init(address="auto")`` before ``fit``; workers are placed wherever CPUs are free.
A resumed run (``Spiral.load`` then ``fit``) continues from the checkpoint's weights,
optimisers and replay buffer; unlike the local backend it is not bit-for-bit reproducible,
because episodes arrive in whatever order the workers finish.

Example (needs ``pip install spiral_ppl[distributed]``)::

    import spiral_ppl as sp
    from spiral_ppl.inference.spiral import RayEpisodes

    prog = sp.programs.SceneProgram(sp.renderers.MujocoScene(), steps=10)
    agent = sp.inference.Spiral(prog, config=sp.inference.SpiralConfig(reward={"kind": "l2"}))
    agent.fit(scenes, steps=10_000, backend=RayEpisodes(workers=16))

Reference: Espeholt et al., "IMPALA", ICML 2018 (actors, learner and V-trace).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from spiral_ppl import checks
from spiral_ppl.inference.spiral.episodes import EpisodeBatch, EpisodeSource
from spiral_ppl.inference.spiral.policy import Policy
from spiral_ppl.inference.spiral.rollout import replay, rollout
from spiral_ppl.programs.base import Program

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral
    from spiral_ppl.inference.spiral.sources import ImageSource


def import_ray():
    """Ray, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray backend needs Ray: pip install 'spiral_ppl[distributed]' (or pip install 'ray[tune]'); "
            "everything else in spiral_ppl works without it"
        ) from None
    return ray


@dataclass(frozen=True)
class RolloutTask:
    """What the driver asks one worker for; kept until consumed so that it can be re-sent."""

    task_id: int
    seed: int  #: seeds the worker's sampling, so a re-sent task draws afresh but reproducibly
    episodes: int
    targets: torch.Tensor | None  #: ``(episodes, C, H, W)`` of a conditional agent
    version: int  #: the learner's update count when the weights sent with the task were taken


@dataclass
class Trajectory:
    """A worker's answer to a task: everything the learner needs, on the CPU."""

    task: RolloutTask
    actions: dict[str, torch.Tensor]  #: ``{name: LongTensor[B, T]}``
    behaviour_log_probs: torch.Tensor  #: ``(B, T)`` :math:`\log\mu(a_t \mid x_t)` under the task's weights
    canvases: list[torch.Tensor | None]  #: ``x_1 .. x_T`` as :func:`rollout` drew them
    noise: torch.Tensor | None
    renders: int  #: renderer calls the worker spent
    worker_pid: int


class RolloutWorker:
    """Renders episodes of a policy on its own copy of the program (a Ray actor's body).

    :param prog: the program (pickled to the worker; its renderer opens its resources there).
    :param policy_arguments: what :class:`Policy` is built from.
    :param threads: torch threads of this worker (1: workers share the machine's cores).
    """

    def __init__(self, prog: Program, policy_arguments: dict[str, Any], *, blind: bool, observe_all: bool,
                 threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.prog, self.blind, self.observe_all = prog, blind, observe_all
        self.policy = Policy(**policy_arguments).eval()
        self.version = -1

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, task: RolloutTask, weights: list) -> Trajectory:
        """Episodes of ``task`` with the weights in ``weights[0]`` (an object reference, fetched only when new)."""
        if task.version != self.version:
            import ray

            self.policy.load_state_dict(ray.get(weights[0]))
            self.version = task.version
        torch.manual_seed(task.seed)
        renders_before = self.prog.renders
        with torch.no_grad():
            episode = rollout(self.policy, self.prog, task.episodes, task.targets, blind=self.blind,
                              observe_all=self.observe_all, device="cpu")
        return Trajectory(task, episode.actions, episode.log_probs, episode.canvases, episode.noise,
                          self.prog.renders - renders_before, os.getpid())


@dataclass
class Ledger:
    """Which tasks fed which update, and what went wrong on the way."""

    submitted: int = 0  #: tasks created
    consumed: list[list[int]] = field(default_factory=list)  #: task ids of each update, in order
    resent: list[int] = field(default_factory=list)  #: task ids sent again after their worker died (once each)
    in_flight: list[int] = field(default_factory=list)  #: task ids still out when training stopped
    worker_pids: set[int] = field(default_factory=set)  #: processes that returned episodes (a restart adds one)


class RayEpisodes(EpisodeSource):
    """Episodes from rollout workers on Ray, for :meth:`Spiral.fit <spiral_ppl.inference.Spiral.fit>`.

    :param workers: number of rollout workers (Ray actors).
    :param episodes_per_task: episodes per request to a worker; must divide the agent's
        ``batch_size`` (default: ``batch_size / workers`` rounded down to a divisor).
    :param worker_cpus: CPUs Ray reserves for each worker.
    :param max_restarts: times Ray restarts a dead worker before training stops with an error.
    :param restart_timeout: seconds a restarting worker may stay unavailable before training
        stops with an error (a node that never comes back).
    :param address: the Ray cluster to join when Ray is not yet initialised (``"auto"``,
        ``"ray://host:10001"``, ...); ``None`` starts Ray on this machine (or joins the
        cluster named by ``RAY_ADDRESS``).
    """

    def __init__(self, workers: int = 2, *, episodes_per_task: int | None = None, worker_cpus: float = 1.0,
                 max_restarts: int = 3, restart_timeout: float = 300.0, address: str | None = None) -> None:
        checks.positive_int("workers", workers)
        checks.optional_positive_int("episodes_per_task", episodes_per_task)
        checks.positive_number("worker_cpus", worker_cpus)
        checks.non_negative_int("max_restarts", max_restarts)
        checks.positive_number("restart_timeout", restart_timeout, hint="seconds")
        self.workers, self.episodes_per_task = workers, episodes_per_task
        self.worker_cpus, self.max_restarts, self.address = worker_cpus, max_restarts, address
        self.restart_timeout = float(restart_timeout)
        self.ledger = Ledger()
        self._actors: list = []

    def __repr__(self) -> str:
        return f"RayEpisodes(workers={self.workers}, episodes_per_task={self.episodes_per_task})"

    def task_size(self, batch_size: int) -> int:
        """Episodes per task for a learner batch of ``batch_size``."""
        if self.episodes_per_task is not None:
            if batch_size % self.episodes_per_task:
                raise ValueError(f"episodes_per_task={self.episodes_per_task} must divide the agent's batch_size "
                                 f"({batch_size}), so that every update consumes whole tasks")
            return self.episodes_per_task
        size = max(1, batch_size // self.workers)
        while batch_size % size:
            size -= 1
        return size

    # -- one training run ----------------------------------------------------------------------

    def start(self, agent: "Spiral", images: "ImageSource") -> None:
        """Start the workers for ``agent`` and send each its first task."""
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.agent, self.images = agent, images
        self.episodes = self.task_size(agent.config.a2c.batch_size)
        self.ledger = Ledger()
        self._actors = spawn_workers(agent, self.workers, cpus=self.worker_cpus, max_restarts=self.max_restarts,
                                     observe_all=agent.config.reward.temporal)
        self._failures = [0] * self.workers
        self._unavailable_since: list[float | None] = [None] * self.workers
        self._pending: dict[Any, tuple[int, RolloutTask]] = {}
        self._publish()
        for worker in range(self.workers):
            self._send(worker, self._new_task())

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (to watch them, or to kill one in a test)."""
        ray = import_ray()
        return ray.get([actor.pid.remote() for actor in self._actors])

    def next_batch(self) -> EpisodeBatch:
        """Gather ``batch_size`` episodes from the workers and re-score them with the current weights."""
        ray = import_ray()
        agent = self.agent
        if self._version != agent.learner.updates:
            self._publish()  # tasks sent from now on carry the weights of the last update
        needed = agent.config.a2c.batch_size // self.episodes  # tasks per update
        waited = time.perf_counter()
        batch: list[Trajectory] = []
        while len(batch) < needed:
            [reference], _ = ray.wait(list(self._pending), num_returns=1)
            worker, task = self._pending.pop(reference)
            try:
                trajectory = ray.get(reference)
            except FloatingPointError as error:  # Ray re-raises the worker's error as an instance of it
                raise agent.learner.diverged(error) from None
            except ray.exceptions.ActorUnavailableError as error:
                # Ray is restarting the worker: give it a moment, then send the same task again.
                self._worker_unavailable(worker, error)
                self._resend(worker, task)
                continue
            except ray.exceptions.RayActorError as error:
                self._worker_died(worker, task, error)
                continue
            batch.append(trajectory)
            self._unavailable_since[worker] = None
            self.ledger.worker_pids.add(trajectory.worker_pid)
            self._send(worker, self._new_task())  # at once, with the newest weights: workers never wait
        waited = time.perf_counter() - waited
        self.ledger.consumed.append([trajectory.task.task_id for trajectory in batch])

        targets = None
        if agent.conditional:
            targets = torch.cat([trajectory.task.targets for trajectory in batch]).to(agent.device)
        actions = {name: torch.cat([t.actions[name] for t in batch]) for name in batch[0].actions}
        canvases = [None if batch[0].canvases[step] is None else torch.cat([t.canvases[step] for t in batch])
                    for step in range(agent.prog.steps)]
        noise = torch.cat([t.noise for t in batch]).to(agent.device) if batch[0].noise is not None else None
        behaviour = torch.cat([t.behaviour_log_probs for t in batch])
        lag = sum(agent.learner.updates - t.task.version for t in batch) / len(batch)
        with agent.learner.autocast():
            episode = replay(agent.policy, actions, canvases, targets, noise, blind=agent.blind)
        renders = sum(t.renders for t in batch)
        agent.prog.meter.charge(renders)  # the workers' copies of the program did the rendering
        metrics = {"policy_lag": lag, "renders": float(renders), "learner_wait_seconds": waited,
                   "worker_restarts": float(max(0, len(self.ledger.worker_pids) - self.workers))}
        return EpisodeBatch(episode, targets, behaviour, metrics)

    def close(self) -> None:
        """Stop the workers (Ray itself stays up for the next run); record unfinished tasks."""
        if not self._actors:
            return
        ray = import_ray()
        self.ledger.in_flight = sorted(task.task_id for _, task in self._pending.values())
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors, self._pending = [], {}

    # -- helpers -----------------------------------------------------------------------------

    def _new_task(self) -> RolloutTask:
        targets = self.images.batch(self.episodes) if self.agent.conditional else None
        task = RolloutTask(self.ledger.submitted, int(torch.randint(2**62, ())), self.episodes, targets,
                           self._version)
        self.ledger.submitted += 1
        return task

    def _send(self, worker: int, task: RolloutTask) -> None:
        if task.version != self._version:  # a re-sent task goes out with the current weights
            task = RolloutTask(task.task_id, task.seed, task.episodes, task.targets, self._version)
        reference = self._actors[worker].rollout.remote(task, [self._weights])
        self._pending[reference] = (worker, task)

    def _publish(self) -> None:
        ray = import_ray()
        self._version = self.agent.learner.updates
        self._weights = ray.put(cpu_weights(self.agent.policy))

    def _worker_died(self, worker: int, task: RolloutTask, error: Exception) -> None:
        self._failures[worker] += 1
        if self._failures[worker] > self.max_restarts:
            raise RuntimeError(
                f"rollout worker {worker} died {self._failures[worker]} times (max_restarts={self.max_restarts}); "
                f"training stopped after update {self.agent.learner.updates}, whose weights are intact. "
                f"Last error: {str(error)[:300]}"
            ) from None
        self._resend(worker, task)

    def _worker_unavailable(self, worker: int, error: Exception) -> None:
        now = time.monotonic()
        since = self._unavailable_since[worker] = self._unavailable_since[worker] or now
        if now - since > self.restart_timeout:
            raise RuntimeError(
                f"rollout worker {worker} has been restarting for over {self.restart_timeout:.0f} s; training stopped "
                f"after update {self.agent.learner.updates}, whose weights are intact. Last error: {str(error)[:300]}"
            ) from None
        time.sleep(0.1)

    def _resend(self, worker: int, task: RolloutTask) -> None:
        if task.task_id not in self.ledger.resent:
            self.ledger.resent.append(task.task_id)
        self._send(worker, task)  # Ray restarts the actor; the same task goes to it again


def policy_arguments(agent: "Spiral") -> dict[str, Any]:
    """What a worker builds its copy of the agent's policy from."""
    return dict(action_space=agent.prog.action_space, channels=agent.prog.channels,
                image_size=agent.prog.image_size, conditional=agent.conditional, config=agent.config)


def spawn_workers(agent: "Spiral", count: int, *, cpus: float, max_restarts: int, observe_all: bool) -> list:
    """``count`` rollout-worker actors for ``agent``, each reserving ``cpus`` CPUs (and as many torch threads)."""
    ray = import_ray()
    remote_worker = ray.remote(RolloutWorker).options(num_cpus=cpus, max_restarts=max_restarts, max_task_retries=0)
    return [remote_worker.remote(agent.prog, policy_arguments(agent), blind=agent.blind, observe_all=observe_all,
                                 threads=max(1, int(cpus)))
            for _ in range(count)]


def cpu_weights(policy: Policy) -> dict[str, torch.Tensor]:
    """The policy's weights on the CPU, as workers load them."""
    return {name: value.detach().cpu() for name, value in policy.state_dict().items()}
