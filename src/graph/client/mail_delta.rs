//! Message delta of one mail folder (<https://learn.microsoft.com/graph/api/message-delta>),
//! for the Outlook → DingTalk Mail direction of the mailbox routes: the first request of a
//! round (optionally limited to mail received since a time, `$filter=receivedDateTime ge
//! …`, the one filter message delta takes), the pages it chains with `@odata.nextLink`, and
//! the `@odata.deltaLink` that starts the next round with exactly the changes since. Graph
//! encodes the query options of the first request into both links.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;

use super::GraphClient;
use crate::graph::GraphError;

/// What a delta round reads of each message.
const DELTA_SELECT: &str = "id,internetMessageId,isRead,isDraft,receivedDateTime";

/// A message as a delta page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaMessage {
    /// Its (immutable) id.
    pub id: String,
    /// Its `internetMessageId`.
    pub internet_message_id: Option<String>,
    /// Read or not.
    pub is_read: bool,
    /// A draft.
    pub is_draft: bool,
    /// When it arrived.
    pub received_at: Option<DateTime<Utc>>,
}

/// One entry of a delta page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaItem {
    /// New in the folder, or changed: its current state.
    Changed(DeltaMessage),
    /// Gone from the folder (deleted, or moved out): `@removed`.
    Removed {
        /// Its id.
        id: String,
    },
}

/// One page of a delta round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPage {
    /// The entries, in Graph's order.
    pub items: Vec<DeltaItem>,
    /// `@odata.nextLink`: the round goes on there.
    pub next_link: Option<String>,
    /// `@odata.deltaLink`: the round is over; the next one starts there.
    pub delta_link: Option<String>,
}

/// Reads a delta page; entries without an `id` are left out, a page without either link
/// is an error (Graph always ends a page with one of them).
pub fn parse_delta_page(v: &Value) -> Result<DeltaPage, GraphError> {
    let text = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let items = v
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let id = text(m, "id")?;
            if m.get("@removed").is_some() {
                return Some(DeltaItem::Removed { id });
            }
            Some(DeltaItem::Changed(DeltaMessage {
                id,
                internet_message_id: text(m, "internetMessageId"),
                is_read: m.get("isRead").and_then(Value::as_bool).unwrap_or(false),
                is_draft: m.get("isDraft").and_then(Value::as_bool).unwrap_or(false),
                received_at: m
                    .get("receivedDateTime")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc)),
            }))
        })
        .collect();
    let page = DeltaPage {
        items,
        next_link: text(v, "@odata.nextLink"),
        delta_link: text(v, "@odata.deltaLink"),
    };
    if page.next_link.is_none() && page.delta_link.is_none() {
        return Err(GraphError::Unexpected(
            "a delta page without @odata.nextLink or @odata.deltaLink".into(),
        ));
    }
    Ok(page)
}

/// The `$filter` of a first round limited to mail received at or after `since`.
pub fn received_since_filter(since: DateTime<Utc>) -> String {
    format!("receivedDateTime ge {}", since.format("%Y-%m-%dT%H:%M:%SZ"))
}

impl GraphClient {
    /// The first page of a new delta round over folder `folder_id` of `mailbox`: every
    /// message there (received at or after `since`, when given).
    pub async fn message_delta_first(
        &self,
        mailbox: &str,
        folder_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<DeltaPage, GraphError> {
        let filter = since.map(received_since_filter);
        let mut query = vec![("$select", DELTA_SELECT)];
        if let Some(f) = &filter {
            query.push(("$filter", f.as_str()));
        }
        let v = self
            .call_json(
                mailbox,
                Method::GET,
                &["mailFolders", folder_id, "messages", "delta"],
                &query,
                None,
                true,
            )
            .await?
            .json()?;
        parse_delta_page(&v)
    }

    /// The page at `link` (an `@odata.nextLink` or a stored `@odata.deltaLink`). A link
    /// Graph no longer knows answers 410 (`syncStateNotFound`): start a new round.
    pub async fn message_delta_page(
        &self,
        mailbox: &str,
        link: &str,
    ) -> Result<DeltaPage, GraphError> {
        parse_delta_page(&self.get_url(mailbox, link).await?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_page_lists_changes_and_removals_and_ends_with_a_link() {
        let page = parse_delta_page(&json!({
            "value": [
                {"id": "A", "internetMessageId": "<a@x>", "isRead": true, "isDraft": false,
                 "receivedDateTime": "2026-03-01T00:00:05Z"},
                {"id": "B", "@removed": {"reason": "deleted"}},
                {"subject": "no id"},
            ],
            "@odata.nextLink": "https://graph/next",
        }))
        .expect("page");
        assert_eq!(page.items.len(), 2);
        let DeltaItem::Changed(a) = &page.items[0] else {
            panic!("changed")
        };
        assert_eq!(a.internet_message_id.as_deref(), Some("<a@x>"));
        assert!(a.is_read && !a.is_draft);
        assert_eq!(a.received_at.map(|t| t.timestamp()), Some(1_772_323_205));
        assert_eq!(page.items[1], DeltaItem::Removed { id: "B".into() });
        assert_eq!(page.next_link.as_deref(), Some("https://graph/next"));
        assert_eq!(page.delta_link, None);
        assert!(parse_delta_page(&json!({"value": []})).is_err());
    }

    #[test]
    fn the_first_round_filters_on_the_receipt_time() {
        let since = DateTime::parse_from_rfc3339("2026-03-01T08:00:00+08:00")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            received_since_filter(since),
            "receivedDateTime ge 2026-03-01T00:00:00Z"
        );
    }
}
