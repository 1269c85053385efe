//! Entra ID's token endpoint (client secret or signed client assertion), the bearer check
//! of resource requests, the identity platform's signing keys, and throwaway certificate
//! credentials for tests.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use super::{
    GRAPH_DEFAULT_SCOPE, GraphFake, GraphFakeConfig, JWT_BEARER,
    http::{Ctx, Reply, graph_error},
    state::{Shared, random_string},
};

impl GraphFake {
    /// Invalidates every issued token (the next resource call gets 401).
    pub fn revoke_tokens(&self) {
        self.shared.state().tokens.clear();
    }

    /// Issues a token directly (for tests that do not exercise the token endpoint).
    pub fn issue_token(&self) -> String {
        let token = random_string(64);
        let exp = Instant::now() + Duration::from_secs(self.shared.config().token_expires_in);
        self.shared.state().tokens.insert(token.clone(), exp);
        token
    }

    /// Token endpoint calls (successful or not).
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }

    /// Serves `jwks` at `/common/discovery/v2.0/keys` (and `/common/discovery/keys`).
    pub fn set_jwks(&self, jwks: Value) {
        self.shared.state().jwks = Some(jwks);
    }
}

/// Whether the request carries a bearer token the fake issued and that has not expired.
pub(super) fn authorized(ctx: &Ctx, shared: &Shared) -> bool {
    let st = shared.state();
    ctx.header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|exp| *exp > Instant::now())
}

/// Microsoft identity's signing keys, as [`GraphFake::set_jwks`] set them.
pub(super) fn jwks(ctx: &Ctx, shared: &Shared) -> Reply {
    match shared.state().jwks.clone() {
        Some(j) => Reply::json(200, j),
        None => graph_error(ctx, 404, "NotFound", "No JWKS configured (fake)."),
    }
}

fn entra_error(status: u16, error: &str, code: u32, text: &str) -> Reply {
    let trace = uuid::Uuid::new_v4();
    let corr = uuid::Uuid::new_v4();
    let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ");
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts.to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": corr.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

pub(super) fn token_endpoint(ctx: &Ctx, shared: &Shared, tenant: &str) -> Reply {
    let cfg = shared.config();
    if ctx.method != "POST" {
        return entra_error(
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    if !ctx
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    if tenant != cfg.tenant {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    // HTTP Basic (RFC 6749 §2.3.1) is accepted as well as form fields.
    let basic = ctx
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(u, p)| {
                let dec = |x: &str| {
                    url::form_urlencoded::parse(format!("a={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(u), dec(p))
            })
        });
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|b| b.0.clone()))
        .unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if client_id != cfg.client_id {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    }
    if form.get("scope").map(String::as_str) != Some(GRAPH_DEFAULT_SCOPE) {
        return entra_error(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                form.get("scope").cloned().unwrap_or_default()
            ),
        );
    }
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.map(|b| b.1));
    if let Some(secret) = secret {
        let Some(expected) = cfg.client_secret.as_deref() else {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            );
        };
        if secret != expected {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    cfg.client_id
                ),
            );
        }
        if cfg.secret_expired {
            return entra_error(
                401,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                    cfg.client_id
                ),
            );
        }
        return issue(shared, &cfg);
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return entra_error(
                400,
                "invalid_request",
                700025,
                "Client assertion type is invalid (fake: expected urn:ietf:params:oauth:client-assertion-type:jwt-bearer).",
            );
        }
        return match verify_assertion(shared, &cfg, tenant, assertion) {
            Ok(()) => issue(shared, &cfg),
            Err((code, text)) => entra_error(401, "invalid_client", code, &text),
        };
    }
    entra_error(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

fn issue(shared: &Shared, cfg: &GraphFakeConfig) -> Reply {
    let token = format!("eyJ0eXAiOiJKV1QiLCJmYWtlIjp0cnVlfQ.{}", random_string(80));
    shared.state().tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(cfg.token_expires_in),
    );
    Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": cfg.token_expires_in, "ext_expires_in": cfg.token_expires_in, "access_token": token}),
    )
}

/// base64url (no padding) of the SHA-256 and SHA-1 thumbprints of the certificate DER.
pub fn cert_thumbprints(cert_pem: &str) -> (String, String) {
    let der = pem_der(cert_pem);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    (
        b64.encode(sha2::Sha256::digest(&der)),
        b64.encode(sha1::Sha1::digest(&der)),
    )
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("certificate PEM is base64")
}

