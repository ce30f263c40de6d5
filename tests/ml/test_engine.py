"""The inference engine on a 2-layer tiny model: PEFT-exact greedy output across mixed adapters,
continuous batching, sampling, stop strings, cancellation, refusals, the adapter cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import loraloop.ml.engine as engine_module
from loraloop.errors import InvalidRequest
from loraloop.ml import batching
from loraloop.ml.engine import (
    AdapterRef,
    ContextTooLong,
    Delta,
    Engine,
    Generation,
    SamplingParams,
)
from loraloop.ml.sampling import RequestSampler, TextStream
from loraloop.testing import make_tiny_model, tiny_tokenizer

# PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
#: (name, LoraConfig options): ranks differ, attention-only and all-linear, rsLoRA, patterns.
ADAPTERS: list[tuple[str, dict[str, Any]]] = [
    ("attention-r4", {"r": 4, "lora_alpha": 8, "target_modules": ATTENTION}),
    ("all-linear-r8", {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}),
    ("rslora-r2", {"r": 2, "lora_alpha": 4, "target_modules": ["v_proj", "down_proj"],
                   "use_rslora": True}),
    ("patterns", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "up_proj"],
                  "rank_pattern": {"up_proj": 6}, "alpha_pattern": {"up_proj": 3}}),
]  # fmt: skip
PROMPTS = ["Hello there", "抹茶ラテはいくら？", "Is it open on Tuesday?"]
GREEDY = SamplingParams(max_tokens=12, temperature=0)
#: Logit gaps below this are near-ties, where float rounding may legitimately pick either token.
TIE = 1e-3


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, its layers' weights scaled up so their output (not the tied embedding of
    the last token) decides the next token: outputs vary instead of repeating the prompt's end."""
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path_factory.mktemp("tiny"), hidden=32)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2)
        for name, weights in model.named_parameters():
            if "layers" in name and name.endswith("proj.weight"):
                weights.mul_(10)
    model.save_pretrained(path, safe_serialization=True)
    return path


def make_adapter(base: Path, out: Path, seed: int = 0, **options: Any) -> Path:
    """A PEFT LoRA folder with random, non-zero A and B, so the adapter changes the output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(init_lora_weights=False, **options)
    )
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.normal_(0, 0.1)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, AdapterRef]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: AdapterRef(name, make_adapter(base, root / name, seed=i, **options))
        for i, (name, options) in enumerate(ADAPTERS)
    }


@pytest.fixture(scope="module")
def engine(base: Path) -> Iterator[Engine]:
    with Engine(base) as served:
        yield served


def tokens(generation: Generation) -> list[int]:
    return [t for delta in generation for t in delta.token_ids]


def peft_greedy(
    base: Path, adapter: AdapterRef | None, prompt: list[int], max_tokens: int
) -> tuple[list[int], list[float]]:
    """PEFT's own greedy generation, one request alone: tokens and each step's top-2 gap."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter.path)
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_tokens,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    gaps = [float(-torch.topk(s[0], 2).values.diff()) for s in out.scores]
    return out.sequences[0, len(prompt) :].tolist(), gaps


def assert_same_greedy(mine: list[int], expected: list[int], gaps: list[float]) -> None:
    """Equal token for token, up to the first step where the baseline itself was a near-tie."""
    for step, (a, b) in enumerate(zip(mine, expected, strict=False)):
        if gaps[step] < TIE:
            return
        assert a == b, f"step {step}: {mine} != {expected}"
    assert len(mine) == len(expected), (mine, expected)


