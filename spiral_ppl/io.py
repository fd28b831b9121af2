"""Reading and writing images and programs.

Programs are stored as JSON that a person can read and edit: the renderer's settings and a
list of steps, one object per step with one entry per component. Location components are
written as ``[x, y]`` grid coordinates and read either as ``[x, y]`` or as the flat index
``y * grid_size + x``::

    {
      "renderer": {"type": "brush", "canvas_size": 64, "grid_size": 32, "color": false},
      "steps": [
        {"flag": 1, "end_point": [31, 31], "control_point": [0, 31], "brush_size": 2, "pressure": 9}
      ]
    }

A program of your own, made from a reference ``"module:factory"``
(:func:`~spiral_ppl.programs.resolve_program`), is stored by its reference and the factory's
options instead of a renderer, and rebuilt from them when read::

    {
      "program": "mygrammar:make_program", "options": {"steps": 2},
      "steps": [{"corner": [1, 2], "present": 1}, {"corner": 0, "present": 0}]
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from spiral_ppl.programs.base import Program, require_fixed_structure
from spiral_ppl.programs.reference import reference_of, resolve_program
from spiral_ppl.renderers.base import Component, Renderer, validate_actions
from spiral_ppl.renderers.brush import Brush


def _renderer_classes() -> dict[str, type]:
    """Renderers a program file may name; each rebuilds from its ``settings()``."""
    from spiral_ppl.renderers.mujoco_scene import MujocoScene
    from spiral_ppl.renderers.mypaint import MyPaint

    return {"brush": Brush, "mypaint": MyPaint, "mujoco": MujocoScene}


def renderer_from_config(config: Mapping[str, Any]) -> Renderer:
    """Build a renderer from ``{"type": name, **settings}``."""
    classes = _renderer_classes()
    if not isinstance(config, Mapping) or "type" not in config:
        raise ValueError(f'a renderer is described as {{"type": one of {sorted(classes)}, ...settings}}, got {config!r}')
    settings = dict(config)
    kind = settings.pop("type")
    if kind not in classes:
        raise ValueError(f"unknown renderer type {kind!r}; known: {sorted(classes)}")
    try:
        return classes[kind](**settings)
    except TypeError as error:
        raise ValueError(f"bad settings for renderer {kind!r}: {error}") from None


def renderer_config(renderer: Renderer) -> dict[str, Any]:
    """The JSON description of a renderer, as :func:`renderer_from_config` reads it."""
    for kind, cls in _renderer_classes().items():
        if type(renderer) is cls:
            return {"type": kind, **renderer.settings()}
    raise ValueError(f"no JSON description for {type(renderer).__name__}")


def _location_value(component: Component, value: Any, where: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            raise ValueError(f"{where}: a location is [x, y] (two ints) or a flat index, got {value!r}")
        x, y = value
        grid = component.grid_size
        if not (0 <= x < grid and 0 <= y < grid):
            raise ValueError(f"{where}: [x, y] must lie in [0, {grid - 1}], got {value!r}")
        return y * grid + x
    return value


def actions_from_steps(action_space: tuple[Component, ...], steps: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """A list of per-step objects -> ``{name: LongTensor[1, T]}`` (one program)."""
    if not isinstance(steps, list) or not steps:
        raise ValueError("a program needs a non-empty list of steps")
    columns: dict[str, list[int]] = {c.name: [] for c in action_space}
    for index, step in enumerate(steps):
        where = f"step {index}"
        if not isinstance(step, Mapping):
            raise ValueError(f"{where} must be an object {{component: value}}, got {step!r}")
        unknown = sorted(set(step) - set(columns))
        missing = [name for name in columns if name not in step]
        if unknown or missing:
            raise ValueError(f"{where}: components must be {list(columns)}; unknown {unknown}, missing {missing}")
        for component in action_space:
            value = step[component.name]
            if component.kind == "location":
                value = _location_value(component, value, f"{where} {component.name}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where} {component.name}: expected an int, got {value!r}")
            if not 0 <= value < component.size:  # checked here, to name the step, and before a tensor overflows
                raise ValueError(f"{where} {component.name}: must lie in [0, {component.size - 1}], got {value}")
            columns[component.name].append(value)
    actions = {name: torch.tensor([values], dtype=torch.long) for name, values in columns.items()}
    validate_actions(action_space, actions, ndim=2)
    return actions


def steps_from_actions(action_space: tuple[Component, ...], actions: Mapping[str, torch.Tensor]) -> list[dict]:
    """One program ``{name: LongTensor[T]}`` (or ``[1, T]``) -> a list of per-step objects."""
    shape = validate_actions(action_space, actions)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
        raise ValueError(f"a program file holds one program: (T,) or (1, T) per component, got {tuple(shape)}; "
                         "write a batch one program at a time")
    columns = {name: value.reshape(-1).tolist() for name, value in actions.items()}
    steps = []
    for t in range(len(columns[action_space[0].name])):
        step = {}
        for component in action_space:
            value = columns[component.name][t]
            if component.kind == "location":
                value = [value % component.grid_size, value // component.grid_size]
            step[component.name] = value
        steps.append(step)
    return steps


def load_program(path: str | Path) -> tuple[Renderer | Program, dict[str, torch.Tensor]]:
    """Read a program file: what renders it and its actions ``{name: LongTensor[1, T]}``.

    What renders it is the renderer the file describes, or, for a file that names a program
    reference (``"program": "module:factory"``), the program rebuilt from it; both have
    ``render(actions)``, ``action_space`` and ``image_size``.
    """
    try:
        # utf-8-sig: some editors start a UTF-8 file with a byte-order mark, which JSON does not allow
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no program file at {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; a program file is JSON, as `spiral-ppl infer` writes it") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a program file: it is not text (an image?); a program file is JSON, as "
                         "`spiral-ppl infer` writes it (program.json)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or "steps" not in document:
        raise ValueError(f'{path}: a program file is an object with "renderer" and "steps" (or, for a program of '
                         'your own, "program", "options" and "steps")')
    if "program" in document:
        if "renderer" in document:
            raise ValueError(f'{path} names both a "renderer" and a "program" reference; keep one')
        source = resolve_program(document["program"], document.get("options"), argument=f'{path}: "program"')
        if isinstance(document["steps"], list) and len(document["steps"]) > source.steps:
            raise ValueError(f"{path}: {len(document['steps'])} steps, but {source!r} has {source.steps}; give its "
                             'factory more steps in "options", or drop steps')
    else:
        source = renderer_from_config(document.get("renderer", {"type": "brush"}))
    return source, actions_from_steps(source.action_space, document["steps"])


def program_header(source: Renderer | Program) -> dict[str, Any]:
    """What a program file says of ``source`` besides its steps: ``{"program": reference,
    "options": {...}}`` for a program resolved from a reference, else ``{"renderer": {...}}``
    for a renderer or a program on one. Raises ``ValueError`` for a program that has neither."""
    if isinstance(source, Program):
        require_fixed_structure(source, "a program file (one object per step)")
        reference = reference_of(source)
        if reference is not None:
            return reference.to_dict()
        renderer = getattr(source, "renderer", None)
        if not isinstance(renderer, Renderer):
            raise ValueError(f"{source!r} cannot be written to a program file: it was not made from a reference "
                             "'module:factory', which the file would name to rebuild it; make it with "
                             "sp.programs.resolve_program('module:factory') (on the command line: --program)")
        source = renderer
    return {"renderer": renderer_config(source)}


def save_program(path: str | Path, source: Renderer | Program, actions: Mapping[str, torch.Tensor],
                 **extra: Any) -> None:
    """Write one program as JSON (atomically); ``extra`` entries are stored beside it.

    :param source: the renderer that draws it, or the program (one made from a reference is
        stored by its reference and options, see :func:`program_header`).
    """
    header = program_header(source)
    steps = steps_from_actions(source.action_space, actions)
    # One line per step, so a program reads like a listing.
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()] + [' "steps": [']
    lines += [f"  {json.dumps(step)}{',' if index < len(steps) - 1 else ''}" for index, step in enumerate(steps)]
    lines.append(" ]" + ("," if extra else ""))
    lines += [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in extra.items()]
    if extra:
        lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def load_image(path: str | Path, channels: int, size: int, invert: bool = False) -> torch.Tensor:
    """Read an image file as a ``(1, channels, size, size)`` float tensor in ``[0, 1]``.

    Non-square images are centre-cropped; ``invert`` turns dark ink on white into light ink
    on black (the convention of the grayscale brush). Transparent pixels are background: black,
    or white with ``invert``. An animation (several frames) is refused: which frame is meant?
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise ValueError(f"{path} is an animation of {frames} frames; save the frame to use as an image of "
                                 "its own")
            image = _opaque(_eight_bit(image), background=255 if invert else 0).convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"no image at {path}") from None
    except OSError as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    pixels = pixels[None] if channels == 1 else pixels.permute(2, 0, 1)
    if invert:
        pixels = 1 - pixels
    return pixels[None].contiguous()


