"""Mistakes a new user makes at the public entry points are refused at the boundary.

Each case calls one entry point with one kind of mistake and expects a ``ValueError`` or
``TypeError`` whose message names the argument, rather than a failure deep inside torch,
numpy or Pyro, or silent acceptance. Cases are grouped by kind of mistake; each is cheap.
"""

import numpy as np
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl import metrics, plots
from spiral_ppl.inference.spiral import Phase, SpiralConfig, recipe
from spiral_ppl.squared_error import squared_error

BRUSH = sp.renderers.Brush(canvas_size=8, grid_size=3, compile=False)
PROG = sp.programs.PaintProgram(BRUSH, steps=2)
IMAGES = torch.rand(2, 1, 8, 8)
ACTIONS = {c.name: torch.zeros(2, 2, dtype=torch.long) for c in PROG.action_space}
STEP = {c.name: torch.zeros(2, dtype=torch.long) for c in PROG.action_space}
LINE = np.array([[0.0, 0.0], [4.0, 0.0]])
#: Far beyond the memory of any machine: every engine must refuse it before starting.
HUGE = sp.Budget(renders=10**15)


@pytest.fixture(scope="module")
def agent():
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=2)
    config = SpiralConfig.small(a2c={"batch_size": 4}, reward={"kind": "l2"})
    return sp.inference.Spiral(prog, config=config, device="cpu")


def refuses(call, error, match):
    with pytest.raises(error, match=match):
        call()


WRONG_TYPES = [
    pytest.param(lambda: sp.renderers.Brush(background="white"), ValueError, "background must be", id="brush-background-str"),
    pytest.param(lambda: sp.renderers.MujocoScene(sizes=5), ValueError, "sizes must be a non-empty list", id="scene-sizes-int"),
    pytest.param(lambda: BRUSH.step((1, 2), STEP), TypeError, "state must be a BrushState", id="brush-step-tuple-state"),
    pytest.param(lambda: BRUSH.canvas(None), TypeError, "state must be a BrushState", id="brush-canvas-none"),
    pytest.param(lambda: BRUSH.grid_to_pixels([1, 2]), TypeError, "index must be a tensor", id="grid-to-pixels-list"),
    pytest.param(lambda: sp.programs.PaintProgram(BRUSH, priors=[1, 2]), TypeError, "priors must be a dict", id="priors-list"),
    pytest.param(lambda: sp.programs.PaintProgram(BRUSH, priors={"flag": "ab"}), ValueError, "prior of 'flag' must be probabilities", id="prior-str"),
    pytest.param(lambda: sp.programs.PaintProgram(BRUSH, likelihood=3), TypeError, "likelihood must be a function", id="likelihood-int"),
    pytest.param(lambda: PROG.sample_prior(2, generator=0), TypeError, "generator must be a torch.Generator", id="generator-int"),
    pytest.param(lambda: PROG.model(batch_size="2"), ValueError, "batch_size must be a positive int", id="model-batch-size-str"),
    pytest.param(lambda: PROG.prior(1.0, "flag"), ValueError, "step must be an int", id="prior-step-float"),
    pytest.param(lambda: PROG.log_likelihood(IMAGES, IMAGES.numpy()), ValueError, "images must be a tensor of images", id="log-likelihood-numpy"),
    pytest.param(lambda: sp.programs.PixelNormal(IMAGES, "0.5"), ValueError, "scale must be positive", id="pixel-normal-scale-str"),
    pytest.param(lambda: squared_error(IMAGES.numpy(), IMAGES.numpy()), ValueError, "images must be a tensor of images", id="squared-error-numpy"),
    pytest.param(lambda: sp.inference.effective_sample_size([1.0, 2.0]), TypeError, "log_weights must be a float tensor", id="ess-list"),
    pytest.param(lambda: sp.inference.BlockedMetropolisHastings(PROG).setup("5", IMAGES), ValueError, "warmup_steps must be a non-negative int", id="mh-setup-warmup-str"),
    pytest.param(lambda: sp.inference.enumerate_posterior(PROG, IMAGES, max_programs="10"), ValueError, "max_programs must be a positive int", id="enumerate-max-programs-str"),
    pytest.param(lambda: sp.compare(PROG, IMAGES, {"is": sp.inference.Importance()}, budgets=100), TypeError, "budgets must be ints in a list", id="compare-budgets-int"),
    pytest.param(lambda: sp.compare(PROG, IMAGES, {"is": sp.inference.Importance()}, budgets="10"), TypeError, "budgets must be ints in a list", id="compare-budgets-str"),
    pytest.param(lambda: sp.compare(PROG, IMAGES, {"is": sp.inference.Importance()}, budgets=[10], seeds=0), TypeError, "seeds must be ints in a list", id="compare-seeds-int"),
    pytest.param(lambda: sp.Comparison().to_csv(123), TypeError, "path must be a file path", id="to-csv-int"),
    pytest.param(lambda: metrics.chamfer_distance(LINE, LINE), TypeError, "paths_a must be a list of pen paths", id="chamfer-one-path"),
    pytest.param(lambda: metrics.chamfer_distance([LINE], [LINE], spacing="0.5"), ValueError, "spacing must be positive", id="chamfer-spacing-str"),
    pytest.param(lambda: metrics.pen_paths("brush", STEP), TypeError, "renderer must be a paint renderer", id="pen-paths-renderer-str"),
    pytest.param(lambda: metrics.parsing_scores(None, []), TypeError, "inferred must be a list of pen paths", id="parsing-scores-none"),
    pytest.param(lambda: plots.plot_curves([1]), TypeError, "results must be a dict", id="plot-curves-list"),
    pytest.param(lambda: plots.reconstruction_grid(IMAGES.numpy(), {}), TypeError, "targets must be a tensor of images", id="grid-numpy"),
    pytest.param(lambda: plots.stroke_decomposition(BRUSH, ACTIONS), TypeError, "prog must be a spiral_ppl.programs.Program", id="strokes-renderer"),
    pytest.param(lambda: plots.training_curve(3), TypeError, "points must be a list", id="training-curve-int"),
    pytest.param(lambda: plots.plot_population([1, 2]), ValueError, "each history row must be a dict", id="population-ints"),
    pytest.param(lambda: SpiralConfig().replace("a2c.lr=1"), TypeError, "changes must be a dict", id="config-replace-str"),
    pytest.param(lambda: SpiralConfig.small(a2c={"discount": "1"}), ValueError, "a2c.discount must be a number", id="discount-str"),
    pytest.param(lambda: SpiralConfig.small(train={"phases": Phase("sleep", updates=1)}), TypeError, "train.phases must be a list", id="phases-one-phase"),
    pytest.param(lambda: Phase.from_dict("sleep"), TypeError, "a phase must be a dict", id="phase-from-str"),
    pytest.param(lambda: sp.inference.spiral.RayEpisodes(restart_timeout="300"), ValueError, "restart_timeout must be positive", id="ray-timeout-str"),
]


