#!/usr/bin/env python3
"""Writes docs/openapi.json, the OpenAPI 3.1 document the server serves at /api/v1/openapi.json.

Edit the paths and schemas here, run `python3 scripts/gen-openapi.py`, commit both files; the integration test
`every_path_in_the_openapi_document_is_a_route_of_the_server` requests every path of the document."""
import json
import os
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def jbody(schema, desc=None):
    d={"content":{"application/json":{"schema":schema}}}
    if desc: d["description"]=desc
    return d
ERR={"description":"Bad input: the field is named","content":{"application/json":{"schema":ref("Error")}}}
UNAUTH={"description":"Missing or wrong bearer token","content":{"application/json":{"schema":ref("Error")}}}
NOTF={"description":"Not found","content":{"application/json":{"schema":ref("Error")}}}
def ok(schema, desc="OK", code="200"):
    return {code: {"description":desc, "content":{"application/json":{"schema":schema}}}}
def op(summary, tag, responses, security="api", params=None, body=None, desc=None):
    o={"summary":summary,"tags":[tag],"responses":responses}
    if desc: o["description"]=desc
    if security: o["security"]=[{security:[]}]
    if params: o["parameters"]=params
    if body: o["requestBody"]=body
    return o
def q(name, schema, desc, required=False): return {"name":name,"in":"query","required":required,"schema":schema,"description":desc}
def pth(name, desc, schema={"type":"string"}): return {"name":name,"in":"path","required":True,"schema":schema,"description":desc}
RANGE=[q("from",{"type":"string","format":"date-time"},"Start (RFC 3339); default: 1 hour ago"),q("to",{"type":"string","format":"date-time"},"End (RFC 3339); default: now")]
std=lambda r: {**r, "400":ERR, "401":UNAUTH}

