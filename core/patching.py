"""Put a ``LayerPlan`` on a ModelPatcher clone, and the one wrapper that carries it out.

The plan lives in ``model_options["transformer_options"]`` of the clone, so the MODEL a node
received is untouched and ComfyUI hands the plan to every model call. One ``APPLY_MODEL`` wrapper
(every family has that entry point; SD3's diffusion model has no ``DIFFUSION_MODEL`` one) reads it
and runs the call in the planned order.
"""

from __future__ import annotations

from .executor import planned_order
from .families import Family, by_name, detect, unwrap
from .plan import PlanError
from .rewrite import LayerPlan

KEY = "dit_layer_lab"
# transformer_options[OBSERVER_KEY], when set, has wrap_step(stream, position, step, module) -> module;
# every call then runs through the executor with each executed step wrapped (the probe uses it).
OBSERVER_KEY = "dit_layer_lab_observer"
APPLY_MODEL = "apply_model"  # comfy.patcher_extension.WrappersMP.APPLY_MODEL


def diffusion_model(model_patcher):
    return unwrap(model_patcher.get_model_object("diffusion_model"))


def layer_plan(model_patcher) -> LayerPlan:
    """The plan a model carries, or an empty one for its family (raises for unsupported models)."""
    plan = model_patcher.model_options.get("transformer_options", {}).get(KEY)
    if plan is not None:
        return plan
    dit = diffusion_model(model_patcher)
    family = detect(dit)
    return LayerPlan(family.name, tuple(family.block_counts(dit).items()), list_names=family.list_names())


def family_of(plan: LayerPlan) -> Family:
    return by_name(plan.family)


def executed_orders(plan: LayerPlan, family: Family, active=None) -> dict:
    """Every stream's executed steps (changed or not) while the rewrites ``active`` apply (default: all)."""
    composed = plan.compose(plan.all_active if active is None else active)
    return {stream: steps for stream, steps in composed.items() if stream in family.block_lists}


def with_rewrites(model_patcher, make_rewrites):
    """A clone of ``model_patcher`` that also carries the rewrites ``make_rewrites(block_counts)`` returns.

    ``make_rewrites`` gets the model's block counts per stream and returns rewrites (None entries
    change nothing). Every order the result can run is checked here, before any sampling, so a bad
    composition fails at the node.
    """
    plan = layer_plan(model_patcher)
    family = family_of(plan)
    try:
        for rewrite in make_rewrites(plan.counts):
            if rewrite is not None:
                plan = plan.with_rewrite(rewrite, family.check)
    except PlanError as error:
        raise error.with_note(family.list_note(plan.counts)) from None
    clone = model_patcher.clone()
    clone.model_options.setdefault("transformer_options", {})[KEY] = plan
    clone.remove_wrappers_with_key(APPLY_MODEL, KEY)
    clone.add_wrapper_with_key(APPLY_MODEL, KEY, run_with_plan)
    return clone, plan


def run_with_plan(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    plan: LayerPlan | None = transformer_options.get(KEY)
    observer = transformer_options.get(OBSERVER_KEY)
    if plan is None or not (plan.rewrites or observer):
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    base_model = executor.class_obj
    if plan.windowed:
        active = plan.active_at_sigma(float(t.reshape(-1)[0]), base_model.model_sampling.percent_to_sigma)
    else:
        active = plan.all_active
    family = family_of(plan)
    if observer is None:
        orders, wrap_step = plan.orders(active), None
    else:
        orders = executed_orders(plan, family, active)
        wrap_step = observer.wrap_step
    if not orders:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    dit = unwrap(base_model.diffusion_model)
    with planned_order(dit, family, orders, transformer_options, control, wrap_step) as (options, control):
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
