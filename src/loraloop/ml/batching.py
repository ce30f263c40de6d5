"""One step of continuous batching: a flat ragged batch through the base model, one token each.

:class:`Runner` holds the base model prepared for it (linear layers wrapped by
:mod:`~loraloop.ml.multilora`, attention replaced by :mod:`~loraloop.ml.kvcache`'s). Each
:meth:`Runner.step` lays the running sequences out as one sequence of tokens::

    tokens     [ a5  b9  c2 | p0 p1 p2 p3 p4 | q0 q1 ]   decode rows (slot order), then prompt
    positions  [ 17  40   8 |  0  1  2  3  4 | 12 13 ]   chunks (at most ``prefill_chunk`` tokens
    slots      [  0   1   3 |  2  2  2  2  2 |  4  4 ]   per step, a long prompt over several)
    logits at  [  *   *   * |              * |       ]   q's prompt is not done: no token yet

runs the decoder once with those explicit positions, applies the output layer only at the last
position of each sequence that needs a token, and samples those (:mod:`~loraloop.ml.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loraloop.errors import ConfigurationError, InvalidRequest
from loraloop.ml import models
from loraloop.ml.kvcache import ATTENTION, AttentionPlan, Segment, SlotCache, slot_attention
from loraloop.ml.multilora import Adapter, LoraPlan, load_adapter, wrap_linears
from loraloop.ml.sampling import RequestSampler, SamplingParams, TextStream, next_tokens

__all__ = ["Runner", "Sequence", "resolve_device", "resolve_dtype"]

#: ``model_type``s whose attention is plain causal softmax attention over rotary positions.
_SUPPORTED = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_DTYPES: dict[str, models.Dtype] = {
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
}


@dataclass(eq=False)
class Sequence:
    """A request inside the engine: what it asked for and how far it has got."""

    handle: Any
    """The engine's handle for it (a :class:`~loraloop.ml.engine.Generation`)."""
    prompt: list[int]
    params: SamplingParams
    adapter: Adapter | None
    sampler: RequestSampler
    text: TextStream
    slot: int = -1
    cached: int = 0
    """Tokens (prompt, then generated) whose keys and values are in the slot."""
    output: list[int] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)


