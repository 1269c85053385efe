//! App-only tokens for Graph (OAuth2 client credentials,
//! <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>):
//! a client secret, or a certificate whose private key signs a `client_assertion` JWT
//! (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>).
//! [`TokenProvider`] caches the token, refreshes it before `expires_in` runs out with one
//! request shared by every concurrent caller, and turns Entra ID's AADSTS errors into
//! sentences a consultant can act on. Secrets, tokens and assertions are never logged or
//! displayed.

use std::{
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::GRAPH_SCOPE;

/// `client_assertion_type` of certificate credentials.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion ("5-10 minutes after nbf at most").
const ASSERTION_LIFETIME_SECS: i64 = 5 * 60;
/// A token is refreshed this long before it expires (half its lifetime when shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Timeout of one token request.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Signature algorithm of the client assertion (a setting, so defined in config).
pub use crate::config::AssertionAlg;

/// The JWT algorithm of an assertion signature.
fn algorithm(alg: AssertionAlg) -> Algorithm {
    match alg {
        AssertionAlg::Ps256 => Algorithm::PS256,
        AssertionAlg::Rs256 => Algorithm::RS256,
    }
}

/// How the app proves its identity.
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate and its private key.
    Certificate(CertificateCredential),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Secret(<redacted>)"),
            Credential::Certificate(c) => f
                .debug_struct("Certificate")
                .field("alg", &c.alg)
                .field("x5t#S256", &c.x5t_s256)
                .finish_non_exhaustive(),
        }
    }
}

/// A certificate (its thumbprints) and the RSA private key that signs assertions.
pub struct CertificateCredential {
    key: EncodingKey,
    alg: AssertionAlg,
    x5t_s256: String,
    x5t: String,
}

/// The assertion's claims
/// (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>).
#[derive(Debug, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The token endpoint URL.
    pub aud: String,
    /// The client id.
    pub iss: String,
    /// The client id.
    pub sub: String,
    /// A fresh GUID.
    pub jti: String,
    /// Now.
    pub nbf: i64,
    /// Now.
    pub iat: i64,
    /// Now + 5 minutes.
    pub exp: i64,
}

impl CertificateCredential {
    /// Reads both PEM files; errors name the file and what is wrong with it.
    pub fn load(cert_path: &str, key_path: &str, alg: AssertionAlg) -> Result<Self, String> {
        let cert = std::fs::read(cert_path)
            .map_err(|e| format!("cannot read certificate file {cert_path}: {e}"))?;
        let key = std::fs::read(key_path)
            .map_err(|e| format!("cannot read private key file {key_path}: {e}"))?;
        Self::from_pem(&cert, &key, alg)
    }

    /// Parses a PEM certificate and a PEM RSA private key (PKCS#8 or PKCS#1), and checks
    /// that the key belongs to the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], alg: AssertionAlg) -> Result<Self, String> {
        let blocks = pem::parse_many(cert_pem)
            .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
        let cert = blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or("the certificate file has no `BEGIN CERTIFICATE` block")?;
        let der = cert.contents();
        let key = EncodingKey::from_rsa_pem(key_pem).map_err(|e| {
            format!("the private key file is not a PEM RSA private key (PKCS#8 or PKCS#1): {e}")
        })?;
        let credential = Self {
            key,
            alg,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
            x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(der)),
        };
        // Sign a probe and verify it with the certificate's public key: a key that does
        // not belong to the certificate would otherwise only fail at Entra (AADSTS700027).
        let probe = credential
            .assertion("probe", "https://probe.invalid/token")
            .map_err(|e| e.message)?;
        let public = DecodingKey::from_rsa_pem(pem::encode(&cert).as_bytes())
            .map_err(|e| format!("the certificate does not hold an RSA public key: {e}"))?;
        let mut validation = Validation::new(algorithm(alg));
        validation.set_audience(&["https://probe.invalid/token"]);
        jsonwebtoken::decode::<Value>(&probe, &public, &validation)
            .map_err(|_| "the private key does not belong to the certificate".to_string())?;
        Ok(credential)
    }

    /// base64url SHA-256 thumbprint of the certificate's DER (`x5t#S256`).
    pub fn thumbprint_sha256(&self) -> &str {
        &self.x5t_s256
    }

    /// base64url SHA-1 thumbprint of the certificate's DER (`x5t`).
    pub fn thumbprint_sha1(&self) -> &str {
        &self.x5t
    }

    /// A signed assertion for `client_id` addressed to `token_url`.
    pub fn assertion(&self, client_id: &str, token_url: &str) -> Result<String, AuthError> {
        let mut header = Header::new(algorithm(self.alg));
        header.typ = Some("JWT".into());
        match self.alg {
            AssertionAlg::Ps256 => header.x5t_s256 = Some(self.x5t_s256.clone()),
            AssertionAlg::Rs256 => header.x5t = Some(self.x5t.clone()),
        }
        let now = chrono::Utc::now().timestamp();
        let claims = AssertionClaims {
            aud: token_url.to_string(),
            iss: client_id.to_string(),
            sub: client_id.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| AuthError {
            kind: AuthErrorKind::AssertionInvalid,
            aadsts: None,
            message: format!("cannot sign the client assertion with the private key: {e}"),
        })
    }
}

