"""The ``lookalike`` command line: a thin layer over :mod:`lookalike.api`."""

from __future__ import annotations

import errno
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from lookalike import render
from lookalike.cli_dupes import dupes, undo
from lookalike.cli_io import (
    EXIT_INTERRUPTED,
    err,
    fail,
    nothing,
    out,
    path_shower,
    print_skipped,
    steps,
    tidy_help,
    warn,
)
from lookalike.cli_options import (
    HELP_EXTRAS,
    Db,
    IndexDir,
    IndexType,
    MaxMemory,
    RayAddress,
    Relative,
    Runtime,
    index_settings,
    open_index,
    parse_range,
)
from lookalike.errors import LookalikeError
from lookalike.fsutil import canonical
from lookalike.images import DEFAULT_MAX_MEGAPIXELS
from lookalike.models import INPUT_SIZES


class Commands(TyperGroup):
    """The ``lookalike`` commands, with the one place errors meant for a person are reported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_help(self)
        for name, command in self.commands.items():
            tidy_help(command, HELP_EXTRAS.get(name))

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command. A :class:`LookalikeError`, or an ``OSError`` (a path that cannot be
        read or written), becomes ``error: <message>`` on stderr and exit status 1; any other
        exception is a bug and propagates with its traceback."""
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # a closed pipe (`lookalike dupes --csv | head`): click quiets it
            message = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
            raise fail(message) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            chosen = isinstance(exc, typer.Exit | click.exceptions.Exit | click.exceptions.Abort)
            if chosen or not _after_ctrl_c(exc):  # (an exit a command chose on Ctrl-C: index's own)
                raise
            err.print("interrupted", highlight=False)  # clean-up that Ctrl-C cut short failed too
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _after_ctrl_c(exc: BaseException | None) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C was being handled (a database session
    closed mid-statement raises its own error from its clean-up)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


