"""ferry template vs Python jinja2 in Hugging Face's environment (tests/hf_jinja.py) on every chat template
in ../shared/data/templates: plain chats, system prompts, multi-turn, unicode / quotes / whitespace / empty
contents, tools with assistant tool_calls and tool results (arguments as objects and as JSON strings), with
and without add_generation_prompt. Outputs must be byte-identical; where jinja2 raises, ferry must fail and
its stderr must contain jinja2's message. Exit 0 pass, 1 fail, 77 skip (no jinja2 or no templates)."""

import copy
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from ferrytest import FERRY, ROOT
TEMPLATES = os.path.join(ROOT, "..", "shared", "data", "templates")

try:
    import hf_jinja
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit"},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the documentation",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for."},
                "limit": {"type": "integer", "description": "Max results", "default": 5, "minimum": 1, "maximum": 50},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Filter tags"},
                "exact": {"type": "boolean", "description": "Exact match"},
                "score": {"type": "number", "description": "Minimum score", "nullable": True},
                "filters": {
                    "type": "object",
                    "description": "Extra filters",
                    "properties": {"lang": {"type": "string", "description": "Language"}},
                    "required": ["lang"],
                },
            },
            "required": ["query"],
        },
    },
}
# No nested object parameter: templates that need additionalProperties for objects (command-r) render it.
SEARCH_FLAT = copy.deepcopy(SEARCH)
del SEARCH_FLAT["function"]["parameters"]["properties"]["filters"]
NO_ARGS = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time (UTC).",
                 "parameters": {"type": "object", "properties": {}}},
}

SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hello, how are you?"}
A1 = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
U2 = {"role": "user", "content": "What is the capital of France?"}


def tool_turns(args_as_string, call_id="call12345"):
    args = {"location": "Paris, France", "unit": "celsius"}
    call = {"id": call_id, "type": "function",
            "function": {"name": "get_current_weather", "arguments": json.dumps(args) if args_as_string else args}}
    return [
        {"role": "user", "content": "What's the weather like in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "name": "get_current_weather",
         "content": json.dumps({"temperature": 22, "condition": "sunny"})},
        {"role": "assistant", "content": "It is 22°C and sunny in Paris."},
        {"role": "user", "content": "Thanks! And tomorrow?"},
    ]


def parallel_turns():
    calls = [
        {"id": "callAAAAA", "type": "function",
         "function": {"name": "get_current_weather", "arguments": {"location": "Oslo"}}},
        {"id": "callBBBBB", "type": "function",
         "function": {"name": "search_docs", "arguments": {"query": "fjords", "limit": 3, "tags": ["geo"]}}},
    ]
    return [
        {"role": "user", "content": "Weather in Oslo, and find docs about fjords."},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "callAAAAA", "content": "{\"temperature\": -3}"},
        {"role": "tool", "tool_call_id": "callBBBBB", "content": "[\"Fjord guide\"]"},
    ]


def conversations():
    """(name, variables) pairs; add_generation_prompt is added by the caller."""
    tricky = "Unicode: héllo wörld — 你好 🦙 ÆØÅ\n\"double\" and 'single' quotes, a \\ backslash,\ttab, <b>&amp;</b>"
    convs = [
        ("system_user", {"messages": [SYS, U1]}),
        ("user", {"messages": [U1]}),
        ("multi_turn", {"messages": [U1, A1, U2]}),
        ("system_multi_turn", {"messages": [SYS, U1, A1, U2]}),
        ("assistant_last", {"messages": [U1, A1]}),
        ("unicode_quotes", {"messages": [{"role": "system", "content": tricky}, {"role": "user", "content": tricky},
                                         {"role": "assistant", "content": tricky},
                                         {"role": "user", "content": "ok"}]}),
        ("whitespace", {"messages": [{"role": "user", "content": "  leading and trailing spaces  \n\n"},
                                     {"role": "assistant", "content": "\n\tindented\n  reply \n"},
                                     {"role": "user", "content": "line1\nline2\r\nline3"}]}),
        ("empty_content", {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""},
                                        {"role": "user", "content": " "}]}),
        ("think_tags", {"messages": [U1, {"role": "assistant", "content": "<think>hmm</think>\n\nFine, thanks."},
                                     U2]}),
        ("two_users", {"messages": [U1, U2]}),
        ("system_only", {"messages": [SYS]}),
        ("no_messages", {"messages": []}),
        ("tools_first_turn", {"messages": [SYS, U1], "tools": [WEATHER, SEARCH]}),
        ("tools_no_system", {"messages": [U1], "tools": [WEATHER, SEARCH, NO_ARGS]}),
        ("tool_use_dict_args", {"messages": [SYS] + tool_turns(False), "tools": [WEATHER]}),
        ("tool_use_string_args", {"messages": [SYS] + tool_turns(True), "tools": [WEATHER]}),
        ("tool_use_no_system", {"messages": tool_turns(False), "tools": [WEATHER, SEARCH]}),
        ("tool_use_string_no_tools", {"messages": tool_turns(True)}),
        ("parallel_tool_calls", {"messages": parallel_turns(), "tools": [WEATHER, SEARCH]}),
        ("builtin_tools", {"messages": [SYS, U1], "tools": [WEATHER], "builtin_tools": ["brave_search", "wolfram_alpha"]}),
        ("code_interpreter", {"messages": [U1], "tools": [{"type": "code_interpreter"}, WEATHER]}),
        ("documents", {"messages": [U1], "documents": [{"title": "Doc one", "text": "Some text."},
                                                       {"title": "Über", "text": "Zweiter \"Text\"."}]}),
        ("custom_date", {"messages": [U1], "date_string": "01 Jan 2030"}),
        ("tools_chat", {"messages": [SYS, U1, A1, U2], "tools": [WEATHER]}),
        ("tools_unicode", {"messages": [{"role": "system", "content": tricky}, {"role": "user", "content": tricky}],
                           "tools": [WEATHER, SEARCH_FLAT]}),
        ("tool_use_flat", {"messages": tool_turns(True), "tools": [SEARCH_FLAT, WEATHER, NO_ARGS]}),
        ("tool_use_flat_dict", {"messages": [SYS] + tool_turns(False), "tools": [SEARCH_FLAT, WEATHER]}),
    ]
    # Template keyword arguments some templates read (firefunction-v2: functions, datetime).
    for _, v in convs:
        v.setdefault("functions", json.dumps([WEATHER["function"], SEARCH_FLAT["function"]], indent=2))
        v.setdefault("datetime", "2025-03-09 12:00")
    return convs


