"""Writes a deterministic mixed-text corpus for tokenizer tests and benchmarks (default 1 MiB or more):
this repository's own source and documentation (code, English prose), and seeded synthetic text in many
scripts (Latin with diacritics, Cyrillic, Greek, CJK, Hangul, kana, Arabic, Devanagari, Thai), emoji
(with skin tones and ZWJ sequences), numbers of every length, contractions, punctuation runs, and
whitespace runs (spaces, tabs, CR/LF, NBSP, ideographic space).

usage: python3 make_corpus.py OUT [--bytes N]
"""

import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORDS = {
    "latin": "the of and to in is you that it he was for on are as with his they at be this have from or one had "
             "by word but not what all were we when your can said there use an each which she do how their if will "
             "naïve café résumé façade jalapeño Zürich Ångström straße œuvre déjà coöperate Ælfred".split(),
    "cyrillic": "привет мир как дела хорошо спасибо пожалуйста Москва книга язык программа данные".split(),
    "greek": "καλημέρα κόσμε ευχαριστώ παρακαλώ Αθήνα γλώσσα λόγος ἄνθρωπος ψυχή".split(),
    "cjk": "你好 世界 我们 今天 天气 很好 中文 分词 测试 模型 数据 计算 機器 學習".split(),
    "hangul": "안녕하세요 세계 한국어 토큰 모델 데이터 학습 컴퓨터".split(),
    "kana": "こんにちは 世界 カタカナ ひらがな トークン 東京 ありがとう ございます".split(),
    "arabic": "مرحبا بالعالم شكرا لغة البيانات نموذج".split(),
    "devanagari": "नमस्ते दुनिया भाषा मॉडल धन्यवाद हिन्दी".split(),
    "thai": "สวัสดี โลก ภาษา ไทย ขอบคุณ".split(),
}
EMOJI = ["😀", "🦙", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵", "🚀", "✅", "🤖", "⭐", "🙏🏿"]
PUNCT = ["...", "!?", "--", "—", "“", "”", "«", "»", "(", ")", "[", "]", "{", "}", ";", ":", ",", ".", "'", '"',
         "<", ">", "==", "!=", "->", "=>", "&&", "||", "#", "@", "$", "%", "^", "~", "`", "\\", "/", "*", "+"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\t\t", "    \n", "\n   "]
CONTRACTIONS = ["it's", "don't", "we're", "I've", "I'm", "you'll", "he'd", "IT'S", "DON'T", "We'Re", "ʼs", "'s"]


def repo_text():
    parts = []
    for top in ("src", "layout", "io", "kernels", "tools", "tests", "bench"):
        for dirpath, _, files in sorted(os.walk(os.path.join(ROOT, top))):
            for name in sorted(files):
                if name.endswith((".c", ".h", ".cu", ".py", ".sh", ".md")):
                    with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as f:
                        parts.append(f.read())
    for name in ("README.md",):
        path = os.path.join(ROOT, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)


def synthetic(rng, n_chars):
    out, size = [], 0
    scripts = list(WORDS)
    while size < n_chars:
        kind = rng.random()
        if kind < 0.55:
            ws = WORDS[rng.choice(scripts)]
            piece = " ".join(rng.choice(ws) for _ in range(rng.randint(1, 12)))
        elif kind < 0.65:
            piece = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
        elif kind < 0.75:
            piece = str(rng.randint(0, 10 ** rng.randint(1, 15))) + rng.choice(["", ".", ",", ".5", "%", "e10", "th"])
        elif kind < 0.83:
            piece = "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 5)))
        elif kind < 0.9:
            piece = rng.choice(CONTRACTIONS)
        else:
            piece = "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 3)))
        piece += rng.choice([" ", " ", " ", "", "\n", "  ", "\t"])
        out.append(piece)
        size += len(piece)
    return "".join(out)


def corpus(min_bytes=1 << 20, seed=1234):
    rng = random.Random(seed)
    text = repo_text()
    parts = [text]
    size = len(text.encode("utf-8"))
    while size < min_bytes:
        s = synthetic(rng, 20000)
        parts.append(s)
        size += len(s.encode("utf-8"))
    return "\n".join(parts)


def main():
    args = sys.argv[1:]
    n = 1 << 20
    if "--bytes" in args:
        i = args.index("--bytes")
        n = int(args[i + 1])
        del args[i:i + 2]
    with open(args[0], "w", encoding="utf-8", newline="") as f:
        f.write(corpus(n))


if __name__ == "__main__":
    main()
