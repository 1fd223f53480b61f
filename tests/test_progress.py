"""The live search table names the study's metric, not a fixed "recall"."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from autoembed.progress import SearchDisplay

OPTIONS = SimpleNamespace(study="s", timeout=None, trials=3, workers=1)


def _rendered(display: SearchDisplay) -> str:
    out = io.StringIO()
    Console(file=out, width=120).print(display._table())
    return out.getvalue()


def test_the_table_header_is_the_metric():
    display = SearchDisplay(None, OPTIONS, live=False, metric="mrr@10")
    display.started(0, {"loss": "infonce"})
    display.progress(0, 4, 8, 0.4321)

    table = display._table()
    text = _rendered(display)

    assert [c.header for c in table.columns] == ["trial", "state", "step", "mrr@10", "params"]
    assert "mrr@10" in text and "0.4321" in text and "recall" not in text


def test_without_a_metric_the_column_says_value():
    assert [c.header for c in SearchDisplay(None, OPTIONS, live=False)._table().columns][3] == "value"