/// What kind of problem stopped token acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// The client secret has expired (AADSTS7000222).
    SecretExpired,
    /// The client secret is wrong (AADSTS7000215), often the secret's *ID* was configured.
    SecretInvalid,
    /// The app is unknown in the tenant or not consented there (AADSTS700016).
    AppNotFound,
    /// The tenant does not exist or is not valid (AADSTS90002, AADSTS900023).
    TenantNotFound,
    /// An administrator has not consented to the app's permissions (AADSTS65001).
    NotConsented,
    /// The client assertion was refused (AADSTS700027/700021/700023/700024).
    AssertionInvalid,
    /// The requested scope is wrong (AADSTS70011).
    InvalidScope,
    /// Entra ID refused for another reason.
    Rejected,
    /// Entra ID could not be reached or failed (network, 5xx, unreadable answer).
    Unavailable,
}

impl AuthErrorKind {
    /// Snake-case name for logs and readiness detail.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthErrorKind::SecretExpired => "secret_expired",
            AuthErrorKind::SecretInvalid => "secret_invalid",
            AuthErrorKind::AppNotFound => "app_not_found",
            AuthErrorKind::TenantNotFound => "tenant_not_found",
            AuthErrorKind::NotConsented => "not_consented",
            AuthErrorKind::AssertionInvalid => "assertion_invalid",
            AuthErrorKind::InvalidScope => "invalid_scope",
            AuthErrorKind::Rejected => "rejected",
            AuthErrorKind::Unavailable => "unavailable",
        }
    }
}

/// Token acquisition failed; `Display` is one sentence saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// The class of problem.
    pub kind: AuthErrorKind,
    /// Entra's AADSTS number, when it sent one.
    pub aadsts: Option<u32>,
    /// What happened and what to do (never contains a secret, token or assertion).
    pub message: String,
}

impl AuthError {
    /// True when the same request can succeed later without a configuration change.
    pub fn is_transient(&self) -> bool {
        self.kind == AuthErrorKind::Unavailable
    }

    fn unavailable(message: String) -> Self {
        Self {
            kind: AuthErrorKind::Unavailable,
            aadsts: None,
            message,
        }
    }
}

/// What the error sentences mention besides the AADSTS code.
struct Context<'a> {
    tenant_id: &'a str,
    client_id: &'a str,
    certificate: bool,
}

