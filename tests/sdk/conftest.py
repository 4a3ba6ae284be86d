"""Fixtures that run the real `tollgate` binary: the simulated provider and the gateway, on
free loopback ports, with a throw-away ledger. The official SDKs then talk to it over HTTP."""

import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import BIN, ROOT, free_port, wait_ready  # noqa: E402,F401

MASTER = "sdk-test-master-key-0123456789"
SIM_KEY = "sk-sim-upstream-secret-0123456789"


@pytest.fixture(scope="session")
def gateway():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: run `cargo build -p tollgate` first (or set TOLLGATE_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-sdk-"))
    sim_port, gw_port = free_port(), free_port()
    procs = []
    sim = subprocess.Popen(
        [str(BIN), "mock-provider", "--listen", f"127.0.0.1:{sim_port}", "--api-key", SIM_KEY],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "sim.log", "w"),
    )
    procs.append(sim)
    config = tmp / "tollgate.yaml"
    config.write_text(
        f"""
server:
  listen: 127.0.0.1:{gw_port}
  master_key: {MASTER}
storage:
  ledger: sqlite://{tmp}/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
    api_key: {SIM_KEY}
  sim-anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{sim_port}
    api_key: {SIM_KEY}
  sim-gemini:
    kind: gemini
    base_url: http://127.0.0.1:{sim_port}
    api_key: {SIM_KEY}
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
  gpt-4o:
    deployments: [{{provider: sim, model: gpt-4o}}]
  text-embedding-3-small:
    deployments: [{{provider: sim, model: text-embedding-3-small}}]
  claude-sonnet-4-6:
    deployments: [{{provider: sim-anthropic, model: claude-sonnet-4-6}}]
  gemini-2.5-flash:
    deployments: [{{provider: sim-gemini, model: gemini-2.5-flash}}]
  cached-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
cache:
  models:
    cached-mini: {{ttl_secs: 600}}
"""
    )
    key = subprocess.run(
        [str(BIN), "keys", "create", "--name", "sdk", "--tenant", "acme", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    gw = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "gateway.log", "w"),
    )
    procs.append(gw)
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/v1/models".replace("/v1/models", "/_sim/stats"))
        wait_ready(f"http://127.0.0.1:{gw_port}/readyz")
        yield {
            "base_url": f"http://127.0.0.1:{gw_port}/v1",
            "root": f"http://127.0.0.1:{gw_port}",
            "key": key,
            "master": MASTER,
            "tmp": tmp,
        }
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        assert gw.returncode == 0, (tmp / "gateway.log").read_text()
