//! Graph's throttling per mailbox: an optional request budget per window (429
//! `TooManyRequests`) and at most `concurrency_limit` requests in flight (429
//! `ApplicationThrottled`), both with `Retry-After`.

use std::time::{Duration, Instant};

use super::{
    GraphFake, GraphFakeConfig, RetryAfterFormat,
    http::{Ctx, Reply, graph_error},
    state::{Mailbox, Shared},
};

impl GraphFake {
    /// Highest number of requests in flight at once for `mailbox`.
    pub fn max_in_flight(&self, mailbox: &str) -> usize {
        self.with_mailbox(mailbox, |m| m.max_in_flight).unwrap_or(0)
    }

    /// 429s answered for `mailbox` (both kinds).
    pub fn throttled_for(&self, mailbox: &str) -> usize {
        self.with_mailbox(mailbox, |m| m.throttled).unwrap_or(0)
    }

    /// All 429s answered: (concurrency, budget).
    pub fn throttled(&self) -> (usize, usize) {
        let s = self.shared.state();
        (s.throttled_concurrency, s.throttled_budget)
    }
}

/// Admits a request to `mailbox` or answers the 429 Graph would: the budget first (every
/// request counts, throttled ones too), then concurrency. The guard counts the request in
/// flight until it is dropped.
pub(super) fn admit<'a>(
    ctx: &Ctx,
    shared: &'a Shared,
    mailbox: &str,
    config: &GraphFakeConfig,
) -> Result<InFlight<'a>, Reply> {
    let mut guard = shared.state();
    let st = &mut *guard;
    let mb = st
        .mailboxes
        .entry(mailbox.to_string())
        .or_insert_with(Mailbox::fresh);
    if let Some((limit, window)) = config.budget {
        let now = Instant::now();
        let start = *mb.window_start.get_or_insert(now);
        if now.duration_since(start) >= window {
            mb.window_start = Some(now);
            mb.window_count = 0;
        }
        mb.window_count += 1;
        if mb.window_count > limit {
            let wait = window.saturating_sub(now.duration_since(mb.window_start.unwrap_or(now)));
            mb.throttled += 1;
            st.throttled_budget += 1;
            return Err(graph_error(
                ctx,
                429,
                "TooManyRequests",
                "Application is over its MailboxConcurrency limit or its request budget for this mailbox.",
            )
            .header("Retry-After", format_retry_after(wait, config.retry_after_format)));
        }
    }
    if mb.in_flight >= config.concurrency_limit {
        mb.throttled += 1;
        st.throttled_concurrency += 1;
        return Err(graph_error(
            ctx,
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        )
        .header(
            "Retry-After",
            format_retry_after(config.concurrency_retry_after, config.retry_after_format),
        ));
    }
    mb.in_flight += 1;
    mb.max_in_flight = mb.max_in_flight.max(mb.in_flight);
    drop(guard);
    Ok(InFlight {
        shared,
        mailbox: mailbox.to_string(),
    })
}

/// Decrements the mailbox's in-flight count when the request ends (or is dropped).
pub(super) struct InFlight<'a> {
    pub(super) shared: &'a Shared,
    pub(super) mailbox: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(mb) = self.shared.state().mailboxes.get_mut(&self.mailbox) {
            mb.in_flight = mb.in_flight.saturating_sub(1);
        }
    }
}

/// A `Retry-After` value for `d` in the configured format.
pub(super) fn format_retry_after(d: Duration, format: RetryAfterFormat) -> String {
    match format {
        RetryAfterFormat::Integer => d.as_secs_f64().ceil().max(1.0).to_string(),
        RetryAfterFormat::Fractional => {
            let s = format!("{:.3}", d.as_secs_f64().max(0.001));
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}
