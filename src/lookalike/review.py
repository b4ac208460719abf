"""Reviewing duplicate groups: what a page shows of them, and a session that acts on them.

- :func:`facts` and :func:`group_view` are what the review page and the static report
  show of a group: each member's metadata beside the kept copy's, and what it is to the
  kept copy (relation, cosine, P(same photo), why the rules keep the other), for the
  kept copy the rules chose or one a person picked.
- :class:`Review` holds an index's groups, computed once per index state (catalogue
  generation and ignored pairs) and paged through, and acts on them: trash or move a
  group's duplicates (journalled exactly as ``lookalike dupes --trash``), mark a group
  "not duplicates" (ignored pairs), one group or a batch at a time, each step undoable.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lookalike.errors import GroupNotFound, InvalidArgument, ReviewOutdated
from lookalike.fsutil import path_problem
from lookalike.render import count
from lookalike.search.calibration import Calibration
from lookalike.search.duplicates import EXACT, NEAR, Duplicate, Group
from lookalike.search.keep import camera_name
from lookalike.search.presets import PRESETS, cutoffs_of, resolve_threshold
from lookalike.search.provenance import header_facts
from lookalike.search.relations import RECOLOURED, relation
from lookalike.storage.catalogue import FileRow

if TYPE_CHECKING:
    from lookalike.api import Index

T = TypeVar("T")
ACTIONS = ("trash", "move", "ignore")
DONE = {"trash": "trashed", "move": "moved", "ignore": "not duplicates"}
MAX_PAGE = 100


# --- what is shown of a group --------------------------------------------------------


FACT_LABELS = {
    "resolution": "Resolution", "size": "File size", "format": "Format", "camera": "Camera",
    "taken": "Taken", "gps": "GPS",
}  # fmt: skip


@dataclass(frozen=True)
class Facts:
    """One file's metadata as the review compares it (text, ready to show)."""

    resolution: str
    size: str
    format: str
    camera: str
    taken: str
    gps: str



def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def facts(row: FileRow) -> Facts:
    """What the review shows of a file: resolution, size, format (with a JPEG's quality),
    camera, capture time, GPS (the last two from the file's header, read now)."""
    exif = row.exif or {}
    header = header_facts(row.path)
    fmt = row.format or "unknown"
    if header.jpeg_quality is not None:
        fmt += f" (quality {header.jpeg_quality:.0f})"
    return Facts(
        resolution=f"{row.width} × {row.height}" if row.width and row.height else "unknown",
        size=_size(row.size),
        format=fmt,
        camera=camera_name(exif) or "none",
        taken=f"{row.captured_at:%Y-%m-%d %H:%M:%S}" if row.captured_at else "unknown",
        gps="yes" if header.gps else "no",
    )


@dataclass
class MemberView:
    """A member of a group as shown: its facts, and (unless it is the kept copy) what it is
    to the kept copy."""

    row: FileRow
    facts: Facts
    kept: bool
    relation: str | None = None  # exact, copy, recoloured, similar
    score: float | None = None  # cosine to the kept copy
    probability: float | None = None  # P(same photo), calibrated indexes
    reason: str | None = None  # why the kept copy is kept rather than this one
    differs: tuple[str, ...] = ()  # the facts that differ from the kept copy's
    via: str | None = None  # the centre this passes the threshold against, not the kept copy

    def to_dict(self) -> dict:
        out: dict = {"id": self.row.id, "path": self.row.path, "kept": self.kept, **self.facts.__dict__}
        if not self.kept:
            out.update(relation=self.relation, score=None if self.score is None else round(self.score, 4),
                       reason=self.reason, differs=list(self.differs), via=self.via)  # fmt: skip
            if self.probability is not None:
                out["probability"] = round(self.probability, 4)
        return out


@dataclass
class GroupView:
    """A group as the review shows it: the kept copy first."""

    number: int  # 1-based, stable until the groups are computed again
    members: list[MemberView]  # in the rules' order: their kept copy first
    rules_keep: int  # the id of the copy the rules keep
    status: str | None = None  # trashed, moved, not duplicates: done from the review
    note: str = ""

    @property
    def keep(self) -> MemberView:
        return next(m for m in self.members if m.kept)

    def to_dict(self) -> dict:
        return {
            "number": self.number, "keep": self.keep.row.id, "rules_keep": self.rules_keep,
            "status": self.status, "note": self.note, "members": [m.to_dict() for m in self.members],
        }  # fmt: skip


