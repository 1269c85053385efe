//! Validation of the `validationTokens` of rich notifications against Microsoft's
//! signing keys: the JWKS is fetched once, cached, and fetched again when a token names
//! a key id we do not know (Microsoft rotates keys), at most once a minute.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::notifications::{ValidationClaims, check_validation_claims};

/// Default JWKS of Microsoft identity (v2 keys also sign v1 tokens).
pub const DEFAULT_JWKS_PATH: &str = "/common/discovery/v2.0/keys";

/// Least time between two JWKS fetches, so forged key ids cannot cause fetch storms.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

struct Cache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// Cached signing keys and the validation rules of Graph's validation tokens.
pub struct JwksValidator {
    http: reqwest::Client,
    url: String,
    client_id: String,
    min_refresh: Duration,
    cache: RwLock<Cache>,
}

impl JwksValidator {
    /// A validator fetching keys from `url`, accepting tokens for `client_id`.
    pub fn new(http: reqwest::Client, url: String, client_id: String) -> Self {
        Self {
            http,
            url,
            client_id,
            min_refresh: MIN_REFRESH,
            cache: RwLock::new(Cache {
                keys: HashMap::new(),
                fetched: None,
            }),
        }
    }

    /// Changes the least time between two fetches.
    pub fn with_min_refresh(mut self, min_refresh: Duration) -> Self {
        self.min_refresh = min_refresh;
        self
    }

    async fn refresh(&self) -> Result<(), String> {
        let mut cache = self.cache.write().await;
        if cache
            .fetched
            .is_some_and(|t| t.elapsed() < self.min_refresh)
        {
            return Ok(());
        }
        let jwks: Jwks = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("cannot fetch signing keys: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("signing keys are not a JWKS: {e}"))?;
        cache.keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| {
                let key =
                    DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect();
        cache.fetched = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        if let Some(k) = self.cache.read().await.keys.get(kid) {
            return Ok(k.clone());
        }
        self.refresh().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("no signing key with kid {kid}"))
    }

    /// Checks signature, time, audience and publisher of one validation token.
    pub async fn validate(&self, token: &str) -> Result<(), String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("unexpected algorithm {:?}", header.alg));
        }
        let kid = header.kid.ok_or("token has no kid")?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.client_id]);
        validation.validate_nbf = true;
        let data = decode::<ValidationClaims>(token, &key, &validation)
            .map_err(|e| format!("token rejected: {e}"))?;
        check_validation_claims(&data.claims, &self.client_id)
    }

    /// Validates every token; the first failure is returned.
    pub async fn validate_all(&self, tokens: &[String]) -> Result<(), String> {
        if tokens.is_empty() {
            return Err("rich notification without validation tokens".into());
        }
        for t in tokens {
            self.validate(t).await?;
        }
        Ok(())
    }
}
