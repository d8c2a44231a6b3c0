"""The grammar module (src/grammar/, through build/tests/gram_tool) against independent references:
  - GBNF vs Python's re: random expressions (literals, classes with ranges and negation, groups, alternatives,
    * + ? {m} {m,} {m,n}) written both as a GBNF grammar and as a regex; random strings over their alphabet
    and random sentences drawn through the vocabulary mask (tokens splitting UTF-8 characters) must get the
    same verdict from both (the drawn ones: re.fullmatch takes every one);
  - JSON schema -> grammar vs json + jsonschema: for schemas using every supported keyword, 30 sentences each
    drawn through the mask parse as JSON and validate; hand-made valid documents are taken and invalid ones
    (a missing required property, a wrong type, an extra property, too many items, a string too long, a value
    outside the enum) refused; unsupported keywords and bad $refs are refused naming the keyword and place.
"""

import json
import os
import random
import re
import subprocess
import sys
import tempfile

from ferrytest import ROOT, Failures

try:
    import jsonschema
except ImportError:
    print("SKIP: jsonschema is not installed (pip install -r tools/requirements.txt)")
    raise SystemExit(77)

TOOL = os.path.join(ROOT, os.environ.get("FERRY_BUILD", "build"), "tests", "gram_tool")
ALPHA = "abcé€🙂"


def tool(*args, stdin=None):
    return subprocess.run([TOOL, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=60)


def write(tmp, name, text):
    p = os.path.join(tmp, name)
    with open(p, "w", encoding="utf-8") as fh:
        fh.write(text)
    return p


def gbnf_char(c):
    return {"\\": "\\\\", '"': '\\"', "]": "\\]", "-": "\\-", "^": "\\^", "[": "\\["}.get(c, c)


def rand_expr(rng, depth):
    """(gbnf, regex) of a random expression over ALPHA."""
    k = rng.randrange(7 if depth < 3 else 2)
    if k == 0:
        s = "".join(rng.choice(ALPHA) for _ in range(rng.randrange(1, 3)))
        return '"' + s + '"', "(?:" + re.escape(s) + ")"
    if k == 1:
        chars = sorted(set(rng.choice(ALPHA) for _ in range(rng.randrange(1, 3))))
        neg = rng.random() < 0.3
        body_g = "".join(gbnf_char(c) for c in chars)
        body_r = "".join(re.escape(c) for c in chars)
        if rng.random() < 0.4:
            body_g += "a-c"
            body_r += "a-c"
        return "[" + ("^" if neg else "") + body_g + "]", "[" + ("^" if neg else "") + body_r + "]"
    if k == 2:
        parts = [rand_expr(rng, depth + 1) for _ in range(rng.randrange(2, 4))]
        return "(" + " ".join(p[0] for p in parts) + ")", "(?:" + "".join(p[1] for p in parts) + ")"
    if k == 3:
        parts = [rand_expr(rng, depth + 1) for _ in range(rng.randrange(2, 4))]
        return "(" + " | ".join(p[0] for p in parts) + ")", "(?:" + "|".join(p[1] for p in parts) + ")"
    g, r = rand_expr(rng, depth + 1)
    op = rng.choice(["*", "+", "?", "{2}", "{1,}", "{0,2}", "{1,3}", "{,2}"])
    rop = "{0,2}" if op == "{,2}" else op
    return "(" + g + ")" + op, "(?:" + r + ")" + rop


def check_regex(f, tmp, rng, i):
    g, r = rand_expr(rng, 0)
    path = write(tmp, f"g{i}.gbnf", "root ::= " + g + "\n")
    rx = re.compile(r, re.S)
    strings = ["".join(rng.choice(ALPHA + "xd") for _ in range(rng.randrange(0, 7))) for _ in range(60)]
    gen = tool("gen", "gbnf", path, i, 20, 6)
    if not f.check(gen.returncode == 0, f"gen {g}: {gen.stderr}"):
        return
    drawn = [json.loads(x) for x in gen.stdout.splitlines()]
    for s in drawn:
        if s is not None:
            f.check(rx.fullmatch(s) is not None, f"grammar {g} drew {s!r}, which {r} refuses")
    strings += [s for s in drawn if s is not None]
    acc = tool("accept", "gbnf", path, stdin="".join(json.dumps(s) + "\n" for s in strings))
    if not f.check(acc.returncode == 0, f"accept {g}: {acc.stderr}"):
        return
    for s, v in zip(strings, acc.stdout.split()):
        want = rx.fullmatch(s) is not None
        f.check((v == "1") == want, f"grammar {g} says {v} for {s!r}, re {r} says {want}")


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}, "age": {"type": "integer"},
                                      "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "minItems": 1,
                                               "maxItems": 3},
                                      "ok": {"type": ["boolean", "null"]}},
     "required": ["name", "tags"], "additionalProperties": False},
    {"type": "array", "items": {"type": "number"}, "maxItems": 4},
    {"anyOf": [{"type": "string", "minLength": 2}, {"const": {"k": [1, 2]}}, {"type": "null"}]},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                                  "maxItems": 2}},
                        "required": ["v"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"type": "object", "additionalProperties": {"type": "boolean"}},
    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"oneOf": [{"type": "integer"}, {"enum": ["x"]}]},
                                      "c": {"type": "object"}}, "required": ["c"]},
    {"type": "object", "properties": {"x": {"type": "number", "description": "annotations are ignored",
                                            "title": "X"}}, "required": ["x"]},
    {},
]

