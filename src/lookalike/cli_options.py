"""The options several ``lookalike`` commands share, and the parsing of their values."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from lookalike.api import Index

IndexDir = Annotated[
    Path | None,
    typer.Option(
        "--index",
        envvar="LOOKALIKE_INDEX",
        help="Index folder (default: $LOOKALIKE_INDEX, else a per-user data folder).",
        show_default=False,
    ),
]


Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="LOOKALIKE_DB",
        help="Catalogue database URL, e.g. postgresql://host/name (default: SQLite in the index folder; "
        "remembered by the folder, without password).",
        show_default=False,
    ),
]


Runtime = Annotated[
    str,
    typer.Option(help="Inference runtime: tf, tflite (converted, checked against TF), or auto."),
]


RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Read, decode and embed on a Ray cluster: local (a runtime on this machine), auto (the cluster "
        "`ray start` set up) or ray://HOST:PORT; this process still writes. "
        "Needs the ray extra: pip install lookalike\\[ray].",
        show_default=False,
    ),
]


IndexType = Annotated[
    str | None,
    typer.Option(
        "--index-type",
        help="auto (by size and --max-memory), flat (exact), ivf-flat, ivf-sq8 or ivf-pq. Recorded.",
        show_default=False,
    ),
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        help="Memory budget of the vector index, e.g. 2G (none: no limit). Recorded.", show_default=False
    ),
]


def open_index(index: Path | None, runtime: str = "auto", db: str | None = None) -> Index:
    """The :class:`~lookalike.api.Index` that ``--index``, ``--runtime`` and ``--db`` name."""
    from lookalike.api import Index
    from lookalike.models import RUNTIMES

    if runtime not in RUNTIMES:
        raise typer.BadParameter(f"--runtime must be one of {', '.join(RUNTIMES)}")
    return Index(index, runtime=runtime, db=db)


def index_settings(index_type: str | None, max_memory: str | None, nprobe: int | None = None) -> dict:
    """The vector index settings the options ask for (only those given)."""
    from lookalike.storage.vectors import INDEX_TYPES, parse_memory

    settings: dict = {}
    if index_type is not None:
        if index_type not in ("auto", *INDEX_TYPES):
            choices = ", ".join(("auto", *INDEX_TYPES))
            raise typer.BadParameter(f"{index_type!r} is not one of {choices}", param_hint="--index-type")
        settings["type"] = index_type
    if max_memory is not None:
        try:
            settings["max_memory"] = parse_memory(max_memory)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--max-memory") from None
    if nprobe is not None:
        settings["nprobe"] = nprobe or None
    return settings


def parse_range(value: str | None) -> tuple[float, float] | None:
    """``--input-range`` as two numbers, e.g. ``0,1``."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter("expected two numbers, e.g. 0,1 or -1,1") from None
    return lo, hi


def image_formats(values: list[str] | None) -> list[str] | None:
    """``--prefer-format`` as Pillow names its formats (``jpg``: ``JPEG``); unknown: a usage error."""
    from lookalike.errors import InvalidArgument
    from lookalike.images import format_named

    try:
        return None if values is None else [format_named(v) for v in values]
    except InvalidArgument as exc:
        raise typer.BadParameter(str(exc)) from None


Relative = Annotated[
    bool, typer.Option("--relative", help="Show paths relative to the current folder.", show_default=False)
]


def _model_help() -> str:
    from lookalike.models.known import DEFAULT_MODEL

    return (
        f"Default: {DEFAULT_MODEL} (MobileNet V1 0.75, 224 px; downloaded from TF Hub on first use, "
        "about 10 MB, then cached); `lookalike models` lists the others."
    )


def _descriptor_help() -> str:
    from lookalike.descriptors import DESCRIPTORS

    return "; ".join(f"{d.name}: {d.help}" for d in DESCRIPTORS.values()) + "."


def _preset_help() -> str:
    from lookalike.search.presets import PRESETS

    def cutoff(p) -> str:
        return "" if p.threshold > 1 else f" (cosine >= {p.threshold:g})"

    return "; ".join(f"{p.name}{cutoff(p)}: {p.meaning}" for p in PRESETS.values()) + (
        ". The cosines are for MobileNet V1; calibrated indexes of other models use probability levels."
    )


# Help texts completed when the help is shown (see cli_io.tidy_help): command -> option -> text.
HELP_EXTRAS = {
    "index": {"model": _model_help, "descriptor": _descriptor_help},
    "dupes": {"preset": _preset_help},
}
