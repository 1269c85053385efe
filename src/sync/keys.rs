//! Store keys and namespaces shared by the relays of both directions, in one place so the
//! relay modules depend on this and not on each other.

/// Prefix of the `sourceId` of every DingTalk todo made for an Outlook task.
pub const TASK_SOURCE_PREFIX: &str = "outlook-task-";

/// Store key of the content version last relayed for To Do task `id` on `route`.
pub fn version_key(route: &str, id: &str) -> String {
    format!("todo-version:{route}:{id}")
}

/// Mapping namespace of one kind on one route (`left` = DingTalk id, `right` = Graph id).
pub fn map_namespace(kind: &str, route: &str) -> String {
    format!("relay:{kind}:{route}")
}
