//! Which configured routes want a DingTalk event. Pure: no I/O.
//!
//! A route takes an event when its direction relays into Outlook (`to_outlook` or
//! `both`), its `kinds` include the event's kind, and the event's source is the route's:
//! - message: the event's conversation id equals `route.dingtalk.conversation_id`;
//! - calendar event and todo: the route's `union_id` is in the event's union id list;
//! - contact: every route with the `contact` kind (directory events concern the org).
//!
//! The mailbox of a matched route is the only mailbox the relay touches.
//! [`carries_read_state`] tells which routes carry mail read state (both directions use it).

use crate::{
    config::{RouteConfig, RouteKind},
    sync::{EventKind, SyncEvent},
};

/// The configured routes.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<RouteConfig>,
}

/// The route kind that relays an event kind into Outlook, when there is one.
pub fn route_kind(kind: EventKind) -> Option<RouteKind> {
    match kind {
        EventKind::Message => Some(RouteKind::Message),
        EventKind::CalendarEvent => Some(RouteKind::Event),
        EventKind::Todo => Some(RouteKind::Todo),
        EventKind::Contact => Some(RouteKind::Contact),
        // DingTalk's event subscription carries no mail events (DingTalk Mail emits none);
        // read state travels with the todos of `mail` + `todo` routes
        // ([`carries_read_state`]), not as events.
        EventKind::Mail | EventKind::ReadState | EventKind::Unknown => None,
    }
}

