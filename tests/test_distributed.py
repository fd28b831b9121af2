"""Distributed SPIRAL: V-trace, replayed episodes, and rollout workers and PBT on a local Ray cluster.

The maths (V-trace, replay, the off-policy learner) is tested without Ray. The rest starts
one local Ray cluster of 2 CPUs for the module, skipped where Ray is not installed (it is
the optional extra ``spiral_ppl[distributed]``).
"""

import copy
import os
import signal
import subprocess
import sys

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import RayEpisodes, SpiralConfig, replay, rollout, vtrace
from spiral_ppl.inference.spiral.episodes import episode_source
from spiral_ppl.inference.spiral.rewards import discounted_returns


@pytest.fixture(autouse=True)
def one_thread(single_thread):
    yield


def small_agent(reward="l2", conditional=True, batch_size=8, **overrides):
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=3)
    config = SpiralConfig.small(**overrides, a2c={"batch_size": batch_size}, reward={"scale": 10.0})
    return sp.inference.Spiral(prog, conditional=conditional, config=config.replace({"reward.kind": reward}),
                               device="cpu")


def targets_for(prog, count=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return prog.render({c.name: torch.randint(0, c.size, (count, prog.steps), generator=generator)
                        for c in prog.action_space})


# -- V-trace and replay: no Ray needed ------------------------------------------------------------


def test_vtrace_on_policy_is_the_discounted_return_and_a2c_advantage():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    targets = vtrace(torch.zeros(5, 7), rewards, values, discount=0.9)
    returns = discounted_returns(rewards, 0.9)
    torch.testing.assert_close(targets.values, returns)
    torch.testing.assert_close(targets.advantages, returns - values)


def test_vtrace_matches_its_definition_off_policy():
    """v_s = V_s + sum_t gamma^(t-s) (prod_{i<t} c_i) rho_t (r_t + gamma V_{t+1} - V_t), by brute force."""
    generator = torch.Generator().manual_seed(1)
    batch, steps, gamma, rho_clip, c_clip = 3, 6, 0.95, 1.5, 0.8
    log_rhos = torch.randn(batch, steps, generator=generator)
    rewards, values = torch.randn(batch, steps, generator=generator), torch.randn(batch, steps, generator=generator)
    targets = vtrace(log_rhos, rewards, values, discount=gamma, rho_clip=rho_clip, c_clip=c_clip)
    ratio = log_rhos.exp()
    rho, c = ratio.clamp(max=rho_clip), ratio.clamp(max=c_clip)
    next_value = lambda b, t: values[b, t + 1] if t + 1 < steps else 0.0  # noqa: E731
    expected = torch.zeros(batch, steps)
    for b in range(batch):
        for s in range(steps):
            total = values[b, s].item()
            for t in range(s, steps):
                trace = torch.prod(c[b, s:t]).item()
                total += gamma ** (t - s) * trace * rho[b, t].item() * (
                    rewards[b, t].item() + gamma * float(next_value(b, t)) - values[b, t].item())
            expected[b, s] = total
    torch.testing.assert_close(targets.values, expected, rtol=1e-5, atol=1e-5)
    next_target = torch.cat([expected[:, 1:], torch.zeros(batch, 1)], dim=1)
    torch.testing.assert_close(targets.advantages, rho * (rewards + gamma * next_target - values),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="c_clip <= rho_clip"):
        vtrace(log_rhos, rewards, values, discount=gamma, rho_clip=0.5, c_clip=1.0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        vtrace(log_rhos[:, :2], rewards, values, discount=gamma)


@pytest.mark.parametrize("blind", [False, True])
def test_replaying_recorded_canvases_gives_the_rollouts_log_probs_and_values(blind):
    agent = small_agent()
    prog, targets = agent.prog, targets_for(agent.prog, 6)
    torch.manual_seed(3)
    with torch.no_grad():
        episode = rollout(agent.policy, prog, 6, targets, blind=blind)
        renders = prog.renders
        replayed = replay(agent.policy, episode.actions, episode.canvases, targets, blind=blind)
    assert prog.renders == renders  # replay never renders
    torch.testing.assert_close(replayed.log_probs, episode.log_probs)
    torch.testing.assert_close(replayed.values, episode.values)
    torch.testing.assert_close(replayed.entropies, episode.entropies)
    with pytest.raises(ValueError, match="one canvas entry per step"):
        replay(agent.policy, episode.actions, episode.canvases[:-1], targets)


def test_an_unconditional_policy_replays_with_its_noise():
    agent = small_agent(reward="critic", conditional=False)
    with torch.no_grad():
        episode = rollout(agent.policy, agent.prog, 4)
        replayed = replay(agent.policy, episode.actions, episode.canvases, None, episode.noise)
    torch.testing.assert_close(replayed.log_probs, episode.log_probs)


def test_learning_from_lag_free_episodes_with_vtrace_is_exactly_the_a2c_update():
    """With behaviour log-probs equal to the current policy's, V-trace's loss is A2C's: same weights after."""
    torch.manual_seed(0)
    # The spatial decoder's output bias shifts every location logit alike, so its gradient is
    # zero up to rounding, which Adam's first step scales up to the learning rate: compare a
    # network in which the loss moves every parameter.
    agent = small_agent(policy={"location_decoder": "paper"})
    twin = copy.deepcopy(agent)
    targets = targets_for(agent.prog, 8)
    torch.manual_seed(5)
    episode = rollout(agent.policy, agent.prog, 8, targets)
    on_policy = agent.learner.learn(episode, targets, lambda n: None)
    replayed = replay(twin.policy, episode.actions, [c.detach() for c in episode.canvases], targets)
    off_policy = twin.learner.learn(replayed, targets, lambda n: None, behaviour_log_probs=episode.log_probs.detach())
    assert off_policy["importance_weight"] == pytest.approx(1.0)
    for key in ("policy_loss", "value_loss", "entropy", "return"):
        assert off_policy[key] == pytest.approx(on_policy[key], rel=1e-5, abs=1e-6)
    for mine, theirs in zip(agent.policy.parameters(), twin.policy.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_hyperparameters_change_without_touching_the_networks():
    agent = small_agent()
    agent.set_hyperparameters({"a2c.entropy_cost": 0.05, "a2c.lr": 3e-4})
    assert agent.config.a2c.entropy_cost == 0.05 and agent.learner.config is agent.config
    assert all(group["lr"] == 3e-4 for group in agent.learner.policy_optimiser.param_groups)
    with pytest.raises(ValueError, match="networks' shapes"):
        agent.set_hyperparameters({"policy.lstm_size": 32})
    with pytest.raises(ValueError, match="entropy_cost must be non-negative"):
        agent.set_hyperparameters({"a2c.entropy_cost": -1.0})


def test_backend_arguments_are_checked():
    with pytest.raises(ValueError, match="'local', 'ray' or an EpisodeSource"):
        episode_source("spark")
    with pytest.raises(ValueError, match="workers must be a positive int"):
        RayEpisodes(workers=0)
    with pytest.raises(ValueError, match="must divide the agent's batch_size"):
        RayEpisodes(episodes_per_task=3).task_size(8)
    with pytest.raises(ValueError, match="episodes_per_task must be a positive int"):
        RayEpisodes(episodes_per_task=True)
    for timeout in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="restart_timeout must be positive, a finite number"):
            RayEpisodes(restart_timeout=timeout)
    assert RayEpisodes(workers=3).task_size(8) == 2 and RayEpisodes(workers=2).task_size(64) == 32


def test_everything_but_the_ray_backend_works_without_ray():
    script = (
        "import sys; sys.modules['ray'] = None\n"
        "import torch, spiral_ppl as sp\n"
        "from spiral_ppl.inference.spiral import SpiralConfig\n"
        "prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=2)\n"
        "agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={'kind': 'l2'}, a2c={'batch_size': 4}))\n"
        "images = torch.zeros(8, 1, 16, 16)\n"
        "agent.fit(images, 1, progress=False)\n"
        "try:\n"
        "    agent.fit(images, 1, backend='ray', progress=False)\n"
        "except ImportError as error:\n"
        "    print('MESSAGE', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MESSAGE" in done.stdout and "pip install 'spiral_ppl[distributed]'" in done.stdout


# -- on a local Ray cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def check_ledger(ledger, batch_size, episodes_per_task, updates):
    """Every update consumed whole, distinct tasks; every task made was consumed or is still out."""
    consumed = [task for tasks in ledger.consumed for task in tasks]
    assert len(ledger.consumed) == updates
    assert all(len(tasks) * episodes_per_task == batch_size for tasks in ledger.consumed)
    assert len(consumed) == len(set(consumed)), "a task fed two updates"
    accounted = consumed + ledger.in_flight
    assert sorted(accounted) == list(range(ledger.submitted)), "a task was lost"


def test_ray_workers_train_the_agent_and_count_every_render(ray_cluster):
    torch.manual_seed(0)
    agent = small_agent()
    data = targets_for(agent.prog)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    renders = agent.prog.renders
    backend = RayEpisodes(workers=2, episodes_per_task=4)
    history = agent.fit(data, 4, backend=backend, progress=False)
    assert [row["update"] for row in history] == [1, 2, 3, 4] and agent.learner.updates == 4
    check_ledger(backend.ledger, 8, 4, 4)
    # renders happen on the workers and are counted on the agent's program: 8 episodes x 3 steps per update
    assert agent.prog.renders - renders == 4 * 8 * 3 and all(row["renders"] == 24 for row in history)
    assert all(row["policy_lag"] >= 0 and 0 < row["importance_weight"] <= 1 for row in history)
    assert any(row["policy_lag"] > 0 for row in history[1:]), "workers should run ahead of the learner"
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.policy.parameters()))
    assert backend._actors == []  # the workers are stopped at the end of fit


def test_a_ray_run_checkpoints_and_resumes_where_it_stopped(ray_cluster, tmp_path):
    torch.manual_seed(3)
    agent = small_agent()
    data = targets_for(agent.prog)
    agent.fit(data, 2, backend=RayEpisodes(workers=2), checkpoint=tmp_path / "agent.pt", progress=False)
    resumed = sp.inference.Spiral.load(tmp_path / "agent.pt", device="cpu")
    assert resumed.learner.updates == 2 and len(resumed.learner.replay) == 0  # l2 reward: no critic, no replay
    for mine, theirs in zip(agent.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(mine, theirs)
    history = resumed.fit(data, 2, backend="ray", log_dir=tmp_path / "logs", progress=False)
    assert [row["update"] for row in history] == [3, 4]
    steps = {int(state["step"]) for state in resumed.learner.policy_optimiser.state.values()}
    assert steps == {4}, "the optimiser state came back with the weights"


def test_a_killed_worker_is_restarted_with_no_lost_or_duplicated_update(ray_cluster):
    torch.manual_seed(1)
    agent = small_agent()
    data = targets_for(agent.prog)
    backend = RayEpisodes(workers=2, episodes_per_task=4, max_restarts=2)
    killed = []

    def kill_every_worker(metrics):
        if metrics["update"] == 2:  # SIGKILL, as a crash or a lost node would: no clean-up
            killed.extend(backend.worker_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    history = agent.fit(data, 6, backend=backend, callback=kill_every_worker, progress=False)
    assert len(killed) == 2
    assert [row["update"] for row in history] == list(range(1, 7)) and agent.learner.updates == 6
    assert backend.ledger.resent, "the tasks of the killed workers should have been sent again"
    # the tasks out when the workers were killed, each sent again and then consumed (or still out at the end)
    consumed = {task for tasks in backend.ledger.consumed for task in tasks}
    assert 1 <= len(backend.ledger.resent) <= 2
    assert set(backend.ledger.resent) <= consumed | set(backend.ledger.in_flight)
    # Both were killed, so every update after the kill was fed by workers Ray restarted in new
    # processes (whether the second one is back before the last update is a matter of timing).
    assert backend.ledger.worker_pids - set(killed), "no restarted worker returned episodes"
    assert history[-1]["worker_restarts"] >= 1
    check_ledger(backend.ledger, 8, 4, 6)
    # each update stepped the optimiser exactly once
    steps = {int(state["step"]) for state in agent.learner.policy_optimiser.state.values()}
    assert steps == {6}


def test_a_worker_that_keeps_dying_stops_training_with_a_clear_error(ray_cluster):
    agent = small_agent()
    backend = RayEpisodes(workers=1, episodes_per_task=8, max_restarts=0)

    def kill(metrics):
        if metrics["update"] == 1:
            os.kill(backend.worker_pids()[0], signal.SIGKILL)

    with pytest.raises(RuntimeError, match=r"died 1 times \(max_restarts=0\).*after update [12],") as error:
        agent.fit(targets_for(agent.prog), 4, backend=backend, callback=kill, progress=False)
    # the update count in the message is the learner's: no update is half-done
    assert f"after update {agent.learner.updates}," in str(error.value)


def test_unconditional_critic_agents_train_on_ray_workers(ray_cluster):
    agent = small_agent(reward="critic", conditional=False)
    backend = RayEpisodes(workers=2)
    history = agent.fit(targets_for(agent.prog), 2, backend=backend, progress=False)
    assert len(agent.learner.replay) == 16  # both batches of final renders reached the replay buffer
    assert all(torch.isfinite(torch.tensor(row["critic_loss"])) for row in history)


def test_mujoco_scenes_render_on_the_workers(ray_cluster):
    scene = sp.renderers.MujocoScene(image_size=32, max_objects=4)
    prog = sp.programs.SceneProgram(scene, steps=2)
    agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}, a2c={"batch_size": 4}),
                                device="cpu")
    data = prog.render({c.name: torch.randint(0, c.size, (6, 2)) for c in prog.action_space})
    renders = prog.renders
    history = agent.fit(data, 2, backend=RayEpisodes(workers=2), progress=False)
    assert prog.renders - renders == 2 * 4 * 2 and len(history) == 2


