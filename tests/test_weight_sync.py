"""Weight sync, learner -> engine: buckets carry tensors exactly, the digest sees any value that changed or moved
(a permuted row, two swapped layers), and after a sync the engine samples with the learner's logprobs, tied
embeddings included, even while it was generating."""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest
import torch

from rlaif.weights.buckets import Bucket, WeightSyncError, digest, pack, unpack, verify
from rlaif.weights.engine_extension import WORKER_EXTENSION

PROMPT = "def add(a, b):"
BUCKET_MB = 0.5  # the tiny model is ~2.5 MB in float32: several buckets


def _randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _round_trip(buckets: list[Bucket]) -> list[tuple[str, torch.Tensor]]:
    return [pair for bucket in buckets for pair in unpack(bucket.data, bucket.index)]


# --- pack / unpack -----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_pack_then_unpack_returns_every_tensor_exactly_in_order():
    named = [("w32", _randn(5, 7)), ("w16", _randn(3, dtype=torch.float16, seed=1)),  # 6 bytes: next is unaligned
             ("wbf", _randn(4, 3, 2, dtype=torch.bfloat16, seed=2)), ("one", torch.tensor([2.5])),
             ("empty", torch.empty(0, 4)), ("tail", _randn(9, dtype=torch.float16, seed=3))]
    out = _round_trip(pack(named))
    assert [name for name, _ in out] == [name for name, _ in named]
    for (_, sent), (_, got) in zip(named, out, strict=True):
        assert (got.dtype, got.shape) == (sent.dtype, sent.shape)
        assert torch.equal(got, sent)


@pytest.mark.unit
def test_pack_converts_to_the_requested_dtype():
    [(_, got)] = _round_trip(pack([("w", _randn(4, 4))], dtype=torch.bfloat16))
    assert got.dtype == torch.bfloat16 and torch.equal(got, _randn(4, 4).to(torch.bfloat16))


@pytest.mark.unit
def test_a_zero_dim_tensor_round_trips():
    [(_, got)] = _round_trip(pack([("scale", torch.tensor(3.5))]))
    assert got.shape == () and got.item() == 3.5


@pytest.mark.unit
def test_buckets_stay_within_the_limit_and_a_larger_tensor_gets_a_bucket_of_its_own():
    limit = 1024
    small = [(f"s{i}", _randn(100, seed=i)) for i in range(5)]  # 400 bytes each: two to a bucket
    big = ("big", _randn(600, seed=9))  # 2400 bytes
    named = [*small[:3], big, *small[3:]]
    buckets = pack(named, bucket_mb=limit / (1 << 20))
    assert [[name for name, *_ in b.index] for b in buckets] == [["s0", "s1"], ["s2"], ["big"], ["s3", "s4"]]
    assert all(len(b.data) <= limit for b in buckets if len(b.index) > 1)
    assert [name for name, _ in _round_trip(buckets)] == [name for name, _ in named]
    assert all(torch.equal(got, sent) for (_, got), (_, sent) in zip(_round_trip(buckets), named, strict=True))


# --- digest / verify ---------------------------------------------------------------------------------------


@pytest.mark.unit
def test_verify_fails_when_two_rows_are_permuted_or_two_same_shaped_tensors_swapped():
    q, k = _randn(8, 16, seed=1), _randn(8, 16, seed=2)
    expected = digest([("layers.0.q", q), ("layers.1.q", k)])
    permuted = q.clone()
    permuted[[2, 5]] = q[[5, 2]]
    for wrong in ([("layers.0.q", permuted), ("layers.1.q", k)], [("layers.0.q", k), ("layers.1.q", q)]):
        with pytest.raises(WeightSyncError):
            verify(expected, digest(wrong))


@pytest.mark.unit
def test_digest_in_chunks_equals_the_digest_in_one_piece():
    named = [("w", _randn(300, 64, seed=4)), ("b", _randn(64, seed=5)), ("c", _randn(3, 4, 5, seed=6))]
    verify(digest(named), digest(named, chunk_elements=100))


@pytest.mark.unit
def test_verify_fails_when_one_element_changes():
    w = _randn(256, 256) * 0.02
    changed = w.clone()
    changed[17, 42] += 1e-3
    with pytest.raises(WeightSyncError):
        verify(digest([("w", w)]), digest([("w", changed)]))