def _opaque(image: Image.Image, background: int) -> Image.Image:
    """``image`` laid over a plain ``background`` level where it is transparent; an opaque image as
    it is. Dropping the alpha channel instead would show the colour stored under transparent
    pixels, typically black, and lose ink drawn in black on a transparent sheet."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        return image
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(flat, rgba).convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16- or 32-bit grayscale image scaled to 8 bits (Pillow's own conversion clips at 255,
    which turns almost every 16-bit pixel white); other images as they are."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" else 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    return Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")


#: Image formats :func:`save_image` writes, by file extension.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def save_image(path: str | Path, image: torch.Tensor) -> None:
    """Write a ``(C, H, W)`` or ``(1, C, H, W)`` tensor in ``[0, 1]`` as an image (atomically), in
    the format its extension names (``.png``, ``.jpg``, ...)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise ValueError(f"cannot tell an image format from {path.name!r}; end the name with one of "
                         f"{sorted(IMAGE_FORMATS)}")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (C, H, W) with C in (1, 3), got {tuple(image.shape)}")
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format=IMAGE_FORMATS[path.suffix.lower()])


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    with atomic_path(Path(path)) as temporary:
        Path(temporary).write_bytes(data)


class atomic_path:
    """A temporary path beside ``path`` that replaces it on success and vanishes on error.

    Readers see the old file or the new one, never half of one, even if the process dies::

        with atomic_path("checkpoint.pt") as temporary:
            torch.save(state, temporary)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, self.temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(handle)
        return self.temporary

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            # Flush to disk before the rename, so a crash cannot leave a renamed empty file.
            with open(self.temporary, "rb+") as stream:
                os.fsync(stream.fileno())
            # mkstemp makes the file private (0600); a file the user keeps gets what the umask
            # gives any new file (0644 under the usual 022).
            os.chmod(self.temporary, 0o666 & ~_UMASK)
            os.replace(self.temporary, self.path)
        else:
            Path(self.temporary).unlink(missing_ok=True)

    @staticmethod
    def remove_stale(path: str | Path) -> list[Path]:
        """Delete the temporary files that writes of ``path`` left behind when their process was
        killed mid-write; returns them. Call it only where no other process is writing ``path``."""
        path = Path(path)
        stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
        for leftover in stale:
            leftover.unlink(missing_ok=True)
        return stale


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()