@pytest.mark.parametrize(("call", "error", "match"), WRONG_TYPES)
def test_wrong_types_are_refused_by_name(call, error, match):
    refuses(call, error, match)


AGENT_WRONG_TYPES = [
    pytest.param(lambda a: sp.inference.Spiral(a.prog, a.config), TypeError, "pass the configuration by name", id="config-positional"),
    pytest.param(lambda a: a.fit(torch.rand(4, 1, 16, 16), steps=1, callback=3), TypeError, "callback must be a function", id="fit-callback"),
    pytest.param(lambda a: a.fit(torch.rand(4, 1, 16, 16), steps=1, log_dir=3), TypeError, "log_dir must be a file path", id="fit-log-dir"),
    pytest.param(lambda a: a.fit(torch.rand(4, 1, 16, 16), steps=1, checkpoint=3), TypeError, "checkpoint must be a file path", id="fit-checkpoint"),
    pytest.param(lambda a: a.evaluate(torch.rand(2, 1, 16, 16), update="x"), ValueError, "update must be a non-negative int", id="evaluate-update"),
    pytest.param(lambda a: a.imitate((np.zeros((4, 1, 16, 16)), {}), steps=1), TypeError, "the images of data", id="imitate-numpy"),
    pytest.param(lambda a: a.imitate((torch.rand(4, 1, 16, 16), [1, 2]), steps=1), TypeError, "the programs of data .* must be a dict", id="imitate-programs-list"),
    pytest.param(lambda a: a.imitate([torch.rand(4, 1, 16, 16), {}], steps=1), TypeError, "make the list a tuple", id="imitate-list-pair"),
    pytest.param(lambda a: a.save(3), TypeError, "path must be a file path", id="save-int"),
    pytest.param(lambda a: sp.inference.Spiral.load(3), TypeError, "path must be a file path", id="load-int"),
    pytest.param(lambda a: a.set_hyperparameters("a2c.lr=1"), TypeError, "changes must be a dict", id="set-hyperparameters-str"),
    pytest.param(lambda a: recipe.run(a, phases="sleep"), TypeError, "phases must be a list of phases", id="recipe-phases-str"),
    pytest.param(lambda a: recipe.run("agent"), TypeError, "agent must be a spiral_ppl.inference.Spiral", id="recipe-agent-str"),
]


