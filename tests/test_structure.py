#!/usr/bin/env python3
"""The folder map of DESIGN.md, checked against the #include lines of src/, tests/ and bench/.

- every project include names its folder ("engine/model.h") and resolves to a file under src/;
- a folder includes only the folders below it (DEPENDS: arrows point downwards, so there is no cycle, and
  nothing under src/ but the commands reaches the converters);
- a folder's internal headers (*_internal.h) are included from that folder only (the white-box tests of
  the file format excepted);
- tools/ holds scripts and references, no C.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")

# folder -> the folders it may include (besides itself)
DEPENDS = {
    "base": set(),
    "layout": {"base"},
    "io": {"base", "layout"},
    "kernels": {"base", "layout"},
    "backend": {"base", "layout", "kernels"},
    "engine": {"base", "layout", "io", "kernels", "backend"},
    "jinja": {"base"},
    "grammar": {"base"},
    "text": {"base", "layout", "jinja"},
    "convert": {"base", "layout", "text"},
    "serve": {"base", "layout", "engine", "text", "jinja", "grammar"},
    "cli": {"base", "layout", "io", "kernels", "backend", "engine", "jinja", "text", "convert", "serve", "grammar"},
}
# white-box tests that read a folder's internals on purpose
INTERNAL_OK = {("tests/test_layout.c", "layout"), ("tests/test_fuzz_layout.c", "layout")}

INC = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


# Headers the Makefile generates under build/gen/, included by their path there (the folder they belong to).
GENERATED = {"serve/chat_html.h"}

def sources(top):
    for d, _, fs in os.walk(os.path.join(ROOT, top)):
        for f in sorted(fs):
            if f.endswith((".c", ".h", ".cu", ".cuh")):
                p = os.path.join(d, f)
                yield os.path.relpath(p, ROOT)


def main():
    bad = []
    edges = set()
    for top in ("src", "tests", "bench"):
        for p in sources(top):
            text = open(os.path.join(ROOT, p), encoding="utf-8").read()
            parts = p.split(os.sep)
            folder = parts[1] if top == "src" else None
            if top == "src" and folder not in DEPENDS:
                bad.append(f"{p}: folder src/{folder} is not in the folder map")
                continue
            for inc in INC.findall(text):
                here = os.path.join(ROOT, os.path.dirname(p), inc)
                if "/" not in inc:
                    # a sibling: same folder only (internal headers, or a test's own helpers)
                    if not os.path.exists(here):
                        bad.append(f'{p}: #include "{inc}" is neither a sibling nor named by its folder')
                    continue
                target = os.path.join(SRC, inc)
                if inc in GENERATED:
                    continue
                if not os.path.exists(target):
                    bad.append(f'{p}: #include "{inc}" is not a file under src/')
                    continue
                tfolder = inc.split("/")[0]
                if os.path.basename(inc).endswith("_internal.h") and tfolder != folder and (p, tfolder) not in INTERNAL_OK:
                    bad.append(f'{p}: includes the internals of src/{tfolder} ("{inc}")')
                if folder and tfolder != folder:
                    edges.add((folder, tfolder))
                    if tfolder not in DEPENDS[folder]:
                        bad.append(f'{p}: src/{folder} may not include src/{tfolder} ("{inc}")')
    tools_c = [f for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith((".c", ".h"))]
    if tools_c:
        bad.append("tools/ holds C sources (they belong under src/): " + ", ".join(tools_c))
    # DEPENDS itself must be acyclic
    state = {}

    def visit(n, path):
        if state.get(n) == 1:
            bad.append("folder cycle: " + " -> ".join(path + [n]))
            return
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in sorted(DEPENDS[n]):
            visit(m, path + [n])
        state[n] = 2

    for n in DEPENDS:
        visit(n, [])
    used = {f for e in edges for f in e}
    for f in DEPENDS:
        if f not in used and f != "base":
            bad.append(f"src/{f}: in the folder map but no include crosses into or out of it")
    for b in bad:
        print("FAIL", b)
    print(f"{len(list(sources('src')))} sources, {len(edges)} folder edges, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