@pytest.mark.unit
def test_verify_fails_when_two_elements_of_a_row_are_swapped():
    w = _randn(256, 256) * 0.02
    swapped = w.clone()
    swapped[17, [3, 200]] = w[17, [200, 3]]
    assert not torch.equal(swapped, w)
    with pytest.raises(WeightSyncError):
        verify(digest([("w", w)]), digest([("w", swapped)]))


@pytest.mark.unit
@pytest.mark.parametrize("component", [0, 1, 2])
def test_verify_passes_on_equal_digests_and_fails_on_a_perturbed_one(component):
    named = [("a", _randn(64, 32)), ("b", _randn(32, seed=1))]
    expected = digest(named)
    verify(expected, digest(named))
    verify(expected, digest(reversed(named)))  # the same sums in another order
    perturbed = list(expected)
    perturbed[component] += 1e-4 * max(1.0, abs(perturbed[component]))
    with pytest.raises(WeightSyncError):
        verify(expected, perturbed)


# --- a real engine -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model):
    """One engine with the worker extension for the module, and `run(coroutine)` on the loop that owns it."""
    from rlaif.policies.engine import EnginePolicy

    loop = asyncio.new_event_loop()

    async def start() -> EnginePolicy:
        return EnginePolicy.start(str(tiny_model), worker_extension_cls=WORKER_EXTENSION)

    policy = loop.run_until_complete(start())
    yield policy, loop.run_until_complete
    loop.run_until_complete(policy.close())
    loop.close()