/// Turns Entra's error JSON (`error`, `error_description`, `error_codes`) into an
/// [`AuthError`]. Branches on the AADSTS number first, the OAuth2 `error` second.
fn classify(status: u16, body: &Value, ctx: &Context<'_>) -> AuthError {
    let error = body.get("error").and_then(Value::as_str).unwrap_or("");
    let description = body
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let aadsts = body
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(Value::as_u64)
        .map(|c| c as u32)
        .or_else(|| aadsts_from_description(description));
    let code = aadsts.map(|c| format!("AADSTS{c}")).unwrap_or_default();
    let (tenant, client) = (ctx.tenant_id, ctx.client_id);
    let (kind, message) = match (aadsts, error) {
        (Some(7000222), _) => (
            AuthErrorKind::SecretExpired,
            format!(
                "Graph rejected the client secret: it has expired ({code}). Create a new secret in Entra ID and set DINGBRIDGE_GRAPH_CLIENT_SECRET."
            ),
        ),
        (Some(7000215), _) => (
            AuthErrorKind::SecretInvalid,
            format!(
                "Graph rejected the client secret: it is not valid for app {client} ({code}). Set DINGBRIDGE_GRAPH_CLIENT_SECRET to the secret's Value (not its Secret ID) from Entra ID > App registrations > Certificates & secrets."
            ),
        ),
        (Some(700016), _) => (
            AuthErrorKind::AppNotFound,
            format!(
                "Entra ID does not know application {client} in tenant {tenant}, or it is not consented there ({code}). Check DINGBRIDGE_GRAPH_CLIENT_ID and DINGBRIDGE_GRAPH_TENANT_ID, and have an administrator of that tenant grant consent."
            ),
        ),
        (Some(90002 | 900023), _) => (
            AuthErrorKind::TenantNotFound,
            format!(
                "Entra ID cannot find tenant `{tenant}` ({code}). Set DINGBRIDGE_GRAPH_TENANT_ID to the directory (tenant) ID or a verified domain of the customer's tenant."
            ),
        ),
        (Some(65001), _) | (None, "consent_required") => (
            AuthErrorKind::NotConsented,
            format!(
                "Application {client} has not been granted admin consent in tenant {tenant}{}. In Entra ID > App registrations > API permissions, grant admin consent for the Graph application permissions.",
                paren(&code)
            ),
        ),
        (Some(700027), _) => (
            AuthErrorKind::AssertionInvalid,
            format!(
                "Entra ID rejected the certificate assertion's signature ({code}). Upload the certificate in DINGBRIDGE_GRAPH_CERTIFICATE_PATH to app {client} (Certificates & secrets) and check that DINGBRIDGE_GRAPH_PRIVATE_KEY_PATH is its key."
            ),
        ),
        (Some(700021), _) => (
            AuthErrorKind::AssertionInvalid,
            format!(
                "Entra ID rejected the certificate assertion: its issuer/subject is not the client id {client} ({code}). Check DINGBRIDGE_GRAPH_CLIENT_ID."
            ),
        ),
        (Some(700023), _) => (
            AuthErrorKind::AssertionInvalid,
            format!(
                "Entra ID rejected the certificate assertion: its audience is not this tenant's token endpoint ({code}). Check DINGBRIDGE_GRAPH_TENANT_ID and DINGBRIDGE_GRAPH_AUTHORITY_URL."
            ),
        ),
        (Some(700024), _) => (
            AuthErrorKind::AssertionInvalid,
            format!(
                "Entra ID rejected the certificate assertion as outside its valid time range ({code}). Check that this machine's clock is right (NTP)."
            ),
        ),
        (Some(70011), _) | (None, "invalid_scope") => (
            AuthErrorKind::InvalidScope,
            format!(
                "Entra ID refused the scope {GRAPH_SCOPE}{}. Check DINGBRIDGE_GRAPH_AUTHORITY_URL points at Entra ID.",
                paren(&code)
            ),
        ),
        _ if status >= 500 || (error.is_empty() && aadsts.is_none()) => {
            return AuthError::unavailable(format!(
                "Entra ID could not issue a token (HTTP {status}); retrying later."
            ));
        }
        _ => {
            let first = description.split(['\r', '\n']).next().unwrap_or("").trim();
            let what = if ctx.certificate {
                "the certificate credential"
            } else {
                "the client secret"
            };
            (
                AuthErrorKind::Rejected,
                format!(
                    "Entra ID refused a token for app {client} in tenant {tenant} with {what}: {error}{}{}",
                    if first.is_empty() { "" } else { ": " },
                    if first.is_empty() {
                        code.clone()
                    } else {
                        first.to_string()
                    }
                ),
            )
        }
    };
    AuthError {
        kind,
        aadsts,
        message,
    }
}

