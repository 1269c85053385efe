//! Delta queries over a mailbox's change log: the first call lists every item, a
//! `$deltatoken` the items changed since, `$skiptoken` pages either.

use serde_json::{Value, json};

use super::{
    http::{Ctx, Reply, graph_error},
    state::{Mailbox, Shared},
};

/// One delta page over `items`, whose changes are logged under `log`: the first call
/// lists every item, a `$deltatoken` (the mailbox's change sequence) lists the items
/// changed since (current state, or `@removed`), `$skiptoken` pages either.
pub(super) fn delta_reply(
    ctx: &Ctx,
    shared: &Shared,
    mb: &Mailbox,
    log: &str,
    items: &[Value],
    link: String,
    show: impl Fn(&Value) -> Value,
) -> Reply {
    let page_size = ctx
        .header("prefer")
        .and_then(|p| {
            p.split(',')
                .find_map(|x| x.trim().strip_prefix("odata.maxpagesize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(shared.config().delta_page_size)
        .max(1);
    let gone = || {
        graph_error(
            ctx,
            410,
            "syncStateNotFound",
            "The sync state is not found (fake).",
        )
    };
    let (since, offset, snapshot) = if let Some(sk) = ctx.q("$skiptoken") {
        let parts: Vec<&str> = sk.split('.').collect();
        let [a, b, c] = parts[..] else { return gone() };
        let since = if a == "i" {
            None
        } else {
            match a.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => return gone(),
            }
        };
        match (b.parse::<usize>(), c.parse::<u64>()) {
            (Ok(o), Ok(snap)) if snap <= mb.seq => (since, o, snap),
            _ => return gone(),
        }
    } else if let Some(dt) = ctx.q("$deltatoken") {
        match dt.parse::<u64>() {
            Ok(v) if v <= mb.seq => (Some(v), 0, mb.seq),
            _ => return gone(),
        }
    } else {
        (None, 0, mb.seq)
    };
    let listed: Vec<Value> = match since {
        None => items.iter().map(&show).collect(),
        Some(since) => {
            let mut ids: Vec<String> = vec![];
            for (seq, id, f, _) in &mb.changes {
                if *seq > since && *seq <= snapshot && f == log && !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            ids.iter()
                .map(|id| match items.iter().find(|i| i["id"] == id.as_str()) {
                    Some(i) => show(i),
                    None => json!({"id": id, "@removed": {"reason": "deleted"}}),
                })
                .collect()
        }
    };
    let page: Vec<Value> = listed
        .iter()
        .skip(offset)
        .take(page_size)
        .cloned()
        .collect();
    let mut body = json!({ "value": page });
    // A link may carry the first request's query options already.
    let sep = if link.contains('?') { '&' } else { '?' };
    if offset + page_size < listed.len() {
        let since = since.map(|s| s.to_string()).unwrap_or_else(|| "i".into());
        body["@odata.nextLink"] = json!(format!(
            "{link}{sep}$skiptoken={since}.{}.{snapshot}",
            offset + page_size
        ));
    } else {
        body["@odata.deltaLink"] = json!(format!("{link}{sep}$deltatoken={snapshot}"));
    }
    Reply::json(200, body)
}
