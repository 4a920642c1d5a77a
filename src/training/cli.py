"""Entry-point glue: a configuration error is one line on stderr and exit status 2.

Hydra prints a composition error over several lines (the override, OmegaConf's message, the
reference and object types, a hint) and our own ``ConfigError`` with a stack trace. A user
who typed ``trainer.max_epochs=abc`` needs one line: the key, the value, what is allowed.
``HYDRA_FULL_ERROR=1`` keeps Hydra's full report with the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any

from hydra._internal import utils as hydra_utils
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities.exceptions import SIGTERMException

from src.training.config import ConfigError

EXIT_CONFIG_ERROR = 2
EXIT_SIGTERM = 128 + signal.SIGTERM


def describe_type(annotation: Any) -> str:
    """A schema annotation in words: ``Optional[int]`` -> ``"an integer or null"``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return f"{describe_type(inner[0])} or null"
    if typing.get_origin(annotation) in (list, typing.List):  # noqa: UP006
        return f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(m.value) for m in annotation)
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _expected(error: OmegaConfBaseException) -> str | None:
    key = str(getattr(error, "full_key", "") or "").split(".")[-1].split("[")[0]
    owner = getattr(error, "object_type", None)
    try:
        hints = typing.get_type_hints(owner) if isinstance(owner, type) else {}
    except Exception:
        return None
    if key in hints:
        return describe_type(hints[key])
    if hints:  # a key the schema does not have
        return "the keys " + ", ".join(k for k in hints if not k.startswith("_"))
    return None


def one_line(error: BaseException) -> str | None:
    """The one-line message of a configuration error, or None if ``error`` is not one."""
    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, MissingConfigException):
        head = str(error).split("Config search path")[0]
        lines = [ln.strip() for ln in head.splitlines() if ln.strip()]
        return lines[0].removeprefix("In 'train': ") + (
            "; " + " ".join(lines[1:]) if lines[1:] else ""
        )
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    if isinstance(cause, OmegaConfBaseException):
        what = str(error).splitlines()[0] if cause is not error else ""
        override = what.removeprefix("Error merging override ").removeprefix("Could not override ")
        # some OmegaConf errors (an interpolation to a missing key) carry no msg or key
        message = (str(getattr(cause, "msg", None) or cause).splitlines() or [""])[0]
        expected = _expected(cause)
        key = getattr(cause, "full_key", None)
        subject = override.rstrip(".") if override else str(key or type(cause).__name__)
        if expected and "expected one of" not in message:
            message += f"; allowed: {expected}"
        return f"{subject}: {message}"
    if isinstance(error, ConfigCompositionException):
        return " ".join(str(error).split())
    return None


def run(entry: Callable[[], Any]) -> Any:
    """Run a ``@hydra.main`` function, printing configuration errors as one line (exit 2), and
    exiting 143 (128 + SIGTERM) when Lightning stopped it on SIGTERM."""
    try:
        return _run(entry)
    except SIGTERMException:
        # Lightning raises a bare SystemExit on SIGTERM: status 0, as if the command had finished
        sys.stderr.write("stopped by SIGTERM before the end\n")
        raise SystemExit(EXIT_SIGTERM) from None


def _run(entry: Callable[[], Any]) -> Any:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return entry()
    report = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as error:
            message = one_line(error)
            if message is None:
                caught = error

                def again() -> Any:
                    raise caught

                return report(again)
            sys.stderr.write(f"error: {message}\n")
            sys.exit(EXIT_CONFIG_ERROR)

    hydra_utils.run_and_report = run_and_report
    try:
        return entry()
    finally:
        hydra_utils.run_and_report = report
