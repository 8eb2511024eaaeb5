#!/usr/bin/env python3
"""scripts/plot.py on reports of the quick suite: every figure exists, is non-empty, and holds as
many points as the report has for it; a broken report exits 2; an unknown technique gets the
generic trade-off and a note; dynamic_batching's latency figure on synthetic reports names each
variant's saturation rate.

  tests/test_plot.py AIOPT PLOT_PY CI_CONFIG

The expected counts are computed here from the report, independently of plot.py; the counts
checked are those plot.py reads back from the artists it drew (figures.json).
"""
import json
import pathlib
import sys
import tempfile

import xml.etree.ElementTree as ET

from script_checks import check, run, verdict



def results_of(path):
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        record = json.loads(line)
        if "technique" in record:
            out.append(record)
    return out


def value(r, name):
    m = r.get("metrics", {}).get(name)
    return m.get("value") if m else None


# What each technique's trade-off point needs beyond timing and memory: its cost metric.
TRADEOFF_METRIC = {"quantization": None, "linear_attention": "mean_rel_error",
                   "mixed_precision": "val_loss_gap_vs_fp32", "lr_scheduling": "steps_to_target",
                   "lora": "eval_loss_task",
                   "knowledge_distillation": "student_val_loss"}


def expected_tradeoff_points(results):
    points = 0
    for r in results:
        needs = TRADEOFF_METRIC.get(r["technique"])
        if r["technique"] == "quantization":
            needs = "perplexity_increase" if r["params"].get("level") == "model" else "mean_rel_error"
        if r["technique"] == "lr_scheduling":
            ok = value(r, "steps_to_target") is not None and value(r, "final_val_loss") is not None
        elif needs:
            ok = value(r, needs) is not None and r.get("timing")
        else:
            ok = bool(r.get("timing")) and bool(r.get("memory"))
        points += bool(ok)
    return points


def case_of(r, leave_out=()):
    return (r["device"], json.dumps({k: v for k, v in r["params"].items() if k not in leave_out}, sort_keys=True))


def dynamic_batching_results(variants, rates):
    """Synthetic dynamic_batching results: for each variant a result per offered rate, its
    achieved requests/s `variants[name](rate)`, the other metrics made up but plausible."""
    results = []
    for variant, achieved_of in variants.items():
        for rate in rates:
            achieved = achieved_of(rate)
            metrics = {"requests_per_s": achieved, "output_tokens_per_s": 64.0 * achieved,
                       "ttft_p50_ms": 20.0 * rate, "ttft_p99_ms": 50.0 * rate * rate / achieved,
                       "goodput_requests_per_s": 0.8 * achieved}
            results.append({"technique": "dynamic_batching", "variant": variant, "device": "cpu",
                            "params": {"rate": rate, "max_batch": 8}, "status": "ok",
                            "metrics": {name: {"value": v} for name, v in metrics.items()}})
    return results


def write_report(path, results):
    with open(path, "w") as f:
        f.write(json.dumps({"schema": "aiopt-report/1", "context": {}}) + "\n")
        for r in results:
            f.write(json.dumps(r) + "\n")


def check_dynamic_batching(plot, tmp):
    """dynamic_batching_latency on synthetic reports: 2 variants × 3 rates and a variant at one
    rate, left out and said so; a report with one rate per variant is not drawn, and why."""
    results = dynamic_batching_results({
        "static": lambda rate: min(rate, 2.0) * 0.95,  # keeps up at 2 only
        "continuous": lambda rate: min(rate, 6.8),     # keeps up at 2 and 4; 85% of 8
    }, [2, 4, 8]) + dynamic_batching_results({"dynamic": lambda rate: rate}, [4])
    # A result without its p99 TTFT is drawn on the right panel only.
    del results[1]["metrics"]["ttft_p99_ms"]
    report = tmp / "serving.jsonl"
    write_report(report, results)
    out = tmp / "serving_figs"
    run([sys.executable, plot, str(report), "-o", str(out)])
    manifest = json.loads((out / "figures.json").read_text())
    figures = {f["name"]: f for f in manifest["figures"]}
    drawn = [r for r in results if r["variant"] != "dynamic"]
    want = sum(1 for r in drawn if value(r, "ttft_p99_ms") is not None) + len(drawn)
    got = figures.get("dynamic_batching_latency", {})
    check(got.get("points") == want and got.get("lines") == 4,
          f"dynamic_batching latency: {got.get('points')} points in {got.get('lines')} lines, "
          f"the report holds {want} in 4")
    for name in got.get("files", []):
        check((out / name).stat().st_size > 1000, f"{name} exists and is not empty")
    # The saturation rate, from the synthetic achieved rates: the largest λ served at 90%.
    for variant in ("static", "continuous"):
        kept = [r["params"]["rate"] for r in drawn if r["variant"] == variant
                and value(r, "requests_per_s") >= 0.9 * r["params"]["rate"]]
        label = f"{variant} (saturates at {max(kept)} req/s)"
        check(label in got.get("note", ""), f"dynamic_batching latency names {label!r}: {got.get('note')}")
    check("one rate only: dynamic" in got.get("note", ""), f"a variant at one rate is left out, and said so: "
          f"{got.get('note')}")

    single = tmp / "serving_single.jsonl"
    write_report(single, dynamic_batching_results({"static": lambda rate: rate, "continuous": lambda rate: rate}, [4]))
    out = tmp / "serving_single_figs"
    run([sys.executable, plot, str(single), "-o", str(out), "--formats", "svg"])
    manifest = json.loads((out / "figures.json").read_text())
    check(not any(f["name"] == "dynamic_batching_latency" for f in manifest["figures"]) and
          any(n["technique"] == "dynamic_batching" and n["kind"] == "latency" and "two or more" in n["why"]
              for n in manifest["not_drawn"]), "dynamic_batching at one rate: latency not drawn, and why")


