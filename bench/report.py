"""Turns bench/run's raw records (one JSON object a line) into the results table: markdown on
stdout and in OUT/results.md, everything in OUT/results.json. Stdlib only.

usage: report.py RESULTS.jsonl OUT_DIR --mode full|smoke --nproc N --duration S --galley-rev REV"""
import argparse
import datetime
import json
import os
import platform

# The goals of issue 6; each is checked only when both sides of it were measured.
SERVING_VS_MLFLOW = 30.0  # Galley ≥ 30× MLflow's requests/s at 16 connections
SERVING_VS_HYPER = 0.70  # and ≥ 70% of a bare hyper server
TRACKING_VS_MLFLOW = 20.0
FEATURES_VS_FEAST = 20.0
PLAN_1000_MS = 100.0


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(r, pct=False):
    if r is None:
        return "–"
    return f"{r * 100:.0f}%" if pct else f"{r:,.1f}×"


def fmt_num(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def fmt_ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def serving_rows(records):
    by = {}
    for r in records:
        if r["bench"] == "serving" and r["system"] in ("galley", "mlflow", "hyper"):
            by.setdefault((r["rows"], r["connections"]), {})[r["system"]] = r["wrk"]
    rows = []
    for (n, c), systems in sorted(by.items()):
        g, m, h = systems.get("galley"), systems.get("mlflow"), systems.get("hyper")
        rps = lambda s: s["rps"] if s else None  # noqa: E731
        rows.append({
            "rows": n, "connections": c,
            "galley": g, "mlflow": m, "hyper": h,
            "galley_vs_mlflow": ratio(rps(g), rps(m)),
            "galley_vs_hyper": ratio(rps(g), rps(h)),
        })
    return rows


def byo_rows(records):
    """The team's own model (examples/sklearn): Galley serving its ONNX export vs `mlflow models
    serve` of the same fitted scikit-learn pipeline."""
    by = {}
    for r in records:
        if r["bench"] == "serving" and r["system"] in ("galley-onnx", "mlflow-sklearn"):
            by.setdefault((r["rows"], r["connections"]), {})[r["system"]] = r["wrk"]
    return [{"rows": n, "connections": c, "galley": s.get("galley-onnx"), "mlflow": s.get("mlflow-sklearn"),
             "galley_vs_mlflow": ratio((s.get("galley-onnx") or {}).get("rps"), (s.get("mlflow-sklearn") or {}).get("rps"))}
            for (n, c), s in sorted(by.items())]


def one(records, bench, system):
    for r in records:
        if r["bench"] == bench and r["system"] == system:
            return r["result"]
    return None


def goal(name, value, target, met, shown):
    return {"goal": name, "value": value, "target": target, "met": met, "shown": shown}


def goals(serving, tracking, features, plan):
    out = []
    for s in serving:
        if s["rows"] == 1 and s["connections"] == 16:
            r = s["galley_vs_mlflow"]
            if r is not None:
                out.append(goal("serving, 1 row, 16 connections: Galley vs MLflow", r, SERVING_VS_MLFLOW,
                                r >= SERVING_VS_MLFLOW, f"{fmt_ratio(r)} (goal ≥ {SERVING_VS_MLFLOW:.0f}×)"))
            r = s["galley_vs_hyper"]
            if r is not None:
                out.append(goal("serving, 1 row, 16 connections: Galley vs bare hyper", r, SERVING_VS_HYPER,
                                r >= SERVING_VS_HYPER, f"{fmt_ratio(r, pct=True)} (goal ≥ {SERVING_VS_HYPER:.0%})"))
    if tracking["ratio"] is not None:
        r = tracking["ratio"]
        out.append(goal("tracking ingest: Galley vs MLflow", r, TRACKING_VS_MLFLOW, r >= TRACKING_VS_MLFLOW,
                        f"{fmt_ratio(r)} (goal ≥ {TRACKING_VS_MLFLOW:.0f}×)"))
    if features["ratio"] is not None:
        r = features["ratio"]
        out.append(goal("online features: Galley vs Feast", r, FEATURES_VS_FEAST, r >= FEATURES_VS_FEAST,
                        f"{fmt_ratio(r)} (goal ≥ {FEATURES_VS_FEAST:.0f}×)"))
    for p in plan:
        if p["resources"] == 1000:
            ms = p["create_ms"]
            out.append(goal("plan, 1,000 resources (all create)", ms, PLAN_1000_MS, ms < PLAN_1000_MS,
                            f"{ms:.1f} ms (goal < {PLAN_1000_MS:.0f} ms)"))
    return out


def markdown(meta, serving, tracking, features, plan, goal_rows, byo=()):
    lines = [
        f"# Galley benchmarks ({meta['mode']} run)",
        "",
        f"{meta['date']} · {meta['nproc']} cores (`nproc`) · {meta['machine']} · Galley {meta['galley_rev']} "
        f"({meta['build']} build) · wrk {meta['duration_s']} s per run",
        "",
    ]
    if meta["mode"] == "smoke":
        lines += ["Smoke run: Galley side only, debug build, short runs. The figures show that every",
                  "workload runs; they are not the numbers to compare.", ""]
    if serving:
        lines += ["## Serving (wrk, POST /invocations, dataframe_split)", "",
                  "| rows/req | conns | Galley req/s | p50 ms | p99 ms | MLflow req/s | p50 ms | p99 ms "
                  "| bare hyper req/s | Galley ÷ MLflow | Galley ÷ hyper |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in serving:
            g, m, h = s["galley"] or {}, s["mlflow"] or {}, s["hyper"] or {}
            lines.append(
                f"| {s['rows']} | {s['connections']} | {fmt_num(g.get('rps'))} | {fmt_ms(g.get('p50_us'))} "
                f"| {fmt_ms(g.get('p99_us'))} | {fmt_num(m.get('rps'))} | {fmt_ms(m.get('p50_us'))} "
                f"| {fmt_ms(m.get('p99_us'))} | {fmt_num(h.get('rps'))} | {fmt_ratio(s['galley_vs_mlflow'])} "
                f"| {fmt_ratio(s['galley_vs_hyper'], pct=True)} |")
        errors = [(s["rows"], s["connections"], name, w["socket_errors"], w["non_2xx"])
                  for s in serving for name in ("galley", "mlflow", "hyper")
                  for w in [s[name]] if w and (w["socket_errors"] or w["non_2xx"])]
        for n, c, name, se, bad in errors:
            lines.append(f"\n**{name}, {n} rows, {c} connections: {se} socket errors, {bad} non-2xx answers.**")
        lines.append("")
    if byo:
        lines += ["## Serving your own model (examples/sklearn: scaler + logistic regression)", "",
                  "Galley serves the ONNX export in-process with ONNX Runtime; MLflow serves the same fitted",
                  "pipeline (`mlflow models serve`, the sklearn flavor). Same requests, same machine, back to back.", "",
                  "| rows/req | conns | Galley (ONNX) req/s | p50 ms | p99 ms | MLflow (sklearn) req/s | p50 ms | p99 ms "
                  "| Galley ÷ MLflow |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in byo:
            g, m = s["galley"] or {}, s["mlflow"] or {}
            lines.append(
                f"| {s['rows']} | {s['connections']} | {fmt_num(g.get('rps'))} | {fmt_ms(g.get('p50_us'))} "
                f"| {fmt_ms(g.get('p99_us'))} | {fmt_num(m.get('rps'))} | {fmt_ms(m.get('p50_us'))} "
                f"| {fmt_ms(m.get('p99_us'))} | {fmt_ratio(s['galley_vs_mlflow'])} |")
        lines.append("")
    g, m = tracking["galley"] or {}, tracking["mlflow"] or {}
    lines += ["## Tracking ingest (in-process, SQLite, batches of 1,000)", "",
              "| metrics | Galley metrics/s | MLflow metrics/s | Galley ÷ MLflow |", "|---:|---:|---:|---:|",
              f"| {fmt_num(g.get('metrics'))} | {fmt_num(g.get('metrics_per_s'))} "
              f"| {fmt_num(m.get('metrics_per_s'))} | {fmt_ratio(tracking['ratio'])} |", ""]
    g, f = features["galley"] or {}, features["feast"] or {}
    lines += ["## Online features (in-process, SQLite online store, one entity per lookup, 7 features)", "",
              "| lookups | Galley lookups/s | p50 µs | p99 µs | Feast lookups/s | p50 µs | p99 µs | Galley ÷ Feast "
              "| raw SQLite point read/s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| {fmt_num(g.get('lookups'))} | {fmt_num(g.get('lookups_per_s'))} | {fmt_num(g.get('p50_us'), 1)} "
              f"| {fmt_num(g.get('p99_us'), 1)} | {fmt_num(f.get('lookups_per_s'))} | {fmt_num(f.get('p50_us'), 1)} "
              f"| {fmt_num(f.get('p99_us'), 1)} | {fmt_ratio(features['ratio'])} "
              f"| {fmt_num(g.get('sqlite_floor_lookups_per_s'))} |", "",
              "The last column is the same read straight through rusqlite on the calling thread (no",
              "store around it): not a peer, a floor that shows what the store adds per lookup.", ""]
    if plan:
        lines += ["## Plan (engine, binary tree of test resources, median of 3)", "",
                  "| resources | plan, empty state (all create) ms | plan, applied state (no changes) ms |",
                  "|---:|---:|---:|"]
        lines += [f"| {p['resources']:,} | {p['create_ms']:.1f} | {p['no_change_ms']:.1f} |" for p in plan]
        lines.append("")
    if goal_rows and meta["mode"] == "smoke":
        lines += ["Goals are judged on the full run only (release build, peers measured).", ""]
    elif goal_rows:
        lines += ["## Goals", "", "| goal | result | met |", "|---|---|:-:|"]
        lines += [f"| {g['goal']} | {g['shown']} | {'yes' if g['met'] else '**no**'} |" for g in goal_rows]
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--mode", required=True)
    ap.add_argument("--nproc", type=int, required=True)
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--galley-rev", default="unknown")
    a = ap.parse_args()
    records = load(a.results)
    peer = lambda bench, system: one(records, bench, system)  # noqa: E731
    meta = {
        "mode": a.mode,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": a.nproc,
        "machine": f"{platform.system()} {platform.machine()}",
        "galley_rev": a.galley_rev,
        "build": "release" if a.mode == "full" else "debug",
        "duration_s": a.duration,
        "mlflow": (peer("tracking", "mlflow") or {}).get("mlflow"),
        "feast": (peer("features", "feast") or {}).get("feast"),
    }
    serving = serving_rows(records)
    tg, tm = peer("tracking", "galley"), peer("tracking", "mlflow")
    tracking = {"galley": tg, "mlflow": tm,
                "ratio": ratio((tg or {}).get("metrics_per_s"), (tm or {}).get("metrics_per_s"))}
    fg, ff = peer("features", "galley"), peer("features", "feast")
    features = {"galley": fg, "feast": ff,
                "ratio": ratio((fg or {}).get("lookups_per_s"), (ff or {}).get("lookups_per_s"))}
    plan = (peer("plan", "galley") or {}).get("plans", [])
    goal_rows = goals(serving, tracking, features, plan)
    byo = byo_rows(records)
    md = markdown(meta, serving, tracking, features, plan, goal_rows, byo)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "serving": serving, "tracking": tracking, "features": features,
                   "plan": plan, "goals": goal_rows, "serving_own_model": byo, "mlflow_model": peer("train", "mlflow")}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