def test_population_based_training_exploits_and_explores_within_the_paper_ranges(ray_cluster, tmp_path):
    from spiral_ppl.inference.spiral.pbt import SEARCH_SPACE, population_based_training

    torch.manual_seed(2)
    agent = small_agent()
    data = targets_for(agent.prog)
    population = population_based_training(agent, data, updates=6, population=2, interval=2, eval_size=8,
                                           storage=tmp_path / "pbt", seed=0)
    members = {row["member"] for row in population.history}
    assert members == {0, 1}
    assert all(row["update"] % 2 == 0 and row["fitness"] <= 0 for row in population.history)
    for name, (low, high) in SEARCH_SPACE.items():
        assert all(low <= row[name] <= high for row in population.history)
    # the worse member copied the better one and perturbed its hyper-parameters at least once
    changed = [member for member in members
               if len({(row["entropy_cost"], row["policy_lr"]) for row in population.history
                       if row["member"] == member}) > 1]
    assert changed, "PBT never explored"
    best = population.best_agent
    assert best.learner.updates == 6 and best.config.a2c.entropy_cost == pytest.approx(
        population.best_hyperparameters["entropy_cost"])
    figure = population.plot(tmp_path / "population.png")
    assert (tmp_path / "population.png").stat().st_size > 10_000 and figure is not None


