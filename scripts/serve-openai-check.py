#!/usr/bin/env python3
"""Drives a running `gptq serve` with the official openai client and checks its answers.
The server tests (Tests/GPTQServeTests) start the server, run this, and stop it.

usage: serve-openai-check.py BASE_URL MODEL api      the API through the client, and bad input
       serve-openai-check.py BASE_URL MODEL auth KEY  the API key rules (server run with --api-key KEY)
       serve-openai-check.py BASE_URL MODEL greedy PROMPT EXPECTED MAX_TOKENS
                                                      a greedy chat reply equals EXPECTED
Exits 0 when every check passes; otherwise prints the failed check and exits 1.
"""
import json
import socket
import sys
import time
import urllib.error
import urllib.request

import openai

base, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=sys.argv[4] if mode == "auth" else "unused", max_retries=0, timeout=60)
checks = 0


def check(condition, what):
    global checks
    checks += 1
    if not condition:
        print("FAILED:", what)
        sys.exit(1)


def raw(method, path, body=None, headers=None):
    """(status, parsed JSON or None) of a request the client cannot send (bad JSON, unknown routes)."""
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def openai_error(shape):
    return isinstance(shape, dict) and isinstance(shape.get("error"), dict) and isinstance(shape["error"].get("message"), str) \
        and "type" in shape["error"]


def expect_status(status, call, what, code=None):
    try:
        call()
    except openai.APIStatusError as error:
        check(error.status_code == status, f"{what}: status {error.status_code}, expected {status}")
        check(openai_error(error.response.json()), f"{what}: OpenAI's error shape, got {error.response.text}")
        if code is not None:
            check(error.response.json()["error"]["code"] == code, f"{what}: code {error.response.json()['error']['code']}, expected {code}")
        return
    check(False, f"{what}: no error")


