"""The plan grid as data: which variants run (baseline first), their captions and the JSON report.

The baseline is the model exactly as the node received it, plan included if it carries one. Each
line's plans compose on top of that, exactly as a Layer Lab Plan node chained after the model would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from ..rewrite import LayerPlan
from .grid_image import Caption
from .variant_lines import BASELINE, PlanLine, read_lines

_ORDER_LINE = re.compile(r"^(?:sampling (?P<window>\S+): )?(?P<stream>\w+) = (?P<order>.*)$")
SHORT_STREAM = {"double_blocks": "double", "single_blocks": "single"}


@dataclass(frozen=True)
class Variant:
    label: str
    plan: LayerPlan  # everything the variant's model carries (the base plan plus the line's)
    line: PlanLine | None = None  # None for the baseline

    @property
    def is_baseline(self) -> bool:
        return self.line is None


def plan_variants(text: str, base: LayerPlan,
                  check: Callable[[str, tuple, int], None] | None = None) -> list[Variant]:
    """The baseline and one variant per line; every line is checked here (raises ``PlanLinesError``)."""
    return [Variant(BASELINE, base), *(Variant(line.label, plan, line) for line, plan in read_lines(text, base, check))]


def orders(plan: LayerPlan) -> dict[str, str]:
    """The effective order per stream as plan text; parts of the schedule joined as ``0%-50%: ... | ...``."""
    found: dict[str, list[str]] = {}
    for line in plan.summary().splitlines()[1:]:
        m = _ORDER_LINE.match(line)
        window = f"{m['window']}: " if m["window"] else ""
        found.setdefault(m["stream"], []).append(window + m["order"])
    return {stream: " | ".join(parts) for stream, parts in found.items()}


def caption(variant: Variant) -> Caption:
    """The label and one short line per stream and window, e.g. ``double: 0-2, 17-18``."""
    lines = []
    for line in variant.plan.summary().splitlines()[1:]:
        m = _ORDER_LINE.match(line)
        window = f"{m['window']} " if m["window"] else ""
        lines.append(f"{window}{SHORT_STREAM.get(m['stream'], m['stream'])}: {m['order']}")
    return Caption(variant.label, tuple(lines))


def variant_record(variant: Variant, index: int, batch: int, sample_seconds: float, decode_seconds: float) -> dict:
    return {
        "label": variant.label,
        "line": None if variant.is_baseline else variant.line.number,
        "plans": {} if variant.is_baseline else {p.stream: p.text.strip() for p in variant.line.plans},
        "order": orders(variant.plan),
        "images": list(range(index * batch, (index + 1) * batch)),
        "seconds": {"sample": round(sample_seconds, 3), "decode": round(decode_seconds, 3)},
    }


def report(family: str, settings: dict, layout: dict, records: list[dict]) -> str:
    return json.dumps({"family": family, **settings, "layout": layout, "variants": records}, indent=2)
