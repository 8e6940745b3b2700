#!/usr/bin/env python3
"""Renders the dashboard's panels from a live gateway's metrics, as a picture for the docs.

Runs `wxexpress demo` (a synthetic day through the whole pipeline, WeChat faults included)
with its metrics on 127.0.0.1:19464, scrapes `GET /metrics` every two seconds while it runs,
computes the same expressions the Grafana dashboard uses (rates over the scrapes, the
callback histogram's quantiles), draws them as SVG, and has headless Chromium take the
screenshot.

    cargo build --release
    python3 docs/grafana/render.py target/release/wxexpress docs/grafana/dashboard.png

With `--serve` instead, it starts `wxexpress serve` in sandbox mode and sends tracking events
for `RENDER_SECONDS` (60) itself: steady traffic, no faults.

Python 3 standard library and `chromium` only.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

BINARY, OUT = sys.argv[1], sys.argv[2]
SERVE = "--serve" in sys.argv[3:]
SECONDS = int(os.environ.get("RENDER_SECONDS", "60"))
WAYBILLS = os.environ.get("RENDER_WAYBILLS", "3000")
GATEWAY = "http://127.0.0.1:18080"
METRICS = "http://127.0.0.1:19464/metrics"


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape():
    _, text = http("GET", METRICS)
    series = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        m = re.match(r"([a-z_]+)(\{(.*)\})?", name_labels)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        series.setdefault(m.group(1), []).append((labels, float(value)))
    return series


def total(s, name, **match):
    return sum(v for l, v in s.get(name, []) if all(l.get(k) == x for k, x in match.items()))


def grouped(s, name, key, **match):
    out = {}
    for l, v in s.get(name, []):
        if all(l.get(k) == x for k, x in match.items()):
            out[l.get(key, "")] = out.get(l.get(key, ""), 0) + v
    return out


def quantile(q, buckets):
    """histogram_quantile over (le, count) pairs of one interval."""
    buckets = sorted((float("inf") if le == "+Inf" else float(le), c) for le, c in buckets.items())
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, prev_le, prev_c = q * buckets[-1][1], 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def demo_run(work):
    """`wxexpress demo`, scraped every two seconds until it ends."""
    env = dict(os.environ, WXEXPRESS_SERVER__METRICS_LISTEN="127.0.0.1:19464")
    log = open(os.path.join(work, "demo.log"), "w")
    proc = subprocess.Popen([os.path.abspath(BINARY), "demo", "--waybills", WAYBILLS], cwd=work, env=env,
                            stdout=log, stderr=log)
    samples, started = [], time.time()
    try:
        while proc.poll() is None:
            time.sleep(max(0.0, 2.0 - (time.time() - started) % 2.0))
            try:
                samples.append((time.time() - started, scrape()))
            except OSError:
                pass  # not listening yet, or already stopped
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)
    if proc.returncode != 0:
        sys.exit(f"the demo failed; see {log.name}")
    return samples, f"a wxexpress demo run ({WAYBILLS} waybills, WeChat faults injected)"


def serve_run(work):
    env = {"PATH": os.environ.get("PATH", ""), "WXEXPRESS_SERVER__LISTEN": "127.0.0.1:18080",
           "WXEXPRESS_SERVER__METRICS_LISTEN": "127.0.0.1:19464"}
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen([os.path.abspath(BINARY), "serve"], cwd=work, env=env, stdout=log, stderr=log)
    try:
        sandbox = None
        for _ in range(100):
            time.sleep(0.1)
            m = re.search(r"sandbox\S*=(127\.0\.0\.1:\d+)", re.sub(r"\x1b\[[0-9;]*m", "", open(log.name).read()))
            if m:
                sandbox = "http://" + m.group(1)
                if http("GET", GATEWAY + "/healthz")[0] == 200:
                    break
        key = open(os.path.join(work, "data", "api_key")).read().strip()
        auth = {"Authorization": "Bearer " + key, "Content-Type": "application/x-ndjson"}
        now = int(time.time())
        samples, started, n = [], time.time(), 0
        while time.time() - started < SECONDS:
            lines = []
            for _ in range(40):
                phone = "139%08d" % n
                if n % 10:  # every tenth receiver has not bound WeChat
                    http("PUT", f"{sandbox}/sandbox/bindings/{phone}")
                lines.append(json.dumps({
                    "waybill_id": "SF%010d" % n,
                    "waybill": {"create_time": now - 3600,
                                "sender": {"name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号"},
                                "receiver": {"name": "李四", "phone": phone, "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6"}},
                    "event": {"action_type": 100001, "action_time": now - 600, "action_msg": "快件已揽收"}}, ensure_ascii=False))
                n += 1
            http("POST", GATEWAY + "/v1/events/batch", "\n".join(lines).encode(), auth)
            http("GET", GATEWAY + "/wechat/waybill?callback=cb&waybill_id=SF0000000001")
            samples.append((time.time() - started, scrape()))
            time.sleep(max(0.0, 2.0 - (time.time() - started) % 2.0))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    return samples, f"{SECONDS} s of a sandbox run, {n} events"


def main():
    work = tempfile.mkdtemp(prefix="wxexpress-render-")
    samples, what = serve_run(work) if SERVE else demo_run(work)
    events = total(samples[-1][1], "wxexpress_events_ingested_total") if samples else 0

    def rate_series(f):
        out = []
        for (t0, a), (t1, b) in zip(samples, samples[1:]):
            out.append((t1, {k: (b_v - f(a).get(k, 0)) / (t1 - t0) for k, b_v in f(b).items()}))
        return out

    panels = [
        ("Ingest rate (events/s) by outcome", rate_series(lambda s: grouped(s, "wxexpress_events_ingested_total", "outcome"))),
        ("Push rate (/s) by outcome", rate_series(lambda s: grouped(s, "wxexpress_pushes_total", "outcome", kind="pathnotify"))),
        ("WeChat calls (/s) by api", rate_series(lambda s: grouped(s, "wxexpress_wechat_calls_total", "api"))),
        ("WeChat errcodes (/s) by api and errcode", rate_series(lambda s: {f'{l["api"]} {l["errcode"]}': v for l, v in s.get("wxexpress_wechat_calls_total", []) if l.get("errcode") != "0"})),
        ("Notifications (/s) by kind and outcome", rate_series(lambda s: {f'{l["kind"]} {l["outcome"]}': v for l, v in s.get("wxexpress_pushes_total", []) if l.get("kind") != "pathnotify"})),
        ("Backlog: pending path nodes", [(t, {"pending": total(s, "wxexpress_outbox_entries", kind="pathnotify", state="pending")}) for t, s in samples]),
        ("Oldest pending (s)", [(t, {"age": total(s, "wxexpress_outbox_oldest_pending_seconds")}) for t, s in samples]),
        ("Callback latency (ms) against WeChat's 5 s", [
            (t1, {q: 1000 * (quantile(float(q[1:]) / 100, {l["le"]: v - next((v0 for l0, v0 in a.get("wxexpress_callback_duration_seconds_bucket", []) if l0["le"] == l["le"]), 0)
                                                           for l, v in b.get("wxexpress_callback_duration_seconds_bucket", [])}) or 0) for q in ("p50", "p99")})
            for (t0, a), (t1, b) in zip(samples, samples[1:])]),
        ("JSONP lookups (/s) by err_code", rate_series(lambda s: grouped(s, "wxexpress_jsonp_requests_total", "err_code"))),
        ("Token refreshes (total)", [(t, {"refreshes": total(s, "wxexpress_token_refreshes_total")}) for t, s in samples]),
    ]
    colors = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c"]
    cards = []
    for title, points in panels:
        keys = sorted({k for _, d in points for k in d})
        ymax = max([v for _, d in points for v in d.values()] + [1e-9]) * 1.15
        tmax = max([t for t, _ in points] + [1])
        w, h = 560, 200
        paths, legend = [], []
        for i, k in enumerate(keys):
            pts = " ".join(f"{40 + (t / tmax) * (w - 50):.1f},{h - 25 - (d.get(k, 0) / ymax) * (h - 40):.1f}" for t, d in points)
            c = colors[i % len(colors)]
            paths.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
            last = points[-1][1].get(k, 0) if points else 0
            legend.append(f'<span style="color:{c}">■</span> {k or "-"} <b>{last:.3g}</b>')
        grid = "".join(f'<line x1="40" x2="{w - 10}" y1="{h - 25 - f * (h - 40):.1f}" y2="{h - 25 - f * (h - 40):.1f}" stroke="#2c3235"/>'
                       f'<text x="2" y="{h - 21 - f * (h - 40):.1f}" fill="#8e8e8e" font-size="10">{ymax * f:.3g}</text>' for f in (0, .25, .5, .75, 1))
        if not any(v for _, d in points for v in d.values()):
            grid = f'<text x="{w / 2 - 60}" y="{h / 2}" fill="#8e8e8e" font-size="13">none in this run</text>'
            paths = []
        cards.append(f'<div class="card"><h3>{title}</h3><svg width="{w}" height="{h}">{grid}{"".join(paths)}</svg><div class="legend">{" &nbsp; ".join(legend)}</div></div>')
    html = ('<html><head><meta charset="utf-8"><style>body{background:#111217;color:#ccccdc;font-family:sans-serif;margin:12px}'
            '.grid{display:grid;grid-template-columns:repeat(2,590px);gap:10px}.card{background:#181b1f;border:1px solid #2c3235;padding:8px}'
            'h3{font-size:13px;margin:0 0 4px}.legend{font-size:11px}h1{font-size:16px}</style></head><body>'
            f'<h1>wxexpress — {what}: {events:.0f} events, from GET /metrics</h1><div class="grid">{"".join(cards)}</div></body></html>')
    page = os.path.join(work, "dashboard.html")
    open(page, "w").write(html)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={os.path.abspath(OUT)}", "--window-size=1220,1400", "file://" + page],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{OUT}: {what}, {events:.0f} events, {len(samples)} scrapes")


main()
