"""ferry's Jinja interpreter vs Python jinja2 (HF's environment, tests/hf_jinja.py) on small templates, one per
construct: literals and Python printing (repr of str/list/dict/tuple, floats), arithmetic with Python's int /
float rules, comparisons, and/or, conditional expressions, every statement (if/for/set/macro/filter/with/
raw/break/continue), jinja2's scoping, whitespace control, every supported filter, test and method,
Undefined, tojson options, Markup. Outputs must be identical; where jinja2 raises, ferry must fail with the
same message. Then constructs ferry does not support must fail naming the construct and the line.
Exit 0 pass, 1 fail, 77 skip (no jinja2)."""

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from ferrytest import FERRY

try:
    import hf_jinja
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

VARS = {
    "x": [1, 2, 3],
    "d": {"a": 1, "b": [1, 2], "c": {"e": "f"}, "items": "key named items"},
    "s": "Hello World",
    "n": None,
    "t": True,
    "f": 1.5,
    "i": 7,
    "e": "",
    "u": "héllo wörld ñ 你好",
    "people": [{"name": "bob", "age": 31}, {"name": "Alice", "age": 25}, {"name": "carol", "age": 31, "x": None}],
    "words": ["b", "A", "a", "c", "B"],
    "nested": {"k": [{"v": 1}, {"v": 2}]},
    "messages": [{"role": "user", "content": "hi"}],
}

