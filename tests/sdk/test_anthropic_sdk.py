"""The official Anthropic Python SDK against `tollgate serve`'s `/v1/messages`, served by an
OpenAI-format deployment (translated both ways) and by an Anthropic deployment (passed through
natively)."""

import json

import anthropic
import pytest


@pytest.fixture(scope="module")
def client(gateway):
    # The SDK appends /v1/messages to the base URL.
    return anthropic.Anthropic(base_url=gateway["root"], api_key=gateway["key"], max_retries=0)


# gpt-4o-mini is served by an OpenAI-format deployment, claude-sonnet-4-6 by an Anthropic one.
models = pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-6"])

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@models
def test_plain(client, model):
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=12,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.output_tokens > 0 and m.usage.input_tokens > 0
    assert raw.headers["request-id"].startswith("req_")
    assert float(raw.headers["x-tollgate-cost-usd"]) > 0


@models
def test_streaming(client, model):
    with client.messages.stream(
        model=model, max_tokens=20, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.usage.output_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


@models
def test_tool_round_trip(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=messages)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and "city" in call.input
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=messages)
    assert second.content[0].type == "text"


@models
def test_streaming_tool_use(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather" and "city" in call.input
    assert final.stop_reason == "tool_use"


def test_errors_are_anthropic_shaped(gateway, client):
    bad = anthropic.Anthropic(base_url=gateway["root"], api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert "invalid_api_key" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
