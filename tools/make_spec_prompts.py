#!/usr/bin/env python3
"""Writes bench/spec_prompts.json, the three task sets of the speculative-decoding benchmark (issue 20), from
committed text only, so the set is reproducible:

  summarize  the first ~1500 characters (whole verses) of Genesis chapters 2-20 (tests/data/kjv_genesis.txt)
             after three short hand-written reports, each followed by an instruction to summarize reusing the
             wording (what summarizing a long document does: copy spans of the input);
  code       functions of this repository's Python tools, each with one edit to make (rename a local
             variable, add a docstring, add a guard) and the instruction to repeat the whole function;
  chat       open questions, hand-written.

  python3 tools/make_spec_prompts.py
"""

import ast
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "spec_prompts.json")

REPORTS = [
    "The Industrial Revolution began in Britain in the late eighteenth century. Steam engines powered new "
    "factories, and the factories drew workers from the countryside into fast-growing cities. Railways followed, "
    "carrying coal, iron and cotton across the country. Wages rose slowly, but working hours were long and "
    "conditions in the factories were often dangerous. Reformers pushed for laws limiting child labour and the "
    "length of the working day. Summarize the text above in three sentences, reusing its wording.",
    "Photosynthesis is the process by which green plants turn light into chemical energy. Chlorophyll in the "
    "leaves absorbs sunlight. The plant takes in water through its roots and carbon dioxide from the air to make "
    "glucose, and the oxygen is released into the atmosphere. Plants store the glucose as starch or use it to "
    "grow. Summarize the text above in two sentences, reusing its wording.",
    "The town council met on Tuesday to discuss the budget. The mayor reported that road repairs will cost more "
    "than planned because asphalt prices rose by twenty percent. The committee proposed moving funds from the "
    "parks budget to the roads budget. The council voted to delay the decision until the next meeting. "
    "Summarize the meeting above, reusing its wording.",
]

CODE = [
    "def total_price(items, tax_rate):\n    total = 0\n    for item in items:\n        total = total + item.price "
    "* item.quantity\n    total = total + total * tax_rate\n    return total\n\nRewrite the function above with the "
    "variable total renamed to amount, changing nothing else:\n\n",
    "int count_positive(const int *values, int n)\n{\n\tint count = 0;\n\tfor (int i = 0; i < n; i++)\n\t\tif "
    "(values[i] > 0)\n\t\t\tcount++;\n\treturn count;\n}\n\nRewrite the function above so that it counts negative "
    "values instead, changing as little as possible:\n\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        "
    "self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n\nAdd a method peek to the "
    "class above and repeat the whole class:\n\n",
]

CHAT = [
    "What is the capital of Australia, and why was it chosen?",
    "Give me three tips for sleeping better.",
    "Explain what a hash table is to a beginner.",
    "How do vaccines train the immune system?",
    "Write a short poem about the sea at night.",
    "What are the main differences between TCP and UDP?",
    "Suggest a plan for learning to play the guitar in three months.",
    "Why is the sky blue?",
    "What should I pack for a week of hiking in the mountains?",
    "Explain recursion with a simple example.",
    "What were the causes of the First World War?",
    "How can I make my small apartment feel bigger?",
    "Write a polite email asking my manager for a day off next Friday.",
    "What is the difference between weather and climate?",
    "Give me a simple recipe for tomato soup.",
    "How does a bicycle stay upright when it moves?",
    "What is a good way to start saving money on a small salary?",
    "Explain the rules of chess in a few sentences.",
    "Why do cats purr?",
    "What is machine learning, in plain words?",
    "Tell me a short story about a robot who learns to paint.",
    "How do I prepare for a job interview?",
]

# the files the code set's functions come from (at the time bench/spec_prompts.json was written; the JSON, not
# this list, is what the benchmark reads, so later edits of these files do not change the set)
CODE_FILES = ["tools/gen_tiny_model.py", "tools/ref_forward.py", "tools/hf_to_gguf.py", "tools/make_corpus.py",
              "bench/bench_decode.py", "bench/bench_quant.py", "tests/test_imatrix.py", "tests/test_chat.py",
              "tools/fetch_instruct.py", "tests/test_cli.py"]
N_CODE = 22


def functions(path):
    """(name, source, local names) of the top-level functions of 8 to 30 lines, in file order."""
    src = open(os.path.join(ROOT, path)).read()
    tree = ast.parse(src)
    out = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        text = ast.get_source_segment(src, node)
        lines = text.count("\n") + 1
        if not 8 <= lines <= 30:
            continue
        args = [a.arg for a in node.args.args]
        local = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
        out.append((node.name, text, [v for v in local if len(v) >= 2 and v not in args], args,
                    ast.get_docstring(node) is not None))
    return out


def code_prompts(n):
    """n edits, cycling rename / docstring / guard over the functions of CODE_FILES in order."""
    funcs = [f for path in CODE_FILES for f in functions(path)]
    prompts, edit = [], 0
    for name, text, local, args, has_doc in funcs:
        kind = ("rename", "doc", "guard")[edit % 3]
        if kind == "rename" and local:
            var = local[0]
            prompts.append(f"{text}\n\nRewrite the function above with the variable {var} renamed to "
                           f"{var}_value, changing nothing else:\n\n")
        elif kind == "doc" and not has_doc:
            prompts.append(f"{text}\n\nAdd a one-line docstring to the function above and repeat the whole "
                           "function:\n\n")
        elif kind == "guard" and args:
            prompts.append(f"{text}\n\nAt the start of the function above, add a check that raises "
                           f"ValueError when {args[0]} is None, and repeat the whole function:\n\n")
        else:
            continue
        edit += 1
        if len(prompts) == n:
            return prompts
    sys.exit(f"make_spec_prompts: only {len(prompts)} functions of CODE_FILES fit")


def summarize_prompts():
    text = open(os.path.join(ROOT, "tests", "data", "kjv_genesis.txt")).read()
    chapters = text.split("Genesis ")[1:]
    prompts = list(REPORTS)
    for ch in chapters[1:20]:
        verses = ch.split("\n", 1)[1].strip().split("\n")
        doc = ""
        for v in verses:
            if len(doc) + len(v) > 1500:
                break
            doc += v + "\n"
        prompts.append(doc + "\nSummarize the passage above in three sentences, reusing its wording.")
    return prompts


def main():
    sets = {"summarize": summarize_prompts(), "code": CODE + code_prompts(N_CODE - len(CODE)), "chat": CHAT}
    text = json.dumps(sets, indent=1) + "\n"
    tmp = OUT + ".tmp"
    open(tmp, "w").write(text)
    os.replace(tmp, OUT)
    print({k: len(v) for k, v in sets.items()})


if __name__ == "__main__":
    main()
