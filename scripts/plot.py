#!/usr/bin/env python3
"""Draw the figures that tell each technique's story from aiopt reports.

  python3 scripts/plot.py REPORT [REPORT ...] -o OUTDIR [--formats png,svg] [--html FILE]

REPORT is any aiopt report: JSON (`-o r.json`), JSONL (`-o r.jsonl`, streamed by bench and sweep)
or several shards of one sweep given together. For every technique present it writes, as PNG and
SVG into OUTDIR:

  <technique>_tradeoff       each variant's gain against its main cost, the Pareto front marked
  <technique>_scaling        time and workspace against N, log-log, with the fitted exponents and
                             the crossover (flash_attention, linear_attention; needs 2+ seq_len)
  <technique>_<series>       the curves the report carries (loss, LR, loss scale, ...), the
                             baseline's beside each variant's, one figure per case
  kv_caching_decode_position decode ms/token by position in the generation
  gradient_checkpointing_memory   activation memory and step time against k
  quantization_bytes_error   weight bytes against error
  speculative_decoding_gamma acceptance, tokens per pass and speedup (measured, predicted) against γ
  dynamic_batching_latency   p99 TTFT against achieved tokens/s, achieved against offered requests/s,
                             each variant's saturation rate starred (needs 2+ rate)

and OUTDIR/figures.json, which lists every figure with the number of points drawn in it (counted
from the drawn artists), and every figure it could not draw with the reason. A technique it does
not know gets the generic trade-off (speedup against memory) and a note saying so. A report that
cannot be read exits 2 with the reason.

--html FILE also writes one self-contained page (scripts/report_html.py): the summary of gains
and costs, each technique's figures inline as SVG, every result's repro command, the context.
"""
import argparse
import collections
import json
import math
import os
import pathlib
import re
import sys

SCHEMA = "aiopt-report/1"


def import_matplotlib():
    """matplotlib from this interpreter, else re-run under Debian's python3, which has it when
    python3-matplotlib is installed (scripts/setup.sh) but another python3 is first on PATH."""
    try:
        import matplotlib
    except ImportError:
        system = "/usr/bin/python3"
        if os.path.realpath(sys.executable) != os.path.realpath(system) and os.access(system, os.X_OK) \
                and not os.environ.get("AIOPT_PLOT_REEXEC"):
            os.environ["AIOPT_PLOT_REEXEC"] = "1"
            os.execv(system, [system] + sys.argv)
        sys.exit("plot.py: matplotlib is not installed for " + sys.executable +
                 ": install Debian's python3-matplotlib (scripts/setup.sh does) or `pip install matplotlib`")
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "aiopt"  # the same report draws the same SVG
    import matplotlib.pyplot as plt
    return plt


class BadReport(Exception):
    pass


# ---- reading


def read_report(path):
    """(context, results, comparisons) of one JSON or JSONL report; comparisons is None for a
    JSONL stream, which carries none."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as e:
        raise BadReport(f"{path}: cannot read: {e.strerror}")
    stripped = text.lstrip()
    if not stripped:
        raise BadReport(f"{path}: empty file")
    records = []
    try:
        if stripped.startswith("{") and "\n{" not in stripped.rstrip():
            records = [json.loads(text)]
        else:
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise BadReport(f"{path}:{number}: not JSON: {e.msg}")
    except json.JSONDecodeError as e:
        raise BadReport(f"{path}: not JSON: {e.msg} at line {e.lineno}")
    context, results, comparisons = None, [], None
    for record in records:
        if not isinstance(record, dict):
            raise BadReport(f"{path}: a record is not a JSON object")
        if "schema" in record:
            if record["schema"] != SCHEMA:
                raise BadReport(f"{path}: schema {record['schema']!r}, expected {SCHEMA!r}")
            context = record.get("context", {})
            results.extend(record.get("results", []))
            if "comparisons" in record:
                comparisons = record["comparisons"]
        elif "technique" in record:
            results.append(record)
        else:
            raise BadReport(f"{path}: a record is neither a report header nor a result")
    if context is None:
        raise BadReport(f"{path}: no aiopt report header (schema {SCHEMA})")
    for i, r in enumerate(results):
        for key in ("technique", "variant", "device", "params", "status"):
            if key not in r:
                raise BadReport(f"{path}: result {i + 1} has no '{key}'")
    return context, results, comparisons


def read_reports(paths):
    """(the first report's context, every report's results, their comparisons or None):
    later files' results replace earlier ones of the same case; comparisons only when one report
    holding them is given (shards carry none)."""
    by_key, context, comparisons = {}, None, None
    for path in paths:
        ctx, results, comps = read_report(path)
        context = context if context is not None else ctx
        comparisons = comps if len(paths) == 1 else None
        for r in results:
            by_key[result_key(r)] = r
    if not by_key:
        raise BadReport("no results in " + ", ".join(paths))
    return context, list(by_key.values()), comparisons


def params_text(params, leave_out=()):
    return ",".join(f"{k}={params[k]}" for k in sorted(params) if k not in leave_out)


def result_key(r):
    return (r["technique"], r["variant"], r["device"], params_text(r["params"]))


def case_key(r, leave_out=()):
    return (r["device"], params_text(r["params"], leave_out))


def metric(r, name):
    """A metric's value, None when absent or not a finite number."""
    m = r.get("metrics", {}).get(name)
    value = m.get("value") if isinstance(m, dict) else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def median_ms(r):
    t = r.get("timing")
    return t.get("median") if t and t.get("median", 0) > 0 else None


