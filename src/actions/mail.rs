//! `dingtalk.send_mail`: a mail from a DingTalk mailbox, submitted over the mailbox
//! route's SMTP (`[mailbox_routes.smtp]`), then a copy appended to its Sent folder over
//! IMAP (unless the route says the server files one itself).
//!
//! Once per `Idempotency-Key`, twice over: the action layer replays the stored answer
//! ([`super::idempotency`]), and the mail's `Message-ID` is derived from the key
//! ([`compose::message_id_for_key`]) and looked for in the Sent folder before sending,
//! so that a crash after the server accepted the mail but before the answer was stored
//! sends nothing twice. That look needs the Sent copy (ours, or the server's own): a
//! route with `save_sent_copy = false` on a server that files none cannot tell. And a
//! connection that breaks right after the message was handed over leaves no copy either
//! way; the answer then says the mail may have gone (503, retried by the caller).

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ActionContext, call::DingTalkMailInput};
use crate::{
    config::{Config, MailboxRouteConfig},
    error::{ApiError, ErrorCode},
    mail::{
        Folder, ImapClient, ImapError, ImapSettings,
        compose::{self, OutgoingMail},
        sent,
        smtp::{self, SmtpError, SmtpSettings},
    },
};

/// The action's name (in messages).
const NAME: &str = "dingtalk.send_mail";
/// Seconds a caller waits before retrying after a temporary failure.
const RETRY_SECS: u64 = 30;

/// The mailbox route to send from: the given one when it is configured (any other name
/// is 403 `forbidden` naming the field: only configured mailboxes are ever used) and can
/// send (404 `not_configured` naming the setting otherwise), else the only route that
/// can send.
pub fn sending_route<'c>(
    config: &'c Config,
    given: Option<&str>,
) -> Result<&'c MailboxRouteConfig, ApiError> {
    let no_smtp = |name: &str| {
        ApiError::new(
            ErrorCode::NotConfigured,
            format!(
                "`{NAME}` needs the SMTP part of mailbox route `{name}`, which is not configured; add [mailbox_routes.smtp] with host (and port, tls) as the DingTalk Mail client settings show them"
            ),
        )
    };
    match given {
        Some(name) => match config.mailbox_route(name) {
            Some(r) if r.smtp.is_some() => Ok(r),
            Some(r) => Err(no_smtp(&r.name)),
            None => {
                let why = format!(
                    "`{name}` is not a configured mailbox route; choose one from GET /v1/options/mail-routes"
                );
                Err(ApiError::new(ErrorCode::Forbidden, format!("route: {why}"))
                    .with_details(json!({ "fields": { "route": why } })))
            }
        },
        None => {
            let sending: Vec<&MailboxRouteConfig> = config
                .mailbox_routes
                .iter()
                .filter(|r| r.smtp.is_some())
                .collect();
            match sending.as_slice() {
                [only] => Ok(only),
                [] => Err(ApiError::new(
                    ErrorCode::NotConfigured,
                    format!(
                        "`{NAME}` needs a mailbox route with an SMTP part, and none has one; add [mailbox_routes.smtp] to a [[mailbox_routes]] entry"
                    ),
                )),
                _ => Err(ApiError::invalid_field(
                    "route",
                    "is required; choose one from GET /v1/options/mail-routes",
                )),
            }
        }
    }
}

/// What an IMAP failure answers: a refused login explains the console switch (the
/// error's own text), a lost server asks for a retry.
fn imap_error(e: ImapError) -> ApiError {
    tracing::warn!(error = %e, "dingtalk.send_mail: IMAP failed");
    if e.is_connection() {
        return ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("DingTalk Mail (IMAP) is unreachable, nothing was sent: {e}"),
        )
        .with_retry_after(RETRY_SECS);
    }
    ApiError::new(
        ErrorCode::UpstreamError,
        format!("DingTalk Mail (IMAP), nothing was sent: {e}"),
    )
}

