#!/usr/bin/env python3
"""mailkeep's web interface in a real headless Chromium (Playwright driving
Debian's /usr/bin/chromium; nothing is downloaded).

    browser.py journey BASE CONFIG.json   the user journeys (login, search, view,
                                          download, another user, the auditor)
    browser.py hostile BASE CONFIG.json   open each hostile message with canaries

CONFIG.json holds the accounts and ids the Rust test prepared. The result is
one JSON object on standard output; the Rust test asserts on it. Every
request the browser makes is recorded; a request for anything but BASE is
refused (so nothing leaves, and the test sees that it was tried).
"""

import json
import os
import sys
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def browser(p):
    return p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)


class Watch:
    """Requests, dialogs and console messages of one browser context."""

    def __init__(self, context, base):
        self.base = urlparse(base)
        self.requests = []
        self.foreign = []
        self.dialogs = []
        context.route("**/*", self.route)
        context.on("request", lambda r: self.requests.append(r.url))

    def route(self, route):
        u = urlparse(route.request.url)
        if (u.scheme, u.netloc) == (self.base.scheme, self.base.netloc):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def page(self, context):
        page = context.new_page()
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        return page


def login(page, base, user, password):
    page.goto(base + "/")
    assert page.url.endswith("/login"), page.url
    page.fill("#user", user)
    page.fill("#password", password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == base + "/", page.url


def shot(page, name):
    out = os.environ.get("MAILKEEP_SCREENSHOTS")
    if out:
        page.screenshot(path=os.path.join(out, name + ".png"), full_page=True)


def journey(base, cfg):
    result = {}
    with sync_playwright() as p:
        b = browser(p)
        # bob, through the IMAP server, finds the message he sent under a
        # forged From, opens it, sees the Bcc recipients, downloads the
        # attachment.
        ctx = b.new_context(accept_downloads=True, viewport={"width": 1100, "height": 800})
        watch = Watch(ctx, base)
        page = watch.page(ctx)
        page.goto(base + "/")
        shot(page, "login")
        login(page, base, cfg["bob"]["user"], cfg["bob"]["password"])
        page.fill("#q", "from:ceo")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        result["bob_search"] = page.locator("table.results tbody tr").all_inner_texts()
        # A word: marked in the subject, a snippet under it, facets beside.
        page.fill("#q", "numbers")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        result["bob_marks"] = page.locator("table.results mark").count()
        result["bob_facets"] = page.locator("nav.facets a").all_inner_texts()
        shot(page, "search")
        page.fill("#q", "")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        with page.expect_navigation():
            page.click("text=quarterly numbers")
        result["bob_envelope"] = page.locator("section.envelope").inner_text()
        result["bob_bcc_marks"] = page.locator("section.envelope .bcc").count()
        frame = page.frame_locator("iframe#html")
        result["bob_html"] = frame.locator("body").inner_text()
        shot(page, "message")
        with page.expect_download() as d:
            page.click("section.attachments a")
        download = d.value
        result["download_name"] = download.suggested_filename
        result["download_bytes"] = open(download.path(), "rb").read().hex()
        # Keyboard: the search box, the fields and the button are reachable
        # with Tab from the top of the page.
        page.goto(base + "/")
        focused = []
        for _ in range(8):
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.name || document.activeElement.tagName)"))
        result["tab_order"] = focused
        # 360 px wide: nothing wider than the viewport.
        narrow = b.new_context(viewport={"width": 360, "height": 740})
        Watch(narrow, base)
        np = narrow.new_page()
        np.context.add_cookies(ctx.cookies())
        np.goto(base + "/")
        result["narrow_overflow"] = np.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        np.goto(page.url if "/messages/" in page.url else base + "/messages/" + str(cfg["bob_message"]))
        np.frame_locator("iframe#html").locator("p").wait_for()
        result["narrow_message_overflow"] = np.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        shot(np, "message-narrow")
        narrow.close()
        ctx.close()

        # alice sees none of bob's outgoing mail, and his message id is a 404.
        ctx = b.new_context()
        watch2 = Watch(ctx, base)
        page = watch2.page(ctx)
        login(page, base, cfg["alice"]["user"], cfg["alice"]["password"])
        result["alice_rows"] = page.locator("table.results tbody tr").all_inner_texts()
        r = page.goto(base + "/messages/" + str(cfg["bob_message"]))
        result["alice_bob_message_status"] = r.status
        ctx.close()

        # The auditor sees both, and the audit log page shows both views.
        ctx = b.new_context(viewport={"width": 1100, "height": 800})
        watch3 = Watch(ctx, base)
        page = watch3.page(ctx)
        login(page, base, cfg["auditor"]["user"], cfg["auditor"]["password"])
        result["auditor_rows"] = page.locator("table.results tbody tr").all_inner_texts()
        for mid in (cfg["bob_message"], cfg["alice_message"]):
            r = page.goto(base + "/messages/" + str(mid))
            assert r.status == 200, r.status
        page.goto(base + "/dashboard")
        result["dashboard_bars"] = page.locator("svg.chart rect").count()
        shot(page, "dashboard")
        page.goto(base + "/audit")
        shot(page, "audit")
        result["audit_rows"] = page.locator("table.audit tbody tr").all_inner_texts()
        ctx.close()

        # An admin lengthens the retention with the page's form.
        ctx = b.new_context(viewport={"width": 1100, "height": 800})
        watch4 = Watch(ctx, base)
        page = watch4.page(ctx)
        login(page, base, cfg["admin"]["user"], cfg["admin"]["password"])
        page.goto(base + "/retention")
        shot(page, "retention")
        section = page.input_value("#section")
        page.fill("#section", section.replace('"10y"', '"12y"'))
        page.fill("input[name=reason]", "records policy 2026-12")
        with page.expect_navigation():
            page.click("text=Change the retention")
        result["retention_after"] = page.locator("main").inner_text()
        result["retention_url"] = page.url
        ctx.close()
        b.close()
        result["foreign_requests"] = watch.foreign + watch2.foreign + watch3.foreign + watch4.foreign
        result["dialogs"] = watch.dialogs + watch2.dialogs + watch3.dialogs + watch4.dialogs
    return result


