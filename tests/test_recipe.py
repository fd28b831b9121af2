"""SPIRAL's configuration and recipes: nested settings, phases run in order, resumed mid-phase."""

import csv
import json
import tomllib
from pathlib import Path

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import Decoding, SpiralConfig, recipe

pytestmark = pytest.mark.usefixtures("single_thread")  # small networks: one thread is faster


def brush_program(steps):
    brush = sp.renderers.Brush(canvas_size=16, grid_size=4, sizes=(8, 12), pressure_levels=2, compile=False)
    return sp.programs.PaintProgram(brush, steps=steps)


def rows(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


TOML = """
[policy]
channels = 8
lstm_size = 16
location_decoder = "spatial"

[a2c]
batch_size = 4
lr = 1e-3

[reward]
kind = "l2"
scale = 10.0

[train]
eval_every = 2
eval_size = 8
checkpoint_every = 2
log_every = 1

[[train.phases]]
kind = "a2c"
updates = 3
program_steps = 2

[[train.phases]]
kind = "self_imitation"
updates = 4
program_steps = 2
passes = 3
targets = 8
round_updates = 2
settings = { "a2c.lr" = 3e-4 }

[[train.phases]]
kind = "self_imitation"
updates = 2
passes = 2
targets = 4
round_updates = 1
"""


def test_the_toml_tables_are_the_configuration_one_to_one():
    config = SpiralConfig.from_dict(tomllib.loads(TOML))
    assert (config.policy.location_decoder, config.a2c.batch_size, config.reward.kind) == ("spatial", 4, "l2")
    assert [phase.kind for phase in config.train.phases] == ["a2c", "self_imitation", "self_imitation"]
    assert config.train.phases[1].settings == {"a2c.lr": 3e-4}
    assert SpiralConfig.from_dict(config.to_dict()) == config
    assert SpiralConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace({"a2c.entropy_cost": 0.0}).a2c.entropy_cost == 0.0 and config.a2c.entropy_cost == 0.01


@pytest.mark.parametrize("values, message", [
    ({"optimiser": {}}, r"unknown SpiralConfig sections \['optimiser'\]"),
    ({"a2c": {"policy_lr": 1e-3}}, r"unknown \[a2c\] settings \['policy_lr'\]"),
    ({"a2c": {"lr": 0}}, "a2c.lr must be positive"),
    ({"a2c": {"betas": [0.9, 1.5]}}, "a2c.betas must be two numbers"),
    ({"a2c": {"vtrace_c_clip": 2.0}}, "must not exceed"),
    ({"reward": {"kind": "l1"}}, "reward.kind must be one of"),
    ({"train": {"phases": [{"kind": "dream", "updates": 3}]}}, "phase kind must be one of"),
    ({"train": {"phases": [{"kind": "sleep"}]}}, "needs its length as updates or as minutes"),
    ({"train": {"phases": [{"kind": "sleep", "updates": 3, "minutes": 1.0}]}}, "one of the two"),
    ({"train": {"phases": [{"kind": "sleep", "minutes": -1.0}]}}, "phase minutes must be positive"),
    ({"train": {"phases": [{"kind": "sleep", "updates": 3}, {"kind": "a2c", "minutes": 1.0}]}},
     "mixes phases measured in updates with phases measured in minutes"),
    ({"train": {"phases": [{"kind": "self_imitation", "updates": 3, "search": "beam"}]}},
     "phase search must be one of"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 0}]}}, "phase updates must be a positive int"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "epochs": 2}]}}, r"unknown phase settings \['epochs'\]"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"policy.lstm_size": 8}}]}},
     "would change the networks' shapes"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"a2c.learning_rate": 1}}]}},
     "unknown setting 'a2c.learning_rate'"),
    ({"train": {"phases": [{"kind": "a2c", "updates": 3, "settings": {"train.phases": []}}]}},
     "cannot change train.phases"),
])
def test_bad_settings_are_named(values, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SpiralConfig.from_dict(values)


def test_small_takes_a_dict_per_section():
    assert SpiralConfig.small(a2c={"lr": 3e-4}).a2c.lr == 3e-4
    with pytest.raises(TypeError, match=r"small\(a2c=...\) takes a dict of a2c settings"):
        SpiralConfig.small(a2c=3e-4)


def test_a_recipe_runs_its_phases_retargets_and_resumes_in_the_middle_of_a_phase(tmp_path):
    torch.manual_seed(0)
    short = brush_program(2)
    actions = {c.name: torch.randint(0, c.size, (40, 2)) for c in short.action_space}
    images = short.render(actions)
    config = SpiralConfig.from_dict(tomllib.loads(TOML))
    agent = sp.inference.Spiral(brush_program(3), config=config, device="cpu")
    # A time limit that runs out in the middle of the first self-imitation phase.
    first = recipe.run(agent, images, tmp_path, program=brush_program, progress=False,
                       stop=lambda current: current.learner.updates >= 5)
    assert first.prog.steps == 2 and first.learner.updates in (5, 6)  # stopped mid-phase, after a chunk
    stopped_at = first.learner.updates
    # The checkpoint holds the stopped run; a new process resumes it from the file.
    resumed = sp.inference.Spiral.load(tmp_path / "checkpoint.pt", brush_program(2), device="cpu")
    assert resumed.learner.updates == stopped_at and resumed.config.a2c.lr == 3e-4  # the phase's setting
    final = recipe.run(resumed, images, tmp_path, program=brush_program, steps=3, progress=False)
    assert final.prog.steps == 3 and final.learner.updates == 9  # the last phase re-targeted it
    assert final.config.a2c.lr == 3e-4

    train = [int(row["update"]) for row in rows(tmp_path / "train.csv")]
    imitation = [int(row["update"]) for row in rows(tmp_path / "imitation.csv")]
    assert train == [1, 2, 3] and imitation == list(range(4, 10))  # every update once, in order
    evaluations = rows(tmp_path / "eval.csv")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["eval_l2"] == pytest.approx(min(float(row["eval_l2"]) for row in evaluations), rel=1e-5)
    assert sp.inference.Spiral.load(tmp_path / "best.pt").prog.steps in (2, 3)


def test_a_recipe_refuses_imitation_without_programs_and_retargeting_without_a_program_builder(tmp_path):
    prog = brush_program(2)
    images = prog.render({c.name: torch.randint(0, c.size, (20, 2)) for c in prog.action_space})
    imitation = SpiralConfig.small(train={"phases": [{"kind": "imitation", "updates": 2}], "eval_size": 4},
                                   reward={"kind": "l2"})
    with pytest.raises(ValueError, match="only MUJOCO SCENES"):
        recipe.run(sp.inference.Spiral(prog, config=imitation, device="cpu"), images, tmp_path)
    longer = SpiralConfig.small(train={"phases": [{"kind": "a2c", "updates": 1, "program_steps": 3}], "eval_size": 4},
                                reward={"kind": "l2"})
    with pytest.raises(ValueError, match="runs on 3-step programs and the agent's has 2"):
        recipe.run(sp.inference.Spiral(prog, config=longer, device="cpu"), images, tmp_path)
    with pytest.raises(ValueError, match="has no recipe"):
        recipe.run(sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}), device="cpu"),
                   images, tmp_path)