fn paren(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" ({code})")
    }
}

fn aadsts_from_description(description: &str) -> Option<u32> {
    let rest = &description[description.find("AADSTS")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
    expires_at: Instant,
}

/// When a token with this `expires_in` should be replaced: 5 minutes before it runs out,
/// or at half its lifetime when it lives less than 10 minutes.
pub fn refresh_after(expires_in: Duration) -> Duration {
    let margin = REFRESH_MARGIN.min(expires_in / 2);
    expires_in - margin
}

/// Gets and caches app-only tokens for Graph.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    tenant_id: String,
    client_id: String,
    credential: Credential,
    cached: Mutex<Option<CachedToken>>,
    refresh: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<AuthError>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn new(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        credential: Credential,
    ) -> Self {
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority_url.trim_end_matches('/'),
            tenant_id
        );
        Self {
            http,
            token_url,
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            credential,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
        }
    }

    /// The token endpoint (also the assertion's `aud`).
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The last token failure, cleared by the next success (for `/readyz` detail).
    pub fn last_error(&self) -> Option<AuthError> {
        self.last_error.lock().expect("last_error").clone()
    }

    /// A valid access token: the cached one, or a new one when it is due for refresh.
    /// Concurrent callers share a single refresh.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        match self.request_token().await {
            Ok((token, expires_in)) => {
                let now = Instant::now();
                *self.cached.lock().expect("cached") = Some(CachedToken {
                    token: token.clone(),
                    refresh_at: now + refresh_after(expires_in),
                    expires_at: now + expires_in,
                });
                *self.last_error.lock().expect("last_error") = None;
                tracing::debug!(
                    expires_in_secs = expires_in.as_secs(),
                    "acquired a Graph access token"
                );
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(
                    kind = e.kind.as_str(),
                    aadsts = e.aadsts,
                    error = %e,
                    "cannot acquire a Graph access token"
                );
                *self.last_error.lock().expect("last_error") = Some(e.clone());
                // A token that is due for refresh but not yet expired still works.
                let still_valid = self
                    .cached
                    .lock()
                    .expect("cached")
                    .as_ref()
                    .and_then(|c| (Instant::now() < c.expires_at).then(|| c.token.clone()));
                match still_valid {
                    Some(t) => Ok(t),
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets `token` (Graph answered 401 with it), so the next call fetches a new one.
    pub fn invalidate(&self, token: &SecretString) {
        let mut cached = self.cached.lock().expect("cached");
        if cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == token.expose_secret())
        {
            *cached = None;
        }
    }

    fn fresh(&self) -> Option<SecretString> {
        let cached = self.cached.lock().expect("cached");
        cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    async fn request_token(&self) -> Result<(SecretString, Duration), AuthError> {
        let assertion;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &self.client_id),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose_secret())),
            Credential::Certificate(c) => {
                assertion = c.assertion(&self.client_id, &self.token_url)?;
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", &assertion));
            }
        }
        let resp = self
            .http
            .post(&self.token_url)
            .header(reqwest::header::USER_AGENT, crate::USER_AGENT)
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                AuthError::unavailable(format!(
                    "cannot reach the Entra ID token endpoint {}: {}",
                    self.token_url,
                    without_url(&e)
                ))
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| {
            AuthError::unavailable(format!(
                "the Entra ID token answer broke off: {}",
                without_url(&e)
            ))
        })?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let ctx = Context {
                tenant_id: &self.tenant_id,
                client_id: &self.client_id,
                certificate: matches!(self.credential, Credential::Certificate(_)),
            };
            return Err(classify(status, &json, &ctx));
        }
        let token = json.get("access_token").and_then(Value::as_str);
        // v2.0 sends a number; v1.0 sent a string.
        let expires_in = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        match (token, expires_in) {
            (Some(t), Some(secs)) if !t.is_empty() && secs > 0 => {
                Ok((SecretString::from(t.to_string()), Duration::from_secs(secs)))
            }
            _ => Err(AuthError::unavailable(
                "the Entra ID token answer has no access_token/expires_in".into(),
            )),
        }
    }
}

