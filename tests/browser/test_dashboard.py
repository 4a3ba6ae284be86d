"""The dashboard in headless Chromium against a gateway that served known traffic: every
page renders without a console error and without a request leaving loopback (screenshots in
`tests/browser/screenshots/`), the figures shown equal the admin API's, the request log
filters and pages, an admin creates and revokes a key, a viewer cannot, and the pages fit a
phone's width."""

import json
import re
import urllib.parse
from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import MASTER, PAGES, Browser


def usd(v):
    return "—" if v is None else f"${v}"


def pct(v):
    return "—" if v is None else f"{v * 100:.1f}%"


def ms(v):
    return "—" if v is None else f"{v:.1f} ms"


def money(text):
    return Decimal(text.lstrip("$"))


def qs(**params):
    return "?" + urllib.parse.urlencode(params)


def assert_clean(b: Browser, allow_status=None):
    """No console errors and no request outside the gateway's origin since the last check.
    `allow_status`: an error page's own status, which Chromium reports in the console as
    'Failed to load resource: … status of N'."""
    errors = [
        e for e in b.console()
        if e["level"] == "SEVERE"
        and not (allow_status and f"status of {allow_status}" in e["message"])
    ]
    assert not errors, errors
    outside = [u for u in b.network() if leaves_the_gateway(b, u)]
    assert not outside, outside


def leaves_the_gateway(b: Browser, url: str) -> bool:
    """A URL a page asked for that is not the gateway's own. Chromium's internal pages (its
    start page's `chrome://` resources) and inline `data:` URLs never touch the network."""
    if url.startswith(("data:", "about:", "chrome://", "chrome-untrusted://", "devtools://")):
        return False
    return not url.startswith(b.root + "/")


def test_every_page_renders_cleanly_and_is_screenshotted(gateway, browser):
    browser.sign_in(MASTER)
    assert browser.d.current_url == gateway["root"] + "/ui/"
    assert browser.d.find_element(By.ID, "role").text == "admin"
    assert_clean(browser)
    for path, heading in PAGES:
        d = browser.open(path)
        assert d.find_element(By.TAG_NAME, "h1").text == heading, path
        assert "Tollgate" in d.title
        assert not d.find_elements(By.CSS_SELECTOR, ".msg.error"), path
        assert_clean(browser)
        browser.screenshot(heading.lower())
    # One request's page, reached from the log: a served request of the tenant whose policy
    # downgraded it.
    browser.open("/ui/requests?tenant=acme&outcome=ok")
    browser.click(browser.d.find_element(By.CSS_SELECTOR, "#requests a[href^='/ui/requests/req_']"))
    assert browser.d.find_element(By.TAG_NAME, "h1").text.startswith("Request req_")
    assert_clean(browser)
    browser.screenshot("request")
    # The sign-in page too (signed out).
    browser.click(browser.d.find_element(By.ID, "sign-out"))
    assert browser.d.current_url == gateway["root"] + "/ui/login"
    assert_clean(browser)
    browser.screenshot("sign-in")
    # Everything the pages loaded came from the gateway itself.
    page_loads = [u for u in browser.requested if u.startswith("http")]
    assert len(page_loads) >= len(PAGES) and not [u for u in browser.requested
                                                    if leaves_the_gateway(browser, u)]


def test_overview_figures_equal_the_stats_api(gateway, browser):
    api, r = gateway["api"], gateway["range"]
    browser.sign_in(MASTER)
    before = api.get("/admin/v1/stats" + qs(**r))
    browser.open("/ui/" + qs(**r))
    after = api.get("/admin/v1/stats" + qs(**r))
    assert before["requests"] == gateway["traffic"]["sent"]
    assert browser.fig("requests") == str(before["requests"])
    assert browser.fig("error_rate") == pct(before["error_rate"])
    assert browser.fig("latency_p50") == ms(before["latency_ms"]["p50"])
    assert browser.fig("latency_p95") == ms(before["latency_ms"]["p95"])
    assert browser.fig("ttft_p50") == ms(before["ttft_ms"]["p50"])
    assert browser.fig("ttft_p95") == ms(before["ttft_ms"]["p95"])
    assert browser.fig("cache_hit_rate") == pct(before["cache"]["hit_rate"])
    assert before["cache"]["hits"] == 3
    assert browser.fig("cache_saved") == usd(before["cache"]["saved_usd"])
    assert browser.fig("cost") == usd(before["cost_usd"])
    assert browser.fig("day") == usd(before["current"]["day_usd"])
    assert browser.fig("month") == usd(before["current"]["month_usd"])
    # The month's forecast moves with the clock: the page's lies between the two API reads.
    f = money(browser.fig("forecast"))
    assert money(before["current"]["month_forecast_usd"]) >= f >= money(after["current"]["month_forecast_usd"])
    # The chart's total and each tenant's bar total are the spend report's.
    spend = api.get("/admin/v1/spend" + qs(group_by="tenant", **r))
    caption = browser.d.find_element(By.CSS_SELECTOR, "#spend-chart figcaption").text
    assert caption.endswith(f"total ${spend['total']['cost_usd']}")
    legend = browser.d.find_element(By.CSS_SELECTOR, "#spend-chart .legend").text
    for line in spend["data"]:
        assert f"{line['tenant']}: ${line['cost_usd']}" in legend
    # The stack switch.
    browser.click(browser.d.find_element(By.ID, "by-model"))
    legend = browser.d.find_element(By.CSS_SELECTOR, "#spend-chart .legend").text
    for line in api.get("/admin/v1/spend" + qs(group_by="model", **r))["data"]:
        assert f"{line['model']}: ${line['cost_usd']}" in legend
    assert_clean(browser)


