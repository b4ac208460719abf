"""The presets of duplicate searches and what their cutoffs mean on an index: the policy,
as pure functions (a preset's cosine depends on the index's model and calibration)."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.errors import CalibrationError, InvalidArgument
from lookalike.search.calibration import Calibration
from lookalike.storage.manifest import Manifest


@dataclass(frozen=True)
class Preset:
    name: str
    threshold: float
    meaning: str


# Cosine thresholds measured with bench/dupes_quality.py (MobileNet V1 0.75/224, the default
# model; 200 photos x 8 edits among 1000 distinct photos, whose closest pair scores 0.814):
#   copies  0.90: recall 0.49 over all edits (recompress/resize >= 0.975, mirror 1.0,
#                 text 0.93, crop 0.87), precision 1.0: no distinct photos grouped
#   edited  0.85: recall 0.80 (adds crop 0.99, rotation 0.91, gray 0.85), precision 1.0
#   similar 0.75: recall 0.99, precision 0.994 (40 false pairs among 1000 photos)
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("exact", 1.01, "identical bytes only"),
        Preset("copies", 0.90, "re-encoded, resized, mirrored or captioned copies"),
        Preset("edited", 0.85, "also crops, small rotations, gray and letterboxed copies"),
        Preset("similar", 0.75, "look-alikes too: some distinct photos will be grouped"),
    )
}
DEFAULT_PRESET = "copies"
# Model families the presets were measured on (bench/dupes_quality.py --model): MobileNet V1
# 0.75/224 float and 1.0/224 uint8 both give precision 1.0 at >= 0.85 and their closest
# distinct pair scores 0.81; they differ in recall only (e.g. gray copies at 0.85: 0.85 vs 0.31).
MEASURED_FAMILIES = ("mobilenet_v1",)


# Probability levels (see lookalike.search.calibration) of the presets on calibrated
# indexes of other models. On MobileNet V1 0.75/224 they map to cosines 0.84 / 0.81 / 0.74
# (bench/quality.py): a little more inclusive than the measured cosine presets, which stay
# in force for that family; precision there is >= 0.9999 from 0.81 up (README).
PRESET_PROBABILITY = {"copies": 0.999, "edited": 0.99, "similar": 0.5}
# ... and on an index scoring in its learned similarity (see search.metric), measured with
# bench/lookalikes.py's dupes library (originals beside 8 copies each, look-alikes, shots,
# 1,000 distinct photos; pair precision / recall of `dupes`, calibration with made shots
# weighing 1/3 of a neighbour): P 0.7 0.980 / 0.953, 0.75 0.989 / 0.948, 0.8 0.991 / 0.943,
# 0.85 0.994 / 0.921, 0.9 0.994 / 0.840. Copies at P >= 0.8: the best F1 of those with
# precision >= 0.99 (a deletion wants it), at the cutoff P 0.7 had when shots weighed as
# much as a neighbour; `edited` 0.45 (0.923 / 0.954) and `similar` 0.2 (0.799 / 0.943) keep
# their cutoffs likewise.
PRESET_PROBABILITY_LEARNED = {"copies": 0.8, "edited": 0.45, "similar": 0.2}


def presets_for(model_source: str, calibration: Calibration | None = None) -> tuple[dict[str, Preset], str]:
    """The presets for a model and what they rest on: ``measured`` on its family, else
    ``calibrated`` (probability levels through the index's calibration), else ``unmeasured``."""
    name = model_source.lower()
    learned = calibration is not None and calibration.space != "cosine"  # scores in a learned space
    if any(family in name for family in MEASURED_FAMILIES) and not learned:
        return PRESETS, "measured"
    if calibration is None or not calibration.usable:
        return PRESETS, "unmeasured"
    out = dict(PRESETS)
    for preset, level in (PRESET_PROBABILITY_LEARNED if learned else PRESET_PROBABILITY).items():
        cutoff = round(calibration.cosine_for(level), 4)
        out[preset] = Preset(preset, cutoff, f"{PRESETS[preset].meaning} (P(same photo) >= {level:g})")
    return out, "calibrated"


def cutoffs_of(manifest: Manifest) -> tuple[tuple[float, float], Calibration | None]:
    """An index's relation cutoffs (the scores of its ``copies`` and ``similar`` presets,
    see relations) and its calibration, from its manifest."""
    cal = Calibration.from_dict(manifest.calibration)
    presets, _ = presets_for(manifest.model.source, cal)
    return (presets["copies"].threshold, presets["similar"].threshold), cal


def held_score(manifest: Manifest) -> float:
    """The score a pair is held at whose files show it is no copy although it scores as one
    (other words in a screenshot: see :mod:`lookalike.search.fine`): just under the index's
    ``edited`` preset, so that only ``similar`` finds it, as a look-alike."""
    cal = Calibration.from_dict(manifest.calibration)
    return presets_for(manifest.model.source, cal)[0]["edited"].threshold - 1e-4


UNMEASURED_NOTE = (
    "the presets were measured for MobileNet V1 models; for this index's model they are a starting "
    "point (`lookalike calibrate` fits them to it, or pass --threshold)"
)


def resolve_threshold(
    preset: str = DEFAULT_PRESET,
    threshold: float | None = None,
    min_probability: float | None = None,
    model_source: str = "",
    calibration: Calibration | None = None,
    other_index: str | None = None,
) -> tuple[float, str, str | None]:
    """The cosine cutoff of a duplicate search, its description, and a note for the user.

    ``threshold`` (a cosine) or ``min_probability`` (P(same photo), through the index's
    ``calibration``) override ``preset``, whose cosine depends on the index's model (see
    :func:`presets_for`); the note (else None) says when that cosine was never measured.
    Raises :class:`InvalidArgument` for values that do not go together, and
    :class:`CalibrationError` for a probability asked of an uncalibrated index (another
    index than the one at hand, ``other_index``, is named in the message).
    """
    if preset not in PRESETS:
        raise InvalidArgument(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    if threshold is not None and min_probability is not None:
        raise InvalidArgument("give a cosine threshold or a minimum probability, not both")
    if threshold is not None:
        return threshold, f"threshold {threshold:g}", None
    if min_probability is not None:
        name = other_index or "this index"
        if not 0.0 < min_probability < 1.0:
            raise InvalidArgument("a minimum probability must be strictly between 0 and 1")
        if calibration is None:
            how = f"`lookalike calibrate --index {other_index}`" if other_index else "`lookalike calibrate`"
            raise CalibrationError(f"{name} has no score calibration yet: run {how} first")
        cutoff = round(calibration.cosine_for(min_probability), 4)
        if cutoff > 1.0:
            raise CalibrationError(
                f"on {name} P(same photo) never reaches {min_probability:g} (it would take cosine "
                f"{cutoff:.3f}, above 1): only identical files would match; ask a lower probability, a "
                "--threshold, or recalibrate on more photos (`lookalike calibrate --sample 400`)"
            )
        return cutoff, f"P(same photo) >= {min_probability:g} (cosine {cutoff:g})", None
    presets, basis = presets_for(model_source, calibration)
    cutoff = presets[preset].threshold
    said = presets[preset].meaning if preset == "exact" else f"{cutoff:g}"  # (1.01: no score reaches it)
    return cutoff, f"preset {preset} ({said})", UNMEASURED_NOTE if basis == "unmeasured" else None
