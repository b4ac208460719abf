"""What the command line shows: tables, reports, summaries, CSV and JSON.

Functions here turn results into text or rich renderables and print nothing themselves
(the CLI chooses stdout or stderr). Paths are escaped wherever rich markup is read, so a
file named ``photo [red].jpg`` prints as it is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from lookalike import units
from lookalike.fsutil import printable

if TYPE_CHECKING:
    from pathlib import Path

    from lookalike.actions import ActionReport
    from lookalike.api import QueryResult
    from lookalike.indexer import IndexReport
    from lookalike.models.known import KnownModel
    from lookalike.search.calibration import Calibration
    from lookalike.search.duplicates import Group
    from lookalike.storage import VerifyReport

VERIFY_FIELDS = (
    "rows_without_vector",
    "vectors_without_row",
    "missing_from_faiss",
    "extra_in_faiss",
    "mismatched_vectors",
    "damaged_vectors",
)


def index_progress(
    console: Console, quiet: bool = False
) -> tuple[Progress, Callable[[int, int], None], Callable[[int, int], None]]:
    """A progress bar for ``index`` (on a terminal only), the ``(done, total)`` callback that
    moves it, and the one of the calibration that may follow (a second bar, "calibrating")."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
    task = progress.add_task("indexing", total=None, rate="-")
    calibration: list = []

    def update(done: int, total: int) -> None:
        speed = progress.tasks[task].speed
        progress.update(task, completed=done, total=total, rate=f"{speed:.1f}" if speed else "-")

    def calibrating(done: int, total: int) -> None:
        if not calibration:
            calibration.append(progress.add_task("calibrating scores", total=total, rate="-"))
        speed = progress.tasks[calibration[0]].speed
        progress.update(calibration[0], completed=done, total=total, rate=f"{speed:.1f}" if speed else "-")

    return progress, update, calibrating


def count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: "1 file", "0 files", "1204 files"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def index_summary(report: IndexReport, directory: Path) -> str:
    """The one line ``index`` ends with (plain text)."""
    return (
        f"indexed {count(report.indexed, 'image')} in {report.seconds:.1f} s "
        f"({report.images_per_second:.1f} images/s); {report.unchanged} unchanged, {report.reused} reused, "
        f"{count(report.errors, 'error')}, {report.removed} removed; index: {directory}"
    )


def offline_note(root: str, kept: int) -> str:
    """What ``index`` warns of a folder root found empty although indexed photos were below it."""
    photos = "photo was" if kept == 1 else "photos were"
    return (
        f"{root} is empty now, but {kept} indexed {photos} below it: kept in the index "
        f"(a drive or share not mounted?). If they are gone for good: lookalike remove {root}"
    )


