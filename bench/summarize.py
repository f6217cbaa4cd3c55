#!/usr/bin/env python3
"""bench/summarize.py RAWDIR [RESULTSDIR]: turn one bench/run.sh run into a table and JSON.

Reads RAWDIR/{env.txt,runs.csv,rss_idle*.csv,scenario-*.json,cli-list-hyperfine.json} and
writes RAWDIR/summary.{json,md} (and RESULTSDIR/latest.{json,md} when given); prints the
markdown. Medians over rounds; every ratio is taken within a round, then the median.
A run without load rounds (SCENARIOS_ONLY) has no runs.csv: only the scenario tables.
"""
import csv
import json
import os
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024

LABEL = {
    "direct": "direct (backend alone)",
    "portok": "portok, HTTP/1.1",
    "portok_tls": "portok, HTTPS HTTP/1.1",
    "portok_h2": "portok, HTTPS h2",
    "portok_ni": "portok --no-inspect, HTTP/1.1",
    "portok_h2_ni": "portok --no-inspect, HTTPS h2",
    "nginx": "nginx proxy, HTTP/1.1",
    "nginx_tls": "nginx, HTTPS HTTP/1.1",
    "portless": "portless, HTTP/1.1",
    "portless_tls": "portless, HTTPS HTTP/1.1",
}
# the same daemon mode with the request inspector off (--no-inspect)
INSPECT_OFF = {"portok": "portok_ni", "portok_h2": "portok_h2_ni"}
# the same mode of the peer the ratio columns compare against
NGINX_PEER = {"portok": "nginx", "portok_tls": "nginx_tls", "portok_h2": "nginx_tls",
              "portok_ni": "nginx", "portok_h2_ni": "nginx_tls"}
