//! Operations endpoints: liveness, readiness, metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use actix_web::http::Method;

use super::{AppState, RouteEntry, on};
use crate::error::{ApiError, ErrorCode};

/// Adds `/healthz`, `/readyz`, `/metrics`.
pub fn routes(t: &mut Vec<RouteEntry>) {
    t.push(RouteEntry {
        path: "/healthz",
        methods: vec![on(Method::GET, healthz)],
    });
    t.push(RouteEntry {
        path: "/readyz",
        methods: vec![on(Method::GET, readyz)],
    });
    t.push(RouteEntry {
        path: "/metrics",
        methods: vec![on(Method::GET, metrics)],
    });
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let backend = state.store.backend();
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => {
            // Upstream credentials do not make the instance unready (it still accepts and
            // queues events), but a broken one is shown here for whoever checks.
            let graph = state.graph.as_ref().map(|g| match g.auth().last_error() {
                None => json!({ "ok": true }),
                Some(e) => json!({ "ok": false, "error": e.to_string(), "kind": e.kind.as_str() }),
            });
            let mut degraded = graph.as_ref().is_some_and(|g| g["ok"] == false);
            let mut checks = json!({ "store": { "ok": true, "backend": backend }, "graph": graph });
            // Mailbox routes: what the instance holding each route's IMAP connection last
            // reported (a route that cannot log in says why).
            let mailboxes =
                crate::sync::mailbox::route_health(&state.store, &state.config.mailbox_routes)
                    .await;
            if !mailboxes.is_empty() {
                let mut routes = serde_json::Map::new();
                for (name, health) in mailboxes {
                    let value = match health {
                        Some(h) => {
                            degraded |= !h.ok;
                            serde_json::to_value(h).unwrap_or_default()
                        }
                        None => json!({ "ok": null, "status": "not connected yet" }),
                    };
                    routes.insert(name, value);
                }
                checks["mailbox_routes"] = serde_json::Value::Object(routes);
            }
            Ok(HttpResponse::Ok().json(json!({
                "status": if degraded { "degraded" } else { "ready" },
                "checks": checks,
            })))
        }
        Ok(Err(e)) => Err(not_ready(backend, &e.to_string())),
        Err(_) => Err(not_ready(backend, "no answer within 2 s")),
    }
}

fn not_ready(backend: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::StoreUnavailable,
        format!("store ({backend}) unavailable: {why}"),
    )
    .with_retry_after(5)
    .with_details(
        json!({ "checks": { "store": { "ok": false, "backend": backend, "error": why } } }),
    )
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Queue depth is read at scrape time; a store outage leaves the last values.
    if let Ok(Ok(depth)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.queue_depth()).await
    {
        crate::metrics::set_queue_depth(&depth);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}
