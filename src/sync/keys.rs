//! Store keys and namespaces shared by the relays of both directions, in one place so the
//! relay modules depend on this and not on each other. Each is stored: never change one.

/// Prefix of the `sourceId` of every DingTalk todo made for an Outlook task.
pub const TASK_SOURCE_PREFIX: &str = "outlook-task-";
/// Prefix of the `sourceId` of every DingTalk todo the bridge makes for a mail.
pub const TODO_SOURCE_PREFIX: &str = "outlook-mail-";
/// Id-pair namespace of relayed mail: left = DingTalk message id, right = Graph id.
pub const MAIL_NS: &str = "outlook-mail";
/// Prefix of the id-pair namespaces of read-state todos (see [`mail_todo_ns`]).
pub const MAIL_TODO_NS: &str = "outlook-mail-todo";
/// Id-pair namespace of relayed events: left = DingTalk event id, right = Graph id.
pub const EVENT_NS: &str = "outlook-event";

/// Id-pair namespace of the DingTalk todos made for relayed mail on `route`: left =
/// DingTalk task id, right = Graph message id.
pub fn mail_todo_ns(route: &str) -> String {
    format!("{MAIL_TODO_NS}:{route}")
}

/// Store key of the content version last relayed for To Do task `id` on `route`.
pub fn version_key(route: &str, id: &str) -> String {
    format!("todo-version:{route}:{id}")
}

/// Mapping namespace of one kind on one route (`left` = DingTalk id, `right` = Graph id).
pub fn map_namespace(kind: &str, route: &str) -> String {
    format!("relay:{kind}:{route}")
}

/// Echo guard of a Graph item the bridge just wrote: the Outlook → DingTalk direction
/// does not relay it back.
pub fn graph_echo_key(graph_id: &str) -> String {
    format!("echo:graph:{graph_id}")
}

/// Echo guard of a DingTalk object the bridge just wrote: the DingTalk → Outlook
/// direction does not relay it back.
pub fn dingtalk_echo_key(dingtalk_id: &str) -> String {
    format!("echo:dingtalk:{dingtalk_id}")
}

/// The claim (a store lease) held by the one job writing a Graph item's state, in either
/// direction.
pub fn graph_item_claim(graph_id: &str) -> String {
    format!("relay:graph:{graph_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_keep_their_format() {
        assert_eq!(mail_todo_ns("r"), "outlook-mail-todo:r");
        assert_eq!(version_key("r", "t"), "todo-version:r:t");
        assert_eq!(map_namespace("event", "r"), "relay:event:r");
        assert_eq!(graph_echo_key("AAMk"), "echo:graph:AAMk");
        assert_eq!(dingtalk_echo_key("d1"), "echo:dingtalk:d1");
        assert_eq!(graph_item_claim("AAMk"), "relay:graph:AAMk");
    }
}
