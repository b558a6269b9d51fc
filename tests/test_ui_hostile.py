"""The inspector attacked as a hostile user would: markup in every journaled string, traversal and
SQL in the query, huge entries, clients that never read or come by the hundred, the README's claims.

Runs are written through the public journal API (as any agentloop version writing a journal
would), and the app is driven over HTTP: in process (httpx's ASGI transport) or served by
`agentloop ui` in a subprocess.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import socket
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ui_runs import make_tools

from agentloop import Agent, SQLiteJournal
from agentloop.testing import ScriptedModel, call, tool_calls
from agentloop.ui import create_app

pytestmark = pytest.mark.anyio

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg/onload=alert(3)>",
    "</pre></details><iframe srcdoc='x'>",
    "javascript:alert(4)//<b>",
]
MIB = 1024 * 1024


async def hostile_run(journal: SQLiteJournal, run_id: str, evil: str, *, output: str | None = None) -> None:
    """A run with `evil` in every string the journal keeps: its id, model, prompt, a tool's name,
    arguments, result, error and traceback, the model's text, a failure's message."""
    token = await journal.create(run_id, {"model": evil, "messages": [{"role": evil, "content": evil}]})
    call = {"id": evil, "type": "function", "function": {"name": evil, "arguments": evil}}
    usage = {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    await journal.append(run_id, "model", {"message": {"role": "assistant", "content": evil, "tool_calls": [call]}, "usage": usage}, step=1)  # fmt: skip
    await journal.append(run_id, "tool_start", {"name": evil, "arguments": evil}, step=1, call_id=evil)
    end = {"name": evil, "status": "raised", "content": output if output is not None else evil}
    end |= {"error": evil, "traceback": evil, "duration_s": 0.1}
    await journal.append(run_id, "tool_end", end, step=1, call_id=evil)
    await journal.append(run_id, "failed", {"error": evil, "message": evil}, step=1, status=evil)
    await journal.release(run_id, token)


def client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


@pytest.fixture
def evil_db(tmp_path: Path) -> str:
    path = str(tmp_path / "evil.db")

    async def make() -> None:
        journal = SQLiteJournal(path)
        for i, evil in enumerate(PAYLOADS):
            await hostile_run(journal, evil if i % 2 else f"run-{i}", evil)
        journal.close()

    anyio.run(make)
    return path


def run_path(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


async def test_no_journaled_string_becomes_markup_on_any_page(evil_db: str) -> None:
    app = create_app(evil_db)
    ids = [p if i % 2 else f"run-{i}" for i, p in enumerate(PAYLOADS)]
    urls = ["/", "/?partial=1", *(f"/?q={quote(p)}" for p in PAYLOADS), f"/?status={quote(PAYLOADS[0])}"]
    for rid in ids:
        urls += [
            run_path(rid),
            run_path(rid) + "?partial=1",
            f"/compare?run={quote(rid)}&run={quote(ids[0])}",
        ]
    urls += [run_path("<nope>" + p) for p in PAYLOADS]  # the 404 page quotes the id
    async with client(app) as c:
        for url in urls:
            r = await c.get(url)
            assert r.status_code in (200, 400, 404), (url, r.status_code)
            assert r.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
            assert r.headers["x-content-type-options"] == "nosniff"
            for evil in PAYLOADS:
                assert evil not in r.text, (url, evil)
            assert "<script>" not in r.text and "onerror=" not in r.text.replace("onerror=alert(2)&gt;", "")
        shown = (await c.get(run_path(ids[1]))).text
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in shown  # shown, as text
        assert (await c.get("/state/" + quote(ids[1], safe=""))).status_code == 404  # removed: unused


async def test_live_update_headers_never_carry_journal_text(evil_db: str) -> None:
    # the run's status is journal text ("failed" entry above): a header gets a label or "other"
    app = create_app(evil_db)
    async with client(app) as c:
        r = await c.get("/runs/run-0?partial=1")
    assert r.status_code == 200 and r.headers["x-agentloop-status"] == "other"
    assert all(p not in v for p in PAYLOADS for v in r.headers.values())


@pytest.mark.parametrize(
    "url",
    [
        "/static/../_app.py",
        "/static/%2e%2e/_app.py",
        "/static/..%2f_app.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/app.js/../../_security.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
    ],
)
async def test_static_files_never_serve_anything_but_the_assets(evil_db: str, url: str) -> None:
    async with client(create_app(evil_db)) as c:
        r = await c.get(url)
    assert r.status_code == 404 or "agentloop run inspector" in r.text  # a normalized URL lands on a page
    assert "def create_app" not in r.text and "root:" not in r.text and "class Guard" not in r.text


@pytest.mark.parametrize(
    ("url", "status", "runs"),
    [
        ("/runs/" + quote("x' OR '1'='1", safe=""), 404, None),
        ("/runs/" + quote("../../../etc/passwd", safe=""), 404, None),
        ("/?q=" + quote("%' OR 1=1 --"), 200, 0),
        ("/?q=" + quote("_"), 200, 0),  # LIKE's wildcards are literal
        ("/?q=" + quote("%"), 200, 0),
        ("/?after=" + quote("1e999:x' OR 1=1 --"), 200, 5),
        ("/?after=" + quote("0:') UNION SELECT 1,2,3 --"), 200, 0),
        ("/?status=" + quote("final' OR 1=1 --"), 400, None),
        ("/compare?run=" + quote("' OR 1=1 --") + "&run=run-0", 404, None),
    ],
)
async def test_sql_and_traversal_in_the_query_are_plain_values(
    evil_db: str, url: str, status: int, runs: int | None
) -> None:
    async with client(create_app(evil_db)) as c:
        r = await c.get(url)
    assert r.status_code == status, r.text
    assert "root:" not in r.text
    if runs is not None:
        assert r.text.count('class="run-row"') == runs


async def test_a_32_mib_tool_output_is_shown_truncated_with_a_note(tmp_path: Path) -> None:
    path = str(tmp_path / "big.db")
    journal = SQLiteJournal(path)
    big = "A" * (32 * MIB)
    await hostile_run(journal, "big", "x", output=big)
    for i in range(40):  # and many big calls: the page as a whole is bounded too
        await hostile_run(journal, f"many-{i}", "y" * 200_000)
    journal.close()
    async with client(create_app(path)) as c:
        page = await c.get("/runs/big")
        listing = await c.get("/")
        one_of_many = await c.get("/runs/many-3")
        compare = await c.get("/compare?run=big&run=many-1")
    assert page.status_code == 200 and len(page.content) < 1 * MIB
    # the 32 MiB result is not read whole (an entry over 256 KiB): its size and first 64 KiB
    stored = re.search(r"entry of ([\d,]+) bytes: too large to read whole here", page.text)
    assert stored is not None and int(stored[1].replace(",", "")) > 32 * MIB
    assert listing.status_code == 200 and len(listing.content) < 1 * MIB
    assert one_of_many.status_code == 200 and len(one_of_many.content) < 3 * MIB
    assert compare.status_code == 200 and len(compare.content) < 3 * MIB


async def test_a_hundred_live_clients_at_once_each_get_a_whole_answer(evil_db: str) -> None:
    app = create_app(evil_db)
    async with client(app) as c:
        first = await c.get("/runs/run-0?partial=1")
        version = first.headers["x-agentloop-version"]
        answers: list[tuple[int, bytes]] = []

        async def poll(i: int) -> None:
            url = "/runs/run-0?partial=1" + (f"&since={version}" if i % 2 else "")
            r = await c.get(url)
            answers.append((r.status_code, r.content))

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(poll, i)
    assert sorted(code for code, _ in answers) == [200] * 50 + [204] * 50
    assert {body for code, body in answers if code == 200} == {first.content}


async def test_a_request_body_is_capped(evil_db: str) -> None:
    async with client(create_app(evil_db)) as c:
        r = await c.post("/decide/run-0", content=b"csrf=" + b"x" * (1 * MIB))
        assert r.status_code == 413

        async def chunks() -> Any:  # no content-length: counted as it arrives
            yield b"csrf="
            for _ in range(64):
                yield b"y" * 4096

        form = {"content-type": "application/x-www-form-urlencoded"}
        r = await c.post("/decide/run-0", content=chunks(), headers=form)
        assert r.status_code == 413
        r = await c.post("/decide/run-0", headers={"content-length": "nan"}, content=b"")
        assert r.status_code == 413


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.", "0.0.0.0"])
async def test_a_foreign_host_header_is_refused(evil_db: str, host: str) -> None:
    async with client(create_app(evil_db), host=host) as c:
        r = await c.get("/")
    assert r.status_code == 421 and "content-security-policy" in r.headers


def test_agentloop_ui_binds_loopback_only_by_default(evil_db: str) -> None:
    from ui_browser import served

    with served(evil_db) as url:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.split(":")[2].split("/")[0])
        with socket.socket() as s:  # the listening socket is on 127.0.0.1, not 0.0.0.0
            s.connect(("127.0.0.1", port))
        others = [a for a in _local_addresses() if not a.startswith("127.")]
        for addr in others:
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(5)
                s.connect((addr, port))


def _local_addresses() -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)})
    except OSError:
        return []


def test_a_client_that_never_reads_does_not_hold_the_server(tmp_path: Path) -> None:
    # Big pages asked for again and again on connections that never read a byte: each connection
    # holds at most one (bounded) answer; others are served, the server's memory stays bounded
    # (before pages were clipped, each stuck connection held a whole 4 MiB-and-more page).
    from ui_browser import served

    path = str(tmp_path / "big.db")

    async def make() -> None:
        journal = SQLiteJournal(path)
        await hostile_run(journal, "big", "x", output="B" * (2 * MIB))
        journal.close()

    anyio.run(make)
    with served(path) as url:
        pid = _server_pid(path)
        host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
        assert httpx.get(url + "runs/big", trust_env=False, timeout=60).status_code == 200
        before = _memory(pid)["VmRSS"]
        request = f"GET /runs/big HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        sockets = []
        try:
            for _ in range(40):
                s = socket.create_connection((host, port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(request * 20)  # pipelined, never read
                sockets.append(s)
            for _ in range(3):  # served after the stuck ones (the page's builds queue in order)
                r = httpx.get(url + "runs/big", trust_env=False, timeout=120)
                assert r.status_code == 200 and "more characters not shown" in r.text
            grown = _memory(pid)["VmHWM"] - before  # the peak, whenever it was
        finally:
            for s in sockets:
                s.close()
    assert grown < 96 * 1024, f"the server grew by {grown} KiB for 40 clients that never read"


def _server_pid(journal: str) -> int:
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agentloop.cli" in cmdline and journal.encode() in cmdline:
            return int(proc.name)
    raise AssertionError(f"no agentloop ui process serves {journal}")


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak resident size) of a process, in KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")
    }


async def test_serving_pages_never_changes_the_journal(evil_db: str) -> None:
    # README: it "never blocks or changes a running worker's journal" (reads are mode=ro)
    def digest() -> list[str]:
        files = [Path(evil_db), Path(evil_db + "-wal")]
        # a reader may create an empty -wal file (SQLite does, for WAL files): no content
        return [hashlib.sha256(f.read_bytes() if f.exists() else b"").hexdigest() for f in files]

    before = digest()
    app = create_app(evil_db)
    async with app.router.lifespan_context(app), client(app) as c:
        for url in ["/", "/?partial=1&since=x", "/runs/run-0", "/runs/run-0?partial=1", "/runs/run-0?page=1",
                    "/compare?run=run-0&run=run-2", "/?q=x", "/?status=failed"]:  # fmt: skip
            assert (await c.get(url)).status_code == 200, url
    assert digest() == before


@pytest.mark.parametrize(
    "run_id", ["x/../../runs/victim", "x/../../decide/victim", "..", ".", "a/./b", "%2e%2e"]
)
async def test_a_run_id_with_dot_segments_links_to_its_own_page_and_form(tmp_path: Path, run_id: str) -> None:
    # a browser (and httpx) resolves "." and ".." in a link's path: an id made of segments could
    # make its link, or its Approve form, point at another run ("victim", paused here)
    path = str(tmp_path / "j.db")
    journal = SQLiteJournal(path)
    for rid in (run_id, "victim"):
        model = ScriptedModel([tool_calls(call("refund", {"order": "A-1", "amount": 1}, id="r1"))])
        await Agent(client=model, tools=make_tools(), journal=journal).run("refund", run_id=rid)
    journal.close()
    async with client(create_app(path)) as c:
        listing = (await c.get("/")).text
        links = dict(re.findall(r'<a href="([^"]+)">([^<]+)</a></td>', listing))
        link = next(html.unescape(href) for href, text in links.items() if html.unescape(text) == run_id)
        page = await c.get(link)
        assert page.status_code == 200
        assert f'<span class="mono">{html.escape(run_id)}</span>' in page.text.replace("&#34;", "&quot;")
        action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text)[1])
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
        r = await c.post(action, data={"csrf": csrf, "call_id": "r1", "decision": "reject", "value": "no"})
        assert r.status_code == 303
        victim = (await c.get("/runs/victim")).text
        mine = (await c.get(link)).text
    assert "decided: rejected" in mine and "decided:" not in victim


@settings(
    max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 400_000), min_size=1, max_size=25),
    ch=st.sampled_from(["a", "<", "é", "\n"]),
)
def test_a_run_page_is_bounded_whatever_its_calls_returned(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], ch: str
) -> None:
    path = str(tmp_path_factory.mktemp("bounded") / "j.db")
    outputs = [ch * n + f"|end{i}" for i, n in enumerate(sizes)]

    async def main() -> str:
        journal = SQLiteJournal(path)
        token = await journal.create("r", {"model": "m", "messages": [{"role": "user", "content": "go"}]})
        calls = [{"id": f"c{i}", "type": "function", "function": {"name": "t", "arguments": "{}"}} for i in range(len(sizes))]  # fmt: skip
        await journal.append("r", "model", {"message": {"role": "assistant", "content": None, "tool_calls": calls}}, step=1)  # fmt: skip
        for i, out in enumerate(outputs):
            await journal.append(
                "r", "tool_end", {"name": "t", "status": "ok", "content": out}, step=1, call_id=f"c{i}"
            )
        await journal.release("r", token)
        journal.close()
        async with client(create_app(path)) as c:
            r = await c.get("/runs/r")
        assert r.status_code == 200
        return r.text

    page = anyio.run(main)
    # each output shows twice (its call, its chat bubble); "<" is 4 characters once escaped
    texts = 2 * len(sizes) + 2
    assert len(page) <= 4 * (2 * 1024 * 1024 + texts * 400) + 3000 * len(sizes) + 20_000
    shown = [html.unescape(t) for t in re.findall(r'<pre class="result">(.*?)</pre>', page, re.S)]
    assert len(shown) == len(outputs)
    for text, out in zip(shown, outputs, strict=True):
        if len(out) <= 200:
            assert text == out  # short texts are whole
        elif text.startswith("[entry of "):  # an entry over 256 KiB: its raw JSON's first bytes
            raw = json.dumps(
                {"name": "t", "status": "ok", "content": out}, separators=(",", ":"), ensure_ascii=False
            )
            head = text.split("\n", 1)[1].split("\n… [", 1)[0].rstrip("\ufffd")
            assert len(raw.encode()) > 256 * 1024 and raw.startswith(head) and len(head) >= 200
        else:
            kept = text.split("\n… [", 1)[0] if "more characters not shown" in text else text
            assert out.startswith(kept) and len(kept) >= 200
            assert kept == out or text.endswith("the journal holds the whole text]")


async def test_a_token_on_every_address_is_reached_by_any_name_and_guards_it(evil_db: str) -> None:
    # `agentloop ui --host 0.0.0.0 --token T` is opened by the machine's name or address, which the
    # app cannot know: the token is the guard there (the Host check still holds without one)
    app = create_app(evil_db, token="s3cret", host="0.0.0.0")
    async with client(app, host="192.0.2.7:8765") as c:
        assert (await c.get("/")).status_code == 401
        assert (await c.get("/?token=s3cret")).status_code == 200
    async with client(create_app(evil_db, host="0.0.0.0"), host="192.0.2.7:8765") as c:
        assert (await c.get("/")).status_code == 421


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


TEMPLATE_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "header", "a", "main", "form", "label",
                 "select", "option", "input", "button", "p", "table", "thead", "tbody", "tr", "th", "td", "span",
                 "nav", "div", "section", "h1", "h2", "h3", "dl", "dt", "dd", "pre", "details", "summary", "svg",
                 "rect", "code"}  # fmt: skip


async def test_pages_hold_only_the_templates_markup_no_inline_script_or_style(evil_db: str) -> None:
    # the CSP's promise (_security.py): scripts and styles only from /static, nothing inline
    ids = [p if i % 2 else f"run-{i}" for i, p in enumerate(PAYLOADS)]
    urls = [
        "/",
        *(run_path(i) for i in ids),
        f"/compare?run={quote(ids[0])}&run={quote(ids[1])}",
        "/runs/nope",
    ]
    async with client(create_app(evil_db)) as c:
        for url in urls:
            parser = _Tags()
            parser.feed((await c.get(url)).text)
            for tag, attrs in parser.found:
                assert tag in TEMPLATE_TAGS, (url, tag)
                assert not [a for a in attrs if a.startswith("on") or a in ("style", "srcdoc", "formaction")]
                if tag == "script":
                    assert attrs.get("src") == "/static/app.js", url
                for a in ("href", "src", "action"):
                    value = (attrs.get(a) or "").lower()
                    same_site = value.startswith(("/", "#", "?", "data:,")) and not value.startswith("//")
                    assert same_site or not value, (url, tag, a, value)
