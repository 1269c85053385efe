//! Every kind of background job and what it carries, as one enum shared by the code
//! that queues a job and the handler that runs it. The store keeps jobs generic (a
//! `kind` string and a JSON `payload`); [`Task`] reads and writes exactly that pair,
//! adjacently tagged, so jobs queued by earlier versions still parse (see the captured
//! jobs under `tests/fixtures/jobs/`).
//!
//! Payload fields that are the upstream party's own free-form JSON (a Graph notification
//! body, the echo body) stay [`Value`]; everything the bridge reads by name is typed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    event::{SyncEvent, TriggerEvent},
    store::Job,
};

/// Kind of [`Task::DingtalkEvent`].
pub const DINGTALK_EVENT: &str = "dingtalk.event";
/// Kind of [`Task::GraphNotification`].
pub const GRAPH_NOTIFICATION: &str = "graph.notification";
/// Kind of [`Task::GraphLifecycle`].
pub const GRAPH_LIFECYCLE: &str = "graph.lifecycle";
/// Kind of [`Task::GraphResync`].
pub const GRAPH_RESYNC: &str = "graph.resync";
/// Kind of [`Task::HookDelivery`].
pub const HOOK_DELIVERY: &str = "hook.deliver";
/// Kind of [`Task::Echo`].
pub const ECHO: &str = "echo";

/// One job: its kind (the serde tag, stored as `kind`) and its typed payload (stored as
/// `payload`). The names are the ones earlier versions wrote; never rename one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Task {
    /// A normalised DingTalk event from any delivery mode (HTTP push, robot callback,
    /// Stream, backfill), relayed towards Outlook by `sync`.
    #[serde(rename = "dingtalk.event")]
    DingtalkEvent(SyncEvent),
    /// A Graph change notification, relayed towards DingTalk by `sync`.
    #[serde(rename = "graph.notification")]
    GraphNotification(GraphNotification),
    /// A Graph lifecycle notification (`reauthorizationRequired`, `subscriptionRemoved`,
    /// `missed`): the subscription is renewed or recreated, then resynced.
    #[serde(rename = "graph.lifecycle")]
    GraphLifecycle(GraphNotification),
    /// A delta resync of a new or replaced subscription's collection.
    #[serde(rename = "graph.resync")]
    GraphResync(GraphResync),
    /// One signed delivery of a trigger event to one REST hook (run by `outbound`).
    #[serde(rename = "hook.deliver")]
    HookDelivery(HookDelivery),
    /// A diagnostic echo: the body posted to `/webhooks/echo`, posted on to the target.
    #[serde(rename = "echo")]
    Echo(Value),
}

/// Payload of [`Task::GraphNotification`] and [`Task::GraphLifecycle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNotification {
    /// The notification as Graph sent it (a `changeNotification`; the handler reads it
    /// as `graph::notifications::ChangeNotification`).
    pub notification: Value,
    /// The subscription it belongs to, as the store held it when it arrived.
    pub subscription: SubscriptionRecord,
    /// The POST's `validationTokens` (rich notifications; empty otherwise).
    #[serde(default)]
    pub validation_tokens: Vec<String>,
}

/// Payload of [`Task::GraphResync`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphResync {
    /// The subscription whose collection is resynced.
    pub subscription: SubscriptionRecord,
}

/// Payload of [`Task::HookDelivery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookDelivery {
    /// The REST hook to deliver to.
    pub hook_id: String,
    /// The event, as published.
    pub event: TriggerEvent,
}

/// What a Graph subscription watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
    /// Messages of a folder (or the whole mailbox).
    Messages,
    /// Calendar events.
    Events,
    /// Contacts.
    Contacts,
}

/// One live Graph subscription, as `graph::subscriptions` keeps it in the store and Graph
/// jobs carry it (hence defined here, below both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Graph's subscription id.
    pub id: String,
    /// Route name.
    pub route: String,
    /// Mailbox watched.
    pub mailbox: String,
    /// What it watches.
    pub watched: Watched,
    /// The `resource` it was created with.
    pub resource: String,
    /// Secret echoed in every notification.
    pub client_state: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Created with `includeResourceData`.
    #[serde(default)]
    pub rich: bool,
    /// Messages: the watched folder (well-known name or id), for delta resyncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The `notificationUrl` it was created with (a changed `public_url` means a new
    /// subscription: Graph cannot change it in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
}

