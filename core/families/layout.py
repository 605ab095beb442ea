"""Where a block takes its hidden states in its call, and in what order it returns them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Layout:
    """Which of a block's call arguments are its hidden states, and in what order it returns them.

    ``takes`` lists (parameter, part) for the block's leading parameters, in signature order, so a
    state is found whether the loop passes it by keyword or by position; a parameter that holds a
    tuple of states (LTX-2's ``(video, audio)``) names a tuple of parts. ``returns`` lists the parts
    in the order the block returns them (one part: a tensor, several: a tuple). Parts name tokens:
    "image", "text", "text+image" (one sequence of both), "video", "audio".
    """

    takes: tuple[tuple[str, str | tuple[str, ...]], ...]
    returns: tuple[str, ...]

    @classmethod
    def of(cls, returns: tuple[str, ...] | None = None, **takes: str | tuple[str, ...]) -> "Layout":
        """``Layout.of(hidden_states="image", encoder_hidden_states="text", returns=("text", "image"))``;
        ``returns`` defaults to the order the parts are taken in."""
        taken = tuple(p for part in takes.values() for p in (part if isinstance(part, tuple) else (part,)))
        layout = cls(tuple(takes.items()), taken if returns is None else tuple(returns))
        if sorted(layout.returns) != sorted(taken):
            raise ValueError(f"a block returns the parts it takes: takes {layout.takes}, returns {layout.returns}")
        return layout

    @property
    def parts(self) -> tuple[str, ...]:
        return self.returns

    def inputs(self, args: tuple, kwargs: dict) -> dict:
        """part -> the state a block was called with."""
        found = {}
        for position, (parameter, part) in enumerate(self.takes):
            if parameter in kwargs:
                value = kwargs[parameter]
            elif position < len(args):
                value = args[position]
            else:
                raise TypeError(f"the block was called without its '{parameter}' input")
            if not isinstance(part, tuple):
                found[part] = value
            elif isinstance(value, (tuple, list)) and len(value) == len(part):
                found.update(zip(part, value))
            else:
                raise TypeError(f"the block's '{parameter}' input is not a tuple of {len(part)} states ({', '.join(part)})")
        return found

    def outputs(self, out) -> dict:
        """part -> the state a block returned (None where it returns none, like SD3's last text stream)."""
        values = out if isinstance(out, tuple) else (out,)
        if len(values) != len(self.returns):
            raise TypeError(f"the block returned {len(values)} values; expected {len(self.returns)} "
                            f"({', '.join(self.returns)})")
        return dict(zip(self.returns, values))

    def with_inputs(self, args: tuple, kwargs: dict, values: Mapping) -> tuple[tuple, dict]:
        """The call with its states replaced by ``values`` (part -> state)."""
        args, kwargs = list(args), dict(kwargs)
        for position, (parameter, part) in enumerate(self.takes):
            in_kwargs = parameter in kwargs or position >= len(args)
            if isinstance(part, tuple):
                if not any(p in values for p in part):
                    continue
                given = self.inputs(args, kwargs) if any(p not in values for p in part) else {}
                value = tuple(values[p] if p in values else given[p] for p in part)
            elif part in values:
                value = values[part]
            else:
                continue
            if in_kwargs:
                kwargs[parameter] = value
            else:
                args[position] = value
        return tuple(args), kwargs
