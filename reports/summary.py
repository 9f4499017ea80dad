"""The report as chat text, in the reader's language (zh_Hans or en)."""
from __future__ import annotations

from models.context import Core
from models.figures.rates import percent
from models.figures.stats import Durations, Figures, Report
from models.messages.i18n import N_, Translator
from models.org.names import category_name

LEVEL_WORDS = {"grid": N_("grid"), "community": N_("community"), "street": N_("street"),
               "department": N_("department")}
PERIOD_KINDS = {"month": N_("monthly report"), "quarter": N_("quarterly report"),
                "half": N_("half-yearly report"), "year": N_("yearly report"),
                "range": N_("report")}


def hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:.1f}"


def duration_line(t: Translator, label: str, d: Durations) -> str:
    return t._("{what}: median {median_work} working h ({median} h), 90% within "
               "{p90_work} working h ({p90} h)", what=label, median_work=hours(d.median_work),
               median=hours(d.median_calendar), p90_work=hours(d.p90_work),
               p90=hours(d.p90_calendar))


def figures_lines(core: Core, t: Translator, f: Figures) -> list[str]:
    r = f.rates
    lines = [
        t._("Received {received}; claimed on time {met} of {due} due — response rate {rate}",
            received=f.received, met=r.claims_met, due=r.claims_due, rate=percent(r.response)),
        t._("Resolved {resolved}; resolution rate {resolution}, satisfaction rate "
            "{satisfaction} ({votes} votes); composite {composite}", resolved=f.resolved,
            resolution=percent(r.resolution), satisfaction=percent(r.satisfaction),
            votes=r.votes, composite=percent(f.composite)),
        t._("Unrated {unrated}, reopened {reopened}, escalated {escalated}, whistled to "
            "departments {whistled}", unrated=f.unrated, reopened=f.reopened,
            escalated=f.escalated, whistled=f.whistled),
        t._("Overdue now {now}; closed {closed}, of which overdue at closing {late}",
            now=f.overdue_now, closed=f.closed, late=f.overdue_at_closing),
    ]
    if f.resolved:
        shares = ", ".join(f"{t._(LEVEL_WORDS[level])} {percent(f.level_share(level))}"
                           for level in LEVEL_WORDS if f.levels.get(level))
        lines.append(t._("Resolved at: {shares}", shares=shares))
    lines.append(duration_line(t, t._("Time to claim"), f.to_claim))
    lines.append(duration_line(t, t._("Time to resolve"), f.to_resolve))
    if f.top_categories:
        lines.append(t._("Top categories: {list}", list=", ".join(
            f"{category_name(core, code, t)} {n}" for code, n in f.top_categories)))
    if f.hot_spots:
        lines.append(t._("Hot spots: {list}", list=", ".join(
            f"{name} ({code}) {n}" for code, name, n in f.hot_spots)))
    return lines


def stats_text(core: Core, t: Translator, f: Figures, label: str) -> str:
    """What /stats answers: one unit, this month so far."""
    return "\n".join([t._("📊 {unit} — {period} so far", unit=f.scope.label(t.locale),
                          period=label), *figures_lines(core, t, f)])


def report_text(core: Core, t: Translator, report: Report) -> str:
    """The monthly report's chat summary: the top scope, then departments and workers."""
    lines = [t._("📑 {kind} — {unit} — {period}", kind=t._(PERIOD_KINDS[report.period.kind]),
                 unit=report.top.scope.label(t.locale), period=report.period.label),
             *figures_lines(core, t, report.top)]
    weights = core.config.report
    rated = [(d.score(weights.department_weights), d) for d in report.departments]
    rated = [(s, d) for s, d in rated if s is not None]
    if rated:
        lines.append(t._("Departments: {list}", list=", ".join(
            f"{d.unit.label(t.locale)} {s:.1f}" for s, d in sorted(rated, key=lambda x: -x[0]))))
    scored = sorted([w for w in report.workers if w.total is not None], key=lambda w: -w.total)
    if scored:
        lines.append(t._("Best grid workers: {list}", list=", ".join(
            f"{w.name} {w.total:.1f}" for w in scored[:3])))
    lines.append(t._("Charts and the workbook follow; definitions: docs/reports.md."))
    return "\n".join(lines)
