//! The HTTP side: each request is recorded, routed (token endpoint, upload URLs, JWKS,
//! subscriptions, mailbox resources), authenticated, throttled, and subjected to any
//! injected failure; replies carry Graph's error shape and request ids.

use std::{collections::HashMap, time::Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::{Value, json};

use super::{
    Failure, Recorded,
    attachments::upload_put,
    auth::{authorized, jwks, token_endpoint},
    failures::{apply_failure, take_failure},
    resources::resource,
    state::Shared,
    subscriptions::subscriptions_endpoint,
    throttling::admit,
    validation::record_violation,
};

pub(super) struct Ctx {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: HashMap<String, String>,
    pub(super) body: Vec<u8>,
    pub(super) request_id: String,
}

impl Ctx {
    pub(super) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub(super) fn immutable_ids(&self) -> bool {
        self.header("prefer")
            .is_some_and(|p| p.contains("IdType=\"ImmutableId\""))
    }
}

/// A reply before the common headers are added.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<Value>,
    /// Break the connection after the status line instead of sending the body.
    pub(super) dropped: bool,
    /// A non-JSON body: content type and bytes (e.g. a message's MIME).
    pub(super) raw: Option<(String, Vec<u8>)>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: vec![],
            body: Some(body),
            dropped: false,
            raw: None,
        }
    }
    pub(super) fn empty(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: None,
            dropped: false,
            raw: None,
        }
    }
    pub(super) fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Reply {
            raw: Some((content_type.into(), body)),
            ..Reply::empty(status)
        }
    }
    pub(super) fn header(mut self, k: &str, v: String) -> Self {
        self.headers.push((k.into(), v));
        self
    }
}

pub(super) fn graph_error(ctx: &Ctx, status: u16, code: &str, message: &str) -> Reply {
    let mut inner = json!({
        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "request-id": ctx.request_id,
    });
    if let Some(c) = ctx.header("client-request-id") {
        inner["client-request-id"] = json!(c);
    }
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "innerError": inner}}),
    )
}

pub(super) fn not_found(ctx: &Ctx) -> Reply {
    graph_error(
        ctx,
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

pub(super) async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: headers.clone(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    shared.state().requests.push(recorded);
    let ctx = Ctx {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect(),
        headers,
        body: body.to_vec(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let reply = dispatch(&ctx, &shared).await;
    let mut builder =
        HttpResponse::build(StatusCode::from_u16(reply.status).expect("valid status"));
    builder.insert_header(("request-id", ctx.request_id.as_str()));
    if let Some(c) = ctx.header("client-request-id") {
        builder.insert_header(("client-request-id", c));
    }
    for (k, v) in &reply.headers {
        builder.insert_header((k.as_str(), v.as_str()));
    }
    if reply.dropped {
        // A body stream that fails makes actix abort the connection mid-answer.
        let broken = futures::stream::once(async {
            Err::<web::Bytes, std::io::Error>(std::io::Error::other("dropped (fake)"))
        });
        return builder.content_type("application/json").streaming(broken);
    }
    if let Some((content_type, bytes)) = reply.raw {
        return builder.content_type(content_type).body(bytes);
    }
    match reply.body {
        Some(b) => builder.content_type("application/json").body(b.to_string()),
        None => builder.finish(),
    }
}

async fn dispatch(ctx: &Ctx, shared: &Shared) -> Reply {
    let segs: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    // Token endpoint: /{tenant}/oauth2/v2.0/token
    if segs.len() == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" && segs[3] == "token" {
        shared.state().token_requests += 1;
        if let Some(f) = take_failure(shared, ctx)
            && let Some(r) = apply_failure(ctx, &f).await
        {
            return r;
        }
        return token_endpoint(ctx, shared, segs[0]);
    }
    if segs.first() == Some(&"upload") && segs.len() == 2 {
        if let Some(f) = take_failure(shared, ctx)
            && let Some(r) = apply_failure(ctx, &f).await
        {
            return r;
        }
        return upload_put(ctx, shared, segs[1]);
    }
    // Microsoft identity's signing keys (validation tokens of rich notifications).
    if ctx.path == "/common/discovery/v2.0/keys" || ctx.path == "/common/discovery/keys" {
        return jwks(ctx, shared);
    }
    if segs.first() != Some(&"v1.0") {
        return graph_error(ctx, 404, "BadRequest", "Unknown path (fake).");
    }
    // Authentication.
    if !authorized(ctx, shared) {
        return graph_error(
            ctx,
            401,
            "InvalidAuthenticationToken",
            "Access token is empty, invalid or expired.",
        );
    }
    if segs.get(1) == Some(&"$batch") {
        record_violation(
            shared,
            ctx,
            "$batch",
            vec!["$batch is not implemented by the fake".into()],
        );
        return graph_error(
            ctx,
            501,
            "NotImplemented",
            "$batch is not implemented by the fake.",
        );
    }
    if segs.get(1) == Some(&"subscriptions") {
        return subscriptions_endpoint(ctx, shared, &segs[2..]).await;
    }
    if segs.get(1) != Some(&"users") || segs.len() < 4 {
        return graph_error(ctx, 400, "BadRequest", "Unsupported path (fake).");
    }
    // Clients encode `@` as `%40`; the state is kept under the decoded address.
    let mailbox = percent_encoding::percent_decode_str(segs[2])
        .decode_utf8_lossy()
        .to_lowercase();
    let config = shared.config();
    if let Some(allowed) = &config.mailboxes
        && !allowed.contains(&mailbox)
    {
        return graph_error(
            ctx,
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        );
    }
    // Throttling: budget first (every request counts), then concurrency.
    let _guard = match admit(ctx, shared, &mailbox, &config) {
        Ok(in_flight) => in_flight,
        Err(throttled) => return throttled,
    };
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let failure = take_failure(shared, ctx);
    if let Some(f) = &failure
        && let Some(r) = apply_failure(ctx, f).await
    {
        return r;
    }
    let reply = resource(ctx, shared, &mailbox, &segs[3..]);
    match failure {
        Some(Failure::ApplyThenHang { delay }) => tokio::time::sleep(delay).await,
        Some(Failure::ApplyThenStatus { status }) => {
            return graph_error(
                ctx,
                status,
                "UnknownError",
                "Injected failure after the write (fake).",
            );
        }
        Some(Failure::ApplyThenDrop) => {
            return Reply {
                dropped: true,
                ..reply
            };
        }
        _ => {}
    }
    reply
}