PORTLESS_PEER = {"portok": "portless", "portok_tls": "portless_tls", "portok_h2": "portless_tls"}


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_env(raw):
    env = {}
    try:
        with open(os.path.join(raw, "env.txt")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
    except OSError:
        pass
    return env


def read_csv_map(path, col):
    out = {}
    try:
        with open(path) as f:
            for row in csv.DictReader(f):
                out[row["target"]] = float(row[col])
    except (OSError, KeyError, ValueError):
        pass
    return out


def contenders(raw, env):
    runs = []
    if not os.path.exists(os.path.join(raw, "runs.csv")):
        return {}
    with open(os.path.join(raw, "runs.csv")) as f:
        for row in csv.DictReader(f):
            for k in ("rps", "p50_ms", "p99_ms", "requests", "bad", "rss_max_kib",
                      "proxy_ticks", "backend_ticks", "backend_accepts"):
                row[k] = float(row[k] or 0)
            runs.append(row)
    order = []
    for r in runs:
        if r["target"] not in order:
            order.append(r["target"])
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["target"]] = r
    idle = read_csv_map(os.path.join(raw, "rss_idle.csv"), "rss_idle_kib")
    idle_after = read_csv_map(os.path.join(raw, "rss_idle_after.csv"), "rss_idle_after_kib")
    for tls, plain in (("portok_tls", "portok"), ("portok_h2", "portok"), ("portok_h2_ni", "portok_ni"),
                       ("nginx_tls", "nginx")):
        if plain in idle:
            idle[tls] = idle[plain]
        if plain in idle_after:
            idle_after[tls] = idle_after[plain]
    nginx_backend = env.get("backend") == "nginx"
    out = {}
    for t in order:
        mine = [r for r in runs if r["target"] == t]

        def per_round(peer):
            return med(paired(by_round.values(), t, peer)[0])

        def cpu_added(peer):
            return med(paired(by_round.values(), t, peer)[1])

        def us_per_req(key):
            v = [r[key] / CLK_TCK * 1e6 / r["requests"] for r in mine if r["requests"] > 0]
            return med(v)

        rps = [r["rps"] for r in mine]
        c = {
            "label": LABEL.get(t, t),
            "tool": mine[0]["tool"],
            "rounds": len(mine),
            "rps": med(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms": med([r["p50_ms"] for r in mine]),
            "p99_ms": med([r["p99_ms"] for r in mine]),
            "p99_ms_max": max(r["p99_ms"] for r in mine),
            "share_of_direct": per_round("direct") if t != "direct" else 1.0,
            "ratio_to_nginx": per_round(NGINX_PEER[t]) if t in NGINX_PEER else None,
            "ratio_to_portless": per_round(PORTLESS_PEER[t]) if t in PORTLESS_PEER else None,
            "cpu_us_per_req": us_per_req("proxy_ticks") if t != "direct" else None,
            "ratio_to_no_inspect": per_round(INSPECT_OFF[t]) if t in INSPECT_OFF else None,
            "cpu_us_added_by_inspector": cpu_added(INSPECT_OFF[t]) if t in INSPECT_OFF else None,
            "backend_cpu_us_per_req": us_per_req("backend_ticks"),
            "upstream_conns_per_req": (med([r["backend_accepts"] / r["requests"] for r in mine if r["requests"] > 0])
                                       if nginx_backend and t != "direct" else None),
            "rss_idle_kib": idle.get(t),
            "rss_peak_kib": max(r["rss_max_kib"] for r in mine),
            "rss_idle_after_kib": idle_after.get(t),
            "failed_requests": int(sum(r["bad"] for r in mine)),
        }
        out[t] = c
    return out


def paired(rounds, a, b):
    """Within each round (a dict of target -> run): a's requests/s over b's, and the CPU
    microseconds a spent per request beyond b. Rounds missing either are left out."""
    ratios, added = [], []
    for rnd in rounds:
        x, y = rnd.get(a), rnd.get(b)
        if not x or not y or y["rps"] <= 0:
            continue
        ratios.append(x["rps"] / y["rps"])
        if x["requests"] > 0 and y["requests"] > 0:
            added.append((x["proxy_ticks"] / x["requests"] - y["proxy_ticks"] / y["requests"])
                         / CLK_TCK * 1e6)
    return ratios, added


def together(raw):
    """The inspector's pairs loaded at once (run.sh's together.csv): per round, on/off
    requests/s and CPU per request added; the medians over rounds."""
    rows = []
    try:
        with open(os.path.join(raw, "together.csv")) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    by_round = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["target"]] = {k: float(r[k] or 0) for k in
                                                          ("rps", "requests", "bad", "proxy_ticks")}
    out = {}
    for on, off in INSPECT_OFF.items():
        ratios, added = paired(by_round.values(), on, off)
        if ratios:
            out[on] = {"rounds": len(ratios), "ratio": med(ratios), "ratio_min": min(ratios),
                       "ratio_max": max(ratios), "cpu_us_added": med(added),
                       "failed_requests": int(sum(r[t]["bad"] for r in by_round.values()
                                                  for t in (on, off) if t in r))}
    return out or None


def fmt(v, nd=0, suffix=""):
    if v is None:
        return "–"
    if nd == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{nd}f}{suffix}"


def scenarios(raw):
    s = {}
    for name in ("route-change", "tls-handshake", "idle-conns", "idle-conns-tls", "stream",
                 "stream-nginx", "redeploy", "tcp-stream", "tcp-echo", "grpc", "proxy-start", "cli-list"):
        j = load_json(os.path.join(raw, f"scenario-{name}.json"))
        if j is not None:
            s[name] = j
    hf = load_json(os.path.join(raw, "cli-list-hyperfine.json"))
    if hf and hf.get("results"):
        r = hf["results"][0]
        s["cli-list"] = {
            "tool": "hyperfine -N --warmup 3 --runs 30",
            "command": r["command"],
            "ms": {"median": r["median"] * 1e3, "mean": r["mean"] * 1e3,
                   "min": r["min"] * 1e3, "max": r["max"] * 1e3, "n": len(r.get("times", []))},
        }
        if len(hf["results"]) > 1:
            s["cli-list"]["json_ms_median"] = hf["results"][1]["median"] * 1e3
    return s


