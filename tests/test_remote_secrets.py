"""No piece of a token reaches any output, however a careless server echoes it back.

Each server here quotes the ``Authorization`` header it received: whole or in
part, in JSON or HTML, lower-cased, far enough into its text that cutting the
text before scrubbing it would print the token's start. Every message path is
tried: HTTP errors (401/403/500), answers that are not JSON, answers without
outputs (OIP v2 and KServe v1), a custom decode() that raises, the CLI with
``PATCHLENS_HEADERS``.
"""

from __future__ import annotations

import json

import pytest
import torch

from patchlens.cli import main
from patchlens.errors import ModelError
from patchlens.models import load_model
from patchlens.models.remote import HEADERS_ENV, parse_headers
from patchlens.models.remote.secrets import FRAGMENT, Secrets
from remote_fakes import FakeServer, send

#: random letters and digits only: no dictionary word that our own messages might hold
TOKEN = "tk9f2c7e1d5b3aQ7xZw4"

PADDING = "x" * 190  # cut to put each echo across the old cuts (at 60, 80 or 200 characters)


def pieces(secret: str, size: int = FRAGMENT) -> set[str]:
    return {secret[i : i + size].lower() for i in range(len(secret) - size + 1)}


def assert_no_piece(text: str, secret: str = TOKEN) -> None:
    found = [p for p in pieces(secret) if p in text.lower()]
    assert not found, f"token pieces {found} in {text!r}"


def _meta(handler, path):
    if path.startswith("/v2/models/m") and not path.endswith(("infer", "config")):
        send(handler, 200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]})
        return True
    if path.startswith("/v1/models/m") and not path.endswith(":predict"):
        send(handler, 200, {"name": "m", "ready": True})
        return True
    return False


def echo(kind: str):
    """A server whose scoring answer quotes the Authorization header in the way ``kind`` says."""

    def respond(handler, method, path, body):
        if method == "GET" and _meta(handler, path):
            return
        if method == "GET":
            return send(handler, 404, {"error": "nothing here"})
        auth = handler.headers.get("Authorization") or ""
        if kind == "json-401":
            send(handler, 401, {"error": f"{PADDING[:175]} token {auth} is not valid"})
        elif kind == "lower-403":
            send(handler, 403, {"detail": f"{PADDING[:40]} forbidden for {auth.lower()}"})
        elif kind == "html-500":
            send(handler, 500, f"<html><body><pre>{PADDING[:150]}\nAuthorization: {auth}\n</pre></body></html>".encode())
        elif kind == "prefix-400":  # the server itself cuts the token short
            send(handler, 400, {"error": f"{PADDING[:50]} bad token {auth[:19]}..."})
        elif kind == "not-json":
            send(handler, 200, f"{PADDING[:40]}{auth.upper()}".encode())
        elif kind == "no-outputs":
            send(handler, 200, {"debug": f"{PADDING[:40]}{auth}", "note": "no outputs"})
        elif kind == "no-predictions":
            send(handler, 200, {"echo": f"{PADDING[:40]}{auth}"})

    return respond


@pytest.mark.parametrize(
    "kind,url,expected",
    [
        ("json-401", "/v2/models/m", "HTTP 401"),
        ("lower-403", "/v2/models/m", "HTTP 403"),
        ("html-500", "/v2/models/m", "HTTP 500"),
        ("prefix-400", "/v2/models/m", "HTTP 400"),
        ("not-json", "/v2/models/m", "not JSON"),
        ("no-outputs", "/v2/models/m", "no 'outputs'"),
        ("no-predictions", "/v1/models/m", "no 'predictions'"),
    ],
)
def test_an_echoed_token_is_never_shown(kind, url, expected):
    with FakeServer(echo(kind)) as server:
        remote = load_model(server.base + url, headers=[f"Authorization: Bearer {TOKEN}"], input_size=8, timeout=2, retries=1,
                            backoff=0.001)
        with pytest.raises(ModelError) as info:
            remote(torch.rand(1, 3, 8, 8))
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert_no_piece(message)


def test_custom_decode_quoting_the_answer_is_scrubbed():
    def respond(handler, method, path, body):
        send(handler, 200, {"echo": f"{PADDING[:80]}{handler.headers.get('Authorization')}"})

    with FakeServer(respond) as server:
        remote = load_model(server.base + "/classify", protocol="json", input_size=8, headers={"Authorization": f"Bearer {TOKEN}"},
                            encode=lambda b: {"n": len(b)}, decode=lambda answer: answer["scores"] if "x" in answer else {}[str(answer)])
        with pytest.raises(ModelError, match="decode\\(\\) raised KeyError") as info:
            remote(torch.rand(1, 3, 8, 8))
    assert_no_piece(str(info.value))


def test_the_cli_with_headers_from_the_environment_shows_no_piece(tmp_path, capsys, monkeypatch):
    from PIL import Image

    Image.new("RGB", (8, 8), "gray").save(tmp_path / "a.png")
    monkeypatch.setenv(HEADERS_ENV, f"Authorization: Bearer {TOKEN}\nX-Api-Key: {TOKEN.lower()}-k")
    with FakeServer(echo("json-401")) as server:
        code = main(["explain", str(tmp_path / "a.png"), "--model", server.base + "/v2/models/m", "--method", "occlusion",
                     "--window", "4", "--stride", "4", "--retries", "0", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "HTTP 401" in captured.err
    assert_no_piece(captured.out + captured.err)


def test_scrubbing_happens_before_the_cut_and_ignores_case():
    secrets = Secrets([f"Bearer {TOKEN}"])
    text = "a" * 195 + TOKEN.swapcase() + " and more"
    shown = secrets.quote(text, 200)  # cut-then-scrub printed the token's first characters here
    assert_no_piece(shown)
    assert secrets.quote(TOKEN[:9] + " " + TOKEN[-9:]) == "<redacted> <redacted>"  # pieces, each end
    assert Secrets(["Bearer abc"]).quote("Bearer is a word") == "Bearer is a word"  # the scheme alone is no secret
    huge = "z" * 5_000_000 + TOKEN  # a body of megabytes: only a window is scanned, and the token is past what is shown
    assert len(secrets.quote(huge)) == 200


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}\r\nX-Evil: 1", f"Bearer {TOKEN[:8]}\n{TOKEN[8:]}", f"Bearer\x00{TOKEN}"])
def test_a_line_break_in_a_header_value_is_one_line_naming_only_the_header(value, tmp_path, capsys):
    for given in ({"Authorization": value}, [f"Authorization: {value}"]):
        with pytest.raises(ModelError) as info:
            parse_headers(given)
        message = str(info.value)
        assert message.startswith("header Authorization: the value holds") and "\n" not in message
        assert_no_piece(message)
    assert parse_headers({"Authorization": f"Bearer {TOKEN}\n"}) == {"Authorization": f"Bearer {TOKEN}"}  # a file's newline


def test_a_line_break_from_the_command_line_is_exit_2_without_traceback(tmp_path, capsys):
    code = main(["explain", str(tmp_path / "a.png"), "--model", "http://127.0.0.1:9/v2/models/m", "--header",
                 f"Authorization: Bearer {TOKEN}\r\nX-Evil: 1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "line break" in err
    assert_no_piece(err)
    assert json.dumps(err)  # printable
