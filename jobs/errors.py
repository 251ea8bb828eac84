"""Known job errors and their exit codes: a scheduler reads the code, a person reads the one line on stderr.

| code | error | meaning |
|---|---|---|
| 2 | ConfigError | a config key is unknown, missing or outside what is allowed (incl. what the model allows) |
| 3 | InputError, LabelError | the input or label table cannot be used as configured (path, columns, types, values) |
| 4 | QuarantineLimitError | too many input rows were quarantined; nothing was published |
| 5 | SpecMismatchError | artifacts of different feature specs were to be mixed (table vs heads, table vs encoder) |
| 6 | ArtifactError, TableError | a published table, head folder or manifest is not what it promises (a file of
another spec, repeated ids, truncated weights, counts that disagree) |
| 7 | OutputLockedError | another live run is writing the same output path; nothing was touched |
| 8 | QueryRefusedError | an SQL statement was refused: only queries over the published views are run |
| 9 | OutputError | the output cannot be written (read-only or full filesystem, no permission); the old output is intact |

Model folders that cannot be loaded safely are ``ModelError`` (a ``ConfigError`` on ``encoder.model``, code 2); head
folders and manifests that are not what they promise are ``ArtifactError`` (code 6, as a table's ``TableError``).

Anything else is unexpected and keeps its traceback (exit code 1).
"""
from __future__ import annotations

from encoder.artifacts import ArtifactError
from encoder.model import ModelError
from encoder.spec import SpecMismatchError
from encoder.table import TableError
from encoder.typed_config import ConfigError
from heads.tasks import LabelError
from jobs.publish import OutputError, OutputLockedError


class InputError(ValueError):
    """The input cannot be read as configured (missing path, missing column, wrong column type)."""


class QuarantineLimitError(RuntimeError):
    """Too many input rows were faulty; the run is not published."""


class QueryRefusedError(ValueError):
    """An SQL statement that is not a read-only query over the published views (a write, an attach, file access)."""


EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2, ModelError: 2, InputError: 3, LabelError: 3, QuarantineLimitError: 4, SpecMismatchError: 5, TableError: 6,
    ArtifactError: 6, OutputLockedError: 7, QueryRefusedError: 8, OutputError: 9}


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
