#!/usr/bin/env python3
"""Fails when a source file includes a header of a higher layer (DESIGN.md "Layers").

The layers, lowest first: core, kernels, nn, report, harness, techniques, cli; src/main.cpp
sits above them all. A file may include its own layer and those below it. Every
`#include "..."` under src/ and techniques/ is read; an include names its layer by its first
path component ("harness/technique.hpp"), as every layer shares one include root.

  scripts/check_layers.py              the tree this script belongs to
  scripts/check_layers.py --root DIR   another tree with the same layout

Exit 0 when no include points up, 1 naming each one that does (file:line, both layers).
"""
import argparse
import pathlib
import re
import sys

LAYERS = ["core", "kernels", "nn", "report", "harness", "techniques", "cli", "main"]
SOURCE_SUFFIXES = {".hpp", ".cpp", ".h", ".cu", ".cuh", ".in"}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def layer_of_file(root, path):
    """The layer a file under src/ or techniques/ belongs to."""
    parts = path.relative_to(root).parts
    if parts[0] == "techniques":
        return "techniques"
    if parts[1:] == ("main.cpp",):
        return "main"
    return parts[1]


def upward_includes(root):
    """(file, line, file's layer, included layer) for each include of a higher layer."""
    found = []
    files = [p for d in ("src", "techniques") for p in sorted((root / d).rglob("*"))
             if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    for path in files:
        own = layer_of_file(root, path)
        if own not in LAYERS:
            found.append((path, 0, own, None))
            continue
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(text)
            if not match:
                continue
            included = match.group(1).split("/")[0]
            if included in LAYERS and LAYERS.index(included) > LAYERS.index(own):
                found.append((path, number, own, included))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent,
                        help="the tree to check (default: this script's own)")
    root = parser.parse_args().root.resolve()
    if not (root / "src").is_dir():
        print(f"check_layers: {root} has no src/ folder", file=sys.stderr)
        return 2
    found = upward_includes(root)
    for path, number, own, included in found:
        where = f"{path.relative_to(root)}:{number}"
        if included is None:
            print(f"{where}: folder '{own}' is no layer (layers: {', '.join(LAYERS[:-1])})")
        else:
            print(f"{where}: layer '{own}' includes '{included}', a higher layer "
                  f"(order: {' -> '.join(LAYERS[:-1])})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
