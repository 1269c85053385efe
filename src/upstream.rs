//! One classification of what an upstream HTTP status means for the call that got it,
//! shared by the Graph and DingTalk clients, hook and echo deliveries and the action
//! replay cache, so that "try again later" means the same everywhere.

/// `true` when the same request can succeed later without any change: the server timed
/// out (408), throttled (429) or failed (5xx).
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// `true` when a write answered so may have been applied all the same (a gateway gave up
/// after the server stored it): repeat it only after looking for its result.
pub fn may_have_been_applied(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// `true` when the server refused before doing anything (429), so even a create can be
/// repeated as it is.
pub fn refused_before_applying(status: u16) -> bool {
    status == 429
}

/// `true` for the answers that ask the caller to wait (honouring `Retry-After`): throttling
/// and temporary unavailability.
pub fn asks_to_wait(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_throttling_and_server_errors_are_retryable_client_errors_are_not() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn only_server_side_failures_may_have_applied_a_write() {
        assert!(may_have_been_applied(504));
        assert!(!may_have_been_applied(429));
        assert!(refused_before_applying(429));
        assert!(!refused_before_applying(503));
        assert!(asks_to_wait(503) && asks_to_wait(429) && !asks_to_wait(500));
    }
}