def test_budgets_figures_equal_the_budget_api(gateway, browser):
    api = gateway["api"]
    browser.sign_in(MASTER)
    names = [b["name"] for b in api.get("/admin/v1/budgets")["data"]]
    assert names == ["acme-daily", "org-monthly"]
    before = {n: api.get(f"/admin/v1/budgets/{n}") for n in names}
    browser.open("/ui/budgets")
    after = {n: api.get(f"/admin/v1/budgets/{n}") for n in names}
    for n in names:
        section = browser.d.find_element(By.CSS_SELECTOR, f'[data-budget="{n}"]')
        for fig in ["limit", "spent", "reserved", "remaining"]:
            assert browser.fig(fig, section) == usd(before[n][fig]), (n, fig)
        assert browser.fig("utilization", section) == before[n]["utilization_pct"] + "%"
        f = money(browser.fig("forecast", section))
        assert money(before[n]["forecast_at_window_end"]) >= f >= money(after[n]["forecast_at_window_end"])
    # The ladder beside acme-daily, at the level the API reports, with its decisions.
    policy = api.get("/admin/v1/policies/acme-ladder")
    acme = browser.d.find_element(By.CSS_SELECTOR, '[data-budget="acme-daily"]')
    assert browser.fig("level", acme) == str(policy["state"]["level"])
    assert policy["state"]["level"] >= 1, policy
    decisions = api.get("/admin/v1/policies/decisions?policy=acme-ladder&limit=5")["data"]
    rows = acme.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == len(decisions) >= 1
    assert decisions[0]["reason"] in rows[0].text
    assert_clean(browser)


def test_tenants_deployments_policies_and_finance_equal_the_api(gateway, browser):
    api, r = gateway["api"], gateway["range"]
    browser.sign_in(MASTER)
    browser.open("/ui/tenants" + qs(**r))
    for line in api.get("/admin/v1/spend" + qs(group_by="tenant", **r))["data"]:
        row = browser.d.find_element(
            By.XPATH, f'//a[@data-tenant="{line["tenant"]}"]/ancestor::tr')
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == str(line["requests"]) and cells[2] == usd(line["cost_usd"]), cells
    top = api.get("/admin/v1/spend" + qs(group_by="tenant,model", tenant="acme", **r))["data"][0]
    acme = browser.d.find_element(By.XPATH, '//a[@data-tenant="acme"]/ancestor::tr')
    assert f"{top['model']} {usd(top['cost_usd'])}" in acme.text
    assert "acme-daily" in acme.text
    assert_clean(browser)

    deployments = api.get("/admin/v1/deployments")["data"]
    browser.open("/ui/deployments")
    rows = browser.d.find_elements(By.CSS_SELECTOR, "#deployments tbody tr")
    assert len(rows) == len(deployments)
    for row, d in zip(rows, deployments):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        h = d["health"]
        assert cells[0] == d["model"]
        assert cells[5].startswith(h["state"].replace("_", "-"))
        assert cells[6] == str(h["in_flight"])
        assert cells[7] == ms(h["ewma_ttft_ms"]) and cells[8] == ms(h["ewma_latency_ms"])
        assert cells[9] == str(h["requests"]) and cells[10] == str(h["failures"])
    assert_clean(browser)

    decisions = api.get("/admin/v1/policies/decisions?limit=50")["data"]
    browser.open("/ui/policies")
    rows = browser.d.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")
    assert len(rows) == len(decisions) >= 1
    for row, e in zip(rows, decisions):
        assert e["reason"] in row.text and e["policy"] in row.text
    assert_clean(browser)

    browser.open("/ui/finance" + qs(**r))
    showback = api.get("/admin/v1/showback" + qs(**r))
    assert browser.fig("showback-total") == usd(showback["total"]["total_usd"])
    assert browser.fig("ledger-total") == usd(showback["ledger_total_usd"])
    margins = api.get("/admin/v1/margins" + qs(**r))
    rows = browser.d.find_elements(By.CSS_SELECTOR, "#margins tbody tr")
    assert len(rows) == len(margins["data"]) + 1
    links = [a.get_attribute("href") for a in browser.d.find_elements(By.CSS_SELECTOR, ".downloads a")]
    assert len(links) == 4 and all(l.startswith(gateway["root"] + "/ui/finance/focus?") for l in links)
    assert_clean(browser)


