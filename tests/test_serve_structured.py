"""`ferry serve`'s structured output (issue 24), end to end with the `openai` client:
  - response_format json_schema (strict) on a tiny model (tools/gen_tiny_model.py, random weights: only the
    grammar makes its output JSON): 50 requests over 6 schemas, chat and completions, greedy and seeded
    sampling, streamed and whole (the stream's deltas join into the whole reply's text): every reply ends by
    itself ("stop"), parses and validates (jsonschema); json_object replies that end parse as objects;
  - "grammar" (GBNF): the replies match the same language as a Python regex;
  - tool calls parsed from fixed outputs (a grammar forcing the model to write exactly the text) in the three
    formats: Hermes/Qwen <tool_call>{json}</tool_call> (two calls, content before them), Mistral
    [TOOL_CALLS][...], Llama 3.1 {"name", "parameters"} (after <|python_tag|>, alone or in a ```json block; a
    JSON object naming no tool and other code blocks stay content), whole and streamed (tool_calls deltas, finish_reason "tool_calls");
  - tool_choice "required" and a named function: the output is held to the tool-call grammar, the reply is a
    call of that function whose arguments validate against its parameters; history with an assistant turn
    of tool_calls and a "tool" turn is accepted;
  - bad requests: a schema keyword ferry cannot enforce, a bad grammar, a bad tool_choice, tools on
    /v1/completions, two constraints at once: 400 with a one-line message naming the field;
  - `ferry batch` lines with response_format and grammar beside a free one: every output validates, a line
    alone gives what it gave in the batch, bad schema/grammar lines go to the error file naming the problem;
  - when the default instruct model (Qwen2.5-Coder-1.5B-Instruct, tools/fetch_instruct.py) is on this
    machine: 3 schema replies validate and "What is the weather in Paris?" with a weather tool is a call.
FERRY_TEST_DEVICE=cuda runs the servers on the GPU (the constrained requests' full logits rows downloaded).
"""

import json
import os
import re
import subprocess

from ferrytest import FERRY, ROOT, Failures, scratch, tiny_model

try:
    import jsonschema
    import openai
except ImportError:
    print("SKIP: the openai or jsonschema package is not installed (pip install -r tools/requirements.txt)")
    raise SystemExit(77)

from test_serve import NAME, Server  # noqa: E402

# after test_serve.Server's --device cpu: the last one given counts
DEVICE = ("--device", os.environ["FERRY_TEST_DEVICE"]) if os.environ.get("FERRY_TEST_DEVICE") else ()

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                      "size": {"type": "number"}, "ok": {"type": "boolean"}},
     "required": ["color"], "additionalProperties": False},
    {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1, "maxLength": 4}]},
    {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["x", "y"], "additionalProperties": False}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}},
     "required": ["a", "b"], "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                               "maxItems": 2},
                                      "n": {"type": "null"}}, "required": ["tags", "n"], "additionalProperties": False},
]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"],
    "additionalProperties": False}}}


