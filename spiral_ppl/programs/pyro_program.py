r"""Bring your own Pyro model: a plain Pyro model function as a :class:`~spiral_ppl.programs.Program`.

The model is any function ``model(image=None, batch_size=1)`` that

- draws its discrete latents at sites ``step_{t}/{name}`` from ``Categorical``
  distributions, inside a plate of ``batch_size`` targets (``image.shape[0]`` when an image
  is given), every step drawing the same components in the same order;
- returns its rendered canvas ``(B, C, H, W)`` with values in ``[0, 1]``;
- observes that canvas at the site ``image`` under a likelihood of its choice, whose event
  shape is ``(C, H, W)``.

It may mark a component a location on a square grid with ``infer={"location": (rows,
cols)}`` (the SPIRAL policy decodes it with a convolutional head), mark one ordered (a size,
a level) with ``infer={"ordered": True}`` (search then tries neighbouring values), mask
sites with ``poutine.mask`` (see below), and let a prior depend on earlier sites. A model
that also takes a keyword ``steps`` (how many steps to draw) can be drawn part-way, which
engines that read partial canvases need (SMC, the SPIRAL policy).

:class:`PyroProgram` finds the steps, components, cardinalities, priors and image shape by
tracing the model (once with ``batch_size=1``, and once more for four targets whose earlier
sites differ, to see whether a prior depends on them). It is an ordinary
:class:`~spiral_ppl.programs.Program`, so every engine runs on it unchanged:

- :meth:`PyroProgram.draw` runs the model conditioned on the actions, in a plate of their
  batch, and returns its canvas: for actions :math:`a`, :math:`\mathrm{render}(a)` is the
  canvas the model returns when every site ``step_{t}/{k}`` takes the value :math:`a_{t,k}`;
- the priors :math:`\pi_{t,k}` are the traced ``Categorical`` s, so
  :math:`\log p(a) = \sum_{t,k} \log \pi_{t,k}(a_{t,k})` as for any program;
- the likelihood is the model's own: :math:`\log p(x \mid a)` is the log-probability of the
  ``image`` site, read from the run of the model that drew the canvas.

Why that run: the model builds its likelihood from its canvas inside its own code, so only
the run that drew a canvas knows the distribution around it. Engines score each canvas
right after drawing it (``prog.log_likelihood(canvas, images)``), so :meth:`draw` keeps the
likelihoods of the last few canvases it drew and :meth:`PyroProgram.likelihood` finds them
by the canvas's memory (engines pass views of the drawn canvases, reshaped to particles or
chains by targets). A model whose likelihood is :class:`~spiral_ppl.programs.PixelNormal`
needs no such lookup: that likelihood is a function of the canvas alone.

A model whose runs visit different sites (Python control flow over its choices: a number of
objects drawn first, a radius only for discs), or that draws its sites outside a plate of
targets, or under other names, has no fixed steps. The 16 runs from the prior that
:class:`PyroProgram` traces first show it; the program then runs one program at a time
(``fixed_structure`` is ``False``, ``structure_note`` says why), its model is the user's own
for one target, and the engines that work from a model's addresses run it
(:class:`~spiral_ppl.inference.Importance`, :class:`~spiral_ppl.inference.TraceMH`,
:func:`~spiral_ppl.inference.enumerate_posterior`; see :mod:`spiral_ppl.programs.traces`).
The others refuse it, saying why.

Priors that depend on earlier sites are not fixed per step (``dependent`` names those
sites). The program then re-runs the model to draw and score them:
:meth:`~PyroProgram.sample_prior` runs it from the prior, :meth:`~PyroProgram.log_prior` on
whole programs or prefixes, :meth:`~PyroProgram.step_prior` on a prefix up to the next
step (what SMC's prior proposal and weights use), and its Pyro model
(:meth:`PyroProgram.model`) draws each site from the prior the model gives it after the
sites before it. Block moves (MCMC, SMC's rejuvenation) draw fresh values from fixed tables
of full support, :meth:`~PyroProgram.proposal_table`, and their Hastings ratio keeps every
prior term, so every engine stays exact; only the fixed tables themselves
(:meth:`~PyroProgram.prior_table`, :meth:`~PyroProgram.prior`) are refused, naming the site.

A mask (``poutine.mask``) on a latent site says that where it is false the site's value
does not matter (the radius where there is no disc). The site is still drawn from its prior,
and its prior counts like any other's, so that it is integrated out: the posterior of the
other sites does not depend on how many values a masked site has, and a masked site's own
posterior is its prior. This is how Pyro's exact enumeration (``TraceEnum_ELBO``) reads a
mask on an enumerated site; ``log_prob_sum`` of one trace leaves the masked terms out, which
agrees with it for a site drawn from its prior (as importance sampling from the prior does).

Example: a dot on a 4x4 canvas, written as a plain Pyro model::

    >>> import pyro, pyro.distributions as dist, torch, spiral_ppl as sp
    >>> def dots(image=None, batch_size=1, steps=2):
    ...     batch_size = image.shape[0] if image is not None else batch_size
    ...     canvas = torch.zeros(batch_size, 1, 4, 4)
    ...     with pyro.plate("targets", batch_size):
    ...         for t in range(steps):
    ...             cell = pyro.sample(f"step_{t}/cell", dist.Categorical(logits=torch.zeros(16)),
    ...                                infer={"location": (4, 4)})
    ...             canvas = canvas.flatten(1).scatter(1, cell[:, None], 1.0).view(-1, 1, 4, 4)
    ...         pyro.sample("image", dist.Normal(canvas, 0.5).to_event(3), obs=image)
    ...     return canvas
    >>> prog = sp.programs.PyroProgram(dots)
    >>> prog
    PyroProgram(dots, steps=2, image=1x4, actions=[cell:16])
    >>> prog.action_space[0].kind
    'location'
    >>> target = prog.render({"cell": torch.tensor([[5, 10]])})
    >>> result = sp.inference.Importance().infer(prog, target, sp.Budget(renders=400), seed=0)
    >>> result.l2.tolist(), result.renders.tolist()
    ([0.0], [400])
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import math
import re
from typing import Any, Callable, Iterator, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine import runtime
from pyro.poutine.messenger import Messenger

from spiral_ppl import checks
from spiral_ppl.programs.base import Program, require_fixed_structure, site_name
from spiral_ppl.programs.likelihood import PixelNormal
from spiral_ppl.programs.meter import RenderMeter
from spiral_ppl.programs.prior_table import PriorTable
from spiral_ppl.renderers.base import Component

#: The observed site of every program.
IMAGE_SITE = "image"
SITE_PATTERN = re.compile(r"step_(\d+)/([^/]+)")
#: Likelihoods of this many recent draws are kept for :meth:`PyroProgram.likelihood`.
REMEMBERED_DRAWS = 4


class PyroProgram(Program):
    """A plain Pyro model ``model(image=None, batch_size=1)`` as a program (see the module docstring).

    :param model: the Pyro model. Its steps, components, priors and image shape are found by
        tracing it; a model that violates the contract is refused with an error naming the
        site or value at fault.

    :ivar dependent: ``{site: why}`` for the sites whose prior is not fixed per step (it
        changes with earlier sites); empty for most grammars.
    :ivar draws_prefixes: whether the model takes ``steps``, so partial programs can be drawn.
    """

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        if not callable(model):
            raise TypeError(f"model must be a Pyro model function model(image=None, batch_size=1), "
                            f"got {type(model).__name__}")
        self.user_model = model
        self.name = getattr(model, "__name__", type(model).__name__)
        self.draws_prefixes = _takes_keyword(model, "steps")
        runs = _probe_runs(model)
        run = runs[0]
        for probe in runs:
            self._check_canvas_and_image(probe)
        self.channels, self.image_size = run.canvas.shape[1], run.canvas.shape[2]
        image = run.sites[IMAGE_SITE]["fn"]
        self._likelihood_scale = image.scale if isinstance(image, PixelNormal) else None
        self._drawn: collections.deque = collections.deque(maxlen=REMEMBERED_DRAWS)
        try:
            _same_sites_in_every_run(runs)
            steps, components, priors = self._read_structure(run)
        except _NotInSteps as why:
            self._run_one_at_a_time(str(why))
            return
        self.action_space = components
        self.dependent = self._find_dependent_sites(run, steps)
        self._proposal_tables: dict[torch.device, PriorTable] = {}
        # Uniform priors are left out, so that they are stored exactly as a Program's default.
        priors = {name: probs for name, probs in priors.items() if not bool(torch.all(probs == probs[:, :1]))}
        super().__init__(steps, priors=priors, pixel_scale=self._likelihood_scale or 0.5)

    def _run_one_at_a_time(self, why: str) -> None:
        """Set up a model without fixed steps: engines run it one program at a time, from its addresses."""
        self.fixed_structure = False
        self.structure_note = why
        self.steps, self.action_space, self.dependent = None, (), {}
        self.pixel_scale = self._likelihood_scale or 0.5
        self.meter = RenderMeter()

    # -- models without fixed steps -----------------------------------------------------------------

    def _needs_steps(self, what: str) -> None:
        if not self.fixed_structure:
            require_fixed_structure(self, what)

    def render(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self._needs_steps("render(actions)")
        return super().render(actions)

    def sample_prior(self, count: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        self._needs_steps("sample_prior")
        if not self.dependent:
            return super().sample_prior(count, generator=generator, device=device)
        checks.positive_int("count", count)
        device = checks.device("device", device) or torch.device("cpu")
        with _random_stream(generator):
            run = _run_model(self.user_model, batch_size=count, stop_at=IMAGE_SITE)
        return {c.name: torch.stack([run.sites[site_name(t, c.name)]["value"].reshape(count).long()
                                     for t in range(self.steps)], -1).to(device)
                for c in self.action_space}

    def log_prior(self, actions: Mapping[str, torch.Tensor], *, check: bool = True) -> torch.Tensor:
        self._needs_steps("log_prior(actions)")
        if not self.dependent:
            return super().log_prior(actions, check=check)
        shape = self._program_shape(actions, check)
        given = shape[-1]
        run = self._run_prior(actions, shape, until_step=given)
        return sum(self._site_log_prob(run, site_name(t, c.name)) for t in range(given)
                   for c in self.action_space).reshape(shape[:-1]).to(actions[self.action_space[0].name].device)

    def step_prior(self, step: int, history: Mapping[str, torch.Tensor],
                   action: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        self._needs_steps("step_prior(step, history)")
        if not self.dependent:
            return super().step_prior(step, history, action)
        reference = self._check_history(step, history)
        shape = (*reference.shape[:-1], step + (action is not None))
        programs = history if action is None else \
            {name: torch.cat([value, action[name].unsqueeze(-1)], -1) for name, value in history.items()}
        # The model draws the step itself where no action is given, from its prior after the history.
        run = self._run_prior(programs, shape, until_step=step + 1)
        names = [site_name(step, c.name) for c in self.action_space]
        drawn = {c.name: run.sites[name]["value"].reshape(shape[:-1]).long().to(reference.device)
                 for c, name in zip(self.action_space, names)}
        log_p = sum(self._site_log_prob(run, name) for name in names).reshape(shape[:-1]).to(reference.device)
        return drawn, log_p

    def proposal_table(self, device: torch.device | str | None = None) -> PriorTable:
        """The prior's tables where they are fixed; else the priors traced from one run of the
        model mixed half and half with uniform ones, so that every value can be proposed."""
        self._needs_steps("proposal_table()")
        if not self.dependent:
            return super().proposal_table(device)
        device = checks.device("device", device) or torch.device("cpu")
        if device not in self._proposal_tables:
            half = math.log(0.5)
            mixed = {name: torch.logaddexp(logits.log_softmax(-1) + half, torch.full_like(logits, half - math.log(
                logits.shape[-1]))) for name, logits in self._prior_logits.items()}
            self._proposal_tables[device] = PriorTable(self.action_space, mixed, device)
        return self._proposal_tables[device]

    def log_likelihood(self, canvas: torch.Tensor, images: torch.Tensor, squared_error=None) -> torch.Tensor:
        self._needs_steps("log_likelihood(canvas, images)")
        return super().log_likelihood(canvas, images, squared_error)

    def site_names(self) -> list[str]:
        self._needs_steps("site_names()")
        return super().site_names()

    @property
    def stepwise(self):
        self._needs_steps("stepwise")
        return super().stepwise

    def _model_one_program(self, image: torch.Tensor | None, batch_size: int | None) -> torch.Tensor:
        """The user's model on one target, as it is (its sites are the model's own), counted as one render."""
        if image is not None:
            image = self.check_images(image)
            count = image.shape[0]
        else:
            count = checks.optional_positive_int("batch_size", batch_size, hint="targets to draw") or 1
        if count != 1:
            raise ValueError(f"model {self.name} runs one program at a time ({self.structure_note}); give one "
                             f"target (1, {self.channels}, {self.image_size}, {self.image_size}), got {count}")
        canvas = self.user_model(image=image) if image is not None else self.user_model(batch_size=1)
        expected = (1, self.channels, self.image_size, self.image_size)
        if not isinstance(canvas, torch.Tensor) or tuple(canvas.shape) != expected:
            found = tuple(canvas.shape) if isinstance(canvas, torch.Tensor) else type(canvas).__name__
            raise ValueError(f"model {self.name} returned a canvas of shape {found}, expected {expected}")
        self.meter.charge(1)
        return canvas

    # -- reading the model ----------------------------------------------------------------------

    def _check_canvas_and_image(self, run: "_ModelRun") -> None:
        """What every model must do, whatever its structure: return a square canvas (one for
        ``batch_size=1``), observe it at the site ``image`` with one event of pixels, and draw
        every other site, unobserved, from a ``Categorical``."""
        if IMAGE_SITE not in run.sites:
            raise ValueError(f"model {self.name} has no site {IMAGE_SITE!r}: observe its canvas with "
                             f"pyro.sample('image', likelihood(canvas), obs=image)")
        canvas = run.canvas
        if not isinstance(canvas, torch.Tensor) or canvas.dim() != 4 or canvas.shape[0] != 1:
            found = tuple(canvas.shape) if isinstance(canvas, torch.Tensor) else type(canvas).__name__
            raise ValueError(f"model {self.name} must return its canvas (batch_size, C, H, W), got {found} "
                             "for batch_size=1")
        if canvas.shape[2] != canvas.shape[3]:
            raise ValueError(f"model {self.name} returns canvases {tuple(canvas.shape[1:])}; programs have square "
                             "images (C, H, H): pad or crop the canvas")
        event = tuple(run.sites[IMAGE_SITE]["fn"].event_shape)
        if event != tuple(canvas.shape[1:]):
            raise ValueError(f"the likelihood at site 'image' of model {self.name} has event shape {event}, expected "
                             f"the canvas's {tuple(canvas.shape[1:])}: make the pixels one event, e.g. "
                             "dist.Normal(canvas, 0.5).to_event(3)")
        for name, site in run.sites.items():
            if name == IMAGE_SITE:
                continue
            if site["is_observed"]:
                raise ValueError(f"site {name!r} of model {self.name} is observed; only 'image' may be")
            if not isinstance(site["fn"], torch.distributions.Categorical):
                raise ValueError(f"site {name!r} of model {self.name} draws from {type(site['fn']).__name__}; "
                                 "latent sites must be Categorical (a discrete choice of 0 .. size - 1)")

    def _read_structure(self, run: "_ModelRun") -> tuple[int, tuple[Component, ...], dict[str, torch.Tensor]]:
        """Steps, components and per-step prior probabilities of a traced run of ``batch_size=1``."""
        by_step: dict[int, list[tuple[str, dict]]] = collections.defaultdict(list)
        for name, site in run.sites.items():
            if name == IMAGE_SITE:
                continue
            match = SITE_PATTERN.fullmatch(name)
            if match is None:
                raise _NotInSteps(f"model {self.name} has a site {name!r}; latent sites must be named "
                                 "step_{t}/{component} (and the observed one 'image')")
            if tuple(site["value"].shape) != (1,):
                raise _NotInSteps(f"site {name!r} of model {self.name} has shape {tuple(site['value'].shape)} for "
                                 "batch_size=1, expected (1,): draw it inside pyro.plate('targets', batch_size)")
            by_step[int(match.group(1))].append((match.group(2), site))
        if not by_step:
            raise ValueError(f"model {self.name} has no latent sites step_{{t}}/{{component}}")
        steps = max(by_step) + 1
        missing = [t for t in range(steps) if t not in by_step]
        if missing:
            raise _NotInSteps(f"model {self.name} draws steps {sorted(by_step)}; steps must be 0 .. {steps - 1} "
                             f"without gaps (missing {missing})")
        first = [name for name, _ in by_step[0]]
        components = []
        for name, site in by_step[0]:
            location = site["infer"].get("location")
            size = site["fn"].logits.shape[-1]
            ordered = site["infer"].get("ordered", False)
            if not isinstance(ordered, bool):
                raise ValueError(f"site {site_name(0, name)!r} of model {self.name}: infer={{'ordered': ...}} must be "
                                 f"True or False, got {ordered!r}")
            components.append(Component(name, size, _location_kind(name, location, size), ordered=ordered))
        for t in range(1, steps):
            names = [name for name, _ in by_step[t]]
            if names != first:
                raise _NotInSteps(f"step {t} of model {self.name} draws components {names}, step 0 draws {first}; "
                                 "every step must draw the same components in the same order")
            for component, (name, site) in zip(components, by_step[t]):
                if site["fn"].logits.shape[-1] != component.size:
                    raise _NotInSteps(f"site {site_name(t, name)!r} has {site['fn'].logits.shape[-1]} values, "
                                     f"step 0's {component.size}; a component has one size at every step")
        priors = {c.name: torch.stack([site["fn"].probs.reshape(-1, c.size)[0].detach().float().cpu()
                                       for t in range(steps) for name, site in by_step[t] if name == c.name])
                  for c in components}
        return steps, tuple(components), priors

    def _find_dependent_sites(self, run: "_ModelRun", steps: int) -> dict[str, str]:
        """Sites whose prior is not one fixed ``Categorical`` per step: those whose prior changes
        when earlier sites change (seen on four targets with different earlier values)."""
        names = [site_name(t, c.name) for t in range(steps) for c in self.action_space]
        dependent = {}
        # Each target takes a different value at every site: 0, the last, the middle, 1.
        values = {}
        for name in names:
            size = next(c.size for c in self.action_space if name.endswith("/" + c.name))
            values[name] = torch.tensor([0, size - 1, size // 2, 1]) % size
        probe = _run_model(self.user_model, batch_size=4, values=values,
                           image=torch.zeros(4, self.channels, self.image_size, self.image_size))
        if tuple(probe.canvas.shape) != (4, self.channels, self.image_size, self.image_size):
            raise ValueError(f"model {self.name} returned {tuple(probe.canvas.shape)} for 4 images; it must take "
                             "the batch from image.shape[0] when an image is given")
        for name in names:
            logits = probe.sites[name]["fn"].logits.expand(4, -1)
            reference = run.sites[name]["fn"].logits.reshape(1, -1)
            if not torch.allclose(logits, reference.expand_as(logits), atol=1e-6):
                dependent[name] = "its prior changes with earlier sites"
        return dependent

    # -- drawing --------------------------------------------------------------------------------

    def draw(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model's canvases ``(N, C, H, W)`` with its sites conditioned on ``{name: LongTensor[N, T]}``."""
        self._needs_steps("draw(actions)")
        count, steps = actions[self.action_space[0].name].shape
        if steps < self.steps and not self.draws_prefixes:
            raise ValueError(f"model {self.name} cannot draw the first {steps} of its {self.steps} steps: give it a "
                             f"keyword steps (def {self.name}(image=None, batch_size=1, steps={self.steps})) and draw "
                             "steps 0 .. steps - 1, so that engines reading partial canvases (SMC, SPIRAL) can use it")
        values = {site_name(t, c.name): actions[c.name][:, t] for t in range(steps) for c in self.action_space}
        run = _run_model(self.user_model, batch_size=count, values=values,
                         steps=steps if steps < self.steps else None)
        canvas = run.canvas
        expected = (count, self.channels, self.image_size, self.image_size)
        if not isinstance(canvas, torch.Tensor) or tuple(canvas.shape) != expected:
            found = tuple(canvas.shape) if isinstance(canvas, torch.Tensor) else type(canvas).__name__
            raise ValueError(f"model {self.name} returned a canvas of shape {found} for batch_size={count}, "
                             f"expected {expected}")
        unused = sorted(set(run.sites) - set(values) - {IMAGE_SITE})
        if unused:
            raise ValueError(f"model {self.name} drew sites {unused[:4]} beyond the {steps} steps asked for: draw "
                             "only steps 0 .. steps - 1")
        if self._likelihood_scale is None:
            self._drawn.append((canvas, run.sites[IMAGE_SITE]["fn"]))
        return canvas

    # -- the model's likelihood -------------------------------------------------------------------

    def likelihood(self, canvas: torch.Tensor) -> dist.Distribution:
        """The model's distribution of the image given canvases ``(*batch, C, H, W)`` it drew."""
        self._needs_steps("likelihood(canvas)")
        if self._likelihood_scale is not None:
            return PixelNormal(canvas, self._likelihood_scale)
        for drawn, likelihood in reversed(self._drawn):
            if _same_memory(canvas, drawn):
                return _ReshapedLikelihood(likelihood, torch.arange(drawn.shape[0]).view(canvas.shape[:-3]))
        raise ValueError(
            f"PyroProgram({self.name}) scores only canvases it has just drawn (with render or stepwise.canvas): "
            "its likelihood is the one its model builds around each canvas. Score a canvas right after drawing it, "
            "or observe the image with sp.programs.PixelNormal(canvas, scale), a function of any canvas"
        )

    # -- priors that depend on earlier sites --------------------------------------------------------

    def _run_prior(self, programs: Mapping[str, torch.Tensor], shape: tuple[int, ...], until_step: int) -> "_ModelRun":
        """A run of the model on programs (or prefixes) ``{name: LongTensor[*batch, T]}`` of ``shape``,
        stopped before step ``until_step`` (or before its image, after the last step), so that
        every site up to there is drawn with the prior the model gives it."""
        count = math.prod(shape[:-1])
        values = {site_name(t, c.name): programs[c.name].reshape(count, shape[-1])[:, t]
                  for t in range(shape[-1]) for c in self.action_space}
        stop_at = site_name(until_step, self.action_space[0].name) if until_step < self.steps else IMAGE_SITE
        return _run_model(self.user_model, batch_size=count, values=values, stop_at=stop_at)

    @staticmethod
    def _site_log_prob(run: "_ModelRun", name: str) -> torch.Tensor:
        """A drawn site's log prior probability, masked or not (see the module docstring on masks)."""
        site = run.sites[name]
        return site["fn"].log_prob(site["value"])

    def _refuse_dependent(self, what: str) -> None:
        if self.dependent:
            name, why = next(iter(self.dependent.items()))
            raise ValueError(
                f"{what} needs a fixed Categorical prior per step and component, but site {name!r} of model "
                f"{self.name} has none ({why}). Use the program's methods that re-run the model: sample_prior, "
                "log_prior and step_prior (every engine does)"
            )

    def prior(self, step: int, component: str, device: torch.device | str | None = None) -> dist.Categorical:
        self._needs_steps("prior(step, component)")
        name = site_name(step, component) if isinstance(step, int) and isinstance(component, str) else None
        if name in self.dependent:
            self._refuse_dependent(f"the prior of site {name!r}")
        return super().prior(step, component, device)

    def prior_table(self, device: torch.device | str | None = None) -> PriorTable:
        self._needs_steps("prior_table()")
        self._refuse_dependent("this engine (it draws and scores sites from the program's prior tables)")
        return super().prior_table(device)

    def model(self, image: torch.Tensor | None = None, *, batch_size: int | None = None) -> torch.Tensor:
        """The Pyro model: sites ``step_{t}/{component}`` in the plate ``targets``, observed site ``image``.

        With fixed priors it is :meth:`Program.model <spiral_ppl.programs.Program.model>`. With
        dependent ones each site is drawn from the prior the user's model gives it after the
        sites drawn before it (one run of the model, stopped at that site, per site), so that
        handlers outside (plates of particles, a guide's replay) see every site as usual.
        """
        if not self.fixed_structure:
            return self._model_one_program(image, batch_size)
        if not self.dependent:
            return super().model(image, batch_size=batch_size)
        if image is not None:
            image = self.check_images(image)
            batch_size = image.shape[0]
        else:
            batch_size = checks.optional_positive_int("batch_size", batch_size, hint="targets to draw") or 1
        with pyro.plate("targets", batch_size, dim=-1):
            sampled: list[torch.Tensor] = []
            for name in self.site_names():
                sampled.append(pyro.sample(name, self._site_prior(name, sampled, batch_size)))
            canvas = self.render(self.stack_sites(sampled))
            pyro.sample(IMAGE_SITE, self.likelihood(canvas), obs=image)
        return canvas

    def _site_prior(self, name: str, earlier: list[torch.Tensor], batch_size: int) -> dist.Distribution:
        """The prior of site ``name`` given the values of the sites before it, batched like them
        (unmasked: see the module docstring on masks)."""
        earlier = list(torch.broadcast_tensors(*earlier)) if earlier else []
        shape = earlier[0].shape if earlier else torch.Size([batch_size])
        values = {site: value.reshape(-1) for site, value in zip(self.site_names(), earlier)}
        site = _run_model(self.user_model, batch_size=shape.numel(), values=values, stop_at=name).sites[name]
        return dist.Categorical(logits=site["fn"].logits.expand(shape.numel(), -1).reshape(*shape, -1))

    def __repr__(self) -> str:
        if not self.fixed_structure:
            return f"PyroProgram({self.name}, one program at a time, image={self.channels}x{self.image_size})"
        parts = ", ".join(f"{c.name}:{c.size}" for c in self.action_space)
        return (f"PyroProgram({self.name}, steps={self.steps}, image={self.channels}x{self.image_size}, "
                f"actions=[{parts}])")


