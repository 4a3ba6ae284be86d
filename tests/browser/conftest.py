"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium): the built `tollgate` binary runs the simulated provider and the gateway
on free loopback ports with a throw-away ledger, known traffic goes through it over HTTP, and
the tests sign in and read every page. Nothing here downloads a browser or a driver: the
binaries are `/usr/bin/chromium` and `/usr/bin/chromedriver` (override with `CHROMIUM` and
`CHROMEDRIVER`)."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import BIN, ROOT, free_port, wait_ready  # noqa: E402,F401
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
MASTER = "browser-test-master-key-5f0c2a9e"
SIM_KEY = "sk-sim-browser-upstream-0123456789"
HOUR_MS = 3_600_000

# Every page of the dashboard: (path, heading).
PAGES = [
    ("/ui/", "Overview"),
    ("/ui/budgets", "Budgets"),
    ("/ui/requests", "Requests"),
    ("/ui/tenants", "Tenants"),
    ("/ui/deployments", "Deployments"),
    ("/ui/keys", "Keys"),
    ("/ui/policies", "Policies"),
    ("/ui/finance", "Finance"),
]


class Api:
    """The gateway's HTTP API: admin calls with the master key (or another credential) and
    data-plane calls with a virtual key."""

    def __init__(self, root: str):
        self.root = root

    def call(self, method, path, body=None, credential=MASTER, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.root + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {credential}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, dict(r.headers), raw
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path, credential=MASTER):
        status, _, raw = self.call("GET", path, credential=credential)
        assert status == 200, f"GET {path}: {status} {raw[:500]!r}"
        return json.loads(raw)

    def chat(self, key, body, headers=None):
        status, hdrs, raw = self.call("POST", "/v1/chat/completions", body, key, headers)
        return status, hdrs

    def all_requests(self, query=""):
        """Every ledger row matching `query`, newest first, following the API's cursor."""
        rows, cursor = [], None
        while True:
            q = f"/admin/v1/requests?limit=1000&{query}"
            if cursor:
                q += f"&cursor={cursor}"
            page = self.get(q)
            rows.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return rows


CONFIG = """
server:
  listen: 127.0.0.1:{gw_port}
  master_key: {master}
storage:
  ledger: sqlite://{tmp}/ledger.db
providers:
  sim:
    kind: openai
    base_url: http://127.0.0.1:{sim_port}/v1
    api_key: {sim_key}
  sim-anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{sim_port}
    api_key: {sim_key}
models:
  gpt-4o-mini:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
  gpt-4o:
    deployments: [{{provider: sim, model: gpt-4o}}]
  claude-sonnet-4-6:
    deployments: [{{provider: sim-anthropic, model: claude-sonnet-4-6}}]
  faq-bot:
    deployments: [{{provider: sim, model: gpt-4o-mini}}]
cache:
  models:
    faq-bot: {{ttl_secs: 600}}
budgets:
  - {{name: acme-daily, scope: {{tenant: acme}}, limit_usd: "0.01", window: day, mode: hard}}
  - {{name: org-monthly, scope: {{}}, limit_usd: "50", window: month, mode: soft}}
policies:
  - name: acme-ladder
    scope: {{tenant: acme}}
    budget: acme-daily
    mode: enforce
    steps:
      - when: {{utilization_pct: 5}}
        then: [{{downgrade: {{gpt-4o: gpt-4o-mini}}}}]
      - when: {{utilization_pct: 90}}
        then: [block]
"""


def send_traffic(api: Api) -> dict:
    """Known traffic: three keys (two single-tenant, one SaaS backend naming its tenants per
    request), chat on three models, streams, cache hits, a refusal and an unknown model."""

    def key(body):
        status, _, raw = api.call("POST", "/admin/v1/keys", body)
        assert status == 201, raw
        return json.loads(raw)["key"]

    acme = key({"name": "acme-backend", "tenant": "acme", "team": "platform"})
    globex = key({"name": "globex-app", "tenant": "globex", "team": "growth"})
    saas = key({"name": "saas-backend", "allow_tenant_header": True,
                "allowed_tenants": ["initech", "umbrella"]})
    sent = 0
    for i in range(24):
        k, headers = [(acme, {}), (globex, {}),
                      (saas, {"x-tollgate-tenant": "initech" if i % 2 else "umbrella"})][i % 3]
        headers["x-tollgate-feature"] = ["search", "summarize", "chat"][i % 3]
        model = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6", "faq-bot"][i % 4]
        body = {"model": model, "stream": i % 5 == 0,
                "messages": [{"role": "user", "content": f"Question {i % 6} about the plan"}]}
        if model == "faq-bot":
            body["temperature"] = 0
            body["messages"][0]["content"] = f"FAQ {i % 2}"
        status, _ = api.chat(k, body, headers)
        sent += 1
        assert status in (200, 429), status
    # An unknown model and a bad key: rows too.
    assert api.chat(acme, {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})[0] == 404
    assert api.chat("tg-not-a-key", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})[0] == 401
    sent += 2
    return {"acme": acme, "globex": globex, "saas": saas, "sent": sent}


