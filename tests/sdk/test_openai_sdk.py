"""The official OpenAI Python SDK against `tollgate serve`, unchanged but for base URL and key."""

import json
import urllib.request

import openai
import pytest

from conftest import SIM_KEY


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway["base_url"], api_key=gateway["key"], max_retries=0)


def ledger_rows(gateway, **filters):
    q = "&".join(f"{k}={v}" for k, v in filters.items())
    req = urllib.request.Request(
        f"{gateway['root']}/admin/v1/requests?limit=1000&{q}",
        headers={"Authorization": f"Bearer {gateway['master']}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)["data"]


# Every chat test runs against a model served by each provider kind: the OpenAI SDK must not
# notice whether Tollgate passes through or translates.
CHAT_MODELS = {
    "gpt-4o-mini": "sim",
    "claude-sonnet-4-6": "sim-anthropic",
    "gemini-2.5-flash": "sim-gemini",
}
chat_models = pytest.mark.parametrize("model", list(CHAT_MODELS))


@chat_models
def test_chat(client, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8
    )
    r = raw.parse()
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert raw.headers["x-tollgate-served-model"] == model
    assert raw.headers["x-tollgate-provider"] == CHAT_MODELS[model]
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0
    assert raw.headers["x-tollgate-request-id"].startswith("req_")


@chat_models
def test_stream_without_usage(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Stream please"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@chat_models
def test_stream_with_usage(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Stream with usage"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0
    assert chunks[-1].choices == []


@chat_models
def test_tools_round_trip(client, model):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C, cloudy"},
    ]
    second = client.chat.completions.create(model=model, messages=messages, tools=tools)
    assert second.choices[0].message.content
    # Streaming tool calls: argument fragments reassemble to valid JSON.
    stream = client.chat.completions.create(
        model=model, messages=messages[:1], tools=tools, stream=True
    )
    args = ""
    for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            args += tc.function.arguments or ""
    assert "city" in json.loads(args)


@chat_models
def test_json_schema(client, model):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Reply as JSON"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"],
                },
            },
        },
    )
    assert "answer" in json.loads(r.choices[0].message.content)


def test_embeddings_default_base64(client):
    # The SDK asks for base64 by default and decodes it; both forms must work.
    r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0
    r = client.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float")
    assert isinstance(r.data[0].embedding[0], float)


def test_models(client):
    ids = sorted(m.id for m in client.models.list())
    assert ids == sorted(["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-6", "gemini-2.5-flash", "cached-mini"])
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_errors(gateway, client):
    bad = openai.OpenAI(base_url=gateway["base_url"], api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert e.value.param == "messages"
    assert SIM_KEY not in str(e.value)


def test_every_call_left_a_row(gateway, client):
    rows = ledger_rows(gateway)
    assert len(rows) >= 10
    assert all(r["request_id"].startswith("req_") for r in rows)
    served = [r for r in rows if r["outcome"] == "ok" and r["endpoint"] == "/v1/chat/completions"]
    assert served and all(r["usage_source"] == "provider" for r in served)


def test_cache_hit_replays_through_the_sdk(client):
    """A cached answer, served as JSON and replayed as SSE, is what the SDK expects."""
    ask = dict(
        model="cached-mini",
        temperature=0,
        messages=[{"role": "user", "content": "say something cacheable"}],
    )
    first = client.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-tollgate-cache"] == "miss"
    answer = first.parse().choices[0].message.content
    again = client.chat.completions.with_raw_response.create(**ask)
    assert again.headers["x-tollgate-cache"] == "hit"
    assert again.headers["x-tollgate-cost-usd"] == "0"
    assert again.parse().choices[0].message.content == answer
    chunks = list(
        client.chat.completions.create(
            **ask, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
