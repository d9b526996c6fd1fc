#!/usr/bin/env python3
"""Drives headless Chromium through tidemark's browser pages over the
DevTools protocol: log in with a read token (a form, never a URL), open a
group's overview and timeline, check their content and the session
cookie's flags, save a screenshot, log out and find the pages closed.

usage: ui_check.py CHROMIUM BASE_URL TOKEN GROUP SCREENSHOT.png
Prints one JSON object with what it saw; exits non-zero when a check fails.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client (PyPI)


def main():
    chromium, base, token, group, shot = sys.argv[1:6]
    profile = tempfile.mkdtemp(prefix="tidemark-chromium-")
    proc = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().count("\n") >= 1:
                break
            time.sleep(0.1)
        port = open(port_file).read().split("\n")[0].strip()
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        seq = [0]

        def cmd(method, **params):
            seq[0] += 1
            ws.send(json.dumps({"id": seq[0], "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == seq[0]:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]

        def js(expr):
            r = cmd("Runtime.evaluate", expression=expr, returnByValue=True)
            return r["result"].get("value")

        def settle(path):
            for _ in range(100):
                if js("document.readyState") == "complete" and js("location.pathname") == path:
                    return
                time.sleep(0.1)
            raise RuntimeError(f"the page did not reach {path}: at {js('location.href')}")

        cmd("Page.enable")
        cmd("Network.enable")
        cmd("Page.navigate", url=f"{base}/ui/groups/{group}")
        settle("/ui/login")  # no session: the pages send a browser to the login
        js(f"document.querySelector('input[name=token]').value = {json.dumps(token)};"
           "document.querySelector('form').submit()")
        settle("/ui/")
        groups = js("document.getElementById('groups').innerText")
        cookies = cmd("Network.getCookies", urls=[f"{base}/ui/"])["cookies"]
        session = next(c for c in cookies if c["name"] == "tidemark_session")
        cmd("Page.navigate", url=f"{base}/ui/groups/{group}")
        settle(f"/ui/groups/{group}")
        seen = {
            "groups": groups,
            "title": js("document.title"),
            "rpo": js("document.getElementById('rpo').innerText"),
            "window": js("document.getElementById('window').innerText"),
            "last_test": js("document.getElementById('last-test').innerText"),
            "points": js("document.querySelectorAll('#points tr').length - 1"),
            "problems": js("document.getElementById('problems').innerText"),
            "cookie": {"httpOnly": session["httpOnly"], "sameSite": session.get("sameSite"),
                       "session": session.get("session"), "path": session["path"]},
            "url_has_token": token in js("location.href"),
        }
        png = cmd("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        cmd("Page.navigate", url=f"{base}/ui/groups/{group}/timeline")
        settle(f"/ui/groups/{group}/timeline")
        seen["timeline_svg"] = js("document.querySelectorAll('svg').length")
        png = cmd("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(shot.replace(".png", "-timeline.png"), "wb") as f:
            f.write(base64.b64decode(png))
        cmd("Page.navigate", url=f"{base}/ui/groups/{group}")
        settle(f"/ui/groups/{group}")
        js("document.querySelector('form[action=\"/ui/logout\"]').submit()")
        settle("/ui/login")
        cmd("Page.navigate", url=f"{base}/ui/groups/{group}")
        settle("/ui/login")
        seen["after_logout"] = js("location.pathname")
        print(json.dumps(seen))
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
