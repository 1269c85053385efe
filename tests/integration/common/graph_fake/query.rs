//! OData query options on collections: the `$filter` forms the bridge uses, `$expand` of
//! navigation properties, `$orderby` and `$top`.

use serde_json::{Value, json};

use super::{
    http::{Ctx, Reply, graph_error},
    state::Shared,
    validation::record_violation,
};

/// Case-insensitive lookup of a top-level key.
pub(super) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Reads a quoted OData literal after `marker` (`''` is an escaped quote).
pub(super) fn quoted_after(s: &str, marker: &str) -> Option<String> {
    let i = s.find(marker)? + marker.len();
    let rest = &s[i..];
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                out.push('\'');
                chars.next();
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

pub(super) enum Filter {
    All,
    ExtProp {
        id: String,
        value: String,
    },
    DisplayName(String),
    /// `clause and clause …` of the simple forms the action searches use.
    Clauses(Vec<Clause>),
    /// `… or …` of such conjunctions (e.g. several `internetMessageId eq '…'`).
    AnyOf(Vec<Vec<Clause>>),
}

/// One simple `$filter` clause: `path eq 'text'|true|false`, `path ge|lt 'text'`
/// (string comparison, as Graph compares `start/dateTime`), `contains(path,'text')`
/// (case-insensitive).
pub(super) enum Clause {
    Eq(String, Value),
    Ge(String, String),
    Lt(String, String),
    Contains(String, String),
}

fn at_path<'a>(item: &'a Value, path: &str) -> &'a Value {
    path.split('/').fold(item, |v, k| {
        v.as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
            .unwrap_or(&Value::Null)
    })
}

/// Splits `s` at every `sep` outside single-quoted literals (so a quoted value may
/// contain ` and ` or ` or `).
fn split_outside_quotes<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut i) = (0, false, 0);
    let bytes = s.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && s[i..].starts_with(sep) {
            parts.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

fn parse_clauses(f: &str) -> Option<Vec<Clause>> {
    let mut out = Vec::new();
    for part in split_outside_quotes(f, " and ") {
        let part = part.trim();
        if let Some(inner) = part
            .strip_prefix("contains(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (path, lit) = inner.split_once(',')?;
            let text = quoted_after(lit.trim(), "'")?;
            out.push(Clause::Contains(path.trim().to_string(), text));
            continue;
        }
        let mut words = part.splitn(3, ' ');
        let (path, op, lit) = (words.next()?, words.next()?, words.next()?.trim());
        let value = match lit {
            "true" => json!(true),
            "false" => json!(false),
            _ => json!(quoted_after(lit, "'")?),
        };
        out.push(match (op, value) {
            ("eq", v) => Clause::Eq(path.to_string(), v),
            ("ge", Value::String(v)) => Clause::Ge(path.to_string(), v),
            ("lt", Value::String(v)) => Clause::Lt(path.to_string(), v),
            _ => return None,
        });
    }
    Some(out)
}

pub(super) fn parse_filter(ctx: &Ctx, shared: &Shared) -> Result<Filter, Reply> {
    let Some(f) = ctx.q("$filter") else {
        return Ok(Filter::All);
    };
    let lower = f.to_lowercase();
    if lower.starts_with("singlevalueextendedproperties/any(") {
        let id = quoted_after(f, "/id eq '");
        let value = quoted_after(f, "/value eq '");
        if let (Some(id), Some(value)) = (id, value) {
            return Ok(Filter::ExtProp { id, value });
        }
    }
    if lower.starts_with("displayname eq '")
        && let Some(n) = quoted_after(f, "eq '")
    {
        return Ok(Filter::DisplayName(n));
    }
    let alternatives = split_outside_quotes(f, " or ");
    if alternatives.len() > 1
        && let Some(any) = alternatives
            .iter()
            .map(|a| parse_clauses(a))
            .collect::<Option<Vec<_>>>()
    {
        return Ok(Filter::AnyOf(any));
    }
    if let Some(clauses) = parse_clauses(f) {
        return Ok(Filter::Clauses(clauses));
    }
    record_violation(
        shared,
        ctx,
        "$filter",
        vec![format!("$filter not supported by the fake: {f}")],
    );
    Err(graph_error(
        ctx,
        400,
        "BadRequest",
        "Invalid filter clause (fake supports singleValueExtendedProperties/Any and displayName eq).",
    ))
}

pub(super) fn matches(filter: &Filter, item: &Value) -> bool {
    match filter {
        Filter::All => true,
        Filter::ExtProp { id, value } => item["singleValueExtendedProperties"]
            .as_array()
            .is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id))
                        && p["value"] == value.as_str()
                })
            }),
        Filter::DisplayName(n) => item["displayName"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(n)),
        Filter::Clauses(cs) => all_hold(cs, item),
        Filter::AnyOf(alternatives) => alternatives.iter().any(|cs| all_hold(cs, item)),
    }
}

fn all_hold(cs: &[Clause], item: &Value) -> bool {
    cs.iter().all(|c| match c {
        Clause::Eq(p, v) => match (at_path(item, p), v) {
            (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        },
        Clause::Ge(p, v) => at_path(item, p).as_str().is_some_and(|a| a >= v.as_str()),
        Clause::Lt(p, v) => at_path(item, p).as_str().is_some_and(|a| a < v.as_str()),
        Clause::Contains(p, v) => at_path(item, p)
            .as_str()
            .is_some_and(|a| a.to_lowercase().contains(&v.to_lowercase())),
    })
}

/// Shapes an item for output: navigation properties only when `$expand`ed.
pub(super) fn present(ctx: &Ctx, item: &Value) -> Value {
    let mut out = item.clone();
    let expand = ctx.q("$expand").unwrap_or("").to_string();
    if let Some(obj) = out.as_object_mut() {
        obj.retain(|k, _| !k.starts_with("x-fake-"));
        if !expand
            .to_lowercase()
            .contains("singlevalueextendedproperties")
        {
            obj.remove("singleValueExtendedProperties");
        } else if let Some(id) = quoted_after(&expand, "id eq '")
            && let Some(Value::Array(ps)) = obj.get_mut("singleValueExtendedProperties")
        {
            ps.retain(|p| {
                p["id"]
                    .as_str()
                    .is_some_and(|i| i.eq_ignore_ascii_case(&id))
            });
        }
        if !expand.to_lowercase().contains("linkedresources") {
            obj.remove("linkedResources");
        }
        if !expand.to_lowercase().contains("attachments") {
            obj.remove("attachments");
        }
    }
    out
}

pub(super) fn list_reply(ctx: &Ctx, items: Vec<Value>) -> Reply {
    let mut values: Vec<Value> = items.iter().map(|i| present(ctx, i)).collect();
    if let Some(order) = ctx.q("$orderby") {
        let mut words = order.split_whitespace();
        let path = words.next().unwrap_or_default().to_string();
        let desc = words.next().is_some_and(|w| w.eq_ignore_ascii_case("desc"));
        values.sort_by(|a, b| {
            let (a, b) = (at_path(a, &path).to_string(), at_path(b, &path).to_string());
            if desc { b.cmp(&a) } else { a.cmp(&b) }
        });
    }
    if let Some(top) = ctx.q("$top").and_then(|t| t.parse::<usize>().ok()) {
        values.truncate(top);
    }
    Reply::json(200, json!({ "value": values }))
}