@pytest.mark.parametrize(("call", "error", "match"), AGENT_WRONG_TYPES)
def test_wrong_types_given_to_an_agent_are_refused_by_name(agent, call, error, match):
    refuses(lambda: call(agent), error, match)


SWITCHES = [
    pytest.param(lambda: sp.renderers.Brush(compile="false"), "compile must be true, false or None", id="brush-compile"),
    pytest.param(lambda: sp.renderers.Brush(compile=0), "compile must be true, false or None", id="brush-compile-0"),
    pytest.param(lambda: sp.renderers.MujocoScene(shadows="false"), "shadows must be true or false", id="scene-shadows"),
    pytest.param(lambda: sp.inference.Importance(progress="false"), "progress must be true, false or None", id="importance-progress"),
    pytest.param(lambda: sp.inference.MCMC(progress=0), "progress must be true, false or None", id="mcmc-progress"),
    pytest.param(lambda: sp.inference.SMC(progress="no"), "progress must be true, false or None", id="smc-progress"),
    pytest.param(lambda: squared_error(IMAGES, IMAGES, compile="no"), "compile must be true, false or None", id="squared-error-compile"),
]


@pytest.mark.parametrize(("call", "match"), SWITCHES)
def test_strings_and_numbers_are_not_taken_for_switches(call, match):
    refuses(call, ValueError, match)


@pytest.mark.parametrize("call", [
    pytest.param(lambda a: a.fit(torch.rand(4, 1, 16, 16), steps=1, progress="false"), id="fit"),
    pytest.param(lambda a: a.imitate((torch.rand(4, 1, 16, 16), {}), steps=1, progress="no"), id="imitate"),
    pytest.param(lambda a: a.save("unused.pt", training_state="false"), id="save"),
])
def test_an_agent_takes_no_string_for_a_switch(agent, call):
    refuses(lambda: call(agent), ValueError, "(progress|training_state) must be true")


BOOLS_FOR_NUMBERS = [
    pytest.param(lambda: sp.renderers.Brush(width_scale=True), "width_scale must be positive", id="width-scale"),
    pytest.param(lambda: sp.renderers.Brush(softness=True), "softness must be a number in", id="softness"),
    pytest.param(lambda: sp.renderers.Brush(opacity_exponent=True), "opacity_exponent must be a number in", id="opacity"),
    pytest.param(lambda: SpiralConfig.small(a2c={"discount": True}), "a2c.discount must be a number in", id="discount"),
    pytest.param(lambda: PROG.model(batch_size=True), "batch_size must be a positive int", id="model-batch-size"),
    pytest.param(lambda: sp.inference.enumerate_posterior(PROG, IMAGES, max_programs=True), "max_programs must be a positive int", id="max-programs"),
]


@pytest.mark.parametrize(("call", "match"), BOOLS_FOR_NUMBERS)
def test_true_and_false_are_not_numbers(call, match):
    refuses(call, ValueError, match)