# -- running the user's model -------------------------------------------------------------------------


#: Runs of the model from its prior that decide whether its structure is fixed.
STRUCTURE_PROBES = 16


class _NotInSteps(ValueError):
    """The model's runs do not draw the same sites ``step_{t}/{component}`` for a plate of targets."""


@contextlib.contextmanager
def _random_stream(generator: torch.Generator | None) -> Iterator[None]:
    """Pyro draws from torch's global stream; with a ``generator``, the draws inside come from a
    stream seeded by it, and the global stream is left as it was."""
    if checks.optional_generator("generator", generator) is None:
        yield
        return
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _probe_runs(model: Callable) -> list["_ModelRun"]:
    """Runs of ``model`` from its prior, with a fixed seed and the caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return [_run_model(model, batch_size=1) for _ in range(STRUCTURE_PROBES)]


def _same_sites_in_every_run(runs: list["_ModelRun"]) -> None:
    """Raise :class:`_NotInSteps` naming two runs that visit different sites (or sizes of them)."""
    def sites(run: "_ModelRun") -> list[tuple[str, int]]:
        return [(name, int(site["fn"].logits.shape[-1])) for name, site in run.sites.items() if name != IMAGE_SITE]

    first = sites(runs[0])
    for run in runs[1:]:
        other = sites(run)
        if other != first:
            raise _NotInSteps(f"its runs visit different sites (one drew {_listing(first)}, another "
                              f"{_listing(other)})")


def _listing(sites: list[tuple[str, int]]) -> str:
    names = [f"{name}:{size}" for name, size in sites]
    return "[" + ", ".join(names[:6]) + (", ...]" if len(names) > 6 else "]")


class _Stop(Exception):
    """Raised to end a run of the model at the site asked for."""


class _ModelRun(Messenger):
    """One run of the user's model: its sites conditioned on ``values``, each recorded as it is drawn.

    No noisy image is sampled at the site ``image``: programs look at canvases, never at a
    sample of the likelihood, and drawing one would cost a normal draw per pixel.
    """

    def __init__(self, values: Mapping[str, torch.Tensor], stop_at: str | None) -> None:
        super().__init__()
        self.values, self.stop_at = values, stop_at
        self.sites: dict[str, dict] = {}
        self.canvas: Any = None

    def _pyro_sample(self, msg: dict) -> None:
        name = msg["name"]
        if type(msg["fn"]).__name__ == "_Subsample":
            return
        if name == self.stop_at:
            self.sites[name] = {"fn": msg["fn"], "mask": msg["mask"], "value": None, "infer": msg["infer"],
                                "is_observed": msg["is_observed"]}
            raise _Stop
        if name in self.values:
            msg["value"] = self.values[name]
        elif name == IMAGE_SITE and msg["value"] is None:
            msg["value"] = torch.zeros((), device=_device_of(msg["fn"])).expand(msg["fn"].shape())
            msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if type(msg["fn"]).__name__ == "_Subsample":
            return
        self.sites[msg["name"]] = {"fn": msg["fn"], "mask": msg["mask"], "value": msg["value"],
                                   "infer": msg["infer"] or {}, "is_observed": msg["is_observed"]
                                   and msg["name"] not in self.values}


def _run_model(model: Callable, *, batch_size: int, values: Mapping[str, torch.Tensor] | None = None,
               image: torch.Tensor | None = None, steps: int | None = None,
               stop_at: str | None = None) -> _ModelRun:
    """Run ``model`` apart from any enclosing Pyro context, conditioned on ``values``."""
    run = _ModelRun(values or {}, stop_at)
    kwargs: dict[str, Any] = {"steps": steps} if steps is not None else {}
    with isolated(), run:
        try:
            if image is not None:
                run.canvas = model(image=image, **kwargs)
            else:
                run.canvas = model(batch_size=batch_size, **kwargs)
        except _Stop:
            pass
    return run


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """A run of the user's model outside the engine's Pyro context.

    The model is the program's renderer: engines call it inside their own plates (particles,
    chains), traces and replays, which must not see its sites, and whose plate dimensions
    must not shift the plate the model declares for its batch. Pyro keeps both in module
    state (the handler stack and the plate dimensions), which is set aside for the run.
    """
    stack, dims = runtime._PYRO_STACK[:], runtime._DIM_ALLOCATOR._stack
    runtime._PYRO_STACK.clear()
    runtime._DIM_ALLOCATOR._stack = []
    try:
        yield
    finally:
        runtime._PYRO_STACK[:] = stack
        runtime._DIM_ALLOCATOR._stack = dims


class _ReshapedLikelihood(dist.TorchDistribution):
    """The likelihood of canvases drawn as a flat batch, seen with the batch shape of ``rows``
    (each entry the row of ``flat`` it is): the shape the engine viewed the canvases with."""

    arg_constraints: dict = {}

    def __init__(self, flat: dist.Distribution, rows: torch.Tensor) -> None:
        self.flat, self.rows = flat, rows
        super().__init__(rows.shape, flat.event_shape, validate_args=False)

    @property
    def support(self):
        return self.flat.support

    def expand(self, batch_shape, _instance=None) -> "_ReshapedLikelihood":
        return _ReshapedLikelihood(self.flat, self.rows.expand(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event = self.event_shape
        shape = torch.broadcast_shapes(self.batch_shape, value.shape[: value.dim() - len(event)])
        rows = self.rows.expand(shape).reshape(-1)
        value = value.expand(*shape, *event).reshape(-1, *event)
        # Each canvas row is compared with the same number of images (broadcasting repeats
        # every row equally): put them side by side, as (repeats, rows), and score once.
        order = torch.argsort(rows.to(value.device), stable=True)
        repeats = rows.numel() // self.flat.batch_shape.numel()
        arranged = value[order].view(self.flat.batch_shape.numel(), repeats, *event).transpose(0, 1)
        scores = self.flat.expand((repeats, *self.flat.batch_shape)).log_prob(arranged).transpose(0, 1).reshape(-1)
        return torch.empty_like(scores).index_copy_(0, order, scores).view(shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        flat = self.flat.sample(sample_shape)
        index = self.rows.reshape(-1).to(flat.device)
        return flat.index_select(len(sample_shape), index).view(*sample_shape, *self.batch_shape, *self.event_shape)


# -- small helpers ----------------------------------------------------------------------------------------


def _takes_keyword(function: Callable, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _location_kind(name: str, location: Any, size: int) -> str:
    if location is None or location is False:
        return "scalar"
    grid = tuple(location) if isinstance(location, (tuple, list)) else None
    if grid is None or len(grid) != 2 or not all(isinstance(n, int) and n > 0 for n in grid) or grid[0] != grid[1] \
            or math.prod(grid) != size:
        side = math.isqrt(size)
        hint = f"({side}, {side})" if side * side == size else "a square grid (size must be rows * rows)"
        raise ValueError(f"component {name!r}: infer={{'location': ...}} must be (rows, cols) of a square grid of its "
                         f"{size} values, e.g. {hint}, got {location!r}")
    return "location"


def _same_memory(canvas: torch.Tensor, drawn: torch.Tensor) -> bool:
    """Whether ``canvas`` is the batch ``drawn``, viewed with another batch shape."""
    return (isinstance(canvas, torch.Tensor) and canvas.numel() == drawn.numel() and canvas.is_contiguous()
            and canvas.data_ptr() == drawn.data_ptr() and canvas.shape[-3:] == drawn.shape[-3:])


def _device_of(distribution: dist.Distribution) -> torch.device:
    try:
        return distribution.mean.device
    except (NotImplementedError, AttributeError):
        return torch.device("cpu")
