"""The Jinja environment of Hugging Face transformers' apply_chat_template (chat_template_utils
._compile_jinja_template), rebuilt without transformers, as the reference for ferry's template tests."""

import json
from datetime import datetime

import jinja2
from jinja2 import ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# strftime_now's fixed clock in the tests; ferry gets the same day with --date.
FIXED_DATE = "2025-03-09"


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def hf_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    fixed = datetime.strptime(FIXED_DATE, "%Y-%m-%d")
    env.globals["strftime_now"] = lambda fmt: fixed.strftime(fmt)
    return env


_compiled = {}


def render(env, source, variables):
    """(text, None) or (None, exception); templates are compiled once."""
    try:
        key = (id(env), source)
        if key not in _compiled:
            _compiled[key] = env.from_string(source)
        return _compiled[key].render(**variables), None
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is a reference outcome
        return None, e
