"""What every ``ssdonnx`` command shares: the error contract and progress display.

Error contract: bad input (``ssdonnx.errors.InputError``, or an ``OSError`` on the
user's own paths) is one line on stderr and exit status 2; a parity failure is exit 1;
Ctrl-C prints ``interrupted`` and exits 130. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import math
import sys
import time
import warnings

import click

from ..errors import InputError, ParityError

PROVIDER = click.Choice(["auto", "cpu", "cuda"])
INTERRUPTED = 130     # the shell's exit status after SIGINT
# OSErrors that are the machine's or the user's paths' state, not a bug, even when
# they name no file (a full disk, a read-only file system, a file-size limit).
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                      errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


class UsageError(click.ClickException):
    """Bad input: message and exit code 2, no traceback."""
    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def one_line(exc: BaseException) -> str:
    """An exception's message as one line: the last line of a message that carries a
    traceback (an error raised in a DataLoader worker), the first line otherwise."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and "Traceback" in str(exc):
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """ssdonnx's own warnings as one line, without the code location; others as Python
    shows them."""
    if category.__module__.startswith("ssdonnx"):
        click.echo(f"warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
                   err=True)


class Group(click.Group):
    """The error contract above, for every command."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(INTERRUPTED)
        except InputError as exc:
            raise UsageError(one_line(exc)) from None
        except OSError as exc:
            if exc.filename is None and exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            raise UsageError(_os_error(exc)) from None
        except ParityError as exc:
            raise click.ClickException(str(exc)) from None


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def finite(ctx, param, value):
    """A float option that is a number: NaN would pass every range check silently."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def progress_bar(length: int, label: str):
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


class LazyBar:
    """A progress bar for ``progress(n, total)`` callbacks: made at the first call, when
    the total is known, and made anew once it is full (the next set's pictures)."""

    def __init__(self, label: str):
        self.label, self.bar, self.done = label, None, 0

    def __call__(self, n: int, total: int) -> None:
        if self.bar is None or self.done >= self.bar.length:
            self.finish()
            self.bar, self.done = progress_bar(total, f"{self.label} "
                                                      f"{plural(total, 'picture')}"), 0
        self.bar.update(n)
        self.done += n

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()


class StepLines:
    """Progress inside a long loop as lines, for a log file or CI where a bar draws
    nothing: ``lines(n, total, label, status)`` after each step writes ``label:
    done/total (percent) status`` once ``every`` seconds have passed since the last line
    (the caller says when a pass ends)."""

    def __init__(self, every: float, write=None, clock=time.monotonic):
        self.every, self.write, self.clock = every, write or log, clock
        self.label, self.done, self.last = None, 0, clock()

    def __call__(self, n: int, total: int, label: str, status: str = "") -> None:
        if label != self.label:
            self.label, self.done = label, 0
        self.done += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.write(f"{label}: {self.done}/{total} ({100 * self.done / total:.0f}%)"
                       + (f" {status}" if status else ""))


def log(message: str) -> None:
    click.echo(message, err=True)


