"""The report as an Excel workbook (openpyxl): one sheet per scope level, rates as
formulas a person can read and check (``=E2/D2``), the department and grid-worker
scores, and a sheet of definitions. A rate without a denominator is an empty cell,
and a score leaves out the parts that are empty (docs/reports.md)."""
from __future__ import annotations

import io

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from models.context import Core
from models.figures.stats import LEVELS, DepartmentScore, Figures, Report, WorkerScore
from models.messages.i18n import N_, Translator

from .summary import LEVEL_WORDS

SHEETS = {"district": N_("District"), "street": N_("Streets"), "community": N_("Communities"),
          "grid": N_("Grids"), "department": N_("Departments"), "category": N_("Categories"),
          "order_type": N_("Order types"), "channel": N_("Channels")}
PERCENT = "0.0%"

# (header, key) of the scope sheets, in column order from C; "=" marks a formula column
COLUMNS = [
    (N_("received"), "received"), (N_("claim deadlines due"), "claims_due"),
    (N_("claimed on time"), "claims_met"), (N_("response rate"), "=response"),
    (N_("votes"), "votes"), (N_("solved"), "solved"), (N_("satisfied"), "satisfied"),
    (N_("basically satisfied"), "basic"), (N_("resolution rate"), "=resolution"),
    (N_("satisfaction rate"), "=satisfaction"), (N_("composite"), "=composite"),
    (N_("resolved"), "resolved"),
    *[(LEVEL_WORDS[lv], f"level:{lv}") for lv in LEVELS],
    *[(N_("share {level}"), f"=share:{lv}") for lv in LEVELS],
    (N_("unrated"), "unrated"), (N_("reopened"), "reopened"), (N_("escalated"), "escalated"),
    (N_("whistled"), "whistled"), (N_("overdue now"), "overdue_now"), (N_("closed"), "closed"),
    (N_("overdue at closing"), "overdue_at_closing"),
    (N_("claim median (working h)"), "to_claim.median_work"),
    (N_("claim p90 (working h)"), "to_claim.p90_work"),
    (N_("claim median (h)"), "to_claim.median_calendar"),
    (N_("claim p90 (h)"), "to_claim.p90_calendar"),
    (N_("resolve median (working h)"), "to_resolve.median_work"),
    (N_("resolve p90 (working h)"), "to_resolve.p90_work"),
    (N_("resolve median (h)"), "to_resolve.median_calendar"),
    (N_("resolve p90 (h)"), "to_resolve.p90_calendar"),
]
KEYS = [key for _, key in COLUMNS]


def col(key: str) -> str:
    """The column letter of a scope-sheet key (A code, B name, C received …)."""
    return get_column_letter(KEYS.index(key) + 3)


def _num(value: float) -> str:
    return f"{value:g}"


def weighted_formula(parts: dict[str, str | None], weights: dict[str, float],
                     scale: str = "") -> str | None:
    """``=(w1*x1+w2*x2)/(w1+w2)`` over the parts that exist (x: a readable expression)."""
    present = [(weights[k], x) for k, x in parts.items() if x is not None and weights.get(k, 0) > 0]
    if not present:
        return None
    top = "+".join(f"{_num(w)}*{x}" for w, x in present)
    bottom = "+".join(_num(w) for w, _ in present)
    return f"={scale}({top})/({bottom})"


def scope_value(f: Figures, key: str, row: int, core: Core):
    r = f.rates
    c = lambda k: f"{col(k)}{row}"  # noqa: E731
    report = core.config.report
    if key == "=response":
        return f"={c('claims_met')}/{c('claims_due')}" if r.claims_due else None
    if key == "=resolution":
        return f"={c('solved')}/{c('votes')}" if r.votes else None
    if key == "=satisfaction":
        return (f"=({c('satisfied')}+{_num(report.basic_weight)}*{c('basic')})/{c('votes')}"
                if r.votes else None)
    if key == "=composite":
        return weighted_formula({"response": c("=response") if r.claims_due else None,
                                 "resolution": c("=resolution") if r.votes else None,
                                 "satisfaction": c("=satisfaction") if r.votes else None},
                                report.weights)
    if key.startswith("=share:"):
        return f"={c('level:' + key[7:])}/{c('resolved')}" if f.resolved else None
    if key.startswith("level:"):
        return f.levels.get(key[6:], 0)
    if key in ("claims_due", "claims_met", "votes", "solved", "satisfied", "basic"):
        return getattr(r, key)
    if "." in key:
        group, name = key.split(".")
        seconds = getattr(getattr(f, group), name)
        return None if seconds is None else round(seconds / 3600, 2)
    return getattr(f, key)


def _header(sheet, names: list[str]) -> None:
    sheet.append(names)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "C2"


def scope_sheet(book: Workbook, core: Core, t: Translator, level: str, rows: list[Figures]):
    sheet = book.create_sheet(t._(SHEETS[level]))
    _header(sheet, [t._("code"), t._("name"), *[t._(h, level=t._(LEVEL_WORDS[k.split(':')[1]]))
                                                 if k.startswith("=share:") else t._(h)
                                                 for h, k in COLUMNS]])
    for i, f in enumerate(rows, start=2):
        sheet.append([f.scope.key, f.scope.label(t.locale),
                      *[scope_value(f, key, i, core) for key in KEYS]])
        for key in KEYS:
            if key.startswith("="):
                sheet[f"{col(key)}{i}"].number_format = PERCENT
    return sheet


