"""One self-contained HTML page of an aiopt report: the context as a table, the summary of gains
and costs, and per technique its figures (SVG, inline) and every result with its repro command.
No script, no external file: the page opens from disk, mail or a CI artifact as it is.

Used by plot.py --html FILE.
"""
import html
import json
import pathlib


def human_bytes(n):
    if not isinstance(n, (int, float)):
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def flatten(value, prefix=""):
    """(dotted key, text) rows of a nested JSON object; lists of scalars joined."""
    rows = []
    if isinstance(value, dict):
        for key, item in value.items():
            rows.extend(flatten(item, f"{prefix}.{key}" if prefix else key))
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        rows.append((prefix, " ".join(str(v) for v in value)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            rows.extend(flatten(item, f"{prefix}[{i}]"))
    else:
        rows.append((prefix, "" if value is None else str(value)))
    return rows


def table(headers, rows, classes=""):
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def inline_svg(path):
    text = pathlib.Path(path).read_text()
    start = text.find("<svg")
    return text[start:] if start >= 0 else ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.85em; background: #f6f6f6; padding: 0.1em 0.3em; }
.gain { color: #1a7f37; } .cost { color: #b35900; } .failed { color: #c62828; font-weight: bold; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.8em; color: #555; }
details { margin-bottom: 1em; }
"""


def page(context, results, comparisons, manifest, figure_dir, title):
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1>"]

    cpu = context.get("cpu", {})
    blas = context.get("blas", {})
    parts.append(f"<p>{e(str(cpu.get('model', '?')))}, {e(str(context.get('threads', '?')))} threads, "
                 f"BLAS core {e(str(blas.get('core', '?')))} ({e(str(blas.get('core_source', '?')))}); "
                 f"{len(results)} results.</p>")

    # Summary of gains and costs: the report's comparisons when it has them (aiopt report JSON),
    # else the speedup and memory ratio from the results.
    parts.append("<h2>Summary: gains and costs against each baseline</h2>")
    by_key = {(r["technique"], r["variant"], r["device"], json.dumps(r["params"], sort_keys=True)): r for r in results}
    rows = []
    if comparisons:
        for c in comparisons:
            r = by_key.get((c["technique"], c["variant"], c["device"], json.dumps(c["params"], sort_keys=True)), {})
            rows.append([e(c["technique"]), e(c["variant"]), e(c["baseline"]), e(short_params(c["params"])),
                         num(c.get("speedup"), "{:.2f}x"), num(c.get("memory_ratio"), "{:.2f}"),
                         "<br>".join(f'<span class="gain">{e(g)}</span>' for g in c.get("gains", [])),
                         "<br>".join(f'<span class="cost">{e(g)}</span>' for g in c.get("costs", [])),
                         status_cell(r)])
        parts.append(table(["technique", "variant", "baseline", "case", "speedup", "memory ratio", "gains",
                            "costs", "status"], rows))
    else:
        parts.append("<p>This report has no comparisons (a JSONL stream): speedup and memory ratio are "
                     "computed from the results; <code>aiopt report FILE.jsonl -o FILE.json</code> adds "
                     "the full gains and costs.</p>")
        base = {}
        for r in results:
            if r.get("baseline"):
                base[(r["technique"], r["device"], json.dumps(r["params"], sort_keys=True))] = r
        for r in results:
            if r.get("baseline"):
                continue
            b = base.get((r["technique"], r["device"], json.dumps(r["params"], sort_keys=True)))
            speed = ratio(median(b), median(r))
            mem = ratio(peak(r), peak(b))
            rows.append([e(r["technique"]), e(r["variant"]), e(b["variant"] if b else ""), e(short_params(r["params"])),
                         num(speed, "{:.2f}x"), num(mem, "{:.2f}"), status_cell(r)])
        parts.append(table(["technique", "variant", "baseline", "case", "speedup", "memory ratio", "status"], rows))

    techniques = []
    for r in results:
        if r["technique"] not in techniques:
            techniques.append(r["technique"])
    for technique in techniques:
        parts.append(f'<h2 id="{e(technique)}">{e(technique)}</h2>')
        for f in manifest["figures"]:
            if f["technique"] != technique:
                continue
            svg = next((n for n in f["files"] if n.endswith(".svg")), None)
            if svg:
                parts.append(f"<figure>{inline_svg(figure_dir / svg)}<figcaption>{e(f['name'])}"
                             f"{' — ' + e(f['note']) if f.get('note') else ''}</figcaption></figure>")
        for n in manifest["not_drawn"]:
            if n["technique"] == technique:
                parts.append(f"<p>Not drawn ({e(n['kind'])}): {e(n['why'])}</p>")
        rows = []
        for r in results:
            if r["technique"] != technique:
                continue
            t = r.get("timing") or {}
            rows.append([e(r["variant"]) + (" (baseline)" if r.get("baseline") else ""), e(r["device"]),
                         e(short_params(r["params"])), status_cell(r),
                         num(t.get("median"), "{:.4g} ms"), e(human_bytes((r.get("memory") or {}).get("peak_bytes"))),
                         f"<code>{e(r.get('repro', ''))}</code>"])
        parts.append(f"<details open><summary>{len(rows)} results</summary>" +
                     table(["variant", "device", "params", "status", "median", "peak memory", "repro"], rows) +
                     "</details>")

    parts.append("<h2>Context</h2>")
    parts.append(table(["key", "value"], [[e(k), e(v)] for k, v in flatten(context)]))
    parts.append("</body></html>\n")
    return "".join(parts)


def short_params(params):
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def median(r):
    return ((r or {}).get("timing") or {}).get("median")


def peak(r):
    return ((r or {}).get("memory") or {}).get("peak_bytes")


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def num(value, fmt):
    return f'<span class="num">{html.escape(fmt.format(value))}</span>' if isinstance(value, (int, float)) else ""


def status_cell(r):
    status = (r or {}).get("status", "")
    if status == "ok" or not status:
        return html.escape(status)
    return f'<span class="failed">{html.escape(status)}</span>: {html.escape(r.get("message", ""))}'
