"""What the files say of duplicate candidates, for the keep rules (:mod:`lookalike.search.keep`):
the picture inside bands added around it (:mod:`lookalike.search.padding`), and the facts of
members the rules before cannot tell apart (:mod:`lookalike.search.provenance`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from lookalike.search import padding
from lookalike.search.keep import NO_FACTS, FileFacts
from lookalike.search.provenance import group_facts
from lookalike.storage.catalogue import FileRow

FACT_THREADS = 2  # components whose files are read at once (each may decode a few large members)


def component_facts(
    components: list[list[FileRow]], vector: Callable[[FileRow], np.ndarray]
) -> dict[int, FileFacts]:
    """What the files say (see provenance) of the members that the rules before them
    (resolution) cannot tell from another member of their component (``vector`` gives a
    member's unit vector); first, of members whose shape differs from another's, the size
    of their picture without bands added around it (see padding)."""
    pictures: dict[int, tuple[int, int]] = {}

    def area(m: FileRow) -> int:
        w, h = pictures.get(m.id) or (m.width or 0, m.height or 0)
        return w * h

    def tied(members: list[FileRow]) -> list[FileRow]:
        pixels = Counter(map(area, members))
        return [m for m in members if pixels[area(m)] > 1]

    facts: dict[int, FileFacts] = {}
    with ThreadPoolExecutor(FACT_THREADS) as pool:  # decoding lets go of the GIL
        for found in pool.map(padding.picture_sizes, components):
            pictures.update(found)
        alike = [t for t in map(tied, components) if len(t) > 1]
        for found in pool.map(lambda members: group_facts(members, vector), alike):
            facts.update(found)
    for file_id, size in pictures.items():
        facts[file_id] = replace(facts.get(file_id, NO_FACTS), picture=size)
    return facts
