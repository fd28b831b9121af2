r"""Supervised updates of a SPIRAL policy: behaviour cloning, DAgger and self-imitation.

Each update maximises the log-probability of labelled actions,
:math:`L = -\sum_t \log \pi(a^*_t \mid s_t)` averaged over the batch, with the same optimiser
as A2C (:class:`~spiral_ppl.inference.spiral.training.Learner`). They differ in where the
labels and the states come from:

- **behaviour cloning** (:func:`imitation_update` without an expert): the policy is run with
  every component forced to a ground-truth program's value, seeing the canvases that program
  draws, as inference compilation does (Le, Baydin and Wood, AISTATS 2017);
- **DAgger** (with an ``expert``; Ross, Gordon and Bagnell, AISTATS 2011): the policy draws its
  own episodes and every state it reached is labelled with the expert's next action from
  there, so it learns how to go on from its own mistakes;
- **sleep** (:func:`sleep_update`): behaviour cloning on programs drawn from the program's own
  prior and rendered by it, the sleep phase of wake-sleep (Hinton et al. 1995) and the training
  of inference compilation. It needs neither labels nor targets: the prior is the teacher;
- **self-imitation** (:func:`search_labels`): the labels are the best programs the agent's own
  search finds on training targets (the best of ``N`` passes ranked by l2, or the guided SMC),
  so one pass is taught what the search finds: expert iteration (Anthony, Tian and Barber
  2017) in which the expert is the agent's own search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import hide_progress
from spiral_ppl.inference.spiral.config import SEARCHES
from spiral_ppl.inference.spiral.rollout import replay, rollout
from spiral_ppl.inference.spiral.training import denormals_flushed, time_record, training_time
from spiral_ppl.programs.base import Program
from spiral_ppl.renderers.base import validate_actions

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral

#: ``expert(state, programs) -> {name: LongTensor[B]}``: the next action towards each program.
Expert = Callable[[Any, "dict[str, torch.Tensor]"], "dict[str, torch.Tensor]"]


def expert_labels(prog: Program, expert: Expert, actions: dict[str, torch.Tensor],
                  programs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The expert's next action at every state of episodes that took ``actions`` ({name: [B, T]}).

    Program states are cheap to advance without rendering, so the states are rebuilt here.
    """
    first = next(iter(actions.values()))
    batch, steps = first.shape
    stepwise = prog.stepwise
    state = stepwise.initial(batch, device=first.device)
    labels = []
    for t in range(steps):
        label = expert(state, programs)
        try:
            validate_actions(prog.action_space, label, ndim=1)
        except (TypeError, ValueError) as error:
            raise type(error)(f"the expert's action at step {t} is not an action of this program: {error}") from None
        labels.append(label)
        state = stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
    return {name: torch.stack([label[name].to(first.device) for label in labels], dim=1) for name in actions}


def imitation_update(agent: "Spiral", targets: torch.Tensor, programs: dict[str, torch.Tensor],
                     expert: Expert | None = None) -> dict[str, float]:
    """One supervised update towards ``programs`` ({name: LongTensor[B, T]}) drawn as ``targets``.

    Behaviour cloning without an ``expert``; DAgger with one (its episodes cost ``T`` renders each).
    The value head is not trained either way.
    """
    learner, policy, prog = agent.learner, agent.policy, agent.prog
    conditioning = targets if agent.conditional else None
    if expert is None:
        def forced(t: int, component, logits: torch.Tensor) -> torch.Tensor:
            return programs[component.name][:, t].to(logits.device)

        with learner.autocast():
            episode = rollout(policy, prog, targets.shape[0], conditioning, blind=agent.blind, draw_final=False,
                              choose=forced)
    else:
        with torch.no_grad(), learner.autocast():
            own = rollout(policy, prog, targets.shape[0], conditioning, blind=agent.blind)
        labels = expert_labels(prog, expert, own.actions, programs)
        with learner.autocast():
            episode = replay(policy, own.actions, own.canvases, conditioning, own.noise, blind=agent.blind,
                             labels=labels)
    loss = -episode.log_probs.float().sum(1).mean()
    learner.step_policy("imitation loss", loss)
    learner.updates += 1
    return {"imitation_loss": loss.item()}


