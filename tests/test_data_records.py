"""What a forked DataLoader worker inherits from a dataset: person records packed into arrays (a fixed number of
Python objects whatever the record count), and no COCO index in a training split."""

from __future__ import annotations

import gc
import types

import numpy as np
import pytest

from dspose_graph.data.base import PersonRecord, RecordTable, TopDownDataset
from dspose_graph.data.coco import CocoKeypointDataset
from topology.schemas import COCO17

_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _tracked_objects(root: object) -> int:
    """GC-tracked Python objects reachable from ``root`` (classes, modules and functions not followed): what the
    cyclic GC and reference counting write to, page by page, in a forked worker."""
    seen: set[int] = set()
    stack, count = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIP):
            continue
        seen.add(id(obj))
        count += gc.is_tracked(obj)
        stack.extend(gc.get_referents(obj))
    return count


def _records(n: int) -> list[PersonRecord]:
    rng = np.random.default_rng(0)
    return [PersonRecord(image_file=f"/data/images/{i:06d}_é.jpg", image_id=i // 2, ann_id=i, center=rng.random(2) * 100,
                         scale=rng.random(2) * 50, score=float(rng.random()),
                         keypoints=rng.random((17, 3)).astype(np.float32)) for i in range(n)]


def _same(a: PersonRecord, b: PersonRecord) -> bool:
    return (a.image_file, a.image_id, a.ann_id, a.score) == (b.image_file, b.image_id, b.ann_id, b.score) and \
        all(np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
            for f in ("center", "scale", "keypoints"))


def test_record_table_gives_back_every_record_exactly():
    records = _records(7)
    table = RecordTable(records)
    assert len(table) == 7
    assert all(_same(a, b) for a, b in zip(table, records, strict=True))
    assert _same(table[-1], records[-1]) and [r.ann_id for r in table[2:6:2]] == [2, 4]
    table[0].keypoints[:] = -1  # a copy: the table is unchanged
    assert _same(table[0], records[0])
    with pytest.raises(IndexError, match="record 7 out of range for 7"):
        table[7]
    assert len(RecordTable([])) == 0 and list(RecordTable([])) == []


def test_a_dataset_holds_the_same_number_of_python_objects_for_10_or_2000_records():
    small = TopDownDataset(_records(10), COCO17)
    large = TopDownDataset(_records(2000), COCO17)
    assert len(large) == 2000 and _same(large.records[1999], _records(2000)[1999])
    assert _tracked_objects(large) == _tracked_objects(small)


def test_a_training_split_keeps_no_coco_index_and_reads_it_again_when_asked(coco_mini):
    ann, images = coco_mini / "annotations" / "person_keypoints_train.json", coco_mini / "images" / "train"
    train = CocoKeypointDataset(ann, images, train=True)
    val = CocoKeypointDataset(ann, images, train=False)
    assert len(train) == len(val) > 50
    # The evaluation split keeps its ground truth; the training split is its records and a few settings.
    assert _tracked_objects(train) < 200 < _tracked_objects(val)
    assert set(train.coco.imgs) == set(val.coco.imgs)
    assert all(_same(a, b) for a, b in zip(train.records, val.records, strict=True))
