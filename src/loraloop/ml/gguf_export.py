"""GGUF export of a merged Llama model, for llama.cpp and Ollama.

    merged/ (Llama, safetensors) ──to_gguf──▶ model.gguf ──ollama_modelfile──▶ Modelfile

The file follows llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaForCausalLM``: the
``llama.*`` hyperparameters, a ``gpt2`` (byte-level BPE) tokenizer, tensors named by gguf-py's
tensor map, and the q/k projections permuted from Hugging Face's rotary layout (row ``i`` of a
head pairs with row ``i + d/2``) to GGML's (rows ``2i`` and ``2i + 1`` pair up). Only
safetensors are read; pickles are refused before anything is loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loraloop.errors import InvalidRequest
from loraloop.ml.export import ExportedFile
from loraloop.ml.safety import check_model_folder, read_safetensors_header

if TYPE_CHECKING:
    import gguf
    from numpy.typing import NDArray

__all__ = [
    "OLLAMA_CHATML",
    "GgufDtype",
    "GgufExport",
    "UnsupportedModel",
    "gguf_metadata",
    "gguf_tensors",
    "ollama_modelfile",
    "to_gguf",
]

GgufDtype = Literal["f16", "f32"]

#: ChatML as an Ollama (Go) template, the format SmolLM2-Instruct was tuned on. Ollama puts the
#: Modelfile's SYSTEM first in ``.Messages`` when a request brings no system message.
OLLAMA_CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)

_GGUF_DTYPES = ("f16", "f32")
_ROPE_TYPES = ("default", "linear")
#: The names llama.cpp's block loader needs for every layer of a Llama.
_BLOCK_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)  # fmt: skip


class UnsupportedModel(InvalidRequest, ValueError):
    """A model GGUF export cannot write faithfully: not a Llama, or a feature it lacks."""

    default_code = "unsupported_model"


@dataclass(frozen=True)
class GgufExport:
    """A written GGUF file and what went into it."""

    path: Path
    file: ExportedFile
    file_type: GgufDtype
    """Storage of the matrices; norms and biases are always f32, as llama.cpp writes them."""
    tensors: int
    vocab_size: int
    merges: int
    """BPE merges written; 0 means none (llama.cpp cannot tokenize with such a file)."""
    pre_tokenizer: str | None
    """``tokenizer.ggml.pre``; None when not recognised (llama.cpp then uses its default)."""


def to_gguf(
    model_dir: Path, out_path: Path, *, name: str | None = None, dtype: GgufDtype = "f16"
) -> GgufExport:
    """Write the Llama model in ``model_dir`` as one GGUF file llama.cpp and Ollama load.

    Refuses other architectures with :class:`UnsupportedModel` (a ``ValueError``). Tensors are
    streamed one at a time, and the file appears at ``out_path`` only once complete.
    """
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    if dtype not in _GGUF_DTYPES:
        raise InvalidRequest(f"dtype: {dtype!r} is not one of f16, f32", param="dtype")
    _check_model(model_dir)
    options: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(model_dir, **options)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, **options)
    except (OSError, ValueError, KeyError) as error:
        message = f"cannot read the config or tokenizer in {model_dir}: {error}"
        raise InvalidRequest(message, code="invalid_model_folder", param="model_dir") from error
    hparams = _Llama.of(config, model_dir)
    vocab = _Vocab.of(model_dir, tokenizer, hparams)
    plan = _plan(model_dir, hparams, dtype)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or model_dir.name)
        hparams.write(writer, dtype)
        vocab.write(writer)
        for entry in plan:
            writer.add_tensor_info(entry.name, entry.shape, entry.dtype, entry.nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for array in _arrays(model_dir, plan):
            writer.write_tensor_data(array)
        writer.close()
        os.replace(partial, out_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    file = ExportedFile.of(out_path)
    return GgufExport(
        path=out_path,
        file=file,
        file_type=dtype,
        tensors=len(plan),
        vocab_size=hparams.vocab_size,
        merges=len(vocab.merges),
        pre_tokenizer=vocab.pre,
    )


def ollama_modelfile(
    gguf_name: str, *, system: str | None = None, template: str = OLLAMA_CHATML
) -> str:
    """An Ollama ``Modelfile`` (for ``ollama create``) using ``gguf_name`` in its folder."""
    problems = []
    if not gguf_name.endswith(".gguf") or Path(gguf_name).name != gguf_name or "\\" in gguf_name:
        problems.append(f"gguf_name: {gguf_name!r} must be a bare file name ending in .gguf")
    for field, text in (("template", template), ("system", system or "")):
        if '"""' in text:
            problems.append(f'{field}: may not contain """ (it ends a Modelfile string)')
    if problems:
        raise InvalidRequest("; ".join(problems), param=problems[0].split(":")[0])
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""', 'PARAMETER stop "<|im_end|>"']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def gguf_tensors(path: Path) -> dict[str, NDArray[Any]]:
    """Every tensor of a GGUF file as a numpy array in its stored layout (shape ``(rows, cols)``).

    Nothing is un-permuted: ``attn_q``/``attn_k`` come back in GGML's rotary layout. Quantised
    tensors are dequantised to float32; f16/f32 ones are copied out of the memory map.
    """
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(path)
    tensors: dict[str, NDArray[Any]] = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))
        if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            tensors[tensor.name] = np.array(tensor.data).reshape(shape)
        else:
            tensors[tensor.name] = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return tensors


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Every key of a GGUF file's metadata with its value (arrays as lists)."""
    import gguf

    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}


