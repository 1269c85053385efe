//! The OpenAPI document and the routes must describe the same surface.

use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(&dingbridge::api::docs::openapi_json().expect("document parses"))
            .expect("json");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let routed: BTreeSet<(String, String)> = dingbridge::api::route_list().into_iter().collect();
    let documented = documented();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi/openapi.yaml: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented operations without a route: {unrouted:?}"
    );
}

#[test]
fn the_documented_events_and_actions_are_the_implemented_ones() {
    let doc: serde_json::Value =
        serde_json::from_str(&dingbridge::api::docs::openapi_json().expect("parses"))
            .expect("json");
    let schemas = &doc["components"]["schemas"];
    let events: BTreeSet<String> = schemas["EventName"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let implemented: BTreeSet<String> = dingbridge::triggers::event_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(events, implemented);
    let actions: BTreeSet<String> = schemas["ActionName"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let registered: BTreeSet<String> = dingbridge::actions::Actions::standard()
        .list()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(actions, registered);
}
