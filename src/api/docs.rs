//! The OpenAPI document (`openapi/openapi.yaml`, compiled in) as `GET /openapi.json`, and
//! a documentation page at `GET /docs` that renders it.

use actix_web::{HttpResponse, http::Method, web};

use super::{AppState, RouteEntry, on};

/// The document as written.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// The document as JSON.
pub fn openapi_json() -> Result<String, String> {
    let v: serde_json::Value =
        serde_yaml::from_str(OPENAPI_YAML).map_err(|e| format!("openapi/openapi.yaml: {e}"))?;
    serde_json::to_string(&v).map_err(|e| e.to_string())
}

/// Adds `/openapi.json` and `/docs`.
pub fn routes(t: &mut Vec<RouteEntry>) {
    t.push(RouteEntry {
        path: "/openapi.json",
        methods: vec![on(Method::GET, openapi)],
    });
    t.push(RouteEntry {
        path: "/docs",
        methods: vec![on(Method::GET, docs)],
    });
}

async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.as_str().to_owned())
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>dingbridge API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
</head>
<body>
  <noscript>
    <p>The API description is at <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
  </noscript>
  <redoc spec-url="/openapi.json"></redoc>
  <script src="https://cdn.redoc.ly/redoc/v2.1.5/bundles/redoc.standalone.js"></script>
</body>
</html>
"#;

async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS_HTML)
}