def search_table(result: QueryResult, shown: Callable[[str], str] = str) -> Group:
    """One query's hits: rank, score, the pair's score alone where a closer hit lowered it,
    P(same photo) when calibrated, relation, path (as ``shown``), labels."""
    from lookalike.search.neighbours import shown_score  # (loaded already: the hits are its)

    table = Table(box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    lowered = any(h.alone - h.score > 5e-5 for h in result.hits)
    if lowered:  # by a closer hit that is another picture (search.neighbours)
        table.add_column("alone", justify="right")
    calibrated = any(h.probability is not None for h in result.hits)
    if calibrated:
        table.add_column("p(same)", justify="right")
    related = any(h.relation for h in result.hits)
    if related:
        table.add_column("relation")
    table.add_column("path", overflow="fold")
    if any(h.labels for h in result.hits):
        table.add_column("labels")
    for rank, h in enumerate(result.hits, 1):
        p = "" if h.probability is None else f"{h.probability:.3f}"
        alone = f"{shown_score(h.alone):.4f}"
        extra = [alone] if lowered else []
        extra += ([p] if calibrated else []) + ([h.relation or ""] if related else [])
        row = [str(rank), f"{shown_score(h.score):.4f}", *extra, escape(printable(shown(h.path)))]
        if h.labels:
            row.append(escape("; ".join(n for n, _ in h.labels[:3])))  # ImageNet names hold commas
        table.add_row(*row)
    if not result.hits:
        table.add_row("", "", "(no results)")
    # the query on a line of its own: a table's title wraps at the table's width, even piped
    return Group(Text(printable(result.query), style="table.title"), table)


def search_json(result: QueryResult, shown: Callable[[str], str] = str) -> dict:
    """One line of ``search --json``, paths as ``shown``."""
    doc = result.to_dict()
    for hit in doc["results"]:
        hit["path"] = shown(hit["path"])
    return doc


def no_hits(label, under, since, until, threshold, min_probability) -> str:
    """Why a search found nothing, naming the options that narrowed it."""
    given = [
        f"{name} {value}"
        for name, value in (
            ("--label", label),
            ("--under", ", ".join(map(str, under or ())) or None),
            ("--since", since and f"{since:%Y-%m-%d}"),
            ("--until", until and f"{until:%Y-%m-%d}"),
            ("--threshold", threshold),
            ("--min-probability", min_probability),
        )
        if value is not None
    ]
    if not given:
        return "no results: the index holds no images"
    return f"no results: no indexed image matches {' and '.join(given)}"


def info_table(stats: dict) -> Table:
    """An index's statistics, one per line; the size in MB."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a path or a hash whole on a narrow terminal, not cut at "…"
    for key, value in stats.items():
        if key == "size_bytes":
            key, value = "size on disk", f"{value / 1e6:.1f} MB"
        elif key == "learned_on":
            key, value = "learned", f"whitening, from {value:,} photos" if value else "nothing (plain cosine)"
        elif key == "calibrated_on":
            key, value = "calibrated", f"on {value:,} photos" if value else "no (see `lookalike calibrate`)"
        elif key == "calibration_refused":
            if value is None:
                continue
            key = "calibration refused"
        table.add_row(f"[bold]{key}", escape(str(value)))
    return table


def reindex_summary(stats: dict, seconds: float) -> str:
    """The line ``reindex`` ends with (plain text)."""
    return (
        f"rebuilt {stats['index_type']} ({stats['index_kind']}, setting {stats['index_setting']}) over "
        f"{stats['vectors']} vectors in {seconds:.1f} s; about {units.memory(stats['index_memory_bytes'])}"
    )


def calibration_summary(cal: Calibration) -> str:
    """What a fitted calibration rests on and the cosines of a few probability levels."""
    levels = ", ".join(
        f"{p:g} at cosine {c:.3f}" if (c := cal.cosine_for(p)) <= 1.0 else f"{p:g} never (cosine {c:.2f} > 1)"
        for p in (0.5, 0.9, 0.99, 0.999)
    )
    return (
        f"calibrated on {cal.photos} photos ({cal.positives} edited copies, {cal.negatives} other photos): "
        f"P(same photo) {levels}"
    )


def verify_lines(report: VerifyReport) -> list[str]:
    """A verify report: the generations, then each kind of disagreement with up to 10 ids."""
    lines = [
        f"catalogue generation {report.generation}, FAISS checkpoint generation "
        f"{report.checkpoint_generation}"
    ]
    for name in VERIFY_FIELDS:
        ids = getattr(report, name)
        if ids:
            sample = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
            lines.append(f"  {name.replace('_', ' ')}: {len(ids)} (ids {sample})")
    if report.checkpoint_unreadable:
        lines.append(
            f"  the FAISS checkpoint cannot be read ({report.checkpoint_unreadable}): rebuilt from the "
            "catalogue on every open, nothing is lost; `lookalike verify --repair` writes it anew"
        )
    elif report.checkpoint_absent and report.generation > 0:
        lines.append(
            "  there is no FAISS checkpoint (a new machine, or it was deleted): rebuilt from the catalogue "
            "on every open, nothing is lost; the next index run or `lookalike verify --repair` writes it"
        )
    elif report.behind and report.ok:
        lines.append(
            "  the FAISS checkpoint is behind the catalogue (a run stopped between a commit and "
            "its checkpoint): brought up to date on every open, nothing is lost"
        )
    return lines


def dupes_json(groups: Iterable[Group], shown: Callable[[str], str] = str) -> str:
    """Duplicate groups as one JSON document ``{"groups": [...]}``, paths as ``shown``."""
    docs = [g.to_dict() for g in groups]
    for doc in docs:
        doc["keep"] = shown(doc["keep"])
        for d in doc["duplicates"]:
            d["path"] = shown(d["path"])
            if d["via"]:
                d["via"] = shown(d["via"])
    return json.dumps({"groups": docs}, indent=2)


def write_dupes_csv(groups: Iterable[Group], stream: TextIO, shown: Callable[[str], str] = str) -> None:
    """Duplicate groups as CSV: a ``keep`` row, then a ``duplicate`` row per member."""
    writer = csv.writer(stream)
    writer.writerow(["group", "role", "path", "score", "kind", "relation", "reason", "via"])
    for n, g in enumerate(groups, 1):
        writer.writerow([n, "keep", shown(g.keep.path), "", "", "", "", ""])
        for d, why in zip(g.duplicates, g.reasons, strict=True):
            via = shown(d.via) if d.via else ""
            row = [n, "duplicate", shown(d.row.path), f"{d.score:.6f}", d.kind, d.relation, why, via]
            writer.writerow(row)


def dupes_lines(groups: Sequence[Group], label: str, shown: Callable[[str], str] = str) -> list[str]:
    """Duplicate groups for a person (rich markup): kept file, its duplicates (each with why
    the kept one wins), a summary; paths as ``shown``."""
    lines = []
    for g in groups:
        lines.append(f"[bold]keep[/] {escape(printable(shown(g.keep.path)))}")
        for d, why in zip(g.duplicates, g.reasons, strict=True):
            path = escape(printable(shown(d.row.path)))
            why = f"{why}; in the group through {printable(shown(d.via))}" if d.via else why
            lines.append(f"  {d.relation:10} {d.score:.4f}  {path}  [dim]({escape(why)})[/]")
    found = f"{count(len(groups), 'group')}, {count(sum(len(g.duplicates) for g in groups), 'duplicate')}"
    lines.append(f"{found}; {escape(label)}; nothing was changed")
    return lines


def action_summary(action: str, report: ActionReport) -> str:
    """The line a ``dupes`` action ends with: counts and how to undo it (plain text)."""
    undo = f"undo with: lookalike undo {report.journal}" if report.done else "nothing was changed"
    return f"{action}: {count(len(report.done), 'file')}, {len(report.skipped)} skipped; {undo}"


def undo_summary(report: ActionReport, indexed: bool = False) -> str:
    """The line ``undo`` ends with (plain text); ``indexed``: what came back was indexed again."""
    then = "indexed again" if indexed else "run `lookalike index` to index restored files again"
    return f"restored {count(len(report.done), 'file')}, {len(report.skipped)} skipped; {then}"


def models_table(entries: Iterable[KnownModel], default: str, handles: bool = True) -> Table:
    """The model catalogue, the default marked; ``handles``: with their TF Hub handles
    (too wide for a narrow terminal: see :func:`models_output`)."""
    entries = list(entries)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True, min_width=max((len(e.name) for e in entries), default=4))
    for col in ("dim", "input", "labels", "format", "handle")[: 5 if handles else 4]:
        table.add_column(col, no_wrap=True)
    for e in entries:
        name = f"{e.name} [green](default)[/]" if e.name == default else e.name
        row = [name, str(e.dim), str(e.input_size), "yes" if e.has_labels else "", e.hub_format, e.handle]
        table.add_row(*row[: 6 if handles else 5])
    return table


def models_output(entries: Iterable[KnownModel], default: str, console: Console) -> Group:
    """The model catalogue as ``console`` can show it whole: the names (what ``--model``
    takes) never cut short; the handles left out where they do not fit, with a note."""
    entries = list(entries)
    table = models_table(entries, default)
    if console.measure(table, options=console.options.update_width(10**6)).maximum <= console.width:
        return Group(table)
    note = Text("(the TF Hub handles: lookalike models --json)", style="dim")
    return Group(models_table(entries, default, handles=False), note)