impl Task {
    /// The stored `kind` of this task.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::DingtalkEvent(_) => DINGTALK_EVENT,
            Task::GraphNotification(_) => GRAPH_NOTIFICATION,
            Task::GraphLifecycle(_) => GRAPH_LIFECYCLE,
            Task::GraphResync(_) => GRAPH_RESYNC,
            Task::HookDelivery(_) => HOOK_DELIVERY,
            Task::Echo(_) => ECHO,
        }
    }

    /// The task as a fresh job (new id, enqueued now) for the store.
    pub fn into_job(self) -> Job {
        let kind = self.kind();
        // Each payload on its own, not through the tagged envelope: an `echo` payload is
        // moved as it is, and nothing is copied twice on the ingest path. Every payload is
        // plain data with string keys, so serialising cannot fail.
        let payload = match self {
            Task::Echo(v) => Ok(v),
            Task::DingtalkEvent(e) => serde_json::to_value(e),
            Task::GraphNotification(n) | Task::GraphLifecycle(n) => serde_json::to_value(n),
            Task::GraphResync(r) => serde_json::to_value(r),
            Task::HookDelivery(h) => serde_json::to_value(h),
        }
        .unwrap_or_default();
        Job::new(kind, payload)
    }

    /// Reads a stored job's kind and payload (the same shape the tagged enum reads, without
    /// building an envelope and copying the payload into it first).
    pub fn from_job(job: &Job) -> Result<Task, serde_json::Error> {
        use serde::de::Error as _;
        let p = &job.payload;
        Ok(match job.kind.as_str() {
            DINGTALK_EVENT => Task::DingtalkEvent(SyncEvent::deserialize(p)?),
            GRAPH_NOTIFICATION => Task::GraphNotification(GraphNotification::deserialize(p)?),
            GRAPH_LIFECYCLE => Task::GraphLifecycle(GraphNotification::deserialize(p)?),
            GRAPH_RESYNC => Task::GraphResync(GraphResync::deserialize(p)?),
            HOOK_DELIVERY => Task::HookDelivery(HookDelivery::deserialize(p)?),
            ECHO => Task::Echo(p.clone()),
            other => {
                return Err(serde_json::Error::unknown_variant(
                    other,
                    &[
                        DINGTALK_EVENT,
                        GRAPH_NOTIFICATION,
                        GRAPH_LIFECYCLE,
                        GRAPH_RESYNC,
                        HOOK_DELIVERY,
                        ECHO,
                    ],
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs written by the version before this enum existed, captured from the store as
    /// the integration tests named here made them (each file holds the job exactly as
    /// `store::Job` serialised it, one line).
    const CAPTURED: &[(&str, &str, &str)] = &[
        (
            "dingtalk.event.push-todo-updated",
            include_str!("../tests/fixtures/jobs/dingtalk.event.push-todo-updated.json"),
            "dingtalk_in::a_redis_outage_gets_503_with_retry_after_so_dingtalk_retries (HTTP push)",
        ),
        (
            "dingtalk.event.push-calendar-updated",
            include_str!("../tests/fixtures/jobs/dingtalk.event.push-calendar-updated.json"),
            "dingtalk_in::an_event_delivered_20_times_to_two_instances_is_queued_once_and_acknowledged",
        ),
        (
            "dingtalk.event.push-unknown",
            include_str!("../tests/fixtures/jobs/dingtalk.event.push-unknown.json"),
            "dingtalk_in::an_unknown_event_type_is_queued_and_visible_in_the_audit",
        ),
        (
            "dingtalk.event.push-todo-created",
            include_str!("../tests/fixtures/jobs/dingtalk.event.push-todo-created.json"),
            "dingtalk_in::the_printed_curl_commands_are_accepted_by_the_service",
        ),
        (
            "dingtalk.event.robot-callback",
            include_str!("../tests/fixtures/jobs/dingtalk.event.robot-callback.json"),
            "dingtalk_in::a_valid_robot_callback_is_queued_once_and_its_session_webhook_kept",
        ),
        (
            "dingtalk.event.robot-group-message",
            include_str!("../tests/fixtures/jobs/dingtalk.event.robot-group-message.json"),
            "relays::a_group_message_lands_once_in_the_folder_despite_ten_deliveries_and_a_crash_mid_write",
        ),
        (
            "dingtalk.event.backfill-contact",
            include_str!("../tests/fixtures/jobs/dingtalk.event.backfill-contact.json"),
            "dingtalk_in::backfill_queues_every_failed_event_once_even_with_two_instances",
        ),
        (
            "dingtalk.event.backfill-calendar",
            include_str!("../tests/fixtures/jobs/dingtalk.event.backfill-calendar.json"),
            "dingtalk_in::backfill_queues_every_failed_event_once_even_with_two_instances",
        ),
        (
            "dingtalk.event.backfill-todo-deleted",
            include_str!("../tests/fixtures/jobs/dingtalk.event.backfill-todo-deleted.json"),
            "dingtalk_in::backfill_queues_every_failed_event_once_even_with_two_instances",
        ),
        (
            "dingtalk.event.stream-calendar",
            include_str!("../tests/fixtures/jobs/dingtalk.event.stream-calendar.json"),
            "dingtalk_stream::serve_in_stream_mode_queues_each_event_once_across_a_dropped_socket",
        ),
        (
            "graph.notification.mail-created",
            include_str!("../tests/fixtures/jobs/graph.notification.mail-created.json"),
            "graph_in::notifications_with_the_right_client_state_are_queued_once_and_others_ignored",
        ),
        (
            "graph.notification.mail-updated",
            include_str!("../tests/fixtures/jobs/graph.notification.mail-updated.json"),
            "graph_sync::a_new_outlook_mail_arrives_as_exactly_one_dingtalk_message",
        ),
        (
            "graph.notification.event-created",
            include_str!("../tests/fixtures/jobs/graph.notification.event-created.json"),
            "graph_sync::outlook_events_reach_the_dingtalk_calendar_and_bridge_written_ones_do_not",
        ),
        (
            "graph.notification.event-updated",
            include_str!("../tests/fixtures/jobs/graph.notification.event-updated.json"),
            "graph_sync::outlook_events_reach_the_dingtalk_calendar_and_bridge_written_ones_do_not",
        ),
        (
            "graph.notification.rich-mail-created",
            include_str!("../tests/fixtures/jobs/graph.notification.rich-mail-created.json"),
            "graph_sync::rich_notifications_are_decrypted_and_bad_validation_tokens_relay_nothing",
        ),
        (
            "graph.notification.rich-route-mail-created",
            include_str!("../tests/fixtures/jobs/graph.notification.rich-route-mail-created.json"),
            "graph_sync::a_rich_route_subscribes_with_its_certificate_and_relays_decrypted_mail_unfetched",
        ),
        (
            "graph.lifecycle.subscription-removed",
            include_str!("../tests/fixtures/jobs/graph.lifecycle.subscription-removed.json"),
            "graph_sync::subscription_removed_and_missed_recreate_and_resync_exactly_the_gap",
        ),
        (
            "graph.lifecycle.reauthorization-required",
            include_str!("../tests/fixtures/jobs/graph.lifecycle.reauthorization-required.json"),
            "graph_sync::subscription_removed_and_missed_recreate_and_resync_exactly_the_gap",
        ),
        (
            "graph.lifecycle.missed",
            include_str!("../tests/fixtures/jobs/graph.lifecycle.missed.json"),
            "graph_sync::subscription_removed_and_missed_recreate_and_resync_exactly_the_gap",
        ),
        (
            "graph.lifecycle.events-missed",
            include_str!("../tests/fixtures/jobs/graph.lifecycle.events-missed.json"),
            "graph_sync::outlook_events_reach_the_dingtalk_calendar_and_bridge_written_ones_do_not",
        ),
        (
            "graph.resync.mail",
            include_str!("../tests/fixtures/jobs/graph.resync.mail.json"),
            "graph_sync::a_new_outlook_mail_arrives_as_exactly_one_dingtalk_message (subscription task)",
        ),
        (
            "graph.resync.events",
            include_str!("../tests/fixtures/jobs/graph.resync.events.json"),
            "graph_sync::outlook_events_reach_the_dingtalk_calendar_and_bridge_written_ones_do_not",
        ),
        (
            "graph.resync.rich-mail",
            include_str!("../tests/fixtures/jobs/graph.resync.rich-mail.json"),
            "graph_sync::a_rich_route_subscribes_with_its_certificate_and_relays_decrypted_mail_unfetched",
        ),
        (
            "hook.deliver.sync-failed",
            include_str!("../tests/fixtures/jobs/hook.deliver.sync-failed.json"),
            "lowcode::a_rest_hook_receives_one_correctly_signed_delivery_per_event (sync.failed of a dead echo)",
        ),
        (
            "echo.text",
            include_str!("../tests/fixtures/jobs/echo.text.json"),
            "spine::an_accepted_event_reaches_the_target_through_the_worker",
        ),
        (
            "echo.bare",
            include_str!("../tests/fixtures/jobs/echo.bare.json"),
            "lowcode::a_rest_hook_receives_one_correctly_signed_delivery_per_event",
        ),
    ];

    #[test]
    fn jobs_queued_by_the_previous_version_parse_and_serialise_to_the_same_json() {
        for (name, text, origin) in CAPTURED {
            let stored: Job = serde_json::from_str(text.trim_end())
                .unwrap_or_else(|e| panic!("{name} ({origin}): not a job: {e}"));
            let task = Task::from_job(&stored)
                .unwrap_or_else(|e| panic!("{name} ({origin}): does not parse: {e}"));
            assert_eq!(task.kind(), stored.kind, "{name}");
            assert!(name.starts_with(task.kind()), "{name} parsed as {task:?}");
            // Written back through the enum: byte for byte what was stored.
            let mut again = task.into_job();
            again.id = stored.id.clone();
            again.enqueued_at_ms = stored.enqueued_at_ms;
            assert_eq!(
                serde_json::to_string(&again).expect("serialises"),
                text.trim_end(),
                "{name} ({origin})"
            );
        }
    }

    #[test]
    fn the_fields_read_by_name_are_typed() {
        let task = |name: &str| {
            let (_, text, _) = CAPTURED
                .iter()
                .find(|(n, _, _)| *n == name)
                .expect("captured");
            let job: Job = serde_json::from_str(text).expect("job");
            Task::from_job(&job).expect("task")
        };
        let Task::DingtalkEvent(e) = task("dingtalk.event.robot-callback") else {
            panic!("not a DingTalk event");
        };
        assert_eq!(e.ids["conversation_id"], "cidGroup1");
        assert_eq!(
            e.raw["sessionWebhook"].as_str().map(|u| u.is_empty()),
            Some(false)
        );
        let Task::GraphNotification(n) = task("graph.notification.mail-created") else {
            panic!("not a notification");
        };
        assert_eq!(n.subscription.id, "sub-1");
        assert_eq!(n.subscription.watched, Watched::Messages);
        assert_eq!(n.notification["changeType"], "created");
        let Task::GraphNotification(n) = task("graph.notification.rich-mail-created") else {
            panic!("not a notification");
        };
        assert!(!n.validation_tokens.is_empty());
        let Task::GraphResync(r) = task("graph.resync.mail") else {
            panic!("not a resync");
        };
        assert_eq!(r.subscription.folder.as_deref(), Some("inbox"));
        let Task::HookDelivery(d) = task("hook.deliver.sync-failed") else {
            panic!("not a delivery");
        };
        assert!(d.hook_id.starts_with("hook_"));
        assert_eq!(d.event.event, "sync.failed");
        assert_eq!(d.event.fields["job_kind"], "echo");
    }

    #[test]
    fn each_kind_name_is_the_serde_tag() {
        let record = SubscriptionRecord {
            id: "s".into(),
            route: "r".into(),
            mailbox: "m".into(),
            watched: Watched::Events,
            resource: "res".into(),
            client_state: "c".into(),
            expires_at: "e".into(),
            rich: false,
            folder: None,
            notification_url: None,
        };
        let notification = GraphNotification {
            notification: Value::Null,
            subscription: record.clone(),
            validation_tokens: vec![],
        };
        let all = [
            Task::DingtalkEvent(SyncEvent::new(
                crate::event::Source::Dingtalk,
                crate::event::EventKind::Message,
                crate::event::Action::Created,
            )),
            Task::GraphNotification(notification.clone()),
            Task::GraphLifecycle(notification),
            Task::GraphResync(GraphResync {
                subscription: record,
            }),
            Task::HookDelivery(HookDelivery {
                hook_id: "h".into(),
                event: TriggerEvent::with_id("sync.failed", "i", "r", chrono::Utc::now()),
            }),
            Task::Echo(serde_json::json!({"event_id": "e"})),
        ];
        for task in all {
            let job = task.clone().into_job();
            assert_eq!(job.kind, task.kind());
            assert_eq!(Task::from_job(&job).expect("parses"), task);
        }
    }

    #[test]
    fn an_unreadable_payload_is_an_error_naming_the_field() {
        let job = Job::new(GRAPH_RESYNC, serde_json::json!({"subscription": null}));
        let e = Task::from_job(&job).expect_err("refused");
        assert!(e.to_string().contains("SubscriptionRecord"), "{e}");
        let job = Job::new("graph.unheard_of", serde_json::json!({}));
        assert!(Task::from_job(&job).is_err());
    }
}