# --- exactness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_batch", "prefill_chunk"),
    [
        pytest.param(16, 512, id="all-at-once"),
        pytest.param(3, 7, id="queued-and-chunked-prompts"),
    ],
)
def test_greedy_equals_peft_for_mixed_adapters_in_one_batch(
    base: Path, adapters: dict[str, AdapterRef], max_batch: int, prefill_chunk: int
) -> None:
    with Engine(base, max_batch=max_batch, prefill_chunk=prefill_chunk) as served:
        requests = []
        for text in PROMPTS:
            prompt = served.chat_prompt([{"role": "user", "content": text}])
            for adapter in [None, *adapters.values()]:
                requests.append((prompt, adapter, served.submit(prompt, GREEDY, adapter)))
        outputs = {}
        for prompt, adapter, generation in requests:
            mine = tokens(generation)
            expected, gaps = peft_greedy(base, adapter, prompt, GREEDY.max_tokens)
            assert_same_greedy(mine, expected, gaps)
            outputs[(tuple(prompt), adapter)] = tuple(mine)
    assert len(set(outputs.values())) > len(PROMPTS) * 3  # the adapters really change things


def test_a_request_joins_mid_decode_and_leaves_the_first_unchanged(
    engine: Engine, adapters: dict[str, AdapterRef]
) -> None:
    first = engine.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
    second = engine.chat_prompt([{"role": "user", "content": PROMPTS[1]}])
    long = SamplingParams(max_tokens=300, temperature=0, ignore_eos=True)  # far outlasts second
    adapter = adapters["all-linear-r8"]
    alone = [tokens(engine.submit(first, long, adapter)), tokens(engine.submit(second, GREEDY))]

    running = engine.submit(first, long, adapter)
    stream, seen = iter(running), []
    while len(seen) < 10:
        seen += next(stream).token_ids
    joined = engine.submit(second, GREEDY)  # arrives while the first is mid-decode
    assert not running.done
    assert tokens(joined) == alone[1]
    seen += [t for delta in stream for t in delta.token_ids]
    assert seen == alone[0]
    assert running.finish_reason == "length"


# --- sampling -------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_seeds_differ(engine: Engine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": PROMPTS[2]}])

    def sample(**options: Any) -> list[int]:
        params = SamplingParams(max_tokens=24, temperature=1.5, ignore_eos=True, **options)
        return tokens(engine.submit(prompt, params))

    assert sample(seed=7) == sample(seed=7)
    assert len({tuple(sample(seed=s)) for s in range(4)}) > 1
    assert sample(seed=7, top_p=0.9, top_k=20) == sample(seed=7, top_p=0.9, top_k=20)
    greedy = tokens(engine.submit(prompt, SamplingParams(max_tokens=24, temperature=0)))
    assert sample(seed=3, top_k=1)[: len(greedy)] == greedy  # top-1 sampling is greedy
    assert sample(seed=3, top_p=1e-6)[: len(greedy)] == greedy


#: (options, logits, token already generated twice, expected pick): OpenAI's penalty rules
PENALTIES = [
    ({}, [0.0, 1.0, 0.5], 1, 1),
    ({"frequency_penalty": 0.3}, [0.0, 1.0, 0.5], 1, 2),  # 1 - 2 * 0.3 < 0.5
    ({"frequency_penalty": 0.2}, [0.0, 1.0, 0.5], 1, 1),  # 1 - 2 * 0.2 > 0.5
    ({"presence_penalty": 0.6}, [0.0, 1.0, 0.5], 1, 2),  # once, however many times
    ({"presence_penalty": 0.4}, [0.0, 1.0, 0.5], 1, 1),
    ({"frequency_penalty": -1.0}, [0.0, 1.0, 2.5], 1, 1),  # negative encourages repeats
]


@pytest.mark.parametrize(("options", "logits", "seen", "expected"), PENALTIES)
def test_penalties_count_only_generated_tokens(
    options: dict[str, float], logits: list[float], seen: int, expected: int
) -> None:
    sampler = RequestSampler(SamplingParams(temperature=0, **options), torch.device("cpu"))
    assert sampler.choose(torch.tensor(logits)) == max(range(3), key=lambda i: logits[i])
    sampler.observe(seen)
    sampler.observe(seen)
    assert sampler.choose(torch.tensor(logits)) == expected