@dataclass(frozen=True)
class Scoring:
    """What turns a cosine into a relation and a probability on an index."""

    cutoffs: tuple[float, float]  # copy and look-alike cosines (the copies and similar presets)
    calibration: Calibration | None = None

    def probability(self, score: float, kind: str) -> float | None:
        if self.calibration is None:
            return None
        return 0.0 if kind == RECOLOURED else float(self.calibration.probability(score))


def scoring_of(index: Index) -> Scoring:
    """The relation cutoffs and the calibration of ``index``."""
    cutoffs, cal = cutoffs_of(index.manifest())
    return Scoring(cutoffs, cal)


def group_view(
    number: int,
    group: Group,
    scoring: Scoring,
    keep: int | None = None,
    sims: np.ndarray | None = None,
    status: str | None = None,
    note: str = "",
) -> GroupView:
    """How ``group`` is shown with member ``keep`` (an id; default: the rules' choice) kept;
    the members stay in the rules' order, so a person's pick does not reorder them.

    ``sims`` (the members' cosines, in the order kept copy then duplicates) is needed only
    when another member than the rules' is kept.
    """
    rows = [group.keep, *(d.row for d in group.duplicates)]
    ids = [r.id for r in rows]
    keep = group.keep.id if keep is None else keep
    if keep not in ids:
        raise InvalidArgument(f"image {keep} is not in group {number}")
    k = ids.index(keep)
    if k and sims is None:
        raise InvalidArgument("another kept copy than the rules' needs the members' similarities")
    kept = rows[k]
    kept_facts = facts(kept)
    members = []
    for n, row in enumerate(rows):  # in the rules' order (kept copy first), whichever is kept
        if n == k:
            members.append(MemberView(kept, kept_facts, True))
            continue
        mine = facts(row)
        differs = tuple(name for name in FACT_LABELS if getattr(mine, name) != getattr(kept_facts, name))
        if k == 0:  # the rules' kept copy: as the duplicate search said
            dup, reason = group.duplicates[n - 1], group.reasons[n - 1]
            kind, score = dup.relation, dup.score
        else:
            same = row.content_hash is not None and row.content_hash == kept.content_hash
            score = 1.0 if same else float(sims[k, n])
            kind = relation(score, scoring.cutoffs, same, kept.colour, row.colour)
            reason = "the rules would keep this one" if n == 0 else "your choice"
        prob = scoring.probability(score, kind)
        via = _via(group, n, kept)
        members.append(MemberView(row, mine, False, kind, score, prob, reason, differs, via))
    return GroupView(number, members, group.keep.id, status, note)


def _via(group: Group, n: int, kept: FileRow) -> str | None:
    """The centre through which member ``n`` of ``group`` is in it (see search.duplicates;
    0, the rules' kept copy: none), unless that centre is now the copy ``kept``."""
    via = group.duplicates[n - 1].via if n else None
    return via if via != kept.path else None


def regroup(group: Group, keep: int, sims: np.ndarray, cutoff: float) -> Group:
    """``group`` with member ``keep`` kept instead (``sims`` as for :func:`group_view`):
    what the actions get, so a person's choice is acted on as a rules' choice would be.
    A member under ``cutoff`` to the new kept copy is in the group through the old one
    (``via``), as a rules' group says of a member close only to its centre: the actions
    leave it while the old kept copy goes too."""
    rows = [group.keep, *(d.row for d in group.duplicates)]
    k = [r.id for r in rows].index(keep)
    if k == 0:
        return group
    out = Group(rows[k])
    for n, row in enumerate(rows):
        if n != k:
            same = row.content_hash is not None and row.content_hash == rows[k].content_hash
            score = 1.0 if same else float(sims[k, n])
            via = _via(group, n, rows[k])
            if via is None and n and score < cutoff:
                via = group.keep.path
            out.duplicates.append(Duplicate(row, score, EXACT if same else NEAR, via=via))
            out.reasons.append("chosen in the review")
    return out