def test_the_command_line_trains_on_ray_workers_and_runs_pbt(ray_cluster, tmp_path):
    from spiral_ppl import cli
    from tests.test_experiments import TINY, fake_celeba

    fake_celeba(tmp_path / "celeba")
    overrides = TINY + [f"data.root={str(tmp_path / 'celeba')!r}", "data.test_fraction=0.25",
                        "train.phases.0.updates=3"]
    settings = [item for override in overrides for item in ("--set", override)]
    run = tmp_path / "run"
    assert cli.main(["train", "celeba-recon", "--out", str(run), "--device", "cpu", "--workers", "2"] + settings) == 0
    agent = sp.inference.Spiral.load(run / "checkpoint.pt")
    assert agent.learner.updates == 3 and (run / "eval.csv").exists()

    population = tmp_path / "pbt"
    assert cli.main(["pbt", "celeba-recon", "--out", str(population), "--device", "cpu", "--population", "2",
                     "--interval", "1"] + settings) == 0
    rows = (population / "population.csv").read_text().splitlines()
    assert rows[0] == "member,update,fitness,entropy_cost,policy_lr" and len(rows) == 1 + 2 * 3
    assert sp.inference.Spiral.load(population / "best.pt").prog.channels == 3
    assert (population / "population.png").stat().st_size > 10_000


