//! Every JSON request body is checked against the schema of its operation in the Graph
//! oracle (loaded and compiled once per process) and against the rules the schema cannot
//! express; each mismatch is recorded as a [`Violation`] that tests assert away.

use std::{collections::HashMap, sync::OnceLock};

use serde_json::{Value, json};

use super::{
    GraphFake, ORACLE_PATH,
    http::{Ctx, Reply, graph_error},
    state::Shared,
};

/// Largest request body Graph accepts ("4 MB", read as the smaller 4,000,000 bytes).
pub(super) const REQUEST_BODY_MAX: usize = 4_000_000;

/// A request body (or request) that did not match Graph's schema or rules.
#[derive(Debug, Clone)]
pub struct Violation {
    pub method: String,
    pub path: String,
    /// Which schema/rule was applied (e.g. `microsoft.graph.message`).
    pub schema: String,
    /// Validator messages, `"<instance path>: <message>"`.
    pub messages: Vec<String>,
    pub body: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} against {}: {}",
            self.method,
            self.path,
            self.schema,
            self.messages.join("; ")
        )
    }
}

impl GraphFake {
    /// Bodies and requests that broke Graph's schema or rules.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.state().violations.clone()
    }

    /// Panics listing the violations, if any.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "Graph fake recorded {} violation(s):\n{}",
            v.len(),
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

pub(super) fn record_violation(shared: &Shared, ctx: &Ctx, schema: &str, messages: Vec<String>) {
    shared.state().violations.push(Violation {
        method: ctx.method.clone(),
        path: ctx.path.clone(),
        schema: schema.into(),
        messages,
        body: String::from_utf8_lossy(&ctx.body)
            .chars()
            .take(4000)
            .collect(),
    });
}

/// Parses and validates a JSON body; `Err` is the 4xx reply (already recorded).
pub(super) fn json_body(
    ctx: &Ctx,
    shared: &Shared,
    schema: &str,
    kind: &str,
    creating: bool,
) -> Result<Value, Reply> {
    if ctx.body.is_empty() {
        record_violation(shared, ctx, schema, vec!["empty request body".into()]);
        return Err(graph_error(
            ctx,
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    if ctx.body.len() > REQUEST_BODY_MAX {
        let m = format!(
            "request body of {} bytes; Graph takes at most 4 MB (https://learn.microsoft.com/graph/outlook-large-attachments)",
            ctx.body.len()
        );
        record_violation(shared, ctx, schema, vec![m.clone()]);
        return Err(graph_error(ctx, 413, "ErrorRequestEntityTooLarge", &m));
    }
    if !ctx
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        record_violation(
            shared,
            ctx,
            schema,
            vec![format!(
                "Content-Type {:?} is not application/json",
                ctx.header("content-type")
            )],
        );
        return Err(graph_error(
            ctx,
            415,
            "UnsupportedMediaType",
            "Content-Type must be application/json.",
        ));
    }
    let body: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => {
            record_violation(shared, ctx, schema, vec![format!("not JSON: {e}")]);
            return Err(graph_error(
                ctx,
                400,
                "BadRequest",
                "Unable to read JSON request payload.",
            ));
        }
    };
    let (checked, mut errs) = if let Some(action) = schema.strip_prefix("action:") {
        normalise_action(action, &body)
    } else {
        (body.clone(), vec![])
    };
    errs.extend(schema_errors(schema, &checked));
    errs.extend(rule_errors(kind, &body, creating));
    if errs.is_empty() {
        Ok(body)
    } else {
        record_violation(shared, ctx, schema, errs.clone());
        Err(graph_error(
            ctx,
            400,
            "BadRequest",
            &format!(
                "Invalid request body (fake schema check): {}",
                errs.join("; ")
            ),
        ))
    }
}

pub(super) struct Validators {
    by_name: HashMap<String, jsonschema::Validator>,
    /// Action parameter names in CSDL casing, per action (`sendMail` -> Message, …).
    action_params: HashMap<&'static str, Vec<String>>,
}

/// Component schemas that request bodies are validated against.
const SCHEMAS: &[&str] = &[
    "microsoft.graph.message",
    "microsoft.graph.mailFolder",
    "microsoft.graph.event",
    "microsoft.graph.contact",
    "microsoft.graph.todoTask",
    "microsoft.graph.todoTaskList",
    "microsoft.graph.linkedResource",
    "microsoft.graph.fileAttachment",
    "microsoft.graph.itemAttachment",
    "microsoft.graph.referenceAttachment",
    "microsoft.graph.attachmentItem",
    "microsoft.graph.subscription",
];

/// Actions: (key, oracle path) whose inline request schema is compiled as `action:<key>`.
const ACTIONS: &[(&str, &str)] = &[
    ("sendMail", "/users/{user-id}/sendMail"),
    ("move", "/users/{user-id}/messages/{message-id}/move"),
    (
        "createUploadSession",
        "/users/{user-id}/messages/{message-id}/attachments/createUploadSession",
    ),
];

fn strip_odata_type_required(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(req)) = map.get_mut("required") {
                req.retain(|r| r != "@odata.type");
            }
            for (_, child) in map.iter_mut() {
                strip_odata_type_required(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_odata_type_required),
        _ => {}
    }
}

