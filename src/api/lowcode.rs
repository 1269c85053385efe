//! The low-code surface for Zapier and n8n: `/v1/me`, REST hooks, polling triggers,
//! dropdown options, and the admin views of the audit trail and dead letters.

use std::future::ready;

use actix_web::{HttpResponse, http::Method, web};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, JsonBody, RouteEntry, on};
use crate::{
    actions::Fields,
    api::auth::Authenticated,
    apikeys::Scope,
    config::Config,
    error::{ApiError, ErrorCode},
    hooks::{self, Hook, Viewer},
    triggers,
};

/// Adds the `/v1` routes (actions live in [`super::actions`]).
pub fn routes(t: &mut Vec<RouteEntry>) {
    t.push(RouteEntry {
        path: "/v1/me",
        methods: vec![on(Method::GET, me)],
    });
    t.push(RouteEntry {
        path: "/v1/hooks",
        methods: vec![on(Method::GET, list_hooks), on(Method::POST, create_hook)],
    });
    t.push(RouteEntry {
        path: "/v1/hooks/{id}",
        methods: vec![on(Method::GET, get_hook), on(Method::DELETE, delete_hook)],
    });
    t.push(RouteEntry {
        path: "/v1/triggers/{event}",
        methods: vec![on(Method::GET, poll_trigger)],
    });
    t.push(RouteEntry {
        path: "/v1/options/{kind}",
        methods: vec![on(Method::GET, options)],
    });
    t.push(RouteEntry {
        path: "/v1/audit",
        methods: vec![on(Method::GET, audit)],
    });
    t.push(RouteEntry {
        path: "/v1/deliveries",
        methods: vec![on(Method::GET, deliveries)],
    });
    t.push(RouteEntry {
        path: "/v1/deliveries/{job_id}/replay",
        methods: vec![on(Method::POST, replay_delivery)],
    });
}

/// Names of the configured sync routes (`routes[].name`), shown by `GET /v1/me`.
pub fn configured_route_names(config: &Config) -> Vec<String> {
    config.routes.iter().map(|r| r.name.clone()).collect()
}

async fn me(auth: Authenticated, state: web::Data<AppState>) -> HttpResponse {
    let p = &auth.0;
    HttpResponse::Ok().json(json!({
        "id": p.id,
        "name": p.name,
        "scopes": p.scopes,
        "routes": configured_route_names(&state.config),
    }))
}

fn hook_view(h: &Hook) -> Value {
    json!({
        "id": h.id, "target_url": h.target_url, "event": h.event,
        "created_at": h.created_at,
        "created_by": (!h.created_by.is_empty()).then_some(&h.created_by),
    })
}

/// Whose hooks the caller may see: `admin` every hook, a `triggers` key its own.
fn hook_viewer(auth: &Authenticated) -> Result<Viewer<'_>, ApiError> {
    if auth.0.scopes.contains(&Scope::Admin) {
        return Ok(Viewer::Admin);
    }
    Ok(Viewer::Key(&auth.require(Scope::Triggers)?.id))
}

async fn list_hooks(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let hooks = hooks::all_for(state.store.as_ref(), hook_viewer(&auth)?).await?;
    let view: Vec<Value> = hooks
        .iter()
        .filter(|h| h.status == hooks::HookStatus::Active)
        .map(hook_view)
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

async fn create_hook(
    auth: Authenticated,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Triggers)?;
    let input: Value = serde_json::from_slice(&body.0).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let mut f = Fields::new(&input);
    let target_url = f.req_str("target_url", 2048);
    let event = f.req_str("event", 128);
    if !event.is_empty() && !triggers::is_event(&event) {
        f.error(
            "event",
            format!(
                "unknown event; one of: {}",
                triggers::event_names().join(", ")
            ),
        );
    }
    f.finish().map_err(ApiError::invalid_fields)?;
    let url = state
        .hook_policy
        .validate(&target_url)
        .await
        .map_err(|why| ApiError::invalid_field("target_url", why))?;
    let hook = Hook::new(url.as_str(), &event, &caller.id, &caller.name);
    hooks::save(state.store.as_ref(), &hook).await?;
    tracing::info!(hook_id = %hook.id, event = %hook.event, key_id = %caller.id, "hook subscribed");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/hooks/{}", hook.id)))
        .json(json!({
            "id": hook.id, "target_url": hook.target_url, "event": hook.event,
            "secret": hook.secret, "created_at": hook.created_at,
        })))
}

/// One hook of the caller's (any hook for `admin`); another key's is a 404 like an
/// absent one, so that ids do not reveal which hooks exist.
async fn get_hook(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    match hooks::get_for(state.store.as_ref(), &id, hook_viewer(&auth)?).await? {
        Some(hook) => Ok(HttpResponse::Ok().json(hook_view(&hook))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no hook `{id}` for this API key"),
        )),
    }
}