def department_sheet(book: Workbook, core: Core, t: Translator, rows: list[DepartmentScore]):
    sheet = book.create_sheet(t._("Department scores"))
    _header(sheet, [t._("code"), t._("name"), t._("ratings"), t._("average stars"),
                    t._("claim and duty deadlines due"), t._("met"), t._("on-time rate"),
                    t._("score")])
    for i, d in enumerate(rows, start=2):
        on_time = f"=F{i}/E{i}" if d.deadlines else None
        score = weighted_formula({"rating": f"D{i}/5" if d.stars is not None else None,
                                  "on_time": f"G{i}" if d.deadlines else None},
                                 core.config.report.department_weights, scale="100*")
        sheet.append([d.unit.key, d.unit.label(t.locale), d.ratings,
                      None if d.stars is None else round(d.stars, 4), d.deadlines, d.on_time,
                      on_time, score])
        sheet[f"G{i}"].number_format = PERCENT
        sheet[f"H{i}"].number_format = "0.0"
    return sheet


WORKER_PARTS = (N_("claims"), N_("on time"), N_("resolved"), N_("votes"), N_("solved"),
                N_("satisfied"), N_("basically satisfied"), N_("score"))


def worker_sheet(book: Workbook, core: Core, t: Translator, report: Report,
                 rows: list[WorkerScore]):
    """One block of columns per month (claims … score), then the period's total: the sum
    of the monthly scores (quarterly sum, half-yearly and yearly totals)."""
    sheet = book.create_sheet(t._("Grid workers"))
    months = [m.label for m in report.period.months()]
    _header(sheet, [t._("name"), t._("grid"),
                    *[f"{m} {t._(p)}" for m in months for p in WORKER_PARTS], t._("total")])
    weights, w = core.config.report.worker_weights, core.config.report.basic_weight
    width = len(WORKER_PARTS)
    for i, worker in enumerate(rows, start=2):
        values, score_cells = [worker.name, worker.grid], []
        for j, label in enumerate(months):
            m = worker.months[label]
            first = 3 + j * width
            L = lambda k: f"{get_column_letter(first + k)}{i}"  # noqa: E731
            score = weighted_formula({
                "response": f"{L(1)}/{L(0)}" if m.claims else None,
                "resolution": f"{L(4)}/{L(3)}" if m.votes else None,
                "satisfaction": f"({L(5)}+{_num(w)}*{L(6)})/{L(3)}" if m.votes else None},
                weights, scale="100*")
            values += [m.claims, m.claims_on_time, m.resolved, m.votes, m.solved, m.satisfied,
                       m.basic, score]
            if score is not None:
                score_cells.append(L(7))
        values.append(f"=SUM({','.join(score_cells)})" if score_cells else None)
        sheet.append(values)
    return sheet


DEFINITIONS = [
    (N_("received"), N_("tickets created in the period, without those closed as duplicates")),
    (N_("response rate"), N_("tickets claimed by their claim deadline ÷ tickets whose claim "
                             "deadline fell in the period")),
    (N_("resolution rate"), N_("\"solved\" votes ÷ votes cast in the period")),
    (N_("satisfaction rate"), N_("(satisfied + {w} × basically satisfied) ÷ votes cast in the "
                                 "period")),
    (N_("composite"), N_("Σ weight × rate ÷ Σ weight, over the rates that have a denominator; "
                         "weights {weights}")),
    (N_("resolved"), N_("tickets whose last resolution fell in the period and which are "
                        "resolved or closed now; shares by the level that resolved them")),
    (N_("unrated"), N_("tickets closed without a vote in the period; never counted as "
                       "satisfied")),
    (N_("overdue at closing"), N_("tickets closed in the period after their resolve deadline")),
    (N_("times"), N_("from report to first claim, and from report to resolution: median and "
                     "90th percentile (nearest rank), in working hours and in hours")),
    (N_("department score"), N_("100 × weighted mean of average stars ÷ 5 and deadlines met; "
                                "weights {weights}")),
    (N_("grid worker score"), N_("100 × weighted mean of their claims on time, \"solved\" "
                                 "votes and satisfaction on their tickets, monthly; longer "
                                 "periods sum the monthly scores; weights {weights}")),
]


def definitions_sheet(book: Workbook, core: Core, t: Translator, report: Report):
    sheet = book.create_sheet(t._("Definitions"))
    cfg = core.config.report
    fmt = lambda d: ", ".join(f"{k} {_num(v)}" for k, v in d.items())  # noqa: E731
    params = {N_("satisfaction rate"): {"w": _num(cfg.basic_weight)},
              N_("composite"): {"weights": fmt(cfg.weights)},
              N_("department score"): {"weights": fmt(cfg.department_weights)},
              N_("grid worker score"): {"weights": fmt(cfg.worker_weights)}}
    sheet.append([t._("figure"), t._("definition")])
    sheet.append([t._("period"), f"{report.period.label}: "
                  f"{report.period.start.isoformat()} – {report.period.end.isoformat()}"])
    for name, text in DEFINITIONS:
        sheet.append([t._(name), t._(text, **params.get(name, {}))])
    sheet.column_dimensions["A"].width = 22
    sheet.column_dimensions["B"].width = 100
    return sheet


def render(core: Core, t: Translator, report: Report) -> bytes:
    """The workbook as .xlsx bytes. Blocking: run it in a worker thread."""
    book = Workbook()
    book.remove(book.active)
    for level, rows in report.levels.items():
        scope_sheet(book, core, t, level, rows)
    if report.departments:
        department_sheet(book, core, t, report.departments)
    worker_sheet(book, core, t, report, report.workers)
    definitions_sheet(book, core, t, report)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