def ids_on_page(b: Browser):
    return [a.get_attribute("href").rsplit("/", 1)[1]
            for a in b.d.find_elements(By.CSS_SELECTOR, "#requests a[href*='/ui/requests/req_']")]


def test_request_log_filters_and_pages_like_the_api(gateway, browser):
    api = gateway["api"]
    browser.sign_in(MASTER)
    browser.open("/ui/requests")
    assert ids_on_page(browser) == [r["request_id"] for r in api.get("/admin/v1/requests?limit=50")["data"]]
    # Filter with the form: tenant and outcome.
    form = browser.d.find_element(By.ID, "filters")
    form.find_element(By.NAME, "tenant").send_keys("acme")
    Select(form.find_element(By.NAME, "outcome")).select_by_value("ok")
    browser.click(browser.d.find_element(By.ID, "apply-filters"))
    assert "tenant=acme" in browser.d.current_url and "outcome=ok" in browser.d.current_url
    want = [r["request_id"] for r in api.all_requests("tenant=acme&outcome=ok")]
    assert want and ids_on_page(browser) == want
    # The cache filter.
    browser.open("/ui/requests?cache_status=hit")
    hits = [r["request_id"] for r in api.all_requests("cache_status=hit")]
    assert len(hits) == 3 and ids_on_page(browser) == hits
    # Keyset pages of five: following "Older" visits every row once, newest first.
    browser.open("/ui/requests?limit=5")
    seen = ids_on_page(browser)
    while browser.d.find_elements(By.ID, "next-page"):
        browser.click(browser.d.find_element(By.ID, "next-page"))
        seen += ids_on_page(browser)
    assert seen == [r["request_id"] for r in api.all_requests()]
    assert len(seen) > 5
    browser.click(browser.d.find_element(By.ID, "first-page"))
    assert len(ids_on_page(browser)) == 5
    assert_clean(browser)
    # A bad filter is a message on the page (a 400), not a broken page.
    browser.open("/ui/requests?outcome=bogus")
    err = browser.d.find_element(By.CSS_SELECTOR, ".msg.error").text
    assert "'outcome' must be ok, rejected, failed or cancelled" in err
    browser.open("/ui/?from=yesterday")
    assert "'from' must be" in browser.d.find_element(By.CSS_SELECTOR, ".msg.error").text
    assert_clean(browser, allow_status=400)


def test_one_request_page_shows_its_ledger_row(gateway, browser):
    api = gateway["api"]
    row = next(r for r in api.all_requests("outcome=ok") if r["attempts"] >= 1)
    assert api.get(f"/admin/v1/requests/{row['request_id']}") == row
    browser.sign_in(MASTER)
    browser.open(f"/ui/requests/{row['request_id']}")

    def field(name):
        return browser.d.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text

    for name in ["tenant", "feature", "requested_model", "served_model", "provider", "deployment",
                 "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
                 "attempts", "usage_source", "price_version"]:
        want = row[name]
        assert field(name) == ("—" if want is None else str(want)), name
    for name in ["list_cost", "effective_cost", "saved_cost"]:
        assert field(name) == usd(row[name]), name
    us = row["latency_us"]
    assert field("latency_us") == f"{us // 1000}.{us % 1000:03d} ms"
    assert row["attempted"].split(",")[0] in field("attempted")
    assert_clean(browser)