@pytest.fixture(scope="session")
def gateway():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: run `cargo build -p tollgate` first (or set TOLLGATE_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-browser-"))
    sim_port, gw_port = free_port(), free_port()
    procs = []
    sim = subprocess.Popen(
        [str(BIN), "mock-provider", "--listen", f"127.0.0.1:{sim_port}", "--api-key", SIM_KEY,
         "--ttft-ms", "5"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "sim.log", "w"),
    )
    procs.append(sim)
    config = tmp / "tollgate.yaml"
    config.write_text(CONFIG.format(gw_port=gw_port, sim_port=sim_port, master=MASTER,
                                    sim_key=SIM_KEY, tmp=tmp))
    gw = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "gateway.log", "w"),
    )
    procs.append(gw)
    try:
        wait_ready(f"http://127.0.0.1:{sim_port}/_sim/stats")
        wait_ready(f"http://127.0.0.1:{gw_port}/readyz")
        root = f"http://127.0.0.1:{gw_port}"
        api = Api(root)
        traffic = send_traffic(api)
        now = int(time.time() * 1000)
        to = (now // HOUR_MS + 1) * HOUR_MS
        yield {
            "root": root,
            "api": api,
            "traffic": traffic,
            "tmp": tmp,
            # A fixed range covering all the traffic, for page/API comparisons.
            "range": {"from": str(to - 24 * HOUR_MS), "to": str(to)},
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


def make_driver(width=1280, height=900):
    o = Options()
    o.binary_location = CHROMIUM
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--metrics-recording-only",
        # Nothing resolves but loopback: an external request could not leave even if a page
        # made one (and the performance log would still show it, failing the test).
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='tollgate-chromium-')}",
    ]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


class Browser:
    """One Chromium with helpers: sign in, open a page and check it, read figures."""

    def __init__(self, root: str, width=1280):
        self.root = root
        self.width = width
        self.d = make_driver(width)
        self.requested = []
        if width < 600:
            # A phone: its viewport, with the page's meta viewport honoured.
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True})

    def sign_in(self, credential):
        self.d.get(self.root + "/ui/login")
        self.d.find_element(By.ID, "credential").send_keys(credential)
        self.click(self.d.find_element(By.ID, "sign-in"))

    def click(self, element):
        """Clicks a link or a submit button and waits until the next page has replaced this
        one (a click returns before the navigation it starts has finished)."""
        old = self.d.find_element(By.TAG_NAME, "html")
        element.click()
        self.replaced(old)

    def replaced(self, old):
        """Waits until the page whose `<html>` element was `old` has been replaced and the
        new one has loaded."""
        def gone(_):
            # Mid-navigation ChromeDriver may answer "node does not belong to the document"
            # rather than "stale element": either means the old page is gone.
            try:
                old.is_enabled()
                return False
            except WebDriverException:
                return True

        def loaded(d):
            try:
                return d.execute_script("return document.readyState") == "complete"
            except WebDriverException:
                return False

        WebDriverWait(self.d, 20).until(gone)
        WebDriverWait(self.d, 20).until(loaded)

    def open(self, path):
        self.d.get(self.root + path)
        return self.d

    def fig(self, name, within=None):
        scope = within if within is not None else self.d
        return scope.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text

    def console(self):
        """Console entries since the last call (Chromium's buffer empties as it is read)."""
        return self.d.get_log("browser")

    def network(self):
        """Every URL the pages requested since the last call (from the performance log)."""
        urls = []
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
        self.requested.extend(urls)
        return urls

    def screenshot(self, name):
        """The whole page (not just the viewport) as `screenshots/<name>-<width>.png`."""
        SCREENSHOTS.mkdir(exist_ok=True)
        size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": max(size["width"], self.width),
                     "height": min(size["height"], 8000), "scale": 1},
        })
        path = SCREENSHOTS / f"{name}-{self.width}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def quit(self):
        self.d.quit()


@pytest.fixture
def browser(gateway):
    b = Browser(gateway["root"])
    yield b
    b.quit()


@pytest.fixture
def phone(gateway):
    b = Browser(gateway["root"], width=390)
    yield b
    b.quit()