def peak_bytes(r):
    m = r.get("memory")
    return m.get("peak_bytes") if m and m.get("peak_bytes", 0) > 0 else None


def ok(results):
    return [r for r in results if r.get("status") == "ok"]


def cases(results, leave_out=()):
    """{case key: {"baseline": result or None, "results": [results]}} in report order."""
    out = collections.OrderedDict()
    for r in results:
        entry = out.setdefault(case_key(r, leave_out), {"baseline": None, "results": []})
        entry["results"].append(r)
        if r.get("baseline"):
            entry["baseline"] = r
    return out


# ---- what the figures show


# The trade-off axes: (name, direction) with name a metric or one of the ratios the report's
# comparisons define: speedup = baseline median / variant median, memory_ratio = variant
# peak_bytes / baseline peak_bytes. x is the cost, y the gain.
SPEEDUP, MEMORY = ("speedup", "higher"), ("memory_ratio", "lower")
TRADEOFFS = {
    "kv_caching": (MEMORY, SPEEDUP),
    "flash_attention": (MEMORY, SPEEDUP),
    "tensor_fusion": (MEMORY, SPEEDUP),
    "gradient_checkpointing": (SPEEDUP, MEMORY),  # memory is what it buys, with time
    "gradient_accumulation": (MEMORY, SPEEDUP),
    "quantization": (("mean_rel_error", "lower"), SPEEDUP),
    "linear_attention": (("mean_rel_error", "lower"), SPEEDUP),
    "mixed_precision": (("val_loss_gap_vs_fp32", "lower"), SPEEDUP),
    "lr_scheduling": (("steps_to_target", "lower"), ("final_val_loss", "lower")),
    "lora": (("trainable_parameters", "lower"), ("eval_loss_task", "lower")),
    # a distilled step also runs the teacher's forward: time is what it pays for the loss
    "knowledge_distillation": (SPEEDUP, ("student_val_loss", "lower")),
    # the draft's weights and cache are what it pays for the speed
    "speculative_decoding": (MEMORY, SPEEDUP),
    # serving: throughput bought with waiting (a batch's queue) at the tail
    "dynamic_batching": (("ttft_p99_ms", "lower"), ("output_tokens_per_s", "higher")),
}
# quantization's error at level=model is the perplexity it costs.
MODEL_LEVEL_ERROR = ("perplexity_increase", "lower")

LABELS = {
    "speedup": "speedup over the baseline (x)",
    "memory_ratio": "peak memory / baseline's",
    "mean_rel_error": "mean relative error vs exact",
    "perplexity_increase": "perplexity increase over fp32",
    "val_loss_gap_vs_fp32": "validation loss gap to fp32 (nats)",
    "steps_to_target": "steps to the target loss",
    "final_val_loss": "final validation loss (nats)",
    "student_val_loss": "student's validation loss (nats)",
    "ttft_p99_ms": "p99 time to first token (ms)",
    "output_tokens_per_s": "output tokens/s served",
}


def axis_value(r, baseline, name):
    if name == "speedup":
        a, b = median_ms(baseline) if baseline else None, median_ms(r)
        return a / b if a and b else None
    if name == "memory_ratio":
        a, b = peak_bytes(baseline) if baseline else None, peak_bytes(r)
        return b / a if a and b else None
    return metric(r, name)


def pareto(points, x_better, y_better):
    """The points no other point beats in both coordinates, sorted by x."""
    sx = 1 if x_better == "lower" else -1
    sy = 1 if y_better == "lower" else -1

    def beats(p, q):
        return sx * p[0] <= sx * q[0] and sy * p[1] <= sy * q[1] and (p[0], p[1]) != (q[0], q[1])

    front = [q for q in points if not any(beats(p, q) for p in points)]
    return sorted(set(front))


# ---- drawing


