//! The API-key extractor: who is calling, checked against the store and the bootstrap
//! keys of the configuration. Key formats, hashing and storage are `crate::apikeys`.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::AppState;
use crate::{
    apikeys::{Principal, Scope, authenticate},
    error::{ApiError, ErrorCode},
};

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Extractor: the request carries a valid API key (401 otherwise). Handlers then call
/// [`Authenticated::require`] for the scope they need (403 without it).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Succeeds when the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        if self.0.scopes.contains(&scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this API key (`{}`) lacks the `{scope}` scope; create one with `dingbridge keys create --scopes {scope}`",
                    self.0.name
                ),
            ))
        }
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = presented_key(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("AppState missing"))?;
            let unauthorized = |why: &str| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    format!(
                        "{why}; send `Authorization: Bearer <key>` or `X-API-Key: <key>` with a key from `dingbridge keys create`"
                    ),
                )
            };
            let key = key
                .filter(|k| !k.is_empty())
                .ok_or_else(|| unauthorized("missing API key"))?;
            match authenticate(state.store.as_ref(), &state.bootstrap_keys, &key).await? {
                Some(p) => Ok(Authenticated(p)),
                None => Err(unauthorized("invalid or revoked API key")),
            }
        })
    }
}
