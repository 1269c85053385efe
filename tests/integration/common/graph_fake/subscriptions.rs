//! Change-notification subscriptions: creation with Graph's checks and validation
//! handshake, renewal, expiry and deletion; and the test-side helpers that send change
//! notifications and lifecycle events.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    GraphFake,
    http::{Ctx, Reply, graph_error, not_found},
    state::{Shared, State, random_string},
    validation::{json_body, record_violation},
};

/// Outlook's longest subscription lifetime (<https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime>).
pub const MAX_SUBSCRIPTION_MINUTES: i64 = 4230;

/// A subscription as the fake keeps it.
#[derive(Debug, Clone)]
pub(super) struct FakeSubscription {
    pub(super) json: Value,
    pub(super) client_state: String,
    pub(super) notification_url: String,
    pub(super) lifecycle_url: Option<String>,
    pub(super) expires: chrono::DateTime<chrono::Utc>,
    pub(super) mailbox: String,
    /// `messages`, `events` or `contacts`.
    pub(super) collection: String,
    /// Messages of one folder (as named in the resource), or of the whole mailbox.
    pub(super) folder: Option<String>,
}

impl GraphFake {
    /// Live subscriptions (expired ones are dropped first).
    pub fn subscriptions(&self) -> Vec<Value> {
        let mut st = self.shared.state();
        purge_expired(&mut st);
        st.subscriptions.values().map(|s| s.json.clone()).collect()
    }

    /// Ids of subscriptions that expired without being renewed.
    pub fn expired_subscriptions(&self) -> Vec<String> {
        let mut st = self.shared.state();
        purge_expired(&mut st);
        st.expired_subscriptions.clone()
    }

    /// Graph drops a subscription on its own (before sending `subscriptionRemoved`).
    pub fn drop_subscription(&self, id: &str) {
        self.shared.state().subscriptions.remove(id);
    }

    /// The subscription watching `collection` (`messages`, `events`, `contacts`) of
    /// `mailbox`.
    pub fn subscription_for(&self, mailbox: &str, collection: &str) -> Option<Value> {
        let st = self.shared.state();
        st.subscriptions
            .values()
            .find(|s| s.mailbox == mailbox.to_lowercase() && s.collection == collection)
            .map(|s| s.json.clone())
    }

    /// A change notification collection for `item_id` on subscription `sub_id`, with the
    /// subscription's clientState unless `client_state` overrides it.
    pub fn notification_body(
        &self,
        sub_id: &str,
        change_type: &str,
        item_id: &str,
        client_state: Option<&str>,
    ) -> Value {
        let st = self.shared.state();
        let s = st.subscriptions.get(sub_id).expect("live subscription");
        notification(
            s,
            sub_id,
            &self.shared.config().tenant,
            change_type,
            item_id,
            client_state,
        )
    }

    /// POSTs `body` to the subscription's notificationUrl; returns the HTTP status.
    pub async fn deliver(&self, sub_id: &str, body: &Value) -> u16 {
        let url = {
            let st = self.shared.state();
            st.subscriptions
                .get(sub_id)
                .expect("live subscription")
                .notification_url
                .clone()
        };
        post_json(&url, body).await
    }

    /// Sends one change notification for `item_id`; returns the HTTP status.
    pub async fn notify(&self, sub_id: &str, change_type: &str, item_id: &str) -> u16 {
        let body = self.notification_body(sub_id, change_type, item_id, None);
        self.deliver(sub_id, &body).await
    }

    /// Sends a lifecycle event (`reauthorizationRequired`, `subscriptionRemoved`,
    /// `missed`) to the subscription's lifecycleNotificationUrl. Works for a subscription
    /// already dropped with [`GraphFake::drop_subscription`] when `known` is given.
    pub async fn lifecycle(&self, sub: &Value, event: &str, client_state: &str) -> u16 {
        let url = sub["lifecycleNotificationUrl"]
            .as_str()
            .expect("subscription has a lifecycleNotificationUrl")
            .to_string();
        let body = json!({"value": [{
            "subscriptionId": sub["id"],
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "tenantId": self.shared.config().tenant,
            "clientState": client_state,
            "lifecycleEvent": event,
        }]});
        post_json(&url, &body).await
    }

