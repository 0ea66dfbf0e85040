//! The OpenAPI 3.1 document of the API, generated from the request/response types (`utoipa::ToSchema`) and
//! the handlers' `#[utoipa::path]` annotations; served at `GET /api/v1/openapi.json` and checked in as
//! `docs/openapi.json` (a test fails when they differ; `FLEETPILOT_WRITE_OPENAPI=1` rewrites it).
//!
//! The same document answers undeclared methods: a request whose path is declared but whose method is not
//! gets 405 with `Allow` listing the declared ones (see [`allowed_methods`]).

use std::sync::OnceLock;

use actix_web::dev::ResourceDef;
use serde_json::{Value, json};
use utoipa::OpenApi as _;

use crate::error::ApiError;

use super::ApiDoc;

/// What the derive cannot say: constraints between fields, and on map keys. Each mirrors a check of the
/// server's validation, so a request the document accepts is one the server accepts.
fn refine(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    // PolicySpec: `metric` and `target_value` come together; `min_replicas` 0 needs
    // `scale_to_zero_idle_secs` and only it allows one.
    let policy = &mut schemas["PolicySpec"];
    let present = |field: &str, t: &str| json!({ "required": [field], "properties": { field: { "type": t } } });
    policy["allOf"] = json!([
        { "if": { "properties": { "min_replicas": { "const": 0 } }, "required": ["min_replicas"] },
          "then": present("scale_to_zero_idle_secs", "integer"),
          "else": { "properties": { "scale_to_zero_idle_secs": { "type": "null" } } } },
        { "if": present("metric", "string"), "then": present("target_value", "number") },
        { "if": present("target_value", "number"), "then": present("metric", "string") }
    ]);
    // A metric's target is at most 100 for percentages and 1e6 queued requests (1e9 tokens/s otherwise).
    let capped = |metric_key: &str, value_key: &str| {
        json!([
            { "if": { "required": [metric_key], "properties": { metric_key: { "enum": ["gpu_utilization", "kv_cache_pct"] } } },
              "then": { "properties": { value_key: { "maximum": 100 } } } },
            { "if": { "required": [metric_key], "properties": { metric_key: { "const": "queue_depth_per_replica" } } },
              "then": { "properties": { value_key: { "maximum": 1_000_000 } } } }
        ])
    };
    if let (Some(all), Value::Array(more)) =
        (schemas["PolicySpec"]["allOf"].as_array_mut(), capped("metric", "target_value"))
    {
        all.extend(more);
    }
    schemas["MetricTarget"]["allOf"] = capped("metric", "target");
    // Target: Kubernetes kinds need a namespace, agent groups the deployment whose metrics drive them.
    let target = &mut schemas["Target"];
    target["allOf"] = json!([
        { "if": { "properties": { "kind": { "enum": ["deployment", "statefulset"] } } },
          "then": { "required": ["namespace"], "properties": { "namespace": { "type": "string" } } } },
        { "if": { "properties": { "kind": { "const": "agent_group" } } },
          "then": { "required": ["deployment"], "properties": { "deployment": { "type": "string" } } } }
    ]);
    // RuleSpec labels: names of letters, digits and `_`, none of the built-in ones.
    schemas["RuleSpec"]["properties"]["labels"]["propertyNames"] = json!({
        "pattern": "^[A-Za-z0-9_]{1,64}$",
        "not": { "enum": ["alertname", "severity", "group", "node", "gpu", "deployment", "rule_id"] }
    });
    schemas["RuleSpec"]["properties"]["labels"]["maxProperties"] = json!(20);
    schemas["RuleSpec"]["properties"]["labels"]["additionalProperties"] = json!({ "type": "string", "maxLength": 200 });
    // An empty body takes every default.
    doc["paths"]["/api/v1/enrollment-tokens"]["post"]["requestBody"]["required"] = json!(false);
    let schemas = &mut doc["components"]["schemas"];
    // Stored resources: the spec's fields and their own in one object (serde flattens the spec; an
    // `allOf` of two closed objects would admit nothing).
    for (stored, spec) in [("StoredPolicy", "PolicySpec"), ("StoredRule", "RuleSpec")] {
        let mut merged = schemas[spec].clone();
        let own = schemas[stored]["allOf"][1].clone();
        if let (Some(props), Some(extra)) = (merged["properties"].as_object_mut(), own["properties"].as_object()) {
            props.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let (Some(req), Some(extra)) = (merged["required"].as_array_mut(), own["required"].as_array()) {
            req.extend(extra.iter().cloned());
        }
        merged["description"] = schemas[stored]["description"].clone();
        schemas[stored] = merged;
    }
    // WebhookSpec: a URL the delivery can use.
    schemas["WebhookSpec"]["properties"]["url"]["format"] = json!("uri");
    // SilenceSpec: an end (`ends_at`) or a length (`duration_secs`), not both; one matcher selects something.
    let silence = &mut schemas["SilenceSpec"];
    silence["oneOf"] = json!([
        { "required": ["ends_at"], "properties": { "ends_at": { "type": "string" } } },
        { "required": ["duration_secs"], "properties": { "duration_secs": { "type": "number" } } }
    ]);
    silence["properties"]["matchers"]["contains"] = json!({
        "type": "object",
        "required": ["value"],
        "properties": {
            "op": { "enum": ["=", "=~"] },
            "value": { "type": "string", "pattern": "[^*]" }
        }
    });
}

/// Every operation authorised by an API token may answer 403: a named token's scope (read < operate < admin,
/// `auth::required_scope`) may not cover it.
fn scope_refusals(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else { continue };
        for op in ops.values_mut() {
            let api = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("api").is_some()));
            if !api || op["responses"].get("403").is_some() {
                continue;
            }
            op["responses"]["403"] = json!({
                "description": "The token's scope does not cover this request (read < operate < admin); `field` is `authorization`",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
            });
        }
    }
}

