//! `POST /v1/actions/{action}`: authenticate, check the action and the `Idempotency-Key`
//! header, run the action once through [`Idempotency`] (claim, replay, record: see
//! [`crate::actions::idempotency`]), and answer; a replay carries
//! `Idempotent-Replayed: true`.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{MessageBody, to_bytes},
    http::{Method, StatusCode, header::HeaderValue},
    web,
};
use serde_json::{Value, json};

use super::{AppState, JsonBody, RouteEntry, on};
use crate::{
    actions::{
        Actions,
        idempotency::{Idempotency, Outcome, Recordable},
    },
    api::auth::Authenticated,
    apikeys::{Principal, Scope},
    error::{ApiError, ErrorCode},
    store::StoredResponse,
};

/// Adds `/v1/actions/{action}`.
pub fn routes(t: &mut Vec<RouteEntry>) {
    t.push(RouteEntry {
        path: "/v1/actions/{action}",
        methods: vec![on(Method::POST, run_action)],
    });
}

/// Header names kept with a stored response.
const REPLAYED_HEADERS: &[&str] = &["content-type", "retry-after", "location"];

/// The request's `Idempotency-Key` (quotes dropped): 1 to 255 printable ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    // Structured-field strings may come quoted; accept both.
    let s = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters (map the trigger item's id into it)",
        ));
    }
    Ok(Some(s.to_string()))
}

async fn run_action(
    req: HttpRequest,
    auth: Authenticated,
    path: web::Path<String>,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Actions)?;
    let name = path.into_inner();
    known(&state.actions, &name)?;
    let key = idempotency_key(&req)?;
    let once = Idempotency::new(
        state.store.as_ref(),
        state.config.idempotency_ttl(),
        caller,
        key,
        &name,
        &body.0,
    );
    let outcome = once
        .run_once(|key| execute(&state, caller, &name, &body.0, key))
        .await?;
    Ok(match outcome {
        Outcome::Ran(resp) => resp,
        Outcome::Replayed(stored) => replay(&stored),
    })
}

/// 404 naming the valid actions unless `name` is one.
fn known(actions: &Actions, name: &str) -> Result<(), ApiError> {
    if actions.contains(name) {
        return Ok(());
    }
    let names: Vec<&str> = actions.list().iter().map(|(n, _)| *n).collect();
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no action `{name}`; valid actions: {}", names.join(", ")),
    )
    .with_details(json!({ "actions": names })))
}

/// Runs the action once; every outcome, errors included, is a response that can be kept.
async fn execute(
    state: &AppState,
    caller: &Principal,
    name: &str,
    body: &[u8],
    key: Option<String>,
) -> HttpResponse {
    let input: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::new(
                ErrorCode::InvalidJson,
                format!("body is not valid JSON: {e}"),
            )
            .error_response();
        }
    };
    let result = state
        .actions
        .run(
            name,
            &state.config,
            &state.http,
            caller,
            key.as_deref(),
            &input,
        )
        .await;
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => e.error_response(),
    }
}

impl Recordable for HttpResponse {
    async fn record(self) -> (HttpResponse, Option<StoredResponse>) {
        capture(self).await
    }
}

/// Reads a response's body so it can be both answered and stored.
async fn capture(resp: HttpResponse) -> (HttpResponse, Option<StoredResponse>) {
    let status = resp.status();
    let headers: Vec<(String, String)> = REPLAYED_HEADERS
        .iter()
        .filter_map(|h| {
            resp.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| (h.to_string(), v.to_string()))
        })
        .collect();
    let (head, body) = resp.into_parts();
    let bytes = match to_bytes(body.boxed()).await {
        Ok(b) => b,
        Err(_) => return (head.set_body(web::Bytes::new()).map_into_boxed_body(), None),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let resp = head.set_body(bytes).map_into_boxed_body();
    (
        resp,
        Some(StoredResponse {
            status: status.as_u16(),
            headers,
            body: text,
        }),
    )
}

fn replay(stored: &StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut b = HttpResponse::build(status);
    for (k, v) in &stored.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            b.insert_header((k.as_str(), v));
        }
    }
    b.insert_header(("Idempotent-Replayed", "true"));
    b.body(stored.body.clone())
}
