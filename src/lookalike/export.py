"""Export vectors with their paths for other tools: NumPy .npy or Apache Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lookalike.errors import InvalidArgument
from lookalike.storage.store import Store

FORMATS = ("npy", "parquet")
CHUNK = 10_000


def export(store: Store, out: Path, fmt: str) -> list[Path]:
    """Write every stored vector (in id order) with its path; returns the files written.

    ``npy``: ``OUT.npy`` ([n, dim] float32, memory-mappable) and ``OUT.paths.json``
    (``[{"id": ..., "path": ...}, ...]`` in the same order). ``parquet``: ``OUT.parquet``
    with id, path, content_hash, width, height, captured_at and a fixed-size vector column.
    """
    if fmt not in FORMATS:
        raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}")
    rows = store.catalogue.exported_rows()
    base = out.with_suffix("") if out.suffix in (".npy", ".parquet") else out  # "vecs.2024-06" keeps its dot
    if not base.parent.is_dir():  # a typo makes no folders anywhere
        raise InvalidArgument(f"{base.parent}: no such folder (make it first)")
    if fmt == "npy":
        target = base.with_name(base.name + ".npy")
        vectors = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=(len(rows), store.dim))
        for start in range(0, len(rows), CHUNK):
            ids = [r[0] for r in rows[start : start + CHUNK]]
            vectors[start : start + len(ids)] = store.catalogue.load_vectors(ids)[1]
        vectors.flush()
        del vectors
        paths = base.with_name(base.name + ".paths.json")
        paths.write_text(json.dumps([{"id": r[0], "path": r[1]} for r in rows]), encoding="utf-8")
        return [target, paths]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgument("parquet export needs pyarrow: pip install 'lookalike[parquet]'") from None
    target = base.with_name(base.name + ".parquet")
    schema = pa.schema([
        ("id", pa.int64()), ("path", pa.string()), ("content_hash", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("captured_at", pa.timestamp("s")),
        ("vector", pa.list_(pa.float32(), store.dim)),
    ])  # fmt: skip
    with pq.ParquetWriter(target, schema) as writer:
        for start in range(0, max(len(rows), 1), CHUNK):
            chunk = rows[start : start + CHUNK]
            if not chunk:
                break
            vecs = store.catalogue.load_vectors([r[0] for r in chunk])[1]
            columns = list(zip(*chunk, strict=True))
            flat = pa.array(vecs.ravel(), pa.float32())
            writer.write_table(pa.table(
                [pa.array(columns[0], pa.int64()), pa.array(columns[1]), pa.array(columns[2]),
                 pa.array(columns[3], pa.int32()), pa.array(columns[4], pa.int32()),
                 pa.array(columns[5], pa.timestamp("s")),
                 pa.FixedSizeListArray.from_arrays(flat, store.dim)],
                schema=schema,
            ))  # fmt: skip
    return [target]