DEPS={"type":"array","maxItems":256,"items":{"type":"string"},"description":"Deployments (namespace/name or namespace/*) the node may report serving samples for"}
paths={
 "/api/v1/ingest":{"post":op("Upload one batch of GPU and serving samples","agents",
    {**ok(ref("BatchAck"),"Stored (or already stored) and committed; carries the agent's due commands"),"400":ERR,"401":UNAUTH,
     "403":{"description":"A node credential writing another node's rows or a deployment not assigned to it, or the shared agent token while agent_token_can_write is off"},"429":{"description":"Ingest queue full; retry after Retry-After"},"503":{"description":"Not committed; retry after Retry-After"}},
    security="agent", body=jbody(ref("Batch")), desc="Idempotent on (agent_id, seq). See docs/protocol.md for every field. Samples must lie between now - ingest.retention_days and now + ingest.max_future_secs; gpu_index is 0..=255; text fields carry no control characters. A batch the database still refuses is isolated from its group commit and answered 400.")},
 "/api/v1/write":{"post":op("Prometheus remote-write 1.0 receiver: DCGM exporter and serving-engine series become GPU and serving samples","agents",
    {"204":{"description":"Stored (or already stored: a retried request is idempotent)"},"400":ERR,"401":UNAUTH,
     "403":{"description":"A node credential writing another node's or deployment's data","content":{"application/json":{"schema":ref("Error")}}},
     "429":{"description":"Ingest queue full; retry after Retry-After"},"503":{"description":"Not committed; retry"}},
    security="agent", body={"content":{"application/x-protobuf":{"schema":{"type":"string","format":"binary","description":"snappy (block format) compressed prometheus.WriteRequest"}}}},
    desc="Send with Content-Encoding: snappy and X-Prometheus-Remote-Write-Version: 0.1.0, as Prometheus' remote_write does.")},
 "/api/v1/commands":{"get":op("Long poll for an agent's commands","agents",std(ok(ref("CommandPoll"),"Due commands, as soon as there are any, else an empty list after wait_s")),
    security="agent", params=[q("agent_id",{"type":"string"},"The agent",True),q("wait_s",{"type":"integer","minimum":0,"maximum":60,"default":25},"Longest wait, seconds")])},
 "/api/v1/commands/ack":{"post":op("Acknowledge receipt of commands and report results","agents",std(ok({"type":"object","properties":{"received":{"type":"integer"},"completed":{"type":"integer"}}})),
    security="agent", body=jbody(ref("CommandAck")))},
 "/api/v1/commands/{id}":{"get":op("One command's life","commands",{**std(ok(ref("CommandRecord"))),"404":NOTF},params=[pth("id","Command id",{"type":"string","format":"uuid"})])},
 "/api/v1/nodes/{node}/commands":{"get":op("A node's newest commands","commands",std(ok({"type":"array","items":ref("CommandRecord")})),params=[pth("node","Node id")])},
 "/api/v1/nodes/{node}/probe":{"post":op("Run the GPU bandwidth probe on a node now","commands",{**ok({"type":"object","properties":{"command_id":{"type":"string","format":"uuid"}}},"Queued","202"),"401":UNAUTH,"404":NOTF},params=[pth("node","Node id")])},
 "/api/v1/nodes/{node}/probes":{"get":op("Latest probe result per GPU of a node","commands",std(ok({"type":"array","items":ref("ProbeRecord")})),params=[pth("node","Node id")])},
 "/api/v1/policies":{
    "get":op("Live scaling policies","policies",std(ok({"type":"array","items":ref("StoredPolicy")}))),
    "post":op("Create a scaling policy","policies",{**ok(ref("StoredPolicy"),"Created","201"),"400":ERR,"401":UNAUTH,"409":{"description":"Name taken","content":{"application/json":{"schema":ref("Error")}}}},body=jbody(ref("PolicySpec")))},
 "/api/v1/policies/{id}":{
    "get":op("One policy","policies",{**std(ok(ref("StoredPolicy"))),"404":NOTF},params=[pth("id","Policy id",{"type":"string","format":"uuid"})]),
    "put":op("Replace a policy's spec (a new version; decisions name the version that decided)","policies",{**std(ok(ref("StoredPolicy"))),"404":NOTF,"409":{"description":"Name taken, or the policy is owned by a ScalingPolicy resource (field `owner`)","content":{"application/json":{"schema":ref("Error")}}}},params=[pth("id","Policy id",{"type":"string","format":"uuid"})],body=jbody(ref("PolicySpec"))),
    "delete":op("Delete a policy (its versions and decisions are kept)","policies",{"204":{"description":"Deleted"},"400":ERR,"401":UNAUTH,"404":NOTF,"409":{"description":"Owned by a ScalingPolicy resource: delete that instead (field `owner`)","content":{"application/json":{"schema":ref("Error")}}}},params=[pth("id","Policy id",{"type":"string","format":"uuid"})])},
 "/api/v1/policies/{id}/shadow-report":{
    "get":op("The last 24 h priced for the policy's deployment: the active policy and every shadow, each one's recorded decisions replayed against the observed demand through the fluid model","policies",{**std(ok(ref("ShadowReport"))),"404":NOTF},params=[pth("id","Policy id",{"type":"string","format":"uuid"})])},
 "/api/v1/decisions":{"get":op("Decisions, newest first, with every proposal and the reason","policies",std(ok({"type":"array","items":ref("DecisionRecord")})),params=[q("limit",{"type":"integer","minimum":1,"maximum":1000,"default":100},"How many")])},
 "/api/v1/alerts":{"get":op("Incidents (one per node or deployment group)","alerting",std(ok({"type":"array","items":{"type":"object"}})),
    params=[q("state",{"type":"string","enum":["firing","resolved"]},"State"),q("severity",{"type":"string"},"Severity"),q("group",{"type":"string"},"node/<id> or deployment/<ns/name>"),q("limit",{"type":"integer"},"How many")])},
 "/api/v1/nodes":{"get":op("Nodes and their GPUs' latest readings","fleet",std(ok({"type":"object","properties":{"nodes":{"type":"array","items":{"type":"object"}},"gpus":{"type":"array","items":{"type":"object"}}}})))},
 "/api/v1/fleet":{"get":op("Fleet overview: GPUs reporting, idle, throttled, XID, power","fleet",std(ok({"type":"object"})))},
 "/api/v1/gpus/{node}/{gpu}/series":{"get":op("A GPU's series (raw up to 2 h, 1-minute rollups up to 3 days, hourly beyond)","fleet",std(ok({"type":"object"})),params=[pth("node","Node id"),pth("gpu","GPU index",{"type":"integer"})]+RANGE)},
 "/api/v1/deployments/{namespace}/{name}/series":{"get":op("A deployment's serving series","fleet",std(ok({"type":"object"})),params=[pth("namespace","Namespace"),pth("name","Name")]+RANGE)},
 "/api/v1/deployments/{namespace}/{name}/metric":{"get":op("What a scaling policy sees: the metric summed over replicas per bucket","fleet",std(ok({"type":"object"})),
    params=[pth("namespace","Namespace"),pth("name","Name"),q("metric",ref("Metric"),"Metric",True),q("bucket_secs",{"type":"integer","minimum":1},"Bucket width"),q("group",{"type":"string"},"Agent group")]+RANGE)},
 "/api/v1/enrollment-tokens":{
    "post":op("Create an enrollment token (shown once) and the install command","install",std(ok({"type":"object"},"Created","201")),
    body=jbody({"type":"object","additionalProperties":False,"properties":{"ttl_secs":{"type":"integer","default":3600},"max_uses":{"type":"integer","default":100},"note":{"type":"string"},"deployments":DEPS}})),
    "get":op("Enrollment tokens (never the tokens themselves), newest first","install",std(ok({"type":"array","items":ref("EnrollmentToken")})))},
 "/api/v1/enrollment-tokens/{id}":{"delete":op("Revoke an enrollment token","install",{"204":{"description":"Revoked"},"400":ERR,"401":UNAUTH,"404":NOTF},params=[pth("id","Token id",{"type":"string","format":"uuid"})])},
 "/api/v1/enroll":{"post":op("Exchange an enrollment token for a per-node credential (new node ids only)","install",{**ok({"type":"object"}),"400":ERR,"401":UNAUTH,
    "409":{"description":"The node id is enrolled already and no operator allowed a re-enrollment","content":{"application/json":{"schema":ref("Error")}}},
    "413":{"description":"Body larger than ingest.small_body_bytes"},"429":{"description":"Too many failed enrollments from this address; retry after Retry-After"}},security=None,
    body=jbody({"type":"object","additionalProperties":False,"required":["enrollment_token","node_id"],"properties":{"enrollment_token":{"type":"string"},"node_id":{"type":"string"},"hostname":{"type":"string"}}}))},
 "/api/v1/enrollments":{"get":op("Enrolled nodes with revocation, assigned deployments and pending re-enrollment","install",std(ok({"type":"array","items":ref("Enrollment")})))},
 "/api/v1/enrollments/{node}":{"delete":op("Revoke a node's credential (its uploads get 401)","install",{"204":{"description":"Revoked"},"400":ERR,"401":UNAUTH,"404":NOTF},params=[pth("node","Node id")])},
 "/api/v1/enrollments/{node}/re-enroll":{"post":op("Allow one re-enrollment of an enrolled node within an hour (recorded)","install",{**ok({"type":"object","properties":{"node_id":{"type":"string"},"expires_at":{"type":"string","format":"date-time"}}},"Granted","201"),"400":ERR,"401":UNAUTH,"404":NOTF},params=[pth("node","Node id")])},
 "/api/v1/enrollments/{node}/deployments":{"put":op("Replace the deployments a node may report serving samples for","install",{**std(ok({"type":"object"})),"404":NOTF},params=[pth("node","Node id")],
    body=jbody({"type":"object","additionalProperties":False,"required":["deployments"],"properties":{"deployments":DEPS}}))},
 "/api/v1/enrollment-events":{"get":op("Enrollment audit trail, newest first: enrolled, re-enrolled, grants, revocations, refused takeovers","install",std(ok({"type":"array","items":ref("EnrollmentEvent")})))},
 "/api/v1/users/{name}/disable":{"post":op("Disable a dashboard user and end its sessions","users",{"204":{"description":"Disabled"},"401":UNAUTH,"404":NOTF},params=[pth("name","User name")])},
 "/api/v1/users/{name}":{"delete":op("Delete a dashboard user and its sessions","users",{"204":{"description":"Deleted"},"401":UNAUTH,"404":NOTF},params=[pth("name","User name")])},
 "/api/v1/opportunities":{"get":op("Optimization opportunities ranked by expected value (saving x confidence)","opportunities",std(ok({"type":"object","properties":{"total":{"type":"integer"},"limit":{"type":"integer"},"offset":{"type":"integer"},"items":{"type":"array","items":ref("Opportunity")}}})),
    params=[q("deployment",{"type":"string"},"namespace/name"),q("node",{"type":"string"},"Node id"),q("kind",{"type":"string"},"idle_gpu, memory_only, consolidation, batching, kv_cache_saturation, throttling, straggler, drain"),q("status",{"type":"string","enum":["open","closed","dismissed"]},"Status"),q("limit",{"type":"integer","minimum":1,"maximum":1000},"Page size"),q("offset",{"type":"integer","minimum":0},"Skip")])},
 "/api/v1/opportunities/{id}":{"get":op("One opportunity with its evidence","opportunities",{**std(ok(ref("Opportunity"))),"404":NOTF},params=[pth("id","Opportunity id",{"type":"integer"})])},
 "/api/v1/opportunities/{id}/dismiss":{"post":op("Dismiss an opportunity (it stays dismissed while it persists)","opportunities",{**std(ok(ref("Opportunity"))),"404":NOTF,"409":{"description":"Closed already"}},
    params=[pth("id","Opportunity id",{"type":"integer"})],body=jbody({"type":"object","additionalProperties":False,"required":["reason"],"properties":{"reason":{"type":"string","minLength":1,"maxLength":500}}}))},
 "/api/v1/idle-capacity":{"get":op("The fleet's idle capacity over the latest opportunities window: GPUs allocated with nothing loaded and no work, summed bucket by bucket, in GPU-hours and money per week","opportunities",{**std(ok(ref("IdleCapacity"))),"404":NOTF})},
 "/api/v1/anomalies":{"get":op("Anomaly events (start, end, severity, evidence)","opportunities",std(ok({"type":"object"})),
    params=[q("node",{"type":"string"},"Node id"),q("deployment",{"type":"string"},"namespace/name"),q("severity",{"type":"string","enum":["info","warning","critical"]},"Severity"),q("open",{"type":"boolean"},"Only open (true) or closed (false) events"),q("limit",{"type":"integer"},"Page size"),q("offset",{"type":"integer"},"Skip")])},
 "/api/v1/node-groups":{"get":op("Workload groups of nodes: k-means over per-node profiles of the refresher's window (k by silhouette)","opportunities",{"200":{"description":"OK","content":{"application/json":{"schema":ref("NodeGroups")}}},"401":UNAUTH})},
 "/api/v1/alert-rules":{
    "get":op("User alert rules","alerting",std(ok({"type":"array","items":ref("AlertRule")}))),
    "post":op("Create a user alert rule (threshold + for-duration over a stored metric)","alerting",{**ok(ref("AlertRule"),"Created","201"),"400":ERR,"401":UNAUTH,"409":{"description":"Name taken"}},body=jbody(ref("AlertRuleSpec")))},
 "/api/v1/alert-rules/{id}":{
    "get":op("One alert rule","alerting",{**std(ok(ref("AlertRule"))),"404":NOTF},params=[pth("id","Rule id",{"type":"string","format":"uuid"})]),
    "put":op("Replace an alert rule","alerting",{**std(ok(ref("AlertRule"))),"404":NOTF},params=[pth("id","Rule id",{"type":"string","format":"uuid"})],body=jbody(ref("AlertRuleSpec"))),
    "delete":op("Delete an alert rule (its alerts resolve)","alerting",{"204":{"description":"Deleted"},"401":UNAUTH,"404":NOTF},params=[pth("id","Rule id",{"type":"string","format":"uuid"})])},
 "/api/v1/silences":{
    "get":op("Silences, active and expired","alerting",std(ok({"type":"array","items":{"type":"object"}}))),
    "post":op("Create a silence: matching alerts neither open nor re-trigger incidents until it expires","alerting",{**ok({"type":"object"},"Created","201"),"400":ERR,"401":UNAUTH},body=jbody(ref("SilenceSpec")))},
 "/api/v1/silences/{id}":{"delete":op("Expire a silence now","alerting",{"204":{"description":"Expired"},"401":UNAUTH,"404":NOTF},params=[pth("id","Silence id",{"type":"string","format":"uuid"})])},
 "/api/v1/webhooks":{
    "get":op("Webhook receivers (secrets are never returned)","alerting",std(ok({"type":"array","items":{"type":"object"}}))),
    "post":op("Add a signed JSON webhook receiver","alerting",{**ok({"type":"object"},"Created","201"),"400":ERR,"401":UNAUTH,"409":{"description":"Name taken"}},
       body=jbody({"type":"object","additionalProperties":False,"required":["name","url","secret"],"properties":{"name":{"type":"string"},"url":{"type":"string","format":"uri"},"secret":{"type":"string","writeOnly":True,"description":"HMAC-SHA256 key for X-Fleetpilot-Signature"}}}))},
 "/api/v1/webhooks/{id}":{"delete":op("Remove a webhook receiver","alerting",{"204":{"description":"Removed"},"401":UNAUTH,"404":NOTF},params=[pth("id","Webhook id",{"type":"string","format":"uuid"})])},
 "/api/v1/alert-instances":{"get":op("Alert instances (pending, firing, resolved) with their incident group","alerting",std(ok({"type":"array","items":{"type":"object"}})))},
 "/api/v1/alert-deliveries":{"get":op("Outbox deliveries to PagerDuty and webhooks","alerting",std(ok({"type":"array","items":{"type":"object"}})),params=[q("state",{"type":"string","enum":["pending","delivered","failed"]},"Delivery state")])},
 "/api/v1/openapi.json":{"get":op("This document","meta",{"200":{"description":"OpenAPI 3.1"}},security=None)},
 "/healthz":{"get":op("Liveness","meta",{"200":{"description":"Alive"}},security=None)},
 "/readyz":{"get":op("Readiness (database reachable)","meta",{"200":{"description":"Ready"},"503":{"description":"Not ready"}},security=None)},
 "/metrics":{"get":op("Prometheus self-metrics","meta",{"200":{"description":"Text exposition format"}},security=None)},
}
num=lambda d,**k: {"type":"number","description":d,**k}
intg=lambda d,**k: {"type":"integer","description":d,**k}
rules={"type":"object","additionalProperties":False,"description":"HPA HPAScalingRules","properties":{
  "stabilizationWindowSeconds":intg("Seconds (0..=3600); HPA default 0 up, 300 down",minimum=0,maximum=3600),
  "selectPolicy":{"type":"string","enum":["Max","Min","Disabled"]},
  "policies":{"type":"array","items":{"type":"object","additionalProperties":False,"required":["type","value","periodSeconds"],"properties":{
     "type":{"type":"string","enum":["Pods","Percent"]},"value":intg("At least 1",minimum=1),"periodSeconds":intg("1..=1800",minimum=1,maximum=1800)}}}}}