# ── checks ─────────────────────────────────────────────────────────────────────────────────


def _check_model(path: Path) -> None:
    check_model_folder(path)
    config = _read_json(path / "config.json")
    if not isinstance(config, dict):
        raise InvalidRequest(f"{path.name}: config.json is missing", code="invalid_model_folder")
    architectures, model_type = config.get("architectures"), config.get("model_type")
    if architectures != ["LlamaForCausalLM"] or model_type != "llama":
        raise UnsupportedModel(
            f"GGUF export writes Llama models (LlamaForCausalLM, model_type 'llama') only; "
            f"{path.name} is {architectures!r} (model_type {model_type!r})",
            param="model_dir",
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# ── the GGUF "llama" layout ────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _Llama:
    """The hyperparameters llama.cpp reads, from a transformers ``LlamaConfig``."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    rms_eps: float
    rope_theta: float
    rope_linear_factor: float | None
    vocab_size: int
    tied: bool

    @classmethod
    def of(cls, config: Any, path: Path) -> _Llama:
        rope = dict(getattr(config, "rope_parameters", None) or {})
        rope_type = rope.get("rope_type", "default")
        heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        problems = []
        if rope_type not in _ROPE_TYPES:
            problems.append(f"rope_type {rope_type!r} (supported: {', '.join(_ROPE_TYPES)})")
        if config.hidden_act != "silu":
            problems.append(f"hidden_act {config.hidden_act!r} (llama.cpp's Llama uses silu)")
        if heads % kv_heads or head_dim % 2:
            problems.append(f"{heads} heads over {kv_heads} kv heads of size {head_dim}")
        if problems:
            raise UnsupportedModel(
                f"{path.name} cannot be written as GGUF: " + "; ".join(problems), param="model_dir"
            )
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            ffn=int(config.intermediate_size),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            context=int(config.max_position_embeddings),
            rms_eps=float(config.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
            rope_linear_factor=float(rope["factor"]) if rope_type == "linear" else None,
            vocab_size=int(config.vocab_size),
            tied=bool(config.tie_word_embeddings),
        )

    def write(self, writer: gguf.GGUFWriter, dtype: GgufDtype) -> None:
        import gguf

        writer.add_context_length(self.context)
        writer.add_embedding_length(self.hidden)
        writer.add_block_count(self.layers)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.heads)
        writer.add_head_count_kv(self.kv_heads)
        writer.add_layer_norm_rms_eps(self.rms_eps)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_rope_dimension_count(self.head_dim)
        if self.head_dim * self.heads != self.hidden:  # llama.cpp assumes hidden / heads
            writer.add_key_length(self.head_dim)
            writer.add_value_length(self.head_dim)
        if self.rope_linear_factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(self.rope_linear_factor)
        writer.add_vocab_size(self.vocab_size)
        file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


@dataclass(frozen=True)
class _Vocab:
    """A byte-level BPE tokenizer as llama.cpp's ``gpt2`` tokenizer model stores it."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str | None
    special_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None

    @classmethod
    def of(cls, path: Path, tokenizer: Any, hparams: _Llama) -> _Vocab:
        import gguf

        spec = _read_json(path / "tokenizer.json")
        model = spec.get("model") if isinstance(spec, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE" or not _byte_level(spec):
            raise UnsupportedModel(
                f"{path.name}: GGUF export needs a byte-level BPE tokenizer.json (as SmolLM2, "
                "Llama 3 and Qwen have); SentencePiece tokenizers are not supported",
                param="model_dir",
            )
        by_id = {index: token for token, index in tokenizer.get_vocab().items()}
        if by_id and max(by_id) >= hparams.vocab_size:
            raise InvalidRequest(
                f"{path.name}: the tokenizer has id {max(by_id)} but the model only "
                f"{hparams.vocab_size} embeddings",
                code="invalid_model_folder",
            )
        added = tokenizer.added_tokens_decoder
        tokens: list[str] = []
        types: list[int] = []
        for index in range(hparams.vocab_size):
            if index not in by_id:  # embedding rows past the tokenizer: padding
                tokens.append(f"[PAD{index}]")
                types.append(int(gguf.TokenType.UNUSED))
            else:
                tokens.append(by_id[index])
                types.append(_token_type(added.get(index)))
        ids = tokenizer.encode("a", add_special_tokens=True)
        special = {
            kind: int(value)
            for kind in ("bos", "eos", "unk", "pad")
            if isinstance(value := getattr(tokenizer, f"{kind}_token_id", None), int)
        }
        template = tokenizer.chat_template
        return cls(
            tokens=tokens,
            types=types,
            merges=_merges(model.get("merges") or []),
            pre=_pre_tokenizer(spec.get("pre_tokenizer")),
            special_ids=special,
            add_bos="bos" in special and ids[:1] == [special["bos"]],
            add_eos="eos" in special and ids[-1:] == [special["eos"]],
            add_space_prefix=_add_prefix_space(spec.get("pre_tokenizer")),
            chat_template=template if isinstance(template, str) else None,
        )

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        writer.add_token_merges(self.merges)  # an empty list writes no key (gguf-py cannot)
        for kind, index in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(index)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _token_type(added: Any) -> int:
    """llama.cpp's rule: added special tokens are CONTROL, other added ones USER_DEFINED."""
    import gguf

    if added is None:
        return int(gguf.TokenType.NORMAL)
    return int(gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED)


def _merges(merges: list[Any]) -> list[str]:
    """``"a b"`` strings; the newer ``[a, b]`` pairs with a space inside a part spelled as
    ``Ġ`` (U+0120), the byte-level symbol for a space, as gguf-py does."""
    if all(isinstance(m, str) for m in merges):
        return list(merges)
    return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]


def _pieces(pre_tokenizer: Any) -> list[dict[str, Any]]:
    if not isinstance(pre_tokenizer, dict):
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [p for p in pre_tokenizer.get("pretokenizers", []) if isinstance(p, dict)]
    return [pre_tokenizer]


def _byte_level(spec: dict[str, Any]) -> bool:
    return any(p.get("type") == "ByteLevel" for p in _pieces(spec.get("pre_tokenizer")))


def _pre_tokenizer(pre_tokenizer: Any) -> str | None:
    """The llama.cpp pre-tokenizer whose splitting matches tokenizer.json's, if one is known.

    ``gpt-2`` is GPT-2's regex; ``smollm`` splits digits one by one first, then the same regex.
    """
    kinds = [
        (p.get("type"), bool(p.get("use_regex", True)), bool(p.get("individual_digits")))
        for p in _pieces(pre_tokenizer)
    ]
    if kinds == [("ByteLevel", True, False)]:
        return "gpt-2"
    if kinds == [("Digits", True, True), ("ByteLevel", True, False)]:
        return "smollm"
    return None


def _add_prefix_space(pre_tokenizer: Any) -> bool:
    return any(
        p.get("type") == "ByteLevel" and bool(p.get("add_prefix_space"))
        for p in _pieces(pre_tokenizer)
    )


@dataclass(frozen=True)
class _Entry:
    """One tensor to write: where it comes from and what it becomes."""

    name: str
    source: str
    file: Path
    shape: tuple[int, ...]
    dtype: Any
    """numpy dtype it is written in."""
    permute_heads: int | None
    """For q/k: the head count the rotary permutation groups rows by."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * int(self.dtype.itemsize)


def _weight_files(path: Path) -> list[Path]:
    index = _read_json(path / "model.safetensors.index.json")
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        names = sorted(set(map(str, index["weight_map"].values())))
        return [path / n for n in names if Path(n).name == n]
    return [path / "model.safetensors"]


def _plan(path: Path, hparams: _Llama, dtype: GgufDtype) -> list[_Entry]:
    """Every tensor's GGUF name, shape and dtype, from safetensors headers (no data read)."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hparams.layers)
    matrix = np.dtype(np.float16 if dtype == "f16" else np.float32)
    entries, unknown = [], []
    for file in _weight_files(path):
        for source, info in read_safetensors_header(file).items():
            if source == "__metadata__" or source.endswith("rotary_emb.inv_freq"):
                continue  # recomputed by llama.cpp from rope.freq_base
            if source == "lm_head.weight" and hparams.tied:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            name = names.get_name(source, try_suffixes=(".weight", ".bias"))
            if name is None:
                unknown.append(source)
                continue
            shape = tuple(int(n) for n in info["shape"])
            heads = {".attn_q.": hparams.heads, ".attn_k.": hparams.kv_heads}
            permute = next((n for key, n in heads.items() if key in name), None)
            stored = matrix if len(shape) > 1 else np.dtype(np.float32)
            entries.append(_Entry(name, source, file, shape, stored, permute))
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{kind}.weight" for i in range(hparams.layers) for kind in _BLOCK_TENSORS
    }
    if not hparams.tied:
        expected.add("output.weight")
    missing = sorted(expected - {e.name for e in entries})
    if unknown or missing:
        raise UnsupportedModel(
            f"{path.name} does not have a Llama's tensors"
            + (f"; not in llama.cpp's Llama: {', '.join(unknown[:8])}" if unknown else "")
            + (f"; missing: {', '.join(missing[:8])}" if missing else ""),
            param="model_dir",
        )
    return sorted(entries, key=_order)


