//! DingTalk chat messages → received mail in the route's folder, with their files as
//! attachments (robot messages carry a `downloadCode`, exchanged through DingTalk's API),
//! marked unread once complete; each step is resumable after a crash.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    MESSAGE_FILE_DOWNLOAD_PATH, Outcome, PROGRESS_TTL, RelayHandler,
    render::{MessageFile, chat_message, message_files},
    store_failure,
};
use crate::{
    config::RouteConfig,
    graph::{GraphClient, GraphError, client::UPLOAD_SESSION_MAX},
    store::{Job, Side},
    sync::{SyncEvent, keys::map_namespace, mapping},
    worker::JobFailure,
};

impl RelayHandler {
    pub(super) async fn relay_message(
        &self,
        graph: &GraphClient,
        route: &RouteConfig,
        event: &SyncEvent,
        job: &Job,
    ) -> Result<Outcome, JobFailure> {
        let Some(msg_id) = event.ids.get("message_id") else {
            return Ok(Outcome::new("", None, "skipped_without_message_id"));
        };
        let mailbox = route.mailbox.as_str();
        let ns = map_namespace("message", &route.name);
        let done_key = format!("{ns}:done:{msg_id}");
        let store = &self.store;
        if let Some(id) = store.kv_get(&done_key).await.map_err(store_failure)? {
            return Ok(Outcome::new(msg_id, Some(id), "already_relayed"));
        }
        let source = mapping::origin("message", msg_id);
        let mapped = store
            .map_get(&ns, Side::Left, msg_id)
            .await
            .map_err(store_failure)?;
        let (graph_id, result) = match mapped {
            Some(id) => (id, "resumed"),
            None => {
                let folder = graph.ensure_mail_folder(mailbox, &route.folder).await?;
                let body = mapping::mail_from_chat(
                    &chat_message(event, job.enqueued_at_ms),
                    mailbox,
                    &source,
                    &route.time_zone,
                );
                let created = match graph
                    .create_message_once(mailbox, &folder, body, &source)
                    .await
                {
                    Ok(c) => c,
                    Err(e) if e.is_not_found() => {
                        // The folder was deleted in Outlook: find or create it again next time.
                        graph.forget_cached_ids(mailbox);
                        return Err(JobFailure::transient(format!(
                            "folder `{}` is gone: {e}",
                            route.folder
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                store
                    .map_put(&ns, msg_id, &created.id)
                    .await
                    .map_err(store_failure)?;
                self.guard_echo(&created.id, &source).await?;
                let result = if created.existed {
                    "existed"
                } else {
                    "created"
                };
                (created.id, result)
            }
        };
        let files = message_files(&event.raw);
        let attachment_key = |i: usize| format!("{ns}:attachment:{msg_id}:{i}");
        // The item was deleted in Outlook before the relay finished: forget it (and its
        // attachments) and write it again on the next attempt.
        let (ns_ref, n_files, key_of) = (&ns, files.len(), &attachment_key);
        let gone = |e: GraphError| async move {
            if !e.is_not_found() {
                return JobFailure::from(e);
            }
            if let Err(s) = store.map_delete(ns_ref, Side::Left, msg_id).await {
                return store_failure(s);
            }
            for i in 0..n_files {
                if let Err(s) = store.kv_delete(&key_of(i)).await {
                    return store_failure(s);
                }
            }
            JobFailure::transient(format!(
                "the relayed message is gone ({e}); writing it again"
            ))
        };
        for (i, file) in files.iter().enumerate() {
            let key = attachment_key(i);
            if store.kv_get(&key).await.map_err(store_failure)?.is_some() {
                continue;
            }
            let (bytes, content_type) = self.download(route, event, file).await?;
            let attachment = match graph
                .add_attachment(mailbox, &graph_id, &file.name, &content_type, bytes)
                .await
            {
                Ok(a) => a,
                Err(e) => return Err(gone(e).await),
            };
            store
                .kv_put(
                    &key,
                    attachment.as_deref().unwrap_or("done"),
                    Some(PROGRESS_TTL),
                )
                .await
                .map_err(store_failure)?;
        }
        // Created as a received item, which Graph stores read; new chat shows unread.
        if let Err(e) = graph.set_read(mailbox, &graph_id, false).await {
            return Err(gone(e).await);
        }
        store
            .kv_put(&done_key, &graph_id, Some(PROGRESS_TTL))
            .await
            .map_err(store_failure)?;
        Ok(Outcome::new(msg_id, Some(graph_id), result))
    }

    /// Exchanges a `downloadCode` for a URL and fetches the bytes.
    async fn download(
        &self,
        route: &RouteConfig,
        event: &SyncEvent,
        file: &MessageFile,
    ) -> Result<(Bytes, String), JobFailure> {
        let dingtalk = self.dingtalk()?;
        let robot_code = event
            .ids
            .get("robot_code")
            .cloned()
            .or_else(|| route.dingtalk.robot_code.clone())
            .ok_or_else(|| {
                JobFailure::permanent(format!(
                    "message file without robotCode; set routes.dingtalk.robot_code of route `{}`",
                    route.name
                ))
            })?;
        let answer = dingtalk
            .api(
                reqwest::Method::POST,
                "robot.messageFiles.download",
                MESSAGE_FILE_DOWNLOAD_PATH,
                Some(&json!({ "downloadCode": file.download_code, "robotCode": robot_code })),
                None,
            )
            .await?;
        let url = answer
            .get("downloadUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| JobFailure::transient("DingTalk gave no downloadUrl"))?;
        let resp = self
            .http
            .get(url)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| JobFailure::transient(format!("file download: {}", e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            // The URL is short-lived; the next attempt asks for a new one.
            return Err(JobFailure::transient(format!(
                "file download answered {status}"
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > UPLOAD_SESSION_MAX)
        {
            return Err(JobFailure::permanent(format!(
                "attachment `{}` is larger than Outlook's {} MB",
                file.name,
                UPLOAD_SESSION_MAX / (1024 * 1024)
            )));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or("application/octet-stream")
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| JobFailure::transient(format!("file download: {}", e.without_url())))?;
        Ok((bytes, content_type))
    }
}