def main():
    aiopt, plot, ci_config = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        ci = tmp / "ci.jsonl"
        run([aiopt, "sweep", ci_config, "-o", str(ci), "--progress", "never", "--format", "json"])
        scaling = tmp / "scaling.jsonl"
        run([aiopt, "bench", "--technique", "flash_attention", "--set", "seq_len=64,128,256", "--quick",
             "-o", str(scaling), "--progress", "never", "--format", "json"])
        out = tmp / "figs"
        # The CI sweep and the flash_attention sweep together, as shards of one report are given.
        run([sys.executable, plot, str(ci), str(scaling), "-o", str(out)])
        manifest = json.loads((out / "figures.json").read_text())
        figures = {f["name"]: f for f in manifest["figures"]}
        print(f"{len(figures)} figures; not drawn: {len(manifest['not_drawn'])}")

        for f in manifest["figures"]:
            for name in f["files"]:
                path = out / name
                check(path.is_file() and path.stat().st_size > 1000, f"{name} exists and is not empty")
                if name.endswith(".svg"):
                    check(ET.parse(path).getroot().tag.endswith("svg"), f"{name} is an SVG document")
            check(len(f["files"]) == 2, f"{f['name']}: PNG and SVG")

        results = [r for r in results_of(ci) if r["status"] == "ok"]
        flash_seq = [r for r in results_of(scaling) if r["status"] == "ok"]
        # flash_attention's seq_len=128 cases are in both files: the later file's replace them.
        merged = {(r["technique"], r["variant"]) + case_of(r): r for r in results + flash_seq}
        by_technique = {}
        for r in merged.values():
            by_technique.setdefault(r["technique"], []).append(r)
        check(len(by_technique) >= 9, f"the quick suite holds every technique ({sorted(by_technique)})")

        for technique, rs in by_technique.items():
            name = f"{technique}_tradeoff"
            check(name in figures, f"{name} drawn")
            if name in figures:
                want = expected_tradeoff_points(rs)
                check(want > 0 and figures[name]["points"] == want,
                      f"{name}: {figures[name]['points']} points drawn, the report holds {want}")

            # Every series: a figure per case, a line per result that carries it, every point.
            cases = {}
            for r in rs:
                cases.setdefault(case_of(r), []).append(r)
            names = sorted({s for r in rs for s in r.get("series", {})})
            for series in names:
                for c, members in enumerate(cases.values()):
                    carrying = [r for r in members if r.get("series", {}).get(series, {}).get("x")]
                    if not carrying:
                        continue
                    figure = f"{technique}_{series}" + (f"_case{c + 1}" if len(cases) > 1 else "")
                    check(figure in figures, f"{figure} drawn")
                    if figure in figures:
                        points = sum(len(r["series"][series]["x"]) for r in carrying)
                        check(figures[figure]["points"] == points and figures[figure]["lines"] == len(carrying),
                              f"{figure}: {figures[figure]['points']} points in {figures[figure]['lines']} lines, "
                              f"the report holds {points} in {len(carrying)}")

        # flash_attention's scaling: time and workspace of every seq_len of every variant.
        scaled = [r for r in by_technique["flash_attention"] if r["params"]["seq_len"] in (64, 128, 256)
                  and r["params"].get("causal") is False and r.get("timing")]
        lines = {r["variant"] for r in scaled}
        want = len(scaled) + sum(1 for r in scaled if value(r, "workspace_bytes"))
        scaling_figures = [f for n, f in figures.items() if n.startswith("flash_attention_scaling")]
        check(len(scaling_figures) >= 1, "flash_attention scaling drawn")
        check(any(f["points"] == want and f["lines"] == 2 * len(lines) for f in scaling_figures),
              f"flash_attention scaling: {[f['points'] for f in scaling_figures]} points, "
              f"the seq_len sweep holds {want} in {2 * len(lines)} lines")
        check(any(n["technique"] == "linear_attention" and n["kind"] == "scaling" and "one seq_len" in n["why"]
                  for n in manifest["not_drawn"]), "linear_attention at one seq_len: scaling not drawn, and why")

        # kv_caching: decode cost by position, four quarters per variant.
        kv = [f for n, f in figures.items() if n.startswith("kv_caching_decode_position")]
        quarters = sum(1 for r in by_technique["kv_caching"] for m in r["metrics"]
                       if m.startswith("decode_ms_per_token_t"))
        check(sum(f["points"] for f in kv) == quarters, f"kv_caching decode position: {quarters} points")

        # lora: loss against rank, a point per adapter case.
        adapted = [r for r in by_technique["lora"] if r["variant"] != "full_finetune" and value(r, "eval_loss_task")]
        check("lora_rank" in figures and figures["lora_rank"]["points"] == len(adapted),
              f"lora rank: {figures.get('lora_rank', {}).get('points')} points, the report holds {len(adapted)}")

        # knowledge_distillation: per case, both variants' training and validation curves.
        kd_cases = {}
        for r in by_technique.get("knowledge_distillation", []):
            kd_cases.setdefault(case_of(r), []).append(r)
        check(len(kd_cases) >= 1, "the quick suite holds knowledge_distillation")
        for c, members in enumerate(kd_cases.values()):
            name = "knowledge_distillation_loss_curves" + (f"_case{c + 1}" if len(kd_cases) > 1 else "")
            want = sum(len(r["series"][s]["x"]) for r in members for s in ("train_loss", "val_loss")
                       if r.get("series", {}).get(s, {}).get("x"))
            lines = sum(1 for r in members for s in ("train_loss", "val_loss")
                        if r.get("series", {}).get(s, {}).get("x"))
            check(name in figures and figures[name]["points"] == want and figures[name]["lines"] == lines
                  and lines == 2 * len(members),
                  f"{name}: {figures.get(name, {}).get('points')} points, the report holds {want} in {lines} lines")

        # speculative_decoding: against gamma, six points per result that drafted (α, tokens per
        # pass measured and predicted; speedup measured and two predictions).
        drafted = [r for r in by_technique.get("speculative_decoding", []) if value(r, "acceptance_rate") is not None]
        want = sum(1 for r in drafted for m in ("acceptance_rate", "tokens_per_pass", "tokens_per_pass_predicted",
                                                  "speedup", "speedup_predicted", "speedup_predicted_measured_verify")
                   if value(r, m) is not None)
        got = figures.get("speculative_decoding_gamma", {})
        check(len(drafted) >= 6 and got.get("points") == want,
              f"speculative_decoding gamma: {got.get('points')} points, the report holds {want}")

        check_dynamic_batching(plot, tmp)

        # An unknown technique: the generic trade-off, said so.
        unknown = tmp / "unknown.jsonl"
        lines_out = []
        for line in ci.read_text().splitlines():
            record = json.loads(line)
            if record.get("technique") == "tensor_fusion":
                record["technique"] = "made_up_technique"
            lines_out.append(json.dumps(record))
        unknown.write_text("\n".join(lines_out) + "\n")
        done = run([sys.executable, plot, str(unknown), "-o", str(tmp / "unknown"), "--formats", "svg"])
        generic = json.loads((tmp / "unknown" / "figures.json").read_text())
        made_up = [f for f in generic["figures"] if f["technique"] == "made_up_technique"]
        check(len(made_up) == 1 and "generic" in made_up[0].get("note", ""), "an unknown technique: the generic trade-off")
        check("made_up_technique" in done.stderr and "generic" in done.stderr, "an unknown technique: said on stderr")

        # Broken reports exit 2 with the reason.
        for text, reason in (("{not json", "not JSON"), ('{"schema": "other/9"}', "schema"),
                             ('{"technique": "x"}', "no aiopt report header"), ("", "empty")):
            bad = tmp / "bad.json"
            bad.write_text(text)
            done = run([sys.executable, plot, str(bad), "-o", str(tmp / "bad")], expect=2)
            check(reason in done.stderr and "plot.py: error:" in done.stderr, f"broken report {text!r}: {done.stderr.strip()}")
        done = run([sys.executable, plot, str(tmp / "absent.json"), "-o", str(tmp / "bad")], expect=2)
        check("cannot read" in done.stderr, "a missing report: exit 2, cannot read")

    return verdict()


if __name__ == "__main__":
    sys.exit(main())