/// The oracle as JSON, with `@odata.type` stripped from every `required` (tests/oracles/README.md, rule 1).
pub fn oracle_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(ORACLE_PATH).expect("read the Graph oracle");
        let mut doc: Value = serde_norway::from_str(&text).expect("oracle YAML parses");
        strip_odata_type_required(&mut doc);
        doc
    })
}

/// A validator whose root is the whole oracle document plus `schema`'s keywords, so that
/// `#/components/schemas/…` references resolve inside the document.
fn compile(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = doc.clone();
    let obj = root.as_object_mut().expect("document is an object");
    for (k, v) in schema.as_object().expect("schema is an object") {
        obj.insert(k.clone(), v.clone());
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("oracle schema compiles: {e}"))
}

pub(super) fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let doc = oracle_document();
        let mut by_name = HashMap::new();
        for name in SCHEMAS {
            assert!(
                doc["components"]["schemas"].get(*name).is_some(),
                "oracle lacks {name}"
            );
            let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
            by_name.insert(name.to_string(), compile(doc, &schema));
        }
        let mut action_params = HashMap::new();
        for (key, path) in ACTIONS {
            let schema = &doc["paths"][*path]["post"]["requestBody"]["content"]["application/json"]
                ["schema"];
            assert!(schema.is_object(), "oracle lacks the body of {path}");
            by_name.insert(format!("action:{key}"), compile(doc, schema));
            let params = schema["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            action_params.insert(*key, params);
        }
        Validators {
            by_name,
            action_params,
        }
    })
}

/// Validates `body` against a compiled schema; returns the messages.
pub fn schema_errors(name: &str, body: &Value) -> Vec<String> {
    let v = validators()
        .by_name
        .get(name)
        .unwrap_or_else(|| panic!("no validator {name}"));
    v.iter_errors(body)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

/// Renames an action body's top-level keys to the CSDL casing (Graph matches parameter
/// names case-insensitively, tests/oracles/README.md, rule 3); unknown names are reported.
fn normalise_action(action: &str, body: &Value) -> (Value, Vec<String>) {
    let params = &validators().action_params[action];
    let mut out = serde_json::Map::new();
    let mut errors = vec![];
    if let Some(obj) = body.as_object() {
        for (k, v) in obj {
            match params.iter().find(|p| p.eq_ignore_ascii_case(k)) {
                Some(p) => {
                    out.insert(p.clone(), v.clone());
                }
                None => errors.push(format!("/{k}: unknown parameter of {action}")),
            }
        }
    } else {
        errors.push(format!("body of {action} is not an object"));
    }
    (Value::Object(out), errors)
}

/// Separate required-field checks (tests/oracles/README.md, rule 4).
fn rule_errors(kind: &str, body: &Value, creating: bool) -> Vec<String> {
    let mut errs = vec![];
    match kind {
        "event" => {
            for key in ["start", "end"] {
                match body.get(key) {
                    None if creating => errs.push(format!("/{key}: required on event creation")),
                    None => {}
                    Some(v) => {
                        for f in ["dateTime", "timeZone"] {
                            if !v.get(f).is_some_and(Value::is_string) {
                                errs.push(format!("/{key}/{f}: required string"));
                            }
                        }
                    }
                }
            }
        }
        "subscription" if creating => {
            for f in [
                "changeType",
                "notificationUrl",
                "resource",
                "expirationDateTime",
            ] {
                if body.get(f).is_none() {
                    errs.push(format!("/{f}: required"));
                }
            }
        }
        "todoTask" if creating && !body.get("title").is_some_and(Value::is_string) => {
            errs.push("/title: required on task creation".into());
        }
        _ => {}
    }
    errs
}