def test_pbt_fitness_is_minus_held_out_l2_or_the_critics_score_and_arguments_are_checked(tmp_path):
    pytest.importorskip("ray")
    from spiral_ppl.inference.spiral.pbt import fitness, population_based_training
    from spiral_ppl.programs.base import mean_squared_error

    torch.manual_seed(4)
    conditional = small_agent()
    held_out = targets_for(conditional.prog, 6, seed=1)
    state = torch.get_rng_state()
    score = fitness(conditional, held_out)
    assert torch.equal(torch.get_rng_state(), state), "the fitness must not disturb training's random stream"
    torch.set_rng_state(state)
    with torch.no_grad():
        episode = rollout(conditional.policy, conditional.prog, 6, held_out)
    assert score == pytest.approx(-float(mean_squared_error(episode.final, held_out).mean()), rel=1e-6)

    unconditional = small_agent(reward="critic", conditional=False)
    state = torch.get_rng_state()
    score = fitness(unconditional, held_out)
    torch.set_rng_state(state)
    with torch.no_grad():
        samples = rollout(unconditional.policy, unconditional.prog, 6).final
        assert score == pytest.approx(float(unconditional.critic(samples, None).mean()), rel=1e-5)

    for bad, message in ((dict(population=1), "at least 2"), (dict(interval=0), "interval must be a positive int"),
                         (dict(quantile_fraction=0.7), "quantile_fraction")):
        with pytest.raises(ValueError, match=message):
            population_based_training(conditional, held_out, **{"updates": 2, "storage": tmp_path, **bad})
    with pytest.raises(ValueError, match="too few to hold out"):
        population_based_training(conditional, held_out, updates=2, storage=tmp_path, eval_size=64)
    with pytest.raises(ValueError, match="eval_size must be a positive int"):
        population_based_training(conditional, held_out, updates=2, storage=tmp_path, eval_size=0)
