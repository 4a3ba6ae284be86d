"""OpenTelemetry export read by an independent implementation: a gateway with `telemetry` on
sends to an OTLP/HTTP receiver built on the OpenTelemetry project's own Python protobuf
bindings (PyPI `opentelemetry-proto`), while the official OpenAI SDK makes the calls."""

import gzip
import http.server
import subprocess
import tempfile
import threading
from pathlib import Path

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import BIN, SIM_KEY, free_port, wait_ready

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver(http.server.BaseHTTPRequestHandler):
    traces: list = []
    metrics: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.headers["content-type"] == "application/x-protobuf"
        if self.path == "/v1/traces":
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            Receiver.traces.append(req)
            resp = trace_service_pb2.ExportTraceServiceResponse()
        else:
            req = metrics_service_pb2.ExportMetricsServiceRequest()
            req.ParseFromString(body)
            Receiver.metrics.append(req)
            resp = metrics_service_pb2.ExportMetricsServiceResponse()
        out = resp.SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def attrs(span):
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


@pytest.fixture(scope="module")
def traced():
    otlp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-otlp-"))
    sim_port, gw_port = free_port(), free_port()
    sim = subprocess.Popen(
        [str(BIN), "mock-provider", "--listen", f"127.0.0.1:{sim_port}", "--api-key", SIM_KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp / "tollgate.yaml"
    config.write_text(f"""
server:
  listen: 127.0.0.1:{gw_port}
storage:
  ledger: sqlite://{tmp}/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
    api_key: {SIM_KEY}
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
telemetry:
  endpoint: http://127.0.0.1:{otlp.server_address[1]}
  service_name: tollgate-sdk-test
  metrics_interval_secs: 1
""")
    key = subprocess.run(
        [str(BIN), "keys", "create", "--name", "otlp", "--tenant", "acme", "--config", str(config)],
        check=True, capture_output=True, text=True).stdout.strip()
    gw = subprocess.Popen([str(BIN), "serve", "--config", str(config)],
                          stdout=subprocess.DEVNULL, stderr=open(tmp / "gateway.log", "w"))
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/_sim/stats")
        wait_ready(f"http://127.0.0.1:{gw_port}/readyz")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key=key, max_retries=0)
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        done = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "trace me"}],
            extra_headers=headers)
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True,
            stream_options={"include_usage": True}, extra_headers=headers)
        chunks = list(stream)
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        sim.terminate()
        sim.wait(timeout=30)
        otlp.shutdown()
    assert gw.returncode == 0, (tmp / "gateway.log").read_text()
    spans = [s for r in Receiver.traces for rs in r.resource_spans for ss in rs.scope_spans
             for s in ss.spans]
    return {"spans": spans, "traces": Receiver.traces, "metrics": Receiver.metrics,
            "done": done, "usage": chunks[-1].usage}


def test_server_spans_continue_the_client_trace_with_genai_attributes(traced):
    servers = [s for s in traced["spans"] if s.kind == s.SPAN_KIND_SERVER]
    assert len(servers) == 2
    for s in servers:
        assert s.name == "chat gpt-4o-mini"
        assert s.trace_id.hex() == CLIENT_TRACE
        assert s.parent_span_id.hex() == CLIENT_SPAN
        a = attrs(s)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini"
        assert a["http.response.status_code"] == 200
        assert a["tollgate.tenant"] == "acme"
        assert a["tollgate.key_id"].startswith("key_")
        assert s.end_time_unix_nano > s.start_time_unix_nano
    by_id = {attrs(s)["tollgate.request_id"]: s for s in servers}
    assert len(by_id) == 2
    usage = traced["done"].usage
    complete = [s for s in servers if not attrs(s)["tollgate.stream"]][0]
    assert attrs(complete)["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs(complete)["gen_ai.usage.output_tokens"] == usage.completion_tokens
    streamed = [s for s in servers if attrs(s)["tollgate.stream"]][0]
    assert attrs(streamed)["gen_ai.usage.output_tokens"] == traced["usage"].completion_tokens
    resource = {kv.key: kv.value.string_value
                for kv in traced["traces"][0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "tollgate-sdk-test"


def test_each_upstream_attempt_is_a_client_child_span(traced):
    servers = {s.span_id: s for s in traced["spans"] if s.kind == s.SPAN_KIND_SERVER}
    clients = [s for s in traced["spans"] if s.kind == s.SPAN_KIND_CLIENT]
    assert len(clients) == 2
    for c in clients:
        parent = servers[c.parent_span_id]
        assert c.trace_id == parent.trace_id
        assert parent.start_time_unix_nano <= c.start_time_unix_nano
        assert c.end_time_unix_nano <= parent.end_time_unix_nano
        assert attrs(c)["tollgate.deployment"] == "sim/gpt-4o-mini"
        assert c.name == "chat gpt-4o-mini"


def test_genai_metrics_parse_with_the_spec_buckets(traced):
    last = traced["metrics"][-1]
    metrics = {m.name: m for m in last.resource_metrics[0].scope_metrics[0].metrics}
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    points = usage.histogram.data_points
    types = {kv.value.string_value for p in points for kv in p.attributes
             if kv.key == "gen_ai.token.type"}
    assert types == {"input", "output"}
    assert list(points[0].explicit_bounds)[:3] == [1.0, 4.0, 16.0]
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"].histogram.data_points) == 2
    assert metrics["gen_ai.server.time_to_first_token"].histogram.data_points[0].count == 1
    assert metrics["tollgate.cost"].sum.is_monotonic
    for m in metrics.values():
        text = str(m)
        assert "tollgate.tenant" not in text and "key_id" not in text