VALID = [
    (0, {"name": "bob", "tags": ["a", 3]}), (0, {"name": "", "age": -12, "tags": ["b"], "ok": None}),
    (1, []), (1, [1.5, -2, 3e4]), (2, "hello"), (2, {"k": [1, 2]}), (2, None), (3, {"v": 1, "kids": [{"v": 2}]}),
    (4, {"p": True, "q": False}), (5, {"c": {"z": [1]}}), (5, {"a": "s", "b": "x", "c": {}}), (7, [1, {"a": None}]),
]
INVALID = [
    (0, {"tags": ["a"]}), (0, {"name": "bob", "tags": []}), (0, {"name": "toolong", "tags": ["a"]}),
    (0, {"name": "bob", "tags": ["c"]}), (0, {"name": "bob", "tags": ["a"], "extra": 1}),
    (0, {"name": "bob", "tags": ["a", "a", "a", "a"]}), (0, {"name": 5, "tags": ["a"]}), (1, [1, 2, 3, 4, 5]),
    (1, ["1"]), (2, "x"), (2, {"k": [1]}), (3, {"kids": []}), (3, {"v": 1, "kids": [{"v": 1}, {"v": 2}, {"v": 3}]}),
    (4, {"p": 1}), (5, {"a": "s"}), (6, {"x": "1"}),
]

REFUSED = [
    ({"type": "string", "pattern": "^a"}, "'pattern'"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "#/properties/n"),
    ({"$ref": "#/$defs/missing"}, "names nothing"),
    ({"type": "strange"}, "unknown type"),
    ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'required'"),
    ({"allOf": [{"type": "string"}]}, "'allOf'"),
    ({"type": "array", "items": [{"type": "string"}]}, "tuples"),
]


def main():
    f = Failures()
    if not os.path.exists(TOOL):
        f.check(False, f"{TOOL} is missing (make)")
        f.finish()
    rng = random.Random(24)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(60):
            check_regex(f, tmp, rng, i)
        paths = [write(tmp, f"s{i}.json", json.dumps(s)) for i, s in enumerate(SCHEMAS)]
        for i, (s, p) in enumerate(zip(SCHEMAS, paths)):
            gen = tool("gen", "schema", p, 100 + i, 30, 40)
            if not f.check(gen.returncode == 0, f"gen schema {i}: {gen.stderr}"):
                continue
            for line in gen.stdout.splitlines():
                text = json.loads(line)
                if not f.check(text is not None, f"schema {i}: a drawn sentence did not end"):
                    continue
                try:
                    doc = json.loads(text)
                    jsonschema.validate(doc, s)
                    f.check(True, "valid")
                except (ValueError, jsonschema.ValidationError) as e:
                    f.check(False, f"schema {i} drew {text!r}: {str(e)[:200]}")
        for cases, want in ((VALID, "1"), (INVALID, "0")):
            for i, doc in cases:
                if want == "0":  # the reference agrees it is invalid
                    f.check(not jsonschema.Draft202012Validator(SCHEMAS[i]).is_valid(doc), f"bad case {doc}")
                for text in (json.dumps(doc), json.dumps(doc, indent=2)):
                    acc = tool("accept", "schema", paths[i], stdin=json.dumps(text) + "\n")
                    f.check(acc.stdout.strip() == want, f"schema {i} on {text!r}: {acc.stdout.strip()} {acc.stderr}")
        for j, (s, frag) in enumerate(REFUSED):
            p = write(tmp, f"r{j}.json", json.dumps(s))
            r = tool("gbnf", p)
            f.check(r.returncode == 1 and frag in r.stderr and r.stderr.count("\n") == 1,
                    f"schema {s} should be refused naming {frag}: rc {r.returncode} {r.stderr!r}")
    f.finish()


if __name__ == "__main__":
    main()
