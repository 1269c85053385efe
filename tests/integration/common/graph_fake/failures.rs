//! One-off failures a test injects for the next matching requests ([`GraphFake::fail_next`]).

use std::time::Duration;

use super::{
    GraphFake,
    http::{Ctx, Reply, graph_error},
    state::Shared,
};

/// A one-off failure for the next matching requests.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Answer at once with this status, Graph error `code` and optional `Retry-After`.
    Status {
        status: u16,
        code: String,
        retry_after: Option<String>,
    },
    /// Hold the request for `delay` (counted in flight), then answer `status` without
    /// applying it (for crash tests: kill the client while it waits).
    HangThenFail { delay: Duration, status: u16 },
    /// Apply the request normally, then hold the answer for `delay` (the write happened,
    /// the client may never learn it).
    ApplyThenHang { delay: Duration },
    /// Apply the request normally, then answer `status` instead (a gateway that timed
    /// out after Graph stored the item).
    ApplyThenStatus { status: u16 },
    /// Apply the request normally, then break the connection in the middle of the answer.
    ApplyThenDrop,
}

impl Failure {
    /// `503 serviceNotAvailable` with `Retry-After: secs`.
    pub fn unavailable(retry_after: &str) -> Self {
        Failure::Status {
            status: 503,
            code: "serviceNotAvailable".into(),
            retry_after: Some(retry_after.into()),
        }
    }
    /// `504 gatewayTimeout` without `Retry-After`.
    pub fn gateway_timeout() -> Self {
        Failure::Status {
            status: 504,
            code: "UnknownError".into(),
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Injected {
    pub(super) method: Option<String>,
    pub(super) path_contains: String,
    pub(super) remaining: usize,
    pub(super) failure: Failure,
}

impl GraphFake {
    /// The next `n` requests whose path contains `path_contains` (and whose method is
    /// `method`, when given) fail as `failure`. Applies to token, upload and resource
    /// requests alike.
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, n: usize, failure: Failure) {
        self.shared.state().failures.push(Injected {
            method: method.map(str::to_uppercase),
            path_contains: path_contains.into(),
            remaining: n,
            failure,
        });
    }
}

/// Takes the injected failure matching this request, if any.
pub(super) fn take_failure(shared: &Shared, ctx: &Ctx) -> Option<Failure> {
    let mut st = shared.state();
    let pos = st.failures.iter().position(|f| {
        f.remaining > 0
            && ctx.path.contains(&f.path_contains)
            && f.method.as_deref().is_none_or(|m| m == ctx.method)
    })?;
    let f = &mut st.failures[pos];
    f.remaining -= 1;
    let failure = f.failure.clone();
    if f.remaining == 0 {
        st.failures.remove(pos);
    }
    Some(failure)
}

/// Applies an injected failure; `None` means "go on" (possibly with a delay after).
pub(super) async fn apply_failure(ctx: &Ctx, failure: &Failure) -> Option<Reply> {
    match failure {
        Failure::Status {
            status,
            code,
            retry_after,
        } => {
            let mut r = graph_error(ctx, *status, code, "Injected failure (fake).");
            if let Some(ra) = retry_after {
                r = r.header("Retry-After", ra.clone());
            }
            Some(r)
        }
        Failure::HangThenFail { delay, status } => {
            tokio::time::sleep(*delay).await;
            Some(graph_error(
                ctx,
                *status,
                "UnknownError",
                "Injected failure after a hang (fake).",
            ))
        }
        Failure::ApplyThenHang { .. }
        | Failure::ApplyThenStatus { .. }
        | Failure::ApplyThenDrop => None,
    }
}