class Runner:
    """The base model, ready to run steps over up to ``max_batch`` sequences with adapters."""

    def __init__(
        self,
        base_path: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int,
        max_context: int | None,
        prefill_chunk: int,
    ) -> None:
        from transformers import AttentionInterface

        name = str(dtype).removeprefix("torch.")
        loaded = models.load(base_path, dtype=_DTYPES[name], device=str(device))
        model: Any = loaded[0]
        _own_memory(model)
        self.tokenizer: Any = loaded[1]
        self.device, self.dtype, self.prefill_chunk = device, dtype, prefill_chunk
        config = model.config
        self.context_length = _context_length(config, max_context)
        self.eos = _eos_ids(self.tokenizer, model)
        decoder = model.get_decoder()
        self._decoder: Any = decoder
        self._lm_head: Any = model.get_output_embeddings()
        self.vocab_size = int(self._lm_head.out_features)
        prefix = next(n for n, m in model.named_modules() if m is decoder.layers)
        self._lora, self._shapes = wrap_linears(decoder.layers, prefix)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.cache = SlotCache(
            len(decoder.layers),
            max_batch,
            getattr(config, "num_key_value_heads", None) or heads,
            head_dim,
            limit=self.context_length,
            dtype=dtype,
            device=device,
        )
        for layer in decoder.layers:
            layer.self_attn.loraloop_cache = self.cache
        AttentionInterface.register(ATTENTION, slot_attention)
        model.set_attn_implementation(ATTENTION)
        self._plan = LoraPlan()
        self._minus_inf = torch.full((), float("-inf"), dtype=dtype, device=device)
        self._zero = torch.zeros((), dtype=dtype, device=device)

    def load_adapter(self, key: str, path: Path) -> Adapter:
        return load_adapter(key, path, self._shapes, dtype=self.dtype, device=self.device)

    def sequence(
        self, handle: Any, prompt: list[int], params: SamplingParams, adapter: Adapter | None
    ) -> Sequence:
        return Sequence(
            handle=handle,
            prompt=prompt,
            params=params,
            adapter=adapter,
            sampler=RequestSampler(params, self.device),
            text=TextStream(self.tokenizer, params.stop),
        )

    def reset(self) -> None:
        """Forget the concatenated adapters (after a failed step)."""
        self._plan = LoraPlan()

    def step(self, running: list[Sequence]) -> list[tuple[Sequence, int]]:
        """Advance every running sequence by one step; the tokens sampled (none for a sequence
        whose prompt is still being read). Call inside ``torch.inference_mode()``."""
        tokens, positions, logit_rows, sampled = self._layout(running)
        self._lora.plan = self._plan
        try:
            hidden = self._decoder(
                input_ids=tokens[None], position_ids=positions[None], use_cache=False
            ).last_hidden_state[0]
        finally:
            self._lora.plan = self.cache.plan = None
        if not sampled:
            return []
        logits = self._lm_head(hidden.index_select(0, logit_rows))
        chosen = next_tokens(logits, [s.sampler for s in sampled])
        return list(zip(sampled, chosen, strict=True))

    def _layout(
        self, running: list[Sequence]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Sequence]]:
        """Lay out this step's tokens, and tell the attention and the LoRA layers where."""
        decode = sorted((s for s in running if not s.prefilling), key=lambda s: s.slot)
        tokens = [s.output[-1] for s in decode]
        positions = [s.cached for s in decode]
        slots = [s.slot for s in decode]
        logit_rows = list(range(len(decode)))
        sampled = list(decode)
        segments, lora_segments, chunks = [], [], []
        budget = self.prefill_chunk
        for sequence in (s for s in running if s.prefilling):
            if budget <= 0:
                break
            take = min(budget, len(sequence.prompt) - sequence.cached)
            budget -= take
            start = len(tokens)
            tokens += sequence.prompt[sequence.cached : sequence.cached + take]
            positions += range(sequence.cached, sequence.cached + take)
            slots += [sequence.slot] * take
            segments.append(Segment(start, len(tokens), sequence.slot, sequence.cached))
            chunks.append((sequence, take))
            if sequence.adapter is not None:
                lora_segments.append((start, len(tokens), sequence.adapter))
            if sequence.cached + take == len(sequence.prompt):
                logit_rows.append(len(tokens) - 1)
                sampled.append(sequence)
        for sequence in decode:
            sequence.cached += 1
        for sequence, take in chunks:
            sequence.cached += take
        self.cache.reserve(max(positions) + 1)
        self.cache.plan = self._attention_plan(decode, slots, positions, segments)
        self._plan = self._lora_plan(decode, lora_segments)
        device = self.device
        return (
            torch.tensor(tokens, device=device),
            torch.tensor(positions, device=device),
            torch.tensor(logit_rows, dtype=torch.long, device=device),
            sampled,
        )

    def _attention_plan(
        self, decode: list[Sequence], slots: list[int], positions: list[int], segments: list[Any]
    ) -> AttentionPlan:
        device = self.device
        plan = AttentionPlan(
            slots=torch.tensor(slots, device=device),
            positions=torch.tensor(positions, device=device),
            decode_rows=len(decode),
            span=0,
            length=0,
            bias=None,
            row_slots=None,
            segments=segments,
        )
        if decode:
            plan.span = decode[-1].slot + 1
            plan.length = max(s.cached for s in decode)
            if plan.span != len(decode):
                plan.row_slots = torch.tensor([s.slot for s in decode], device=device)
            lengths = [plan.length] * plan.span  # slots not decoding: anything finite will do
            for sequence in decode:
                lengths[sequence.slot] = sequence.cached
            if min(lengths) < plan.length:  # else every row sees all of 0:length, no mask
                seen = torch.arange(plan.length, device=device)
                valid = seen[None, :] < torch.tensor(lengths, device=device)[:, None]
                bias = torch.where(valid, self._zero, self._minus_inf)
                plan.bias = bias.view(plan.span, 1, 1, plan.length)
        return plan

    def _lora_plan(
        self, decode: list[Sequence], segments: list[tuple[int, int, Adapter]]
    ) -> LoraPlan:
        by_id = {id(s.adapter): s.adapter for s in decode if s.adapter is not None}
        distinct = sorted(by_id.values(), key=lambda a: a.key)
        plan = LoraPlan(decode_rows=len(decode), decode_adapters=tuple(distinct), segments=segments)
        if len(distinct) == 1 and all(s.adapter is distinct[0] for s in decode):
            plan.single = distinct[0]
        elif distinct:
            index = {id(a): i for i, a in enumerate(distinct)}
            owners = [index[id(s.adapter)] if s.adapter else -1 for s in decode]
            plan.row_adapter = torch.tensor(owners, device=self.device)
        plan.reuse(self._plan)
        return plan


# --- set-up -------------------------------------------------------------------------------------


def _own_memory(model: Any) -> None:
    """Copy CPU weights out of the safetensors file mapping into the process's own memory.

    Loaded weights are pages of the memory-mapped file, which the kernel may drop while they
    sit unused (memory pressure; proactive reclaim such as DAMON ``pageout``) and must read
    back on the next step: a server that was idle for a minute answered its next request many
    times slower. Tied weights stay tied (the shared parameter is updated in place).
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise InvalidRequest(
            f"device: {device!r} is not 'auto', 'cpu' or a torch device such as 'cuda:0'",
            param="device",
        ) from error


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on the CPU (exact) and bfloat16 (else float16) on CUDA."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        allowed = ", ".join(["auto", *_DTYPES])
        raise InvalidRequest(f"dtype: {dtype!r} is not one of {allowed}", param="dtype")
    resolved: torch.dtype = getattr(torch, dtype)
    return resolved


def _context_length(config: Any, max_context: int | None) -> int:
    if config.model_type not in _SUPPORTED:
        raise ConfigurationError(
            f"the inference engine serves {', '.join(sorted(_SUPPORTED))} models, "
            f"not {config.model_type!r}",
            code="unsupported_model",
        )
    length = int(config.max_position_embeddings)
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        length = min(length, int(window))  # within the window, full attention is exact
    return min(length, max_context) if max_context else length


def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)
