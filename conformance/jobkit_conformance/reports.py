"""Report writers: a terminal matrix (rich), JSON, JUnit XML and Markdown.

All of them read a `RunResult` and nothing else, so a CI page can show any of them.
"""

from __future__ import annotations

import json
from typing import IO
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.table import Table

from jobkit_conformance.outcome import FIGURES, CheckOutcome, Outcome, RunResult, figures_of

_SKIPPED = (Outcome.XFAIL, Outcome.UNCLAIMED, Outcome.NOT_APPLICABLE, Outcome.NOT_RUN)

_STYLE = {
    Outcome.PASS: "green",
    Outcome.FAIL: "bold red",
    Outcome.XFAIL: "yellow",
    Outcome.XPASS: "bold red",
    Outcome.REFUSED: "green",
    Outcome.UNCLAIMED: "dim",
    Outcome.NOT_APPLICABLE: "dim",
    Outcome.NOT_RUN: "yellow",
    Outcome.ERROR: "bold red",
}


def _counts(o: CheckOutcome) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in o.counts.items())


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def figures(o: CheckOutcome) -> str:
    """The check's measured figures, e.g. ``recovery max 2.10 s, bound 5.40 s``."""
    found = figures_of(o)
    parts = []
    for key, label in FIGURES:
        if key in found:
            unit = " jobs/s" if key == "throughput_jobs_s" else " s"
            digits = 0 if key == "throughput_jobs_s" else 2
            parts.append(f"{label} {found[key]:.{digits}f}{unit}")
    return ", ".join(parts)


def figures_table(result: RunResult) -> list[tuple[str, str]]:
    """(check id, figures) for every check that measured something."""
    return [(o.id, figures(o)) for o in result.outcomes if figures_of(o)]


def verdict_line(result: RunResult) -> str:
    tally: dict[str, int] = {}
    for o in result.outcomes:
        tally[str(o.outcome)] = tally.get(str(o.outcome), 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
    word = "CONFORMANT" if result.conformant else "NOT CONFORMANT"
    return (
        f"{word}: {result.backend_name} ({result.backend}) - {parts} in {result.duration_s:.1f} s"
    )


def write_terminal(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"jobkit conformance: {result.backend_name}", show_lines=False)
    table.add_column("check")
    table.add_column("capability")
    table.add_column("outcome")
    table.add_column("counts")
    table.add_column("figures")
    table.add_column("summary", overflow="fold")
    for o in result.outcomes:
        style = _STYLE[o.outcome]
        table.add_row(
            o.id,
            o.capability,
            f"[{style}]{o.outcome.value.upper()}[/]",
            _counts(o),
            figures(o),
            o.summary,
        )
    console.print(table)
    caps = Table(title="capabilities")
    caps.add_column("capability")
    caps.add_column("claimed")
    caps.add_column("verdict")
    for v in result.capabilities:
        caps.add_row(
            v.name,
            "yes" if v.claimed else "no",
            f"[{'green' if v.ok else 'bold red'}]{v.summary}[/]",
        )
    console.print(caps)
    measured = Table(title=f"measured figures: {result.backend_name}")
    measured.add_column("check")
    measured.add_column("outcome")
    measured.add_column("figures")
    by_id = {o.id: o for o in result.outcomes}
    for check_id, text in figures_table(result):
        outcome = by_id[check_id].outcome
        measured.add_row(check_id, f"[{_STYLE[outcome]}]{outcome.value.upper()}[/]", text)
    console.print(measured)
    for o in result.failed:
        console.print(f"[bold red]{o.id}[/]: {o.summary}")
        for d in o.details[:10]:
            console.print(f"    {d}")
    style = "bold green" if result.conformant else "bold red"
    console.print(f"[{style}]{verdict_line(result)}[/]")


def write_json(result: RunResult, out: IO[str]) -> None:
    json.dump(result.to_dict(), out, indent=2, sort_keys=True)
    out.write("\n")


def junit_xml(result: RunResult) -> str:
    bad_caps = sum(1 for v in result.capabilities if not v.ok)
    suite = ET.Element(
        "testsuite",
        {
            "name": f"jobkit-conformance[{result.backend_name}]",
            "tests": str(len(result.outcomes) + len(result.capabilities)),
            "failures": str(
                bad_caps
                + sum(1 for o in result.outcomes if o.outcome in (Outcome.FAIL, Outcome.XPASS))
            ),
            "errors": str(sum(1 for o in result.outcomes if o.outcome is Outcome.ERROR)),
            "skipped": str(sum(1 for o in result.outcomes if o.outcome in _SKIPPED)),
            "time": f"{result.duration_s:.3f}",
        },
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "backend", "value": result.backend})
    for o in result.outcomes:
        for key, value in figures_of(o).items():
            ET.SubElement(props, "property", {"name": f"{o.id}.{key}", "value": f"{value:g}"})
    for o in result.outcomes:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"jobkit_conformance.{o.capability}",
                "name": o.id,
                "time": f"{o.duration_s:.3f}",
            },
        )
        body = "\n".join([o.summary, *o.details])
        if o.outcome in (Outcome.FAIL, Outcome.XPASS):
            ET.SubElement(case, "failure", {"message": o.summary}).text = body
        elif o.outcome is Outcome.ERROR:
            ET.SubElement(case, "error", {"message": o.summary}).text = body
        elif o.outcome in _SKIPPED:
            ET.SubElement(
                case, "skipped", {"message": f"{o.outcome.value}: {o.reason or o.summary}"}
            )
        else:
            ET.SubElement(case, "system-out").text = o.summary
    for v in result.capabilities:
        case = ET.SubElement(
            suite, "testcase", {"classname": "jobkit_conformance.capabilities", "name": v.name}
        )
        if not v.ok:
            ET.SubElement(case, "failure", {"message": v.summary})
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: RunResult) -> str:
    lines = [
        f"## jobkit conformance: {result.backend_name}",
        "",
        f"**{verdict_line(result)}**",
        "",
        "| check | capability | outcome | counts | figures | summary |",
        "|---|---|---|---|---|---|",
    ]
    for o in result.outcomes:
        lines.append(
            f"| `{o.id}` | {o.capability} | **{o.outcome.value}** | {_md(_counts(o))} | "
            f"{figures(o)} | {_md(o.summary)} |"
        )
    lines += ["", "| measured | outcome | figures |", "|---|---|---|"]
    by_id = {o.id: o for o in result.outcomes}
    for check_id, text in figures_table(result):
        lines.append(f"| `{check_id}` | **{by_id[check_id].outcome.value}** | {text} |")
    lines += ["", "| capability | claimed | verdict |", "|---|---|---|"]
    for v in result.capabilities:
        lines.append(f"| {v.name} | {'yes' if v.claimed else 'no'} | {_md(v.summary)} |")
    return "\n".join(lines) + "\n"
