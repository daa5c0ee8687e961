"""The running batch's key/value cache: left-padded rows that join and leave between steps.

Each sequence is prefilled on its own (so its first token is exactly what it would be alone),
then its cache joins the batch: both sides are left-padded with zeros to a common length and
an attention mask hides the padding. A finished row is dropped by index, and columns that are
padding in every remaining row are cut, so the batch never pays for a long sequence that left.
"""

from __future__ import annotations

from typing import Any


def _pad_left(tensor: Any, width: int) -> Any:
    """Zero-pad a [batch, heads, length, dim] tensor on the left of its length axis."""
    import torch

    if width == 0:
        return tensor
    batch, heads, _, dim = tensor.shape
    pad = torch.zeros(batch, heads, width, dim, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor], dim=2)


class BatchCache:
    """A transformers `DynamicCache` for the running batch plus its padding mask."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.mask: Any = None  # [batch, length] long: 1 for a real token, 0 for padding

    @property
    def rows(self) -> int:
        """Rows in the batch."""
        return 0 if self.mask is None else int(self.mask.shape[0])

    @property
    def length(self) -> int:
        """Columns (the longest row, padding included)."""
        return 0 if self.mask is None else int(self.mask.shape[1])

    def join(self, cache: Any, length: int) -> None:
        """Append the rows of a prefilled cache whose rows are `length` real tokens each."""
        import torch

        rows = cache.layers[0].keys.shape[0]
        new_mask = torch.ones(rows, length, dtype=torch.long)
        if self.cache is None:
            self.cache, self.mask = cache, new_mask
            return
        width = max(self.length, length)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat(
                [_pad_left(mine.keys, width - self.length), _pad_left(theirs.keys, width - length)]
            )
            mine.values = torch.cat(
                [
                    _pad_left(mine.values, width - self.length),
                    _pad_left(theirs.values, width - length),
                ]
            )
        pad_mine = torch.zeros(self.rows, width - self.length, dtype=torch.long)
        pad_new = torch.zeros(rows, width - length, dtype=torch.long)
        self.mask = torch.cat(
            [torch.cat([pad_mine, self.mask], 1), torch.cat([pad_new, new_mask], 1)]
        )

    def step_mask(self) -> Any:
        """The attention mask for one more token per row (and keep it)."""
        import torch

        self.mask = torch.cat([self.mask, torch.ones(self.rows, 1, dtype=torch.long)], 1)
        return self.mask

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order, and cut columns that are now all padding."""
        import torch

        if not rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(rows, dtype=torch.long)
        mask = self.mask.index_select(0, index)
        used = mask.sum(0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:].contiguous()
            layer.values = layer.values.index_select(0, index)[:, :, start:].contiguous()