SNIPPETS = [
    # literals and Python printing
    "{{ 1 }} {{ -1 }} {{ 1.0 }} {{ 1.5e-7 }} {{ 1e16 }} {{ 1e15 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ -0.0 }}",
    "{{ 123456789012345678 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 2.5E3 }} {{ 1_0.5 }}",
    "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }} {{ n }} {{ t }}",
    "{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }}",
    "{{ {'a': [1, {'b': 'c'}], 1: 2, none: true} }}",
    "{{ (1,) }} {{ (1, 2) }} {{ () }} {{ 1, 2 }}",
    "{{ 'it\\'s' }} {{ \"a\\\"b\" }} {{ ['it\\'s', \"q\\\"uote\", 'both\\'\"', 'plain'] }}",
    "{{ \"\\u00e9\\x41\\101\\n\\t|\\\\|\\q|\\U0001F999|\\\n|\\é\" }}",
    "{{ ['\\n', '\\x01', '\\u200b', 'é', '🦙', '\\\\', '\\x7f', '\\xa0', '\\u3000', '\\r\\t'] }}",
    "{{ 'adjacent' \"strings\" 'join' }}",
    "{{ u }} {{ [u] }} {{ d }} {{ people[2] }}",
    "{{ x }}{{ d.b }}{{ (x, d.c) }}",
    # arithmetic
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ -7 % 3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 7 % 2.5 }}",
    "{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }} {{ 2.0 ** 0.5 }} {{ (-8) ** 2 }}",
    "{{ 10 / 4 }} {{ 10 / 5 }} {{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }}",
    "{{ 'ab' * 3 }}|{{ 3 * 'ab' }}|{{ [1] * 3 }}|{{ 'x' * 0 }}|{{ 'x' * -1 }}|{{ (1, 2) * 2 }}",
    "{{ [1, 2] + [3] }} {{ (1,) + (2,) }} {{ 'a' ~ 1 ~ none ~ true ~ 1.5 ~ [1] }} {{ true + 1 }} {{ 1 + 1.5 }}",
    "{{ -i }} {{ +i }} {{ -f }} {{ -true }} {{ - - 1 }} {{ -1|abs }}",
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 + 'a' }}",
    "{{ [1] + none }}",
    "{{ none + 1 }}",
    "{{ 'a' - 'b' }}",
    # comparisons and logic
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 <= 1 }} {{ 2 >= 3 }} {{ 1 != 2 }}",
    "{{ 1 == 1.0 }} {{ 1 == true }} {{ 0 == false }} {{ 'a' == 'a' }} {{ [1, 2] == [1, 2] }} {{ (1, 2) == [1, 2] }} {{ d == d }} {{ none == none }}",
    "{{ 'b' > 'a' }} {{ 'é' > 'z' }} {{ 'Z' < 'a' }} {{ [1, 2] < [1, 3] }} {{ [1] < [1, 0] }} {{ 1.5 > 1 }}",
    "{{ none or 'x' }}|{{ 0 or [] }}|{{ 'a' and 'b' }}|{{ '' and 'b' }}|{{ not none }}|{{ not 'a' }}|{{ x and d }}",
    "{{ 'ell' in s }} {{ 2 in x }} {{ 'a' in d }} {{ 'z' not in d }} {{ 'x' in nothing }} {{ 1 in (1, 2) }} {{ '' in s }}",
    "{{ 1 < 'a' }}",
    "{{ 1 in 'abc' }}",
    "{{ 'a' in none }}",
    # conditional expressions
    "{{ 'y' if t else 'n' }} {{ 'y' if n else 'n' }} [{{ 'y' if n }}] {{ 1 if 0 else 2 if 0 else 3 }}",
    # if
    "{% if i > 5 %}big{% elif i > 2 %}mid{% else %}small{% endif %}|{% if n %}a{% elif e %}b{% else %}c{% endif %}",
    "{% if x %}x{% endif %}{% if e %}e{% endif %}{% if d.missing %}m{% endif %}{% if not d.missing %}!m{% endif %}",
    # for
    "{% for v in x %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
    "{% for v in [] %}never{% else %}empty{% endfor %}|{% for v in x %}{{ v }}{% else %}no{% endfor %}",
    "{% for v in x if v is odd %}{{ v }}:{{ loop.index }}/{{ loop.length }} {% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}",
    "{% for k, v in d|dictsort %}{{ k }}{% endfor %}|{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}",
    "{% for ch in 'héllo' %}[{{ ch }}]{% endfor %}{% for v in nothing %}x{% endfor %}",
    "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}",
    "{% for v in range(10) %}{% if v == 2 %}{% continue %}{% endif %}{% if v == 5 %}{% break %}{% endif %}{{ v }}{% endfor %}",
    "{% for v in x %}{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.previtem is defined }};{% endfor %}",
    "{% for v in range(5) %}{{ loop.cycle('a', 'b') }}{% endfor %} {% for v in [1, 1, 2, 2, 1] %}{% if loop.changed(v) %}{{ v }}{% endif %}{% endfor %}",
    "{{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | list }}",
    "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
    "{% for v in none %}{% endfor %}",
    "{% for v in 5 %}{% endfor %}",
    # set and scoping
    "{% set a = 1 %}{% for v in x %}{% set a = v %}{{ a }}{% endfor %}{{ a }}",
    "{% set ns = namespace(total=0, names=[]) %}{% for p in people %}{% set ns.total = ns.total + p.age %}{% set ns.names = ns.names + [p.name] %}{% endfor %}{{ ns.total }} {{ ns.names }} {{ ns }}",
    "{% set ns = namespace() %}{% set ns.a = 1 %}{{ ns.a }}{{ ns.b }}|{{ ns.b is defined }}",
    "{% if true %}{% set leak = 'yes' %}{% endif %}{{ leak }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}",
    "{% set block %}  inner {{ i }}  {% endset %}[{{ block }}]",
    "{% set block | trim | upper %}  inner {{ i }}  {% endset %}[{{ block }}]",
    "{% set y = 1 %}{% for v in [1, 2] %}{% if v == 2 %}[{{ y }}]{% endif %}{% set y = 5 %}{% endfor %}{{ y }}",
    "{% with a = 1, b = i %}{{ a }}{{ b }}{% endwith %}[{{ a }}]",
    "{% set n2 = none %}{% set n2.x = 1 %}",
    # macros
    "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Ann', 'Hi') }} {{ greet(greeting='Yo', name='Z') }}",
    "{% macro m(a, b=2) %}{{ a }}|{{ b }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1) }} {{ m(1, 3, 4) }} {{ m(1, c=5) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=2) }}",
    "{% macro m(a) %}[{{ a }}]{% endmacro %}{{ m() }}{{ m(a=none) }}",
    "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k * fact(k - 1)|int }}{% endif %}{% endmacro %}{{ fact(6) }}",
    "{% set outer = 'o' %}{% macro m() %}{{ outer }}{% set outer = 'inner' %}{{ outer }}{% endmacro %}{{ m() }}{{ outer }}",
    "{% macro m() %}{{ late }}{% endmacro %}{% set late = 'L' %}{{ m() }}",
    "{% macro m(x) %}{{ x }}{% endmacro %}{{ m }}",
    "{% macro m(x) %}  {{ x }}  {% endmacro %}[{{ m(1) }}]{{ m(2)|trim }}",
    "{% macro m(a) %}x{% endmacro %}{{ m(1, a=2) }}",
    "{% macro m(a) %}{{ kwargs }}{% endmacro %}{{ m(1, a=2) }}",
    "{% macro m(a, a2=a) %}{{ a2 }}{% endmacro %}{{ m(5) }}{% macro outer() %}{% macro inner() %}I{% endmacro %}{{ inner() }}O{% endmacro %}{{ outer() }}{{ inner is defined }}",
    # filter blocks, raw, comments, print
    "{% filter upper %}hello {{ s }}{% endfilter %}|{% filter trim|replace('a', 'b') %}  banana  {% endfilter %}",
    "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{%- raw -%}  keep {{ x }}  {%- endraw -%}  |",
    "a{# comment #}b{#- trimmed -#}  c {# {{ x }} #}d",
    "{% print 'p', 1 %}{% print %}",
    # whitespace control
    "<\n{% if true %}\n  inside\n{% endif %}\n>",
    "<\n  {% if true %}\n  inside\n  {% endif %}\n>",
    "<\n  {%- if true -%}\n  inside\n  {%- endif -%}\n>",
    "<  {{- 'a' -}}  >  {{ 'b' }}  <  {{- 'c' }}  >",
    "<\n  {%+ if true %}x{% endif %}\n  {% if true +%}\ny{% endif %}\n>",
    "<\n  {# c #}\n  {#- d #}\ne\n>",
    "trailing newline kept?\n\n",
    "crlf\r\nline\r\n{% if true %}\r\nyes\r\n{% endif %}\r\nend\r\n",
    "  {% for v in x %}\n    {{ v }}\n  {% endfor %}\n",
    "{%- for v in x -%}\n  {{ v }}\n{%- endfor -%}\n",
    "a {%- if true %} b {% endif -%} c",
    "{{ '{{' }} {{ '}}' }} {{ {'a': {'b': 1}} }} {{ '%}' }}",
    # filters
    "[{{ '  a b  '|trim }}] [{{ 'xxaxx'|trim('x') }}] [{{ n|trim }}] [{{ nothing|trim }}] [{{ u|trim }}]",
    "{{ x|length }} {{ s|length }} {{ u|length }} {{ d|count }} {{ nothing|length }} {{ ''|length }}",
    "{{ s|upper }} {{ s|lower }} {{ u|upper }} {{ 'hello world-foo(bar'|title }} {{ 'hELLO wORLD'|capitalize }}",
    "{{ nothing|default('dflt') }} {{ n|default('dflt') }} {{ e|default('dflt', true) }} {{ e|d('D', boolean=true) }} {{ 0|default(5, true) }}",
    "{{ x|first }} {{ x|last }} {{ s|first }} {{ d|first }} {{ []|first }}[{{ []|last }}] {{ nothing|first is defined }}",
    "{{ x|join(', ') }} {{ words|join }} {{ people|join('-', attribute='name') }} {{ [1, none, 'a']|join('|') }}",
    "{{ s|replace('o', '0') }} {{ s|replace('o', '0', 1) }} {{ 'aaa'|replace('', '-') }} {{ 5|replace('5', 'five') }}",
    "{{ 1|string }}{{ [1]|string }}{{ n|string }}{{ nothing|string }}|{{ (1|string) + 'x' }}",
    "{{ '42'|int }} {{ ' -7 '|int }} {{ '4.7'|int }} {{ 'abc'|int }} {{ 'abc'|int(9) }} {{ 4.9|int }} {{ true|int }} {{ none|int }} {{ '1_000'|int }} {{ 'ff'|int(base=16) }}",
    "{{ '4.5'|float }} {{ '1e3'|float }} {{ 'x'|float }} {{ 3|float }} {{ ' inf '|float }} {{ '-nan'|float }} {{ '.5'|float }}",
    "{{ 'ab'|list }} {{ d|list }} {{ x|list }} {{ nothing|list }} {{ range(3)|list }}",
    "{% for k, v in d|items %}{{ k }}:{{ v }} {% endfor %}{{ nothing|items|list }}",
    "{{ people|map(attribute='name')|list }} {{ x|map('string')|list }} {{ words|map('upper')|join }} {{ people|map(attribute='x', default='dx')|list }}",
    "{{ nested.k|map(attribute='v')|list }} {{ [[1, 2], [3, 4]]|map(attribute='1')|list }} {{ none|map('upper')|list }}",
    "{{ x|select('odd')|list }} {{ x|reject('odd')|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ x|select('gt', 1)|list }} {{ x|select('in', [1, 3])|list }}",
    "{{ people|selectattr('age', 'equalto', 31)|map(attribute='name')|list }} {{ people|rejectattr('x')|map(attribute='name')|list }} {{ people|selectattr('x', 'none')|list|length }}",
    "{{ people|selectattr('x', 'defined')|list|length }} {{ people|selectattr('name', '==', 'bob')|first }}",
    "{{ words|unique|list }} {{ words|unique(case_sensitive=true)|list }} {{ people|unique(attribute='age')|map(attribute='name')|list }}",
    "{{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|sort(reverse=true) }} {{ people|sort(attribute='age')|map(attribute='name')|list }} {{ [3, 1.5, 2]|sort }}",
    "{{ people|sort(attribute='name', reverse=true)|map(attribute='name')|join(',') }} {{ [[2, 'b'], [1, 'a'], [2, 'a']]|sort }}",
    "{{ {'b': 1, 'A': 2, 'a': 3}|dictsort }} {{ {'b': 1, 'a': 2}|dictsort(by='value') }} {{ {'b': 1, 'A': 2}|dictsort(case_sensitive=true, reverse=true) }}",
    "{{ x|reverse|list }} {{ 'abc'|reverse }} {{ d|reverse|list }} {{ (x|map('string'))|reverse }}",
    "{{ 'abc'|safe }} {{ -3|abs }} {{ -2.5|abs }} {{ 3.14159|round }} {{ 3.14159|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 7|round }} {{ 3.2|round(method='ceil') }} {{ 3.8|round(0, 'floor') }}",
    "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb\\n\\nc'|indent(2, first=true) }}|{{ 'a\\nb\\n\\nc'|indent(2, blank=true) }}|{{ 'a\\nb'|indent('> ') }}|{{ ''|indent(first=true) }}",
    "{{ 'one two  three, four'|wordcount }} {{ u|wordcount }} {{ 'abc'|center(9) }}|{{ 'ab'|center(5) }}|",
    "{{ x|sum }} {{ people|sum(attribute='age') }} {{ [1.5, 2]|sum(start=10) }} {{ x|min }} {{ x|max }} {{ words|min }} {{ words|max(case_sensitive=true) }} {{ people|max(attribute='age')|tojson }} {{ []|max }}",
    "{{ d|attr('c') }} {{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|escape|safe }}",
    "{{ s|first|upper }} {{ (x|map('string')|first) }} {{ x|map('string')|first }}",
    # tests
    "{{ x is defined }} {{ nothing is defined }} {{ nothing is undefined }} {{ d.a is defined }} {{ d.zz is defined }} {{ n is none }} {{ n is not none }}",
    "{{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 's' is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }} {{ 1 is float }}",
    "{{ 's' is string }} {{ x is string }} {{ d is mapping }} {{ x is mapping }} {{ t is boolean }} {{ 1 is boolean }} {{ t is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }}",
    "{{ x is iterable }} {{ s is iterable }} {{ d is iterable }} {{ 1 is iterable }} {{ nothing is iterable }} {{ none is iterable }} {{ x|map('string') is iterable }}",
    "{{ x is sequence }} {{ s is sequence }} {{ d is sequence }} {{ 1 is sequence }} {{ nothing is sequence }} {{ x|map('string') is sequence }}",
    "{{ 3 is odd }} {{ 3 is even }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ -3 is odd }}",
    "{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} {{ 1 is lt 2 }} {{ 1 is le 0 }} {{ 2 is greaterthan 1 }} {{ 1 is lessthan 1 }} {{ 1 is in x }} {{ 'q' is in s }}",
    "{{ 'abc' is lower }} {{ 'aBc' is lower }} {{ 'ABC' is upper }} {{ '1' is upper }} {{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }}",
    "{{ greet is callable }} {{ range is callable }} {{ s.upper is callable }} {{ 1 is callable }} {{ none is sameas none }} {{ false is sameas false }} {{ 0 is sameas false }}",
    "{{ 'a'|safe is escaped }} {{ 'a' is escaped }} {{ 'a' is string and 'b' is string }} {{ not 1 is odd }}",
    "{{ 's' is odd }}",
    "{{ 5 is divisibleby 0 }}",
    "{{ x is sameas x }} {{ d.b is sameas d.b }} {{ [1] is sameas [1] }} {{ n is sameas none }} {{ people[0] is sameas people|first }}",
    # methods
    "{{ s.startswith('He') }} {{ s.endswith('ld') }} {{ s.startswith(('x', 'H')) }} {{ s.endswith('o', 0, 5) }} {{ s.startswith('World', 6) }}",
    "[{{ '  a  '.strip() }}] [{{ 'xxaxx'.lstrip('x') }}] [{{ 'xxaxx'.rstrip('x') }}] [{{ '\\n a \\t'.rstrip() }}]",
    "{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(none, 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ '  a  b  '.rsplit(none, 1) }} {{ 'a b  c'.split(' ') }} {{ ''.split() }} {{ ''.split(',') }}",
    "{{ 'a\\nb\\r\\nc\\rd'.splitlines() }} {{ 'a\\nb\\n'.splitlines(true) }} {{ '<think>x</think>y'.split('</think>')[-1] }}",
    "{{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 2) }} {{ s.upper() }} {{ s.lower() }} {{ 'hello wORLD 2nd'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ s.find('o') }} {{ s.rfind('o') }} {{ s.find('z') }} {{ s.find('o', 5) }} {{ s.index('W') }} {{ s.count('l') }} {{ u.find('wörld') }} {{ 'aaa'.count('') }}",
    "{{ '-'.join(['a', 'b']) }} {{ ''.join(words) }} {{ ', '.join(d) }}",
    "{{ '-'.join([1, 2]) }}",
    "{{ s.index('z') }}",
    "{{ '12'.isdigit() }} {{ '1a'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' \\t'.isspace() }} {{ 'AB'.isupper() }} {{ 'ab'.islower() }} {{ 'a1'.isalnum() }} {{ ''.isdigit() }}",
    "{{ '5'.zfill(3) }} {{ '-5'.zfill(4) }} {{ 'ab'.ljust(4, '.') }}| {{ 'ab'.rjust(4) }} {{ 'ab'.center(6, '*') }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'x.py'.removesuffix('.py') }}",
    "{{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'abc'.partition('z') }}",
    "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys() }} {{ d.values()|list }} {{ d.items()|list }} {{ d.items()|length }}",
    "{{ d['items'] }} {{ d.items is defined }} {{ d['c']['e'] }} {{ d.c.e }} {{ x[0] }} {{ x[-1] }} {{ x[5] is defined }} {{ x.count(2) }} {{ x.index(3) }}",
    "{{ x[1:] }} {{ x[:-1] }} {{ x[::-1] }} {{ x[::2] }} {{ s[1:4] }} {{ s[::-1] }} {{ u[1:3] }} {{ u[-2:] }} {{ x[10:] }} {{ s[-100:2] }} {{ u[::-3] }}",
    "{{ s[0] }}{{ s[-1] }}{{ u[1] }}{{ s[100] is defined }}",
    "{{ x[::0] }}",
    "{{ 5 % 0 }}",
    "{{ 5.0 // 0 }}",
    "{{ 5|indent }}",
    "{{ raise_exception() }}",
    "{% set l = [1] %}{{ l.append(2) }}",
    "{{ d.update({}) }}",
    "{{ s.nonexistent }}|{{ s.nonexistent is defined }}|{{ x.foo is defined }}",
    # Undefined
    "[{{ nothing }}] [{{ d.missing }}] [{{ nothing is defined }}] [{{ nothing|default('z') }}] [{{ none.foo }}]",
    "{{ nothing.attr }}",
    "{{ d.missing.attr }}",
    "{{ x[10].attr }}",
    "{{ nothing + 1 }}",
    "{{ nothing() }}",
    "{{ nothing < 1 }}",
    "{{ [][0]['role'] }}",
    "{{ nothing == nothing }} {{ nothing == none }} {{ nothing != 1 }}",
    # tojson
    "{{ d|tojson }} {{ x|tojson }} {{ 'é\"\\n<>&\\''|tojson }} {{ none|tojson }} {{ 1.0|tojson }} {{ [true, 1.5e-7, 1e16]|tojson }}",
    "{{ d|tojson(indent=2) }}\n{{ [1, [], {}, [2]]|tojson(indent=4) }}\n{{ x|tojson(indent='--') }}",
    "{{ d|tojson(separators=(',', ':')) }} {{ d|tojson(sort_keys=true) }} {{ {'b': 1, 'a': {'d': 1, 'c': 2}}|tojson(sort_keys=true, indent=1) }}",
    "{{ u|tojson(ensure_ascii=true) }} {{ '🦙'|tojson(true) }} {{ '\\x7f\\x01'|tojson }} {{ {1: 'a', none: 'b', true: 'c', 1.5: 'd'}|tojson }}",
    "{{ d|tojson(indent=2, separators=(', ', ': ')) }}",
    "{{ (1, 'a')|tojson }} {{ (x|map('string')|list)|tojson }}",
    "{{ nothing|tojson }}",
    "{{ x|map('string')|tojson }}",
    # Markup
    "{{ 'a'|safe + '<b>' }} {{ '<' + 'b'|safe }} {{ ('a<'|safe)|trim + '<' }} {{ 'x'|safe ~ '<' }} {{ ('a'|safe)[0] + '&' }} {{ ('<'|safe) * 2 }}",
    "{{ \"Use '\"|safe + \"it's <x>\" + \"'\\n\"|safe + {'a': 'b\"c'}|tojson }}",
    # printf-style formatting: % and the format filter
    "{{ '%s' % 5 }} {{ '%d' % 5 }} {{ '%s and %s' % ('a', 'b') }} {{ '%5s|%-5s|' % ('ab', 'cd') }} {{ '%05d' % 42 }} {{ '%+d % d' % (5, 5) }} {{ '%x %X %o %#x %#o' % (255, 255, 8, 255, 8) }}",
    "{{ '%.2f' % 3.14159 }} {{ '%e' % 12345.678 }} {{ '%g' % 0.00001 }} {{ '%10.3f|' % -2.5 }} {{ '%d' % 3.99 }} {{ '%.0f' % 2.5 }} {{ '%*d|%.*f' % (5, 42, 2, 3.14159) }} {{ '%.2s' % 'éàü' }}",
    "{{ '%r %a' % ('é', 'é') }} {{ '%s' % [1, 'a'] }} {{ '%s' % none }} {{ '%c%c' % (65, 'é') }} {{ '100%%' % () }} {{ '%(a)s-%(b)05d' % {'a': 'x', 'b': 7} }} {{ 'abc' % {'a': 1} }}",
    "{{ '%s-%s'|format('a', 'b') }} {{ '%(x)s'|format(x=1) }} {{ 'plain'|format }} {{ '%s' % nothing }}",
    "{{ '%s %s' % ('a',) }}",
    "{{ '%s' % ('a', 'b') }}",
    "{{ '%(a)s %s' % {'a': 1} }}",
    "{{ '%d' % 'x' }}",
    "{{ '%q' % 1 }}",
    # raise_exception and errors
    "{{ raise_exception('Custom error: ' ~ i) }}",
    "line1\n{% if true %}\n{{ raise_exception('on line 3') }}\n{% endif %}",
    "{{ range(100001)|length }}",
    "{{ namespace(a=1, b='x') }} {{ namespace({'k': 2}).k }} {{ dict(a=1) }} {{ dict([('a', 1)], b=2) }}",
    "{{ strftime_now('%Y-%m-%d %H:%M %A %d %b %B') }}",
    "{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages|length }}",
]