/// The union ids an event names (`union_ids`, comma-separated).
fn union_ids(event: &SyncEvent) -> impl Iterator<Item = &str> {
    event
        .ids
        .get("union_ids")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl Routes {
    /// Routes as configured (already validated).
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Self { routes }
    }

    /// Every configured route.
    pub fn all(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Routes that relay `event` into Outlook, in configuration order.
    pub fn matching(&self, event: &SyncEvent) -> Vec<&RouteConfig> {
        let Some(kind) = route_kind(event.kind) else {
            return Vec::new();
        };
        self.routes
            .iter()
            .filter(|r| r.direction.to_outlook() && r.kinds.contains(&kind))
            .filter(|r| match kind {
                RouteKind::Message => {
                    let cid = event
                        .ids
                        .get("conversation_id")
                        .or_else(|| event.ids.get("open_conversation_id"));
                    matches!((&r.dingtalk.conversation_id, cid), (Some(a), Some(b)) if a == b)
                }
                RouteKind::Event | RouteKind::Todo => r
                    .dingtalk
                    .union_id
                    .as_deref()
                    .is_some_and(|u| union_ids(event).any(|e| e == u)),
                RouteKind::Contact => true,
                RouteKind::Mail => false,
            })
            .collect()
    }

    /// Mailboxes some route names (lower-case): the only ones the relays may touch.
    pub fn mailboxes(&self) -> std::collections::BTreeSet<String> {
        self.routes
            .iter()
            .map(|r| r.mailbox.to_ascii_lowercase())
            .collect()
    }
}

/// True when `route` carries read state: Outlook mail relayed to DingTalk (kinds `mail`
/// and `todo`, direction `to_dingtalk` or `both`) for a DingTalk user (`union_id`).
pub fn carries_read_state(route: &RouteConfig) -> bool {
    route.direction.to_dingtalk()
        && route.kinds.contains(&RouteKind::Mail)
        && route.kinds.contains(&RouteKind::Todo)
        && route.dingtalk.union_id.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Direction, RouteDingTalk},
        sync::{Action, Source},
    };

    fn route(name: &str, kinds: &[RouteKind], direction: Direction) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            mailbox: format!("{name}@contoso.com"),
            kinds: kinds.to_vec(),
            direction,
            folder: "DingTalk".into(),
            todo_list: "DingTalk".into(),
            allow_deletes: false,
            rich_notifications: false,
            watch_folder: None,
            time_zone: "China Standard Time".into(),
            dingtalk: RouteDingTalk {
                conversation_id: Some(format!("cid-{name}")),
                union_id: Some(format!("union-{name}")),
                ..RouteDingTalk::default()
            },
        }
    }

    fn event(kind: EventKind, ids: &[(&str, &str)]) -> SyncEvent {
        let mut e = SyncEvent::new(Source::Dingtalk, kind, Action::Created);
        for (k, v) in ids {
            e.ids.insert((*k).into(), (*v).into());
        }
        e
    }

    fn names(routes: &Routes, e: &SyncEvent) -> Vec<String> {
        routes.matching(e).iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn messages_match_on_the_conversation_and_direction() {
        let routes = Routes::new(vec![
            route("a", &[RouteKind::Message], Direction::ToOutlook),
            route("b", &[RouteKind::Message], Direction::Both),
            route("c", &[RouteKind::Message], Direction::ToDingtalk),
            route("d", &[RouteKind::Event], Direction::Both),
        ]);
        let e = event(EventKind::Message, &[("conversation_id", "cid-a")]);
        assert_eq!(names(&routes, &e), ["a"]);
        let e = event(EventKind::Message, &[("conversation_id", "cid-b")]);
        assert_eq!(names(&routes, &e), ["b"]);
        let e = event(EventKind::Message, &[("conversation_id", "cid-c")]);
        assert!(names(&routes, &e).is_empty(), "to_dingtalk only");
        let e = event(EventKind::Message, &[("conversation_id", "cid-d")]);
        assert!(names(&routes, &e).is_empty(), "kind not enabled");
        assert!(names(&routes, &event(EventKind::Message, &[])).is_empty());
    }

    #[test]
    fn calendar_and_todo_match_on_the_union_id_list() {
        let routes = Routes::new(vec![
            route("a", &[RouteKind::Event, RouteKind::Todo], Direction::Both),
            route("b", &[RouteKind::Todo], Direction::ToOutlook),
        ]);
        let e = event(EventKind::CalendarEvent, &[("union_ids", "x,union-a")]);
        assert_eq!(names(&routes, &e), ["a"]);
        let e = event(EventKind::Todo, &[("union_ids", "union-b, union-a")]);
        assert_eq!(names(&routes, &e), ["a", "b"]);
        let e = event(EventKind::CalendarEvent, &[("union_ids", "union-b")]);
        assert!(names(&routes, &e).is_empty());
    }

    #[test]
    fn contacts_go_to_every_contact_route_and_unknown_nowhere() {
        let routes = Routes::new(vec![
            route("a", &[RouteKind::Contact], Direction::ToOutlook),
            route("b", &[RouteKind::Message], Direction::ToOutlook),
        ]);
        assert_eq!(
            names(&routes, &event(EventKind::Contact, &[("user_ids", "u1")])),
            ["a"]
        );
        assert!(names(&routes, &event(EventKind::Unknown, &[])).is_empty());
        assert_eq!(
            routes.mailboxes().into_iter().collect::<Vec<_>>(),
            ["a@contoso.com", "b@contoso.com"]
        );
    }

    #[test]
    fn read_state_needs_mail_and_todo_towards_dingtalk_and_a_user() {
        let mut r: RouteConfig = toml::from_str(
            "name = \"r\"\nmailbox = \"a@x\"\nkinds = [\"mail\", \"todo\"]\ndirection = \"both\"\n[dingtalk]\nunion_id = \"u\"\n",
        )
        .expect("route");
        assert!(carries_read_state(&r));
        r.direction = crate::config::Direction::ToOutlook;
        assert!(!carries_read_state(&r));
        r.direction = crate::config::Direction::ToDingtalk;
        r.kinds = vec![RouteKind::Mail];
        assert!(!carries_read_state(&r));
        r.kinds = vec![RouteKind::Mail, RouteKind::Todo];
        r.dingtalk.union_id = None;
        assert!(!carries_read_state(&r));
    }
}
