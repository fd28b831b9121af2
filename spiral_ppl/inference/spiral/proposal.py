r"""The SPIRAL policy as a step proposal for SMC: ``propose(program, step, history, canvas, images)``.

SMC (:mod:`spiral_ppl.inference.smc`) grows particles one step at a time and renders their
canvases itself; at step :math:`t` it asks the proposal for :math:`a_t \sim q(\cdot \mid
a_{<t}, x)` and :math:`\log q`. The policy's proposal at step :math:`t` reads the particle's
current canvas, its previous action and the LSTM state left by its earlier steps, exactly as
in a rollout, so no renders are spent here.

Particles are resampled (copied) and possibly rejuvenated (their prefixes changed) between
steps, and the engine passes only their action histories. The LSTM states are therefore
kept by history: after each step the proposal remembers each particle's history with its
state, and at the next step each particle takes the state of the remembered particle with
the same history (a hash of its actions, per target). A particle whose history was changed
by a rejuvenation move has no such ancestor; its state is rebuilt by replaying its history
through the policy with blank canvases (no renders). Either way the proposal is a function
of the particle's own history, canvas and target, and ``log_q`` is the log-probability of
the action under the distribution it was drawn from, so the SMC weights stay exact.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3)
    >>> agent = sp.inference.Spiral(prog, config=sp.inference.SpiralConfig.small(reward={"kind": "l2"}))
    >>> engine = agent.smc()  # sp.inference.SMC(agent.proposal), the policy's particles alone
    >>> result = engine.infer(prog, torch.zeros(2, 1, 16, 16), sp.Budget(renders=30), seed=0)
    >>> result.renders.tolist(), result.log_weights.shape
    ([30, 30], torch.Size([10, 2]))
"""

from __future__ import annotations

from typing import Mapping

import torch

from spiral_ppl.inference.proposals import StepProposal
from spiral_ppl.inference.spiral.policy import StepOutput, check_temperature
from spiral_ppl.inference.spiral.rollout import replay

#: Odd multipliers of the history hash (fixed, so that hashes agree across calls).
_HASH_MULTIPLIERS = torch.randint(1, 2**62, (4096,), generator=torch.Generator().manual_seed(20181)) * 2 + 1