def gbnf_lit(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def chat(cl, stream=False, **kw):
    """(content, finish_reason, tool_calls as [(name, arguments dict, id, type)]) of a chat request."""
    if "grammar" in kw:  # ferry's field, not the client's
        kw["extra_body"] = {"grammar": kw.pop("grammar")}
    if not stream:
        r = cl.chat.completions.create(model=NAME, **kw)
        m = r.choices[0].message
        calls = [(c.function.name, json.loads(c.function.arguments), c.id, c.type) for c in m.tool_calls or []]
        return m.content, r.choices[0].finish_reason, calls
    text, finish, calls = "", None, {}
    for ch in cl.chat.completions.create(model=NAME, stream=True, **kw):
        for c in ch.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                d = calls.setdefault(tc.index, ["", "", tc.id, tc.type])
                d[0] += tc.function.name or ""
                d[1] += tc.function.arguments or ""
    return text or None, finish, [(n, json.loads(a), i, t) for n, a, i, t in (calls[k] for k in sorted(calls))]


def check_schema_replies(f, cl, n_prompts):
    words = ["sea", "ship", "red", "sky", "night", "old", "map", "gold"]
    for i in range(n_prompts):
        s = SCHEMAS[i % len(SCHEMAS)]
        text = " ".join(words[(i * 3 + j) % len(words)] for j in range(2 + i % 5))
        rf = {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": s, "strict": True}}
        kw = {"max_tokens": 1500, "temperature": 0.9 if i % 3 else 0, "seed": 7 + i, "response_format": rf}
        if i % 4 == 3:
            rf = kw.pop("response_format")  # not a field of the client's completions.create
            r = cl.completions.create(model=NAME, prompt=text, extra_body={"response_format": rf}, **kw)
            out, finish = r.choices[0].text, r.choices[0].finish_reason
        else:
            out, finish, _ = chat(cl, messages=[{"role": "user", "content": text}], **kw)
            if i % 4 == 1:
                out2, finish2, _ = chat(cl, stream=True, messages=[{"role": "user", "content": text}], **kw)
                f.check((out2, finish2) == (out, finish), f"prompt {i}: stream {out2!r} {finish2} vs {out!r} {finish}")
        if not f.check(finish == "stop", f"prompt {i} (schema {i % len(SCHEMAS)}): finish {finish}: {out!r}"):
            continue
        try:
            jsonschema.validate(json.loads(out), s)
            f.check(True, "valid")
        except (ValueError, jsonschema.ValidationError) as e:
            f.check(False, f"prompt {i} (schema {i % len(SCHEMAS)}): {out!r}: {str(e)[:200]}")


def check_tool_parsing(f, cl):
    """Fixed outputs (forced by a grammar) parsed into tool_calls."""
    msgs = [{"role": "user", "content": "go"}]
    cases = [
        ('Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>',
         "Sure.", [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET"})]),
        ('[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "UTC"}}, '
         '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "F"}}]',
         None, [("get_time", {"zone": "UTC"}), ("get_weather", {"city": "Rome", "unit": "F"})]),
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Lima"}}', None,
         [("get_weather", {"city": "Lima"})]),
        ('{"name": "get_time", "parameters": {"zone": "PST"}}', None, [("get_time", {"zone": "PST"})]),
        ('{"name": "not_a_tool", "parameters": {}}', '{"name": "not_a_tool", "parameters": {}}', []),
        ("Just text, no call.", "Just text, no call.", []),
        ('```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```', None,
         [("get_weather", {"city": "Oslo"})]),
        ("```python\nprint(1)\n```", "```python\nprint(1)\n```", []),
    ]
    for text, content, calls in cases:
        g = "root ::= " + gbnf_lit(text)
        for stream in (False, True):
            got, finish, got_calls = chat(cl, stream, messages=msgs, tools=[WEATHER, TIME], grammar=g, max_tokens=200,
                                          temperature=0)
            want_finish = "tool_calls" if calls else "stop"
            f.check(got == content and finish == want_finish and [c[:2] for c in got_calls] == calls,
                    f"{text!r} (stream {stream}): content {got!r}, finish {finish}, calls {got_calls}")
            f.check(all(re.fullmatch(r"call_[0-9a-f]{16}", c[2]) and c[3] == "function" for c in got_calls),
                    f"{text!r}: ids and types {got_calls}")
            f.check(len({c[2] for c in got_calls}) == len(got_calls), f"{text!r}: ids not distinct {got_calls}")


def check_required_tools(f, cl):
    msgs = [{"role": "user", "content": "weather please"}]
    for i, choice in enumerate(["required", {"type": "function", "function": {"name": "get_time"}}] * 2):
        stream = i >= 2
        _, finish, calls = chat(cl, stream, messages=msgs, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=300,
                                temperature=0.8, seed=i)
        if not f.check(finish == "tool_calls" and calls, f"tool_choice {choice}: finish {finish}, calls {calls}"):
            continue
        for name, args, _, _ in calls:
            if isinstance(choice, dict):
                f.check(name == "get_time", f"named get_time, got {name}")
            tool = {"get_weather": WEATHER, "get_time": TIME}.get(name)
            if f.check(tool is not None, f"unknown function {name}"):
                try:
                    jsonschema.validate(args, tool["function"]["parameters"])
                except jsonschema.ValidationError as e:
                    f.check(False, f"{name} arguments {args}: {str(e)[:200]}")
    # a conversation with a call and its result
    hist = msgs + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}]
    content, finish, _ = chat(cl, messages=hist, tools=[WEATHER], max_tokens=8, temperature=0)
    f.check(finish in ("stop", "length", "tool_calls"), f"history with tool turns: {finish} {content!r}")


def check_errors(f, sv):
    chat_path = "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        (chat_path, {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "string", "pattern": "a+"}}}}, "response_format", "pattern"),
        (chat_path, {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "$ref": "#/$defs/nope"}}}}, "response_format", "names nothing"),
        (chat_path, {"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
        (chat_path, {"grammar": "root ::= [a-"}, "grammar", "line 1"),
        (chat_path, {"grammar": "root ::= x"}, "grammar", "undefined rule 'x'"),
        (chat_path, {"grammar": 5}, "grammar", "GBNF"),
        (chat_path, {"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar", "only one"),
        (chat_path, {"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "required"),
        (chat_path, {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice", "not one of"),
        (chat_path, {"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
        (chat_path, {"tools": [{"type": "function"}]}, "tools[0]", "name"),
        (chat_path, {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}], "tool_choice": "required"},
         "tools", "minimum"),
        ("/v1/completions", {"prompt": "x", "tools": [WEATHER]}, "tools", "chat"),
    ]
    for path, extra, param, frag in cases:
        body = dict({"model": NAME, "max_tokens": 4}, **extra)
        if path == chat_path:
            body["messages"] = msgs
        st, b = sv.http("POST", path, body)
        try:
            e = json.loads(b)["error"]
            ok = st == 400 and e["param"] == param and frag in e["message"] and "\n" not in e["message"]
        except (ValueError, KeyError, TypeError):
            ok, e = False, b[:200]
        f.check(ok, f"{extra}: want 400 naming {param} with {frag!r}: {st} {e}")


def check_batch(f, model, root):
    """`ferry batch` lines with response_format / grammar: every finished output validates against its schema
    (or matches its grammar), a constrained line alone gives what it gave in the batch, and a bad schema or
    grammar goes to the error file naming the field while the rest runs (exit 3)."""
    g = 'root ::= ("yes" | "no") ", " [0-9]{1,3} "."'
    reqs = []
    for i in range(12):
        r = {"id": i, "max_tokens": 1500, "messages": [{"role": "user", "content": f"item {i}"}]}
        if i % 4 == 2:
            r["grammar"] = g
        else:
            r["response_format"] = {"type": "json_schema",
                                    "json_schema": {"name": f"s{i}", "schema": SCHEMAS[i % len(SCHEMAS)]}}
        if i % 4 != 2:  # greedy ones too (a random model's greedy digits may not end: not under a schema)
            r.update(temperature=0.9, seed=i)
        reqs.append(r)
    reqs.append({"id": 12, "max_tokens": 8, "prompt": "free text"})  # unconstrained beside them
    bad = [{"id": "b1", "prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "string", "pattern": "a+"}}}},
           {"id": "b2", "prompt": "x", "grammar": "root ::= x"}]
    inp, out = os.path.join(root, "b.jsonl"), os.path.join(root, "b.out.jsonl")
    with open(inp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in reqs + bad)
    p = subprocess.run([FERRY, "batch", "-m", model,
                        inp, "-o", out, "--max-batch", "5", *DEVICE], capture_output=True, text=True)
    f.check(p.returncode == 3, f"batch with 2 bad lines: exit {p.returncode} (want 3): {p.stderr[-300:]}")
    got = {json.loads(x)["id"]: json.loads(x) for x in open(out)} if os.path.exists(out) else {}
    f.check(sorted(got) == list(range(13)), f"batch results for ids {sorted(got)}")
    for r in reqs[:12]:
        res = got.get(r["id"])
        if not res:
            continue
        text = res["text"]
        if not f.check(res["finish_reason"] == "stop", f"batch line {r['id']}: finish {res['finish_reason']}"):
            continue
        if "grammar" in r:
            f.check(re.fullmatch(r"(yes|no), [0-9]{1,3}\.", text) is not None, f"batch grammar line: {text!r}")
            continue
        try:
            jsonschema.validate(json.loads(text), r["response_format"]["json_schema"]["schema"])
            f.check(True, "valid")
        except (ValueError, jsonschema.ValidationError) as e:
            f.check(False, f"batch line {r['id']}: {text!r}: {str(e)[:200]}")
    errs = [json.loads(x) for x in open(out + ".errors.jsonl")] if os.path.exists(out + ".errors.jsonl") else []
    msgs = {e.get("id"): e.get("error", "") for e in errs}
    f.check("pattern" in msgs.get("b1", "") and "undefined rule 'x'" in msgs.get("b2", ""),
            f"batch error lines: {msgs}")
    for i in (1, 2):  # alone: the same output as in the batch
        one, o1 = os.path.join(root, f"b{i}.jsonl"), os.path.join(root, f"b{i}.out.jsonl")
        with open(one, "w") as fh:
            fh.write(json.dumps(reqs[i]) + "\n")
        p = subprocess.run([FERRY, "batch", "-m", model,
                            one, "-o", o1, *DEVICE], capture_output=True, text=True)
        alone = json.loads(open(o1).readline()) if p.returncode == 0 else None
        f.check(alone == got.get(i), f"batch line {i} alone {alone} != in the batch {got.get(i)}")


def instruct_model():
    for p in (os.path.join(ROOT, "models", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
              os.path.join(os.environ.get("FERRY_HOME", os.path.expanduser("~/.cache/ferry")),
                           "qwen2.5-coder-1.5b-instruct-q4_k_m.ferry")):
        if os.path.exists(p):
            return p
    return None


def check_instruct(f, model):
    sv = Server(model, "--ctx", 1024, *DEVICE)
    try:
        cl = sv.client(timeout=600)
        prompts = [("Describe a person named Ana, 31 years old.", SCHEMAS[0]),
                   ("Pick a color and a size for a T-shirt.", SCHEMAS[2]),
                   ("Two points: (1,2) and (3,4).", SCHEMAS[4])]
        for p, s in prompts:
            rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": True}}
            out, finish, _ = chat(cl, messages=[{"role": "user", "content": p}], response_format=rf, max_tokens=80,
                                  temperature=0)
            try:
                jsonschema.validate(json.loads(out), s)
                f.check(finish == "stop", f"instruct {p!r}: finish {finish}")
            except (ValueError, jsonschema.ValidationError) as e:
                f.check(False, f"instruct {p!r}: {out!r}: {str(e)[:200]}")
        content, finish, calls = chat(cl, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                                      tools=[WEATHER], max_tokens=60, temperature=0)
        f.check(finish == "tool_calls" and calls and calls[0][0] == "get_weather" and
                "paris" in calls[0][1].get("city", "").lower(),
                f"instruct tool call: {finish} {calls} {content!r}")
    finally:
        sv.stop()


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        _, model = tiny_model("qwen2_bias", root)
        sv = Server(model, "--ctx", 2048, *DEVICE)
        try:
            cl = sv.client()
            check_schema_replies(f, cl, 50)
            # json_object: any object, strings unbounded, which a random model rarely closes: every reply that
            # ends by itself parses as an object (at least 2 of 6 do; the tokens are exact on the CPU)
            stopped = 0
            for i in range(6):
                out, finish, _ = chat(cl, messages=[{"role": "user", "content": "obj " * (i + 1)}], max_tokens=600,
                                      temperature=0.7, seed=i, response_format={"type": "json_object"})
                f.check(out.lstrip().startswith("{"), f"json_object: {out[:80]!r}")
                if finish == "stop":
                    stopped += 1
                    try:
                        f.check(isinstance(json.loads(out), dict), f"json_object: not an object: {out!r}")
                    except ValueError as e:
                        f.check(False, f"json_object {out!r}: {e}")
            f.check(stopped >= 2, f"json_object: only {stopped} of 6 replies ended")
            g = 'root ::= ("yes" | "no") ", " [0-9]{1,3} (" " [a-z]{1,6}){0,2} "."'
            for i in range(4):
                r = cl.completions.create(model=NAME, prompt=f"q{i}", max_tokens=60, temperature=1.0, seed=i,
                                          extra_body={"grammar": g})
                out = r.choices[0].text
                f.check(re.fullmatch(r"(yes|no), [0-9]{1,3}( [a-z]{1,6}){0,2}\.", out) is not None,
                        f"grammar reply {out!r} ({r.choices[0].finish_reason})")
            check_tool_parsing(f, cl)
            check_required_tools(f, cl)
            check_errors(f, sv)
        finally:
            rc = sv.stop()
        f.check(rc == 0 and not any("Sanitizer" in x or "runtime error" in x for x in sv.lines),
                f"the server's exit: {rc}: {''.join(sv.lines[-20:])}")
        check_batch(f, model, root)
        model = instruct_model()
        if "build-asan" in os.environ.get("FERRY_BIN", ""):  # minutes under ASan; the release pass runs it
            print("the instruct model's part is left out under ASan")
        elif model and os.environ.get("FERRY_NO_MODEL") != "1":
            check_instruct(f, model)
        else:
            print("the instruct model is not on this machine (tools/fetch_instruct.py): its part is left out")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
