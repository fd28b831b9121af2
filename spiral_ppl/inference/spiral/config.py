r"""Every hyper-parameter of a SPIRAL agent, in one place, nested by concern.

:class:`SpiralConfig` has five sections, each a frozen dataclass, and maps one to one onto the
tables of a TOML configuration (``spiral_ppl/configs/``):

==========  =====================  ==========================================================
section     class                  what it sets
==========  =====================  ==========================================================
``policy``  :class:`PolicyConfig`  the policy network's sizes and its location decoder
``a2c``     :class:`A2CConfig`     the episodes per update and the actor-critic loss
``critic``  :class:`CriticConfig`  the WGAN-GP critic and its replay buffer
``reward``  :class:`RewardConfig`  what the agent is rewarded for
``train``   :class:`TrainConfig`   evaluation, logging and checkpoint cadence, and the recipe
==========  =====================  ==========================================================

A recipe is a tuple of phases (:class:`Phase`: sleep,
behaviour cloning, A2C, self-imitation) that :func:`~spiral_ppl.inference.spiral.recipe.run`
carries out in order; it is configuration like the rest.

Example::

    >>> from spiral_ppl.inference.spiral import SpiralConfig
    >>> config = SpiralConfig.small(a2c={"batch_size": 8}, reward={"kind": "l2", "scale": 10.0})
    >>> config.a2c.batch_size, config.reward.kind, config.policy.lstm_size
    (8, 'l2', 64)
    >>> SpiralConfig.from_dict(config.to_dict()) == config
    True
    >>> config.replace({"a2c.lr": 3e-4}).a2c.lr
    0.0003

Defaults follow the paper where it gives a value (Ganin et al. 2018: batch 64, Adam 1e-4,
critic :math:`\beta_1 = 0.5`, replay of 20 batches, entropy cost 2e-3..1e-1 and policy
learning rate 1e-5..3e-4 under population-based training).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from spiral_ppl import checks

#: How location components are decoded (:mod:`~spiral_ppl.inference.spiral.decoders`).
LOCATION_DECODERS = ("paper", "readout", "spatial")
REWARDS = ("critic", "l2")


@dataclass(frozen=True)
class PolicyConfig:
    """The policy network (:class:`~spiral_ppl.inference.spiral.Policy`)."""

    channels: int = 32  #: width of the image features (convolutions, residual blocks)
    res_blocks: int = 3  #: residual blocks at 8x8
    lstm_size: int = 256
    action_embedding: int = 16  #: embedding of each component of an action
    location_channels: int = 32  #: width of the upsampling decoder of location components
    noise_size: int = 10  #: noise vector of unconditional agents
    #: pixels enter as ``0.5 + input_contrast * (x - 0.5)``; 1 is the paper's raw pixels. Small
    #: objects on MuJoCo's grey platform barely move a fresh network's features; a contrast of 4
    #: lets behaviour cloning find them.
    input_contrast: float = 1.0
    #: ``"paper"``: the LSTM state alone decodes a location (the paper's); ``"readout"``: what
    #: follows a location also reads the image features there; ``"spatial"``: the readout, plus
    #: location logits read off the image at every cell (see
    #: :mod:`~spiral_ppl.inference.spiral.decoders`). Spatial logits learn where things are in a
    #: fraction of the updates the paper's decoder needs, so they are the default.
    location_decoder: str = "spatial"

    def __post_init__(self) -> None:
        for name in ("channels", "lstm_size", "action_embedding", "location_channels"):
            checks.positive_int(f"policy.{name}", getattr(self, name))
        for name in ("res_blocks", "noise_size"):
            checks.non_negative_int(f"policy.{name}", getattr(self, name))
        checks.positive_number("policy.input_contrast", self.input_contrast)
        checks.choice("policy.location_decoder", self.location_decoder, LOCATION_DECODERS)


@dataclass(frozen=True)
class A2CConfig:
    r"""The actor-critic update (Mnih et al. 2016) and V-trace for lagging episodes (Espeholt et al. 2018)."""

    batch_size: int = 64  #: episodes per update
    lr: float = 1e-4  #: Adam learning rate of the policy
    betas: tuple[float, float] = (0.9, 0.999)
    entropy_cost: float = 0.01  #: :math:`c_H`
    value_cost: float = 0.5  #: :math:`c_V`
    max_grad_norm: float = 40.0  #: gradients are clipped to this global norm
    discount: float = 1.0  #: :math:`\gamma` of the returns
    vtrace_rho_clip: float = 1.0  #: truncation of V-trace's importance weights
    vtrace_c_clip: float = 1.0  #: truncation of V-trace's traces; at most ``vtrace_rho_clip``

    def __post_init__(self) -> None:
        checks.positive_int("a2c.batch_size", self.batch_size)
        for name in ("lr", "max_grad_norm", "vtrace_rho_clip", "vtrace_c_clip"):
            checks.positive_number(f"a2c.{name}", getattr(self, name))
        for name in ("entropy_cost", "value_cost"):
            checks.non_negative_number(f"a2c.{name}", getattr(self, name))
        _check_betas("a2c.betas", self.betas)
        checks.number_in("a2c.discount", self.discount, 0, 1)
        if self.vtrace_c_clip > self.vtrace_rho_clip:
            raise ValueError(f"a2c.vtrace_c_clip ({self.vtrace_c_clip}) must not exceed a2c.vtrace_rho_clip "
                             f"({self.vtrace_rho_clip})")


@dataclass(frozen=True)
class CriticConfig:
    """The WGAN-GP critic (Gulrajani et al. 2017) and the replay buffer it learns from."""

    channels: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int = 1  #: critic updates per policy update
    gradient_penalty: float = 10.0
    drift_penalty: float = 1e-3  #: weight of the squared mean score that keeps it near 0
    spectral_norm: bool = False  #: SPIRAL++'s spectrally normalised critic (Mellor et al. 2019)
    replay_batches: int = 20  #: capacity of the replay buffer, in batches of episodes
    #: a conditional critic's share of generated examples replaced by real images paired with
    #: another target (a matching-aware critic): it must then judge whether an image matches its
    #: target, not only whether it looks real
    mismatched_pairs: float = 0.0
    #: SPIRAL++'s complement discriminator (conditional agents): the critic sees one half of
    #: the image (left, right, top or bottom, drawn at random) beside the other half of the
    #: target, so it cannot tell real pairs from fakes by comparing them pixel for pixel
    complement: bool = False

    def __post_init__(self) -> None:
        checks.number_in("critic.mismatched_pairs", self.mismatched_pairs, 0, 1, open_high=True)
        for name in ("channels", "steps", "replay_batches"):
            checks.positive_int(f"critic.{name}", getattr(self, name))
        checks.positive_number("critic.lr", self.lr)
        for name in ("gradient_penalty", "drift_penalty"):
            checks.non_negative_number(f"critic.{name}", getattr(self, name))
        checks.switch("critic.spectral_norm", self.spectral_norm)
        checks.switch("critic.complement", self.complement)
        _check_betas("critic.betas", self.betas)


@dataclass(frozen=True)
class RewardConfig:
    """What an episode is rewarded for (:mod:`~spiral_ppl.inference.spiral.rewards`)."""

    #: ``"critic"``: the WGAN-GP critic's score (the paper); ``"l2"``: minus the mean squared
    #: error to the target (conditional agents only).
    kind: str = "critic"
    scale: float = 1.0  #: rewards are multiplied by this (l2 rewards are small numbers)
    #: divide rewards by a running standard deviation of the episodes' returns, so that rewards
    #: of any units meet the entropy cost and learning rate at the same scale (the penalties,
    #: subtracted after it, are then in units of that deviation)
    normalise: bool = False
    temporal: bool = False  #: :math:`r_t = s(x_t) - s(x_{t-1})` (SPIRAL++) instead of a terminal reward
    new_stroke_penalty: float = 0.0  #: cost of starting a stroke sequence (needs a ``flag`` component)
    empty_canvas_penalty: float = 0.0  #: cost of an episode that leaves the canvas empty

    def __post_init__(self) -> None:
        checks.choice("reward.kind", self.kind, REWARDS)
        checks.positive_number("reward.scale", self.scale)
        checks.switch("reward.temporal", self.temporal)
        checks.switch("reward.normalise", self.normalise)
        for name in ("new_stroke_penalty", "empty_canvas_penalty"):
            checks.non_negative_number(f"reward.{name}", getattr(self, name))


@dataclass(frozen=True)
class TrainConfig:
    """How a training run reports, saves and proceeds (the loop itself is :mod:`.training`)."""

    eval_every: int = 0  #: evaluate one pass on held-out targets every this many updates (0: never)
    eval_size: int = 64  #: targets held out of the training data for those evaluations
    log_every: int = 10  #: write ``train.csv`` every this many updates (0: never)
    checkpoint_every: int = 0  #: write the checkpoint every this many updates (0: only at the end)
    keep_checkpoints: int = 3  #: the newest checkpoints kept on disk, to fall back on if one is damaged
    mixed_precision: bool = True  #: bfloat16 autocast for forward passes, on CUDA only
    #: the recipe: phases run in order by :func:`~spiral_ppl.inference.spiral.recipe.run`
    #: (each a :class:`Phase` or its dict)
    phases: tuple = ()

    def __post_init__(self) -> None:
        for name in ("eval_every", "log_every", "checkpoint_every"):
            checks.non_negative_int(f"train.{name}", getattr(self, name))
        checks.positive_int("train.eval_size", self.eval_size)
        checks.positive_int("train.keep_checkpoints", self.keep_checkpoints)
        checks.switch("train.mixed_precision", self.mixed_precision)
        if isinstance(self.phases, (Phase, Mapping, str)) or not isinstance(self.phases, (tuple, list)):
            raise TypeError(f"train.phases must be a list of phases (each a Phase or a table of one), e.g. "
                            f"[Phase('sleep', updates=100)], got {type(self.phases).__name__}")
        phases = tuple(Phase.from_dict(phase) if isinstance(phase, Mapping) else phase for phase in self.phases)
        for index, phase in enumerate(phases):
            if not isinstance(phase, Phase):
                raise TypeError(f"train.phases[{index}] must be a Phase or a table of one, got {type(phase).__name__}")
        if len({phase.minutes is None for phase in phases}) > 1:
            raise ValueError("train.phases mixes phases measured in updates with phases measured in minutes; "
                             "measure them all one way")
        object.__setattr__(self, "phases", phases)


SECTIONS = {"policy": PolicyConfig, "a2c": A2CConfig, "critic": CriticConfig, "reward": RewardConfig,
            "train": TrainConfig}
#: Settings that fix the networks' shapes: they cannot change once an agent exists.
SHAPES = {"policy.channels", "policy.res_blocks", "policy.lstm_size", "policy.action_embedding",
          "policy.location_channels", "policy.noise_size", "policy.location_decoder", "critic.channels",
          "critic.spectral_norm", "reward.kind"}


@dataclass(frozen=True)
class SpiralConfig:
    """Every hyper-parameter of a SPIRAL agent: five sections (see the module docstring)."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _section(kind, name, value))
            elif not isinstance(value, kind):
                raise TypeError(f"SpiralConfig.{name} must be a {kind.__name__} or a dict of its fields, "
                                f"got {type(value).__name__}")

    @classmethod
    def small(cls, **sections: Mapping[str, Any]) -> "SpiralConfig":
        """A narrow network for CPU tests and small canvases; ``sections`` (dicts) override fields."""
        sizes = {"policy": {"channels": 16, "res_blocks": 1, "lstm_size": 64, "location_channels": 8},
                 "a2c": {"batch_size": 32}, "critic": {"channels": 16}}
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown SpiralConfig sections {unknown}; the sections are {list(SECTIONS)}")
        for name, values in sections.items():
            if not isinstance(values, Mapping):
                raise TypeError(f"SpiralConfig.small({name}=...) takes a dict of {name} settings, "
                                f"e.g. {name}={{...}}, got {type(values).__name__}")
        return cls.from_dict({name: {**sizes.get(name, {}), **sections.get(name, {})} for name in SECTIONS})

    def replace(self, changes: Mapping[str, Any]) -> "SpiralConfig":
        """A copy with ``{"section.field": value}`` changed, e.g. ``{"a2c.lr": 3e-4}``."""
        checks.mapping("changes", changes, example="{'a2c.lr': 3e-4}")
        values = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.partition(".")
            if section not in SECTIONS or name not in values[section]:
                raise ValueError(f"unknown setting {key!r}: settings are section.field with sections "
                                 f"{list(SECTIONS)} (see spiral_ppl.inference.spiral.config)")
            values[section][name] = value
        return SpiralConfig.from_dict(values)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain dicts and lists, as TOML, JSON and checkpoints hold them."""
        values = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        values["train"]["phases"] = [phase.to_dict() for phase in self.train.phases]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SpiralConfig":
        """The configuration of ``{section: {field: value}}`` (the inverse of :meth:`to_dict`)."""
        if not isinstance(values, Mapping):
            raise TypeError(f"a SpiralConfig is read from a dict of sections, got {type(values).__name__}")
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown SpiralConfig sections {unknown}; the sections are {list(SECTIONS)}")
        return cls(**{name: _section(kind, name, values.get(name, {})) for name, kind in SECTIONS.items()})


#: Kinds of phase: learning from the program's own prior samples (``sleep``), from a data set's
#: ground-truth programs (``imitation``), by A2C on target images (``a2c``, the wake phase),
#: from the agent's own search on target images (``self_imitation``, expert iteration), and from
#: another agent's search on them (``distillation``).
PHASES = ("sleep", "imitation", "a2c", "self_imitation", "distillation")
#: How a self-imitation phase searches for the programs it imitates.
SEARCHES = ("passes", "smc")


@dataclass(frozen=True)
class Phase:
    """One phase of a recipe, run by :func:`spiral_ppl.inference.spiral.recipe.run` (see that module).

    Its length is ``updates`` or ``minutes`` of training time, one of the two; the phases of a
    recipe all measure their length the same way.
    """

    kind: str
    updates: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  #: hyper-parameter changes, ``{"a2c.lr": 3e-4}``
    program_steps: int | None = None  #: re-target the agent to programs of this many steps first
    minutes: float | None = None  #: the phase's length in minutes of training time, instead of ``updates``
    passes: int = 10  #: self-imitation: renders per target of the search, in passes (``search="smc"``: particles)
    targets: int = 128  #: self-imitation: training images per round
    round_updates: int = 16  #: self-imitation: behaviour-cloning updates per round
    search: str = "passes"  #: self-imitation: the best of ``passes`` passes, or the guided SMC (``"smc"``)
    #: distillation: the agent whose search labels the targets, a pretrained name or an agent file
    teacher: str | None = None

    def __post_init__(self) -> None:
        checks.choice("phase kind", self.kind, PHASES)
        if (self.updates is None) == (self.minutes is None):
            raise ValueError(f"a {self.kind} phase needs its length as updates or as minutes (one of the two), "
                             f"got updates={self.updates!r}, minutes={self.minutes!r}")
        checks.optional_positive_int("phase updates", self.updates)
        if self.minutes is not None:
            checks.positive_number("phase minutes", self.minutes)
        checks.optional_positive_int("phase program_steps", self.program_steps)
        for name in ("passes", "targets", "round_updates"):
            checks.positive_int(f"phase {name}", getattr(self, name))
        checks.choice("phase search", self.search, SEARCHES)
        if self.kind == "distillation":
            checks.non_empty_text("distillation phase teacher", self.teacher,
                                  hint="a pretrained agent's name or an agent file, e.g. teacher = \"mnist-recon-cpu\"")
        elif self.teacher is not None:
            raise ValueError(f"a {self.kind} phase has no teacher (only a distillation phase learns from another "
                             f"agent), got teacher={self.teacher!r}")
        if not isinstance(self.settings, Mapping):
            raise TypeError(f"phase settings must be a table of section.field = value, got {self.settings!r}")
        if "train.phases" in self.settings:
            raise ValueError("phase settings cannot change train.phases: a phase is part of the recipe, not its author")
        fixed = sorted(SHAPES & set(self.settings))
        if fixed:
            raise ValueError(f"phase settings {fixed} would change the networks' shapes; a recipe keeps one network")
        SpiralConfig().replace(dict(self.settings))  # unknown settings fail here, not mid-run
        object.__setattr__(self, "settings", dict(self.settings))

    @property
    def length(self) -> float:
        """The phase's length in its unit: updates, or seconds of training time."""
        return self.updates if self.updates is not None else 60.0 * self.minutes

    def to_dict(self) -> dict[str, Any]:
        values = {"kind": self.kind, "settings": dict(self.settings), "passes": self.passes,
                  "targets": self.targets, "round_updates": self.round_updates, "search": self.search}
        for name in ("updates", "minutes", "program_steps", "teacher"):
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Phase":
        checks.mapping("a phase", values, example="{'kind': 'sleep', 'updates': 100}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown phase settings {unknown}; a phase has {sorted(known)}")
        return cls(**values)


