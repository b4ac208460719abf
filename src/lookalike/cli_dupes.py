"""The ``lookalike dupes`` and ``lookalike undo`` commands: report duplicate groups, act on
them (move, trash, hardlink) with a journal, and put back what an action did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike import render
from lookalike.cli_io import err, fail, nothing, out, path_shower, print_skipped, steps
from lookalike.cli_options import Db, IndexDir, Relative, image_formats, open_index
from lookalike.fsutil import canonical

ACTION_OPTION = {"move": "--move-to", "trash": "--trash", "hardlink": "--hardlink"}


def dupes(
    index: IndexDir = None,
    db: Db = None,
    preset: Annotated[str, typer.Option(help="How alike copies must be:")] = "copies",
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Cosine threshold; overrides --preset.")
    ] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="P(same photo) threshold of a calibrated index; overrides --preset."
        ),
    ] = None,
    protect: Annotated[
        list[Path] | None,
        typer.Option(exists=True, help="Folder whose files are never proposed for removal."),
    ] = None,
    prefer_folder: Annotated[
        list[Path] | None, typer.Option(exists=True, help="Keep copies from this folder.")
    ] = None,
    prefer_format: Annotated[
        list[str] | None,
        typer.Option(help="Keep this format (e.g. PNG, or an extension: jpg).", callback=image_formats),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV rows on stdout.")] = False,
    html_dir: Annotated[
        Path | None, typer.Option("--html", help="Write a static report page (with thumbnails) here.")
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(help="Another index: this index's images already in it (scored as its searches are)."),
    ] = None,
    ignore: Annotated[
        tuple[Path, Path] | None, typer.Option(help="Mark two files as not duplicates, then stop.")
    ] = None,
    unignore: Annotated[
        tuple[Path, Path] | None, typer.Option(help="Forget an --ignore of two files, then stop.")
    ] = None,
    move_to: Annotated[Path | None, typer.Option(help="Move duplicates into this folder.")] = None,
    trash: Annotated[bool, typer.Option("--trash", help="Send duplicates to the trash.")] = False,
    hardlink: Annotated[
        bool, typer.Option("--hardlink", help="Replace exact duplicates by hardlinks to the kept file.")
    ] = False,
    journal: Annotated[Path | None, typer.Option(help="Undo journal (default: in the index).")] = None,
    relative: Relative = False,
) -> None:
    """Find duplicate groups: exact copies (same bytes) and near ones (similar vectors).

    Exit status 3 when there are none (nothing to act on)."""
    from lookalike.actions import ActionReport
    from lookalike.cli_io import check_journal, check_move_target, check_report_folder
    from lookalike.errors import InvalidArgument
    from lookalike.search.calibration import Calibration
    from lookalike.search.duplicates import KeepRules
    from lookalike.search.presets import resolve_threshold

    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json, --csv")
    chosen = [a for a, on in (("move", move_to is not None), ("trash", trash), ("hardlink", hardlink)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one of {', '.join(ACTION_OPTION.values())}")
    reports = [o for o, on in (("--json", as_json), ("--csv", as_csv), ("--html", html_dir)) if on]
    marks = [o for o, pair in (("--ignore", ignore), ("--unignore", unignore)) if pair is not None]
    if len(marks) > 1:
        raise typer.BadParameter("choose one of --ignore, --unignore")
    if marks and (chosen or reports):  # --ignore marks a pair, then stops
        given = ACTION_OPTION[chosen[0]] if chosen else reports[0]
        raise typer.BadParameter(f"{marks[0]} marks two files and stops; run {given} on its own")
    if chosen and reports:  # an action prints what it did, not the groups: a report would be dropped
        raise typer.BadParameter(
            f"{reports[0]} reports the groups; run it first, then act with {ACTION_OPTION[chosen[0]]}"
        )
    checks = ((html_dir, check_report_folder), (move_to, check_move_target), (journal, check_journal))
    for given, check in checks:
        if given is not None:  # before any work, and before anything moves or a journal is written
            check(given)
    idx = open_index(index, db=db)
    if move_to is not None:
        idx.check_move_target(move_to)
    if html_dir is not None:
        idx.check_report_folder(html_dir)
    if ignore is not None:
        idx.ignore(*ignore)
        out.print("remembered: these two are not duplicates", highlight=False)
        return
    if unignore is not None:
        marked = len(idx.ignored_pairs())
        idx.unignore(*unignore)
        if len(idx.ignored_pairs()) == marked:
            raise nothing("these two were not marked as not duplicates: nothing to forget")
        out.print("forgotten: these two may be found as duplicates again", highlight=False)
        return
    scored = open_index(against) if against else idx  # --against: the scores are the other index's
    manifest = scored.manifest()
    calibration = Calibration.from_dict(manifest.calibration)
    try:
        cutoff, label, note = resolve_threshold(
            preset, threshold, min_probability, manifest.model.source, calibration, against and str(against)
        )
    except InvalidArgument as exc:  # options that do not go together: a usage error
        raise typer.BadParameter(str(exc)) from None
    if note:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    rules = KeepRules(
        protect=[canonical(p) for p in protect or ()],
        prefer_folders=[canonical(p) for p in prefer_folder or ()],
        prefer_formats=prefer_format or (),
    )
    looks = preset == "similar" and threshold is None and min_probability is None  # look-alikes too
    with steps(err, "finding duplicates") as checked:  # a bar while pairs are checked from their files
        groups = (
            idx.found_in(against, cutoff, rules) if against else idx.duplicates(cutoff, rules, looks, checked)
        )
    if chosen:
        if not groups:
            raise nothing(f"no duplicates ({label}): nothing to {chosen[0]}")
        report = ActionReport(journal or idx.new_journal())
        try:
            going = render.count(sum(len(g.duplicates) for g in groups), "duplicate")
            with steps(err, f"{chosen[0]}: {going}"):
                idx.act_on_duplicates(groups, chosen[0], report.journal, move_to, rules.protect, report)
        except BaseException as exc:  # Ctrl-C, a full disk: what was done, and how to undo it
            if isinstance(exc, KeyboardInterrupt) or report.done:
                err.print(
                    render.action_summary(chosen[0], report), highlight=False, markup=False, soft_wrap=True
                )
            raise
        print_skipped(report.skipped)
        out.print(render.action_summary(chosen[0], report), highlight=False, markup=False, soft_wrap=True)
        if not report.done:
            raise fail(f"{chosen[0]}: no file was acted on ({len(report.skipped)} skipped, see above)")
        return
    shown = path_shower(relative)
    if html_dir is not None:
        from lookalike.report import write_html
        from lookalike.review import scoring_of

        with steps(err, "writing the report"):
            page = write_html(groups, html_dir, f"lookalike duplicates: {idx.directory}", scoring_of(scored))
        err.print(f"report written to {page}", highlight=False, markup=False)
    if as_json:
        print(render.dupes_json(groups, shown))
    elif as_csv:
        render.write_dupes_csv(groups, sys.stdout, shown)
    else:
        for line in render.dupes_lines(groups, label, shown):
            out.print(line, highlight=False)
    if not groups:
        raise nothing(f"no duplicates found ({label})")


def undo(
    journal: Annotated[
        Path | None,
        typer.Argument(help="Journal written by `dupes --move-to/--trash/--hardlink`.", show_default=False),
    ] = None,
    last: Annotated[bool, typer.Option("--last", help="The index's newest journal not yet undone.")] = False,
    index: IndexDir = None,
) -> None:
    """Put back what a `dupes` action moved, trashed or hardlinked, newest first.

    What comes back is indexed again: into the journal's own index, or --index."""
    from lookalike.actions import ALREADY_BACK, UNREADABLE, undone
    from lookalike.actions import undo as undo_journal
    from lookalike.storage.manifest import MANIFEST

    if journal is not None and last:
        raise typer.BadParameter("give a JOURNAL or --last, not both")
    if journal is None and not last:
        raise typer.BadParameter("give a JOURNAL, or --last for the newest one")
    if last:
        folder = open_index(index).journals
        # (older releases left empty ones)
        journals = [p for p in folder.glob("dupes-*.jsonl") if p.stat().st_size]
        found = sorted((p for p in journals if not undone(p)), key=lambda p: p.stat().st_mtime_ns)
        if journals and not found:
            raise nothing(f"nothing to restore: every journal in {folder} was undone")
        if not found:
            raise fail(f"no journal in {folder}")
        journal = found[-1]
        err.print(f"undoing {journal}", highlight=False, markup=False, soft_wrap=True)
    if not journal.is_file():
        raise fail(f"no journal at {journal}")
    home = journal.absolute().parents[1] if journal.absolute().parent.name == "journals" else None
    if home is not None and (home / MANIFEST).is_file():
        index = home  # the index whose action it undoes
    with steps(err, "restoring") as update:  # and indexed again, where the index is known
        report = undo_journal(journal, update) if index is None else open_index(index).undo(journal, update)
    print_skipped(report.skipped)
    indexed = index is not None and open_index(index).exists
    out.print(render.undo_summary(report, indexed), highlight=False, markup=False, soft_wrap=True)
    left = [path for path, why in report.skipped if why not in (ALREADY_BACK, UNREADABLE)]
    if left:  # some could not be put back (listed above): a script must not take it for done
        raise typer.Exit(1)
    if not report.done:
        raise nothing("nothing to restore: the journal's files are already back in place")
