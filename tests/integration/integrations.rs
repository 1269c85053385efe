//! The Zapier app and the n8n nodes in `integrations/` against this build's binary: their
//! own Node tests (`node --test`, no npm install) start the service and drive the app or
//! nodes through stand-ins for the Zapier and n8n runtimes.

use crate::common;

use std::process::Command;

/// Runs `node --test test/` in `integrations/<package>` and fails with its report.
fn node_tests(package: &str) {
    common::ensure_node();
    let dir = format!("{}/integrations/{package}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(&dir)
        .env("DINGBRIDGE_BIN", env!("CARGO_BIN_EXE_dingbridge"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("# fail 0"),
        "the {package} tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_zapier_app_works_against_the_running_service() {
    node_tests("zapier");
}

#[test]
fn the_n8n_nodes_work_against_the_running_service() {
    node_tests("n8n");
}