def program_batches(data: Any) -> tuple[int, Callable[[torch.Tensor], tuple[torch.Tensor, dict]]]:
    """How many programs ``data`` holds, and ``batch(indices) -> (images, {name: LongTensor[B, T]})``.

    :param data: a ``Dataset`` of ``(image, {name: LongTensor[T]})`` items, such as
        :class:`spiral_ppl.data.MujocoScenes`, or a pair ``(images, {name: LongTensor[N, T]})``.
    """
    if isinstance(data, tuple) and len(data) == 2:
        images, programs = data
        count = _check_pair(images, programs)
        return count, lambda index: (images[index], {name: value[index] for name, value in programs.items()})
    if isinstance(data, torch.utils.data.Dataset):
        if not holds_programs(data):
            raise TypeError(
                "data must be a Dataset of (image, {component: LongTensor[T]}) items, as MujocoScenes gives; "
                f"this {type(data).__name__} has no programs to imitate (its items are images or (image, label))"
            )

        def batch(index: torch.Tensor):
            items = [data[int(i)] for i in index]
            return (torch.stack([item[0] for item in items]),
                    {name: torch.stack([item[1][name] for item in items]) for name in items[0][1]})

        return len(data), batch
    raise TypeError("data must be a Dataset of (image, actions) items or a pair (images, actions), "
                    f"got {type(data).__name__}" + (" (make the list a tuple)" if isinstance(data, list) else ""))


def _check_pair(images: Any, programs: Any) -> int:
    """The number of programs of a pair ``(images (N, C, H, W), {name: LongTensor[N, T]})``, once both
    are tensors of the same ``N`` (the values and shapes are checked batch by batch)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        found = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"the images of data = (images, programs) must be a tensor (N, C, H, W), got {found}")
    checks.mapping("the programs of data = (images, programs)", programs, example="{'flag': LongTensor[N, T], ...}")
    counts = {name: value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else None
              for name, value in programs.items()}
    if any(count != images.shape[0] for count in counts.values()):
        raise ValueError(f"data = (images, programs) must hold one program per image: {images.shape[0]} images, "
                         f"programs of {counts} items")
    if images.shape[0] == 0:
        raise ValueError("data holds no programs; give at least one")
    return images.shape[0]


def holds_programs(data: Any) -> bool:
    """Whether ``data`` is a non-empty Dataset whose items are ``(image, {component: actions})``."""
    if not isinstance(data, torch.utils.data.Dataset) or len(data) == 0:
        return False
    item = data[0]
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)


def imitate(agent: "Spiral", data: Any, steps: int, *, expert: Expert | None = None,
            progress: bool | None = None) -> list[dict[str, float]]:
    """``steps`` supervised updates of ``a2c.batch_size`` programs of ``data`` each (see :meth:`Spiral.imitate`)."""
    if expert is not None and not callable(expert):
        raise TypeError(f"expert must be callable as expert(state, programs), got {type(expert).__name__}")
    checks.positive_int("steps", steps, hint="updates to run")
    count, batch = program_batches(data)
    history = []
    with denormals_flushed():
        for _ in tqdm(range(steps), desc=f"{agent.name} imitation", unit="update", disable=hide_progress(progress)):
            with training_time(agent):
                images, programs = batch(torch.randint(count, (agent.config.a2c.batch_size,)))
                validate_actions(agent.prog.action_space, programs, ndim=2)
                if next(iter(programs.values())).shape[1] != agent.prog.steps:
                    raise ValueError(f"the programs to imitate have {next(iter(programs.values())).shape[1]} steps; "
                                     f"this agent's program has {agent.prog.steps}")
                targets = agent.prog.check_images(images.to(agent.device), name="data images")
                demonstrations = {name: value.to(agent.device) for name, value in programs.items()}
                metrics = imitation_update(agent, targets, demonstrations, expert)
            history.append({**time_record(agent), **metrics})
    return history


def sleep_update(agent: "Spiral", generator: torch.Generator) -> dict[str, float]:
    """One behaviour-cloning update on ``a2c.batch_size`` programs drawn from the agent's program's
    prior (with ``generator``, a CPU one, so a seed draws the same programs on any device) and
    rendered by it; counts their renders."""
    prog = agent.prog
    programs = {name: value.to(agent.device) for name, value in prog.sample_prior(
        agent.config.a2c.batch_size, generator=generator).items()}
    images = prog.render(programs)
    return imitation_update(agent, images, programs)


def search_labels(agent: "Spiral", targets: torch.Tensor, passes: int, seed: int,
                  search: str = "passes") -> dict[str, torch.Tensor]:
    """The best program the agent's own search finds on each target with ``passes`` passes' worth
    of renders: the best of its passes (the greedy one among them), or its guided SMC with
    ``passes`` particles (``search="smc"``)."""
    checks.positive_int("passes", passes)
    checks.choice("search", search, SEARCHES)
    searcher = agent.with_decoding(temperature=1.0, greedy_first=True)
    engine = searcher if search == "passes" else searcher.smc()
    budget = Budget(renders=passes * searcher.renders_per_pass)
    return engine.infer(agent.prog, targets, budget, seed=seed).actions
