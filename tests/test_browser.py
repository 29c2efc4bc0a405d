"""The browser helper's proof of "offline" and "not blank" works: it sees what a page fetches."""

from __future__ import annotations

from pathlib import Path

from tests.browser import distinct_colours, render


def test_an_offline_page_makes_no_request_and_is_not_blank(tmp_path: Path) -> None:
    page = tmp_path / "offline.html"
    page.write_text("<!doctype html><title>t</title><h1 style='color:#036'>Offline</h1>")
    seen = render(page, height=600)
    assert seen.requests == ()
    assert distinct_colours(seen.png) > 4


def test_every_kind_of_fetch_a_page_starts_is_recorded(tmp_path: Path) -> None:
    page = tmp_path / "online.html"
    page.write_text(
        "<!doctype html><title>t</title>"
        "<img src='http://images.invalid/a.png'>"
        "<link rel=stylesheet href='https://styles.invalid/s.css'>"
        "<script>fetch('http://127.0.0.1:8081/beacon'); document.body.dataset.ran = 'yes'</script>"
    )
    seen = render(page, height=600)
    assert "GET http://images.invalid/a.png HTTP/1.1" in seen.requests
    assert "CONNECT styles.invalid:443 HTTP/1.1" in seen.requests
    assert "GET http://127.0.0.1:8081/beacon HTTP/1.1" in seen.requests  # loopback is not exempt
    assert 'data-ran="yes"' in seen.dom  # scripts do run where nothing forbids them


def test_a_blank_page_is_one_colour(tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!doctype html><title>t</title>")
    assert distinct_colours(render(page, height=400).png) == 1