def test_an_admin_creates_and_revokes_a_key(gateway, browser):
    api = gateway["api"]
    browser.sign_in(MASTER)
    browser.open("/ui/keys")
    form = browser.d.find_element(By.ID, "create-key")
    form.find_element(By.NAME, "name").send_keys("made-in-the-browser")
    form.find_element(By.NAME, "tenant").send_keys("acme")
    browser.click(browser.d.find_element(By.ID, "create-key-submit"))
    key = browser.d.find_element(By.ID, "new-key").text
    assert key.startswith("tg-")
    browser.screenshot("key-created")
    message = browser.d.find_element(By.CSS_SELECTOR, ".msg.secret").text
    key_id = re.search(r"id (key_[0-9a-f]+)", message).group(1)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    assert api.chat(key, body)[0] == 200
    listed = [k for k in api.get("/admin/v1/keys")["data"] if k["id"] == key_id]
    assert listed and listed[0]["name"] == "made-in-the-browser" and listed[0]["tenant"] == "acme"
    # Shown once: reloading the list does not show it again.
    browser.open("/ui/keys")
    assert key not in browser.d.page_source
    browser.click(browser.d.find_element(By.CSS_SELECTOR, f'button[data-revoke="{key_id}"]'))
    assert browser.d.current_url.endswith(f"/ui/keys?revoked={key_id}")
    assert "revoked" in browser.d.find_element(By.CSS_SELECTOR, ".msg.notice").text
    assert api.chat(key, body)[0] == 401
    audit = api.get("/admin/v1/audit")["data"]
    actions = {(e["action"], e["resource_id"], e["actor"]["kind"]) for e in audit}
    assert ("key.create", key_id, "master") in actions and ("key.revoke", key_id, "master") in actions
    assert_clean(browser)


def test_a_viewer_reads_everything_and_changes_nothing(gateway, browser):
    api = gateway["api"]
    status, _, raw = api.call("POST", "/admin/v1/tokens", {"name": "browser-viewer", "role": "viewer"})
    assert status == 201
    viewer = json.loads(raw)["token"]
    browser.sign_in(viewer)
    assert browser.d.find_element(By.ID, "role").text == "viewer"
    for path, heading in PAGES:
        browser.open(path)
        assert browser.d.find_element(By.TAG_NAME, "h1").text == heading
    assert_clean(browser)
    browser.open("/ui/keys")
    assert not browser.d.find_elements(By.ID, "create-key")
    assert not browser.d.find_elements(By.CSS_SELECTOR, "button[data-revoke]")
    browser.screenshot("keys-viewer")
    keys_before = api.get("/admin/v1/keys?include_revoked=true")["data"]
    victim = keys_before[0]["id"]
    # A hand-made form with the session's own CSRF token is still refused: 403 in the page.
    for action in ["/ui/keys", f"/ui/keys/{victim}/revoke"]:
        browser.open("/ui/keys")
        old = browser.d.find_element(By.TAG_NAME, "html")
        browser.d.execute_script(
            """const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
               for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value],
                                     ['name', 'viewer-made']]) {
                 const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
               document.body.appendChild(f); f.submit();""",
            action,
        )
        browser.replaced(old)
        assert browser.d.find_element(By.TAG_NAME, "h1").text == "Not allowed"
        assert "a viewer may read but not change anything" in browser.d.find_element(
            By.CSS_SELECTOR, ".msg.error").text
    assert_clean(browser, allow_status=403)
    assert api.get("/admin/v1/keys?include_revoked=true")["data"] == keys_before
    # And in the API.
    status, _, raw = api.call("POST", "/admin/v1/keys", {"name": "viewer-made"}, credential=viewer)
    assert status == 403 and json.loads(raw)["error"]["code"] == "permission_denied"
    status, _, _ = api.call("DELETE", f"/admin/v1/keys/{victim}", credential=viewer)
    assert status == 403


def test_a_wrong_credential_is_told_so(gateway, browser):
    browser.sign_in("not-the-master-key")
    assert browser.d.current_url == gateway["root"] + "/ui/login"
    err = browser.d.find_element(By.CSS_SELECTOR, ".msg.error").text
    assert "Wrong credential" in err
    # The console check sees what Chromium logs: the refused sign-in's 401 is there (so a
    # clean console elsewhere means something), and nothing else is.
    logs = [e for e in browser.console() if e["level"] == "SEVERE"]
    assert any("status of 401" in e["message"] for e in logs), logs
    assert all("status of 401" in e["message"] for e in logs), logs
    # Not signed in: pages send the browser to the sign-in form.
    browser.open("/ui/budgets")
    assert browser.d.current_url == gateway["root"] + "/ui/login?next=%2Fui%2Fbudgets"


def test_every_page_fits_a_phone(gateway, phone):
    phone.sign_in(MASTER)
    for path, heading in PAGES:
        phone.open(path)
        overflow = phone.d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
        phone.screenshot(heading.lower())
    assert_clean(phone)