/// What an SMTP failure answers: refused recipients are bad input naming their field,
/// a 4xx or a broken connection is 503 with `Retry-After`, a refused login explains
/// the console switch and the client password.
fn smtp_error(e: SmtpError, input: &DingTalkMailInput) -> ApiError {
    tracing::warn!(error = %e, "dingtalk.send_mail: SMTP failed");
    match &e {
        SmtpError::RecipientsRefused(refused) => {
            let mut fields = std::collections::BTreeMap::new();
            for r in refused {
                let field = [
                    ("to", &input.to),
                    ("cc", &input.cc),
                    ("bcc", &input.bcc),
                ]
                .into_iter()
                .find(|(_, list)| list.iter().any(|a| a.eq_ignore_ascii_case(&r.address)))
                .map(|(f, _)| f)
                .unwrap_or("to");
                fields.entry(field.to_string()).or_insert_with(|| {
                    format!(
                        "the DingTalk Mail server refused `{}` ({}); nothing was sent",
                        r.address, r.reply
                    )
                });
            }
            ApiError::invalid_fields(fields)
        }
        _ if e.maybe_sent() => ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!(
                "the connection to the DingTalk Mail SMTP server broke after the mail was handed over: it may have been sent; retry with the same Idempotency-Key (it is looked up in Sent first): {e}"
            ),
        )
        .with_retry_after(RETRY_SECS),
        _ if e.is_retryable() => ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("DingTalk Mail (SMTP) cannot take the mail now, nothing was sent: {e}"),
        )
        .with_retry_after(RETRY_SECS),
        _ => ApiError::new(
            ErrorCode::UpstreamError,
            format!("DingTalk Mail (SMTP), nothing was sent: {e}"),
        ),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The answer, flat.
#[allow(clippy::too_many_arguments)]
fn answer(
    route: &MailboxRouteConfig,
    from: &str,
    i: &DingTalkMailInput,
    message_id: &str,
    sent_at: DateTime<Utc>,
    saved_to_sent: bool,
    sent_folder: Option<&Folder>,
    already_sent: bool,
) -> Value {
    json!({
        "id": message_id,
        "message_id": message_id,
        "route": route.name,
        "from": from,
        "to": i.to.join(", "),
        "cc": i.cc.join(", "),
        "bcc": i.bcc.join(", "),
        "subject": i.subject,
        "sent_at": rfc3339(sent_at),
        "saved_to_sent": saved_to_sent,
        "sent_folder": sent_folder.map(|f| f.name.display.clone()),
        "already_sent": already_sent,
    })
}