# --- a review session ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do with one group, as the page saw it: its number and member ids (to
    notice groups that changed meanwhile), the kept copy, the action."""

    number: int
    members: frozenset[int]
    keep: int
    action: str  # trash, move or ignore

    @classmethod
    def parse(cls, raw: Any) -> Decision:
        """From JSON: ``{"number": 3, "members": [ids], "keep": id, "action": "trash"}``."""
        try:
            number, members, keep, action = raw["number"], raw["members"], raw["keep"], raw["action"]
            ok = all(type(x) is int for x in (number, keep, *members)) and len(members) <= 10_000
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise InvalidArgument("a decision is {number, members: [ids], keep: id, action}")
        if action not in ACTIONS:
            raise InvalidArgument(f"action must be one of {', '.join(ACTIONS)}")
        if keep not in members:
            raise InvalidArgument(f"the kept image {keep} is not a member of group {number}")
        return cls(number, frozenset(members), keep, action)


@dataclass
class _Slot:
    group: Group
    status: str | None = None
    note: str = ""
    sims: np.ndarray | None = None

    @property
    def ids(self) -> list[int]:
        return [self.group.keep.id, *(d.row.id for d in self.group.duplicates)]


@dataclass
class _Groups:
    key: tuple
    slots: list[_Slot]
    cutoff: float  # the preset's score threshold the groups were made at


@dataclass
class Step:
    """One undoable step of a review: journals of files acted on, pairs marked."""

    label: str
    journals: list[Path] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # paths marked not duplicates


@dataclass
class Outcome:
    """What a review step did, to tell the person."""

    message: str
    numbers: list[int] = field(default_factory=list)  # the groups it changed
    journals: list[str] = field(default_factory=list)
    done: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    undo: int = 0  # steps that can still be undone

    def to_dict(self) -> dict:
        return {
            "message": self.message, "groups": self.numbers, "journals": self.journals, "done": self.done,
            "skipped": [{"path": p, "why": w} for p, w in self.skipped], "undo": self.undo,
        }  # fmt: skip


def _run(fn: Callable[[], T]) -> T:
    return fn()


class Review:
    """The duplicate groups of an index under review: computed once per index state and
    preset, paged through, acted on. Thread-safe; ``write`` runs each write (a server
    passes its writer, which serialises them and waits for another process's lock)."""

    def __init__(self, index: Index, write: Callable[[Callable[[], T]], T] = _run) -> None:
        self.index = index
        self.write = write
        self.steps: list[Step] = []
        self._groups: dict[str, _Groups] = {}
        self._lock = threading.RLock()
        self.computed = 0  # how many times groups were computed (for tests and logs)

    # --- reading ---------------------------------------------------------------------

    def state(self) -> tuple:
        """What the groups depend on: the catalogue's version (see Index.version) and the
        ignored pairs."""
        ignored = hashlib.sha256(repr(sorted(self.index.ignored_pairs())).encode()).hexdigest()
        return self.index.version(), ignored

    def scoring(self) -> Scoring:
        return scoring_of(self.index)

    def _current(self, preset: str) -> _Groups:
        if preset not in PRESETS:
            raise InvalidArgument(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
        with self._lock:
            key = self.state()
            found = self._groups.get(preset)
            if found is None or found.key != key:
                manifest = self.index.manifest()
                cal = Calibration.from_dict(manifest.calibration)
                cutoff, _, _ = resolve_threshold(preset, None, None, manifest.model.source, cal)
                groups = self.index.duplicates(cutoff, include_recoloured=preset == "similar")
                found = self._groups[preset] = _Groups(key, [_Slot(g) for g in groups], cutoff)
                self.computed += 1
            return found

    def _sims(self, slots: Sequence[_Slot]) -> None:
        """Fill the members' similarities of ``slots``, as `dupes` scored them: group by
        group (the detail residual is measured among a matrix's first members only)."""
        for s in slots:
            if s.sims is None:
                s.sims = self.index.similarities(s.ids, dupes=True)

    def summary(self, preset: str = "copies") -> dict:
        """Counts of the groups: all, their duplicates, those acted on; steps to undo."""
        with self._lock:
            slots = self._current(preset).slots
            return {
                "preset": preset, "total": len(slots),
                "duplicates": sum(len(s.group.duplicates) for s in slots),
                "resolved": sum(s.status is not None for s in slots), "undo": len(self.steps),
            }  # fmt: skip

    def page(self, preset: str = "copies", page: int = 1, size: int = 20) -> tuple[dict, list[GroupView]]:
        """One page of groups (1-based), as views with the rules' kept copies, and the summary."""
        if not 1 <= size <= MAX_PAGE or page < 1:
            raise InvalidArgument(f"page must be >= 1 and size between 1 and {MAX_PAGE}")
        scoring = self.scoring()
        with self._lock:
            slots = self._current(preset).slots
            start = (page - 1) * size
            chosen = list(enumerate(slots[start : start + size], start + 1))
            views = [group_view(n, s.group, scoring, None, None, s.status, s.note) for n, s in chosen]
            summary = self.summary(preset)
        pages = max(1, -(-summary["total"] // size))
        return {**summary, "page": page, "size": size, "pages": pages}, views

    def view(self, number: int, keep: int | None = None, preset: str = "copies") -> GroupView:
        """Group ``number`` with ``keep`` (an id) kept (default: the rules' choice)."""
        scoring = self.scoring()
        with self._lock:
            total = len(self._current(preset).slots)
            if not 1 <= number <= total:
                raise GroupNotFound(f"no group {number}: there are {total} ({preset})")
            slot = self._slot(preset, number)
            if keep is not None and keep != slot.group.keep.id:
                self._sims([slot])
            return group_view(number, slot.group, scoring, keep, slot.sims, slot.status, slot.note)

    def _slot(self, preset: str, number: int, members: frozenset[int] | None = None) -> _Slot:
        slots = self._current(preset).slots
        if not 1 <= number <= len(slots) or (members is not None and set(slots[number - 1].ids) != members):
            raise ReviewOutdated(f"group {number} has changed since the page showed it: reload the page")
        return slots[number - 1]

    # --- acting ----------------------------------------------------------------------

    def act(
        self, decisions: Sequence[Decision], move_to: str | os.PathLike | None = None, preset: str = "copies"
    ) -> Outcome:
        """Carry out ``decisions`` as one undoable step: the duplicates of the groups to
        trash or move go (one journal per action, as the CLI writes), the members of the
        groups marked not duplicates become ignored pairs."""
        if not decisions:
            raise InvalidArgument("no decisions to apply")
        numbers = [d.number for d in decisions]
        if twice := sorted({n for n in numbers if numbers.count(n) > 1}):
            raise InvalidArgument(f"one decision per group: group {twice[0]} is given more than once")
        if any(d.action == "move" for d in decisions):
            if not move_to or not os.path.isabs(os.fspath(move_to)):
                raise InvalidArgument("moving duplicates needs an absolute destination folder")
            if why := path_problem(os.fspath(move_to)):
                raise InvalidArgument(f"moving duplicates to {os.fspath(move_to)!r}: {why}")
            if os.path.exists(move_to) and not os.path.isdir(move_to):
                raise InvalidArgument(f"{move_to} is a file, not a folder")
        with self._lock:
            found = self._current(preset)
            slots = {}
            for d in decisions:
                slot = self._slot(preset, d.number, d.members)
                if slot.status is not None:
                    raise ReviewOutdated(f"group {d.number} was already {slot.status}: reload the page")
                slots[d.number] = slot
            self._sims([slots[d.number] for d in decisions if d.keep != slots[d.number].group.keep.id])
            before = self.state()
            step, outcome = Step(self._label(decisions)), Outcome("")
            try:
                for action in ("trash", "move"):
                    chosen = [d for d in decisions if d.action == action]
                    if chosen:
                        self._files(action, chosen, slots, found.cutoff, move_to, step, outcome)
                pairs = [
                    (a.path, b.path)
                    for d in decisions if d.action == "ignore"
                    for a, b in itertools.combinations(_rows(slots[d.number].group), 2)
                ]  # fmt: skip
                if pairs:
                    self.write(lambda: self.index.ignore_pairs(pairs))
                    step.pairs = pairs
                    for d in (d for d in decisions if d.action == "ignore"):
                        slots[d.number].status, slots[d.number].note = DONE["ignore"], "marked not duplicates"
                        outcome.numbers.append(d.number)
            finally:
                if step.journals or step.pairs:
                    self.steps.append(step)
                if found.key == before:  # nothing but this step changed the index: no recomputing
                    found.key = self.state()
            outcome.undo = len(self.steps)
            outcome.message = self._message(decisions, outcome)
            return outcome

    def _files(self, action, chosen, slots, cutoff: float, move_to, step: Step, outcome: Outcome) -> None:
        groups = [regroup(slots[d.number].group, d.keep, slots[d.number].sims, cutoff) for d in chosen]
        journal = self.index.new_journal()
        kind = "move" if action == "move" else "trash"
        target = Path(move_to) if action == "move" else None
        try:
            report = self.write(lambda: self.index.act_on_duplicates(groups, kind, journal, target))
        finally:
            if journal.exists():  # (written only once a file is acted on)
                step.journals.append(journal)
                outcome.journals.append(str(journal))
        outcome.done += len(report.done)
        outcome.skipped += report.skipped
        skipped = {p for p, _ in report.skipped}
        for d, g in zip(chosen, groups, strict=True):
            paths = [x.row.path for x in g.duplicates]
            gone, kept = [p for p in paths if p not in skipped], [p for p in paths if p in skipped]
            slot = slots[d.number]
            slot.status = DONE[action] if gone else None
            slot.note = f"{len(gone)} {DONE[action]}" + (f", {len(kept)} skipped" if kept else "")
            outcome.numbers.append(d.number)

    @staticmethod
    def _label(decisions: Sequence[Decision]) -> str:
        actions = sorted({DONE[d.action] for d in decisions})
        numbers = ", ".join(str(d.number) for d in decisions[:5]) + ("…" if len(decisions) > 5 else "")
        return f"group{'s' if len(decisions) > 1 else ''} {numbers} {' / '.join(actions)}"

    @staticmethod
    def _message(decisions: Sequence[Decision], outcome: Outcome) -> str:
        parts = []
        for action in ACTIONS:
            n = sum(d.action == action for d in decisions)
            groups = count(n, "group")
            if n and action != "ignore" and not outcome.done:  # every file skipped
                parts.append(f"nothing {DONE[action]} in {groups}")
            elif n:
                parts.append(f"{groups} {DONE[action]}")
        text = "; ".join(parts)
        if outcome.done:
            text += f" ({count(outcome.done, 'file')})"
        if outcome.skipped:
            text += f"; {len(outcome.skipped)} skipped: {outcome.skipped[0][1]}"
        return text

    def undo(self) -> Outcome:
        """Undo the newest step: put back its files (and index them again), forget its
        pairs. Groups are computed again afterwards."""
        with self._lock:
            if not self.steps:
                raise InvalidArgument("nothing to undo")
            step = self.steps.pop()
            outcome = Outcome("")
            try:
                for journal in reversed(step.journals):
                    report = self.write(lambda j=journal: self.index.undo(j))
                    outcome.done += len(report.done)
                    outcome.skipped += report.skipped
                    outcome.journals.append(str(journal))
                if step.pairs:
                    self.write(lambda: self.index.ignore_pairs(step.pairs, forget=True))
            except BaseException:
                self.steps.append(step)  # not undone: it stays undoable
                raise
            self._groups.clear()
            outcome.undo = len(self.steps)
            outcome.message = f"undone: {step.label}"
            if step.journals:
                outcome.message += f": {outcome.done} file{'s' if outcome.done != 1 else ''} put back"
            if outcome.skipped:
                outcome.message += f"; {len(outcome.skipped)} not: {outcome.skipped[0][1]}"
            return outcome


def _rows(group: Group) -> list[FileRow]:
    return [group.keep, *(d.row for d in group.duplicates)]
