"""A checkpoint interrupted between renaming the new file into place and removing the old
one (found by the kill -9 campaign, tests/test_kill_campaign.py)."""

from __future__ import annotations

import shutil

from lookalike import Index, IndexOptions
from lookalike.storage import Store, VectorIndex


def test_a_checkpoint_killed_before_removing_the_old_one_leaves_no_stale_file(
    tmp_path, photo_dir, tflite_model
):
    """Found by the campaign: a kill between renaming a new checkpoint into place and
    removing the old one left the old one for good when the next runs had nothing to
    checkpoint (a checkpoint can be gigabytes). A writer's open removes it."""
    index = tmp_path / "ix"
    opts = IndexOptions(workers=0)
    Index(index).add([photo_dir], model=str(tflite_model), options=opts)
    ((generation, newest),) = VectorIndex.checkpoints(index)
    older = index / newest.name.replace(f"vectors-{generation}-", f"vectors-{generation - 1}-")
    shutil.copyfile(newest, older)
    with Store(index) as store:  # a reader leaves the folder alone
        assert store.vectors.generation == generation
    assert older.exists()
    report = Index(index).add([photo_dir], options=opts)
    assert (report.indexed, report.unchanged) == (0, 8)  # nothing to checkpoint
    assert VectorIndex.checkpoints(index) == [(generation, newest)]