PWNED = "() => [window.__pwned || null, (window.top && window.top.__pwned) || null]"


def visit(page, url):
    """Loads url, lets the content do what it can, then reads the canaries."""
    r = page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(50)
    # Move the mouse over what the content shows (handlers such as
    # onmouseover would fire), when it is loaded on its own.
    if "body.html" in url:
        for el in page.query_selector_all("body *")[:10]:
            try:
                el.hover(timeout=100, force=True)
            except Exception:
                pass
    pwned = []
    for frame in page.frames:
        try:
            x = frame.evaluate(PWNED)
        except Exception:  # a sandboxed frame Playwright cannot enter
            continue
        if x != [None, None]:
            pwned.append(x)
    if page.url != url:
        raise RuntimeError("the page went to " + page.url)
    return {"status": r.status if r else None, "pwned": pwned, "frames": len(page.frames)}


def hostile(base, cfg):
    out = {"vectors": [], "foreign_requests": [], "dialogs": []}
    with sync_playwright() as p:
        b = browser(p)
        ctx = b.new_context()
        watch = Watch(ctx, base)
        page = watch.page(ctx)
        login(page, base, cfg["user"]["user"], cfg["user"]["password"])
        for v in cfg["vectors"]:
            before_foreign = len(watch.foreign)
            entry = {"name": v["name"], "id": v["id"]}
            for path in ("/messages/%d" % v["id"], "/messages/%d/body.html" % v["id"]):
                key = "body.html" if "body" in path else "page"
                try:
                    entry[key] = visit(page, base + path)
                except Exception as e:  # the content navigated, or worse
                    entry[key] = {"error": "%s: %s" % (type(e).__name__, str(e)[:300])}
            entry["foreign"] = watch.foreign[before_foreign:]
            out["vectors"].append(entry)
        # The search results show every hostile subject, marked, and a
        # snippet of each body around the words searched for.
        out["search_pages"] = []
        for q in ("script", "pwned", "alert", "img"):
            try:
                out["search_pages"].append(visit(page, base + "/?q=" + q))
            except Exception as e:
                out["search_pages"].append({"error": "%s: %s" % (type(e).__name__, str(e)[:300])})
        out["foreign_requests"] = watch.foreign
        out["dialogs"] = watch.dialogs
        out["requests"] = len(watch.requests)
        b.close()
    return out


def main():
    mode, base, cfg_path = sys.argv[1:4]
    cfg = json.load(open(cfg_path))
    result = journey(base, cfg) if mode == "journey" else hostile(base, cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
