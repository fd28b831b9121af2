"""Your own program by name: a reference ``"module:factory"`` that the command line, program
files, configurations and checkpoints resolve to a :class:`~spiral_ppl.programs.Program`.

The reference names a module to import (the current directory is searched first, as
``python -m`` does, then ``PYTHONPATH`` and the installed packages) and a callable in it, the
factory. :func:`resolve_program` calls ``factory(**options)``; the result is the program: a
:class:`~spiral_ppl.programs.Program` (the factory may be the class itself), or a plain Pyro
model, which is wrapped in :class:`~spiral_ppl.programs.PyroProgram`::

    # mygrammar.py, in the current directory
    def make_program(steps=3):
        return Squares(steps=steps)          # a Program subclass, or a Pyro model function

    prog = resolve_program("mygrammar:make_program", {"steps": 2})
    prog.program_reference    # ProgramReference(name='mygrammar:make_program', options={'steps': 2})

The program carries its reference (``prog.program_reference``, see :func:`reference_of`), so
that whatever saves it (a program file, a SPIRAL checkpoint) can write the reference and
options, and whatever loads it calls :func:`resolve_program` again. A program made another way
(in a notebook) has none; loading what was saved from it then needs the program given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Iterator, Mapping

import torch

from spiral_ppl.programs.base import Program
from spiral_ppl.programs.pyro_program import PyroProgram

#: The attribute a resolved program carries its :class:`ProgramReference` in.
ATTRIBUTE = "program_reference"


@dataclasses.dataclass(frozen=True)
class ProgramReference:
    """How a program was made: ``name`` (``"module:factory"``) called with ``options``."""

    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"program": name, "options": {...}}``, as program files and checkpoints store it."""
        return {"program": self.name, "options": dict(self.options)}


def reference_of(prog: Any) -> ProgramReference | None:
    """The reference ``prog`` was resolved from, or ``None`` for a program made another way."""
    return getattr(prog, ATTRIBUTE, None)


def resolve_program(reference: Any, options: Mapping[str, Any] | None = None, *,
                    argument: str = "program") -> Program:
    """The program ``factory(**options)`` for the reference ``"module:factory"``.

    :param reference: ``"module:factory"``, e.g. ``"mygrammar:make_program"`` or
        ``"mypkg.grammars:Blocks"``.
    :param options: keyword arguments of the factory (JSON values: they are saved with the program).
    :param argument: what the reference was given as (``--program``, ``[program] factory``, a
        file's ``"program"``), which every error names.
    :raises ValueError: for a reference that is malformed, names a module or attribute that is
        missing, or a factory that raises or returns neither a program nor a Pyro model.
    """
    module_name, factory_name = _split(reference, argument)
    options = _check_options(options, argument, reference)
    with _current_directory_on_path():
        module = _import(module_name, argument, reference)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            found = _callables(module)
            what = "has no attribute" if factory is None else "has a non-callable"
            raise ValueError(f"{argument} {reference!r}: module {module_name} {what} {factory_name!r}; its callables "
                             f"are {found or 'none'}: name one of them after the colon")
        call = f"{factory_name}({', '.join(f'{key}={value!r}' for key, value in options.items())})"
        try:
            made = factory(**options)
        except Exception as error:  # noqa: BLE001 - the user's code: any failure is reported, named
            raise ValueError(f"{argument} {reference!r}: {call} raised {type(error).__name__}: "
                             f"{_one_line(error)}; fix the factory or its options") from None
    prog = _as_program(made, argument, reference, factory_name)
    setattr(prog, ATTRIBUTE, ProgramReference(reference, options))
    return prog


def _split(reference: Any, argument: str) -> tuple[str, str]:
    if not isinstance(reference, str):
        raise ValueError(f"{argument} must be a program reference 'module:factory' (text), got {reference!r}")
    module_name, colon, factory_name = reference.strip().partition(":")
    if not colon or not module_name or not factory_name or ":" in factory_name:
        raise ValueError(f"{argument} {reference!r} is not a program reference 'module:factory': name a module, a "
                         "colon and the function or class in it that makes the program, e.g. mygrammar:make_program")
    return module_name.strip(), factory_name.strip()


def _check_options(options: Mapping[str, Any] | None, argument: str, reference: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
        raise ValueError(f"the options of {argument} {reference!r} must be a table of keyword arguments, got "
                         f"{options!r}")
    try:
        json.dumps(dict(options))
    except (TypeError, ValueError):
        raise ValueError(f"the options of {argument} {reference!r} must be JSON values (numbers, text, true/false, "
                         f"lists, tables), as they are saved with the program; got {options!r}") from None
    return dict(options)


@contextlib.contextmanager
def _current_directory_on_path() -> Iterator[None]:
    """The current directory first on ``sys.path`` while the module is imported and the factory
    runs, as ``python -m`` puts it there; the console script ``spiral-ppl`` would not."""
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        yield
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


def _import(module_name: str, argument: str, reference: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name) \
                and module_name[len(error.name):][:1] in ("", "."):
            raise ValueError(f"{argument} {reference!r}: no module named {error.name!r} in the current directory "
                             f"({os.getcwd()}) or on the Python path; run from the folder that holds "
                             f"{module_name.replace('.', '/')}.py, or add its folder to PYTHONPATH") from None
        raise ValueError(f"{argument} {reference!r}: importing {module_name} failed: {_one_line(error)}; install "
                         "what it imports") from None
    except Exception as error:  # noqa: BLE001 - the user's module: any failure is reported, named
        raise ValueError(f"{argument} {reference!r}: importing {module_name} raised {type(error).__name__}: "
                         f"{_one_line(error)}; fix the module") from None


def _one_line(error: BaseException) -> str:
    """The message of an error raised by the user's code, on one line (the command line reports one)."""
    return " ".join(str(error).split())


def _callables(module) -> list[str]:
    """The public callables ``module`` defines (or, if it defines none, all it has)."""
    public = {name: value for name, value in vars(module).items() if callable(value) and not name.startswith("_")}
    own = [name for name, value in public.items() if getattr(value, "__module__", None) == module.__name__]
    return sorted(own or public)


def _as_program(made: Any, argument: str, reference: str, factory_name: str) -> Program:
    """What the factory returned as a program: itself, or a Pyro model wrapped in :class:`PyroProgram`."""
    if isinstance(made, Program):
        return made
    if isinstance(made, torch.Tensor):
        raise ValueError(f"{argument} {reference!r}: {factory_name}() returned a tensor, not a program: is it a Pyro "
                         "model itself? Name a factory that returns the model (def make(): return model) or a "
                         "spiral_ppl.programs.Program")
    if callable(made) and not isinstance(made, type):
        try:
            return PyroProgram(made)
        except Exception as error:  # noqa: BLE001 - the user's model: any failure is reported, named
            raise ValueError(f"{argument} {reference!r}: {factory_name}() returned a callable that is not a Pyro "
                             f"model PyroProgram can run ({type(error).__name__}: {_one_line(error)})") from None
    raise ValueError(f"{argument} {reference!r}: {factory_name}() returned {type(made).__name__}, which is neither "
                     "a spiral_ppl.programs.Program nor a Pyro model function; return one of them")
