//! Settings of the fake: who may get a token, how it throttles, how it pages delta.

use std::time::Duration;

/// How `Retry-After` values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterFormat {
    /// Whole seconds, rounded up, at least 1 (what Graph usually sends).
    Integer,
    /// Fractional seconds such as `0.5` or `2.128` (Graph sometimes sends these).
    Fractional,
}

/// Settings of a [`GraphFake`]; build with `GraphFakeConfig::default()` and the `with_*`
/// methods.
#[derive(Debug, Clone)]
pub struct GraphFakeConfig {
    /// Tenant in the token path (`/{tenant}/oauth2/v2.0/token`); others get AADSTS90002.
    pub tenant: String,
    /// Expected `client_id` (and assertion `iss`/`sub`).
    pub client_id: String,
    /// Accepted client secret; `None` refuses secrets (AADSTS7000215).
    pub client_secret: Option<String>,
    /// The configured secret is expired: answers 401 `invalid_client` AADSTS7000222.
    pub secret_expired: bool,
    /// PEM certificate whose key must sign client assertions; `None` refuses assertions.
    pub certificate_pem: Option<String>,
    /// Extra accepted assertion `aud` values besides the fake's own token URL and
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub extra_audiences: Vec<String>,
    /// `expires_in` of issued tokens (seconds); tokens stop working after it.
    pub token_expires_in: u64,
    /// Requests in flight per mailbox before 429 `ApplicationThrottled` (Graph: 4).
    pub concurrency_limit: usize,
    /// `Retry-After` of the concurrency 429.
    pub concurrency_retry_after: Duration,
    /// Request budget per mailbox: at most `.0` requests per window `.1` (every request
    /// counts, throttled ones too, as on Graph). `None`: no budget.
    pub budget: Option<(u32, Duration)>,
    /// Format of every `Retry-After` the fake writes.
    pub retry_after_format: RetryAfterFormat,
    /// Time each admitted resource request is held (in flight) before it is answered.
    pub latency: Duration,
    /// When set, only these mailboxes exist (others: 404 `MailboxNotEnabledForRESTAPI`).
    pub mailboxes: Option<Vec<String>>,
    /// Items per message delta page when the client sends no `odata.maxpagesize`.
    pub delta_page_size: usize,
    /// Send change notifications by itself, as Graph does: `created` for a message
    /// POSTed into a watched folder, `updated` for a PATCH (a read flag, say) or
    /// [`GraphFake::update_message`]. Off by default: tests then notify explicitly.
    pub notify_changes: bool,
}

impl Default for GraphFakeConfig {
    fn default() -> Self {
        Self {
            tenant: "11111111-2222-3333-4444-555555555555".into(),
            client_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            client_secret: Some("fake-client-secret~value".into()),
            secret_expired: false,
            certificate_pem: None,
            extra_audiences: vec![],
            token_expires_in: 3599,
            concurrency_limit: 4,
            concurrency_retry_after: Duration::from_secs(1),
            budget: None,
            retry_after_format: RetryAfterFormat::Integer,
            latency: Duration::ZERO,
            mailboxes: None,
            delta_page_size: 3,
            notify_changes: false,
        }
    }
}

impl GraphFakeConfig {
    pub fn with_tenant(mut self, t: &str) -> Self {
        self.tenant = t.into();
        self
    }
    pub fn with_client_id(mut self, id: &str) -> Self {
        self.client_id = id.into();
        self
    }
    pub fn with_secret(mut self, s: &str) -> Self {
        self.client_secret = Some(s.into());
        self
    }
    pub fn with_expired_secret(mut self) -> Self {
        self.secret_expired = true;
        self
    }
    pub fn with_certificate_pem(mut self, pem: &str) -> Self {
        self.certificate_pem = Some(pem.into());
        self
    }
    pub fn with_audience(mut self, aud: &str) -> Self {
        self.extra_audiences.push(aud.into());
        self
    }
    pub fn with_token_expires_in(mut self, secs: u64) -> Self {
        self.token_expires_in = secs;
        self
    }
    pub fn with_concurrency_limit(mut self, n: usize, retry_after: Duration) -> Self {
        self.concurrency_limit = n;
        self.concurrency_retry_after = retry_after;
        self
    }
    pub fn with_budget(mut self, requests: u32, window: Duration) -> Self {
        self.budget = Some((requests, window));
        self
    }
    pub fn with_fractional_retry_after(mut self) -> Self {
        self.retry_after_format = RetryAfterFormat::Fractional;
        self
    }
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    pub fn with_change_notifications(mut self) -> Self {
        self.notify_changes = true;
        self
    }
    pub fn with_mailboxes(mut self, mailboxes: &[&str]) -> Self {
        self.mailboxes = Some(mailboxes.iter().map(|m| m.to_lowercase()).collect());
        self
    }
}
