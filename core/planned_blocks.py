"""The block list a model's loop sees during one planned call."""

from torch import nn


class PlannedBlocks(nn.Module):
    """A block list as the model's loop sees it during one planned call.

    ``len()``, iteration and integer indexing give the planned steps. Everything that goes by name
    (``getattr(blocks, "3")``, ``named_modules()``, ``state_dict()``, ``.to()``) still reaches the
    original blocks under their own names, because the original list's module table is shared.
    """

    def __init__(self, original: nn.ModuleList, steps: list[nn.Module]):
        super().__init__()
        self._modules = original._modules
        self.steps = tuple(steps)  # a tuple: not registered as a submodule

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, index):
        return self.steps[index]
