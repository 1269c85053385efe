//! The Zapier app in `integrations/zapier` against this build's binary: its own Node
//! tests (`node --test`, no npm install) start the service and check authentication,
//! triggers, a real REST hook delivery, fields from the OpenAPI document and an action.

use crate::common;

use std::process::Command;

#[test]
fn the_zapier_app_works_against_the_running_service() {
    common::ensure_node();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/integrations/zapier");
    let out = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(dir)
        .env("DINGBRIDGE_BIN", env!("CARGO_BIN_EXE_dingbridge"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Zapier app's tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("# fail 0"), "{report}");
}