def test_decoding_is_one_value_saved_with_the_agent(tmp_path):
    torch.manual_seed(0)
    prog = brush_program(3)
    agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}), device="cpu")
    cold = agent.with_decoding(greedy_first=True, smc_tempering=0.01)
    assert cold.policy is agent.policy and agent.decoding == Decoding()  # a view, and the agent is unchanged
    assert (cold.smc().tempering, agent.smc().tempering) == (0.01, None)
    cold.save(tmp_path / "cold.pt", training_state=False)
    assert sp.inference.Spiral.load(tmp_path / "cold.pt", prog).decoding == cold.decoding
    with pytest.raises(ValueError, match="3 steps, one each"):
        agent.decoding = Decoding(smc_tempering=(0.5, 1.0))
    with pytest.raises(TypeError, match="decoding must be a Decoding"):
        agent.decoding = {"temperature": 0.5}


def test_a_shipped_agent_saved_in_the_current_format_acts_the_same(tmp_path):
    agent = sp.inference.Spiral.pretrained("scenes-recon-cpu", device="cpu")
    scenes = sp.data.MujocoScenes(size=4, seed=3, image_size=64, steps=10)
    targets = torch.stack([scenes[index][0] for index in range(4)])
    before = agent.infer(agent.prog, targets, sp.Budget(renders=10), seed=0)
    agent.save(tmp_path / "agent.pt", training_state=False)
    assert torch.load(tmp_path / "agent.pt", weights_only=True)["format"] == "spiral_ppl.Spiral/2"
    again = sp.inference.Spiral.load(tmp_path / "agent.pt", device="cpu")
    after = again.infer(again.prog, targets, sp.Budget(renders=10), seed=0)
    assert again.config == agent.config and again.decoding == agent.decoding
    assert all(torch.equal(before.actions[name], after.actions[name]) for name in before.actions)


