"""The TF Hub MobileNet modules lookalike knows by short name (`lookalike models`)."""

from __future__ import annotations

from dataclasses import dataclass

TFHUB = "https://tfhub.dev/google/imagenet"
LABELS_URL = "https://storage.googleapis.com/download.tensorflow.org/data/ImageNetLabels.txt"


@dataclass(frozen=True)
class KnownModel:
    """One TF Hub module: where it lives and what it gives."""

    name: str
    handle: str
    input_size: int
    dim: int
    variant: str  # "feature_vector" or "classification"
    hub_format: str  # "tf1" (hub.Module format) or "tf2" (SavedModel)

    @property
    def has_labels(self) -> bool:
        return self.variant == "classification"


def _build() -> dict[str, KnownModel]:
    entries: list[KnownModel] = []
    # MobileNet V1: versions 3 are TF1 hub.Module format; the classification modules also
    # carry the image_feature_vector signature, so they give vectors and labels in one pass.
    for mult, dim in (("025", 256), ("050", 512), ("075", 768), ("100", 1024)):
        for size in (128, 160, 192, 224):
            base = f"mobilenet_v1_{mult}_{size}"
            for variant in ("feature_vector", "classification"):
                name = base if variant == "feature_vector" else f"{base}_classification"
                handle = f"{TFHUB}/{base}/{variant}/3"
                entries.append(KnownModel(name, handle, size, dim, variant, "tf1"))
    # MobileNet V3 feature vectors: TF2 SavedModels (what hub.KerasLayer would load).
    for kind, dim in (("small", 1024), ("large", 1280)):
        base = f"mobilenet_v3_{kind}_100_224"
        entries.append(
            KnownModel(base, f"{TFHUB}/{base}/feature_vector/5", 224, dim, "feature_vector", "tf2")
        )
    return {e.name: e for e in entries}


KNOWN_MODELS: dict[str, KnownModel] = _build()
DEFAULT_MODEL = "mobilenet_v1_075_224"


def lookup(name: str) -> KnownModel | None:
    """The catalogue entry for a short name (case-insensitive), or None."""
    return KNOWN_MODELS.get(name.strip().lower())