    /// The clientState a subscription was created with.
    pub fn client_state(&self, sub_id: &str) -> Option<String> {
        self.shared
            .state()
            .subscriptions
            .get(sub_id)
            .map(|s| s.client_state.clone())
    }
}

/// The change notification collection Graph would POST for `item_id` on `s`.
fn notification(
    s: &FakeSubscription,
    sub_id: &str,
    tenant: &str,
    change_type: &str,
    item_id: &str,
    client_state: Option<&str>,
) -> Value {
    let (kind, seg) = match s.collection.as_str() {
        "events" => ("#Microsoft.Graph.Event", "Events"),
        "contacts" => ("#Microsoft.Graph.Contact", "Contacts"),
        _ => ("#Microsoft.Graph.Message", "Messages"),
    };
    let resource = format!("Users/{}/{seg}/{item_id}", s.mailbox);
    json!({"value": [{
        "id": uuid::Uuid::new_v4().to_string(),
        "subscriptionId": sub_id,
        "subscriptionExpirationDateTime": s.json["expirationDateTime"],
        "clientState": client_state.unwrap_or(&s.client_state),
        "changeType": change_type,
        "resource": resource,
        "tenantId": tenant,
        "resourceData": {
            "@odata.type": kind,
            "@odata.id": resource,
            "@odata.etag": format!("W/\"{}\"", random_string(12)),
            "id": item_id,
        }
    }]})
}

/// With [`GraphFakeConfig::notify_changes`](super::GraphFakeConfig), notifies every live
/// subscription watching the messages of `mailbox` (or of the message's folder) that
/// `message_id` was `created` or `updated`, shortly after, from a thread of its own (as
/// Graph does, after the answer).
pub(super) fn notify_message_change(
    shared: &Shared,
    mailbox: &str,
    message_id: &str,
    folder_id: &str,
    change_type: &str,
) {
    let config = shared.config();
    if !config.notify_changes {
        return;
    }
    let deliveries: Vec<(String, Value)> = {
        let mut st = shared.state();
        purge_expired(&mut st);
        let Some(mb) = st.mailboxes.get(mailbox) else {
            return;
        };
        st.subscriptions
            .iter()
            .filter(|(_, s)| {
                s.mailbox == mailbox
                    && s.collection == "messages"
                    && s.json["changeType"]
                        .as_str()
                        .is_some_and(|c| c.split(',').any(|c| c.trim() == change_type))
                    && s.folder
                        .as_deref()
                        .is_none_or(|f| mb.folder_id(f, false).as_deref() == Some(folder_id))
            })
            .map(|(id, s)| {
                let body = notification(s, id, &config.tenant, change_type, message_id, None);
                (s.notification_url.clone(), body)
            })
            .collect()
    };
    if deliveries.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (url, body) in &deliveries {
                post_json(url, body).await;
            }
        });
    });
}

