"""Query images to vectors, as searches and calibration read them: decoded on every core,
each query's second looks (caption bars filled, the backdrop in the other tone, what lies
inside flat margins) embedded in the same batch as the queries themselves."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike import descriptors
from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageError, decode
from lookalike.search.neighbours import QueryTraits

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lookalike.descriptors import Descriptor
    from lookalike.models import Embedder

QuerySource = str | os.PathLike | bytes


def embed_queries(
    embedder: Embedder,
    descriptor: Descriptor,
    queries: Sequence[QuerySource],
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    traits: list[QueryTraits] | None = None,
    second_looks: bool = False,
) -> tuple[np.ndarray, list[ImageError | None]]:
    """Vectors of the decodable ``queries`` (paths or image bytes) and each query's problem
    as a typed :class:`ImageError` (None if decoded); ``traits``, if given, receives each
    decodable query's bytes hash and colour, and with ``second_looks`` its second looks."""
    size = embedder.info.input_size

    def read(q: QuerySource) -> tuple[np.ndarray, QueryTraits] | ImageError:
        try:
            data = q if isinstance(q, bytes) else Path(q).read_bytes()
            looks = second_looks and traits is not None
            image = decode(data, size, max_megapixels, descriptor.name, second_looks=looks)
            digest = hashlib.sha256(data).hexdigest() if traits is not None else ""
            source = q if isinstance(q, bytes) else os.fspath(q)
            frame = (image.width, image.height)
            seen = QueryTraits(
                digest, image.colour, image.uncaptioned, image.backdrop, image.inside, frame, source
            )
            return image.pixels, seen
        except OSError as exc:
            return ImageError(f"cannot read: {exc.strerror or exc}")
        except ImageError as exc:
            return exc

    if len(queries) > 1:  # Pillow lets go of the GIL: decoded on every core
        with ThreadPoolExecutor(min(len(queries), os.cpu_count() or 1)) as pool:
            read_all = list(pool.map(read, queries))
    else:
        read_all = [read(q) for q in queries]
    pixels, problems, mine = [], [], []
    for got in read_all:
        problems.append(got if isinstance(got, ImageError) else None)
        if not isinstance(got, ImageError):
            pixels.append(got[0])
            mine.append(got[1])
    captioned = [n for n, t in enumerate(mine) if t.uncaptioned is not None]
    backed = [n for n, t in enumerate(mine) if t.backdrop is not None]
    framed = [n for n, t in enumerate(mine) if t.inside is not None]
    # in the same batch: each query carrying caption bars once more, bars filled; each on a
    # flat backdrop once more, the backdrop in the other tone; each with flat margins once
    # more, what lies inside them
    more = [mine[n].uncaptioned for n in captioned] + [mine[n].backdrop[0] for n in backed]
    more += [mine[n].inside[0] for n in framed]
    vectors = descriptors.embed(embedder, descriptor, pixels + more).vectors
    looked = iter(vectors[len(pixels) :])
    for n in captioned:
        mine[n] = replace(mine[n], uncaptioned=next(looked))
    for n in backed:
        mine[n] = replace(mine[n], backdrop=(next(looked), mine[n].backdrop[1]))
    for n in framed:
        mine[n] = replace(mine[n], inside=(next(looked), mine[n].inside[1]))
    if traits is not None:
        traits.extend(mine)
    return vectors[: len(pixels)], problems