# Constructs ferry does not support: (template, the name the error must contain, the line it must name).
UNSUPPORTED = [
    ("a\n{% include 'other.jinja' %}", "include", 2),
    ("{% extends 'base.jinja' %}", "extends", 1),
    ("x\ny\n{% block b %}{% endblock %}", "block", 3),
    ("{% import 'm.jinja' as m %}", "import", 1),
    ("{% from 'm.jinja' import m %}", "from", 1),
    ("\n{% call m() %}x{% endcall %}", "call", 2),
    ("{{ s|wordwrap(10) }}", "wordwrap", 1),
    ("\n\n{{ x|batch(2)|list }}", "batch", 3),
    ("{{ 'a'|frobnicate }}", "frobnicate", 1),
    ("\n{{ x is frobnicated }}", "frobnicated", 2),
    ("{% for v in x recursive %}{{ loop(v) }}{% endfor %}", "recursive", 1),
    ("{% frobnicate %}", "frobnicate", 1),
    ("line\n{{ 'x {}'.format(1) }}", "format", 2),
    ("{{ x|slice(2)|list }}", "slice", 1),
    ("\n{{ 'straße'|upper }}", "U+00DF", 2),
    ("\n{{ lipsum() }}", "lipsum", 2),
    ("{{ x|groupby('a') }}", "groupby", 1),
    ("{{ s|truncate(3) }}", "truncate", 1),
    ("{{ m(*x) }}", "*args", 1),
    ("\n\n{{ '\\N{DASH}' }}", "\\N", 3),
]