schemas={
 "Error":{"type":"object","required":["error"],"properties":{"error":{"type":"string"},"field":{"type":"string","description":"JSON path of the offending field"}}},
 "Metric":{"type":"string","enum":["gpu_utilization","queue_depth_per_replica","kv_cache_pct","tokens_per_sec_per_replica"]},
 "Target":{"type":"object","additionalProperties":False,"required":["kind","name"],"properties":{
   "kind":{"type":"string","enum":["deployment","statefulset","agent_group"]},
   "namespace":{"type":"string","description":"Required for Kubernetes kinds"},
   "name":{"type":"string"},
   "deployment":{"type":"string","description":"namespace/name whose metrics drive an agent_group target"}}},
 "PolicySpec":{"type":"object","additionalProperties":False,"required":["name","target","min_replicas","max_replicas"],
   "description":"Give metric + target_value, or metrics (or both), or neither: a policy with only a target and bounds is the default policy for LLM serving (capacity sizing with its defaults). Every error names its field.",
   "properties":{
   "name":{"type":"string","pattern":"^[a-z0-9-]{1,63}$"},
   "target":ref("Target"),
   "min_replicas":intg("0 allows scale to zero (needs scale_to_zero_idle_secs)",minimum=0),
   "max_replicas":intg("1..=10000",minimum=1,maximum=10000),
   "metric":ref("Metric"),"target_value":num("Target per replica of metric"),
   "metrics":{"type":"array","maxItems":8,"items":{"type":"object","additionalProperties":False,"required":["metric","target"],"properties":{"metric":ref("Metric"),"target":num("Target per replica")}}},
   "slo":{"type":"object","additionalProperties":False,"properties":{"ttft_p95_ms":num("TTFT p95 SLO, ms"),"itl_p95_ms":num("Inter-token latency p95 SLO, ms")}},
   "behavior":{"type":"object","additionalProperties":False,"description":"HPA's behavior block, as it is","properties":{"scaleUp":rules,"scaleDown":rules}},
   "predictive":{"type":"object","additionalProperties":False,"properties":{"mode":{"type":"string","enum":["off","forecast_only","on"],"default":"on"},"quantile":num("Interval quantile used as headroom, 0.5..=0.99",default=0.9),"horizon_secs":intg("Default: cold_start_secs")}},
   "panic":{"type":"object","additionalProperties":False,"properties":{"threshold":num("Observed/target ratio that starts panic mode; 0 = off",default=2.0),"window_secs":intg("Seconds without a burst before panic ends",default=60)}},
   "scale_to_zero_idle_secs":intg("With min_replicas 0: seconds without demand before scaling to zero (60..=604800)"),
   "tolerance":num("HPA tolerance",default=0.1),
   "cold_start_secs":intg("Seconds a new replica needs before serving",default=120),
   "dry_run":{"type":"boolean","default":False},
   "mode":{"type":"string","enum":["active","shadow"],"default":"active","description":"shadow: decided every tick on live data beside the active policy, recorded, never acted on; priced by /shadow-report"},
   "rebatch":{"type":"object","additionalProperties":False,"required":["min_batch_size","max_batch_size","itl_slo_ms"],"properties":{
      "min_batch_size":intg("",minimum=1),"max_batch_size":intg("",maximum=4096),"max_queue_delay_us":intg("",default=2000),"itl_slo_ms":num("ITL p95 the batch size must keep")}},
   "capacity":{"type":"object","additionalProperties":False,"description":"Capacity sizing on the demand estimated from served work and queue growth: the tail of recent demand, the forecast's quantile over the cold start and the backlog to drain. On by default for a policy without metric targets.","properties":{
      "queue_delay_slo_secs":num("Queueing-delay budget, seconds (0..=3600)",default=2.0),
      "peak_window_secs":num("Window of recent demand whose tail the fleet is sized for, seconds",default=3600.0),
      "tail_quantile":num("Threshold quantile of the exponential tail fit (0..=1)",default=0.8),
      "return_period_secs":num("The recent peak is extrapolated over the window plus this period, seconds",default=1200.0),
      "min_tail_window_secs":num("A shorter history counts as this long in the extrapolation, seconds",default=1200.0),
      "margin":num("Relative headroom (0..=10)",default=0.03),
      "down_hysteresis":num("A scale-down must remove at least this fraction (0..=1)",default=0.05),
      "gpus_per_replica":num("GPUs per replica (0.01..=1024)",default=1.0)}}}},
 "ShadowReport":{"type":"object","description":"Counterfactual cost of each policy of a deployment over the last 24 h","properties":{
   "policy_id":{"type":"string","format":"uuid"},"deployment":{"type":"string"},"from":{"type":"string","format":"date-time"},"to":{"type":"string","format":"date-time"},
   "step_secs":{"type":"integer"},"steps":{"type":"integer"},"demand_steps_estimated":{"type":"integer"},"demand_steps_from_utilization":{"type":"integer"},
   "gpu_model":{"type":["string","null"]},"price_per_gpu_hour":{"type":"number"},"currency":{"type":"string"},"cold_start_secs":{"type":"number"},"queue_delay_slo_secs":{"type":"number"},
   "policies":{"type":"array","items":{"type":"object","properties":{
      "policy_id":{"type":"string","format":"uuid"},"name":{"type":"string"},"mode":{"type":"string","enum":["active","shadow"]},"decisions":{"type":"integer"},
      "gpu_hours":{"type":"number"},"cost":{"type":"number"},"slo_attainment":{"type":"number","minimum":0,"maximum":1},"actions_per_hour":{"type":"number"},
      "peak_replicas":{"type":"integer"},"gpu_hours_vs_active":{"type":["number","null"]}}}},
   "without_decisions":{"type":"array","items":{"type":"string"}}}},
 "StoredPolicy":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"version":{"type":"integer"},"created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time"},"spec":ref("PolicySpec"),"owner":{"type":["string","null"],"description":"The Kubernetes resource that owns it (`ScalingPolicy <namespace>/<name>`): read-only here"}}},
 "DecisionRecord":{"type":"object","description":"One decision: every proposal, the one that won and why, in words","properties":{
   "id":{"type":"integer"},"policy_id":{"type":"string"},"policy_version":{"type":"integer"},"decided_at":{"type":"string","format":"date-time"},
   "target":{"type":"string"},"current_replicas":{"type":"integer"},"desired_replicas":{"type":"integer"},"winner":{"type":"string"},"reason":{"type":"string"},
   "proposals":{"type":"array","items":{"type":"object","properties":{"source":{"type":"string"},"replicas":{"type":"integer"},"detail":{"type":"string"},"advisory":{"type":"boolean"}}}},
   "applied":{"type":"boolean"},"error":{"type":"string"},"dry_run":{"type":"boolean"}}},
 "Batch":{"type":"object","description":"See docs/protocol.md","required":["version","agent_id","seq","sent_at_ms","node"],"properties":{
   "version":{"type":"integer","const":1},"agent_id":{"type":"string"},"seq":{"type":"integer"},"sent_at_ms":{"type":"integer"},"node":{"type":"object"},
   "gpus":{"type":"array","items":{"type":"object"}},"serving":{"type":"array","items":{"type":"object"}},"command_results":{"type":"array","items":ref("CommandResult")},"probes":{"type":"array","items":{"type":"object"}}}},
 "Command":{"type":"object","required":["id","action"],"properties":{"id":{"type":"string"},"action":{"type":"object","required":["kind"],"properties":{"kind":{"type":"string","enum":["rebatch","set_replicas","probe"]}}}}},
 "BatchAck":{"type":"object","properties":{"seq":{"type":"integer"},"duplicate":{"type":"boolean"},"commands":{"type":"array","items":ref("Command")}}},
 "CommandPoll":{"type":"object","properties":{"commands":{"type":"array","items":ref("Command")}}},
 "CommandResult":{"type":"object","required":["id","ok","message"],"properties":{"id":{"type":"string"},"ok":{"type":"boolean"},"message":{"type":"string"}}},
 "CommandAck":{"type":"object","additionalProperties":False,"required":["agent_id"],"properties":{"agent_id":{"type":"string"},"received":{"type":"array","items":{"type":"string"}},"results":{"type":"array","items":ref("CommandResult")}}},
 "CommandRecord":{"type":"object","properties":{k:{"type":"string"} for k in ["id","node_id","created_at","delivered_at","acked_at","completed_at","result"]}|{"action":{"type":"object"},"ok":{"type":"boolean"},"decision_id":{"type":"integer"}}},
 "IdleCapacity":{"type":"object","properties":{"computed_at":{"type":"string","format":"date-time"},"window_start":{"type":"string","format":"date-time"},"window_end":{"type":"string","format":"date-time"},"gpus_observed":{"type":"integer"},"idle_gpu_equivalent":{"type":"number","description":"GPUs idle on average: the sum of each GPU's idle share of the window"},"idle_share":{"type":"number"},"gpu_hours_per_week":{"type":"number"},"money_per_week":{"type":"number"},"currency":{"type":"string"},"by_model":{"type":"object","additionalProperties":{"type":"object","properties":{"gpus":{"type":"integer"},"idle_gpu_equivalent":{"type":"number"},"price_per_gpu_hour":{"type":"number"}}}}}},
 "WorkloadProfile":{"type":"object","description":"Fractions in [0, 1]","properties":{k:{"type":"number"} for k in ["mean_util","p95_util","mean_mem_frac","mean_power_frac","util_std","sm_active_mean"]}},
 "NodeGroups":{"type":"object","properties":{
    "computed_at":{"type":["string","null"],"format":"date-time","description":"When the leader's refresher last grouped the nodes (null: never)"},
    "silhouette":{"type":"number","description":"Mean silhouette of the grouping (0 with one group)"},
    "groups":{"type":"array","items":{"type":"object","properties":{"cluster":{"type":"integer","description":"Ordered by mean utilisation, 0 = least busy"},"label":{"type":"string","description":"The centroid in words, e.g. 'idle: util ~2%, memory 3%, power 15% [4 GPUs]'"},"kind":{"type":"string","enum":["idle","memory-only","light","busy","bursty","saturated"]},"centroid":ref("WorkloadProfile"),"nodes":{"type":"array","items":{"type":"string"}}}}},
    "nodes":{"type":"array","items":{"type":"object","properties":{"node_id":{"type":"string"},"cluster":{"type":"integer"},"label":{"type":"string"},"kind":{"type":"string"},"gpus":{"type":"integer"},"features":ref("WorkloadProfile"),"centroid":ref("WorkloadProfile"),"silhouette":{"type":"number"},"computed_at":{"type":"string","format":"date-time"}}}}}},
 "Opportunity":{"type":"object","description":"Stable identity (key): a persisting opportunity is updated, a vanished one closed","properties":{
   "id":{"type":"integer"},"key":{"type":"string"},"kind":{"type":"string"},"status":{"type":"string"},"target":{"type":"object"},"evidence":{"type":"object"},
   "gpu_hours_per_week":{"type":"number"},"money_per_week":{"type":"number"},"confidence":{"type":"number"},"expected_value":{"type":"number"},"action":{"type":"object"},
   "first_seen":{"type":"string","format":"date-time"},"last_seen":{"type":"string","format":"date-time"}}},
 "AlertRuleSpec":{"type":"object","required":["name","metric","op","threshold"],"properties":{
   "name":{"type":"string"},"metric":{"type":"string","enum":["util_pct","mem_used_bytes","power_w","temp_c","sm_clock_mhz","queue_depth","running","kv_cache_pct","ttft_p95_s","itl_p95_s","requests_per_s","generation_tokens_per_s","batch_size_mean"]},
   "op":{"type":"string","enum":[">",">=","<","<="]},"threshold":{"type":"number"},"for_secs":{"type":"number","description":"Pending this long before firing"},
   "severity":{"type":"string","enum":["info","warning","error","critical"]},"scope":{"type":"object","properties":{"deployment":{"type":"string"},"node":{"type":"string"}}},
   "aggregate":{"type":"string","enum":["max","min","avg"],"description":"Over a deployment's replicas"},"labels":{"type":"object","additionalProperties":{"type":"string"}},"enabled":{"type":"boolean"}}},
 "AlertRule":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"spec":ref("AlertRuleSpec")}},
 "SilenceSpec":{"type":"object","required":["matchers"],"properties":{
   "matchers":{"type":"array","items":{"type":"object","required":["label","value"],"properties":{"label":{"type":"string"},"value":{"type":"string"},"op":{"type":"string","enum":["=","!=","=~"],"description":"=~ is a * glob"}}}},
   "comment":{"type":"string"},"created_by":{"type":"string"},"starts_at":{"type":"string","format":"date-time"},"ends_at":{"type":"string","format":"date-time"},"duration_secs":{"type":"number"}}},
 "EnrollmentToken":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"note":{"type":"string"},"created_at":{"type":"string","format":"date-time"},"expires_at":{"type":"string","format":"date-time"},"max_uses":{"type":"integer"},"uses":{"type":"integer"},"revoked_at":{"type":["string","null"],"format":"date-time"},"deployments":{"type":"array","items":{"type":"string"}}}},
 "Enrollment":{"type":"object","properties":{"node_id":{"type":"string"},"enrolled_at":{"type":"string","format":"date-time"},"revoked_at":{"type":["string","null"],"format":"date-time"},"deployments":{"type":"array","items":{"type":"string"}},"reenroll_pending":{"type":"boolean"}}},
 "EnrollmentEvent":{"type":"object","properties":{"at":{"type":"string","format":"date-time"},"node_id":{"type":["string","null"]},"token_id":{"type":["string","null"],"format":"uuid"},"kind":{"type":"string","enum":["enrolled","re-enrolled","re-enroll-granted","credential-revoked","token-revoked","deployments-set","refused-existing-node"]},"actor":{"type":"string"},"detail":{"type":"string"}}},
 "ProbeRecord":{"type":"object","properties":{"gpu_index":{"type":"integer"},"ts":{"type":"string","format":"date-time"},"uuid":{"type":"string"},"bandwidth_gb_s":{"type":"number"},"error":{"type":"string"}}},
}
doc={"openapi":"3.1.0","info":{"title":"fleetpilot","version":"1","description":"Observability and autoscaling control plane for GPU model-serving fleets. Bad input is a 400 with {error, field}."},
 "servers":[{"url":"/"}],"paths":paths,
 "components":{"schemas":schemas,"securitySchemes":{"api":{"type":"http","scheme":"bearer","description":"The API token (api_token)"},"agent":{"type":"http","scheme":"bearer","description":"An enrolled node's credential (or the shared agent token where agent_token_can_write trusts it)"}}}}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "openapi.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"{len(paths)} paths -> {os.path.normpath(out)}")
