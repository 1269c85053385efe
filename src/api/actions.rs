//! `POST /v1/actions/{action}` with the `Idempotency-Key` layer
//! (draft-ietf-httpapi-idempotency-key-header), the same for every action:
//!
//! - the fingerprint is the SHA-256 of the action name and the canonical JSON body
//!   (object keys sorted, insignificant whitespace dropped), so a re-serialised body
//!   still matches;
//! - keys are scoped to the calling API key;
//! - the first request's final response is stored (4xx errors included) and replayed
//!   with `Idempotent-Replayed: true`; 5xx, 429 and store outages release the key instead
//!   so that a retry really runs again;
//! - same key, other body: 422 `idempotency_key_reused`; same key while the first
//!   request runs: 409 `idempotency_key_in_flight`; records live `idempotency_ttl_secs`.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{MessageBody, to_bytes},
    http::{Method, StatusCode, header::HeaderValue},
    web,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AppState, JsonBody, RouteEntry, on};
use crate::{
    api::auth::Authenticated,
    apikeys::Scope,
    error::{ApiError, ErrorCode},
    store::{IdempotencyRecord, Reservation, StoredResponse},
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

/// Fingerprint of an action request.
pub fn fingerprint(action: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(action.as_bytes());
    h.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        // serde_json's map is ordered by key, so this is canonical.
        Ok(v) => h.update(v.to_string().as_bytes()),
        Err(_) => h.update(body),
    }
    hex::encode(h.finalize())
}

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
    let caller = auth.require(Scope::Actions)?.clone();
    let name = path.into_inner();
    if !state.actions.contains(&name) {
        let names: Vec<&str> = state.actions.list().iter().map(|(n, _)| *n).collect();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no action `{name}`; valid actions: {}", names.join(", ")),
        )
        .with_details(json!({ "actions": names })));
    }
    let key = idempotency_key(&req)?;
    let execute = |key: Option<String>| {
        let state = state.clone();
        let caller = caller.clone();
        let name = name.clone();
        let body = body.0.clone();
        async move {
            let input: Value = match serde_json::from_slice(&body) {
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
                    &name,
                    &state.config,
                    &state.http,
                    &caller,
                    key.as_deref(),
                    &input,
                )
                .await;
            match result {
                Ok(v) => HttpResponse::Ok().json(v),
                Err(e) => e.error_response(),
            }
        }
    };
    let Some(key) = key else {
        return Ok(execute(None).await);
    };

    let store = state.store.as_ref();
    let ttl = state.config.idempotency_ttl();
    let store_key = format!(
        "action:{}:{}",
        caller.id,
        hex::encode(Sha256::digest(key.as_bytes()))
    );
    let fp = fingerprint(&name, &body.0);
    match store.idempotency_reserve(&store_key, &fp, ttl).await? {
        Reservation::Existing(record) if record.fingerprint != fp => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request; use a new key for a new request",
        )),
        Reservation::Existing(IdempotencyRecord { response: None, .. }) => Err(ApiError::new(
            ErrorCode::IdempotencyKeyInFlight,
            "a request with this Idempotency-Key is still running; retry shortly",
        )
        .with_retry_after(1)),
        Reservation::Existing(IdempotencyRecord {
            response: Some(stored),
            ..
        }) => Ok(replay(&stored)),
        Reservation::Reserved => {
            let resp = execute(Some(key)).await;
            let status = resp.status();
            let (resp, stored) = capture(resp).await;
            // A retryable answer is not the action's result: the key is released so that
            // the caller's retry runs it.
            let keep = !crate::upstream::is_retryable(status.as_u16());
            let settled = match stored {
                Some(stored) if keep => {
                    let record = IdempotencyRecord {
                        fingerprint: fp,
                        response: Some(stored),
                    };
                    store.idempotency_complete(&store_key, &record, ttl).await
                }
                _ => store.idempotency_release(&store_key).await,
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "could not record the idempotent response");
            }
            Ok(resp)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_but_not_the_action() {
        let a = fingerprint("x", br#"{"a":1,"b":"two"}"#);
        let b = fingerprint("x", b"{ \"b\": \"two\",\n \"a\": 1 }");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("y", br#"{"a":1,"b":"two"}"#));
        assert_ne!(a, fingerprint("x", br#"{"a":2,"b":"two"}"#));
    }
}