def api():
    models = client.models.list()
    check([m.id for m in models.data] == [model], f"models: {models}")

    messages = [{"role": "user", "content": "Hello, how are you?"}]
    greedy = dict(model=model, messages=messages, temperature=0, max_tokens=12)
    reply = client.chat.completions.create(**greedy)
    choice = reply.choices[0]
    check(reply.object == "chat.completion" and choice.message.role == "assistant", f"chat shape: {reply}")
    check(choice.finish_reason in ("stop", "length"), f"finish reason {choice.finish_reason}")
    check(reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 12, f"usage {reply.usage}")
    check(reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens, "total tokens")
    again = client.chat.completions.create(**greedy)
    check(again.choices[0].message.content == choice.message.content, "greedy replies repeat")

    # Streaming gives the same text in pieces, and the usage last.
    chunks = list(client.chat.completions.create(**greedy, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == choice.message.content, f"streamed {streamed!r} != {choice.message.content!r}")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finishes == [choice.finish_reason], f"stream finish reasons {finishes}")
    check(chunks[-1].choices == [] and chunks[-1].usage == reply.usage, f"usage chunk {chunks[-1]}")
    check(all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks), "chunk ids and objects")

    # n > 1: seeded sampling, repeatable, choices different from one another.
    sampled = dict(model=model, messages=messages, temperature=1.0, max_tokens=10, n=3, seed=7)
    first = client.chat.completions.create(**sampled)
    second = client.chat.completions.create(**sampled)
    check(sorted(c.index for c in first.choices) == [0, 1, 2], "n=3 indices")
    check([c.message.content for c in first.choices] == [c.message.content for c in second.choices], "seeded choices repeat")
    check(len({c.message.content for c in first.choices}) > 1, f"choices differ: {[c.message.content for c in first.choices]}")
    check(first.usage.completion_tokens <= 30, "n=3 usage")
    stream_n = list(client.chat.completions.create(**sampled, stream=True))
    texts = ["", "", ""]
    for c in stream_n:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    check(texts == [c.message.content for c in first.choices], f"n=3 streamed {texts}")

    # A stop string cuts the text before it and finishes with "stop".
    long_text = client.completions.create(model=model, prompt="The quick brown fox", temperature=0, max_tokens=24).choices[0].text
    visible = [i for i in range(2, len(long_text) - 2) if long_text[i:i + 2].strip() == long_text[i:i + 2]]
    check(visible, f"a stop string candidate in {long_text!r}")
    stop = long_text[visible[0]:visible[0] + 2]
    cut = client.completions.create(model=model, prompt="The quick brown fox", temperature=0, max_tokens=24, stop=[stop])
    check(cut.choices[0].text == long_text[:long_text.find(stop)], f"stop {stop!r}: {cut.choices[0].text!r} from {long_text!r}")
    check(cut.choices[0].finish_reason == "stop", "stop string finish reason")
    cut_stream = list(client.completions.create(model=model, prompt="The quick brown fox", temperature=0, max_tokens=24, stop=stop, stream=True))
    check("".join(c.choices[0].text for c in cut_stream) == cut.choices[0].text, "streamed stop string")

    # Chat logprobs: the greedy token is the most likely one.
    scored = client.chat.completions.create(**greedy, logprobs=True, top_logprobs=3)
    content = scored.choices[0].logprobs.content
    check(len(content) == scored.usage.completion_tokens - (scored.choices[0].finish_reason == "stop"), "one logprob per text token")
    for entry in content:
        check(len(entry.top_logprobs) == 3 and entry.logprob <= 0, f"top logprobs {entry}")
        check(abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-5, f"greedy token is the top one: {entry}")
        check(entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob, "top logprobs sorted")

    # Completions: text and token-id prompts agree; echo with logprobs scores the prompt.
    ids = raw("POST", "/tokenize", json.dumps({"model": model, "prompt": "The quick brown fox"}).encode())[1]["tokens"]
    by_ids = client.completions.create(model=model, prompt=ids, temperature=0, max_tokens=24)
    check(by_ids.choices[0].text == long_text, "token-id prompt equals the text prompt")
    check(raw("POST", "/detokenize", json.dumps({"tokens": ids}).encode())[1]["prompt"].endswith("The quick brown fox"), "detokenize")
    echoed = client.completions.create(model=model, prompt="The quick brown fox", temperature=0, max_tokens=4, echo=True, logprobs=2)
    lp = echoed.choices[0].logprobs
    text = echoed.choices[0].text
    check(text.startswith("The quick brown fox") and long_text.startswith(text[len("The quick brown fox"):]), f"echo text {text!r}")
    check(len(lp.tokens) == len(ids) + echoed.usage.completion_tokens - (echoed.choices[0].finish_reason == "stop"), "echo logprob count")
    check(lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:]), f"echo logprobs {lp.token_logprobs}")
    # Two alternatives each; tokens whose text is alike (lone bytes of a character) share a key.
    check(all(1 <= len(t) <= 2 and all(v <= 0 for v in t.values()) for t in lp.top_logprobs[1:]), f"echo top logprobs {lp.top_logprobs}")
    streamed_completion = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="The quick brown fox", temperature=0, max_tokens=24, stream=True))
    check(streamed_completion == long_text, "streamed completion")

    # Penalties change a greedy reply's choices without breaking anything.
    penalised = client.chat.completions.create(**greedy, presence_penalty=2.0, frequency_penalty=2.0)
    check(isinstance(penalised.choices[0].message.content, str), "penalties")

    # Bad input, each with OpenAI's error shape and status.
    status, shape = raw("POST", "/v1/chat/completions", b'{"model": "' + model.encode() + b'", "messages": [')
    check(status == 400 and openai_error(shape), f"malformed JSON: {status} {shape}")
    expect_status(400, lambda: client.chat.completions.create(model=model, messages=messages, temperature="hot"), "wrong type", "invalid_type")
    expect_status(400, lambda: client.chat.completions.create(model=model, messages="hello"), "messages not a list")
    expect_status(400, lambda: client.completions.create(model=model, prompt=[5] * 200, max_tokens=4), "prompt over the context",
                  "context_length_exceeded")
    expect_status(400, lambda: client.chat.completions.create(**greedy | {"n": 0}), "n = 0")
    expect_status(400, lambda: client.chat.completions.create(**greedy | {"max_tokens": -1}), "negative max_tokens")
    expect_status(400, lambda: client.completions.create(model=model, prompt=[100000], max_tokens=4), "token id outside the vocabulary")
    expect_status(404, lambda: client.chat.completions.create(**greedy | {"model": "no-such-model"}), "unknown model", "model_not_found")
    status, shape = raw("GET", "/v1/no-such-route")
    check(status == 404 and openai_error(shape), f"unknown route: {status} {shape}")
    status, shape = raw("POST", "/v1/completions", b'{"prompt": "' + b"a" * (2 << 20) + b'"}')
    check(status == 413 and openai_error(shape), f"body over the limit: {status}")

    # Headers and never the body: the server closes the connection (idle timeout) and serves on.
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        check(connection.recv(1024) == b"", "the silent connection is closed without an answer")
        check(time.monotonic() - started < 45, "the silent connection is closed within the idle timeout")
    check(raw("GET", "/health")[0] == 200, "health after the silent client")

    # Metrics: the work above shows, and nothing stays held.
    metrics = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[-1]) for line in metrics.splitlines() if line and not line.startswith("#")}
    check(values.get("gptq_kv_slots_in_use") == 0 and values.get("gptq_sequences_running") == 0, f"slots freed: {metrics}")
    check(values.get("gptq_generation_tokens_total", 0) > 0, "tokens counted")
    check(values.get("gptq_time_to_first_token_seconds_count", 0) > 0, "time to first token recorded")


def auth():
    key = sys.argv[4]
    check(raw("GET", "/health", headers={})[0] == 200, "/health needs no key")
    check([m.id for m in client.models.list().data] == [model], "the right key works")
    wrong = openai.OpenAI(base_url=base + "/v1", api_key="wrong-" + key, max_retries=0)
    expect_status(401, lambda: wrong.models.list(), "wrong API key", "invalid_api_key")
    expect_status(401, lambda: wrong.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]), "wrong key on chat")
    status, shape = raw("GET", "/v1/models", headers={})
    check(status == 401 and openai_error(shape), "missing API key")
    status, _ = raw("GET", "/metrics", headers={})
    check(status == 401, "metrics need the key")


def greedy():
    prompt, expected, max_tokens = sys.argv[4], sys.argv[5], int(sys.argv[6])
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens)
    check(reply.choices[0].message.content == expected, f"server {reply.choices[0].message.content!r} != gptq generate {expected!r}")
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=max_tokens, stream=True) if c.choices)
    check(streamed == expected, f"streamed {streamed!r} != {expected!r}")


{"api": api, "auth": auth, "greedy": greedy}[mode]()
print(f"ok: {checks} checks")