#: (field, bad value, what the message says about it)
BAD_PARAMS = [
    ("max_tokens", 0, "max_tokens: 0 must be an integer >= 1"),
    ("temperature", 2.5, "temperature: 2.5 must be from 0 to 2"),
    ("top_p", 0.0, "top_p: 0.0 must be above 0 and at most 1"),
    ("top_k", -1, "top_k: -1 must be an integer >= 0"),
    ("seed", 1.5, "seed: 1.5 must be a 64-bit integer or null"),
    ("stop", ("a", "b", "c", "d", "e"), "stop: 5 strings given, at most 4 allowed"),
    ("presence_penalty", 3.0, "presence_penalty: 3.0 must be from -2 to 2"),
    ("frequency_penalty", -2.5, "frequency_penalty: -2.5 must be from -2 to 2"),
]


def test_sampling_params_name_every_bad_field() -> None:
    with pytest.raises(InvalidRequest) as raised:
        SamplingParams(**{name: value for name, value, _ in BAD_PARAMS})
    for _, _, said in BAD_PARAMS:
        assert said in raised.value.message
    assert raised.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as single:
        SamplingParams(top_p=1.5)
    assert single.value.param == "top_p"
    assert SamplingParams(stop="END").stop == ("END",)  # type: ignore[arg-type]


# --- text, stop strings, lengths ------------------------------------------------------------


