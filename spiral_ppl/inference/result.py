"""What every engine returns: :class:`Result`, with its l2-against-renders :class:`Curve`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Curve:
    """Best l2 so far against renderer calls spent, per target.

    :ivar renders: ``(P,)`` renders spent per target at each point, increasing.
    :ivar l2: ``(P, B)`` best mean squared pixel error found by then, per target.
    """

    renders: torch.Tensor
    l2: torch.Tensor

    def __post_init__(self) -> None:
        if self.renders.dim() != 1 or self.l2.dim() != 2 or self.l2.shape[0] != self.renders.shape[0]:
            raise ValueError(
                f"Curve needs renders (P,) and l2 (P, B), got {tuple(self.renders.shape)} and {tuple(self.l2.shape)}"
            )

    def mean(self) -> torch.Tensor:
        """``(P,)`` best l2 so far averaged over targets."""
        return self.l2.mean(-1)

    def at(self, renders: int) -> torch.Tensor:
        """``(B,)`` best l2 per target after at most ``renders`` renders (NaN before the first)."""
        index = int(torch.searchsorted(self.renders, torch.tensor(renders), right=True)) - 1
        if index < 0:
            return torch.full_like(self.l2[0], float("nan"))
        return self.l2[index]

    @staticmethod
    def from_samples(l2: torch.Tensor, renders_per_sample: int = 1, offset: int = 0) -> "Curve":
        """Curve of samples scored in order: ``l2`` is ``(N, B)``, sample ``i`` after ``offset + (i+1) * r`` renders."""
        steps = torch.arange(1, l2.shape[0] + 1) * renders_per_sample + offset
        return Curve(steps, l2.cummin(0).values)


@dataclass
class Result:
    """The outcome of ``engine.infer(prog, images, budget)`` for a batch of ``B`` targets.

    :ivar images: ``(B, C, H, W)`` best reconstruction per target.
    :ivar actions: the inferred programs, ``{component: LongTensor[B, T]}`` (what
        ``prog.render`` takes).
    :ivar l2: ``(B,)`` mean squared pixel error of each best reconstruction.
    :ivar renders: ``(B,)`` renderer calls spent per target.
    :ivar seconds: wall-clock time of the whole inference, less the time spent compiling
        kernels on their first call (``diagnostics["compile_seconds"]``).
    :ivar curve: best l2 so far against renders.
    :ivar log_weights: ``(N, B)`` per-sample log importance weights, where the engine has them.
    :ivar ess: ``(B,)`` effective sample size, where defined.
    :ivar log_evidence: ``(B,)`` estimate of ``log p(image)``, where defined.
    :ivar engine: name of the engine that produced it.
    :ivar diagnostics: engine-specific extras (acceptance rates, ESS history, ...).
    :ivar choices: the inferred programs as ``{address: value}``, one per target, from the
        engines that work from a model's addresses (:class:`~spiral_ppl.inference.TraceMH`,
        :class:`~spiral_ppl.inference.Importance` on a program run one at a time). Where a
        program's structure varies they are the only form of its programs: ``actions`` is
        then empty.
    """

    images: torch.Tensor
    actions: dict[str, torch.Tensor]
    l2: torch.Tensor
    renders: torch.Tensor
    seconds: float
    curve: Curve
    log_weights: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    log_evidence: torch.Tensor | None = None
    engine: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    choices: list[dict[str, int]] | None = None

    def __repr__(self) -> str:
        extra = ""
        if self.ess is not None:
            extra += f", mean_ess={float(self.ess.float().mean()):.3g}"
        if self.log_evidence is not None:
            extra += f", mean_log_evidence={float(self.log_evidence.mean()):.4g}"
        return (
            f"Result(engine={self.engine!r}, targets={self.l2.shape[0]}, mean_l2={float(self.l2.mean()):.4g}, "
            f"renders={int(self.renders.max())}, seconds={self.seconds:.3g}{extra})"
        )


class BestSoFar:
    """The best reconstruction of each of ``B`` targets among all candidates seen so far.

    Every engine keeps one: :meth:`update` takes a batch of ``N`` candidates per target and
    keeps, per target, the candidate of least l2 where it is strictly better than the best so
    far (the first batch always fills it). :attr:`l2` is ``inf`` until then.
    """

    def __init__(self, targets: int, device: torch.device | str | None = None) -> None:
        self.l2 = torch.full((targets,), math.inf, device=device)
        self.images: torch.Tensor | None = None
        self.actions: dict[str, torch.Tensor] | None = None

    def update(self, l2: torch.Tensor, images: torch.Tensor, actions: dict[str, torch.Tensor]) -> None:
        """Candidates' ``l2`` ``(N, B)``, ``images`` ``(N, B, C, H, W)`` and ``actions`` ``{name: (N, B, T)}``."""
        candidate_l2, candidate = l2.min(0)
        columns = torch.arange(candidate.shape[0], device=candidate.device)
        picked_images = images[candidate, columns]
        picked = {name: value[candidate, columns] for name, value in actions.items()}
        if self.images is None or self.actions is None:
            self.images, self.actions = picked_images, picked
            self.l2 = candidate_l2
            return
        improved = candidate_l2 < self.l2

        def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            return torch.where(improved.view(-1, *([1] * (new.dim() - 1))), new, old)

        self.l2 = torch.where(improved, candidate_l2, self.l2)
        self.images = keep(picked_images, self.images)
        self.actions = {name: keep(picked[name], value) for name, value in self.actions.items()}