async fn post_json(url: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `(mailbox, collection, folder)` of a subscription resource such as
/// `users/{m}/mailFolders('inbox')/messages`, `users/{m}/messages`, `users/{m}/events`.
fn parse_resource(resource: &str) -> Option<(String, String, Option<String>)> {
    let path = resource.split('?').next()?.trim_matches('/');
    let segs: Vec<&str> = path.split('/').collect();
    if !segs.first()?.eq_ignore_ascii_case("users") {
        return None;
    }
    let mailbox = segs.get(1)?.to_lowercase();
    match &segs[2..] {
        [c] if ["messages", "events", "contacts"].contains(&c.to_lowercase().as_str()) => {
            Some((mailbox, c.to_lowercase(), None))
        }
        [f, c] if c.eq_ignore_ascii_case("messages") => {
            let lower = f.to_lowercase();
            let folder = lower
                .strip_prefix("mailfolders('")
                .and_then(|_| f.get(13..f.len() - 2))?;
            Some((mailbox, "messages".into(), Some(folder.to_string())))
        }
        [mf, f, c]
            if mf.eq_ignore_ascii_case("mailFolders") && c.eq_ignore_ascii_case("messages") =>
        {
            Some((mailbox, "messages".into(), Some(f.to_string())))
        }
        _ => None,
    }
}

/// What Graph requires of a rich (`includeResourceData`) Outlook subscription
/// (<https://learn.microsoft.com/graph/change-notifications-with-resource-data>): a base64 X.509 certificate and its id, `$select` in the resource,
/// no `$expand` but extended properties, and at most one day of lifetime.
fn rich_problems(body: &Value, resource: &str) -> Vec<String> {
    use base64::Engine;
    let mut problems = vec![];
    let der = body["encryptionCertificate"]
        .as_str()
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
    if der.is_none_or(|d| d.first() != Some(&0x30)) {
        problems
            .push("/encryptionCertificate: required, base64 X.509 DER, with resource data".into());
    }
    let id = body["encryptionCertificateId"].as_str().unwrap_or_default();
    if id.is_empty() || id.chars().count() > 128 {
        problems.push("/encryptionCertificateId: required, at most 128 characters".into());
    }
    let query = resource.split_once('?').map(|(_, q)| q).unwrap_or("");
    if !query.contains("$select=") {
        problems.push("/resource: Outlook rich subscriptions require $select".into());
    }
    if let Some((_, expand)) = query.split_once("$expand=")
        && !expand
            .to_lowercase()
            .starts_with("singlevalueextendedproperties")
        && !expand
            .to_lowercase()
            .starts_with("multivalueextendedproperties")
    {
        problems.push("/resource: only extended properties may be expanded".into());
    }
    let expires = body["expirationDateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    if expires.is_some_and(|t| {
        t.with_timezone(&chrono::Utc) > chrono::Utc::now() + chrono::Duration::minutes(1440)
    }) {
        problems.push("/expirationDateTime: rich Outlook subscriptions live at most 1 day".into());
    }
    problems
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!(
        "{url}{}{key}={}",
        if url.contains('?') { '&' } else { '?' },
        enc.replace('+', "%20")
    )
}

/// Graph's validation handshake: POST `?validationToken=…`; the answer must be 200,
/// `text/plain`, and the decoded token, within 10 s.
async fn validate_endpoint(url: &str) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application {}",
        random_string(16)
    );
    let resp = reqwest::Client::new()
        .post(with_query(url, "validationToken", &token))
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.unwrap_or_default();
    if status != 200 || !ct.starts_with("text/plain") || body != token {
        return Err(format!(
            "{url} answered {status} {ct:?} {body:?} to the validation request"
        ));
    }
    Ok(())
}

pub(super) fn purge_expired(st: &mut State) {
    let now = chrono::Utc::now();
    let expired: Vec<String> = st
        .subscriptions
        .iter()
        .filter(|(_, s)| s.expires <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        st.subscriptions.remove(&id);
        st.expired_subscriptions.push(id);
    }
}

fn expiration(ctx: &Ctx, body: &Value) -> Result<chrono::DateTime<chrono::Utc>, Reply> {
    let raw = body["expirationDateTime"].as_str().unwrap_or_default();
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) else {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "expirationDateTime is not a valid date-time.",
        ));
    };
    let t = t.with_timezone(&chrono::Utc);
    let now = chrono::Utc::now();
    if t <= now {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "Subscription expiration can only be in the future.",
        ));
    }
    if t > now + chrono::Duration::minutes(MAX_SUBSCRIPTION_MINUTES) + chrono::Duration::seconds(5)
    {
        return Err(graph_error(
            ctx,
            400,
            "InvalidRequest",
            "Subscription expiration can only be 4230 minutes in the future.",
        ));
    }
    Ok(t)
}

