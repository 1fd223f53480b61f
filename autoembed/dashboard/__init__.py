"""One self-contained HTML page that shows an autoembed study, read without writing to it.

The layout follows `optuna.visualization`: `data.py` reads the study read-only and turns its trials into
plain dataclasses, one `_get_<name>_info(trials)` per figure, which the tests check without a browser;
`figures.py` draws each info as a plotly figure (`_get_<name>_plot(info)`); `page.py` reads the study
once and renders everything into `templates/dashboard.html.j2`, one HTML file with plotly.js inlined
once, so the page works offline.
"""

from __future__ import annotations

from autoembed.dashboard.data import load_study_readonly
from autoembed.dashboard.page import write_dashboard
from autoembed.study import mask_url

__all__ = ["load_study_readonly", "mask_url", "write_dashboard"]
