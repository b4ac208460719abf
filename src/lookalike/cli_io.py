"""What the ``lookalike`` commands need around them: output that wraps only on a terminal,
exit statuses, paths as shown, output paths checked before any work, progress on stderr
(on a terminal only), a port bound before it is announced, and tidy help.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from typer.core import TyperGroup

from lookalike.errors import InvalidArgument

# Exit statuses (README, "Exit statuses"): a script can tell "nothing to do" from a failure.
EXIT_ERROR = 1  # something failed: an error message says what
EXIT_USAGE = 2  # options that do not go together or a bad value (click's own)
EXIT_NOTHING = 3  # it ran, and found or did nothing: no images, no match, no duplicates
EXIT_INTERRUPTED = 130  # Ctrl-C

UNWRAPPED = 1_000_000  # the width of output that is not a terminal: lines are never folded
_TRAILING_SPACES = re.compile(r" +$", re.MULTILINE)
# Narrower terminals get a command's help as click's plain text: typer's panels of options
# squeeze the help column there to a word or two a line.
WIDE_HELP = 120


class Output(Console):
    """A console that wraps at the terminal's width on a terminal, and never otherwise:
    piped to ``grep`` or a file, a table row or a path stays on one line."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        """Lines as rendered; not on a terminal, without the spaces a table pads them with
        at the end (a diff or ``cut`` of the output would see them)."""
        text = super()._render_buffer(buffer)
        return text if self.is_terminal else _TRAILING_SPACES.sub("", text)


out = Output(emoji=False)  # wraps on a terminal only: piped to grep, a path stays on its line
err = Output(stderr=True, emoji=False)  # ":x:" in a file name is no emoji code


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` on stderr; the exit (status 1) to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_skipped(items: Iterable[tuple[str, str]]) -> None:
    """One stderr line per file a command passed over, with the reason."""
    for path, why in items:
        err.print(f"  skipped {path}: {why}", highlight=False, markup=False)


def nothing(message: str) -> typer.Exit:
    """Print ``warning: <message>`` on stderr; the exit (status 3: nothing found or done) to raise."""
    warn(message)
    return typer.Exit(EXIT_NOTHING)


def path_shower(relative: bool) -> Callable[[str], str]:
    """How paths are shown: as stored (absolute), or relative to the current folder."""
    if not relative:
        return str
    here = os.getcwd()

    def shown(path: str) -> str:
        try:
            return os.path.relpath(path, here)
        except ValueError:  # another drive (Windows)
            return path

    return shown


def check_report_folder(folder: Path) -> None:
    """``--html FOLDER``: a folder to write ``index.html`` and ``thumbs/`` into, never a file."""
    if folder.exists() and not folder.is_dir():
        raise InvalidArgument(
            f"--html {folder}: a file is there; --html takes a folder (the page is written as "
            "FOLDER/index.html, with its thumbnails beside it)"
        )
    if not folder.exists() and folder.suffix.lower() in (".html", ".htm"):
        raise InvalidArgument(
            f"--html {folder}: --html takes a folder (the page is written as FOLDER/index.html, "
            f"with its thumbnails beside it), e.g. --html {folder.with_suffix('')}"
        )


def check_move_target(folder: Path) -> None:
    """``--move-to FOLDER``: checked before anything moves and before a journal is written."""
    if folder.exists() and not folder.is_dir():
        raise InvalidArgument(f"--move-to {folder}: a file is there; --move-to takes a folder")
    parent = next((p for p in folder.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidArgument(f"--move-to {folder}: {parent} is a file, not a folder")


def check_journal(journal: Path) -> None:
    """``--journal FILE``: a new file or a lookalike journal, not a folder or another file."""
    from lookalike.actions import journal_problem

    if (why := journal_problem(journal)) is not None:
        raise InvalidArgument(f"--journal {why}")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`InvalidArgument` saying why not
    (a port in use, an address not here), before anything is announced."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidArgument(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no obstacle
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (in use: another server is there; pick another --port)" if exc.errno == 98 else ""
        raise InvalidArgument(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    return sock


@contextmanager
def steps(console: Console, label: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on ``console`` (stderr) for a step that takes a while, shown on a
    terminal only; yields the ``(done, total)`` callback that moves it."""
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=True,
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update


def _tidy_type(param: Any, ctx: Any) -> str | None:
    """The type column of ``--help``: nothing for flags; a list or pair by its element.
    (Typer's parameters are its own copy of click's: they are looked at, not type-checked.)"""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    shown = type(param).display_type_rich(param, ctx)
    if shown is None:
        return None
    replacements = (
        ("list[", ""),
        ("]", ""),
        ("Path,Path", "path path"),
        ("Path", "path"),
        ("%Y-%m-%d|%Y-%m-%dT%H:%M:%S", "YYYY-MM-DD[THH:MM:SS]"),
    )
    for old, new in replacements:
        shown = shown.replace(old, new)
    return shown.replace("<str>", "<text>")


def tidy_help(command: Any, extras: dict[str, Callable[[], str]] | None = None) -> None:
    """Tidy ``command``'s help: no ``<bool>`` on flags, no ``<list[Path]>`` (the element type:
    options repeat), and help texts completed by ``extras`` (option name -> function of the
    text to append), called only when the help is shown, so no import is paid otherwise."""
    for param in command.params:
        param.display_type_rich = lambda ctx, p=param: _tidy_type(p, ctx)  # type: ignore[method-assign]
    help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = help_option(ctx)
        if option is not None:
            option.display_type_rich = lambda ctx, p=option: _tidy_type(p, ctx)
        return option

    command.get_help_option = get_help_option  # type: ignore[method-assign]
    original = command.format_help

    def format_help(ctx: Any, formatter: Any) -> None:
        for param in command.params:
            extra = (extras or {}).get(param.name or "")
            if extra is not None and not getattr(param, "_tidied", False):
                param.help = f"{param.help or ''} {extra()}".strip()
                param._tidied = True  # type: ignore[attr-defined]
        if isinstance(command, TyperGroup) or shutil.get_terminal_size().columns >= WIDE_HELP:
            original(ctx, formatter)
            return
        marked = {param: param.help for param in command.params if param.help and "\\[" in param.help}
        mode, command.rich_markup_mode = command.rich_markup_mode, None  # click's plain text
        try:
            for param, text in marked.items():
                param.help = text.replace("\\[", "[")  # markup escapes are not markup there
            original(ctx, formatter)
        finally:
            command.rich_markup_mode = mode
            for param, text in marked.items():
                param.help = text

    command.format_help = format_help  # type: ignore[method-assign]