# -- the label-free recipe: sleep, wake, self-imitation ------------------------------------------


def discs(steps=2):
    from tests.grammars import Discs

    return Discs(steps=steps)


def tiny_config(phases, **train):
    return SpiralConfig.small(policy={"channels": 8, "lstm_size": 32}, a2c={"batch_size": 16, "lr": 3e-3},
                              reward={"kind": "l2", "scale": 10.0}, train={"phases": phases, **train})


def prior_accuracy(agent, count=256, seed=99):
    """How often the policy's most probable value of each component, forced along programs drawn
    from the prior, is that program's, at the steps that draw a disc (an absent disc's other
    components are drawn but not seen, so nothing can predict them)."""
    from spiral_ppl.inference.spiral.rollout import rollout

    prog = agent.prog
    programs = prog.sample_prior(count, generator=torch.Generator().manual_seed(seed))
    images = prog.render(programs)
    drawn = programs["present"] == 1
    hits, total = 0, 0

    def forced(t, component, logits):
        nonlocal hits, total
        truth = programs[component.name][:, t]
        hits += int(((logits.argmax(-1) == truth) & drawn[:, t]).sum())
        total += int(drawn[:, t].sum())
        return truth

    with torch.no_grad():
        rollout(agent.policy, prog, count, images, choose=forced, draw_final=False)
    return hits / total


def test_sleep_learns_the_programs_own_prior_samples_without_any_data():
    torch.manual_seed(0)
    prog = discs()
    agent = sp.inference.Spiral(prog, config=tiny_config([{"kind": "sleep", "updates": 80}]), device="cpu")
    before = prior_accuracy(agent)
    rendered = prog.renders
    recipe.run(agent, progress=False)  # no data: sleep needs none
    assert agent.learner.updates == 80
    # Every update renders its 16 prior programs, then the policy's canvases along them after each
    # step but the last: 16 x 2 renders.
    assert prog.renders - rendered == 80 * 16 * prog.steps
    after = prior_accuracy(agent)
    assert after > before + 0.3, (before, after)


def test_self_imitation_lowers_the_one_pass_l2_on_its_targets():
    torch.manual_seed(0)
    prog = discs()
    targets = prog.render(prog.sample_prior(32, generator=torch.Generator().manual_seed(5)))
    phases = [{"kind": "sleep", "updates": 30},
              {"kind": "self_imitation", "updates": 40, "passes": 8, "targets": 32, "round_updates": 4}]
    agent = sp.inference.Spiral(prog, config=tiny_config(phases), device="cpu")
    recipe.run(agent, targets, phases=(agent.config.train.phases[0],), progress=False)

    def one_pass():
        return float(sp.programs.base.mean_squared_error(agent.one_pass(targets), targets).mean())

    before = one_pass()
    recipe.run(agent, targets, progress=False)  # the sleep phase is done: self-imitation alone runs
    assert agent.learner.updates == 70
    assert one_pass() < 0.8 * before