app = typer.Typer(
    cls=Commands,
    help="Find look-alike and duplicate images: index folders, search by image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or image files to index.")],
    index: IndexDir = None,
    db: Db = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Catalogue name, TF Hub URL, SavedModel folder, .tar.gz or .tflite file.", show_default=False
        ),
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="Class names file or URL for classification models.")
    ] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only files matching this glob.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip files or folders matching.")] = None,
    hidden: Annotated[bool, typer.Option(help="Also index hidden files and folders.")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symlinked folders.")] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Decoder processes (default: one per core); with --ray, embedding actors."),
    ] = None,
    max_megapixels: Annotated[
        float, typer.Option(min=0.01, help="Refuse larger images (decompression bombs).")
    ] = DEFAULT_MAX_MEGAPIXELS,
    input_size: Annotated[
        int | None,
        typer.Option(
            min=INPUT_SIZES[0], max=INPUT_SIZES[1], help="Input size for models that accept any size."
        ),
    ] = None,
    input_range: Annotated[
        str | None, typer.Option(help="Pixel range of float .tflite models: 0,1 or -1,1 (default).")
    ] = None,
    runtime: Runtime = "auto",
    descriptor: Annotated[
        str | None,
        typer.Option(
            help="How images become vectors, fixed when the index is created:",
            show_default=False,
        ),
    ] = None,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    ray: RayAddress = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Index images below PATHS (again: only new and changed files are read)."""
    from lookalike.descriptors import get_descriptor
    from lookalike.errors import InvalidArgument
    from lookalike.indexer import IndexOptions

    if descriptor is not None:
        try:
            get_descriptor(descriptor)
        except InvalidArgument as exc:  # a usage error, as click's own bad values
            raise typer.BadParameter(str(exc)) from None
    idx = open_index(index, runtime, db)
    opts = IndexOptions(
        include=include or (),
        exclude=exclude or (),
        hidden=hidden,
        follow_symlinks=follow_symlinks,
        batch_size=batch_size,
        workers=workers,
        max_megapixels=max_megapixels,
    )
    progress, update, calibrating = render.index_progress(err, quiet)
    try:
        with progress:
            report = idx.add(
                [str(p) for p in paths],
                model=model,
                labels=labels,
                options=opts,
                progress=update,
                input_size=input_size,
                input_range=parse_range(input_range),
                index_settings=index_settings(index_type, max_memory),
                descriptor=descriptor,
                ray=ray,
                calibration_progress=calibrating,
            )
    except KeyboardInterrupt:  # the bar moves after each committed batch: its count is committed
        committed = render.count(int(progress.tasks[0].completed), "image")
        err.print(
            f"interrupted: {committed} committed; run the same command again to resume",
            highlight=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    out.print(render.index_summary(report, idx.directory), highlight=False, markup=False, soft_wrap=True)
    print_skipped(report.error_samples[:10])
    for root, kept in report.offline:
        warn(render.offline_note(root, kept))
    if report.errors > 10:
        err.print(f"  ... see `lookalike info --errors` for all {report.errors}", highlight=False)
    if report.indexed + report.unchanged + report.reused == 0:
        where = ", ".join(str(p) for p in paths)
        if report.errors:
            if len(paths) == 1 and paths[0].is_file():
                raise fail(f"{where} could not be indexed")
            errors = render.count(report.errors, "error")
            raise fail(f"none of the image files below {where} could be indexed ({errors})")
        raise nothing(f"no image files found below {where}")


@app.command()
def search(
    images: Annotated[list[str], typer.Argument(help="Query images: files, http(s) URLs, or - for stdin.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Neighbours per query.")] = 10,
    label: Annotated[str | None, typer.Option(help="Only images with this label.")] = None,
    under: Annotated[list[Path] | None, typer.Option(help="Only images below this folder.")] = None,
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Taken on or after.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"], help="Taken before.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Only hits scoring at least this (score column).")
    ] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Only hits at least this likely the same photo (calibrated)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per query line.")] = False,
    relative: Relative = False,
    index: IndexDir = None,
    db: Db = None,
    runtime: Runtime = "auto",
) -> None:
    """Show the indexed images most similar to each query image.

    Dates are the EXIF capture time, else the file's modification time. Exit status 3 when
    no query found anything (filters matching nothing, a threshold nothing reaches)."""
    from lookalike.search import Filters

    if since is not None and until is not None and since > until:
        raise typer.BadParameter(f"--since {since:%Y-%m-%d} is after --until {until:%Y-%m-%d}")
    idx = open_index(index, runtime, db)
    filters = Filters(label=label, under=[canonical(p) for p in under or ()], since=since, until=until)
    queries: list = []
    fetch_errors: dict[int, str] = {}
    for n, image in enumerate(images):
        if image == "-":
            queries.append(sys.stdin.buffer.read())
        elif image.startswith(("http://", "https://")):
            from lookalike.fetch import FetchError, fetch

            try:
                queries.append(fetch(image, allow_private=True))  # the user's own URLs
            except FetchError as exc:
                queries.append(b"")
                fetch_errors[n] = str(exc)
        else:
            queries.append(image)
    results = idx.search(queries, k, filters, threshold, min_probability, names=images)
    for n, message in fetch_errors.items():
        results[n].error, results[n].hits = message, []
    failed = False
    shown = path_shower(relative)
    for r in results:
        failed |= r.error is not None
        if r.error:  # on stderr as every error is, and in the JSON line too
            err.print(f"[red]error[/]: {escape(r.query)}: {escape(r.error)}", highlight=False, soft_wrap=True)
        if as_json:
            print(json.dumps(render.search_json(r, shown)), flush=True)
        elif not r.error:
            out.print(render.search_table(r, shown))
    if failed:
        raise typer.Exit(1)
    if not any(r.hits for r in results):
        raise nothing(render.no_hits(label, under, since, until, threshold, min_probability))


@app.command()
def info(
    index: IndexDir = None,
    db: Db = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    errors: Annotated[bool, typer.Option("--errors", help="List files that could not be indexed.")] = False,
) -> None:
    """Describe an index: files, errors, model, dimension, index type, size on disk."""
    idx = open_index(index, db=db)
    stats = idx.info()
    bad = idx.errors() if errors else []
    if as_json:
        if errors:
            stats["error_files"] = [{"path": p, "reason": r} for p, r in bad]
        print(json.dumps(stats, indent=2))
        return
    out.print(render.info_table(stats))
    for path, reason in bad:
        out.print(f"{path}: {reason}", highlight=False, markup=False)


@app.command()
def reindex(
    index: IndexDir = None,
    db: Db = None,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    nprobe: Annotated[
        int | None,
        typer.Option(
            min=0, help="Inverted lists visited per query (0: default). Recorded.", show_default=False
        ),
    ] = None,
) -> None:
    """Rebuild the vector index from the catalogue, e.g. as another --index-type."""
    settings = index_settings(index_type, max_memory, nprobe)
    started = datetime.now()
    with steps(err, "rebuilding"):
        stats = open_index(index, db=db).reindex(**settings)
    seconds = (datetime.now() - started).total_seconds()
    out.print(render.reindex_summary(stats, seconds), highlight=False, markup=False)


@app.command()
def calibrate(
    index: IndexDir = None,
    db: Db = None,
    sample: Annotated[int, typer.Option(min=5, help="Indexed photos to edit and compare.")] = 200,
    runtime: Runtime = "auto",
) -> None:
    """Fit the index's score calibration: cosine -> P(same photo), on its own photos."""
    with steps(err, "calibrating") as update:
        cal = open_index(index, runtime, db).calibrate(sample, progress=update)
    out.print(render.calibration_summary(cal), highlight=False, markup=False, soft_wrap=True)


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files, or folders whose files to drop.")],
    index: IndexDir = None,
    db: Db = None,
) -> None:
    """Drop files from the index (the files themselves are not touched)."""
    count = open_index(index, db=db).remove([str(p) for p in paths])
    if not count:
        raise nothing(f"nothing in the index below {', '.join(str(p) for p in paths)}; removed 0 files")
    out.print(f"removed {render.count(count, 'file')} from the index", highlight=False)


