r"""Programs: Pyro generative models over discrete action sites, observed through a renderer.

A :class:`Program` is the single source of truth that every engine works from. Its Pyro
model draws, for each step ``t`` and each component of the action space, a categorical
latent at the address ``step_{t}/{component}``, renders the whole program and scores the
target at the observed site ``image``:

.. math::

    a_{t,k} \sim \mathrm{Categorical}(\pi_{t,k}), \qquad
    x \sim \mathcal{N}\big(\mathrm{render}(a), \sigma^2 I\big)

(the paper's MCMC baseline used :math:`\sigma^2 = 0.25`, the default here). Every engine
reads the program's addresses and action space; none knows which renderer is behind it.

A custom grammar subclasses :class:`Program`, declares its ``action_space``, ``channels``
and ``image_size`` and writes :meth:`Program.draw`; the model, priors, likelihood,
validation and render accounting come from the base class::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.renderers import Component
    >>> class Squares(sp.programs.Program):
    ...     '''Up to ``steps`` white 2x2 squares on an 8x8 canvas.'''
    ...     channels, image_size = 1, 8
    ...     action_space = (Component("corner", 16, "location"), Component("present", 2))
    ...     def draw(self, actions):
    ...         corner, present = actions["corner"], actions["present"].float()
    ...         rows = torch.arange(8)
    ...         y, x = (corner // 4 * 2)[..., None], (corner % 4 * 2)[..., None]
    ...         inside_y = ((rows >= y) & (rows < y + 2)).float() * present[..., None]
    ...         inside_x = ((rows >= x) & (rows < x + 2)).float()
    ...         ink = torch.einsum("bty,btx->byx", inside_y, inside_x).clamp(max=1)
    ...         return ink[:, None]
    >>> prog = Squares(steps=2)
    >>> trace = sp.programs.trace(prog, image=torch.zeros(3, 1, 8, 8))
    >>> sorted(name for name in trace.nodes if name.startswith("step_0"))
    ['step_0/corner', 'step_0/present']
    >>> prog.stepwise  # engines grow its programs step by step by re-drawing their prefixes
    PrefixStepwise(Squares(steps=2, image=1x8, actions=[corner:16, present:2]))
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from spiral_ppl import checks
from spiral_ppl.checks import positive_int, positive_number
from spiral_ppl.programs.likelihood import PixelNormal
from spiral_ppl.programs.meter import RenderMeter
from spiral_ppl.programs.prior_table import PriorTable
from spiral_ppl.programs.stepwise import PrefixStepwise, Stepwise
from spiral_ppl.renderers.base import Component, check_new_states, validate_actions
from spiral_ppl.squared_error import mean_squared_error  # noqa: F401 - engines import it from here

#: Default pixel noise of the likelihood: standard deviation 0.5, i.e. the paper's variance 0.25.
DEFAULT_PIXEL_SCALE = 0.5


def site_name(step: int, component: str) -> str:
    """The address of component ``component`` at step ``step``: ``step_{step}/{component}``."""
    return f"step_{step}/{component}"


def require_fixed_structure(prog: "Program", what: str) -> None:
    """Refuse, naming ``what`` needs them, a program without fixed steps (see :attr:`Program.fixed_structure`)."""
    if not getattr(prog, "fixed_structure", True):
        raise ValueError(
            f"{what} needs a program of fixed steps (every run drawing the same sites step_{{t}}/{{component}} for a "
            f"batch of targets), but {prog!r} runs one program at a time: {prog.structure_note}. Use "
            "sp.inference.Importance or sp.inference.TraceMH, which work from the model's addresses"
        )


class Program(abc.ABC):
    """A generative program with named discrete latent sites (base class).

    :param steps: number of steps (actions) of a program.
    :param priors: optional prior probabilities per component name, each a tensor of shape
        ``(size,)`` (every step) or ``(steps, size)`` (per step); unnormalised is fine.
        Components without an entry get a uniform prior.
    :param pixel_scale: standard deviation of the Normal pixel likelihood.
    :param likelihood: optional ``canvas -> Distribution`` replacing the Normal likelihood;
        its event shape must be ``(C, H, W)``.

    Subclasses set ``action_space``, ``channels`` and ``image_size`` and implement
    :meth:`draw`. Programs that can paint one step at a time (a brush) also override
    :attr:`stepwise`, the step-wise protocol engines use; the default re-draws the prefix of
    actions, which is correct for any grammar.
    """

    action_space: tuple[Component, ...]
    channels: int
    image_size: int
    #: Whether every run draws the same sites ``step_{t}/{component}`` for a batch of targets.
    #: A model with Python control flow over its choices (a :class:`~spiral_ppl.programs.PyroProgram`
    #: of one) has not: engines that need steps refuse it (:func:`require_fixed_structure`),
    #: those that work from its addresses run it one program at a time.
    fixed_structure: bool = True
    #: Why the structure is not fixed (empty when it is).
    structure_note: str = ""

    def __init__(
        self,
        steps: int,
        *,
        priors: Mapping[str, Any] | None = None,
        pixel_scale: float = DEFAULT_PIXEL_SCALE,
        likelihood: Callable[[torch.Tensor], dist.Distribution] | None = None,
    ) -> None:
        positive_int("steps", steps)
        positive_number("pixel_scale", pixel_scale)
        checks.optional_callable("likelihood", likelihood, signature="canvas -> Distribution")
        if priors is not None:
            checks.mapping("priors", priors, example="{'flag': [0.2, 0.8]}")
        for attribute in ("action_space", "channels", "image_size"):
            if not hasattr(self, attribute):
                raise TypeError(f"{type(self).__name__} must define {attribute!r} (see spiral_ppl.programs.Program)")
        names = [component.name for component in self.action_space]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        # The prior tables hold every step's probabilities of every value, in several copies.
        checks.fits_in_memory(f"the priors of {steps:,} steps of {sum(c.size for c in self.action_space):,} values",
                              4 * 4 * steps * sum(c.size for c in self.action_space),
                              remedy="give fewer steps (or fewer values per component)")
        self.steps = steps
        self.pixel_scale = float(pixel_scale)
        self._likelihood = likelihood
        self._prior_logits = self._build_priors(priors or {})
        self._prior_cache: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._prior_tables: dict[torch.device, PriorTable] = {}
        #: Counts the canvases this program hands out (:meth:`render`, ``stepwise.canvas``).
        self.meter = RenderMeter()

    # -- what subclasses provide ------------------------------------------------------------

    @abc.abstractmethod
    def draw(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Images ``(N, C, H, W)`` of programs ``{name: LongTensor[N, T]}``, any ``1 <= T <= steps``.

        Pure and uncounted: call :meth:`render` instead, which validates and counts. The empty
        program (``T = 0``) never reaches ``draw``: it is :meth:`blank_canvas`.
        """

    def blank_canvas(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Images ``(N, C, H, W)`` of the empty program (default: zeros); override for another background.

        Not a render: the blank canvas is a constant of the program, which no action drew.
        """
        device = check_new_states(batch_size, device, 4 * self.channels * self.image_size**2)
        return torch.zeros(batch_size, self.channels, self.image_size, self.image_size, device=device)

    def _draw_any(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        first = actions[self.action_space[0].name]
        if first.shape[1] == 0:
            return self.blank_canvas(first.shape[0], device=first.device)
        return self._check_drawn(self.draw(actions), first.shape[0])

    def _check_drawn(self, images: Any, count: int) -> torch.Tensor:
        """``draw``'s output, refused here (naming the program) rather than deep inside an engine."""
        where = f"{type(self).__name__}.draw"
        expected = (count, self.channels, self.image_size, self.image_size)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{where} must return a tensor of images {expected}, got {type(images).__name__}")
        if tuple(images.shape) != expected:
            raise ValueError(
                f"{where} returned images of shape {tuple(images.shape)} for {count} programs; expected {expected} "
                f"(programs, channels={self.channels}, image_size, image_size): check draw against the program's "
                "channels and image_size"
            )
        if not images.is_floating_point():
            raise TypeError(f"{where} must return floating-point images in [0, 1], got dtype {images.dtype}; "
                            "convert with .float() (and scale 8-bit values by 1/255)")
        # One pass over the pixels: a NaN makes both extremes NaN, which fails both comparisons.
        low, high = torch.aminmax(images)
        if not (bool(low >= 0) and bool(high <= 1)):
            problem = "NaN or infinite values" if not bool(torch.isfinite(images).all()) else \
                f"values in [{float(low):.4g}, {float(high):.4g}]"
            raise ValueError(f"{where} returned {problem}; images must be finite and in [0, 1] "
                             "(clamp the ink, e.g. with .clamp(0, 1))")
        return images

    @property
    def stepwise(self) -> Stepwise:
        """The step-wise protocol engines grow these programs with (:mod:`spiral_ppl.programs.stepwise`).

        The default, :class:`~spiral_ppl.programs.stepwise.PrefixStepwise`, re-draws the
        prefix of actions, which is right for any grammar; a program that can paint one step
        at a time returns its own :class:`~spiral_ppl.programs.stepwise.Stepwise`.
        """
        return PrefixStepwise(self)

    # -- counted rendering -----------------------------------------------------------------

    @property
    def renders(self) -> int:
        """Renders this program has handed out so far, ``meter.count`` (the rule: :mod:`~spiral_ppl.programs.meter`)."""
        return self.meter.count

    def render(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Render programs ``{name: LongTensor[*batch, T]}`` to images ``(*batch, C, H, W)``.

        Every program rendered is charged one render to :attr:`meter`. No Pyro needed.
        """
        shape = validate_actions(self.action_space, actions)
        if len(shape) < 2:
            raise ValueError(
                f"actions must have shape (*batch, steps), got {tuple(shape)}; a single program of "
                "T steps is a (1, T) tensor per component"
            )
        batch_shape, steps = shape[:-1], shape[-1]
        if steps > self.steps:
            raise ValueError(f"this program has {self.steps} steps, got actions for {steps}")
        flat = {name: value.reshape(-1, steps) for name, value in actions.items()}
        images = self._draw_any(flat)
        self.meter.charge(images.shape[0])
        return images.reshape(*batch_shape, *images.shape[1:])

    # -- priors and likelihood ---------------------------------------------------------------

    def _build_priors(self, priors: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        names = [component.name for component in self.action_space]
        unknown = sorted(set(priors) - set(names))
        if unknown:
            raise ValueError(f"priors given for unknown components {unknown}; the components are {names}")
        logits = {}
        for component in self.action_space:
            if component.name not in priors:
                logits[component.name] = torch.zeros(self.steps, component.size)
                continue
            try:
                probs = torch.as_tensor(priors[component.name], dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"prior of {component.name!r} must be probabilities, a list or tensor of numbers of "
                                 f"shape ({component.size},) or ({self.steps}, {component.size}), got "
                                 f"{priors[component.name]!r}") from None
            if probs.shape == (component.size,):
                probs = probs.expand(self.steps, component.size)
            if probs.shape != (self.steps, component.size):
                raise ValueError(
                    f"prior of {component.name!r} must have shape ({component.size},) or "
                    f"({self.steps}, {component.size}), got {tuple(probs.shape)}"
                )
            if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or bool((probs.sum(-1) <= 0).any()):
                raise ValueError(
                    f"prior of {component.name!r} must hold finite non-negative probabilities with a positive sum"
                )
            logits[component.name] = (probs / probs.sum(-1, keepdim=True)).log()
        return logits

    def prior(self, step: int, component: str, device: torch.device | str | None = None) -> dist.Categorical:
        """The prior distribution of site ``step_{step}/{component}``."""
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < self.steps:
            raise ValueError(f"step must be an int in [0, {self.steps - 1}] (this program's steps), got {step!r}")
        names = [c.name for c in self.action_space]
        if component not in names:
            raise ValueError(f"component must be one of {names}, got {component!r}")
        device = checks.device("device", device) or torch.device("cpu")
        if device not in self._prior_cache:
            self._prior_cache[device] = {name: value.to(device) for name, value in self._prior_logits.items()}
        return dist.Categorical(logits=self._prior_cache[device][component][step])

    def likelihood(self, canvas: torch.Tensor) -> dist.Distribution:
        """The distribution of the observed image given rendered canvases ``(*batch, C, H, W)``."""
        if self._likelihood is not None:
            return self._likelihood(canvas)
        return PixelNormal(canvas, self.pixel_scale)

    def log_likelihood(
        self, canvas: torch.Tensor, images: torch.Tensor, squared_error: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``likelihood(canvas).log_prob(images)``, shape ``canvas.shape[:-3]``.

        :param squared_error: the canvases' squared pixel errors against the images, summed
            over the pixels, if the caller has them (a brush computes them while painting, see
            ``stepwise.advance_and_compare``); the default likelihood is a function of them alone,
            which spares another pass over the pixels. Other likelihoods ignore them.
        """
        self._check_compared(canvas, images)
        likelihood = self.likelihood(canvas)
        if squared_error is not None and isinstance(likelihood, PixelNormal):
            return likelihood.log_prob_of_squared_error(squared_error)
        return likelihood.log_prob(images)

    def prior_table(self, device: torch.device | str | None = None) -> PriorTable:
        """The priors of all sites as flat tables on ``device``, to draw or score many sites in one call."""
        device = checks.device("device", device) or torch.device("cpu")
        if device not in self._prior_tables:
            self._prior_tables[device] = PriorTable(self.action_space, self._prior_logits, device)
        return self._prior_tables[device]

    def sample_prior(self, count: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``count`` whole programs ``{name: LongTensor[count, steps]}`` drawn from the prior (not rendered).

        :param generator: the random stream to draw from (default: torch's global one); it
            must live on ``device``.
        """
        positive_int("count", count)
        device = checks.device("device", device)
        # Per site: its segment, a uniform draw, the value found and the value returned, 8 bytes each.
        checks.fits_in_memory(f"{count:,} programs of {self.steps} steps", 4 * 8 * count * self.steps *
                              len(self.action_space), remedy="draw fewer programs at a time", where=device)
        table = self.prior_table(device)
        if checks.optional_generator("generator", generator) is not None:
            if generator.device.type != table.log_probs.device.type:
                raise ValueError(f"generator lives on {generator.device} but the programs are drawn on "
                                 f"{table.log_probs.device}: give a generator of that device, or device={generator.device.type!r}")
        return table.sample(table.program_steps((count, self.steps), table.log_probs.device), generator)

    def log_prior(self, actions: Mapping[str, torch.Tensor], *, check: bool = True) -> torch.Tensor:
        """Log prior probability of whole programs (or prefixes) ``{name: LongTensor[*batch, T]}``, ``T <= steps``.

        :param check: validate the actions first. Engines scoring actions they drew
            themselves pass ``False``: the range check reads every component's minimum and
            maximum back from the device, once per call of a hot loop.
        """
        shape = self._program_shape(actions, check)
        device = actions[self.action_space[0].name].device
        table = self.prior_table(device)
        return table.log_prob(table.program_steps(shape, device), actions).sum(-1)

    def _program_shape(self, actions: Mapping[str, torch.Tensor], check: bool) -> torch.Size:
        """The shape ``(*batch, T)`` of programs or prefixes, checked to have at most ``steps`` steps."""
        shape = validate_actions(self.action_space, actions) if check else actions[self.action_space[0].name].shape
        if len(shape) == 0 or shape[-1] > self.steps:
            raise ValueError(f"actions must have shape (*batch, T) with T <= {self.steps}, got {tuple(shape)}")
        return shape

    def step_prior(self, step: int, history: Mapping[str, torch.Tensor],
                   action: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        r"""The prior of one step given the steps before it: :math:`p(a_t \mid a_{<t})`.

        :param history: the earlier steps of each program, ``{name: LongTensor[*batch, step]}``.
        :param action: the step's action ``{name: LongTensor[*batch]}`` to score; ``None`` draws one.
        :returns: the action and its log prior probability ``(*batch)``.

        With priors fixed per step the history is not read; a program whose priors depend on
        earlier choices (a :class:`~spiral_ppl.programs.PyroProgram` of such a model) overrides it.
        """
        reference = self._check_history(step, history)
        table = self.prior_table(reference.device)
        steps = torch.full(reference.shape[:-1], step, dtype=torch.long, device=reference.device)
        if action is None:
            action = table.sample(steps)
        return action, table.log_prob(steps, action)

    def _check_history(self, step: int, history: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The first component's history, once ``step`` and the shapes of ``history`` are checked."""
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < self.steps:
            raise ValueError(f"step must be an int in [0, {self.steps - 1}] (this program's steps), got {step!r}")
        names = [c.name for c in self.action_space]
        if not isinstance(history, Mapping) or sorted(history) != sorted(names):
            found = sorted(history) if isinstance(history, Mapping) else type(history).__name__
            raise ValueError(f"history must map every component {names} to its earlier values, got {found}")
        reference = history[names[0]]
        if any(history[name].shape != reference.shape for name in names) or reference.shape[-1:] != (step,):
            raise ValueError(f"history must hold {{name: LongTensor[*batch, {step}]}} (the {step} steps before step "
                             f"{step}), got shapes {[tuple(history[name].shape) for name in names]}")
        return reference

    def proposal_table(self, device: torch.device | str | None = None) -> PriorTable:
        """Fixed per-step tables that Metropolis-Hastings block moves draw fresh values from.

        They are the prior's, so the prior terms of the Hastings ratio cancel. A program whose
        priors are not fixed per step returns tables of full support instead; the moves'
        ratio includes the program's :meth:`log_prior` and the tables' own densities, so it
        stays exact.
        """
        return self.prior_table(device)

    # -- the Pyro model ------------------------------------------------------------------------

    def model(self, image: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """The Pyro model: latent sites ``step_{t}/{component}``, observed site ``image``.

        Targets are independent in the plate ``targets`` (dim -1); engines may wrap the model
        in outer plates (particles, chains) or enumerate sites. Returns the rendered canvases.
        """
        if image is not None:
            image = self.check_images(image)
            if batch_size is not None and batch_size != image.shape[0]:
                raise ValueError(f"batch_size={batch_size} disagrees with the {image.shape[0]} images given")
            batch_size, device = image.shape[0], image.device
        else:
            batch_size = checks.optional_positive_int("batch_size", batch_size, hint="targets to draw") or 1
            device = torch.device("cpu")
        with pyro.plate("targets", batch_size, dim=-1):
            sampled = [
                pyro.sample(site_name(t, component.name), self.prior(t, component.name, device))
                for t in range(self.steps)
                for component in self.action_space
            ]
            actions = self.stack_sites(sampled)
            canvas = self.render(actions)
            pyro.sample("image", self.likelihood(canvas), obs=image)
        return canvas

    __call__ = model

    def site_names(self) -> list[str]:
        """All latent addresses in the order the model samples them."""
        return [site_name(t, c.name) for t in range(self.steps) for c in self.action_space]

    def stack_sites(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Values of :meth:`site_names`, in order, -> ``{name: LongTensor[*batch, steps]}``.

        Values broadcast against each other first, so enumerated sites (each with its own
        enumeration dimension) yield every combination.
        """
        values = torch.broadcast_tensors(*values)
        width = len(self.action_space)
        return {
            component.name: torch.stack(values[index::width], dim=-1).long()
            for index, component in enumerate(self.action_space)
        }

    def actions_from_trace(self, trace: poutine.Trace) -> dict[str, torch.Tensor]:
        """The programs ``{name: LongTensor[*batch, steps]}`` recorded in a model or guide trace."""
        missing = [name for name in self.site_names() if name not in trace.nodes]
        if missing:
            raise ValueError(f"the trace lacks the sites {missing[:4]}{'...' if len(missing) > 4 else ''}")
        return self.stack_sites([trace.nodes[name]["value"] for name in self.site_names()])

    # -- input checks -------------------------------------------------------------------------

    def check_images(self, images: Any, name: str = "image") -> torch.Tensor:
        """Validate target images: a float tensor ``(B, C, H, W)`` in ``[0, 1]`` without NaN."""
        expected = f"(B, {self.channels}, {self.image_size}, {self.image_size})"
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(images).__name__}")
        if not images.is_floating_point():
            raise TypeError(
                f"{name} must be a float tensor with values in [0, 1], got dtype {images.dtype}; "
                "for uint8 pixels use images.float() / 255"
            )
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.channels, self.image_size, self.image_size):
            hint = " (add a batch dimension with image[None])" if images.dim() == 3 else ""
            raise ValueError(f"{name} must have shape {expected}, got {tuple(images.shape)}{hint}")
        if images.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch; give at least one image")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(images.detach().min()), float(images.detach().max())
        if low < 0 or high > 1:
            raise ValueError(f"{name} values must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
        return images

    def _check_compared(self, canvas: Any, images: Any) -> None:
        """Canvases and images that the likelihood can compare: tensors of this program's image shape
        (shapes only, which are known without reading the values back from the device)."""
        expected = (self.channels, self.image_size, self.image_size)
        for name, value in (("canvas", canvas), ("images", images)):
            if not isinstance(value, torch.Tensor) or tuple(value.shape[-3:]) != expected:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a tensor of images (..., {', '.join(map(str, expected))}), "
                                 f"got {found}")

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}:{c.size}" for c in self.action_space)
        return f"{type(self).__name__}(steps={self.steps}, image={self.channels}x{self.image_size}, actions=[{parts}])"


def sample_sites(trace: poutine.Trace, observed: bool | None = None) -> dict[str, dict]:
    """The sample sites of a trace, without plates; only latent (``observed=False``) or observed ones if asked."""
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample"
        and not site_is_subsample(node)
        and (observed is None or node["is_observed"] == observed)
    }


def trace(program: Program, image: torch.Tensor | None = None, **kwargs) -> poutine.Trace:
    """Run the program's model once and return its trace with log-probabilities computed."""
    model_trace = poutine.trace(program.model).get_trace(image, **kwargs)
    model_trace.compute_log_prob()
    return model_trace
