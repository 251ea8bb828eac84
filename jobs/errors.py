"""Known job errors and their exit codes: a scheduler reads the code, a person reads the one line on stderr.

| code | error | meaning |
|---|---|---|
| 2 | ConfigError | a config key is unknown, missing or outside what is allowed (incl. what the model allows) |
| 3 | InputError, LabelError | the input or label table cannot be used as configured (path, columns, types, values) |
| 4 | QuarantineLimitError | too many input rows were quarantined; nothing was published |
| 5 | SpecMismatchError | artifacts of different feature specs were to be mixed (table vs heads, table vs encoder) |
| 6 | TableError | a published table is not what it promises (a file of another spec, repeated ids) |
| 7 | OutputLockedError | another live run is writing the same output path; nothing was touched |

Anything else is unexpected and keeps its traceback (exit code 1).
"""
from __future__ import annotations

from encoder.spec import SpecMismatchError
from encoder.table import TableError
from encoder.typed_config import ConfigError
from heads.tasks import LabelError
from jobs.publish import OutputLockedError


class InputError(ValueError):
    """The input cannot be read as configured (missing path, missing column, wrong column type)."""


class QuarantineLimitError(RuntimeError):
    """Too many input rows were faulty; the run is not published."""


EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2, InputError: 3, LabelError: 3, QuarantineLimitError: 4, SpecMismatchError: 5, TableError: 6,
    OutputLockedError: 7}


def exit_code(exc: BaseException) -> int | None:
    """The documented exit code of a known error, or None for an unexpected one. A known error raised on an
    executor reaches the driver wrapped in Spark's PythonException; its class name is read from the message."""
    for cls, code in EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    if type(exc).__name__ == "PythonException":
        return next((code for cls, code in EXIT_CODES.items() if f"{cls.__name__}: " in str(exc)), None)
    return None


def one_line(exc: BaseException) -> str:
    """The error as one line: its class and message (for an executor's error, from the line naming the class)."""
    if type(exc).__name__ == "PythonException":
        for line in reversed(str(exc).splitlines()):
            for cls in EXIT_CODES:
                k = line.find(f"{cls.__name__}: ")
                if k >= 0:
                    return line[k:].strip()
    return f"{type(exc).__name__}: {exc}"