def g(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(c, s, env):
    T = []

    def add(name, value, bound, ok, unit="", note=""):
        status = "n/a" if value is None or ok is None else ("PASS" if ok else "MISS")
        T.append({"target": name, "value": value, "bound": bound, "unit": unit,
                  "status": status, "note": note})

    def ratio_target(name, t, key, need, note=""):
        v = g(c, t, key)
        add(name, v, f">= {need}", None if v is None else v >= need, "x", note)

    pk, nx = c.get("portok"), c.get("nginx")
    ratio_target("plain h1 rps vs nginx", "portok", "ratio_to_nginx", 1.0)
    if pk and nx:
        add("plain h1 p99 vs nginx p99", pk["p99_ms"], f"<= {nx['p99_ms']:.3f} ms (nginx)",
            pk["p99_ms"] <= nx["p99_ms"], "ms")
        add("plain h1 proxy CPU/req vs nginx", pk["cpu_us_per_req"],
            f"<= {nx['cpu_us_per_req']:.2f} us (nginx)", pk["cpu_us_per_req"] <= nx["cpu_us_per_req"], "us")
    else:
        add("plain h1 p99 vs nginx p99", None, "<= nginx", None)
        add("plain h1 proxy CPU/req vs nginx", None, "<= nginx", None)
    ratio_target("plain h1 rps vs portless", "portok", "ratio_to_portless", 10.0,
                 env.get("portless", ""))
    ratio_target("HTTPS h1 rps vs nginx TLS", "portok_tls", "ratio_to_nginx", 1.0)
    ratio_target("HTTPS h1 rps vs portless TLS", "portok_tls", "ratio_to_portless", 6.0)
    h2, h1tls = c.get("portok_h2"), c.get("portok_tls")
    add("HTTPS h2 rps vs HTTPS h1", h2["rps"] / h1tls["rps"] if h2 and h1tls else None, ">= 1.0",
        (h2["rps"] >= h1tls["rps"]) if h2 and h1tls else None, "x",
        f"h2 {h2['rps']:,.0f} vs h1 {h1tls['rps']:,.0f} rps" if h2 and h1tls else "")
    # what the request inspector costs: the same daemon with --no-inspect beside it, judged
    # on the pair loaded together when run.sh ran it (the machine's other work then falls on
    # both alike), else on the runs one after the other; each round's ratio and difference,
    # then the median
    tog = s.get("inspector-together") or {}
    for on, off, label in (("portok", "portok_ni", "h1"), ("portok_h2", "portok_h2_ni", "h2")):
        a, b, t = c.get(on), c.get(off), tog.get(on)
        apart = a.get("ratio_to_no_inspect") if a and b else None
        apart_note = f"one after the other: {apart:.3f}x" if apart is not None else ""
        if t:
            r, d = t["ratio"], t["cpu_us_added"]
            note = (f"loaded together, {t['rounds']} rounds, {t['ratio_min']:.3f}-{t['ratio_max']:.3f}"
                    + (f"; {apart_note}" if apart_note else ""))
        else:
            r = apart
            d = a.get("cpu_us_added_by_inspector") if a and b else None
            note = f"one after the other, medians {a['rps']:,.0f} vs {b['rps']:,.0f} rps" if r is not None else ""
        add(f"inspector on vs off, {label} rps", r, ">= 0.97", None if r is None else r >= 0.97, "x", note)
        add(f"inspector on vs off, {label} CPU/req added", d, "<= 1.0", None if d is None else d <= 1.0, "us",
            "loaded together" if t else "one after the other")
    st, sn = s.get("stream"), s.get("stream-nginx")
    for d in ("download", "upload"):
        v = g(st, d, "share_of_direct")
        peer = g(sn, d, "share_of_direct")
        add(f"1 GiB {d} through portok vs direct", v, ">= 0.80", None if v is None else v >= 0.8, "x",
            (f"{g(st, d, 'portok_mb_s', 'median') or 0:,.0f} vs {g(st, d, 'direct_mb_s', 'median') or 0:,.0f} MB/s"
             + (f"; nginx (unbuffered) {peer:.3f}x" if peer is not None else ""))
            if st else "")
    if st:
        growth = max(g(st, "download", "daemon_rss_peak_kib") or 0, g(st, "upload", "daemon_rss_peak_kib") or 0) \
            - (g(st, "daemon_rss_before_kib") or 0)
        add("streaming memory (RSS growth during 1 GiB)", growth / MIB, "<= 16 MiB", growth / MIB <= 16, "MiB")
    else:
        add("streaming memory (RSS growth during 1 GiB)", None, "<= 16 MiB", None)
    fresh = env.get("portok_rss_fresh_kib")
    idle = g(c, "portok", "rss_idle_kib")
    add("daemon RSS idle (after first requests)", idle / MIB if idle else None, "<= 10 MiB",
        idle / MIB <= 10 if idle else None, "MiB",
        f"{int(fresh) / MIB:.1f} MiB right after start" if fresh else "")
    peaks = [c[t]["rss_peak_kib"] for t in ("portok", "portok_tls", "portok_h2") if t in c]
    add("daemon RSS under c=50 load (peak)", max(peaks) / MIB if peaks else None, "<= 40 MiB",
        max(peaks) / MIB <= 40 if peaks else None, "MiB")
    for key, label in (("idle-conns", "plain"), ("idle-conns-tls", "TLS")):
        v = g(s, key, "daemon_rss_with_conns_kib")
        add(f"daemon RSS with 1,000 idle {label} conns", v / MIB if v else None, "<= 64 MiB",
            v / MIB <= 64 if v else None, "MiB",
            f"{g(s, key, 'conns')} open, {g(s, key, 'kib_per_conn') or 0:.1f} KiB/conn" if v else "")
    rd = s.get("redeploy")
    add("failed requests across redeploys under load", g(rd, "failed_requests"), "= 0",
        None if rd is None else rd["failed_requests"] == 0 and rd["restart_ok"] == rd["redeploys"], "",
        f"{rd['restart_ok']}/{rd['redeploys']} restarts ok, {rd['requests']:,} requests" if rd else "")
    v = g(rd, "switch_ms", "median")
    add("redeploy switch (ready -> served), median", v, "<= 20 ms", None if v is None else v <= 20, "ms",
        f"max {g(rd, 'switch_ms', 'max'):.1f} ms" if v is not None else "")
    v = g(s, "route-change", "route_change_ms", "median")
    add("route change (alias returns -> routed), median", v, "<= 20 ms", None if v is None else v <= 20, "ms",
        f"new name {g(s, 'route-change', 'new_route_ms', 'median'):.2f} ms; `portok alias` itself "
        f"{g(s, 'route-change', 'alias_cmd_ms', 'median'):.1f} ms" if v is not None else "")
    v = g(s, "tls-handshake", "first_minus_cached_ms")
    add("new-host TLS handshake minus cached", v, "<= 5 ms", None if v is None else v <= 5, "ms",
        f"first {g(s, 'tls-handshake', 'first_ms', 'median'):.2f} ms, cached "
        f"{g(s, 'tls-handshake', 'cached_ms', 'median'):.2f} ms (medians)" if v is not None else "")
    levels = [(f"{m} in flight", 0.8, gr) for m, gr in (g(s, "grpc", "in_flight") or {}).items()]
    if g(s, "grpc", "python"):
        levels.append(("Python client (grpcio), 1 in flight", 0.7, g(s, "grpc", "python")))
    for at, need, gr in levels:
        floor = g(gr, "relay_h2c", "share_of_direct")
        nginx = g(gr, "nginx_h2c", "share_of_direct")
        bare = g(gr, "bare_h2c", "share_of_direct")
        for t, label in (("portok_h2c", "h2c"), ("portok_tls", "TLS h2")):
            v = g(gr, t, "share_of_direct")
            add(f"gRPC unary calls/s through portok vs direct, {label}, {at}", v, f">= {need:.2f}",
                None if v is None else v >= need, "x",
                f"{g(gr, t, 'calls_s', 'median') or 0:,.0f} vs {g(gr, 'direct', 'calls_s', 'median') or 0:,.0f} "
                f"calls/s; {g(gr, t, 'errors')} errors"
                + (f"; floor (TCP route, bytes as they are) {floor:.3f}x" if floor else "")
                + (f"; nginx grpc_pass {nginx:.3f}x ({g(gr, 'nginx_h2c', 'errors')} errors)" if nginx else "")
                + (f"; two h2 stacks alone (bare_h2_proxy) {bare:.3f}x ({g(gr, 'bare_h2c', 'errors')} errors)"
                   if bare else "")
                if v is not None else "")
        v = g(gr, "portok_h2c", "ratio_to_nginx")
        if v is not None:
            add(f"gRPC unary calls/s through portok vs nginx grpc_pass, h2c, {at}", v, ">= 1.0",
                v >= 1.0, "x")
    v = g(s, "cli-list", "ms", "median")
    add("`portok list` with 100 routes, median", v, "<= 10 ms", None if v is None else v <= 10, "ms",
        g(s, "cli-list", "tool") or "built-in loop")
    v = g(s, "proxy-start", "start_answered_ms", "median")
    add("`portok proxy start` until it answers, median", v, "<= 100 ms", None if v is None else v <= 100, "ms",
        f"first start (new CA) {g(s, 'proxy-start', 'first_start_answered_ms') or 0:.1f} ms" if v is not None else "")
    return T


def grpc_scenario(raw, rounds, levels):
    """run.sh's gRPC scenario -> one JSON object: {"rounds", "in_flight": {N: level}} for each
    N calls in flight in `levels` (RAWDIR/grpc-mN-TARGET-ROUND.json, grpc load's lines), and
    "python": level when `levels` names it (grpc-python-TARGET-ROUND.json, from client.py).
    Fails (exit 1) when a round of a tonic level has no figure; a Python round without one
    shows in its rounds_measured and fails nothing (the pair is optional)."""
    out = {"rounds": rounds, "in_flight": {}}
    complete = True
    for m in levels:
        lv, ok = grpc_level(raw, rounds, "grpc-python" if m == "python" else f"grpc-m{m}")
        if m == "python":
            out["python"] = lv
        else:
            out["in_flight"][m] = lv
        complete &= ok or m == "python"
    json.dump(out, sys.stdout, indent=1)
    print()
    return complete


def grpc_level(raw, rounds, prefix):
    """One level of the gRPC scenario: per target the calls/s (median, all rounds) and errors;
    but direct, its share of direct (each round's ratio, then the median). The relay and
    nginx and the bare h2 proxy count only when they ran. -> (level, whether every round has its figures)"""
    per = {}
    for t in ("direct", "portok_h2c", "portok_tls", "relay_h2c", "bare_h2c", "nginx_h2c"):
        runs = [load_json(os.path.join(raw, f"{prefix}-{t}-{r}.json")) for r in range(1, rounds + 1)]
        if t in ("direct", "portok_h2c", "portok_tls") or any(runs):
            per[t] = runs
    lv = {}
    complete = True
    for t, runs in per.items():
        ok = [j for j in runs if j]
        lv[t] = {"calls_s": {"median": med([j["rps"] for j in ok]), "all": [j["rps"] for j in ok]},
                 "p50_ms": med([j["p50_ms"] for j in ok]), "p99_ms": med([j["p99_ms"] for j in ok]),
                 "errors": sum(j["errors"] for j in ok), "rounds_measured": len(ok)}
        # The peers and yardsticks inform; only portok's and direct's figures must all be there.
        if t in ("direct", "portok_h2c", "portok_tls"):
            complete &= len(ok) == rounds
    for t in [x for x in per if x != "direct"]:
        ratios = [p["rps"] / d["rps"] for p, d in zip(per[t], per["direct"]) if p and d and d["rps"]]
        lv[t]["share_of_direct"] = med(ratios)
        lv[t]["share_all"] = ratios
    if "nginx_h2c" in per:
        ratios = [p["rps"] / n["rps"] for p, n in zip(per["portok_h2c"], per["nginx_h2c"])
                  if p and n and n["rps"]]
        lv["portok_h2c"]["ratio_to_nginx"] = med(ratios)
    return lv, complete


def size_label(n):
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def tcp_table(s):
    """TCP routes (issue 7): direct vs through a `portok alias --tcp` route; [] when not run."""
    st, ec = s.get("tcp-stream"), s.get("tcp-echo")
    if not st and not ec:
        return []
    L = ["| TCP route (raw TCP, `portok alias --tcp`) | direct | through portok | portok/direct | detail |",
         "|---|---|---|---|---|"]
    if st:
        gib = st["bytes"] / (1 << 30)
        what = f"{gib:g} GiB" if gib >= 1 else f"{st['bytes']:,} bytes"
        for d in ("upload", "download"):
            cpu = g(st, d, "daemon_cpu_s_per_gib")
            L.append(f"| {what} {d} over one connection, MB/s (median of {st['rounds']}) "
                     f"| {fmt(g(st, d, 'direct_mb_s', 'median'))} | {fmt(g(st, d, 'portok_mb_s', 'median'))} "
                     f"| {fmt(g(st, d, 'share_of_direct'), 3)} "
                     f"| daemon CPU {fmt(cpu, 2)} s/GiB; every byte checked |")
    if ec:
        for z in ec.get("sizes", []):
            n = f"echo {size_label(z['size'])} x {ec['conns']} conns"
            cpu = z.get("daemon_cpu_us_per_round_trip")
            L.append(f"| {n}, round trips/s (median of {ec['rounds']} x {ec['duration_s']:g} s) "
                     f"| {fmt(g(z, 'direct_rps', 'median'))} | {fmt(g(z, 'portok_rps', 'median'))} "
                     f"| {fmt(z.get('share_of_direct'), 3)} | daemon CPU {fmt(cpu, 1)} µs/round trip |")
            for q in ("p50", "p99"):
                dv, pv = g(z, f"direct_{q}_ms", "median"), g(z, f"portok_{q}_ms", "median")
                L.append(f"| {n}, {q} latency ms | {fmt(dv, 3)} | {fmt(pv, 3)} "
                         f"| {fmt(pv / dv if dv and pv else None, 2)} | |")
    notes = []
    for name, x in (("tcp-stream", st), ("tcp-echo", ec)):
        if not x:
            continue
        parts = []
        r = x.get("relay")
        if isinstance(r, dict):
            parts.append(f"{r['connections_total']} relayed connections, {r['spliced']} with splice, "
                         f"{r['copied']} with the copy; daemon counters in {r['bytes_in']:,} B, "
                         f"out {r['bytes_out']:,} B"
                         + (f" ({'equal to' if x['relay_counters_match'] else 'NOT equal to'} the bytes sent)"
                            if x.get("relay_counters_match") is not None else ""))
        oc = x.get("others_cpu_pct")
        if isinstance(oc, dict) and oc.get("n"):
            parts.append(f"other processes {oc['median']:.0f}% of the machine (median over runs, "
                         f"max {oc['max']:.0f}%)")
        if parts:
            notes.append(f"- {name}: " + "; ".join(parts))
    if notes:
        L.append("")
        L.append("Relay (`portok status tcpbench --json`, deltas over the scenario) and other work on the machine:")
        L.append("")
        L.extend(notes)
    return L


def markdown(env, c, T, s):
    L = []
    L.append(f"Machine: {env.get('machine', '?')}  ")
    if c:
        L.append(f"Run: {env.get('date_utc', '?')}, {env.get('portok', '?')}, pinning {env.get('pin_mode', '?')}, "
                 f"{env.get('rounds', '?')} rounds x {env.get('duration', '?')} interleaved, medians  ")
        L.append(f"Load: {env.get('load_h1', '?')}; h2: {env.get('load_h2', '?')}; backend: {env.get('backend', '?')}"
                 + (f"; {env['nginx']}" if env.get("nginx") else "")
                 + (f"; {env['portless']}" if env.get("portless") else ""))
    else:
        L.append(f"Run: {env.get('date_utc', '?')}, {env.get('portok', '?')}, pinning {env.get('pin_mode', '?')}, "
                 f"scenarios only (no load rounds): {env.get('scenarios_only') or '?'}")
    if env.get("tcp") and ("tcp-stream" in s or "tcp-echo" in s):
        L.append(f"  \nTCP scenarios: {env['tcp']}; route {env.get('tcp_route', '?')}")
    if env.get("loadavg_start"):
        busy = env.get("busy_before_rounds_pct")
        L.append(f"  \nLoad average (1/5/15 min) at start {env['loadavg_start']}, at end {env.get('loadavg_end', '?')}"
                 + (f"; CPU {busy}% busy just before the rounds" if busy else "")
                 + " (other work on the machine shows here; only same-run ratios are comparable)")
    if env.get("skipped"):
        L.append(f"  \nSkipped: {env['skipped']}")
    if c:
        L.append("")
        L.append("| contender | req/s median [min–max] | share of direct | vs nginx | vs portless | p50 ms | p99 ms "
                 "| proxy CPU µs/req | upstream conns/req | RSS idle MiB | RSS peak MiB | failed |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t, x in c.items():
        cpu = fmt(x["cpu_us_per_req"], 2) if t != "direct" else f"(backend {fmt(x['backend_cpu_us_per_req'], 2)})"
        L.append(
            f"| {x['label']} | {fmt(x['rps'])} [{fmt(x['rps_min'])}–{fmt(x['rps_max'])}] "
            f"| {fmt(x['share_of_direct'], 3)} | {fmt(x['ratio_to_nginx'], 2, 'x')} "
            f"| {fmt(x['ratio_to_portless'], 1, 'x')} | {fmt(x['p50_ms'], 3)} | {fmt(x['p99_ms'], 3)} "
            f"| {cpu} | {fmt(x['upstream_conns_per_req'], 4)} "
            f"| {fmt(x['rss_idle_kib'] / MIB if x['rss_idle_kib'] else None, 1)} "
            f"| {fmt(x['rss_peak_kib'] / MIB if x['rss_peak_kib'] else None, 1)} | {x['failed_requests']} |")
    # the issue-5 targets; a scenarios-only run measures none of them
    shown = T if any(t["value"] is not None for t in T) else []
    if shown:
        L.append("")
        L.append("| target | measured | bound | status | detail |")
        L.append("|---|---|---|---|---|")
    for t in shown:
        v = t["value"]
        if v is None:
            vs = "not measured"
        elif isinstance(v, float):
            vs = f"{v:,.3f}{t['unit']}" if t["unit"] == "x" else f"{v:,.2f} {t['unit']}".rstrip()
        else:
            vs = f"{v}"
        L.append(f"| {t['target']} | {vs} | {t['bound']} | **{t['status']}** | {t['note']} |")
    tcp = tcp_table(s)
    if tcp:
        L.append("")
        L.extend(tcp)
    return "\n".join(L) + "\n"


def main():
    if sys.argv[1] == "--grpc":
        sys.exit(0 if grpc_scenario(sys.argv[2], int(sys.argv[3]), sys.argv[4:] or ["50"]) else 1)
    raw = sys.argv[1]
    results = sys.argv[2] if len(sys.argv) > 2 else None
    env = read_env(raw)
    c = contenders(raw, env)
    s = scenarios(raw)
    tog = together(raw)
    if tog:
        s["inspector-together"] = tog
    T = targets(c, s, env)
    doc = {"env": env, "contenders": c, "scenarios": s, "targets": T,
           "raw_dir": os.path.relpath(raw, results) if results else raw}
    md = markdown(env, c, T, s)
    for d, base in ((raw, "summary"),) + (((results, "latest"),) if results else ()):
        with open(os.path.join(d, f"{base}.json"), "w") as f:
            json.dump(doc, f, indent=2)
        with open(os.path.join(d, f"{base}.md"), "w") as f:
            f.write(md)
    print(md)


if __name__ == "__main__":
    main()