def _section(kind: type, name: str, values: Mapping[str, Any]):
    if not isinstance(values, Mapping):
        raise TypeError(f"[{name}] must be a table of settings, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown [{name}] settings {unknown}; known: {sorted(known)}")
    values = {key: tuple(value) if isinstance(value, list) and key != "phases" else value
              for key, value in values.items()}
    return kind(**values)


def _check_betas(name: str, betas: Any) -> None:
    if not (isinstance(betas, tuple) and len(betas) == 2 and all(
            not isinstance(b, bool) and isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}")


def from_flat(values: Mapping[str, Any]) -> SpiralConfig:
    """The configuration a checkpoint of the first format recorded as one flat table of fields."""
    renamed = {"policy_channels": "policy.channels", "res_blocks": "policy.res_blocks",
               "lstm_size": "policy.lstm_size", "action_embedding": "policy.action_embedding",
               "location_channels": "policy.location_channels", "noise_size": "policy.noise_size",
               "input_contrast": "policy.input_contrast", "batch_size": "a2c.batch_size", "policy_lr": "a2c.lr",
               "policy_betas": "a2c.betas", "entropy_cost": "a2c.entropy_cost", "value_cost": "a2c.value_cost",
               "max_grad_norm": "a2c.max_grad_norm", "discount": "a2c.discount",
               "vtrace_rho_clip": "a2c.vtrace_rho_clip", "vtrace_c_clip": "a2c.vtrace_c_clip",
               "critic_channels": "critic.channels", "critic_lr": "critic.lr", "critic_betas": "critic.betas",
               "critic_steps": "critic.steps", "gradient_penalty": "critic.gradient_penalty",
               "drift_penalty": "critic.drift_penalty", "spectral_norm": "critic.spectral_norm",
               "replay_batches": "critic.replay_batches", "reward_scale": "reward.scale",
               "temporal_rewards": "reward.temporal", "new_stroke_penalty": "reward.new_stroke_penalty",
               "empty_canvas_penalty": "reward.empty_canvas_penalty", "mixed_precision": "train.mixed_precision"}
    changes = {renamed[key]: value for key, value in values.items() if key in renamed}
    spatial, readout = values.get("spatial_locations", False), values.get("location_readout", False)
    if spatial and not readout:
        raise ValueError("this checkpoint's policy has spatial location heads without the readout, a decoder this "
                         "version does not build; retrain it with policy.location_decoder = 'spatial'")
    if values.get("spatial_head_blocks", 0) or values.get("lstm_input_norm", False):
        raise ValueError("this checkpoint's policy has extra spatial-head blocks or a layer norm before the LSTM, "
                         "which this version does not build; retrain it")
    changes["policy.location_decoder"] = "spatial" if spatial else "readout" if readout else "paper"
    changes = {key: tuple(value) if isinstance(value, list) else value for key, value in changes.items()}
    return SpiralConfig().replace(changes)
