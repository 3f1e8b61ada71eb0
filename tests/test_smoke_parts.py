"""Each real part works on this machine: vLLM generates from the tiny model, Ray runs an actor on
loopback, Docker runs a hardened container from the locally built image."""

import pytest


@pytest.mark.vllm
def test_vllm_generates_with_exact_token_logprobs(vllm_engine):
    from vllm import SamplingParams

    outs = vllm_engine.generate(["def add(a, b):"] * 2, SamplingParams(n=2, max_tokens=8, logprobs=0, seed=1))
    completions = [c for o in outs for c in o.outputs]
    assert len(completions) == 4
    tokenizer = vllm_engine.get_tokenizer()
    for c in completions:
        assert 0 < len(c.token_ids) <= 8
        assert len(c.logprobs) == len(c.token_ids)
        sampled = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids, strict=False)]
        assert all(lp < 0 for lp in sampled)
        # vLLM holds back a trailing incomplete UTF-8 sequence; the tokens are the record, the text a view.
        assert tokenizer.decode(c.token_ids, skip_special_tokens=True).startswith(c.text)


@pytest.mark.vllm
def test_vllm_renders_the_chat_template_with_tools(vllm_engine):
    from vllm import SamplingParams

    from rlaif.models.modeldir import TOOL_PROBE, TOOL_SPEC

    outs = vllm_engine.chat(TOOL_PROBE, SamplingParams(max_tokens=4), tools=TOOL_SPEC)
    prompt = vllm_engine.get_tokenizer().decode(outs[0].prompt_token_ids)
    assert "<tool_response>\na.py\n</tool_response>" in prompt and prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.ray
def test_ray_runs_an_actor_on_loopback(ray_local):
    ray = ray_local

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k: int) -> int:
            self.n += k
            return self.n

    counter = Counter.remote()
    assert ray.get([counter.add.remote(i) for i in range(1, 5)])[-1] == 10
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}


@pytest.mark.docker
def test_docker_runs_a_networkless_container_from_the_local_image(docker_engine, base_image):
    container = docker_engine.containers.run(
        base_image, ["sh", "-c", "python3 -c 'print(6 * 7)'; ls /sys/class/net; id -u"],
        network_mode="none", user="1000", labels={"rlaif": "1", "rlaif.test": "smoke"}, detach=True,
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        lines = container.logs().decode().split()
        assert lines == ["42", "lo", "1000"], "python runs, loopback is the only interface, user is not root"
    finally:
        container.remove(force=True)
    assert not docker_engine.containers.list(all=True, filters={"label": "rlaif.test=smoke"})