/// Runs `dingtalk.send_mail` (see the module doc).
pub async fn send(ctx: &ActionContext<'_>, i: &DingTalkMailInput) -> Result<Value, ApiError> {
    let route = sending_route(ctx.config, i.route.as_deref())?;
    let smtp_settings = SmtpSettings::from_route(route)
        .ok_or_else(|| ApiError::internal("a validated SMTP part lacks its password"))?;
    let smtp_config = route
        .smtp
        .as_ref()
        .ok_or_else(|| ApiError::internal("the route lost its SMTP part"))?;
    let from = smtp_settings.user.clone();
    let domain = compose::domain_of(&from)
        .ok_or_else(|| ApiError::internal("a validated SMTP user has no domain"))?;
    let message_id = match ctx.idempotency_key {
        Some(key) => {
            compose::message_id_for_key(&format!("{}\n{}", ctx.caller.id, route.name), key, domain)
        }
        None => compose::random_message_id(domain),
    };

    // The Sent folder: to look for an earlier send of this key, and for the copy.
    let mut imap: Option<(ImapClient, Folder)> = None;
    if ctx.idempotency_key.is_some() || smtp_config.save_sent_copy {
        let settings = ImapSettings::from_config(&route.imap).map_err(imap_error)?;
        let mut client = ImapClient::connect(&settings).await.map_err(imap_error)?;
        let Some(folder) = sent::find_sent(&mut client, smtp_config.sent_folder.as_deref())
            .await
            .map_err(imap_error)?
        else {
            client.logout().await;
            return Err(ApiError::new(
                ErrorCode::NotConfigured,
                format!(
                    "mailbox route `{}`: no Sent folder found in DingTalk Mail (none is marked \\Sent and none has a usual name such as 已发送 or Sent); name it in smtp.sent_folder. Nothing was sent",
                    route.name
                ),
            ));
        };
        if ctx.idempotency_key.is_some() {
            client.examine(&folder.name).await.map_err(imap_error)?;
            let found = client
                .search_message_id(&message_id)
                .await
                .map_err(imap_error)?;
            if !found.is_empty() {
                let sent_at = client
                    .fetch_meta(&found[..1])
                    .await
                    .map_err(imap_error)?
                    .first()
                    .and_then(|m| m.internal_date)
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_else(Utc::now);
                client.logout().await;
                tracing::info!(route = %route.name, message_id = %message_id, "dingtalk.send_mail: already in Sent, not sent again");
                return Ok(answer(
                    route,
                    &from,
                    i,
                    &message_id,
                    sent_at,
                    true,
                    Some(&folder),
                    true,
                ));
            }
        }
        imap = Some((client, folder));
    }

    let mail = OutgoingMail {
        from: from.clone(),
        to: i.to.clone(),
        cc: i.cc.clone(),
        bcc: i.bcc.clone(),
        reply_to: i.reply_to.clone(),
        subject: i.subject.clone(),
        text: i.text.clone(),
        html: i.html.clone(),
    };
    let now = SystemTime::now();
    let composed = compose::compose(&mail, &message_id, now)
        .map_err(|e| ApiError::invalid_field(e.field, e.reason))?;
    if let Err(e) = smtp::submit(&smtp_settings, &from, &composed.recipients, &composed.raw).await {
        if let Some((client, _)) = imap {
            client.logout().await;
        }
        return Err(smtp_error(e, i));
    }
    let sent_at: DateTime<Utc> = now.into();
    tracing::info!(route = %route.name, message_id = %message_id, recipients = composed.recipients.len(), "DingTalk mail sent");

    let (saved, folder) = match imap {
        Some((client, folder)) if smtp_config.save_sent_copy => {
            let saved = append_copy(route, client, &folder, &composed.sent_copy, sent_at).await;
            (saved, Some(folder))
        }
        Some((client, folder)) => {
            client.logout().await;
            (false, Some(folder))
        }
        None => (false, None),
    };
    // Recorded for `dingbridge undo`, which lists what the bridge did in the mailbox: a
    // sent mail cannot be called back, and its Sent copy stays (see the README).
    let entry = crate::store::AuditEntry::now(
        "mail.sent",
        json!({
            "route": route.name, "message_id": message_id, "sent_at": rfc3339(sent_at),
            "recipients": composed.recipients.len(), "saved_to_sent": saved,
            "sent_folder": folder.as_ref().map(|f| f.name.display.clone()),
        }),
    );
    if let Err(e) = ctx.store.audit_append(&entry).await {
        // The mail is sent: a failed record must not turn into an error (a retry would
        // look it up in Sent, but one without an Idempotency-Key would send it again).
        tracing::warn!(route = %route.name, message_id = %message_id, error = %e, "sent mail not recorded in the audit trail");
    }
    Ok(answer(
        route,
        &from,
        i,
        &message_id,
        sent_at,
        saved,
        folder.as_ref(),
        false,
    ))
}

/// Appends the Sent copy (read, dated now), on the open connection, or on a new one
/// when that broke while the mail was submitted. The mail is sent either way: a failure
/// here is logged and answered as `saved_to_sent: false`, never as an error (a retry
/// would send it again).
async fn append_copy(
    route: &MailboxRouteConfig,
    mut client: ImapClient,
    folder: &Folder,
    raw: &[u8],
    sent_at: DateTime<Utc>,
) -> bool {
    let date = sent_at.fixed_offset();
    let mut result = client
        .append(&folder.name, &["\\Seen"], Some(&date), raw)
        .await;
    if matches!(&result, Err(e) if e.is_connection()) {
        result = match ImapSettings::from_config(&route.imap) {
            Ok(settings) => match ImapClient::connect(&settings).await {
                Ok(c) => {
                    client = c;
                    client
                        .append(&folder.name, &["\\Seen"], Some(&date), raw)
                        .await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
    }
    client.logout().await;
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(route = %route.name, folder = %folder.name, error = %e, "the mail was sent but its copy could not be saved in Sent");
            false
        }
    }
}
