import json

import numpy as np

from dit_layer_lab.core.probe.capture import Measured
from dit_layer_lab.core.probe.report import build, to_json


def measured(steps, group_of, key="single_blocks", stream="single_blocks", part="text+image"):
    """A matrix with an input row and block rows in groups given by ``group_of`` (one id per block row)."""
    groups = np.array([-1, *group_of])
    matrix = np.where(groups[:, None] == groups[None, :], 0.95, 0.4)
    matrix[0, :] = matrix[:, 0] = 0.2
    np.fill_diagonal(matrix, 1.0)
    labels = ["in"]
    for i, step in enumerate(steps):
        text = str(step[0]) if len(step) == 1 else f"[{step[0]}-{step[-1]}]"
        count = steps[:i + 1].count(step)
        labels.append(text if count == 1 else f"{text}#{count}")
    return Measured(stream, part, key, labels, [None, *steps], matrix, 64, 256)


def test_unplanned_model_groups_map_to_original_indices():
    m = measured([(i,) for i in range(8)], [0, 0, 1, 1, 1, 1, 2, 2])
    report, panels = build([m], family="Flux", steps=4, aggregate="per_step", max_tokens=64)
    entry = report["streams"]["single_blocks"]
    assert [(g["name"], g["first"], g["last"], g["blocks"]) for g in entry["groups"]] == [
        ("first", 0, 1, "0-1"), ("middle", 2, 5, "2-5"), ("last", 6, 7, "6-7")]
    assert entry["groups"][1]["rows"] == [3, 6] and entry["groups"][1]["mean_similarity"] == 0.95
    assert entry["middle"] == {"stream": "single_blocks", "first": 2, "last": 5, "rows": [3, 6], "blocks": "2-5",
                               "in_order": True}
    assert entry["labels"] == m.labels and np.allclose(entry["matrix"], m.matrix)
    assert {k: report[k] for k in ("family", "steps", "aggregate", "max_tokens")} == {
        "family": "Flux", "steps": 4, "aggregate": "per_step", "max_tokens": 64}
    assert (entry["tokens"], entry["total_tokens"]) == (64, 256)
    assert panels[0].groups == [(1, 2), (3, 6), (7, 8)] and panels[0].labels == m.labels
    assert "middle 2-5" in panels[0].subtitle


def test_planned_model_reports_execution_rows_and_original_indices():
    steps = [(0,), (5,), (4,), (3,), (2, 3), (6,), (6,)]
    m = measured(steps, [0, 1, 1, 1, 1, 2, 2])
    entry = build([m])[0]["streams"]["single_blocks"]
    assert entry["labels"] == ["in", "0", "5", "4", "3", "[2-3]", "6", "6#2"]
    middle = entry["middle"]
    assert (middle["first"], middle["last"], middle["blocks"], middle["in_order"]) == (2, 5, "5-3, [2-3]", False)
    assert entry["groups"][-1]["blocks"] == "6*2"


def test_two_block_rows_have_no_middle():
    entry = build([measured([(0,), (1,)], [0, 1])])[0]["streams"]["single_blocks"]
    assert [g["name"] for g in entry["groups"]] == ["first", "last"] and entry["middle"] is None


def test_json_text_round_trips_with_one_line_per_matrix_row():
    m = measured([(i,) for i in range(5)], [0, 1, 1, 1, 2])
    report, _ = build([m], family="SD3", steps=2)
    text = to_json(report)
    assert json.loads(text) == json.loads(json.dumps(report))
    assert len(text.splitlines()) < 120


def test_the_title_says_how_many_frames_and_tokens_were_used():
    m = measured([(i,) for i in range(4)], [0, 1, 1, 2], key="single_blocks", part="image")
    report, panels = build([m], family="Wan", aggregate="per_step", frames=16)
    assert report["frames"] == 16 and report["streams"]["single_blocks"]["tokens"] == 64
    assert panels[0].title == "Wan single_blocks - image (per_step), 16 frames, 64/256 tokens"
    assert build([m], family="Flux")[1][0].title == "Flux single_blocks - image, 1 frame, 64/256 tokens"
    assert build([m], family="Wan", frames=[4, 5])[1][0].title == "Wan single_blocks - image, 4/5 frames, 64/256 tokens"
