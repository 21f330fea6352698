#!/usr/bin/env python3
"""Writes charts/syncmesh/dashboards/syncmesh.json, the Grafana dashboard of syncmesh.

The dashboard is generated so that its panels stay uniform (one datasource variable, the
`$pipeline` filter on every query, units); edit this file and run it, not the JSON:

    python3 tests/chart/gen_dashboard.py

check_chart.py fails when the committed JSON differs from what this script writes, and
tests/tests/dashboard.rs runs every query against a real Prometheus scraping a real worker.
"""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[2] / "charts/syncmesh/dashboards/syncmesh.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'pipeline=~"$pipeline"'


def rate(metric, by):
    return f"sum by ({by}) (rate({metric}{{{SEL}}}[$__rate_interval]))"


def quantile(q, metric, by):
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate({metric}_bucket{{{SEL}}}[$__rate_interval])))"
    )


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(kind, title, description, targets, unit, w=12, h=8, **extra):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "gridPos": {"w": w, "h": h},
    }
    p["fieldConfig"]["defaults"].update(extra.pop("defaults", {}))
    p.update(extra)
    return p


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


BREAKER_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "open", "color": "red", "index": 1},
            "2": {"text": "half-open", "color": "orange", "index": 2},
            "3": {"text": "shadow promoted", "color": "blue", "index": 3},
        },
    }
]

CHECK_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "1": {"text": "passed", "color": "green", "index": 0},
            "0": {"text": "differences", "color": "red", "index": 1},
            "-1": {"text": "error", "color": "orange", "index": 2},
        },
    }
]

PANELS = [
    row("Flow"),
    panel(
        "stat", "Workers up", "Workers Prometheus scrapes successfully (job `syncmesh`).",
        [('sum(up{job="syncmesh"})', "up")], "none", w=4, h=8,
    ),
    panel(
        "timeseries", "Throughput per route",
        "Routing decisions per second, per rule (`default`: events no rule matched).",
        [(rate("syncmesh_route_decisions_total", "route"), "{{route}}")], "ops", w=10,
    ),
    panel(
        "timeseries", "Events read per source", "Change events read per second from each source.",
        [(rate("syncmesh_source_events_total", "pipeline, source"), "{{pipeline}}/{{source}}")],
        "ops", w=10,
    ),
    panel(
        "timeseries", "Lag per source",
        "Source commit time of the newest event every path has acknowledged, to that "
        "acknowledgement.",
        [(f"max by (pipeline, source) (syncmesh_source_lag_seconds{{{SEL}}})",
          "{{pipeline}}/{{source}}")],
        "s",
    ),
    panel(
        "timeseries", "End-to-end latency p50 / p99",
        "Time from an event's source commit to its acknowledgement, per path.",
        [
            (quantile(0.5, "syncmesh_end_to_end_latency_seconds", "path"), "p50 {{path}}"),
            (quantile(0.99, "syncmesh_end_to_end_latency_seconds", "path"), "p99 {{path}}"),
        ],
        "s",
    ),
    panel(
        "timeseries", "Acknowledged per path", "Events each path made durable, per second.",
        [(rate("syncmesh_path_acknowledged_events_total", "path"), "{{path}}")], "ops",
    ),
    panel(
        "timeseries", "Events in flight", "Dispatched to paths and not yet acknowledged by all.",
        [(f"sum by (pipeline) (syncmesh_events_in_flight{{{SEL}}})", "{{pipeline}}")], "none",
    ),
    row("Sink tables"),
    panel(
        "state-timeline", "Breaker state",
        "Circuit breaker of each sink table: closed, open (writes diverted to the shadow "
        "table), half-open (probing), shadow promoted.",
        [(f"max by (pipeline, table) (syncmesh_sink_breaker_state{{{SEL}}})",
          "{{pipeline}}/{{table}}")],
        "none", w=24, h=6, defaults={"mappings": BREAKER_MAPPINGS},
        options={"showValue": "auto", "mergeValues": True, "legend": {"showLegend": False}},
    ),
    panel(
        "timeseries", "Sink rows per table", "Rows applied to each sink table per second.",
        [(rate("syncmesh_sink_rows_total", "table"), "{{table}}")], "rowsps",
    ),
    panel(
        "timeseries", "Sink write latency p99", "p99 time to apply one batch to a sink table.",
        [(quantile(0.99, "syncmesh_sink_write_duration_seconds", "table"), "{{table}}")], "s",
    ),
    row("Batch path and Kafka"),
    panel(
        "timeseries", "Snapshots committed", "Snapshots committed (manifest written) per table.",
        [(f"sum by (table) (increase(syncmesh_snapshots_committed_total{{{SEL}}}[$__rate_interval]))",
          "{{table}}")],
        "none",
    ),
    panel(
        "timeseries", "Snapshot commit latency p99", "p99 time to write a snapshot's files and manifest.",
        [(quantile(0.99, "syncmesh_snapshot_commit_duration_seconds", "pipeline"), "{{pipeline}}")],
        "s",
    ),
    panel(
        "timeseries", "Kafka transactions", "Transactions of the real-time path per second, by outcome.",
        [(rate("syncmesh_kafka_transactions_total", "outcome"), "{{outcome}}")], "ops",
    ),
    panel(
        "timeseries", "Kafka produce latency p99", "p99 time to produce a batch and commit its transaction.",
        [(quantile(0.99, "syncmesh_kafka_produce_duration_seconds", "pipeline"), "{{pipeline}}")],
        "s",
    ),
    row("Quality"),
    panel(
        "timeseries", "Check diff ratio", "Differing rows over rows in the last consistency check.",
        [(f"max by (pipeline, table) (syncmesh_check_diff_ratio{{{SEL}}})", "{{pipeline}}/{{table}}")],
        "percentunit",
    ),
    panel(
        "stat", "Last check", "Verdict of each table's last consistency check.",
        [(f"max by (pipeline, table) (syncmesh_check_last_result{{{SEL}}})", "{{table}}")],
        "none", w=6, defaults={"mappings": CHECK_MAPPINGS},
    ),
    panel(
        "stat", "Since last check", "Time since each table's last consistency check ended "
        "(alert after 26 h).",
        [(f"time() - max by (pipeline, table) (syncmesh_check_last_run_timestamp_seconds{{{SEL}}})",
          "{{table}}")],
        "s", w=6,
    ),
    panel(
        "timeseries", "Dead letters", "Records sent to the dead-letter destination, per source.",
        [(f"sum by (pipeline, source) (increase(syncmesh_dead_letters_total{{{SEL}}}[$__rate_interval]))",
          "{{pipeline}}/{{source}}")],
        "none",
    ),
]


def layout(panels):
    """Assigns ids and grid positions left to right, wrapping at 24 columns."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update({"x": x, "y": y})
        x += w
        row_h = max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return panels


def dashboard():
    return {
        "uid": "syncmesh",
        "title": "syncmesh",
        "description": "Pipelines of syncmesh: throughput, lag, latency, sink breakers, "
        "snapshots, Kafka transactions, consistency checks and dead letters.",
        "tags": ["syncmesh"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "pipeline",
                    "label": "Pipeline",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(syncmesh_source_events_total, pipeline)",
                        "refId": "pipeline",
                    },
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": layout(PANELS),
    }


def render():
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