def test_self_imitation_evaluates_and_checkpoints_once_at_each_cadence(tmp_path):
    # Rounds of 4 updates against evaluations every 6 and checkpoints every 5: rounds are cut
    # so that both happen exactly at their updates, once each.
    torch.manual_seed(0)
    prog = discs()
    images = prog.render(prog.sample_prior(24, generator=torch.Generator().manual_seed(3)))
    phases = [{"kind": "self_imitation", "updates": 13, "passes": 2, "targets": 6, "round_updates": 4}]
    agent = sp.inference.Spiral(prog, config=tiny_config(phases, eval_every=6, eval_size=4, checkpoint_every=5,
                                                         keep_checkpoints=1), device="cpu")
    saved = []
    original = sp.inference.Spiral.save
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sp.inference.Spiral, "save",
                      lambda self, path, **options: (saved.append((self.learner.updates, Path(path).name)),
                                                     original(self, path, **options)))
        recipe.run(agent, images, tmp_path, progress=False)
    evaluated = [int(line.split(",")[0]) for line in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert evaluated == [6, 12, 13]  # the phase's last update is evaluated too
    assert [update for update, name in saved if name == "checkpoint.pt"] == [5, 10, 13]


def sleeping_teacher(tmp_path, prog, updates=80):
    """A conditional agent taught ``prog``'s prior by sleep, saved in ``tmp_path``; its path."""
    torch.manual_seed(0)
    teacher = sp.inference.Spiral(prog, config=tiny_config([{"kind": "sleep", "updates": updates}]), device="cpu")
    recipe.run(teacher, progress=False)
    teacher.save(tmp_path / "teacher.pt", training_state=False)
    return tmp_path / "teacher.pt"


def test_distillation_teaches_an_unconditional_student_to_paint_what_the_teacher_finds(tmp_path):
    # The teacher sees 16x16 images (its targets are the student's 32x32 ones, averaged down);
    # the student is unconditional, so all it can learn is the data the teacher explains: one
    # disc, always at grid cell 18.
    from spiral_ppl.programs.reference import resolve_program

    teacher = sleeping_teacher(tmp_path, resolve_program("tests.grammars:SmallDiscs", {"steps": 1}))
    prog = discs(steps=1)
    generator = torch.Generator().manual_seed(4)
    programs = {"present": torch.ones(64, 1, dtype=torch.long), "centre": torch.full((64, 1), 18),
                "radius": torch.randint(3, (64, 1), generator=generator),
                "intensity": torch.randint(4, (64, 1), generator=generator)}
    images = prog.render(programs)
    phases = [{"kind": "distillation", "teacher": str(teacher), "updates": 24, "passes": 4, "targets": 16,
               "round_updates": 4}]
    torch.manual_seed(1)
    config = tiny_config(phases).replace({"reward.kind": "critic"})
    student = sp.inference.Spiral(prog, conditional=False, config=config, device="cpu")

    def at_cell_18():
        samples = student.sample(256, seed=0).programs
        return float(((samples["present"] == 1) & (samples["centre"] == 18)).float().mean())

    before = at_cell_18()
    recipe.run(student, images, progress=False)
    assert student.learner.updates == 24
    assert before < 0.1 and at_cell_18() > 0.6, (before, at_cell_18())


def test_a_teacher_that_cannot_label_the_students_programs_is_named_before_any_update(tmp_path):
    from spiral_ppl.programs.reference import resolve_program
    from tests.grammars import Switches

    prog = resolve_program("tests.grammars:Discs", {"steps": 1})  # a program its agent files can rebuild
    teacher = sleeping_teacher(tmp_path, prog, updates=1)

    def run_with(teacher_source, student=prog, **options):
        phases = [{"kind": "distillation", "teacher": str(teacher_source), "updates": 1, **options}]
        agent = sp.inference.Spiral(student, config=tiny_config(phases), device="cpu")
        recipe.run(agent, student.render(student.sample_prior(8, generator=torch.Generator().manual_seed(0))),
                   progress=False)
        return agent

    assert run_with(teacher).learner.updates == 1
    with pytest.raises(ValueError, match="distillation phase teacher 'no-such-agent' is neither a pretrained agent"):
        run_with("no-such-agent")
    with pytest.raises(ValueError, match="is a folder; give the agent file in it"):
        run_with(tmp_path)
    with pytest.raises(ValueError, match="paints 1-step programs and the phase runs on 2-step ones"):
        run_with(teacher, discs(steps=2))
    with pytest.raises(ValueError, match="differs from the student's program in"):
        run_with(teacher, Switches(steps=1))
    unconditional = sp.inference.Spiral(prog, conditional=False, config=tiny_config([]).replace(
        {"reward.kind": "critic"}), device="cpu")
    unconditional.save(tmp_path / "unconditional.pt", training_state=False)
    with pytest.raises(ValueError, match="does not read its targets"):
        run_with(tmp_path / "unconditional.pt")
    with pytest.raises(ValueError, match="distillation phase teacher must be text"):
        recipe.Phase("distillation", updates=1)
    with pytest.raises(ValueError, match="a self_imitation phase has no teacher"):
        recipe.Phase("self_imitation", updates=1, teacher="mnist-recon-cpu")


def test_a_run_resumed_past_its_distillation_no_longer_needs_the_teacher(tmp_path):
    from spiral_ppl.programs.reference import resolve_program

    prog = resolve_program("tests.grammars:Discs", {"steps": 1})
    teacher = sleeping_teacher(tmp_path, prog, updates=1)
    images = prog.render(prog.sample_prior(8, generator=torch.Generator().manual_seed(0)))
    phases = [{"kind": "distillation", "teacher": str(teacher), "updates": 2, "targets": 4, "round_updates": 2},
              {"kind": "sleep", "updates": 2}]
    agent = sp.inference.Spiral(prog, config=tiny_config(phases, checkpoint_every=1), device="cpu")
    recipe.run(agent, images, tmp_path / "run", progress=False, stop=lambda agent: agent.learner.updates >= 3)
    teacher.unlink()
    resumed = recipe.run(sp.inference.Spiral.load(tmp_path / "run" / "checkpoint.pt", device="cpu"), images,
                         tmp_path / "run", progress=False)
    assert resumed.learner.updates == 4


@pytest.mark.parametrize("search", ["passes", "smc"])
def test_a_label_free_recipe_resumed_mid_phase_is_the_uninterrupted_run(tmp_path, search):
    prog = discs()
    images = prog.render(prog.sample_prior(40, generator=torch.Generator().manual_seed(3)))
    phases = [{"kind": "sleep", "updates": 3},
              {"kind": "self_imitation", "updates": 5, "passes": 2, "targets": 6, "round_updates": 2,
               "search": search},
              {"kind": "a2c", "updates": 2}]
    config = tiny_config(phases, checkpoint_every=1)

    def fresh():
        torch.manual_seed(0)
        return sp.inference.Spiral(prog, config=config, device="cpu")

    whole = recipe.run(fresh(), images, tmp_path / "whole", progress=False)
    for stop_at in (2, 5, 9):  # in the middle of the sleep, self-imitation and A2C phases
        out = tmp_path / f"stopped_{stop_at}"
        recipe.run(fresh(), images, out, progress=False, stop=lambda agent: agent.learner.updates >= stop_at)
        resumed = sp.inference.Spiral.load(out / "checkpoint.pt", prog, device="cpu")
        assert resumed.learner.updates == stop_at
        resumed = recipe.run(resumed, images, out, progress=False)
        assert resumed.learner.updates == whole.learner.updates == 10
        for name, value in whole.policy.state_dict().items():
            assert torch.equal(value, resumed.policy.state_dict()[name]), (stop_at, name)


class GuardedPrograms(dict):
    """Ground-truth programs that fail the test if anything reads them."""

    def __getitem__(self, name):
        raise AssertionError("training read a ground-truth program")

    def values(self):
        raise AssertionError("training read a ground-truth program")

    items = keys = __iter__ = values


class Pictures(torch.utils.data.Dataset):
    """Images alone, or each with a ground-truth program that nothing may read (as MUJOCO SCENES ships them)."""

    def __init__(self, images, with_programs):
        self.images, self.with_programs = images, with_programs

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return (self.images[index], GuardedPrograms()) if self.with_programs else self.images[index]


@pytest.mark.parametrize("with_programs", [True, False], ids=["with-programs", "images-only"])
def test_fit_in_minutes_runs_the_default_label_free_schedule_and_never_reads_programs(with_programs):
    torch.manual_seed(0)
    prog = discs()
    images = prog.render(prog.sample_prior(24, generator=torch.Generator().manual_seed(4)))
    agent = sp.inference.Spiral(prog, config=tiny_config([]), device="cpu")
    history = agent.fit(Pictures(images, with_programs), minutes=0.05, progress=False)
    kinds = ["sleep" if row["seconds"] <= 0.5 * 0.05 * 60 else "self_imitation" for row in history]
    assert kinds[0] == "sleep" and kinds[-1] == "self_imitation"  # both phases of the default schedule ran
    assert history[-1]["seconds"] >= 0.05 * 60 and agent.learner.updates == len(history)
    assert agent.config.a2c.lr == recipe.DEFAULT_SCHEDULE[-1][2]["a2c.lr"]  # the phases' settings applied
    again = agent.fit(images, minutes=0.02, progress=False)  # a second call trains that much more
    assert again[0]["update"] == len(history) + 1 and again[-1]["seconds"] >= history[-1]["seconds"] + 0.02 * 60


def test_fit_takes_steps_or_minutes():
    prog = discs()
    images = prog.render(prog.sample_prior(8))
    agent = sp.inference.Spiral(prog, config=tiny_config([]), device="cpu")
    for arguments in ({}, {"steps": 2, "minutes": 1.0}):
        with pytest.raises(ValueError, match="fit takes steps= .* or minutes="):
            agent.fit(images, **arguments)
    with pytest.raises(ValueError, match="minutes must be positive"):
        agent.fit(images, minutes=0)
    assert len(agent.fit(images, steps=2, progress=False)) == 2  # A2C updates, as before
    with pytest.raises(ValueError, match="recipe's a2c phases train on data: pass data"):
        recipe.run(agent, phases=(recipe.Phase("a2c", 1),))


def test_identical_phases_each_run_their_length():
    prog = discs()
    agent = sp.inference.Spiral(prog, config=tiny_config([{"kind": "sleep", "updates": 2}] * 2), device="cpu")
    recipe.run(agent, progress=False)
    assert agent.learner.updates == 4