def history_keys(history: Mapping[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """``(N, B)`` int64 hash of each particle's actions ``{name: LongTensor[N, B, t]}``."""
    flat = torch.cat([history[name] for name in names], dim=-1)  # (N, B, K * t)
    if flat.shape[-1] > _HASH_MULTIPLIERS.numel():
        raise ValueError(f"histories of more than {_HASH_MULTIPLIERS.numel()} values are not supported")
    weights = _HASH_MULTIPLIERS[: flat.shape[-1]].to(flat.device)
    return ((flat + 1) * weights).sum(-1)  # int64 arithmetic wraps around: a hash


def _step_in_chunks(policy, chunk, canvas, targets, previous, noise, hidden, temperature):
    """``policy.step`` over a large batch of particles, ``chunk`` rows at a time (bounded memory)."""
    count = canvas.shape[0]
    if count <= chunk:
        return policy.step(canvas, targets, previous, noise, hidden, temperature=temperature)

    def rows(value, start):
        return None if value is None else value[start : start + chunk]

    outputs = [
        policy.step(
            canvas[start : start + chunk],
            rows(targets, start),
            None if previous is None else {name: value[start : start + chunk] for name, value in previous.items()},
            rows(noise, start),
            tuple(h[start : start + chunk] for h in hidden),
            temperature=temperature,
        )
        for start in range(0, count, chunk)
    ]
    return StepOutput(
        {name: torch.cat([out.action[name] for out in outputs]) for name in outputs[0].action},
        torch.cat([out.log_prob for out in outputs]),
        torch.cat([out.entropy for out in outputs]),
        torch.cat([out.value for out in outputs]),
        tuple(torch.cat([out.hidden[i] for out in outputs]) for i in range(2)),
    )


class SpiralProposal(StepProposal):
    r"""Step proposals from a SPIRAL agent's policy (see the module docstring).

    :param agent: a :class:`~spiral_ppl.inference.Spiral` agent for the program.
    :param temperature: propose from the tempered policy :math:`q_\tau(a) \propto
        \pi(a)^{1/\tau}`, component by component (1: the policy as trained). Below 1 the
        particles concentrate on the policy's likelier programs, which can help when there are
        few of them. ``log_q`` is that of :math:`q_\tau`, so the weights stay exact.
    """

    def __init__(self, agent, temperature: float = 1.0) -> None:
        self.agent, self.temperature = agent, check_temperature(temperature)
        self._keys: torch.Tensor | None = None  # (N, B) history hashes after the last step
        self._hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # each (N, B, H)
        self._noise: torch.Tensor | None = None  # (N, B, noise_size)

    def propose(self, program, step, history, canvas, images):
        agent, policy = self.agent, self.agent.policy
        agent.check_program(program)
        particles, targets = canvas.shape[:2]
        count = particles * targets
        device, home = agent.device, images.device
        names = [c.name for c in program.action_space]
        seen = canvas.reshape(count, *canvas.shape[2:]).to(device)
        if agent.blind:
            seen = torch.zeros_like(seen)
        # The policy computes in float32, whatever float dtype the targets came in.
        flat_targets = images.to(device=device, dtype=torch.float32).expand(particles, *images.shape).reshape(count, *images.shape[1:])
        with torch.no_grad(), agent.learner.autocast():
            if step == 0:
                hidden = policy.initial_hidden(count, device)
                noise = torch.randn(count, policy.noise_size, device=device) if policy.noise_size else None
                previous = None
            else:
                hidden, noise = self._restore(history, names, particles, targets, flat_targets)
                previous = {name: history[name][..., -1].reshape(count).to(device) for name in names}
            out = _step_in_chunks(policy, agent.max_batch, seen, flat_targets if agent.conditional else None,
                                  previous, noise, hidden, self.temperature)
        action = {name: value.view(particles, targets).to(home) for name, value in out.action.items()}
        extended = {name: torch.cat([history[name], action[name][..., None]], -1) for name in names}
        self._keys = history_keys(extended, names)
        self._hidden = tuple(h.view(particles, targets, -1) for h in out.hidden)
        self._noise = None if noise is None else noise.view(particles, targets, -1)
        return action, out.log_prob.view(particles, targets).to(home)

    def _restore(self, history, names, particles, targets, flat_targets):
        """LSTM states (and noise) of the particles, found by history or rebuilt."""
        if self._keys is None:
            raise RuntimeError("SpiralProposal.propose must be called for step 0 first")
        keys = history_keys(history, names).to(self._keys.device)  # (N, B)
        same = keys[:, None, :] == self._keys[None, :, :]  # (N_new, N_old, B)
        found = same.any(1)
        ancestor = same.float().argmax(1)  # (N_new, B)
        column = torch.arange(targets, device=keys.device)[None, :].expand(particles, targets)
        hidden = [h[ancestor, column] for h in self._hidden]
        noise = None if self._noise is None else self._noise[ancestor, column]
        if not bool(found.all()):
            hidden, noise = self._rebuild(history, names, ~found, hidden, noise, flat_targets)
        flat = tuple(h.reshape(particles * targets, -1) for h in hidden)
        return flat, None if noise is None else noise.reshape(particles * targets, -1)

    def _rebuild(self, history, names, missing, hidden, noise, flat_targets):
        """Replay the histories of ``missing`` particles through the policy on blank canvases."""
        policy, device = self.agent.policy, self.agent.device
        rows = missing.reshape(-1).nonzero().squeeze(-1).to(device)
        size = rows.numel()
        fresh = torch.randn(size, policy.noise_size, device=device) if policy.noise_size else None
        targets = flat_targets[rows]
        past = {name: history[name].reshape(-1, history[name].shape[-1])[rows.to(history[name].device)].to(device)
                for name in names}
        blank = [torch.zeros_like(targets)] * past[names[0]].shape[-1]
        state = replay(policy, past, blank, targets if self.agent.conditional else None, fresh, blind=True).hidden
        particles, targets_count = missing.shape
        hidden = [h.reshape(particles * targets_count, -1).clone() for h in hidden]
        for whole, part in zip(hidden, state):
            whole[rows] = part.to(whole.dtype)
        if noise is not None:
            noise = noise.reshape(particles * targets_count, -1).clone()
            noise[rows] = fresh
        return ([h.view(particles, targets_count, -1) for h in hidden],
                None if noise is None else noise.view(particles, targets_count, -1))