pub(super) async fn subscriptions_endpoint(ctx: &Ctx, shared: &Shared, rest: &[&str]) -> Reply {
    purge_expired(&mut shared.state());
    match (ctx.method.as_str(), rest) {
        ("POST", []) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.subscription",
                "subscription",
                true,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut problems = vec![];
            let client_state = body["clientState"].as_str().unwrap_or_default().to_string();
            if client_state.is_empty() {
                problems.push(
                    "/clientState: Graph echoes clientState in every notification; always set a secret one".to_string(),
                );
            }
            if client_state.chars().count() > 128 {
                problems.push("/clientState: longer than 128 characters".into());
            }
            let resource = body["resource"].as_str().unwrap_or_default().to_string();
            let parsed = parse_resource(&resource);
            if parsed.is_none() {
                problems.push(format!(
                    "/resource: {resource:?} is not an Outlook resource the fake knows"
                ));
            }
            if body["includeResourceData"] == json!(true) {
                problems.extend(rich_problems(&body, &resource));
            }
            for ct in body["changeType"].as_str().unwrap_or_default().split(',') {
                if !["created", "updated", "deleted"].contains(&ct.trim()) {
                    problems.push(format!(
                        "/changeType: {ct:?} is not created/updated/deleted"
                    ));
                }
            }
            if !problems.is_empty() {
                record_violation(shared, ctx, "subscription", problems.clone());
                return graph_error(ctx, 400, "InvalidRequest", &problems.join("; "));
            }
            let expires = match expiration(ctx, &body) {
                Ok(t) => t,
                Err(r) => {
                    record_violation(
                        shared,
                        ctx,
                        "subscription",
                        vec!["/expirationDateTime out of range".into()],
                    );
                    return r;
                }
            };
            let notification_url = body["notificationUrl"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let lifecycle_url = body["lifecycleNotificationUrl"]
                .as_str()
                .map(str::to_string);
            for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
                if let Err(why) = validate_endpoint(url).await {
                    return graph_error(
                        ctx,
                        400,
                        "ValidationError",
                        &format!(
                            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. ({why})"
                        ),
                    );
                }
            }
            let (mailbox, collection, folder) = parsed.expect("checked");
            let id = uuid::Uuid::new_v4().to_string();
            let mut json = body.clone();
            json["id"] = json!(id);
            json["applicationId"] = json!(shared.config().client_id);
            json["creatorId"] = json!(uuid::Uuid::new_v4().to_string());
            json["expirationDateTime"] =
                json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            shared.state().subscriptions.insert(
                id,
                FakeSubscription {
                    json: json.clone(),
                    client_state,
                    notification_url,
                    lifecycle_url,
                    expires,
                    mailbox,
                    collection,
                    folder,
                },
            );
            Reply::json(201, json)
        }
        ("GET", []) => {
            let st = shared.state();
            let values: Vec<Value> = st.subscriptions.values().map(|s| s.json.clone()).collect();
            Reply::json(200, json!({ "value": values }))
        }
        ("GET", [id]) => match shared.state().subscriptions.get(*id) {
            Some(s) => Reply::json(200, s.json.clone()),
            None => not_found(ctx),
        },
        ("PATCH", [id]) => {
            let body = match json_body(
                ctx,
                shared,
                "microsoft.graph.subscription",
                "subscription",
                false,
            ) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let expires = match expiration(ctx, &body) {
                Ok(t) => t,
                Err(r) => return r,
            };
            let mut st = shared.state();
            match st.subscriptions.get_mut(*id) {
                Some(s) => {
                    s.expires = expires;
                    s.json["expirationDateTime"] =
                        json!(expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    Reply::json(200, s.json.clone())
                }
                None => not_found(ctx),
            }
        }
        ("DELETE", [id]) => match shared.state().subscriptions.remove(*id) {
            Some(_) => Reply::empty(204),
            None => not_found(ctx),
        },
        ("POST", [id, "reauthorize"]) => match shared.state().subscriptions.get(*id) {
            Some(_) => Reply::empty(204),
            None => not_found(ctx),
        },
        _ => graph_error(
            ctx,
            405,
            "MethodNotAllowed",
            "Unsupported subscriptions call (fake).",
        ),
    }
}
