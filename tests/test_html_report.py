#!/usr/bin/env python3
"""plot.py --html in a real browser: headless Chromium renders the page of a quick kv_caching and
flash_attention report; the screenshot is not blank and the page logs nothing to the console. The
page holds the summary (a row per comparison), every figure inline and every result's repro
command. The console check is shown to catch a page that logs an error.

  tests/test_html_report.py AIOPT PLOT_PY
"""
import json
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

import zlib

from script_checks import check, run, verdict



def png_pixels(path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG, as Chromium writes."""
    data = pathlib.Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"{path}: PNG depth {depth} colour {colour} interlace {interlace} not read here")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        previous = line
    return width, height, channels, rows


def ink(path):
    """The fraction of pixels that are not white, and the number of distinct colours."""
    width, height, channels, rows = png_pixels(path)
    inked, colours = 0, set()
    for line in rows:
        for x in range(0, width * channels, channels * 2):  # every other pixel: enough to judge
            px = bytes(line[x:x + 3])
            colours.add(px)
            inked += px != b"\xff\xff\xff"
    return inked / (height * ((width + 1) // 2)), len(colours)


def render(chromium, page, shot):
    """The console lines Chromium logged while rendering `page` into the screenshot `shot`."""
    done = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,1600", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    if not pathlib.Path(shot).is_file():
        sys.exit(f"{chromium} wrote no screenshot (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def main():
    aiopt, plot = sys.argv[1:3]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        sys.exit("no Chromium on PATH (chromium, chromium-browser, google-chrome): scripts/test.sh installs "
                 "Debian's chromium; install it to run this test")
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        kv, fa = tmp / "kv.json", tmp / "fa.jsonl"
        run([aiopt, "bench", "--technique", "kv_caching", "--quick", "-o", str(kv), "--progress", "never"])
        run([aiopt, "bench", "--technique", "flash_attention", "--quick", "--set", "seq_len=64,128",
             "-o", str(fa), "--progress", "never"])

        # One JSON report (it has comparisons: gains and costs) and one JSONL stream.
        for report, name in ((kv, "kv"), (fa, "fa")):
            page = tmp / f"{name}.html"
            run([sys.executable, plot, str(report), "-o", str(tmp / f"{name}_figs"), "--html", str(page)])
            text = page.read_text()
            manifest = json.loads((tmp / f"{name}_figs" / "figures.json").read_text())
            if name == "kv":
                doc = json.loads(report.read_text())
            else:
                doc = {"results": [r for line in report.read_text().splitlines() if line.strip()
                                   for r in [json.loads(line)] if "technique" in r]}
            results = doc["results"]
            check(text.count("<svg") == len(manifest["figures"]) and manifest["figures"],
                  f"{name}: {text.count('<svg')} inline SVGs for {len(manifest['figures'])} figures")
            for r in results:
                check(r["repro"].replace("--", "") in text.replace("--", ""), f"{name}: the repro of {r['variant']}")
            if name == "kv":
                check(len(doc["comparisons"]) == 2, "kv: two comparisons")
                for c in doc["comparisons"]:
                    for gain in c["gains"]:
                        check(gain.replace("(", "").split()[0] in text, f"kv: gain {gain!r} shown")
            external = [m for m in ("<script", "<link", "<img", "<iframe", "@import", 'src="http', "href=\"http",
                                    "url(http") if m in text]
            check(not external, f"{name}: self-contained (no script, no external file): {external}")

            shot = tmp / f"{name}.png"
            console = render(chromium, page, shot)
            check(not console, f"{name}: the console stays quiet: {console}")
            fraction, colours = ink(shot)
            print(f"{name}: {fraction:.1%} of the screenshot inked, {colours} colours")
            check(fraction > 0.03 and colours > 20, f"{name}: the screenshot is not blank ({fraction:.1%}, {colours} colours)")

        # The checks can fail: a page that logs an error, and a blank page.
        bad = tmp / "bad.html"
        bad.write_text('<!DOCTYPE html><html><body><script>console.error("deliberate")</script></body></html>')
        console = render(chromium, bad, tmp / "bad.png")
        check(any("deliberate" in line for line in console), f"a console error is caught: {console}")
        fraction, colours = ink(tmp / "bad.png")
        check(fraction < 0.03, f"a blank page reads as blank ({fraction:.1%} inked)")

    return verdict()


if __name__ == "__main__":
    sys.exit(main())