class Figures:
    """Writes figures and keeps the manifest."""

    def __init__(self, plt, out, formats):
        self.plt, self.out, self.formats = plt, out, formats
        self.drawn, self.not_drawn = [], []

    def save(self, fig, name, technique, kind, note=None):
        files = []
        for fmt in self.formats:
            path = self.out / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
            files.append(path.name)
        entry = {"name": name, "technique": technique, "kind": kind, "files": files,
                 "points": count_points(fig), "lines": count_lines(fig)}
        if note:
            entry["note"] = note
        self.drawn.append(entry)
        self.plt.close(fig)

    def skip(self, technique, kind, why):
        self.not_drawn.append({"technique": technique, "kind": kind, "why": why})


# Artists that carry the report's data are tagged so the manifest counts them and nothing else
# (not a Pareto front, a fitted line or a marker).
DATA = "data"


def count_points(fig):
    n = 0
    for ax in fig.axes:
        n += sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_gid() == DATA)
        n += sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() == DATA)
        n += sum(1 for p in ax.patches if p.get_gid() == DATA)
    return n


def count_lines(fig):
    return sum(1 for ax in fig.axes for line in ax.get_lines() if line.get_gid() == DATA)


def variant_styles(results):
    """A colour per variant, the baseline black, in report order."""
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    styles, i = {}, 0
    for r in results:
        v = r["variant"]
        if v in styles:
            continue
        if r.get("baseline"):
            styles[v] = "black"
        else:
            styles[v] = colours[i % len(colours)]
            i += 1
    return styles


def tradeoff(figs, technique, results):
    known = technique in TRADEOFFS
    default_axes = TRADEOFFS.get(technique, (MEMORY, SPEEDUP))
    by_case = cases(results)
    styles = variant_styles(results)
    names = case_names(by_case)
    # Cases whose axes differ (quantization's gemm and model levels) get a panel each.
    panels = collections.OrderedDict()
    for c, (key, entry) in enumerate(by_case.items()):
        axes = default_axes
        if technique == "quantization" and entry["results"][0]["params"].get("level") == "model":
            axes = (MODEL_LEVEL_ERROR, SPEEDUP)
        panels.setdefault(axes, []).append((c, entry))
    plt = figs.plt
    fig, axs = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False)
    markers = "osD^v<>P*Xh"
    drawn = 0
    for ax, ((x_axis, y_axis), entries) in zip(axs[0], panels.items()):
        for c, entry in entries:
            points = []
            for r in entry["results"]:
                x = axis_value(r, entry["baseline"], x_axis[0])
                y = axis_value(r, entry["baseline"], y_axis[0])
                if x is None or y is None:
                    continue
                ax.scatter([x], [y], color=styles[r["variant"]], marker=markers[c % len(markers)], s=40,
                           gid=DATA, zorder=3)
                points.append((x, y))
            if len(points) > 1:
                front = pareto(points, x_axis[1], y_axis[1])
                ax.plot([p[0] for p in front], [p[1] for p in front], color="0.6", linestyle="--",
                        linewidth=1, zorder=1)
            drawn += len(points)
        legend_for(ax, styles, [(markers[c % len(markers)], names[c]) for c, _ in entries] if len(by_case) > 1 else [])
        ax.set_xlabel(axis_label(x_axis))
        ax.set_ylabel(axis_label(y_axis))
        ax.grid(alpha=0.3)
    if drawn == 0:
        plt.close(fig)
        figs.skip(technique, "tradeoff", f"no result holds both {default_axes[0][0]} and {default_axes[1][0]}")
        return
    fig.suptitle(f"{technique}: gain against cost, per case (dashed: the Pareto front)", fontsize=10)
    note = None if known else (f"plot.py has no figures of its own for {technique}: "
                               "drew the generic trade-off (speedup against memory)")
    if note:
        print("plot.py: " + note, file=sys.stderr)
    figs.save(fig, f"{technique}_tradeoff", technique, "tradeoff", note)


def case_names(by_case):
    """Each case named by the parameters that differ between the cases ("m=24"), in case order."""
    params = [entry["results"][0]["params"] for entry in by_case.values()]
    devices = [key[0] for key in by_case]
    varying = sorted({k for p in params for k in p if any(q.get(k) != p.get(k) for q in params)})
    names = []
    for p, device in zip(params, devices):
        parts = ([device] if len(set(devices)) > 1 else []) + [f"{k}={p.get(k)}" for k in varying]
        names.append(", ".join(parts) or "the case")
    return names


