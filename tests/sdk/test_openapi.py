"""`docs/openapi.yaml` against the code: a valid OpenAPI 3.1 document that lists exactly the
routes and methods registered in `crates/server/src/routes.rs` and exactly the error codes of
`docs/errors.md`. Static checks only: no gateway binary needed (the `gateway` fixture is not
used)."""

import re
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
ROUTES_PATH = ROOT / "crates" / "server" / "src" / "routes.rs"
ERRORS_PATH = ROOT / "docs" / "errors.md"

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(SPEC_PATH.read_text())


def call_args(src: str, open_paren: int) -> str:
    """The text between the parenthesis at `open_paren` and its matching close."""
    depth = 0
    for i in range(open_paren, len(src)):
        if src[i] == "(":
            depth += 1
        elif src[i] == ")":
            depth -= 1
            if depth == 0:
                return src[open_paren + 1 : i]
    raise AssertionError(f"unbalanced parentheses after offset {open_paren} in {ROUTES_PATH}")


def registered_routes(include_dashboard: bool = False) -> dict:
    """`{openapi path: {methods}}` from the `.route("…", get(…).post(…))` calls. The
    dashboard's HTML pages (`/ui…`) are not part of the API and are left out unless
    `include_dashboard`."""
    src = ROUTES_PATH.read_text()
    # Drop line comments so commented-out routes do not count.
    src = re.sub(r"//[^\n]*", "", src)
    routes = {}
    for m in re.finditer(r"\.route\(", src):
        args = call_args(src, m.end() - 1)
        pm = re.match(r'\s*"([^"]+)"\s*,(.*)\Z', args, re.S)
        assert pm, f"cannot parse route call: .route({args})"
        path, handlers = pm.group(1), pm.group(2)
        # A method router is `get(h)`, `post(h).get(h)`, …; `admin::get_key` or `models::get`
        # are handler names, not method calls (preceded by `::`, not followed by `(`).
        methods = {
            x.lower()
            for x in re.findall(
                r"(?<![\w:])(get|post|put|delete|patch|head|options|trace)\s*\(", handlers
            )
        }
        assert methods, f"no HTTP method found for route {path!r}: {handlers.strip()}"
        # axum `:id` / `{*rest}` → OpenAPI `{id}` / `{rest}`.
        path = re.sub(r":(\w+)", r"{\1}", path).replace("{*", "{")
        assert path not in routes, f"route {path} registered twice"
        if path.startswith("/ui") and not include_dashboard:
            continue
        routes[path] = methods
    return routes


def documented_codes() -> list:
    codes = re.findall(r"^\|\s*`([a-z_]+)`\s*\|\s*\d{3}\s*\|", ERRORS_PATH.read_text(), re.M)
    assert codes, f"no error-code table found in {ERRORS_PATH}"
    return codes


def operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def resolve(spec, obj):
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
        obj = node
    return obj


def test_spec_is_valid_openapi_31(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_route_parser_sees_the_route_table():
    routes = registered_routes()
    # Guard against a regex that silently matches nothing or too little.
    assert routes.get("/v1/chat/completions") == {"post"}
    assert routes.get("/admin/v1/keys") == {"get", "post"}
    assert routes.get("/admin/v1/keys/{id}") == {"get", "delete"}
    assert routes.get("/v1/models/{id}") == {"get"}
    # The dashboard's routes are seen, and only they are left out of the API's.
    pages = registered_routes(include_dashboard=True)
    assert pages.get("/ui/login") == {"get", "post"}
    assert pages.get("/ui/keys") == {"get", "post"}
    assert set(pages) - set(routes) == {p for p in pages if p.startswith("/ui")}
    assert not any(p.startswith("/ui") for p in routes)


def test_every_route_is_documented_with_the_same_methods(spec):
    routes = registered_routes()
    documented = {
        path: {m for m in item if m in HTTP_METHODS} for path, item in spec["paths"].items()
    }
    missing = sorted(set(routes) - set(documented))
    invented = sorted(set(documented) - set(routes))
    assert not missing, f"routes in routes.rs but not in docs/openapi.yaml: {missing}"
    assert not invented, f"paths in docs/openapi.yaml but not in routes.rs: {invented}"
    wrong = {
        path: {"routes.rs": sorted(routes[path]), "openapi": sorted(documented[path])}
        for path in routes
        if routes[path] != documented[path]
    }
    assert not wrong, f"methods differ: {wrong}"


def test_error_code_enum_matches_docs(spec):
    codes = documented_codes()
    assert len(codes) == len(set(codes)), "duplicate code in docs/errors.md"
    enum = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
        "enum"
    ]
    assert len(enum) == len(set(enum)), "duplicate code in the Error schema"
    assert set(enum) == set(codes), {
        "only in docs/errors.md": sorted(set(codes) - set(enum)),
        "only in docs/openapi.yaml": sorted(set(enum) - set(codes)),
    }


def test_error_type_enum_matches_docs(spec):
    row = r"^\|\s*`[a-z_]+`\s*\|\s*\d{3}\s*\|\s*`([a-z_]+)`\s*\|"
    types = set(re.findall(row, ERRORS_PATH.read_text(), re.M))
    assert types, f"no error-code table found in {ERRORS_PATH}"
    enum = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["type"][
        "enum"
    ]
    assert set(enum) == types


def test_every_error_response_uses_the_shared_error_schema(spec):
    error_ref = "#/components/schemas/Error"
    for path, method, op in operations(spec):
        assert op.get("operationId"), f"{method.upper()} {path} has no operationId"
        statuses = op["responses"]
        assert any(s.startswith("2") for s in statuses), f"{method.upper()} {path}: no 2xx"
        for status, resp in statuses.items():
            if status.startswith("2") or path == "/readyz":  # readyz 503 is {"status"}
                continue
            content = resolve(spec, resp)["content"]
            schema = content["application/json"]["schema"]
            # /v1/messages answers in the Anthropic error shape.
            expected = (
                "#/components/schemas/AnthropicError" if path == "/v1/messages" else error_ref
            )
            assert schema == {"$ref": expected}, f"{method.upper()} {path} {status}: {schema}"


def test_security(spec):
    schemes = spec["components"]["securitySchemes"]
    for path, method, op in operations(spec):
        names = {name for req in op.get("security", []) for name in req}
        if path.startswith("/v1/"):
            assert names == {"virtualKey", "virtualKeyHeader"}, f"{method.upper()} {path}"
            assert schemes["virtualKey"]["scheme"] == "bearer"
        elif path.startswith("/admin/v1/"):
            # The master key or an admin token, as a bearer or in x-api-key.
            assert names == {
                "masterKey",
                "masterKeyHeader",
                "adminToken",
                "adminTokenHeader",
            }, f"{method.upper()} {path}"
            assert schemes["masterKey"]["scheme"] == "bearer"
            assert schemes["adminToken"]["scheme"] == "bearer"
        elif path == "/metrics":
            # Open by default; a bearer token when `server.metrics_auth` is set.
            assert op.get("security") == [{}, {"metricsToken": []}], f"{method.upper()} {path}"
            assert schemes["metricsToken"]["scheme"] == "bearer"
        else:
            assert op.get("security") == [], f"{method.upper()} {path} should be unauthenticated"
