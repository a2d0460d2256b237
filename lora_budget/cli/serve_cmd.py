"""``lora-budget serve``: the planner as a local web page (standard library only).

``GET /`` serves the page (``lora_budget/web/``); ``GET /api/plan?model=7b&seq-len=2048&...``
answers with exactly ``plan --json``'s text, because it runs the ``plan`` command itself with the
query turned into its flags: the same option parsing, the same one-line errors, the same JSON
(``PlanResult.to_dict``). ``POST /api/plan`` takes a pasted ``config.json`` as the body, planned as
``--model <that file>``. Query keys are ``plan``'s flag names without the dashes; a flag without a
value (``grad-ckpt``) is on when given as ``1``/``true``. Bad input is HTTP 400 ``{"error": "..."}``
with the CLI's message; anything unexpected is 500 with one line, never a stack trace.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import threading
import time
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click

from lora_budget.loads import InputFileError, parse_json

VALUE_FLAGS = (
    "model",
    "gpu",
    "method",
    "seq-len",
    "batch-size",
    "grad-accum",
    "rank",
    "targets",
    "optimizer",
    "attn",
    "dtype",
    "gpus",
    "strategy",
    "offload",
    "overhead",
    "tokens",
    "price",
)
"""Query keys passed on as ``--key value``."""
SWITCHES = ("grad-ckpt",)
"""Query keys passed on as ``--key`` (value 1/true) or ``--no-key`` (0/false)."""
STATIC = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
MAX_BODY = 1 << 20
_PLAN_LOCK = threading.Lock()
"""The plan command prints with click.echo to sys.stdout, which is redirected per call: one at a time."""


class BadRequest(Exception):
    """Bad input: answered with HTTP 400 and this one-line message."""


def plan_argv(query: list[tuple[str, str]]) -> list[str]:
    """``plan`` flags for a query string's (key, value) pairs, in order; an unknown key is bad input."""
    argv: list[str] = []
    for key, value in query:
        if key in VALUE_FLAGS:
            argv += [f"--{key}", value]
        elif key in SWITCHES:
            if value.lower() not in ("1", "true", "0", "false"):
                raise BadRequest(f"{key} must be 1 or 0, got {value!r}")
            argv.append(f"--{key}" if value.lower() in ("1", "true") else f"--no-{key}")
        else:
            raise BadRequest(f"unknown parameter {key!r}; use one of {', '.join(VALUE_FLAGS + SWITCHES)}")
    return argv


def run_plan(argv: list[str]) -> str:
    """``lora-budget plan --json`` with these flags: its output text, or BadRequest with its error line."""
    from lora_budget.cli.plan_cmd import plan_cmd

    out = io.StringIO()
    with _PLAN_LOCK, contextlib.redirect_stdout(out):
        try:
            plan_cmd.main(args=[*argv, "--json"], prog_name="lora-budget plan", standalone_mode=False)
        except click.ClickException as exc:
            raise BadRequest(exc.format_message()) from None
    return out.getvalue()


def plan_with_config(argv: list[str], config_text: str) -> str:
    """Plan a pasted config.json: written to a private temporary folder, named as --model."""
    try:
        parse_json(config_text, "the pasted config.json")  # not JSON, too deep, a huge integer
    except InputFileError as exc:
        raise BadRequest(f"the pasted config.json is not JSON this tool reads: {exc.reason}") from None
    with tempfile.TemporaryDirectory(prefix="lora-budget-serve-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(config_text, encoding="utf-8")
        try:
            return run_plan([*argv, "--model", str(path)])
        except BadRequest as exc:
            raise BadRequest(str(exc).replace(str(path), "pasted config.json")) from None


def models_json() -> str:
    """The catalog for the model picker: name, HF id, family, aliases, parameter count."""
    from lora_budget.catalog.gpus import catalog as gpu_catalog
    from lora_budget.catalog.models import catalog, resolve_model
    from lora_budget.core.params import param_count
    from lora_budget.report.style import CATEGORY_STYLE, METHOD_STYLE

    models = [
        {
            "name": e["name"],
            "hf_id": e["hf_id"],
            "family": e["family"],
            "aliases": e["aliases"],
            "param_count": param_count(resolve_model(e["name"]).shape),
        }
        for e in catalog()
    ]
    gpus = [{"name": g.name, "memory_bytes": g.memory_bytes} for g in gpu_catalog()]
    colours = {
        "categories": {k: v[0] for k, v in CATEGORY_STYLE.items()},
        "methods": {k: v[0] for k, v in METHOD_STYLE.items()},
    }
    return json.dumps({"models": models, "gpus": gpus, "colours": colours})


class Handler(BaseHTTPRequestHandler):
    server_version = "lora-budget"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, body: str | None) -> None:
        url = urlsplit(self.path)
        try:
            if url.path in STATIC and body is None:
                name, ctype = STATIC[url.path]
                self._send(200, resources.files("lora_budget.web").joinpath(name).read_text("utf-8"), ctype)
            elif url.path == "/api/models" and body is None:
                self._send(200, self.server.models)  # type: ignore[attr-defined]
            elif url.path == "/api/plan":
                argv = plan_argv(parse_qsl(url.query, keep_blank_values=True))
                self._send(200, run_plan(argv) if body is None else plan_with_config(argv, body))
            else:
                self._send(404, json.dumps({"error": f"no such page: {url.path}"}))
        except BadRequest as exc:
            self._send(400, json.dumps({"error": str(exc)}))
        except Exception as exc:  # noqa: BLE001 - the server answers one line, never a traceback
            self._send(500, json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]}))

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(None)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(400, json.dumps({"error": f"the body is over {MAX_BODY} bytes"}))
            return
        self._answer(self.rfile.read(length).decode("utf-8", errors="replace"))


def make_server(host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free port), not yet serving."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.models = models_json()  # type: ignore[attr-defined]
    return server


@click.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it to the network."
)
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
def serve_cmd(host: str, port: int, open_browser: bool) -> None:
    """The planner as a local web page: pick a model and GPU, see the breakdown live.

    \b
    Examples:
      lora-budget serve
      lora-budget serve --port 9000 --open
      curl 'http://127.0.0.1:8765/api/plan?model=8b&gpu=rtx4090&method=qlora&seq-len=4096'
    """
    start = time.perf_counter()
    try:
        server = make_server(host, port)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    url = f"http://{server.server_address[0]}:{server.server_address[1]}/"
    scope = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "the network"
    click.echo(
        f"lora-budget serve: {url} (bound to {host}, reachable from {scope}; ready in "
        f"{time.perf_counter() - start:.2f} s; Ctrl-C stops)"
    )
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
