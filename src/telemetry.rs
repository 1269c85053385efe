//! Logging and request context: JSON logs through `tracing`, a request id on every
//! request (taken from `X-Request-Id` or made up), in every log line, every error body
//! and echoed back, plus the per-route request metrics.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use tracing::{
    Event, Instrument, Level, Metadata, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, layer::Context, prelude::*};

/// Header carrying the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Target of actix-http's HTTP/1 dispatcher, which logs every malformed request and every
/// broken or timed-out connection at ERROR ("stream error: …"): anyone can produce those,
/// so they are counted and logged at debug instead (see [`ConnectionErrors`]).
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

fn is_dispatcher_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target() == DISPATCHER_TARGET
}

/// Installs the global subscriber once (`json` or `pretty`, filtered by `level` unless
/// `RUST_LOG` is set); later calls are no-ops.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let output = if format == "pretty" {
        fmt::layer().boxed()
    } else {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .boxed()
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(filter_fn(|meta| !is_dispatcher_error(meta))))
        .with(ConnectionErrors)
        .try_init();
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Takes the dispatcher's ERROR lines out of the log: each is counted in
/// `http_connection_errors_total{reason}` and logged again under `dingbridge::http`, at
/// debug when a client caused it, at warn otherwise. Outermost layer, so that its own
/// event is dispatched after the output layer has finished with the current one.
struct ConnectionErrors;

impl<S: Subscriber> Layer<S> for ConnectionErrors {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !is_dispatcher_error(event.metadata()) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let reason = connection_error_reason(&message.0);
        crate::metrics::record_connection_error(reason);
        if reason == "other" {
            tracing::warn!(target: "dingbridge::http", reason, error = %message.0, "HTTP connection error");
        } else {
            tracing::debug!(target: "dingbridge::http", reason, error = %message.0, "malformed request or broken connection");
        }
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The metric label of one of the dispatcher's error lines (`stream error: <DispatchError>`).
fn connection_error_reason(message: &str) -> &'static str {
    let error = message.strip_prefix("stream error: ").unwrap_or(message);
    if error.starts_with("request parse error: message head is too large") {
        "head_too_large"
    } else if error.starts_with("request parse error") {
        "malformed"
    } else if error.starts_with("request did not complete within")
        || error.starts_with("connection shutdown timeout")
    {
        "timeout"
    } else if error.starts_with("I/O error") {
        "io"
    } else if error.starts_with("handler dropped payload") {
        "unread_body"
    } else {
        "other"
    }
}

fn usable_request_id(value: &HeaderValue) -> Option<String> {
    // Echoed into headers and logs: keep it short and printable.
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

/// Middleware: request id, span, access log line and request metrics.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(usable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let method_label = crate::metrics::method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    let result = crate::error::with_request_id(id.clone(), next.call(req))
        .instrument(span.clone())
        .await;
    let mut res = match result {
        Ok(res) => res.map_into_boxed_body(),
        Err(e) => return Err(e),
    };
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::record_request(&route, method_label, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatcher_errors_are_told_apart() {
        for (line, reason) in [
            (
                "stream error: request parse error: invalid Header provided",
                "malformed",
            ),
            (
                "stream error: request parse error: message head is too large",
                "head_too_large",
            ),
            (
                "stream error: request did not complete within the specified timeout",
                "timeout",
            ),
            ("stream error: I/O error: Connection reset by peer", "io"),
            (
                "stream error: handler dropped payload before reading EOF",
                "unread_body",
            ),
            ("write zero; closing", "other"),
        ] {
            assert_eq!(connection_error_reason(line), reason, "{line}");
        }
    }
}
