//! Request bodies: one deadline for reading any body, the size limit, and the JSON media
//! type check of JSON endpoints.
//!
//! actix times only the request head (`client_request_timeout`); a client that sends its
//! head and then one body byte every few seconds would hold its connection, and a file
//! descriptor, for as long as it likes. [`deadline`] gives every body a deadline counted
//! from the end of the head, and keeps the body with the response so that a connection
//! whose body is unfinished is closed after the answer rather than drained (actix drains
//! a dropped chunked body without any time limit).

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    Error, FromRequest, HttpMessage, HttpRequest,
    body::{BodySize, BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::header,
    middleware::Next,
    web,
};
use futures::{Stream, StreamExt};

use super::AppState;
use crate::error::{ApiError, ErrorCode};

/// Deadline used when the application state is missing (never in the service).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The error a body stream yields once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in full within {} ms", .0.as_millis())]
struct DeadlinePassed(Duration);

/// Middleware: every request body must arrive within `body_timeout_ms` of the end of its
/// head; the request body then stays with the response body until it is sent, so that
/// actix closes a connection whose body is still coming instead of draining it.
pub async fn deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.config.body_timeout())
        .unwrap_or(DEFAULT_DEADLINE);
    let shared = Rc::new(RefCell::new(req.take_payload()));
    let stream: Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>> =
        Box::pin(Deadlined {
            inner: shared.clone(),
            timer: Box::pin(tokio::time::sleep(limit)),
            limit,
            expired: false,
        });
    req.set_payload(Payload::from(stream));
    let res = next.call(req).await?.map_into_boxed_body();
    Ok(res.map_body(|_, body| HoldingRequestBody {
        body,
        _request_body: shared,
    }))
}

/// A response body that keeps the request body alive: actix checks whether the request
/// body still has a reader when the response ends, and closes the connection if so.
struct HoldingRequestBody {
    body: BoxBody,
    _request_body: Rc<RefCell<Payload>>,
}

impl MessageBody for HoldingRequestBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// A body stream that fails once its deadline has passed.
struct Deadlined {
    inner: Rc<RefCell<Payload>>,
    timer: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    expired: bool,
}

impl Stream for Deadlined {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.borrow_mut().poll_next_unpin(cx) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let err = std::io::Error::new(std::io::ErrorKind::TimedOut, DeadlinePassed(self.limit));
            return Poll::Ready(Some(Err(PayloadError::Io(err))));
        }
        Poll::Pending
    }
}

/// 408 `request_timeout` for a body past its deadline, 400 for any other read failure.
fn read_error(e: PayloadError) -> ApiError {
    if let PayloadError::Io(io) = &e
        && let Some(passed) = io
            .get_ref()
            .and_then(|i| i.downcast_ref::<DeadlinePassed>())
    {
        return ApiError::new(ErrorCode::RequestTimeout, passed.to_string());
    }
    ApiError::new(ErrorCode::InvalidInput, format!("cannot read body: {e}"))
}

/// The request body, read up to the configured limit (413 beyond it) within the
/// deadline [`deadline`] sets (408 past it).
pub struct LimitedBody(pub web::Bytes);

impl FromRequest for LimitedBody {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.config.body_limit_bytes)
            .unwrap_or(1024 * 1024);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let too_large = || {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body exceeds the {limit}-byte limit"),
                )
            };
            if declared.is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(read_error)?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(LimitedBody(body.freeze()))
        })
    }
}

/// A JSON request body: a [`LimitedBody`] declared as `application/json` or
/// `application/*+json` (any parameters), or not declared at all; any other type is
/// refused with 415 before the body is read.
pub struct JsonBody(pub web::Bytes);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Err(e) = require_json(req) {
            return Box::pin(futures::future::ready(Err(e)));
        }
        let body = LimitedBody::from_request(req, payload);
        Box::pin(async move { body.await.map(|b| JsonBody(b.0)) })
    }
}

/// 415 `unsupported_media_type` unless the declared Content-Type is JSON. A body sent
/// without a Content-Type is parsed as JSON: it claims no other type, and refusing it
/// would turn away senders that only ever send JSON.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let declared = value.to_str().unwrap_or("?");
    if is_json(declared) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        format!(
            "this endpoint takes a JSON body (Content-Type: application/json), not `{}`",
            declared.chars().take(100).collect::<String>()
        ),
    ))
}

/// `application/json` or `application/<anything>+json`, whatever the parameters; an
/// empty value counts as no declaration.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.len() > "+json".len() && sub.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_or_without_parameters_and_structured_json_are_json() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/merge-patch+json",
            "application/cloudevents+json; charset=utf-8",
            "",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/+json",
            "application/jsonx",
            "text/json+xml",
            "application/xml",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