OUT_OF_RANGE = [
    pytest.param(lambda: PROG.model(batch_size=0), "batch_size must be a positive int", id="model-batch-size-0"),
    pytest.param(lambda: PROG.prior(5, "flag"), r"step must be an int in \[0, 1\]", id="prior-step-5"),
    pytest.param(lambda: sp.inference.BlockedMetropolisHastings(PROG).setup(-5, IMAGES), "warmup_steps must be a non-negative int", id="mh-warmup-negative"),
    pytest.param(lambda: sp.inference.enumerate_posterior(PROG, IMAGES, max_programs=-1), "max_programs must be a positive int", id="max-programs-negative"),
    pytest.param(lambda: sp.compare(PROG, IMAGES, {"is": sp.inference.Importance()}, budgets=[4], seeds=[0, -1]), r"seeds must be ints in \[0, 2\*\*32\)", id="compare-seed-negative"),
    pytest.param(lambda: metrics.chamfer_distance([LINE], [LINE], spacing=0), "spacing must be positive", id="chamfer-spacing-0"),
    pytest.param(lambda: metrics.chamfer_distance([LINE], [LINE], spacing=-1.0), "spacing must be positive", id="chamfer-spacing-negative"),
    pytest.param(lambda: metrics.chamfer_distance([np.array([[np.nan, 0.0], [4.0, 0.0]])], [LINE]), r"paths_a\[0\] holds NaN", id="chamfer-nan-points"),
    pytest.param(lambda: metrics.pen_paths(BRUSH, {n: torch.ones(2, dtype=torch.long) for n in STEP}, points_per_step=1), "points_per_step must be an int of at least 2", id="points-per-step-1"),
    pytest.param(lambda: metrics.pen_paths(BRUSH, {"flag": torch.ones(2, dtype=torch.long), "end_point": torch.tensor([99, 2]), "control_point": torch.tensor([1, 2])}), r"action 'end_point' must lie in \[0, 8\]", id="pen-paths-off-grid"),
    pytest.param(lambda: plots.stroke_decomposition(PROG, ACTIONS, columns=0), "columns must be a positive int", id="columns-0"),
    pytest.param(lambda: plots.high_resolution(BRUSH, ACTIONS, scale=0), "scale must be a positive int", id="scale-0"),
    pytest.param(lambda: sp.renderers.MyPaint(dtime=True), "dtime must be a number in", id="mypaint-dtime-bool"),
]


@pytest.mark.parametrize(("call", "match"), OUT_OF_RANGE)
def test_numbers_out_of_range_are_refused_by_name(call, match):
    refuses(call, ValueError, match)


WRONG_SHAPES = [
    pytest.param(lambda: PROG.log_likelihood(IMAGES, torch.rand(2, 1, 4, 4)), ValueError, r"images must be a tensor of images \(\.\.\., 1, 8, 8\)", id="log-likelihood"),
    pytest.param(lambda: squared_error(IMAGES, torch.rand(3, 1, 8, 8)), ValueError, "cannot be compared", id="squared-error"),
    pytest.param(lambda: metrics.chamfer_distance([np.array([0.0, 1.0])], [LINE]), ValueError, r"paths_a\[0\] must be a pen path", id="chamfer-flat-path"),
    pytest.param(lambda: plots.reconstruction_grid(IMAGES[0], {}), ValueError, "targets must be a non-empty batch", id="grid-no-batch"),
    pytest.param(lambda: plots.reconstruction_grid(IMAGES, {"a": IMAGES[:1]}), ValueError, r"reconstructions\['a'\] has 1 images for 2 targets", id="grid-too-few"),
]


@pytest.mark.parametrize(("call", "error", "match"), WRONG_SHAPES)
def test_wrong_shapes_are_refused_rather_than_broadcast(call, error, match):
    refuses(call, error, match)


def test_programs_and_images_of_different_counts_are_refused(agent):
    programs = {c.name: torch.zeros(3, 2, dtype=torch.long) for c in agent.prog.action_space}
    refuses(lambda: agent.imitate((torch.rand(4, 1, 16, 16), programs), steps=1), ValueError, "one program per image")


WRONG_DTYPES = [
    pytest.param(lambda: BRUSH.step_and_compare(BRUSH.initial_state(2), STEP, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), "targets must be float images", id="step-and-compare-uint8"),
    pytest.param(lambda: plots.reconstruction_grid((IMAGES * 255).to(torch.uint8), {}), "targets must be float images", id="grid-uint8"),
    pytest.param(lambda: metrics.pen_paths(BRUSH, {n: torch.ones(2) for n in STEP}), "action 'flag' must be an integer tensor", id="pen-paths-float"),
]


@pytest.mark.parametrize(("call", "match"), WRONG_DTYPES)
def test_wrong_dtypes_are_refused(call, match):
    refuses(call, TypeError, match)


def test_float64_targets_are_the_same_targets_to_an_agent(agent):
    targets = torch.rand(3, 1, 16, 16)
    single = agent.infer(agent.prog, targets, sp.Budget(renders=4), seed=0)
    double = agent.infer(agent.prog, targets.double(), sp.Budget(renders=4), seed=0)
    assert torch.equal(single.images, double.images)
    guided = sp.inference.Importance(agent.guide).infer(agent.prog, targets.double(), sp.Budget(renders=4), seed=0)
    assert guided.images.shape == targets.shape


