r"""The paper's 3-D program: ``steps`` scene edits of a :class:`~spiral_ppl.renderers.MujocoScene`.

Each step ``t`` samples the sites ``step_{t}/command`` (add, skip, modify the last object),
``step_{t}/shape``, ``step_{t}/location``, ``step_{t}/object_size``, ``step_{t}/red``,
``step_{t}/green`` and ``step_{t}/blue``; the whole program is rendered by MuJoCo and the
target is scored under the Normal pixel likelihood of :class:`~spiral_ppl.programs.Program`.

Default prior. A uniform command would add about a third of the time, filling a 20-step
scene with 7 objects on average, and modify another third. The default prior of
``command`` is :data:`DEFAULT_COMMAND_PRIOR` (add 0.2, skip 0.7, modify 0.1), so a scene
drawn from the prior holds :math:`0.2 \cdot 20 = 4` objects on average, close to the 1 to
5 objects of MUJOCO SCENES. Every other component is uniform. Pass ``priors={"command": ...}``
to change it (``priors={"command": [1, 1, 1]}`` restores the uniform one).

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.SceneProgram(sp.renderers.MujocoScene(image_size=64, grid_size=16), steps=20)
    >>> trace = sp.programs.trace(prog, image=torch.zeros(2, 3, 64, 64))
    >>> sorted(name for name in trace.nodes if name.startswith("step_0/"))[:3]
    ['step_0/blue', 'step_0/command', 'step_0/green']
"""

from __future__ import annotations

from typing import Any, Mapping

from spiral_ppl.programs.renderer_program import RendererProgram
from spiral_ppl.renderers.mujoco_scene import MujocoScene

#: Prior probabilities of the commands (add, skip, modify last): about 4 objects in 20 steps.
DEFAULT_COMMAND_PRIOR = (0.2, 0.7, 0.1)


class SceneProgram(RendererProgram):
    """A program of ``steps`` actions of a MuJoCo scene (20 in the paper).

    :param scene: the :class:`~spiral_ppl.renderers.MujocoScene` that renders the programs.
    :param steps: number of actions.
    :param priors: prior probabilities per component; ``command`` defaults to
        :data:`DEFAULT_COMMAND_PRIOR`, the others to uniform.
    :param kwargs: ``pixel_scale``, ``likelihood``: see :class:`~spiral_ppl.programs.Program`.
    """

    def __init__(
        self, scene: MujocoScene, steps: int = 20, *, priors: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(scene, MujocoScene):
            raise TypeError(
                f"scene must be a spiral_ppl.renderers.MujocoScene, got {type(scene).__name__}; "
                "for other renderers use spiral_ppl.programs.RendererProgram"
            )
        super().__init__(scene, steps, priors={"command": DEFAULT_COMMAND_PRIOR, **(priors or {})}, **kwargs)