def _order(entry: _Entry) -> tuple[int, int, str]:
    """token_embd, the blocks in order, then output_norm and output, as llama.cpp writes."""
    parts = entry.name.split(".")
    if parts[0] == "blk":
        return (1, int(parts[1]), entry.name)
    return (0 if parts[0] == "token_embd" else 2, 0, entry.name)


def _arrays(path: Path, plan: list[_Entry]) -> Iterator[NDArray[Any]]:
    """The tensors of ``plan`` in order, converted; one in memory at a time."""
    import torch
    from safetensors import safe_open

    handles: dict[Path, Any] = {}
    for entry in plan:
        if entry.file not in handles:
            handles[entry.file] = safe_open(entry.file, framework="pt")
        tensor = handles[entry.file].get_tensor(entry.source).to(torch.float32)
        array = tensor.numpy()
        if entry.permute_heads is not None:
            array = _permute(array, entry.permute_heads)
        yield array.astype(entry.dtype, copy=False)


def _permute(weights: NDArray[Any], heads: int) -> NDArray[Any]:
    """Hugging Face's rotary layout to GGML's, as llama.cpp's converter does for Llama q/k.

    Each head's rows are ``[first halves; second halves]`` of the rotated pairs; GGML wants
    each pair's two rows adjacent. Works for biases (1-D) too.
    """
    rows = weights.shape[0]
    grouped = weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
    return grouped.swapaxes(1, 2).reshape(weights.shape)