/// reqwest's error text without the URL's query (there is none here, but stay safe).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CERT: &[u8] = include_bytes!("../../tests/fixtures/graph/cert.pem");
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/graph/key.pem");
    const OTHER_KEY: &[u8] = include_bytes!("../../tests/fixtures/graph/other-key.pem");
    const TOKEN_URL: &str = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token";

    fn cert_der() -> Vec<u8> {
        pem::parse(CERT).expect("pem").contents().to_vec()
    }

    fn decode(jwt: &str, alg: Algorithm) -> (Header, AssertionClaims) {
        let key = DecodingKey::from_rsa_pem(CERT).expect("public key of the certificate");
        let mut v = Validation::new(alg);
        v.set_audience(&[TOKEN_URL]);
        v.set_issuer(&["client-1"]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<AssertionClaims>(jwt, &key, &v).expect("verifies");
        (data.header, data.claims)
    }

    #[test]
    fn ps256_assertion_has_sha256_thumbprint_and_documented_claims() {
        let c = CertificateCredential::from_pem(CERT, KEY, AssertionAlg::Ps256).expect("loads");
        let jwt = c.assertion("client-1", TOKEN_URL).expect("signs");
        let (header, claims) = decode(&jwt, Algorithm::PS256);
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der()));
        assert_eq!(header.x5t_s256.as_deref(), Some(expected.as_str()));
        assert_eq!(header.x5t, None);
        assert_eq!(claims.aud, TOKEN_URL);
        assert_eq!(
            (claims.iss.as_str(), claims.sub.as_str()),
            ("client-1", "client-1")
        );
        assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.exp - claims.nbf, 300);
        let now = chrono::Utc::now().timestamp();
        assert!((now - claims.iat).abs() <= 5);
        // The raw header carries the RFC 7515 name.
        let raw: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(raw["x5t#S256"], expected);
        // Matches `openssl x509 -fingerprint -sha256` of the fixture.
        assert_eq!(
            hex::encode_upper(URL_SAFE_NO_PAD.decode(&expected).expect("b64")),
            "62EFBF25D8A759B6EE1EF551CE8A3F8B8DCB29BDF5DFA39720EC3B41A60CB375"
        );
    }

    #[test]
    fn rs256_assertion_has_sha1_thumbprint() {
        let c = CertificateCredential::from_pem(CERT, KEY, AssertionAlg::Rs256).expect("loads");
        let jwt = c.assertion("client-1", TOKEN_URL).expect("signs");
        let (header, _) = decode(&jwt, Algorithm::RS256);
        assert_eq!(header.alg, Algorithm::RS256);
        let expected = URL_SAFE_NO_PAD.encode(Sha1::digest(cert_der()));
        assert_eq!(header.x5t.as_deref(), Some(expected.as_str()));
        assert_eq!(header.x5t_s256, None);
        // 20 raw bytes, not the hex text.
        assert_eq!(URL_SAFE_NO_PAD.decode(&expected).expect("b64").len(), 20);
    }

    #[test]
    fn every_assertion_has_a_new_jti() {
        let c = CertificateCredential::from_pem(CERT, KEY, AssertionAlg::Ps256).expect("loads");
        let a = decode(
            &c.assertion("client-1", TOKEN_URL).expect("a"),
            Algorithm::PS256,
        )
        .1;
        let b = decode(
            &c.assertion("client-1", TOKEN_URL).expect("b"),
            Algorithm::PS256,
        )
        .1;
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let err = CertificateCredential::from_pem(CERT, OTHER_KEY, AssertionAlg::Ps256)
            .err()
            .expect("mismatch");
        assert!(err.contains("does not belong"), "{err}");
        let err = CertificateCredential::from_pem(KEY, KEY, AssertionAlg::Ps256)
            .err()
            .expect("no cert");
        assert!(err.contains("CERTIFICATE"), "{err}");
        let err = CertificateCredential::from_pem(CERT, CERT, AssertionAlg::Ps256)
            .err()
            .expect("no key");
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn debug_of_a_secret_credential_is_redacted() {
        let c = Credential::Secret(SecretString::from("hunter2-secret".to_string()));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    fn ctx() -> Context<'static> {
        Context {
            tenant_id: "contoso.onmicrosoft.com",
            client_id: "11111111-2222-3333-4444-555555555555",
            certificate: false,
        }
    }

    fn entra(error: &str, code: u32) -> Value {
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: Something. Trace ID: x Correlation ID: y Timestamp: z"),
            "error_codes": [code],
            "timestamp": "2026-01-05 10:00:00Z",
            "trace_id": "x", "correlation_id": "y",
        })
    }

    #[test]
    fn aadsts_codes_are_classified_into_readable_sentences() {
        let cases = [
            ("invalid_client", 7000222, AuthErrorKind::SecretExpired),
            ("invalid_client", 7000215, AuthErrorKind::SecretInvalid),
            ("unauthorized_client", 700016, AuthErrorKind::AppNotFound),
            ("invalid_request", 90002, AuthErrorKind::TenantNotFound),
            ("invalid_request", 900023, AuthErrorKind::TenantNotFound),
            ("invalid_grant", 65001, AuthErrorKind::NotConsented),
            ("invalid_client", 700027, AuthErrorKind::AssertionInvalid),
            ("invalid_client", 700021, AuthErrorKind::AssertionInvalid),
            ("invalid_client", 700023, AuthErrorKind::AssertionInvalid),
            ("invalid_client", 700024, AuthErrorKind::AssertionInvalid),
            ("invalid_scope", 70011, AuthErrorKind::InvalidScope),
            ("invalid_request", 12345, AuthErrorKind::Rejected),
        ];
        for (error, code, kind) in cases {
            let e = classify(400, &entra(error, code), &ctx());
            assert_eq!(e.kind, kind, "{code}");
            assert_eq!(e.aadsts, Some(code));
            assert!(e.to_string().contains(&format!("AADSTS{code}")), "{e}");
            assert!(!e.is_transient());
        }
        let e = classify(401, &entra("invalid_client", 7000222), &ctx());
        assert_eq!(
            e.to_string(),
            "Graph rejected the client secret: it has expired (AADSTS7000222). Create a new secret in Entra ID and set DINGBRIDGE_GRAPH_CLIENT_SECRET."
        );
        let e = classify(400, &entra("invalid_request", 90002), &ctx());
        assert!(e.to_string().contains("contoso.onmicrosoft.com"), "{e}");
    }

    #[test]
    fn consent_required_without_codes_and_server_errors_are_classified() {
        let e = classify(400, &json!({"error": "consent_required"}), &ctx());
        assert_eq!(e.kind, AuthErrorKind::NotConsented);
        let e = classify(503, &Value::Null, &ctx());
        assert_eq!(e.kind, AuthErrorKind::Unavailable);
        assert!(e.is_transient());
        // The code is found in the description when error_codes is missing.
        let e = classify(
            400,
            &json!({"error": "invalid_client", "error_description": "AADSTS7000222: The provided client secret keys are expired."}),
            &ctx(),
        );
        assert_eq!(e.kind, AuthErrorKind::SecretExpired);
    }

    #[test]
    fn tokens_are_refreshed_five_minutes_early_or_at_half_life() {
        assert_eq!(
            refresh_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(5400)),
            Duration::from_secs(5100)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