def test_max_tokens_ends_with_length(engine: Engine) -> None:
    prompt = engine.text_prompt("Hello")
    generation = engine.submit(prompt, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    deltas = list(generation)
    assert [d.finish_reason for d in deltas] == [None] * 4 + ["length"]
    assert generation.completion_tokens == 5
    assert generation.prompt_tokens == len(prompt)
    assert generation.first_token_at is not None
    assert "".join(d.text for d in deltas) == generation.text == generation.result()


def test_a_stop_string_truncates_the_output(engine: Engine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    full = engine.submit(prompt, params).result()
    printable = [i for i in range(3, len(full) - 2) if "\ufffd" not in full[i : i + 2]]
    assert printable, repr(full)
    stop = full[printable[0] : printable[0] + 2]
    stopped = engine.submit(prompt, SamplingParams(**{**params.__dict__, "stop": (stop, "never")}))
    assert stopped.result() == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 30


def test_end_of_sequence_tokens_of_the_generation_config_stop(base: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(base, tmp_path / "base")
    with Engine(folder) as served:
        prompt = served.chat_prompt([{"role": "user", "content": PROMPTS[0]}])
        free = tokens(served.submit(prompt, SamplingParams(max_tokens=8, temperature=0)))
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], free[3]]
    (folder / "generation_config.json").write_text(json.dumps(config))
    with Engine(folder) as served:
        generation = served.submit(prompt, SamplingParams(max_tokens=8, temperature=0))
        assert tokens(generation) == free[: free.index(free[3]) + 1]
        assert generation.finish_reason == "stop"


def test_text_stream_holds_back_split_characters_and_stop_prefixes() -> None:
    tokenizer = tiny_tokenizer()
    text = "抹茶ラテは640円です。<e"
    stream = TextStream(tokenizer, stop=("<end>",))
    pieces = [stream.push(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == "抹茶ラテは640円です。"  # "<e" may still become "<end>"
    assert stream.flush() == "<e"

    stopping = TextStream(tokenizer, stop=("円で",))
    ids = tokenizer.encode("抹茶は640円です", add_special_tokens=False)
    assert "".join(stopping.push(t) for t in ids) == "抹茶は640"
    assert stopping.stopped


def test_japanese_streams_without_broken_characters(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random model rarely writes valid UTF-8, so the model's choices are scripted here: the
    bytes of a Japanese sentence, one token each (three per character), then end of turn."""
    text = "抹茶ラテは640円です。ありがとう！"
    script = iter([*engine.tokenizer.encode(text, add_special_tokens=False), 2])
    monkeypatch.setattr(batching, "next_tokens", lambda _, rows: [next(script) for _ in rows])
    generation = engine.submit(engine.text_prompt("Hi"), SamplingParams(max_tokens=100))
    deltas = list(generation)
    assert all("\ufffd" not in delta.text for delta in deltas)
    assert "".join(d.text for d in deltas) == generation.text == text
    assert sum(1 for d in deltas if d.text) == len(text)  # each character once, whole
    assert generation.finish_reason == "stop"


def test_async_stream_works_inside_asyncio_run(engine: Engine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": PROMPTS[1]}])

    async def collect() -> tuple[list[Delta], Generation]:
        generation = engine.submit(prompt, SamplingParams(max_tokens=10, temperature=0))
        ticks = 0

        async def tick() -> None:  # the loop keeps running while tokens are produced
            nonlocal ticks
            while generation.finish_reason is None:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        deltas = [delta async for delta in generation.stream()]
        await ticker
        assert ticks > 0
        return deltas, generation

    # a fresh thread: an earlier test (Playwright's sync API) may keep a loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        deltas, generation = pool.submit(asyncio.run, collect()).result()
    assert "".join(d.text for d in deltas) == generation.text
    assert deltas[-1].finish_reason in {"stop", "length"}
    assert tokens(generation) == [t for d in deltas for t in d.token_ids]


# --- cancellation and limits ------------------------------------------------------------------


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_cancel_frees_the_slot_at_the_next_step(engine: Engine) -> None:
    prompt = engine.text_prompt("Hello")
    endless = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
    generation = engine.submit(prompt, endless)
    stream = iter(generation)
    next(stream)
    generation.cancel()
    generation.cancel()  # idempotent
    rest = list(stream)
    assert rest[-1].finish_reason == generation.finish_reason == "cancelled"
    assert generation.completion_tokens < 400
    wait_for(lambda: engine.stats()["running"] == 0)


def test_abandoning_a_stream_and_cancelling_while_queued(base: Path) -> None:
    with Engine(base, max_batch=1) as served:
        prompt = served.text_prompt("Hello")
        endless = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
        first, queued = served.submit(prompt, endless), served.submit(prompt, endless)
        queued.cancel()
        assert list(queued) == [Delta("", (), "cancelled")]
        for _ in first:  # a client that goes away mid-stream
            break
        wait_for(lambda: first.finish_reason == "cancelled")
        wait_for(lambda: served.stats()["running"] == 0)
        last = served.submit(prompt, endless)
    assert list(last)[-1].finish_reason == "cancelled"  # close() ends what is left


def test_a_prompt_beyond_the_context_window_says_both_numbers(base: Path) -> None:
    with Engine(base, max_context=64) as served:
        assert served.context_length == 64
        prompt = served.text_prompt("x" * 40)
        with pytest.raises(ContextTooLong) as raised:
            served.submit(prompt, SamplingParams(max_tokens=30))
        error = raised.value
        assert (error.code, error.param) == ("context_length_exceeded", "messages")
        assert "64 tokens" in error.message
        assert "70 (40 in the prompt + 30 max_tokens)" in error.message
        assert "max_tokens to at most 24" in error.message
        assert isinstance(error, InvalidRequest)
        served.submit(prompt, SamplingParams(max_tokens=24, temperature=0)).result()


# --- adapters ---------------------------------------------------------------------------------


def _with_pickle(folder: Path) -> None:
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")


def _other_base(folder: Path) -> None:
    other = make_adapter(make_tiny_model(folder.parent / "other", hidden=16), folder.parent / "o",
                         r=4, target_modules=ATTENTION)  # fmt: skip
    shutil.copy(other / "adapter_model.safetensors", folder / "adapter_model.safetensors")


def _config(**changes: Any) -> Any:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))

    return edit


def _renamed(old: str, new: str) -> Any:
    def edit(folder: Path) -> None:
        weights = load_file(folder / "adapter_model.safetensors")
        weights = {key.replace(old, new): value for key, value in weights.items()}
        save_file(weights, folder / "adapter_model.safetensors")

    return edit


#: (case, how the folder is spoilt, what the error says)
BAD_ADAPTERS = [
    ("pickle", _with_pickle, "adapter_model.bin: .bin weights are pickles"),
    ("other-base", _other_base, "do not fit the base layer (32 in, 16 out; wrong base model?)"),
    ("dora", _config(use_dora=True), "DoRA (use_dora) is not supported"),
    ("bias", _config(bias="all"), "trained biases are not supported"),
    ("modules-to-save", _config(modules_to_save=["lm_head"]), "modules_to_save"),
    ("missing-layer", _renamed("layers.1.", "layers.7."), "layers.7.self_attn.q_proj: no such"),
    ("lm-head", _renamed("model.layers.0.self_attn.q_proj", "lm_head"), "lm_head: no such"),
    ("no-config", lambda f: (f / "adapter_config.json").unlink(), "adapter_config.json is missing"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spoil", "said"), BAD_ADAPTERS, ids=[c[0] for c in BAD_ADAPTERS])
def test_an_adapter_that_cannot_be_served_is_refused_at_submit(
    engine: Engine,
    adapters: dict[str, AdapterRef],
    tmp_path: Path,
    case: str,
    spoil: Any,
    said: str,
) -> None:
    folder = shutil.copytree(adapters["attention-r4"].path, tmp_path / case)
    spoil(folder)
    prompt = engine.text_prompt("Hello")
    with pytest.raises(InvalidRequest) as raised:
        engine.submit(prompt, GREEDY, AdapterRef(f"bad-{case}", folder))
    assert said in raised.value.message
    assert raised.value.param == "adapter"
    assert f"bad-{case}" not in engine._adapters.keys()  # noqa: SIM118 - a list


def test_the_adapter_cache_drops_the_least_recently_used(
    base: Path, adapters: dict[str, AdapterRef]
) -> None:
    sizes = {}
    with Engine(base) as probe:
        for name, adapter in adapters.items():
            probe.load_adapter(adapter)
            sizes[name] = probe.stats()["cache_bytes"] - sum(sizes.values())
    first, second, third = "attention-r4", "rslora-r2", "patterns"
    limit = sizes[first] + sizes[second] + sizes[third] - 1  # room for two of the three
    with Engine(base, adapter_cache_bytes=limit) as served:
        served.load_adapter(adapters[first])
        served.load_adapter(adapters[second])
        served.load_adapter(adapters[first])  # used again: now the second is the oldest
        served.load_adapter(adapters[third])
        assert served._adapters.keys() == [first, third]
        stats = served.stats()
        assert stats["cached_adapters"] == 2
        assert stats["cache_bytes"] == sizes[first] + sizes[third] <= limit
        started = time.perf_counter()
        served.load_adapter(adapters[second])  # evicted adapters load again, fast
        assert time.perf_counter() - started < 1.0


def test_stats_count_steps_and_tokens(engine: Engine) -> None:
    before = engine.stats()
    engine.submit(engine.text_prompt("Hi"), GREEDY).result()
    after = engine.stats()
    assert after["steps"] > before["steps"]
    assert 0 < after["generated_tokens"] - before["generated_tokens"] <= GREEDY.max_tokens
    assert after["running"] == after["waiting"] == 0
    assert (after["device"], after["dtype"]) == ("cpu", "float32")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_the_weights_leave_the_file_mapping(base: Path, tmp_path: Path) -> None:
    """Mapped pages can be dropped while idle and read back slowly; the engine copies them."""
    folder = shutil.copytree(base, tmp_path / "base")
    with Engine(folder):
        maps = Path("/proc/self/maps").read_text()
    assert str(folder / "model.safetensors") not in maps


def test_bfloat16_is_an_option_on_the_cpu(base: Path) -> None:
    with Engine(base, dtype="bfloat16") as served:
        generation = served.submit(served.text_prompt("Hello"), GREEDY)
        assert generation.result() == generation.text
        assert generation.completion_tokens > 0
        assert served.stats()["dtype"] == "bfloat16"


def test_importing_the_engine_does_not_import_torch() -> None:
    """The API imports these types; torch loads with the first Engine."""
    check = "import sys, loraloop.ml.engine; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_public_names_are_the_documented_ones() -> None:
    assert set(engine_module.__all__) == {
        "AdapterRef",
        "ContextTooLong",
        "Delta",
        "Engine",
        "EngineClosed",
        "Generation",
        "SamplingParams",
    }
