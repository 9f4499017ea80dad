"""PNG charts with matplotlib's object API (``Figure`` on the Agg canvas: no pyplot, no
global figure state, safe in a worker thread). Chinese labels use Debian's
fonts-noto-cjk ("Noto Sans CJK SC"). Call ``render`` through ``asyncio.to_thread``."""
from __future__ import annotations

import functools
import io

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.figures.stats import LEVELS, Figures, Report
from models.messages.i18n import Translator

from .summary import LEVEL_WORDS

FONT = ["Noto Sans CJK SC", "DejaVu Sans"]
SIZE = (10, 6)  # inches
DPI = 100  # → 1000 × 600 pixels
COLOURS = ("#4c72b0", "#55a868", "#dd8452")


@functools.cache
def _find_cjk_font() -> bool:
    """True once matplotlib knows the CJK font. Its font list is cached on disk when it
    first runs; fonts installed after that (``make browser`` after a first test run, an
    admin adding fonts-noto-cjk later) are not in it, and every Chinese label would be
    drawn as empty boxes. Such fonts are added from the system's list, once per process."""
    def known() -> bool:
        return any(f.name == FONT[0] for f in font_manager.fontManager.ttflist)
    if known():
        return True
    for path in font_manager.findSystemFonts():
        if "CJK" in path:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue  # an unreadable file: the others may do
    return known()


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def breakdown(report: Report) -> list[Figures]:
    """The rows one level below the report's scope (communities of a district or a
    street, grids of a community), or the scope itself."""
    order = {"district": ("street", "community"), "street": ("community", "grid"),
             "community": ("grid",), "grid": ()}.get(report.top.scope.kind, ())
    for kind in order:
        rows = report.levels.get(kind, [])
        if len(rows) > 1:
            return rows
    return [report.top]


def rates_chart(report: Report, t: Translator) -> bytes:
    rows = breakdown(report)
    figure = Figure(figsize=SIZE, layout="constrained")
    ax = figure.add_subplot()
    names = [r.scope.label(t.locale) for r in rows]
    width = 0.27
    for i, (label, key) in enumerate(((t._("Response rate"), "response"),
                                      (t._("Resolution rate"), "resolution"),
                                      (t._("Satisfaction rate"), "satisfaction"))):
        rates = [getattr(r.rates, key) for r in rows]
        bars = ax.bar([x + (i - 1) * width for x in range(len(rows))],
                      [100 * (v or 0) for v in rates], width, label=label, color=COLOURS[i])
        ax.bar_label(bars, ["—" if v is None else f"{100 * v:.0f}" for v in rates], fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=30 if len(rows) > 6 else 0)
    ax.set_ylim(0, 108)
    ax.set_ylabel("%")
    ax.set_title(t._("The three rates — {unit} — {period}", unit=report.top.scope.label(t.locale),
                     period=report.period.label))
    ax.legend(loc="lower right")
    return _png(figure)


def workload_chart(report: Report, core_category_name, t: Translator) -> bytes:
    """Where tickets were resolved (grid / community / street / department) and the top
    categories."""
    top = report.top
    figure = Figure(figsize=SIZE, layout="constrained")
    left, right = figure.subplots(1, 2)
    levels = [lv for lv in LEVELS]
    left.bar([t._(LEVEL_WORDS[lv]) for lv in levels],
             [100 * (top.level_share(lv) or 0) for lv in levels], color=COLOURS[0])
    left.set_ylim(0, 100)
    left.set_ylabel("%")
    left.set_title(t._("Resolved at which level ({n} tickets)", n=top.resolved))
    cats = top.top_categories
    right.barh([core_category_name(code) for code, _ in cats][::-1],
               [n for _, n in cats][::-1], color=COLOURS[2])
    right.set_title(t._("Top categories ({n} received)", n=top.received))
    right.set_xlim(0, max([n for _, n in cats], default=0) + 1)
    right.xaxis.get_major_locator().set_params(integer=True)
    return _png(figure)


def render(report: Report, core_category_name, t: Translator) -> list[tuple[str, bytes]]:
    """Every chart as (file name, PNG bytes). Blocking: run it in a worker thread."""
    _find_cjk_font()
    with matplotlib.rc_context({"font.family": FONT, "axes.unicode_minus": False}):
        return [(f"rates-{report.period.label}.png", rates_chart(report, t)),
                (f"levels-{report.period.label}.png", workload_chart(report, core_category_name, t))]
