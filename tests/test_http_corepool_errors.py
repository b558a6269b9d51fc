"""Every error httpcore defines leaves the httpcore transports as an httpx transport error, which
FluxClient raises as `APIConnectionError` / `APITimeoutError` (one exception tree, rooted in
`AgentloopError`): httpx's own transport lets the ones its table lacks (`ConnectionNotAvailable`)
out as they are. Only an error that is not httpcore's (a bug) passes through unchanged.

`corepool._mapped` is reached directly: the pool retries `ConnectionNotAvailable` itself, so no
request through the public API can make it escape; the table is what stands between them.
"""

from __future__ import annotations

import httpcore
import httpx
import pytest

from agentloop._http.corepool import _mapped  # internal unit under test

HTTPCORE_ERRORS = [
    cls
    for cls in (getattr(httpcore, name) for name in httpcore.__all__)
    if isinstance(cls, type) and issubclass(cls, Exception)
]


def test_httpcore_defines_the_errors_this_file_checks() -> None:
    assert httpcore.ConnectionNotAvailable in HTTPCORE_ERRORS
    assert len(HTTPCORE_ERRORS) >= 15


@pytest.mark.parametrize("cls", HTTPCORE_ERRORS, ids=lambda cls: cls.__name__)
def test_every_httpcore_error_becomes_an_httpx_transport_error(cls: type[Exception]) -> None:
    mapped = _mapped(cls("what happened"))
    assert isinstance(mapped, httpx.TransportError)
    assert "what happened" in str(mapped)
    if cls.__name__ in vars(httpx):  # httpx's namesake when it has one, as its own transport maps
        assert type(mapped) is getattr(httpx, cls.__name__)


def test_an_error_that_is_not_httpcores_passes_through() -> None:
    bug = RuntimeError("Attempted to send request to http://a on connection to http://b")
    assert _mapped(bug) is bug