def legend_for(ax, styles, case_markers):
    """Variants by colour, cases by marker."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=v) for v, c in styles.items()]
    handles += [Line2D([], [], color="0.4", marker=m, linestyle="", label=name) for m, name in case_markers]
    ax.legend(handles=handles, fontsize=7)


def axis_label(axis):
    name, better = axis
    return f"{LABELS.get(name, name)} ({better} is better)"


def dedupe_legend(ax, **kwargs):
    handles, labels = ax.get_legend_handles_labels()
    seen = collections.OrderedDict()
    for h, label in zip(handles, labels):
        seen.setdefault(label, h)
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=8, **kwargs)


def loglog_fit(xs, ys):
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else float("nan")


def crossover(curve, base):
    """The first N where `curve` becomes faster than `base` (log-linear between measured N), or None."""
    common = sorted(set(curve) & set(base))
    previous = None
    for n in common:
        d = math.log(curve[n]) - math.log(base[n])
        if d < 0:
            if previous is None:
                return n if n != common[0] else None  # faster from the start: no crossing measured
            pn, pd = previous
            t = pd / (pd - d)
            return math.exp(math.log(pn) + t * (math.log(n) - math.log(pn)))
        previous = (n, d)
    return None


def scaling(figs, technique, results):
    groups = cases(results, leave_out=("seq_len",))
    styles = variant_styles(results)
    plt = figs.plt
    for g, (key, entry) in enumerate(groups.items()):
        by_variant = collections.OrderedDict()
        for r in entry["results"]:
            by_variant.setdefault(r["variant"], []).append(r)
        lens = {r["params"].get("seq_len") for r in entry["results"]}
        if len(lens) < 2:
            figs.skip(technique, "scaling", f"case {key[1]}: one seq_len ({sorted(lens)[0]}); "
                      "sweep seq_len (e.g. --set seq_len=256-4096*2) to draw time against N")
            continue
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
        times = {}
        for variant, rs in by_variant.items():
            rs = sorted(rs, key=lambda r: r["params"]["seq_len"])
            t = [(r["params"]["seq_len"], median_ms(r)) for r in rs if median_ms(r)]
            w = [(r["params"]["seq_len"], metric(r, "workspace_bytes")) for r in rs
                 if metric(r, "workspace_bytes")]
            times[variant] = dict(t)
            for ax, pts, what in ((ax_t, t, "time"), (ax_m, w, "workspace")):
                if not pts:
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                slope = loglog_fit(xs, ys) if len(pts) > 1 else float("nan")
                label = variant + (f"  (N^{slope:.2f})" if math.isfinite(slope) else "")
                ax.plot(xs, ys, marker="o", color=styles[variant], label=label, gid=DATA,
                        linewidth=2.2 if variant == baseline_name(entry) else 1.4)
        base = baseline_name(entry)
        if base in times:
            for line in ax_t.get_lines():
                variant = line.get_label().split()[0]
                n = crossover(times[variant], times[base]) if variant != base else None
                if n:
                    ax_t.axvline(n, color=styles[variant], linestyle=":", linewidth=1)
                    line.set_label(line.get_label() + f", faster from N≈{n:.0f}")
        for ax, ylabel in ((ax_t, "median time per step (ms)"), (ax_m, "workspace (bytes)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
            if ax.get_lines():
                ax.legend(fontsize=8)
        fig.suptitle(f"{technique}: scaling with N ({key[1]})", fontsize=9)
        suffix = f"_case{g + 1}" if len(groups) > 1 else ""
        figs.save(fig, f"{technique}_scaling{suffix}", technique, "scaling")


def baseline_name(entry):
    return entry["baseline"]["variant"] if entry["baseline"] else None


SERIES_LABELS = {"train_loss": "training loss (nats)", "val_loss": "validation loss (nats)",
                 "lr": "learning rate", "loss_scale": "loss scale", "zero_grad_fraction": "zero-gradient fraction"}


def series(figs, technique, results):
    by_case = cases(results)
    styles = variant_styles(results)
    plt = figs.plt
    names = collections.OrderedDict()
    for r in results:
        for name in r.get("series", {}):
            names[name] = None
    for name in names:
        for c, (key, entry) in enumerate(by_case.items()):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for r in entry["results"]:
                s = r.get("series", {}).get(name)
                if not s or not s.get("x"):
                    continue
                is_base = r.get("baseline")
                ax.plot(s["x"], s["y"], color=styles[r["variant"]], label=r["variant"], gid=DATA,
                        linewidth=2.2 if is_base else 1.2, zorder=3 if is_base else 2)
                ax.set_xlabel(s.get("x_unit", "x"))
                ax.set_ylabel(SERIES_LABELS.get(name, name) + (f" ({s['unit']})" if s.get("unit") and
                                                                name not in SERIES_LABELS else ""))
            if not ax.get_lines():
                plt.close(fig)
                continue
            if name in ("loss_scale", "lr") and all(min(line.get_ydata()) > 0 for line in ax.get_lines()):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(f"{technique}: {name}" + (f" ({key[1]})" if len(by_case) > 1 else ""), fontsize=9)
            suffix = f"_case{c + 1}" if len(by_case) > 1 else ""
            figs.save(fig, f"{technique}_{name}{suffix}", technique, "series")


def kv_decode_position(figs, technique, results):
    pattern = re.compile(r"decode_ms_per_token_t(\d+)_(\d+)pct$")
    by_case = cases(results)
    styles = variant_styles(results)
    plt = figs.plt
    for c, (key, entry) in enumerate(by_case.items()):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in entry["results"]:
            pts = sorted(((int(m.group(1)) + int(m.group(2))) / 2, v["value"])
                         for name, v in r.get("metrics", {}).items() if (m := pattern.match(name))
                         and isinstance(v.get("value"), (int, float)))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=styles[r["variant"]],
                        label=r["variant"], gid=DATA)
        if not ax.get_lines():
            plt.close(fig)
            figs.skip(technique, "decode_position", f"case {key[1]}: no decode_ms_per_token_t*pct metrics")
            continue
        ax.set_xlabel("position in the generation (% of gen_tokens, quarter midpoints)")
        ax.set_ylabel("decode ms per token")
        values = [y for line in ax.get_lines() for y in line.get_ydata()]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")  # recompute and a cache differ by orders of magnitude
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"kv_caching: decode cost by position\n({key[1]})", fontsize=8)
        suffix = f"_case{c + 1}" if len(by_case) > 1 else ""
        figs.save(fig, f"kv_caching_decode_position{suffix}", technique, "decode_position")


def checkpointing_memory(figs, technique, results):
    styles = variant_styles(results)
    plt = figs.plt
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        k, mem, ms = metric(r, "segment_blocks"), metric(r, "activation_peak_bytes"), median_ms(r)
        if k is None or mem is None:
            continue
        ax_m.scatter([k], [mem], color=styles[r["variant"]], label=r["variant"], gid=DATA, zorder=3)
        if ms:
            ax_t.scatter([k], [ms], color=styles[r["variant"]], label=r["variant"], gid=DATA, zorder=3)
    if not ax_m.collections:
        plt.close(fig)
        figs.skip(technique, "memory_vs_k", "no result holds segment_blocks and activation_peak_bytes")
        return
    for ax, ylabel in ((ax_m, "activation peak (bytes)"), (ax_t, "median step time (ms)")):
        ax.set_xlabel("k: blocks per checkpointed segment (0: none)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        dedupe_legend(ax)
    fig.suptitle("gradient_checkpointing: memory and time against k", fontsize=9)
    figs.save(fig, "gradient_checkpointing_memory", technique, "memory_vs_k")


def quantization_bytes_error(figs, technique, results):
    styles = variant_styles(results)
    plt = figs.plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    levels = set()
    for r in results:
        model = r["params"].get("level") == "model"
        err = metric(r, "perplexity_increase" if model else "mean_rel_error")
        bpw = metric(r, "bytes_per_weight")
        if err is None or bpw is None:
            continue
        levels.add("model" if model else "gemm")
        ax.scatter([bpw], [err], color=styles[r["variant"]], marker="s" if model else "o",
                   label=r["variant"], gid=DATA, zorder=3)
    if not ax.collections:
        plt.close(fig)
        figs.skip(technique, "bytes_vs_error", "no result holds bytes_per_weight and an error metric")
        return
    dedupe_legend(ax)
    ax.set_xlabel("bytes per weight (scales included)")
    ax.set_ylabel(" / ".join(({"gemm": "mean relative error (circles)",
                               "model": "perplexity increase (squares)"}[lvl] for lvl in sorted(levels))))
    ax.grid(alpha=0.3)
    ax.set_title("quantization: weight bytes against error", fontsize=9)
    figs.save(fig, "quantization_bytes_error", technique, "bytes_vs_error")


def lora_rank(figs, technique, results):
    """Eval loss on the new dialect against the adapters' rank, a line per variant and targets,
    with full fine-tuning's loss as a horizontal reference and the base's in the title."""
    styles = variant_styles(results)
    plt = figs.plt
    lines = collections.OrderedDict()
    full, base = [], []
    for r in results:
        loss = metric(r, "eval_loss_task")
        if loss is None:
            continue
        if r["variant"] == "full_finetune":
            full.append(loss)
            continue
        if metric(r, "base_eval_loss_task") is not None:
            base.append(metric(r, "base_eval_loss_task"))
        key = (r["variant"], r["params"].get("targets"), case_key(r, leave_out=("rank",)))
        lines.setdefault(key, []).append((r["params"]["rank"], loss))
    if not any(len(points) > 1 for points in lines.values()):
        figs.skip(technique, "rank", "no variant ran at two or more ranks (sweep rank, e.g. --set rank=1,2,4,8)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (variant, targets, _), points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], color=styles[variant],
                marker="s" if targets == "all" else "o", linestyle="--" if targets == "all" else "-",
                label=f"{variant} ({targets})", gid=DATA)
    if full:
        ax.axhline(min(full), color="0.4", linestyle=":", linewidth=1.2, label="full_finetune")
    ax.set_xscale("log", base=2)
    ranks = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("eval loss on the new dialect (nats)")
    ax.grid(alpha=0.3)
    dedupe_legend(ax)
    before = f" (the base before fine-tuning: {min(base):.3f})" if base else ""
    ax.set_title(f"lora: loss on the new dialect against rank{before}", fontsize=9)
    figs.save(fig, "lora_rank", technique, "rank")


def distillation_loss_curves(figs, technique, results):
    """Training and validation loss of each variant of a case, side by side: the student on hard
    labels against the distilled one. A distilled training loss is the distillation objective
    (soft term included), so only the validation panel compares like with like."""
    by_case = cases(results)
    styles = variant_styles(results)
    plt = figs.plt
    for c, (key, entry) in enumerate(by_case.items()):
        fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(11, 4.2))
        for r in entry["results"]:
            for ax, name in ((ax_t, "train_loss"), (ax_v, "val_loss")):
                s = r.get("series", {}).get(name)
                if s and s.get("x"):
                    ax.plot(s["x"], s["y"], color=styles[r["variant"]], label=r["variant"], gid=DATA,
                            linewidth=2.2 if r.get("baseline") else 1.2, marker="o" if name == "val_loss" else None,
                            markersize=3)
        if not ax_t.get_lines() and not ax_v.get_lines():
            plt.close(fig)
            figs.skip(technique, "loss_curves", f"case {key[1]}: no train_loss or val_loss series")
            continue
        ax_t.set_ylabel("training objective (nats)")
        ax_v.set_ylabel("validation cross-entropy (nats)")
        for ax in (ax_t, ax_v):
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            dedupe_legend(ax)
        fig.suptitle(f"knowledge_distillation: distilled vs hard labels\n({key[1]})", fontsize=8)
        suffix = f"_case{c + 1}" if len(by_case) > 1 else ""
        figs.save(fig, f"knowledge_distillation_loss_curves{suffix}", technique, "loss_curves")


def speculative_gamma(figs, technique, results):
    """Against γ, a colour per variant (and draft): the acceptance rate α (dotted), the tokens per
    target pass (solid) beside (1 − α^(γ+1))/(1 − α) (dashed) on the left; the measured speedup
    (solid) beside Leviathan's prediction (dashed) and the prediction with the measured verify
    cost (dotted) on the right, the best measured γ of each colour starred and named."""
    lines = collections.OrderedDict()
    for r in results:
        if metric(r, "acceptance_rate") is None or "gamma" not in r["params"]:
            continue
        params = {k: v for k, v in r["params"].items()
                  if not (r["variant"] == "prompt_lookup" and k.startswith("draft"))}
        lines.setdefault((r["variant"], params_text(params, ("gamma",))), []).append(r)
    if not any(len({r["params"]["gamma"] for r in rs}) > 1 for rs in lines.values()):
        figs.skip(technique, "gamma", "no variant ran at two or more values of gamma (sweep it, e.g. --set gamma=1-16*2)")
        return
    # A colour is named by its variant and the parameters that differ between the lines.
    values = collections.defaultdict(set)
    for _, text in lines:
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            values[key].add(value)
    varying = {k for k, v in values.items() if len(v) > 1}
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    plt = figs.plt
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    gammas_all = set()
    for i, ((variant, _), rs) in enumerate(lines.items()):
        rs.sort(key=lambda r: r["params"]["gamma"])
        colour = colours[i % len(colours)]
        # A parameter at 0 keeps its default (aiopt's convention), so it is left out of the name.
        name = variant + "".join(f" {k}={rs[0]['params'][k]}" for k in sorted(varying) if k in rs[0]["params"]
                                 and str(rs[0]["params"][k]) != "0"
                                 and not (variant == "prompt_lookup" and k.startswith("draft")))
        gammas = [r["params"]["gamma"] for r in rs]
        gammas_all.update(gammas)

        def plot(ax, metric_name, style, marker, label=None):
            points = [(g, metric(r, metric_name)) for g, r in zip(gammas, rs) if metric(r, metric_name) is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linestyle=style,
                        marker=marker, markersize=3.5, label=label, gid=DATA)
            return points

        plot(ax_a, "acceptance_rate", ":", "^")
        plot(ax_a, "tokens_per_pass", "-", "o")
        plot(ax_a, "tokens_per_pass_predicted", "--", "x")
        measured = plot(ax_s, "speedup", "-", "o")
        plot(ax_s, "speedup_predicted", "--", "x")
        plot(ax_s, "speedup_predicted_measured_verify", ":", "+")
        best = max(measured, key=lambda p: p[1]) if measured else None
        if best:
            ax_s.plot([best[0]], [best[1]], marker="*", markersize=13, color=colour, linestyle="none")
        ax_s.plot([], [], color=colour, linewidth=3,
                  label=name + (f" (best γ {best[0]}: {best[1]:.2f}x)" if best else ""))
    ax_s.axhline(1.0, color="0.3", linewidth=0.8)
    ax_a.set_ylabel("tokens per target pass  ·  α (dotted)")
    ax_s.set_ylabel("speedup over the target alone (x)")
    from matplotlib.lines import Line2D
    ax_a.legend(handles=[Line2D([], [], color="0.3", linestyle="-", marker="o", label="tokens per pass, measured"),
                         Line2D([], [], color="0.3", linestyle="--", marker="x", label="(1 − α^(γ+1)) / (1 − α)"),
                         Line2D([], [], color="0.3", linestyle=":", marker="^", label="α, acceptance rate")],
                fontsize=7, loc="center right")
    styles = ax_s.legend(handles=[Line2D([], [], color="0.3", linestyle="-", marker="o", label="measured"),
                                  Line2D([], [], color="0.3", linestyle="--", marker="x",
                                         label="predicted, verify = 1 step"),
                                  Line2D([], [], color="0.3", linestyle=":", marker="+",
                                         label="predicted, measured verify cost")],
                         fontsize=7, loc="upper right")
    ax_s.add_artist(styles)
    handles = [h for h in ax_s.get_lines() if h.get_label() and not h.get_label().startswith("_")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    ticks = sorted(gammas_all)
    for ax in (ax_a, ax_s):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("γ (tokens drafted per pass)")
        ax.grid(alpha=0.3)
    fig.suptitle("speculative_decoding: acceptance, tokens per pass and speedup against γ", fontsize=9)
    fig.subplots_adjust(bottom=0.24)
    figs.save(fig, "speculative_decoding_gamma", technique, "gamma")


def saturation(points):
    """The largest offered rate that is kept up with (served >= 0.9 × rate), from (rate, served)
    pairs; None when none is."""
    kept = [rate for rate, served in points if served is not None and served >= 0.9 * rate]
    return max(kept) if kept else None


def dynamic_batching_latency(figs, technique, results):
    """A line per variant (and group of its other parameters but the stream's length), its points
    in order of the offered rate λ: p99 time to first token (log) against the achieved output
    tokens/s on the left; the requests/s served against λ on the right, beside y = x (dashed).
    Served is the output tokens/s over the tokens per request the line shows at its lowest λ: the
    tokens flow steadily where completions come in lumps (a static batch's all at once). Each
    line's saturation point, the largest λ it serves at 90% or more, is starred on both panels and
    named in the legend."""
    lines = collections.OrderedDict()
    for r in results:
        if "rate" not in r["params"] or not metric(r, "output_tokens_per_s"):
            continue
        lines.setdefault((r["variant"],) + case_key(r, ("rate", "requests")), []).append(r)
    one_rate = [key for key, rs in lines.items() if len({r["params"]["rate"] for r in rs}) < 2]
    for key in one_rate:
        del lines[key]
    if not lines:
        figs.skip(technique, "latency", "no variant ran at two or more offered rates "
                  "(sweep rate, e.g. --set rate=1,2,4,8,16)")
        return
    # A line is named by its variant and the parameters (and device) that differ between the lines.
    values = collections.defaultdict(set)
    for _, device, text in lines:
        values["device"].add(device)
        for item in filter(None, text.split(",")):
            k, _, v = item.partition("=")
            values[k].add(v)
    varying = sorted(k for k, v in values.items() if len(v) > 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    plt = figs.plt
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    rates_all, notes = set(), []
    for i, ((variant, device, _), rs) in enumerate(lines.items()):
        rs.sort(key=lambda r: r["params"]["rate"])
        colour = colours[i % len(colours)]
        params = dict(rs[0]["params"], device=device)
        name = variant + "".join(f" {k}={params[k]}" for k in varying if k in params)
        rates = [r["params"]["rate"] for r in rs]
        per_request = metric(rs[0], "output_tokens_per_s") / rates[0]
        achieved = [metric(r, "output_tokens_per_s") / per_request for r in rs]
        rates_all.update(rates)
        left = [(metric(r, "output_tokens_per_s"), metric(r, "ttft_p99_ms"), r["params"]["rate"]) for r in rs]
        left = [p for p in left if p[0] is not None and p[1] is not None and p[1] > 0]
        if left:
            ax_l.plot([p[0] for p in left], [p[1] for p in left], color=colour, marker="o", markersize=4,
                      gid=DATA)
        ax_r.plot(rates, achieved, color=colour, marker="o", markersize=4, gid=DATA)
        saturated = saturation(list(zip(rates, achieved)))
        if saturated is None:
            label = f"{name} (below 90% of λ at every rate)"
        elif saturated == max(rates):
            label = f"{name} (keeps up to {saturated:g} req/s, the highest λ)"
        else:
            label = f"{name} (saturates at {saturated:g} req/s)"
        notes.append(label)
        if saturated is not None:
            star = dict(marker="*", markersize=14, color=colour, markeredgecolor="black", markeredgewidth=0.6,
                        linestyle="none", zorder=4)
            ax_r.plot([saturated], [achieved[rates.index(saturated)]], **star)
            at = [p for p in left if p[2] == saturated]
            if at:
                ax_l.plot([at[0][0]], [at[0][1]], **star)
        ax_r.plot([], [], color=colour, marker="o", label=label)
    low, high = min(rates_all), max(rates_all)
    ax_r.plot([low, high], [low, high], color="0.3", linestyle="--", linewidth=1, label="y = x (every request served)")
    if low > 0 and high / low > 20:
        ax_r.set_xscale("log")
        ax_r.set_yscale("log")
    if ax_l.get_lines():
        ax_l.set_yscale("log")
    ax_l.set_xlabel("achieved output tokens/s")
    ax_l.set_ylabel("time to first token, p99 (ms)")
    ax_r.set_xlabel("offered rate λ (requests/s)")
    ax_r.set_ylabel("requests/s served (tokens/s ÷ tokens per request)")
    for ax in (ax_l, ax_r):
        ax.grid(alpha=0.3, which="both")
    ax_r.legend(fontsize=7, loc="upper left")
    fig.suptitle("dynamic_batching: tail latency against throughput, and the rate served against the rate offered\n"
                 "(★ saturation: the largest λ served at 90% or more)", fontsize=9)
    note = "; ".join(notes)
    if one_rate:
        note += "; left out, one rate only: " + ", ".join(key[0] for key in one_rate)
    figs.save(fig, "dynamic_batching_latency", technique, "latency", note)


# The figures each technique draws besides its trade-off and its series.
SPECIFIC = {
    "flash_attention": [scaling],
    "linear_attention": [scaling],
    "kv_caching": [kv_decode_position],
    "gradient_checkpointing": [checkpointing_memory],
    "quantization": [quantization_bytes_error],
    "lora": [lora_rank],
    "knowledge_distillation": [distillation_loss_curves],
    "speculative_decoding": [speculative_gamma],
    "dynamic_batching": [dynamic_batching_latency],
}


def draw(results, out, formats):
    plt = import_matplotlib()
    out.mkdir(parents=True, exist_ok=True)
    figs = Figures(plt, out, formats)
    by_technique = collections.OrderedDict()
    for r in results:
        by_technique.setdefault(r["technique"], []).append(r)
    for technique, rs in by_technique.items():
        good = ok(rs)
        if not good:
            figs.skip(technique, "all", f"no result ran ok ({len(rs)} {rs[0]['status']} or other)")
            continue
        tradeoff(figs, technique, good)
        for figure in SPECIFIC.get(technique, []):
            figure(figs, technique, good)
        series(figs, technique, good)
    manifest = {"figures": figs.drawn, "not_drawn": figs.not_drawn}
    (out / "figures.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv):
    parser = argparse.ArgumentParser(prog="plot.py", description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="aiopt reports (.json or .jsonl; shards together)")
    parser.add_argument("-o", "--out", required=True, help="folder for the figures")
    parser.add_argument("--formats", default="png,svg", help="comma-separated: png, svg (default both)")
    parser.add_argument("--html", help="also write one self-contained HTML page of the report here")
    parser.add_argument("--title", default="aiopt report", help="the HTML page's title")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if not formats or any(f not in ("png", "svg") for f in formats):
        print(f"plot.py: error: --formats takes png and/or svg, not {args.formats!r}", file=sys.stderr)
        return 2
    if args.html and "svg" not in formats:
        formats.append("svg")  # the page embeds the SVGs
    try:
        context, results, comparisons = read_reports(args.reports)
    except BadReport as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    manifest = draw(results, out, formats)
    for skipped in manifest["not_drawn"]:
        print(f"plot.py: {skipped['technique']} {skipped['kind']}: not drawn: {skipped['why']}", file=sys.stderr)
    print(f"plot.py: {len(manifest['figures'])} figures in {args.out}")
    if args.html:
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
        import report_html
        pathlib.Path(args.html).write_text(report_html.page(context, results, comparisons, manifest, out, args.title))
        print(f"plot.py: wrote {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
