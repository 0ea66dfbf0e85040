"""Schemathesis hooks for the contract test (tests/tests/contract.rs).

1. A serializer for `application/x-protobuf` (POST /api/v1/write): Schemathesis has none; the generated
   bytes are sent as they are (the server answers 401 to the API token before reading them anyway).
2. Constraints between fields that JSON Schema cannot state, applied to generated bodies. Each hook only
   rewrites values that are already valid on their own (ordering two valid numbers, moving a valid time
   into the window the server accepts), so an invalid value a negative case carries stays invalid. The
   server's validation states the same rules, with the field in the 400:
   - policies: min_replicas <= max_replicas; rebatch.min_batch_size <= rebatch.max_batch_size; a metric's target is
     within its metric's range (100 for percentages, 1e6 queued requests);
   - silences: the end lies after the start (moved to the coming hour).
"""
from datetime import datetime, timedelta, timezone

import schemathesis

MAX_TARGET = {"gpu_utilization": 100, "kv_cache_pct": 100, "queue_depth_per_replica": 1e6}


@schemathesis.serializer("application/x-protobuf")
def protobuf(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return {"data": bytes(value)}
    return {"data": str(value).encode("utf-8")}


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _order(obj, lo, hi):
    if isinstance(obj, dict) and _num(obj.get(lo)) and _num(obj.get(hi)) and obj[lo] > obj[hi]:
        obj[lo], obj[hi] = obj[hi], obj[lo]


def _percent(metric, obj, key):
    v = obj.get(key)
    top = MAX_TARGET.get(metric) if isinstance(metric, str) else None
    if top is not None and _num(v) and top < v <= 1e9:
        obj[key] = top


def _policy(body):
    _order(body, "min_replicas", "max_replicas")
    _order(body.get("rebatch"), "min_batch_size", "max_batch_size")
    _percent(body.get("metric"), body, "target_value")
    for m in body.get("metrics") or []:
        if isinstance(m, dict):
            _percent(m.get("metric"), m, "target")


def _time(v):
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _silence(body):
    now = datetime.now(timezone.utc)
    if "starts_at" in body and _time(body["starts_at"]) is not None:
        body["starts_at"] = (now + timedelta(minutes=1)).isoformat()
    if "ends_at" in body and _time(body["ends_at"]) is not None:
        body["ends_at"] = (now + timedelta(hours=1)).isoformat()


@schemathesis.hook
def map_body(context, body):
    op = context.operation
    if op is None or not isinstance(body, dict):
        return body
    if op.path in ("/api/v1/policies", "/api/v1/policies/{id}") and op.method.upper() in ("POST", "PUT"):
        _policy(body)
    elif op.path == "/api/v1/silences" and op.method.upper() == "POST":
        _silence(body)
    return body