def _model(tiny_model) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def _perturbed(tiny_model, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """The tiny model in float32 with noise on every parameter (the tied embedding once: it is one Parameter)."""
    model = _model(tiny_model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model


async def _sync(policy, buckets: list[Bucket]) -> dict:
    """Stage every bucket, then apply: what `RolloutWorker.load_weights` does. Prints the time it took."""
    started = time.monotonic()
    for bucket in buckets:
        await policy.engine.collective_rpc("rlaif_stage", args=(bucket.data, bucket.index))
    staged = time.monotonic()
    [result] = await policy.engine.collective_rpc("rlaif_apply")
    mib = sum(len(b.data) for b in buckets) / (1 << 20)
    print(f"weight sync: {len(buckets)} buckets, {mib:.2f} MiB, stage {staged - started:.3f} s, "
          f"apply {time.monotonic() - staged:.3f} s")
    return result


async def _greedy(policy, prompt: str = PROMPT, max_tokens: int = 6):
    from rlaif.policies.endpoints import Sampling
    from rlaif.types import Message

    completion = await policy.complete([Message(role="user", content=prompt)], [],
                                       Sampling(temperature=0, max_tokens=max_tokens))
    assert completion.turn.completion_ids
    return completion.turn


def _logprobs(model: torch.nn.Module, turn) -> torch.Tensor:
    """The logprobs `model` gives the turn's completion ids after its prompt ids."""
    ids = torch.tensor([turn.prompt_ids + turn.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(turn.prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(turn.completion_ids)[:, None])[:, 0]


def _assert_engine_samples_like(model: torch.nn.Module, turn) -> None:
    expected = _logprobs(model, turn)
    assert torch.allclose(torch.tensor(turn.logprobs), expected, atol=1e-3), (turn.logprobs, expected.tolist())


@pytest.mark.vllm
def test_a_bucketed_sync_loads_every_weight_verifies_and_the_engine_samples_with_the_new_logprobs(engine, tiny_model):
    policy, run = engine
    model = _perturbed(tiny_model, seed=1)
    buckets = pack(model.named_parameters(), bucket_mb=BUCKET_MB)
    assert len(buckets) >= 3

    async def go():
        before = await _greedy(policy)
        result = await _sync(policy, buckets)
        return before, result, await _greedy(policy)

    before, result, after = run(go())
    assert not torch.allclose(torch.tensor(before.logprobs), _logprobs(model, before), atol=1e-2)
    assert result["missing"] == []
    verify(digest(model.named_parameters()), result["digest"])
    _assert_engine_samples_like(model, after)


@pytest.mark.vllm
def test_changing_only_the_tied_embedding_changes_the_engines_output_embedding_too(engine, tiny_model):
    policy, run = engine
    model = _perturbed(tiny_model, seed=2)

    async def go():
        await _sync(policy, pack(model.named_parameters(), bucket_mb=BUCKET_MB))
        before = await _greedy(policy)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(1.5)
        result = await _sync(policy, pack(model.named_parameters(), bucket_mb=BUCKET_MB))
        return before, result, await _greedy(policy)

    before, result, after = run(go())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert not torch.allclose(torch.tensor(before.logprobs), _logprobs(model, before), atol=1e-2)
    assert result["missing"] == []
    _assert_engine_samples_like(model, after)


@pytest.mark.vllm
def test_a_bucket_corrupted_in_transit_fails_verification(engine, tiny_model):
    policy, run = engine
    model = _perturbed(tiny_model, seed=3)
    named = list(model.named_parameters())
    buckets = pack(named, bucket_mb=BUCKET_MB)
    victim, (name, _, _, offset) = next((i, entry) for i, bucket in enumerate(buckets) for entry in bucket.index
                                        if entry[0].endswith("mlp.down_proj.weight"))
    element = int(dict(named)[name].detach().reshape(-1).abs().argmax())
    data = bytearray(buckets[victim].data)
    data[offset + 4 * element + 2] ^= 0x80  # the lowest exponent bit of one float32: that weight doubles or halves
    buckets[victim] = Bucket(bytes(data), buckets[victim].index)

    result = run(_sync(policy, buckets))
    assert result["missing"] == []  # every name arrived: only the digest can tell
    with pytest.raises(WeightSyncError):
        verify(digest(named), result["digest"])


@pytest.mark.vllm
def test_a_sync_while_requests_are_generating_completes_them_and_later_requests_use_the_new_weights(
        engine, tiny_model):
    from rlaif.policies.endpoints import Sampling
    from rlaif.types import Message

    policy, run = engine
    model = _perturbed(tiny_model, seed=4)
    buckets = pack(model.named_parameters(), bucket_mb=BUCKET_MB)

    async def go():
        sampling = Sampling(temperature=1.0, max_tokens=32)
        requests = [asyncio.create_task(policy.complete([Message(role="user", content=f"def f{i}(x):")], [], sampling))
                    for i in range(8)]
        await asyncio.sleep(0)
        result = await _sync(policy, buckets)
        in_flight = sum(not r.done() for r in requests)
        return result, in_flight, await asyncio.gather(*requests), await _greedy(policy)

    result, in_flight, completions, after = run(go())
    assert in_flight > 0, "every request finished before the sync did: it did not overlap generation"
    assert result["missing"] == []
    verify(digest(model.named_parameters()), result["digest"])
    assert all(c.finish_reason in ("stop", "length") and c.turn.completion_ids for c in completions)
    _assert_engine_samples_like(model, after)


@pytest.mark.vllm
def test_the_learners_payload_after_a_step_syncs_and_verifies(engine, tiny_model):
    from rlaif.train.learner import Learner, Sample

    policy, run = engine
    learner = Learner(str(tiny_model), lr=1e-3)
    base = _model(tiny_model)

    async def go():
        await _sync(policy, pack(base.named_parameters(), bucket_mb=BUCKET_MB))
        turn = await _greedy(policy)
        learner.step([Sample(turn.prompt_ids, turn.completion_ids, turn.logprobs, turn.loss_mask, advantage=1.0)])
        buckets, expected = learner.sync_payload(bucket_mb=BUCKET_MB)
        assert len(buckets) >= 3
        result = await _sync(policy, buckets)
        return turn, result, expected, await _greedy(policy)

    before, result, expected, after = run(go())
    assert not torch.allclose(torch.tensor(before.logprobs), _logprobs(learner.model, before), atol=1e-3)
    assert result["missing"] == []
    verify(expected, result["digest"])
    _assert_engine_samples_like(learner.model, after)


# --- the broadcast path ------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.unit
def test_planned_buckets_broadcast_in_a_gloo_group_arrive_exactly():
    from concurrent.futures import ThreadPoolExecutor

    from rlaif.weights.buckets import fill, plan
    from rlaif.weights.group import open_group

    named = [("a", _randn(33, 7)), ("b", _randn(5, dtype=torch.bfloat16, seed=1)), ("c", torch.tensor(1.5)),
             ("d", _randn(300, seed=2))]
    plans = plan(named, bucket_mb=1024 / (1 << 20))
    assert len(plans) >= 2
    port = _free_port()

    def sender() -> int:
        group = open_group("127.0.0.1", port, 0, 3, "cpu", timeout_s=30)
        return group.send(fill(dict(named), bucket) for bucket in plans)

    def receiver(rank: int) -> list[tuple[str, torch.Tensor]]:
        group = open_group("127.0.0.1", port, rank, 3, "cpu", timeout_s=30)
        return [pair for bucket in plans for pair in unpack(group.receive(bucket.size, "cpu"), bucket.index)]

    with ThreadPoolExecutor(3) as pool:
        sent, *received = [f.result(timeout=60) for f in
                           (pool.submit(sender), pool.submit(receiver, 1), pool.submit(receiver, 2))]
    assert sent == sum(p.size for p in plans)
    for got in received:
        assert [name for name, _ in got] == [name for name, _ in named]
        assert all(torch.equal(g, t) for (_, g), (_, t) in zip(got, named, strict=True))


@pytest.mark.vllm
def test_the_learner_broadcasts_its_weights_into_the_engine_which_verifies_and_samples_with_them(
        engine, tiny_model):
    """The broadcast transport end to end: learner rank 0 in this process, the engine's worker as rank 1."""
    from rlaif.train.learner import Learner, Sample

    policy, run = engine
    learner = Learner(str(tiny_model), lr=1e-3)
    port = _free_port()

    async def go():
        await asyncio.gather(asyncio.to_thread(learner.open_weight_group, "127.0.0.1", port, 2, 30),
                             policy.engine.collective_rpc("rlaif_join", args=("127.0.0.1", port, 1, 2, 30)))
        turn = await _greedy(policy)
        learner.step([Sample(turn.prompt_ids, turn.completion_ids, turn.logprobs, turn.loss_mask, advantage=1.0)])
        plans, expected = learner.weight_plan(bucket_mb=BUCKET_MB)
        assert len(plans) >= 3
        sent, [result] = await asyncio.gather(asyncio.to_thread(learner.broadcast_weights),
                                              policy.engine.collective_rpc("rlaif_receive", args=(plans,)))
        return turn, sent, plans, expected, result, await _greedy(policy)

    before, sent, plans, expected, result, after = run(go())
    assert sent == sum(size for size, _ in plans)
    assert result["missing"] == []
    verify(expected, result["digest"])
    assert not torch.allclose(torch.tensor(before.logprobs), _logprobs(learner.model, before), atol=1e-3)
    _assert_engine_samples_like(learner.model, after)


async def _join(policy, port: int, timeout_s: float):
    """This process as rank 0 of a weight group of two, the engine's worker as rank 1."""
    from rlaif.weights.group import open_group

    group, _ = await asyncio.gather(
        asyncio.to_thread(open_group, "127.0.0.1", port, 0, 2, "cpu", timeout_s=timeout_s),
        policy.engine.collective_rpc("rlaif_join", args=("127.0.0.1", port, 1, 2, timeout_s)))
    return group


@pytest.mark.vllm
def test_a_broadcast_sync_holds_no_more_than_two_buckets_on_the_engine_while_the_model_spans_many(
        engine, tiny_model):
    """The engine loads each bucket as it arrives and frees it; the reload keeps a layer's tensors (views of their
    bucket) until the layer is complete, so at most the arriving bucket and the one before are alive, besides the
    embedding's: vLLM pads the vocabulary to a multiple of 64 (871 -> 896 rows here) and processes a layer with
    padding only when the reload ends (a 7B's 152064 is a multiple of 64: no such layer). Measured by finalizers
    on the received buffers' storages (`held_bytes`); holding every bucket until a swap would hold the model."""
    from rlaif.weights.buckets import fill, plan

    policy, run = engine
    model = _perturbed(tiny_model, seed=5)
    named = list(model.named_parameters())
    plans = plan(named, bucket_mb=0.25)
    model_bytes, sizes = sum(p.size for p in plans), [p.size for p in plans]
    assert [name for name, *_ in plans[0].index] == ["model.embed_tokens.weight"]
    assert model.config.vocab_size % 64
    two_buckets = max(a + b for a, b in itertools.pairwise(sizes[1:]))  # the largest consecutive pair after it

    async def go():
        group = await _join(policy, _free_port(), timeout_s=30)
        by_name = dict(named)
        _, [result] = await asyncio.gather(
            asyncio.to_thread(group.send, (fill(by_name, bucket) for bucket in plans)),
            policy.engine.collective_rpc("rlaif_receive", args=([(p.size, p.index) for p in plans],)))
        return result, await _greedy(policy)

    result, after = run(go())
    figures = (f"model {model_bytes} B in {len(plans)} buckets of up to {int(0.25 * (1 << 20))} B (embedding "
               f"{sizes[0]} B, largest consecutive pair after it {two_buckets} B); peak received bytes alive on the "
               f"engine {result['held_bytes']} B")
    print(figures)
    assert len(plans) >= 8, figures
    assert result["held_bytes"] <= sizes[0] + two_buckets < model_bytes / 2, figures
    assert result["missing"] == []
    verify(digest(named), result["digest"])
    _assert_engine_samples_like(model, after)


@pytest.mark.vllm
def test_a_broadcast_that_stops_mid_sync_aborts_within_the_timeout_and_the_engine_takes_the_object_store_sync(
        engine, tiny_model):
    """The sender stops after 3 of the buckets (as a learner that hangs or dies would): the engine's receive returns
    `aborted` within its bound instead of waiting for ever, the layers that were still waiting for tensors keep
    their old weights (none is left half-loaded), the engine goes on generating, and an object-store sync then
    loads the whole version."""
    from rlaif.weights.buckets import fill, plan

    policy, run = engine
    model = _perturbed(tiny_model, seed=6)
    named = list(model.named_parameters())
    plans = plan(named, bucket_mb=0.25)

    async def go():
        group = await _join(policy, _free_port(), timeout_s=2)
        by_name = dict(named)
        started = time.monotonic()
        _, [result] = await asyncio.gather(
            asyncio.to_thread(group.send, (fill(by_name, bucket) for bucket in plans[:3])),
            policy.engine.collective_rpc("rlaif_receive", args=([(p.size, p.index) for p in plans],)))
        waited = time.monotonic() - started
        between = await _greedy(policy)
        synced = await _sync(policy, pack(named, bucket_mb=BUCKET_MB))
        return result, waited, between, synced, await _greedy(policy)

    result, waited, between, synced, after = run(go())
    assert "aborted" in result and waited < 10, (result, waited)
    assert all(math.isfinite(x) for x in between.logprobs), between.logprobs
    assert synced["missing"] == []
    verify(digest(named), synced["digest"])
    _assert_engine_samples_like(model, after)


@pytest.mark.vllm
def test_the_probe_catches_a_loader_that_misplaces_weights_that_arrived_intact(engine, tiny_model):
    """The digest covers the tensors as received, so a loader that puts them in the wrong place passes it; the probe
    compares what the engine then computes with the learner. Simulated by sending permuted q rows, and two swapped
    layers, each with its own (matching) digest; then the right weights again."""
    from rlaif.cluster.fleet import max_gap
    from rlaif.train.learner import Learner

    policy, run = engine
    learner = Learner(str(tiny_model))
    learner.model.load_state_dict(_perturbed(tiny_model, seed=7, scale=0.3).state_dict())  # sharp attention
    ids, expected = learner.probe()
    right = [(n, p.detach().clone()) for n, p in learner.model.named_parameters()]
    q, first, second = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
                        "model.layers.1.mlp.down_proj.weight")
    permuted = [(n, t.flip(0) if n == q else t) for n, t in right]
    by_name = dict(right)
    swapped = [(n, by_name[second] if n == first else by_name[first] if n == second else t) for n, t in right]
    gaps = {}
    for case, named in (("right", right), ("permuted", permuted), ("swapped", swapped), ("right again", right)):
        result = run(_sync(policy, pack(named, bucket_mb=BUCKET_MB)))
        verify(digest(named), result["digest"])  # the bytes arrived as sent
        gaps[case] = max_gap(expected, run(policy.prompt_logprobs(ids)))
    print(f"probe gaps (max |engine - learner| logprob): {gaps}")
    assert len(ids) > 16
    assert gaps["right"] < 0.02 and gaps["right again"] < 0.02, gaps
    assert gaps["permuted"] > 0.2 and gaps["swapped"] > 0.2, gaps
