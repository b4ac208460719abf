"""The manifest: what an index is (model, preprocessing, descriptor, settings), typed.

It is stored twice: as ``manifest.json`` in the index folder (written last when an
index is created, so its presence means "index ready") and in the catalogue's ``meta``
table, whose copy wins (another machine opens a shared catalogue with just its URL).
The JSON layout is that of version 1 and stays readable by older releases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from lookalike.descriptors import DEFAULT_DESCRIPTOR, get_descriptor
from lookalike.errors import IncompatibleIndex, StoreError
from lookalike.models.runtimes import ModelInfo

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
INDEX_SETTING_KEYS = ("type", "max_memory", "nprobe")


@dataclass
class IndexSettings:
    """How the vector index is chosen: ``type`` (auto or a type of
    :data:`lookalike.storage.vectors.INDEX_TYPES`), ``max_memory`` (bytes), ``nprobe``."""

    type: str = "auto"
    max_memory: int | None = None
    nprobe: int | None = None

    def to_dict(self) -> dict:
        return {"type": self.type, "max_memory": self.max_memory, "nprobe": self.nprobe}

    @classmethod
    def from_dict(cls, d: dict | None) -> IndexSettings:
        return cls(**{k: v for k, v in (d or {}).items() if k in INDEX_SETTING_KEYS})


@dataclass
class Manifest:
    """An index's identity and settings (see the module docstring)."""

    model: ModelInfo
    dim: int
    preprocessing: dict
    descriptor: str = DEFAULT_DESCRIPTOR
    labels: str | None = None  # class names file or URL of a classification model
    metric: str = "cosine"
    created_at: str = ""
    version: int = MANIFEST_VERSION
    database: str | None = None  # where the catalogue lives, when not in the folder (no password)
    vector_index: IndexSettings | None = None  # None: never set (defaults apply)
    calibration: dict | None = None  # see lookalike.search.calibration
    learned: dict | None = None  # the collection's whitening: version, vectors (see search.metric)
    extra: dict = field(default_factory=dict)  # keys written by newer releases, kept as they are

    @classmethod
    def new(cls, model: ModelInfo, descriptor: str | None, labels: str | None) -> Manifest:
        """The manifest of an index about to be created."""
        desc = get_descriptor(descriptor)
        return cls(
            model=model,
            dim=model.dim,
            preprocessing=preprocessing(model, desc.name),
            descriptor=desc.name,
            labels=labels if model.has_labels else None,
            created_at=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        )

    @property
    def settings(self) -> IndexSettings:
        """The vector index settings in force (defaults where none were recorded)."""
        return self.vector_index or IndexSettings()

    def to_dict(self) -> dict:
        out: dict = {
            "version": self.version,
            "created_at": self.created_at,
            "model": self.model.to_dict(),
            "preprocessing": self.preprocessing,
            "dim": self.dim,
            "metric": self.metric,
            "labels": self.labels,
            "descriptor": self.descriptor,
        }
        if self.database:
            out["database"] = self.database
        if self.vector_index is not None:
            out["vector_index"] = self.vector_index.to_dict()
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.learned is not None:
            out["learned"] = self.learned
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        known = {f.name for f in fields(cls)} - {"extra"}
        m = d["model"]
        return cls(
            model=ModelInfo(
                source=m["source"],
                identity=m["identity"],
                input_size=tuple(m["input_size"]),
                dim=int(m["dim"]),
                input_range=tuple(m["input_range"]),
                has_labels=bool(m["has_labels"]),
                runtime=m.get("runtime", ""),
            ),
            dim=int(d["dim"]),
            preprocessing=d["preprocessing"],
            descriptor=d.get("descriptor", DEFAULT_DESCRIPTOR),
            labels=d.get("labels"),
            metric=d.get("metric", "cosine"),
            created_at=d.get("created_at", ""),
            version=int(d.get("version", MANIFEST_VERSION)),
            database=d.get("database"),
            vector_index=IndexSettings.from_dict(d["vector_index"]) if "vector_index" in d else None,
            calibration=d.get("calibration"),
            learned=d.get("learned"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls.from_dict(json.loads(text))

    def same_model(self, model: ModelInfo) -> bool:
        """Whether ``model`` gives vectors comparable to this index's: same identity and
        preprocessing (the descriptor's part of it is compared by :meth:`check_descriptor`)."""
        mine = {k: v for k, v in self.preprocessing.items() if k != "resize"}
        theirs = {k: v for k, v in preprocessing(model).items() if k != "resize"}
        return self.model.identity == model.identity and mine == theirs

    def check_model(self, model: ModelInfo, directory: Path) -> None:
        """Refuse to mix vectors from different models or preprocessing in one index."""
        if self.same_model(model):
            return
        have = self.model
        if have.identity != model.identity:
            built = f"model {have.source} ({have.dim} dims, identity {have.identity[:12]})"
            asked = f"{model.source} ({model.dim} dims, identity {model.identity[:12]})"
            fix = "the index's own model"
        elif have.input_size != model.input_size:
            built, asked = f"model {have.source} at {_size(have)} input", f"{_size(model)} input"
            fix = "no --input-size"
        elif have.input_range != model.input_range:
            built, asked = f"model {have.source} fed pixels in {_range(have)}", f"pixels in {_range(model)}"
            fix = "no --input-range"
        else:  # an older release's preprocessing
            built, asked, fix = f"preprocessing {self.preprocessing}", "this release's", "a new --index"
        raise IncompatibleIndex(
            f"index {directory} was built with {built}; {asked} would give vectors that cannot be "
            f"compared. Use another --index, or {fix}."
        )

    def check_descriptor(self, descriptor: str | None, directory: Path) -> None:
        """Refuse a descriptor other than the one the index was built with."""
        if descriptor is not None and get_descriptor(descriptor).name != self.descriptor:
            raise IncompatibleIndex(
                f"index {directory} was built with descriptor {self.descriptor!r}, not {descriptor!r}: "
                "vectors made differently cannot be compared. Use another --index."
            )


def _size(model: ModelInfo) -> str:
    return "x".join(str(n) for n in model.input_size)


def _range(model: ModelInfo) -> str:
    lo, hi = model.input_range
    return f"[{lo:g}, {hi:g}]"


def preprocessing(model: ModelInfo, descriptor: str = DEFAULT_DESCRIPTOR) -> dict:
    """How pixels reach ``model``: colour, resampling, input size and range, and how the
    image is fitted to the input (the descriptor's resize)."""
    h, w = model.input_size
    return {
        "color": "RGB",
        "resize": get_descriptor(descriptor).resize,
        "resample": "bilinear-antialias",
        "height": h,
        "width": w,
        "input_range": list(model.input_range),
    }


class DamagedManifest(StoreError):
    """The folder's manifest.json cannot be read (the catalogue may hold a copy)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is damaged ({reason}); restore it from a backup")
        self.path, self.reason = path, reason


def read_local(directory: Path) -> Manifest | None:
    """The folder's ``manifest.json``, or None when there is none."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not a manifest's
        reason = str(exc) if isinstance(exc, ValueError) else "not the manifest of an index"
        raise DamagedManifest(path, reason) from None
