"""The chat page of `ferry serve` (GET /, src/serve/chat.html compiled in) in a real headless browser (Debian's
chromium + chromium-driver, driven by selenium): the page loads with no external resource, a message typed and
sent gets a reply streamed over /v1/chat/completions (rendered at each delta, counted by the page, then a speed line
"N tokens, X tokens/s" from the usage event's timings), a reply with a ```fence``` is rendered as <pre><code>,
the stop button ends a long reply early. A screenshot is written to the scratch folder (its path printed).
Skips (77) when chromium, chromedriver or selenium is missing."""

import os
import shutil
import time

from ferrytest import Failures, scratch, tiny_model
from test_serve import Server

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    print("SKIP: selenium is not installed (tools/install_deps.sh)")
    raise SystemExit(77)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not CHROMIUM or not DRIVER:
    print("SKIP: chromium or chromedriver is not installed (tools/install_deps.sh)")
    raise SystemExit(77)


def wait(pred, seconds):
    end = time.time() + seconds
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def main():
    f = Failures()
    root, cleanup = scratch()
    keep = os.environ.get("FERRY_TEST_SCRATCH") or root
    sv = drv = None
    try:
        _, model = tiny_model("llama_headdim", root)
        # a decode step lasts at least 5 ms (FERRY_STEP_DELAY_MS, the scheduler's test hook): the 3000-token reply
        # the stop button ends takes 15 s or more, so the click always lands while it streams (at the tiny
        # model's thousands of tokens per second it could end first)
        sv = Server(model, "--ctx", 4096, "--quiet", env={"FERRY_STEP_DELAY_MS": "5"})
        st, body = sv.http("GET", "/")
        f.check(st == 200 and b"<html" in body and b"http://" not in body and b"https://" not in body,
                f"GET /: {st}, {len(body)} bytes, no external resources")
        opt = webdriver.ChromeOptions()
        opt.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,800"):
            opt.add_argument(a)
        drv = webdriver.Chrome(service=Service(DRIVER), options=opt)
        drv.set_page_load_timeout(30)
        drv.get(sv.url + "/")
        f.check(drv.title == "ferry chat", f"page title {drv.title!r}")
        f.check(wait(lambda: drv.find_element(By.ID, "model").text, 5) == "tiny", "the model's name from /v1/models")

        # a reply streamed: the text grows over several reads, then the speed line
        drv.find_element(By.ID, "system").send_keys("You are terse.")
        t = drv.find_element(By.ID, "temperature")
        t.clear()
        t.send_keys("0")
        m = drv.find_element(By.ID, "max-tokens")
        m.clear()
        m.send_keys("300")
        drv.find_element(By.ID, "input").send_keys("Tell me about the old map")
        drv.find_element(By.ID, "send").click()
        lengths = set()
        end = time.time() + 60
        while time.time() < end:
            out = drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")
            if out:
                lengths.add(len(out[-1].get_attribute("textContent")))
                if out[-1].get_attribute("data-state") == "done":
                    break
            time.sleep(0.01)
        reply = drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        speed = wait(lambda: [e.text for e in drv.find_elements(By.CLASS_NAME, "speed")], 5)
        renders = int(reply[-1].get_attribute("data-renders") or 0) if reply else 0
        print(f"page reply: rendered {renders} times as its deltas arrived; {len(lengths)} lengths seen by polling; "
              f"speed line {speed}")
        f.check(reply and reply[-1].get_attribute("textContent"), "a reply appeared")
        # the page renders the reply at each streamed delta (counted by the page itself: polling the DOM would
        # depend on how fast the tiny model answers, all 300 tokens inside one poll on a quiet machine)
        f.check(renders >= 3, f"the reply grew while streaming ({renders} renders; lengths polled {sorted(lengths)[:10]})")
        f.check(speed and "tokens/s" in speed[-1], f"speed line: {speed}")
        shot = os.path.join(keep, "serve_page.png")
        drv.save_screenshot(shot)
        print("screenshot:", shot, os.path.getsize(shot), "bytes")
        f.check(os.path.getsize(shot) > 1000, "screenshot written")

        # fences become <pre><code> (the renderer, fed directly)
        drv.execute_script("const d = document.createElement('div'); d.id = 'fence'; document.body.appendChild(d);"
                           "render(d, 'see:\\n```python\\nprint(1 < 2)\\n```\\ndone');")
        code = drv.find_elements(By.CSS_SELECTOR, "#fence pre code")
        f.check(len(code) == 1 and code[0].get_attribute("textContent") == "print(1 < 2)\n" and
                "language-python" in code[0].get_attribute("class"), "a fenced block is rendered as <pre><code>")

        # stop: a long reply ends early, the server cancels it
        h0 = sv.health()
        m.clear()
        m.send_keys("3000")
        drv.find_element(By.ID, "clear").click()  # the first message again: it ran 300 tokens without an end
        drv.find_element(By.ID, "input").send_keys("Tell me about the old map")
        drv.find_element(By.ID, "send").click()
        wait(lambda: len(drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 1 and
             len(drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].get_attribute("textContent")) > 5, 30)
        drv.find_element(By.ID, "stop").click()
        done = wait(lambda: drv.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].get_attribute("data-state") == "done", 10)
        h = wait(lambda: (lambda x: x if x["live"] == 0 else None)(sv.health()), 5) or sv.health()
        f.check(done and h["cancelled"] == h0["cancelled"] + 1 and drv.find_element(By.ID, "send").is_enabled(),
                f"stop: done={done}, health {h}")
        drv.save_screenshot(os.path.join(keep, "serve_page_stopped.png"))
    finally:
        if drv:
            drv.quit()
        if sv:
            sv.stop()
        if keep == root:
            cleanup()
    f.finish()


if __name__ == "__main__":
    main()