/// Text without NUL, which PostgreSQL cannot store (the server refuses it in bodies, paths and queries).
const NO_NUL: &str = r"^[^\x00]*$";

/// Strings the derive left unconstrained (no pattern, enum or format) are declared NUL-free.
fn nul_free_strings(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_string = match o.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string && !["pattern", "enum", "format", "const"].iter().any(|k| o.contains_key(*k)) {
                o.insert("pattern".into(), Value::from(NO_NUL));
            }
            for child in o.values_mut() {
                nul_free_strings(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(nul_free_strings),
        _ => {}
    }
}

/// Integers get the range of their Rust type where the derive left it open (`format` only), so a generated
/// client or test never sends a number the server cannot hold.
fn integer_ranges(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_int = match o.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if is_int {
                let (lo, hi): (i128, i128) = match o.get("format").and_then(Value::as_str) {
                    Some("int8") => (i8::MIN.into(), i8::MAX.into()),
                    Some("int16") => (i16::MIN.into(), i16::MAX.into()),
                    Some("int32") => (i32::MIN.into(), i32::MAX.into()),
                    // utoipa spells its unsigned formats `u-int32` and so on.
                    Some("uint8" | "u-int8") => (0, u8::MAX.into()),
                    Some("uint16" | "u-int16") => (0, u16::MAX.into()),
                    Some("uint32" | "u-int32") => (0, u32::MAX.into()),
                    Some("uint64" | "u-int64") => (0, u64::MAX.into()),
                    _ => (i64::MIN.into(), i64::MAX.into()),
                };
                let bound = |n: i128| -> Value {
                    i64::try_from(n).map(Value::from).unwrap_or_else(|_| Value::from(u64::try_from(n).unwrap_or(0)))
                };
                if !o.contains_key("minimum") && !o.contains_key("exclusiveMinimum") {
                    o.insert("minimum".into(), bound(lo));
                }
                if !o.contains_key("maximum") && !o.contains_key("exclusiveMaximum") {
                    o.insert("maximum".into(), bound(hi));
                }
            }
            for child in o.values_mut() {
                integer_ranges(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integer_ranges),
        _ => {}
    }
}

/// The document as served, pretty-printed with a final newline (as checked in).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        refine(&mut doc);
        scope_refusals(&mut doc);
        integer_ranges(&mut doc);
        // Not the error body: it quotes what was refused, NUL included.
        let error = doc["components"]["schemas"]["Error"].take();
        nul_free_strings(&mut doc["components"]);
        doc["components"]["schemas"]["Error"] = error;
        nul_free_strings(&mut doc["paths"]);
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    })
}

/// The document as a JSON value (for [`parse_body`]).
fn document_value() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(document()).unwrap_or(Value::Null))
}

/// Parses an operator's JSON body into `T` the way its schema in the document reads it: an object where the
/// schema says object (serde would take an array for a struct), and an integral number such as `3.0` as the
/// integer it is where the schema says integer (JSON Schema counts it as one; serde would refuse it). Errors
/// name the field, as [`crate::error::parse_json`] does.
pub fn parse_body<T: serde::de::DeserializeOwned + utoipa::ToSchema>(body: &[u8]) -> Result<T, ApiError> {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        // Malformed JSON: the same error as the plain parser gives.
        return crate::error::parse_json(body);
    };
    if let Some(field) = crate::error::nul_path(&v, String::new()) {
        let field = if field.is_empty() { "body".to_string() } else { field };
        return Err(ApiError::field(field, "must not contain NUL characters"));
    }
    let doc = document_value();
    let schema = &doc["components"]["schemas"][T::name().as_ref()];
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    conform(&mut v, schema, doc, "")?;
    serde_path_to_error::deserialize::<_, T>(v).map_err(crate::error::serde_error)
}

fn has_type(schema: &Value, t: &str) -> bool {
    match &schema["type"] {
        Value::String(s) => s == t,
        Value::Array(ts) => ts.iter().any(|x| x == t),
        _ => false,
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_string() } else { format!("{at}.{key}") }
}