def run_ferry(tmp, idx, template):
    tpath = os.path.join(tmp, f"s{idx}.jinja")
    with open(tpath, "w", encoding="utf-8", newline="") as f:
        f.write(template)
    mpath = os.path.join(tmp, "vars.json")
    p = subprocess.run([FERRY, "template", tpath, mpath, "--date", hf_jinja.FIXED_DATE], capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"), tpath


def main():
    env = hf_jinja.hf_env()
    variables = dict(VARS, add_generation_prompt=False, bos_token="", eos_token="", tools=None, documents=None)
    failures = []
    counts = {"same_text": 0, "same_error": 0, "unsupported": 0}
    with tempfile.TemporaryDirectory(prefix="ferry_snip_") as tmp:
        with open(os.path.join(tmp, "vars.json"), "w", encoding="utf-8") as f:
            json.dump(VARS, f, ensure_ascii=False)

        def check(i):
            src = SNIPPETS[i]
            want, exc = hf_jinja.render(env, src, dict(variables))
            rc, out, err, _ = run_ferry(tmp, i, src)
            if exc is not None:
                if rc == 0:
                    return src, f"jinja2 raised {type(exc).__name__}({str(exc)!r}) but ferry rendered {out!r}"
                if str(exc) not in err:
                    return src, f"jinja2 raised {type(exc).__name__}({str(exc)!r}); ferry said {err.strip()!r}"
                return src, "same_error"
            if rc != 0:
                return src, f"jinja2 rendered {want!r} but ferry failed: {err.strip()}"
            if out != want:
                return src, f"jinja2: {want!r}\n  ferry:  {out!r}"
            return src, "same_text"

        def check_unsupported(i):
            src, name, line = UNSUPPORTED[i]
            rc, out, err, tpath = run_ferry(tmp, 10000 + i, src)
            where = f"{tpath}:{line}:"
            if rc == 0:
                return src, f"ferry rendered {out!r}; expected an error naming {name!r} at line {line}"
            if where not in err or name not in err:
                return src, f"ferry's error should contain {where!r} and {name!r}: {err.strip()!r}"
            return src, "unsupported"

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = list(pool.map(check, range(len(SNIPPETS))))
            results += list(pool.map(check_unsupported, range(len(UNSUPPORTED))))
    for src, result in results:
        if result in counts:
            counts[result] += 1
        else:
            failures.append((src, result))
    print(f"{len(SNIPPETS)} snippets: {counts['same_text']} identical renders, {counts['same_error']} identical "
          f"errors; {counts['unsupported']}/{len(UNSUPPORTED)} unsupported constructs named with their line; "
          f"{len(failures)} failures")
    for src, why in failures:
        print(f"FAIL: {src!r}\n  {why}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
