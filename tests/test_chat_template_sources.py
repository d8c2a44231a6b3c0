"""A model's chat template is found wherever the model keeps it, and renders as jinja2 renders it in
transformers' environment (tests/hf_jinja.py): a GGUF file's tokenizer.chat_template, a Hugging Face
directory's chat_template.jinja or tokenizer_config.json chat_template (a string, or a list whose "default"
entry is used), a model.ferry directory. A missing or malformed template is a one-line error naming the
file (and the GGUF key or config field). Exit 0 pass, 1 fail, 77 skip (no jinja2 or gguf)."""

import json
import os
import sys

from ferrytest import Failures, ferry, scratch, tiny_model

try:
    import gguf
    import hf_jinja
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

TEMPLATE = ("{%- for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}{{ eos_token }}\n{% endfor %}"
            "{%- if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Grüße, \"world\"\n"}]


def write_gguf(path, template):
    w = gguf.GGUFWriter(path, "llama")
    if template is not None:
        w.add_string("tokenizer.chat_template", template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    f = Failures()
    root, cleanup = scratch()
    try:
        msgs = os.path.join(root, "messages.json")
        with open(msgs, "w", encoding="utf-8") as fp:
            json.dump(MESSAGES, fp)
        want, exc = hf_jinja.render(hf_jinja.hf_env(), TEMPLATE, {"messages": MESSAGES, "add_generation_prompt": True,
                                                                   "bos_token": "", "eos_token": "</s>"})
        assert exc is None

        def same(model, what):
            p = ferry("template", model, msgs, "--add-generation-prompt", "--eos", "</s>")
            f.check(p.returncode == 0 and p.stdout == want, f"{what}: {p.stdout!r} {p.stderr.strip()} vs {want!r}")

        g = os.path.join(root, "m.gguf")
        write_gguf(g, TEMPLATE)
        same(g, "GGUF tokenizer.chat_template")
        hf = os.path.join(root, "hf")
        os.mkdir(hf)
        for cfg in ({"chat_template": TEMPLATE},
                    {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": TEMPLATE}]}):
            with open(os.path.join(hf, "tokenizer_config.json"), "w") as fp:
                json.dump(cfg, fp)
            same(hf, f"tokenizer_config.json {type(cfg['chat_template']).__name__}")
        with open(os.path.join(hf, "chat_template.jinja"), "w") as fp:
            fp.write(TEMPLATE)
        with open(os.path.join(hf, "tokenizer_config.json"), "w") as fp:
            json.dump({"chat_template": "wrong"}, fp)
        same(hf, "chat_template.jinja first")
        tiny_hf, model = tiny_model("qwen2_bias", root)
        with open(os.path.join(tiny_hf, "tokenizer_config.json")) as fp:
            tiny_tmpl = json.load(fp)["chat_template"]
        want_tiny, _ = hf_jinja.render(hf_jinja.hf_env(), tiny_tmpl, {"messages": MESSAGES, "add_generation_prompt": True,
                                                                       "bos_token": "", "eos_token": "</s>"})
        p = ferry("template", model, msgs, "--add-generation-prompt", "--eos", "</s>")
        f.check(p.returncode == 0 and p.stdout == want_tiny, f"model.ferry: {p.stdout!r} {p.stderr.strip()}")

        bad = os.path.join(root, "bad.gguf")
        write_gguf(bad, "{% for m in messages %}\n{{ m.content | nosuchfilter }}{% endfor %}")
        none = os.path.join(root, "none.gguf")
        write_gguf(none, None)
        empty = os.path.join(root, "empty")
        os.mkdir(empty)
        with open(os.path.join(root, "broken.json"), "w") as fp:
            fp.write("{\"chat_template\": ")
        os.mkdir(os.path.join(root, "broken"))
        os.rename(os.path.join(root, "broken.json"), os.path.join(root, "broken", "tokenizer_config.json"))
        cases = [(bad, ["bad.gguf:tokenizer.chat_template:2", "nosuchfilter"]),
                 (none, ["none.gguf", "tokenizer.chat_template"]),
                 (empty, ["empty", "no chat template"]),
                 (os.path.join(root, "broken"), ["tokenizer_config.json:1"]),
                 (os.path.join(root, "missing.jinja"), ["missing.jinja"])]
        for path, needles in cases:
            p = ferry("template", path, msgs)
            f.check(p.returncode == 1 and all(n in p.stderr for n in needles) and p.stderr.count("\n") == 1,
                    f"{os.path.basename(path)}: exit {p.returncode}, {p.stderr.strip()!r}")
    finally:
        cleanup()
    f.finish()


if __name__ == "__main__":
    main()