/// See [`parse_body`]: walks `v` along `schema`, refusing arrays given for objects and turning integral
/// numbers into integers where the schema asks for one.
fn conform(v: &mut Value, schema: &Value, doc: &Value, at: &str) -> Result<(), ApiError> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc.pointer(r.trim_start_matches('#')).unwrap_or(&Value::Null);
        return conform(v, target, doc, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema[key].as_array() {
            if v.is_null() {
                return Ok(());
            }
            let typed: Vec<&Value> = branches.iter().filter(|b| b["type"] != "null").collect();
            if let [only] = typed.as_slice() {
                conform(v, only, doc, at)?;
            }
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        for p in parts {
            conform(v, p, doc, at)?;
        }
    }
    match v {
        Value::Array(items) => {
            if has_type(schema, "object") && !has_type(schema, "array") {
                return Err(ApiError::field(at, "must be an object"));
            }
            if schema.get("items").is_some() {
                for (i, item) in items.iter_mut().enumerate() {
                    conform(item, &schema["items"], doc, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if let Some(p) = schema["properties"].get(k.as_str()) {
                    conform(child, p, doc, &join(at, k))?;
                }
            }
        }
        Value::Number(n) if n.is_f64() && has_type(schema, "integer") => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if (i64::MIN as f64..i64::MAX as f64).contains(&f) {
                    *v = Value::from(f as i64);
                } else if (0.0..u64::MAX as f64).contains(&f) {
                    *v = Value::from(f as u64);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Declared paths and their methods (upper case), the most specific paths first.
fn method_table() -> &'static [(ResourceDef, Vec<String>)] {
    static TABLE: OnceLock<Vec<(ResourceDef, Vec<String>)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let doc: Value = serde_json::from_str(document()).unwrap_or(Value::Null);
        let Some(paths) = doc["paths"].as_object() else { return Vec::new() };
        let mut table: Vec<(ResourceDef, Vec<String>)> = paths
            .iter()
            .map(|(path, ops)| {
                let methods =
                    ops.as_object().map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect()).unwrap_or_default();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        // Literal paths first: `/api/v1/commands/ack` is matched before `/api/v1/commands/{id}`.
        table.sort_by_key(|(def, _)| def.pattern().map_or(0, |p| p.matches('{').count()));
        table
    })
}

/// Registers, ahead of the handlers, one resource per declared path that answers the methods the document
/// does not declare there with 405 and `Allow`. Literal paths come before templated ones so that, e.g.,
/// `GET /api/v1/commands/ack` (declared: POST) is a 405 rather than `GET /api/v1/commands/{id}` with id `ack`.
pub fn configure_method_not_allowed(cfg: &mut actix_web::web::ServiceConfig) {
    for (def, _) in method_table() {
        let Some(pattern) = def.pattern() else { continue };
        cfg.service(
            actix_web::web::resource(pattern)
                // What the most specific declared path that matches allows, not this one: POST
                // /api/v1/commands/ack also matches `/api/v1/commands/{id}` (GET only).
                .guard(actix_web::guard::fn_guard(|ctx| {
                    allowed_methods(ctx.head().uri.path())
                        .is_some_and(|m| !m.iter().any(|m| m.as_str() == ctx.head().method.as_str()))
                }))
                .to(|req: actix_web::HttpRequest| async move {
                    method_not_allowed(&req, allowed_methods(req.path()).unwrap_or_default())
                }),
        );
    }
}

/// 405 with `Allow` and the JSON error body.
pub fn method_not_allowed(req: &actix_web::HttpRequest, allowed: &[String]) -> actix_web::HttpResponse {
    use actix_web::ResponseError as _;
    let allow = allowed.join(", ");
    let e = crate::error::ApiError {
        status: actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        error: format!("{} is not allowed here; allowed: {allow}", req.method()),
        field: None,
        retry_after_secs: None,
    };
    let mut r = e.error_response();
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        r.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    r
}

/// The methods the document declares for `path`, or `None` when it declares no such path.
pub fn allowed_methods(path: &str) -> Option<&'static [String]> {
    method_table().iter().find(|(def, _)| def.is_match(path)).map(|(_, m)| m.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the generated document (run with `FLEETPILOT_WRITE_OPENAPI=1` to rewrite it
    /// after changing a route or an API type).
    #[test]
    fn the_openapi_document_in_docs_is_generated_from_the_types() {
        let text = document();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("FLEETPILOT_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is stale: run FLEETPILOT_WRITE_OPENAPI=1 cargo test -p fleetpilot openapi",
            path.display()
        );
        let doc: Value = serde_json::from_str(text).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn undeclared_methods_of_declared_paths_are_known() {
        let m = allowed_methods("/api/v1/policies/0b7d1c7e-0000-0000-0000-000000000000").unwrap();
        assert_eq!(m, ["DELETE", "GET", "PUT"]);
        assert!(allowed_methods("/api/v1/nope").is_none());
        assert_eq!(allowed_methods("/api/v1/gpus/n1/0/series").unwrap(), ["GET"]);
    }

    #[test]
    fn the_opportunity_kinds_of_the_document_are_the_detectors_kinds() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let params = doc["paths"]["/api/v1/opportunities"]["get"]["parameters"].as_array().unwrap();
        let kind = params.iter().find(|p| p["name"] == "kind").unwrap();
        let listed: Vec<&str> = kind["schema"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let expected: Vec<&str> = forecasting::opportunities::Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, expected);
    }
}
