import json

import pytest

from dit_layer_lab.core.experiments.grid_image import Caption
from dit_layer_lab.core.experiments.plan_grid import caption, orders, plan_variants, report, variant_record
from dit_layer_lab.core.experiments.variant_lines import PlanLinesError
from dit_layer_lab.core.rewrite import LayerPlan, strategy_rewrite

FLUX = LayerPlan("Flux", (("double_blocks", 19), ("single_blocks", 38)))
SD3 = LayerPlan("SD3", (("double_blocks", 24), ("single_blocks", 0)))


def test_the_baseline_comes_first_and_is_the_plan_as_received():
    carried = FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "single_blocks", 4, 33))
    baseline, skip, reverse = plan_variants("skip: double_blocks=0-2, 17-18\n# note\nrev: double_blocks=18-0", carried)
    assert (baseline.label, baseline.is_baseline, baseline.plan) == ("baseline", True, carried)
    assert (skip.label, skip.line.number, reverse.line.number) == ("skip", 1, 3)
    assert orders(baseline.plan) == {"double_blocks": "all", "single_blocks": "0-3, 34-37"}
    assert orders(skip.plan) == {"double_blocks": "0-2, 17-18", "single_blocks": "0-3, 34-37"}
    assert orders(reverse.plan) == {"double_blocks": "18-0", "single_blocks": "0-3, 34-37"}


def test_no_lines_is_the_baseline_alone():
    assert [v.label for v in plan_variants("# nothing yet\n", FLUX)] == ["baseline"]


def test_errors_come_before_anything_runs():
    with pytest.raises(PlanLinesError, match="line 2, column 19: block 30 is out of range"):
        plan_variants("ok: double_blocks=1\nno: double_blocks=30", FLUX)


def test_caption_is_the_label_and_one_short_line_per_stream():
    _, variant = plan_variants("looped: single_blocks=0-3, [4-33]*3, 34-37", FLUX)
    assert caption(variant) == Caption("looped", ("double: all", "single: 0-3, [4-33]*3, 34-37"))
    _, sd3 = plan_variants("skip: double_blocks=0-4, 21-23", SD3)
    assert caption(sd3) == Caption("skip", ("double: 0-4, 21-23",))  # SD3 has no single stream


def test_a_windowed_plan_shows_every_part_of_the_schedule():
    windowed = FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "double_blocks", 3, 5, 0.0, 0.5))
    (baseline,) = plan_variants("", windowed)
    assert orders(baseline.plan) == {"double_blocks": "0%-50%: 0-2, 6-18 | 50%-100%: all",
                                     "single_blocks": "0%-50%: all | 50%-100%: all"}
    assert caption(baseline).lines == ("0%-50% double: 0-2, 6-18", "0%-50% single: all",
                                       "50%-100% double: all", "50%-100% single: all")


def test_report_records():
    baseline, variant = plan_variants("par: single_blocks= [4-33] , 0-3; double_blocks=all", FLUX)
    records = [variant_record(baseline, 0, 2, 1.23456, 0.1), variant_record(variant, 1, 2, 2.0, 0.2)]
    assert records[0] == {"label": "baseline", "line": None, "plans": {}, "order": {"double_blocks": "all",
                          "single_blocks": "all"}, "images": [0, 1], "seconds": {"sample": 1.235, "decode": 0.1}}
    assert records[1]["plans"] == {"single_blocks": "[4-33] , 0-3", "double_blocks": "all"}
    assert records[1]["order"] == {"double_blocks": "all", "single_blocks": "[4-33], 0-3"}
    assert records[1]["images"] == [2, 3] and records[1]["line"] == 1
    text = report("Flux", {"seed": 1}, {"columns": 2}, records)
    assert json.loads(text) == {"family": "Flux", "seed": 1, "layout": {"columns": 2}, "variants": records}