async fn delete_hook(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    // 2xx even when already gone: Zapier's unsubscribe and n8n's delete() treat a 404
    // as a failure, and the wanted state (no such hook) holds either way. Another key's
    // hook gets the same answer and stays: to this caller it does not exist.
    let deleted = hooks::delete_for(state.store.as_ref(), &id, hook_viewer(&auth)?).await?;
    tracing::info!(hook_id = %id, deleted, key_id = %auth.0.id, "hook unsubscribed");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

fn limit(q: &LimitQuery, default: usize, max: usize) -> Result<usize, ApiError> {
    match &q.limit {
        None => Ok(default),
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_field(
                "limit",
                format!("must be an integer from 1 to {max}"),
            )),
        },
    }
}

async fn poll_trigger(
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Triggers)?;
    let event = path.into_inner();
    if !triggers::is_event(&event) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no trigger event `{event}`; valid events: {}",
                triggers::event_names().join(", ")
            ),
        )
        .with_details(json!({ "events": triggers::event_names() })));
    }
    let n = limit(&query, 100, 100)?;
    let items = triggers::recent(state.store.as_ref(), &event, n).await?;
    Ok(HttpResponse::Ok().json(items))
}

#[derive(Deserialize)]
struct OptionsQuery {
    mailbox: Option<String>,
}

/// What one dropdown handler answers: its `{id, label}` items.
type OptionItems<'a> = BoxFuture<'a, Result<Vec<Value>, ApiError>>;

/// Lists one kind of dropdown.
type OptionList = for<'a> fn(&'a AppState, &'a OptionsQuery) -> OptionItems<'a>;

/// Every dropdown `GET /v1/options/{kind}` serves, in the order a 404 names them.
const OPTION_LISTS: &[(&str, OptionList)] = &[
    ("mailboxes", mailbox_options),
    ("dingtalk-conversations", conversation_options),
    ("calendars", calendar_options),
    ("todo-lists", todo_list_options),
    ("mail-routes", mail_route_options),
    ("dingtalk-calendars", dingtalk_calendar_options),
];

fn item(id: &str, label: &str) -> Value {
    json!({ "id": id, "label": label })
}

/// Adds `(id, label)` unless an item with that id is there already.
fn push_unique(items: &mut Vec<Value>, id: &str, label: &str) {
    if !id.is_empty() && !items.iter().any(|i| i["id"].as_str() == Some(id)) {
        items.push(item(id, label));
    }
}

fn configured(entries: &[crate::config::OptionItem]) -> Vec<Value> {
    let mut items = Vec::new();
    for e in entries {
        push_unique(&mut items, &e.id, &e.label);
    }
    items
}

/// Dropdown contents, by the handler of the `{kind}` in [`OPTION_LISTS`]; an unknown
/// kind is 404 naming the valid ones.
async fn options(
    _auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<OptionsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some((_, list)) = OPTION_LISTS.iter().find(|(kind, _)| *kind == path.as_str()) else {
        let kinds: Vec<&str> = OPTION_LISTS.iter().map(|(kind, _)| *kind).collect();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no option list `{path}`; valid: {}", kinds.join(", ")),
        ));
    };
    let items = list(&state, &query).await?;
    Ok(HttpResponse::Ok().json(items))
}

/// `mailboxes`: `api.mailboxes`, then every route's mailbox (label: the mailbox and the
/// route's name).
fn mailbox_options<'a>(state: &'a AppState, _: &'a OptionsQuery) -> OptionItems<'a> {
    let config = &state.config;
    let mut items = configured(&config.api.mailboxes);
    for r in &config.routes {
        push_unique(
            &mut items,
            r.mailbox.trim(),
            &format!("{} (route {})", r.mailbox.trim(), r.name),
        );
    }
    Box::pin(ready(Ok(items)))
}

/// `dingtalk-conversations`: `api.dingtalk_conversations`, then every route's
/// `conversation_id` (label: the route's name).
fn conversation_options<'a>(state: &'a AppState, _: &'a OptionsQuery) -> OptionItems<'a> {
    let config = &state.config;
    let mut items = configured(&config.api.dingtalk_conversations);
    for r in &config.routes {
        if let Some(c) = &r.dingtalk.conversation_id {
            push_unique(&mut items, c, &r.name);
        }
    }
    Box::pin(ready(Ok(items)))
}

/// `mail-routes`: the mailbox routes that can send (`dingtalk.send_mail`: those with an
/// SMTP part; label: the route's name and the address it sends from).
fn mail_route_options<'a>(state: &'a AppState, _: &'a OptionsQuery) -> OptionItems<'a> {
    let mut items = Vec::new();
    for r in &state.config.mailbox_routes {
        if let Some(from) = r.smtp_user() {
            push_unique(&mut items, &r.name, &format!("{} ({from})", r.name));
        }
    }
    Box::pin(ready(Ok(items)))
}