def ferry_render(path, variables, gen, tmp, idx):
    mpath = os.path.join(tmp, f"case{idx}.json")
    v = dict(variables)
    bos, eos = v.pop("bos_token"), v.pop("eos_token")
    with open(mpath, "w", encoding="utf-8") as f:
        json.dump(v, f, ensure_ascii=False)
    cmd = [FERRY, "template", path, mpath, "--bos", bos, "--eos", eos, "--date", hf_jinja.FIXED_DATE]
    if gen:
        cmd.append("--add-generation-prompt")
    p = subprocess.run(cmd, capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def diff_snippet(want, got):
    i = 0
    while i < min(len(want), len(got)) and want[i] == got[i]:
        i += 1
    return f"first difference at char {i}:\n  jinja2: {want[max(0, i - 60):i + 60]!r}\n  ferry:  {got[max(0, i - 60):i + 60]!r}"


def main():
    if not os.path.isdir(TEMPLATES):
        print(f"skip: no templates at {TEMPLATES}")
        return 77
    names = sorted(n for n in os.listdir(TEMPLATES) if n.endswith(".jinja"))
    env = hf_jinja.hf_env()
    cases = []
    for name in names:
        path = os.path.join(TEMPLATES, name)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for conv, variables in conversations():
            for gen in (False, True):
                v = copy.deepcopy(variables)
                v.setdefault("tools", None)
                v.setdefault("documents", None)
                v.update(add_generation_prompt=gen, bos_token="<|bos|>", eos_token="<|eos|>")
                cases.append((name, path, source, conv, gen, v))
    failures = []
    counts = {"same_text": 0, "same_error": 0}
    with tempfile.TemporaryDirectory(prefix="ferry_tmpl_") as tmp:
        def run(i):
            name, path, source, conv, gen, v = cases[i]
            want, exc = hf_jinja.render(env, source, copy.deepcopy(v))
            v2 = {k: val for k, val in v.items() if k != "add_generation_prompt"}
            rc, out, err = ferry_render(path, v2, gen, tmp, i)
            tag = f"{name} / {conv} / add_generation_prompt={gen}"
            if exc is not None:
                msg = str(exc)
                if rc == 0:
                    return tag, "jinja2 raised %s(%r) but ferry rendered %r" % (type(exc).__name__, msg, out[:200])
                if msg not in err:
                    return tag, f"jinja2 raised {type(exc).__name__}({msg!r}); ferry's error differs: {err.strip()!r}"
                return tag, "same_error"
            if rc != 0:
                return tag, f"jinja2 rendered {want[:200]!r}... but ferry failed: {err.strip()}"
            if out != want:
                return tag, diff_snippet(want, out)
            return tag, "same_text"

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for tag, result in pool.map(run, range(len(cases))):
                if result in counts:
                    counts[result] += 1
                else:
                    failures.append((tag, result))
    print(f"{len(names)} templates, {len(cases)} cases: {counts['same_text']} identical renders, "
          f"{counts['same_error']} identical errors, {len(failures)} failures")
    for tag, why in failures[:10]:
        print(f"FAIL: {tag}\n  {why}")
    return 1 if failures or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