fn verify_assertion(
    shared: &Shared,
    cfg: &GraphFakeConfig,
    tenant: &str,
    assertion: &str,
) -> Result<(), (u32, String)> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
    let Some(cert) = cfg.certificate_pem.as_deref() else {
        return Err((700027, "Client assertion contains an invalid signature. [Reason - The key was not found.] (fake: no certificate configured)".into()));
    };
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| (700025, format!("Client assertion is not a valid JWT: {e}")))?;
    if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256) {
        return Err((
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - unsupported alg {:?}]",
                header.alg
            ),
        ));
    }
    let (s256, s1) = cert_thumbprints(cert);
    let thumb_ok = header.x5t_s256.as_deref() == Some(s256.as_str())
        || header.x5t.as_deref() == Some(s1.as_str());
    if !thumb_ok {
        return Err((
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: x5t#S256={:?} x5t={:?}, Found key 'Start=…', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                header.x5t_s256, header.x5t, cfg.client_id
            ),
        ));
    }
    let key = DecodingKey::from_rsa_pem(cert.as_bytes())
        .map_err(|e| (700027, format!("fake: certificate key unusable: {e}")))?;
    let mut auds = vec![
        format!("{}/{tenant}/oauth2/v2.0/token", shared.base()),
        format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
    ];
    auds.extend(cfg.extra_audiences.iter().cloned());
    let mut v = Validation::new(header.alg);
    v.set_audience(&auds);
    v.set_issuer(&[cfg.client_id.as_str()]);
    v.sub = Some(cfg.client_id.clone());
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    v.leeway = 60;
    let data = jsonwebtoken::decode::<Value>(assertion, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => (700027, "Client assertion contains an invalid signature.".to_string()),
        ErrorKind::InvalidAudience => (700023, format!("Client assertion audience claim does not match Realm issuer. Expected one of {auds:?}.")),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => (700021, "Client assertion application identifier doesn't match 'client_id' parameter.".to_string()),
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => (700024, "Client assertion is not within its valid time range.".to_string()),
        ErrorKind::MissingRequiredClaim(c) => (700025, format!("Client assertion lacks the claim '{c}' (fake).")),
        other => (700027, format!("Client assertion failed validation: {other:?}")),
    })?;
    let jti = data.claims["jti"].as_str().unwrap_or_default().to_string();
    if jti.is_empty() {
        return Err((
            700025,
            "Client assertion lacks the claim 'jti' (fake).".into(),
        ));
    }
    if !shared.state().seen_jti.insert(jti.clone()) {
        return Err((
            700025,
            format!(
                "(fake; Entra's own code for this is not known) The client assertion jti '{jti}' was already used."
            ),
        ));
    }
    Ok(())
}

/// A throwaway RSA key pair and self-signed certificate, made at run time (no file is
/// committed): `rsa` generates the 2048-bit key, `rcgen` signs the certificate.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// PKCS#8 `-----BEGIN PRIVATE KEY-----`.
    pub key_pem: String,
    /// `-----BEGIN CERTIFICATE-----`.
    pub cert_pem: String,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    pub x5t_s256: String,
    /// base64url SHA-1 of the certificate DER (`x5t`).
    pub x5t: String,
}

impl TestCert {
    /// Generates a fresh key pair and certificate.
    pub fn generate() -> TestCert {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let key_pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        let key_pair =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
                .expect("rcgen key pair");
        let params = rcgen::CertificateParams::new(vec!["dingbridge-test.invalid".to_string()])
            .expect("certificate params");
        let cert = params
            .self_signed(&key_pair)
            .expect("self-signed certificate");
        let cert_pem = cert.pem();
        let (x5t_s256, x5t) = cert_thumbprints(&cert_pem);
        TestCert {
            key_pem,
            cert_pem,
            x5t_s256,
            x5t,
        }
    }

    /// Writes the key and certificate to `dir` as `key.pem` and `cert.pem`.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let k = dir.join("key.pem");
        let c = dir.join("cert.pem");
        std::fs::write(&k, &self.key_pem).expect("write key");
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        (k, c)
    }

    /// A client assertion as the Entra certificate-credentials page describes (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>): PS256 + `x5t#S256` when `pss`,
    /// else RS256 + `x5t`; `claims` overrides/extends the standard claims.
    pub fn assertion(&self, pss: bool, aud: &str, client_id: &str, claims: Value) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({
            "aud": aud, "iss": client_id, "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now, "iat": now, "exp": now + 300,
        });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), claims.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        let mut header = Header::new(if pss {
            Algorithm::PS256
        } else {
            Algorithm::RS256
        });
        if pss {
            header.x5t_s256 = Some(self.x5t_s256.clone());
        } else {
            header.x5t = Some(self.x5t.clone());
        }
        let key = EncodingKey::from_rsa_pem(self.key_pem.as_bytes()).expect("encoding key");
        jsonwebtoken::encode(&header, &c, &key).expect("sign assertion")
    }
}
