"""A diffusers attention processor that lets a controller read and edit attention probabilities.

It wraps one layer's ORIGINAL processor. Every call first runs that original processor on the
whole batch, so whatever the controller does not edit (the unconditional half, the source
branch, every layer and step where control is off) is bit-exact the stock result. When the
controller asks for it, the processor then recomputes the layer for the conditional [source,
target] rows only, from the layer's public parts (``to_q``/``to_k``/``to_v``/``to_out``,
``head_to_batch_dim``, ``get_attention_scores``, ``batch_to_head_dim`` and the group-norm /
spatial-norm / residual / rescale handling of diffusers' stock ``AttnProcessor``), hands the
probabilities to the controller, and writes the target row's new output over the original's.

Nothing here depends on a diffusers version beyond the processor call convention
``processor(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from unsample.errors import InputError


@dataclass(frozen=True)
class CallPlan:
    """What the controller wants from one attention call."""

    source_row: int
    target_row: int
    edit: bool
    """Replace the target's probabilities by ``controller.edit_probs(...)`` and its output accordingly."""
    record: bool
    """Hand the [source, target] probabilities to ``controller.record_probs(...)``."""


class AttentionController(Protocol):
    def plan_call(self, is_cross: bool, n_query: int, batch: int) -> CallPlan | None: ...

    def edit_probs(self, is_cross: bool, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def record_probs(self, n_query: int, source: torch.Tensor, target: torch.Tensor) -> None: ...


class ControlledAttnProcessor:
    """Delegates to ``original``; edits the target branch's attention when the controller says so."""

    def __init__(self, controller: AttentionController, original: Any, name: str) -> None:
        self.controller = controller
        self.original = original
        self.name = name

    def __repr__(self) -> str:
        return f"ControlledAttnProcessor({self.name!r}, original={type(self.original).__name__})"

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        extra = dict(kwargs)
        if temb is not None:
            extra["temb"] = temb
        out = self.original(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **extra
        )
        is_cross = encoder_hidden_states is not None
        n_query = hidden_states.shape[-1] * hidden_states.shape[-2] if hidden_states.ndim == 4 else hidden_states.shape[1]
        plan = self.controller.plan_call(is_cross, n_query, hidden_states.shape[0])
        if plan is None or not (plan.edit or plan.record):
            return out
        new_target = self._branch_pair(attn, hidden_states, encoder_hidden_states, attention_mask, temb, plan, is_cross, n_query)
        if new_target is None:
            return out
        rows = torch.tensor([plan.target_row], device=out.device)
        return out.index_copy(0, rows, new_target.to(out.dtype))

    def _branch_pair(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
        plan: CallPlan,
        is_cross: bool,
        n_query: int,
    ) -> torch.Tensor | None:
        """The layer recomputed for the [source, target] rows; returns the target's new output (or None)."""
        batch = hidden_states.shape[0]
        rows = [plan.source_row, plan.target_row]
        heads = attn.heads
        residual = hidden_states[rows]
        h = residual
        if attn.spatial_norm is not None:
            h = attn.spatial_norm(h, temb[rows] if temb is not None and temb.shape[0] == batch else temb)
        input_ndim = h.ndim
        if input_ndim == 4:
            b, channel, height, width = h.shape
            h = h.view(b, channel, height * width).transpose(1, 2)
        context = None if encoder_hidden_states is None else encoder_hidden_states[rows]
        key_length = h.shape[1] if context is None else context.shape[1]
        mask = _rows_of_mask(attn, attention_mask, key_length, batch, rows)
        if attn.group_norm is not None:
            h = attn.group_norm(h.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(h)
        if context is None:
            context = h
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        # Modern processors normalise q and k per head when the layer has qk-norm; so do we.
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        probs = attn.get_attention_scores(query, key, mask)  # [2 * heads, n_query, key_length]
        source, target = probs[:heads], probs[heads:]
        if plan.record:
            self.controller.record_probs(n_query, source, target)
        if not plan.edit:
            return None
        target = self.controller.edit_probs(is_cross, source, target)
        value = attn.head_to_batch_dim(attn.to_v(context[1:]))
        out = torch.bmm(target.to(value.dtype), value)
        out = attn.batch_to_head_dim(out)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(1, channel, height, width)
        if attn.residual_connection:
            out = out + residual[1:]
        return out / attn.rescale_output_factor


def _rows_of_mask(
    attn: Any, attention_mask: torch.Tensor | None, key_length: int, batch: int, rows: list[int]
) -> torch.Tensor | None:
    """The prepared attention mask ([batch * heads, q, k] layout) restricted to ``rows``."""
    if attention_mask is None:
        return None
    mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
    heads = attn.heads
    if mask.shape[0] == batch * heads:
        index = [r * heads + k for r in rows for k in range(heads)]
        return mask[index]
    if mask.shape[0] == 1:
        return mask
    raise InputError(
        f"attention mask of shape {tuple(attention_mask.shape)} does not split into the batch of {batch} "
        f"with {heads} heads; prompt-to-prompt control supports per-sample masks or none"
    )