@app.command()
def verify(
    index: IndexDir = None,
    db: Db = None,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what is found.")] = False,
) -> None:
    """Check that every catalogue row has its vector in FAISS and vice versa."""
    with steps(err, "repairing" if repair else "verifying"):
        found, after = open_index(index, db=db).verify(repair=repair)
    _print_verify(found)
    if found.ok:
        out.print("[green]ok[/]: catalogue and vectors agree")
        return
    if after is None:
        err.print("problems found; `lookalike verify --repair` fixes them")
        raise typer.Exit(1)
    if dropped := len(found.unusable):
        out.print(f"repaired: {dropped} rows without a usable vector dropped (indexed again next run)")
    out.print("repaired: the FAISS checkpoint written anew from the catalogue")
    _print_verify(after)
    if not after.ok:
        raise fail("still inconsistent after repair")
    out.print("[green]ok[/]: catalogue and vectors agree")


def _print_verify(report) -> None:
    for line in render.verify_lines(report):
        out.print(line, highlight=False, markup=False)


app.command()(dupes)
app.command()(undo)


def _version(value: bool) -> None:
    if value:
        from lookalike import __version__

        typer.echo(f"lookalike {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and stop.")
    ] = False,
) -> None:
    """Find look-alike and duplicate images: index folders, search by image."""


@app.command()
def serve(
    index: IndexDir = None,
    db: Db = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(envvar="LOOKALIKE_TOKEN", help="Bearer token; required unless the host is loopback."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.1, help="Largest upload accepted.")] = 25.0,
    max_megapixels: Annotated[float, typer.Option(min=0.01)] = DEFAULT_MAX_MEGAPIXELS,
    max_decode_megapixels: Annotated[
        float, typer.Option(min=0.01, help="Largest image decoded whole (baseline JPEGs decode reduced).")
    ] = 40.0,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="Another Host name (or name:port) to answer to; repeatable.")
    ] = None,
    allow_private_urls: Annotated[
        bool, typer.Option(help="Let URL searches fetch loopback and private addresses.")
    ] = False,
    runtime: Runtime = "auto",
) -> None:
    """Serve reverse image search over HTTP: a web page at /, the API's schema at /openapi.json."""
    import uvicorn

    from lookalike.cli_io import bind
    from lookalike.server import ServerConfig, create_app, is_loopback, uvicorn_config

    if not is_loopback(host) and not token:
        raise fail(f"listening on {host} needs --token (or $LOOKALIKE_TOKEN)")
    cfg = ServerConfig(
        index=open_index(index, db=db).directory,
        db=db,
        token=token,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_megapixels=max_megapixels,
        max_decode_megapixels=max_decode_megapixels,
        runtime=runtime,
        host=host,
        port=port,
        allowed_hosts=allowed_host or (),
        allow_private_urls=allow_private_urls,
    )
    sock = bind(host, port)  # a busy port fails here, before the URL is announced
    try:
        api = create_app(cfg)
    except ValueError as exc:  # a malformed --allowed-host
        sock.close()
        raise fail(str(exc)) from None
    err.print(f"serving {cfg.index} on http://{host}:{port}/ (API schema at /openapi.json)", highlight=False)
    uvicorn.Server(uvicorn_config(api, cfg)).run(sockets=[sock])


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="Output path (extension added from --format).")],
    fmt: Annotated[str, typer.Option("--format", help="npy (+ .paths.json) or parquet.")] = "npy",
    index: IndexDir = None,
    db: Db = None,
) -> None:
    """Write the index's vectors with their paths, for other tools."""
    with steps(err, "exporting"):
        files = open_index(index, db=db).export(out, fmt)
    typer.echo(f"wrote {', '.join(str(f) for f in files)}")


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the TF Hub modules known by short name (for --model)."""
    from lookalike.models import DEFAULT_MODEL, KNOWN_MODELS

    if as_json:
        rows = [{**e.__dict__, "default": e.name == DEFAULT_MODEL} for e in KNOWN_MODELS.values()]
        print(json.dumps(rows, indent=2))
        return
    out.print(render.models_output(KNOWN_MODELS.values(), DEFAULT_MODEL, out))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    app()  # Ctrl-C: Commands.invoke says so (index: what was committed), exit status 130


if __name__ == "__main__":
    main()