/// `calendars`: the mailbox's calendars read live from Graph
/// (`GET /users/{mailbox}/calendars`), else `api.calendars`; see [`live_or_configured`].
fn calendar_options<'a>(state: &'a AppState, query: &'a OptionsQuery) -> OptionItems<'a> {
    Box::pin(live_or_configured(
        state,
        query,
        &["calendars"],
        "name",
        &state.config.api.calendars,
    ))
}

/// `todo-lists`: the mailbox's To Do lists read live from Graph
/// (`GET /users/{mailbox}/todo/lists`), else `api.todo_lists`; see [`live_or_configured`].
fn todo_list_options<'a>(state: &'a AppState, query: &'a OptionsQuery) -> OptionItems<'a> {
    Box::pin(live_or_configured(
        state,
        query,
        &["todo", "lists"],
        "displayName",
        &state.config.api.todo_lists,
    ))
}

/// `dingtalk-calendars`: the calendars `dingtalk.create_event` can write to. DingTalk's
/// calendar API documents one calendar id, `primary` (the user's own calendar), so that is
/// the one offered; Outlook calendar ids would be refused by DingTalk.
fn dingtalk_calendar_options<'a>(_: &'a AppState, _: &'a OptionsQuery) -> OptionItems<'a> {
    Box::pin(ready(Ok(vec![item("primary", "Primary calendar")])))
}

/// With Microsoft Graph configured and a mailbox (the `mailbox` query parameter, or the
/// only configured mailbox), the items of the mailbox's collection at `segments` (label:
/// the `label_key` property); otherwise the `fallback` setting. A mailbox that is not
/// configured is refused with 403.
async fn live_or_configured(
    state: &AppState,
    query: &OptionsQuery,
    segments: &[&str],
    label_key: &str,
    fallback: &[crate::config::OptionItem],
) -> Result<Vec<Value>, ApiError> {
    let mailboxes = crate::actions::configured_mailboxes(&state.config);
    let mailbox = match query.mailbox.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => match mailboxes.iter().find(|c| c.eq_ignore_ascii_case(m)) {
            Some(c) => Some(c.clone()),
            None => {
                let why = format!(
                    "`{m}` is not a configured mailbox; choose one from GET /v1/options/mailboxes"
                );
                return Err(
                    ApiError::new(ErrorCode::Forbidden, format!("mailbox: {why}"))
                        .with_details(json!({ "fields": { "mailbox": why } })),
                );
            }
        },
        _ if mailboxes.len() == 1 => Some(mailboxes[0].clone()),
        _ => None,
    };
    let (Some(graph), Some(mailbox)) = (&state.graph, mailbox) else {
        return Ok(configured(fallback));
    };
    let page = graph
        .get_query(&mailbox, segments, &[("$top", "100")])
        .await
        .map_err(ApiError::from)?;
    let mut items = Vec::new();
    for v in page["value"].as_array().into_iter().flatten() {
        let id = v["id"].as_str().unwrap_or_default();
        let label = v[label_key].as_str().unwrap_or(id);
        push_unique(&mut items, id, label);
    }
    Ok(items)
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

async fn audit(
    auth: Authenticated,
    query: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let n = limit(&query, 100, 1000)?;
    let entries = state.store.audit_recent(n).await?;
    let view: Vec<Value> = entries
        .iter()
        .map(|e| json!({ "at": rfc3339_ms(e.at_ms), "action": e.action, "detail": e.detail }))
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

async fn deliveries(
    auth: Authenticated,
    query: web::Query<LimitQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let n = limit(&query, 100, 1000)?;
    let dead = state.store.dead_letters(n).await?;
    let view: Vec<Value> = dead
        .iter()
        .map(|d| {
            json!({
                "job_id": d.job.id, "kind": d.job.kind, "attempts": d.job.attempts,
                "last_error": d.job.last_error, "failed_at": rfc3339_ms(d.failed_at_ms),
                "enqueued_at": rfc3339_ms(d.job.enqueued_at_ms), "payload": d.job.payload,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Queues a dead letter again (after its cause was fixed), recorded in the audit trail.
async fn replay_delivery(
    auth: Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth.require(Scope::Admin)?;
    let job_id = path.into_inner();
    if !state.store.requeue_dead(&job_id).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no dead letter for job {job_id}"),
        ));
    }
    state
        .store
        .audit_append(&crate::store::AuditEntry::now(
            "delivery.replayed",
            json!({ "job_id": job_id, "by": auth.0.id }),
        ))
        .await?;
    Ok(HttpResponse::Accepted().json(json!({ "job_id": job_id, "status": "queued" })))
}
