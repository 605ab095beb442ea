"""Guidance away from a weakened model: the prediction plus ``scale * (cond - cond under a plan)``.

In the window, after CFG, one extra model call computes the positive prediction with the plan
applied; the result becomes ``cfg + (cond - weak) * scale``, optionally rescaled towards the
standard deviation of ``cond``. Outside the window sampling is plain. With a plan that skips blocks
this is ComfyUI's Skip Layer Guidance (``SkipLayerGuidanceDiT``), computed the same way:

* the window is SLG's, closed at both ends: active while ``sigma(end) <= sigma <= sigma(start)``.
  The pack's own plan windows are half-open (``sigma(end) < sigma <= sigma(start)``, ComfyUI's hooks
  rule); only a step exactly at ``end_percent`` tells them apart, and there this node guides, as SLG does;
* nothing is added with ``scale`` 0, and ``rescale`` mixes ``std(cond) / std(result)`` into the
  result as SLG's ``rescaling_scale`` does.

The plan is added to the plan the model carries when it is sampled (so reorder nodes before or after
this one apply to both passes), as the narrowest rewrite that covers what it changes: ``0-6, 8-18``
rewrites only block 7, so it composes with nodes that moved other blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .patching import APPLY_MODEL, KEY, family_of, layer_plan, run_with_plan
from .plan import PlanError, Steps, identity, parse_steps
from .rewrite import STREAMS, LayerPlan, Rewrite, check_window


def trimmed_rewrite(stream: str, steps: Steps, n_blocks: int, label: str) -> Rewrite | None:
    """The rewrite of only the blocks ``steps`` changes: the original order's common head and tail stay."""
    original = identity(n_blocks)
    if steps == original:
        return None
    head = 0
    while head < min(len(steps), n_blocks) and steps[head] == original[head]:
        head += 1
    tail = 0
    while (tail < min(len(steps), n_blocks) - head
           and steps[len(steps) - 1 - tail] == original[n_blocks - 1 - tail]):
        tail += 1
    first, last = head, n_blocks - 1 - tail
    if first > last:  # only insertions: widen to one block so that the rewrite has a run to replace
        first, last = (first, first) if first < n_blocks else (n_blocks - 1, n_blocks - 1)
        head, tail = first, n_blocks - 1 - last
    return Rewrite(stream, first, last, tuple(steps[head:len(steps) - tail]), label)


def guidance_rewrites(counts: dict[str, int], texts: dict[str, str]) -> list[Rewrite]:
    rewrites = []
    for stream in STREAMS:
        text = texts.get(stream, "all")
        n_blocks = counts.get(stream, 0)
        rewrite = trimmed_rewrite(stream, parse_steps(text, n_blocks, stream), n_blocks,
                                  f"guidance plan {stream} = {text.strip()}")
        if rewrite is not None:
            rewrites.append(rewrite)
    return rewrites


def in_window(sigma: float, sigma_start: float, sigma_end: float) -> bool:
    """Skip Layer Guidance's window: both ends included."""
    return sigma_end <= sigma <= sigma_start


def guided(cfg_result, cond_pred, weak_pred, scale: float, rescale: float):
    """``cfg + (cond - weak) * scale``, then SLG's rescale: a mix of 1 and ``std(cond) / std(result)``."""
    result = cfg_result + (cond_pred - weak_pred) * scale
    if rescale != 0:
        factor = cond_pred.std() / result.std()
        factor = rescale * factor + (1 - rescale)
        result *= factor
    return result


@dataclass
class PlanGuidance:
    """The post-CFG function. ``calc_cond_batch`` is ComfyUI's (``comfy.samplers.calc_cond_batch``);
    ``base`` the plan of the model at the node (used when the sampled model carries none);
    ``check(stream, steps, n)`` the family's order check."""

    rewrites: tuple[Rewrite, ...]
    base: LayerPlan
    scale: float
    rescale: float
    sigma_start: float
    sigma_end: float
    calc_cond_batch: Callable
    check: Callable[[str, Steps, int], None]
    _weak: dict = field(default_factory=dict, repr=False)

    def weak_plan(self, carried: LayerPlan | None) -> LayerPlan:
        """The model's plan at sampling with the guidance rewrites added last (composed once per plan)."""
        plan = self.base if carried is None else carried
        weak = self._weak.get(id(plan))
        if weak is None or weak[0] is not plan:
            composed = plan
            for rewrite in self.rewrites:
                composed = composed.with_rewrite(rewrite, self.check)
            weak = self._weak[id(plan)] = (plan, composed)
        return weak[1]

    def __call__(self, args: dict):
        cfg_result = args["denoised"]
        sigma = args["sigma"]
        if not (self.scale > 0 and in_window(sigma[0].item(), self.sigma_start, self.sigma_end)):
            return cfg_result
        model_options = args["model_options"].copy()
        options = dict(model_options.get("transformer_options", {}))
        options[KEY] = self.weak_plan(options.get(KEY))
        model_options["transformer_options"] = options
        (weak,) = self.calc_cond_batch(args["model"], [args["cond"]], args["input"], sigma, model_options)
        return guided(cfg_result, args["cond_denoised"], weak, self.scale, self.rescale)


def check_guidance(scale: float, rescale: float, start_percent: float, end_percent: float) -> None:
    check_window(start_percent, end_percent)
    if scale < 0:
        raise PlanError(f"scale = {scale}: guidance away from the plan needs scale >= 0 (0 adds nothing)")
    if rescale < 0:
        raise PlanError(f"rescale = {rescale}: use 0 for none, up to 1 for a full rescale")


def with_plan_guidance(model_patcher, texts: dict[str, str], scale: float, rescale: float, start_percent: float,
                       end_percent: float, calc_cond_batch: Callable):
    """(a clone of ``model_patcher`` guided away from the plan ``texts``, a summary); the model itself when
    the plan changes nothing, as SLG returns its model when it skips no layer."""
    check_guidance(scale, rescale, start_percent, end_percent)
    base = layer_plan(model_patcher)
    family = family_of(base)
    try:
        rewrites = guidance_rewrites(base.counts, texts)
        weak = base
        for rewrite in rewrites:  # checked now, against the plan the model carries here
            weak = weak.with_rewrite(rewrite, family.check)
    except PlanError as error:
        raise error.with_note(family.list_note(base.counts)) from None
    if not rewrites:
        return model_patcher, "guidance plan runs every block as it is: the model is returned unchanged"
    sampling = model_patcher.get_model_object("model_sampling")
    guidance = PlanGuidance(tuple(rewrites), base, scale, rescale, sampling.percent_to_sigma(start_percent),
                            sampling.percent_to_sigma(end_percent), calc_cond_batch, family.check)
    clone = model_patcher.clone()
    clone.remove_wrappers_with_key(APPLY_MODEL, KEY)
    clone.add_wrapper_with_key(APPLY_MODEL, KEY, run_with_plan)
    clone.set_model_sampler_post_cfg_function(guidance)
    return clone, summary(weak, scale, rescale, start_percent, end_percent)


def summary(weak: LayerPlan, scale: float, rescale: float, start_percent: float, end_percent: float) -> str:
    window = (f"from {start_percent:.0%} to {end_percent:.0%} of sampling, both ends included"
              if start_percent < end_percent else f"only at {start_percent:.0%} of sampling")
    head = (f"guidance: prediction + {scale:g} * (cond - cond under the plan), rescale {rescale:g}, {window}"
            + ("" if scale > 0 else "; scale 0 adds nothing"))
    return head + "\nthe plan's pass runs:\n" + weak.summary()