EMPTY = [
    pytest.param(lambda: sp.Comparison().write_report("unused", PROG, IMAGES, "t"), "holds no results", id="empty-report"),
    pytest.param(lambda: plots.plot_curves({}), "results is empty", id="empty-curves"),
    pytest.param(lambda: plots.reconstruction_grid(IMAGES[:0], {}), "targets must be a non-empty batch", id="empty-grid"),
]


@pytest.mark.parametrize(("call", "match"), EMPTY)
def test_empty_inputs_are_refused(call, match):
    refuses(call, ValueError, match)


def test_an_empty_set_of_programs_to_imitate_is_refused(agent):
    programs = {c.name: torch.zeros(0, 2, dtype=torch.long) for c in agent.prog.action_space}
    refuses(lambda: agent.imitate((torch.rand(0, 1, 16, 16), programs), steps=1), ValueError, "data holds no programs")


UNKNOWN_NAMES = [
    pytest.param(lambda: PROG.prior(0, "colour"), "component must be one of", id="prior-component"),
    pytest.param(lambda: BRUSH.initial_state(2, device="gpu"), "device must be a torch device", id="brush-device"),
    pytest.param(lambda: BRUSH.render(ACTIONS, device="gpu"), "device must be a torch device", id="render-device"),
    pytest.param(lambda: PROG.sample_prior(2, device="gpu"), "device must be a torch device", id="sample-prior-device"),
    pytest.param(lambda: sp.inference.Spiral(PROG, device="gpu"), "device must be a torch device", id="agent-device"),
]


@pytest.mark.parametrize(("call", "match"), UNKNOWN_NAMES)
def test_unknown_names_are_refused_with_the_known_ones(call, match):
    refuses(call, ValueError, match)


def test_a_folder_is_no_checkpoint_file(agent, tmp_path):
    refuses(lambda: agent.save(tmp_path), ValueError, "is a folder; give the checkpoint a file name")


TOO_LARGE = [
    pytest.param(lambda: sp.inference.Importance().infer(PROG, IMAGES, HUGE), id="importance"),
    pytest.param(lambda: sp.inference.MCMC(chains=2).infer(PROG, IMAGES, HUGE), id="mcmc"),
    pytest.param(lambda: sp.inference.SMC().infer(PROG, IMAGES, HUGE), id="smc"),
    pytest.param(lambda: sp.inference.enumerate_posterior(PROG, IMAGES, max_programs=10**30), id="enumeration"),
    pytest.param(lambda: sp.programs.PaintProgram(BRUSH, steps=10**12), id="program-steps"),
    pytest.param(lambda: PROG.sample_prior(10**15), id="sample-prior"),
    pytest.param(lambda: BRUSH.initial_state(10**15), id="brush-batch"),
    pytest.param(lambda: sp.renderers.Brush(canvas_size=10**8, grid_size=3).initial_state(1), id="brush-canvas"),
    pytest.param(lambda: metrics.chamfer_distance([np.array([[0.0, 0.0], [1e15, 0.0]])], [LINE]), id="chamfer"),
]


@pytest.mark.parametrize("call", TOO_LARGE)
def test_work_that_cannot_fit_in_memory_is_refused_up_front_with_the_estimate(call):
    refuses(call, ValueError, r"would need about [\d,.]+ GiB of memory, more than this machine's")


def test_an_agent_refuses_a_budget_that_cannot_fit(agent):
    refuses(lambda: agent.infer(agent.prog, torch.rand(2, 1, 16, 16), HUGE), ValueError, r"would need about [\d,.]+ GiB")


def test_long_paths_are_compared_in_blocks_with_the_same_distance(monkeypatch):
    first = [np.array([[0.0, 0.0], [40.0, 3.0]]), np.array([[5.0, 5.0], [5.0, 30.0]])]
    second = [np.array([[1.0, 0.0], [38.0, 9.0], [20.0, 20.0]])]
    whole = metrics.chamfer_distance(first, second)
    monkeypatch.setattr(metrics, "DISTANCE_ROWS", 7)
    assert metrics.chamfer_distance(first, second) == whole
