//! Graph change notifications, pure parts: the `validationToken` handshake, the
//! notification collection model, `clientState` checks, rich-notification decryption
//! (RSA-OAEP key unwrap, HMAC-SHA256 check, AES-256-CBC) and the claims a
//! `validationTokens` JWT must carry.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rsa::{Oaep, RsaPrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// App id of Microsoft Graph's change-notification publisher (`appid` claim).
pub const GRAPH_NOTIFICATION_PUBLISHER: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

/// The decoded `validationToken` query parameter, if this is a handshake.
pub fn handshake_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned())
}

/// A POST from Graph: notifications, and for rich ones the tokens that vouch for them.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotificationCollection {
    /// The notifications (several subscriptions may be mixed).
    #[serde(default)]
    pub value: Vec<ChangeNotification>,
    /// One JWT per (app, tenant) when resource data is included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_tokens: Option<Vec<String>>,
}

/// One change (or lifecycle) notification.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNotification {
    /// Notification id (absent on lifecycle events).
    #[serde(default)]
    pub id: Option<String>,
    /// The subscription it belongs to.
    pub subscription_id: String,
    /// When that subscription expires.
    #[serde(default)]
    pub subscription_expiration_date_time: Option<String>,
    /// The secret we set on the subscription.
    #[serde(default)]
    pub client_state: Option<String>,
    /// `created`, `updated` or `deleted`.
    #[serde(default)]
    pub change_type: Option<String>,
    /// Resource path, e.g. `Users/{id}/Messages/{id}`.
    #[serde(default)]
    pub resource: Option<String>,
    /// Tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `@odata.type`, `@odata.id`, `id` of the changed item.
    #[serde(default)]
    pub resource_data: Option<Value>,
    /// Rich notifications: the encrypted resource.
    #[serde(default)]
    pub encrypted_content: Option<EncryptedContent>,
    /// Lifecycle notifications: `reauthorizationRequired`, `subscriptionRemoved`, `missed`.
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

impl ChangeNotification {
    /// The changed item's id, from `resourceData.id` or the last resource path segment.
    pub fn item_id(&self) -> Option<String> {
        if let Some(id) = self
            .resource_data
            .as_ref()
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str)
        {
            return Some(id.to_string());
        }
        let resource = self.resource.as_deref()?;
        let last = resource.rsplit('/').next()?;
        // `Messages('AAMk…')` style keys.
        let inner = last
            .split_once("('")
            .and_then(|(_, r)| r.strip_suffix("')"))
            .unwrap_or(last);
        Some(inner.to_string())
    }

    /// The changed item's version: `resourceData.@odata.etag`, or for rich notifications
    /// the signature of the encrypted content (the same on a redelivery, new per change).
    pub fn version(&self) -> Option<&str> {
        self.resource_data
            .as_ref()
            .and_then(|d| d.get("@odata.etag"))
            .and_then(Value::as_str)
            .or_else(|| {
                self.encrypted_content
                    .as_ref()
                    .map(|c| c.data_signature.as_str())
            })
    }

    /// A stable id for deduplicating redeliveries of this notification, `None` when
    /// nothing tells a redelivery from a new change. Graph marks `id` optional; without
    /// it the key must carry the item's version, or every later `updated` notification
    /// of an item (a mail read hours after it arrived) would be dropped as a repeat of
    /// the first. Lifecycle events carry the subscription's expiry instead, which moves
    /// on at each renewal.
    pub fn dedupe_id(&self) -> Option<String> {
        if let Some(id) = &self.id {
            return Some(id.clone());
        }
        let change = self.change_type.as_deref().unwrap_or("");
        let version = match &self.lifecycle_event {
            Some(_) => self.subscription_expiration_date_time.as_deref(),
            None => self.version(),
        };
        if version.is_none() && self.lifecycle_event.is_none() && change == "updated" {
            // Processing an update twice is harmless (the worker compares state); losing
            // one is not.
            return None;
        }
        Some(format!(
            "{}:{}:{}:{}:{}",
            self.subscription_id,
            self.lifecycle_event.as_deref().unwrap_or(""),
            change,
            self.item_id().unwrap_or_default(),
            version.unwrap_or("")
        ))
    }
}

/// Encrypted resource data of a rich notification.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedContent {
    /// Base64 AES-CBC ciphertext.
    pub data: String,
    /// Base64 RSA-OAEP-wrapped symmetric key.
    pub data_key: String,
    /// Base64 HMAC-SHA256 of the ciphertext.
    pub data_signature: String,
    /// Our certificate id, to pick the private key.
    #[serde(default)]
    pub encryption_certificate_id: Option<String>,
    /// Thumbprint of the certificate used.
    #[serde(default)]
    pub encryption_certificate_thumbprint: Option<String>,
}

/// `clientState` compared in constant time; a missing one never matches.
pub fn client_state_matches(expected: &str, given: Option<&str>) -> bool {
    match given {
        Some(g) => !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    }
}

/// Why rich content could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RichError {
    /// A field is not valid Base64.
    #[error("encrypted content is not valid base64")]
    Base64,
    /// The key could not be unwrapped with our private key.
    #[error("cannot unwrap the data key with our private key")]
    KeyUnwrap,
    /// The HMAC does not match: the data was altered or the key is wrong.
    #[error("data signature does not match")]
    Signature,
    /// The ciphertext does not decrypt to JSON.
    #[error("cannot decrypt the data")]
    Decrypt,
}

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Decrypts one rich notification's resource: unwrap the per-item key (RSA-OAEP with
/// SHA-1, as Graph uses), check the HMAC before touching the ciphertext, then AES-256-CBC
/// with PKCS#7 and IV = first 16 key bytes.
pub fn decrypt_content(
    key: &RsaPrivateKey,
    content: &EncryptedContent,
) -> Result<Value, RichError> {
    let wrapped = STANDARD
        .decode(content.data_key.as_bytes())
        .map_err(|_| RichError::Base64)?;
    let sym = key
        .decrypt(Oaep::new::<sha1::Sha1>(), &wrapped)
        .map_err(|_| RichError::KeyUnwrap)?;
    if sym.len() != 32 {
        return Err(RichError::KeyUnwrap);
    }
    let data = STANDARD
        .decode(content.data.as_bytes())
        .map_err(|_| RichError::Base64)?;
    let signature = STANDARD
        .decode(content.data_signature.as_bytes())
        .map_err(|_| RichError::Base64)?;
    let mut mac = HmacSha256::new_from_slice(&sym).map_err(|_| RichError::KeyUnwrap)?;
    mac.update(&data);
    mac.verify_slice(&signature)
        .map_err(|_| RichError::Signature)?;
    let cipher = Aes256CbcDec::new_from_slices(&sym, &sym[..16]).map_err(|_| RichError::Decrypt)?;
    let mut buf = data;
    let plain = cipher
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .map_err(|_| RichError::Decrypt)?;
    serde_json::from_slice(plain).map_err(|_| RichError::Decrypt)
}

/// Reads the PEM RSA private key (PKCS#8 or PKCS#1) that decrypts rich notifications.
pub fn load_private_key(path: &str) -> Result<RsaPrivateKey, String> {
    use rsa::{pkcs1::DecodeRsaPrivateKey, pkcs8::DecodePrivateKey};
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| format!("{path} is not a PEM RSA private key (PKCS#8 or PKCS#1)"))
}

/// The public half Graph encrypts rich notifications with: the certificate as
/// `encryptionCertificate` wants it (base64 DER) and our `encryptionCertificateId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionCertificate {
    /// base64 (standard) X.509 DER.
    pub base64_der: String,
    /// `dingbridge-` + 16 hex digits of the certificate's SHA-256 (a new certificate gets
    /// a new id, so notifications name the key that decrypts them).
    pub id: String,
}

/// Reads the PEM certificate at `path` and checks that it holds the public key of `key`
/// (a mismatch would only show as undecryptable notifications much later).
pub fn load_certificate(path: &str, key: &RsaPrivateKey) -> Result<EncryptionCertificate, String> {
    use rsa::pkcs8::EncodePublicKey;
    let text = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let der = pem::parse_many(&text)
        .map_err(|e| format!("{path} is not PEM: {e}"))?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| format!("{path} has no `BEGIN CERTIFICATE` block"))?
        .into_contents();
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    // The certificate carries the SubjectPublicKeyInfo verbatim.
    let spki = spki.as_bytes();
    if spki.is_empty() || !der.windows(spki.len()).any(|w| w == spki) {
        return Err(format!(
            "{path} does not hold the public key of graph.notification_private_key_path"
        ));
    }
    let digest = sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(&der));
    Ok(EncryptionCertificate {
        base64_der: STANDARD.encode(&der),
        id: format!("dingbridge-{}", hex::encode(&digest[..8])),
    })
}

/// Claims checked on a `validationTokens` JWT (signature and time are checked by
/// `jsonwebtoken`; these are the ones it does not know about).
#[derive(Debug, Deserialize)]
pub struct ValidationClaims {
    /// Must be our client id.
    pub aud: String,
    /// Must be Graph's notification publisher.
    pub appid: String,
    /// Issuer, `https://sts.windows.net/{tenant}/`.
    #[serde(default)]
    pub iss: Option<String>,
}

/// Checks the application-level claims of a validation token.
pub fn check_validation_claims(claims: &ValidationClaims, client_id: &str) -> Result<(), String> {
    if claims.aud != client_id {
        return Err(format!("aud is {}, not our client id", claims.aud));
    }
    if claims.appid != GRAPH_NOTIFICATION_PUBLISHER {
        return Err(format!(
            "appid is {}, not Graph's notification publisher",
            claims.appid
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use aes::cipher::BlockEncryptMut;
    use rsa::RsaPublicKey;

    use super::*;

    type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

    fn without_id(change: &str, etag: Option<&str>) -> ChangeNotification {
        let mut data =
            serde_json::json!({"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1"});
        if let Some(e) = etag {
            data["@odata.etag"] = e.into();
        }
        ChangeNotification {
            subscription_id: "sub-1".into(),
            change_type: Some(change.into()),
            resource: Some("Users/u1/Messages/AAMk1".into()),
            resource_data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn each_version_of_an_item_is_a_new_notification_and_a_redelivery_is_not() {
        let ids: Vec<_> = ["W/\"1\"", "W/\"2\"", "W/\"3\""]
            .iter()
            .map(|v| without_id("updated", Some(v)).dedupe_id())
            .collect();
        assert!(ids.iter().all(Option::is_some));
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_eq!(
            without_id("updated", Some("W/\"2\"")).dedupe_id(),
            ids[1],
            "a redelivery keeps its key"
        );
    }

    #[test]
    fn an_update_without_id_or_version_is_never_dropped_as_a_repeat() {
        assert_eq!(without_id("updated", None).dedupe_id(), None);
        assert!(without_id("created", None).dedupe_id().is_some());
    }

    #[test]
    fn a_lifecycle_event_after_a_renewal_is_not_a_repeat_of_the_one_before() {
        let mut first = without_id("", None);
        first.lifecycle_event = Some("reauthorizationRequired".into());
        first.subscription_expiration_date_time = Some("2026-12-03T00:00:00Z".into());
        let mut later = first.clone();
        later.subscription_expiration_date_time = Some("2026-12-06T00:00:00Z".into());
        assert_ne!(first.dedupe_id(), later.dedupe_id());
        assert_eq!(first.dedupe_id(), first.clone().dedupe_id());
    }

    #[test]
    fn the_encryption_certificate_must_hold_the_decryption_key() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let cert = format!("{dir}/tests/fixtures/graph/cert.pem");
        let key = load_private_key(&format!("{dir}/tests/fixtures/graph/key.pem")).expect("key");
        let c = load_certificate(&cert, &key).expect("matching certificate");
        assert!(c.id.starts_with("dingbridge-") && c.id.len() <= 128);
        let der = STANDARD.decode(&c.base64_der).expect("base64");
        assert_eq!(der[0], 0x30, "DER sequence");
        let other = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).expect("key");
        let err = load_certificate(&cert, &other).expect_err("another key");
        assert!(err.contains("does not hold the public key"), "{err}");
        assert!(load_certificate("/nonexistent.pem", &key).is_err());
    }

    /// Encrypts like Graph does (the inverse of [`decrypt_content`]).
    pub fn encrypt_like_graph(
        public: &RsaPublicKey,
        sym: &[u8; 32],
        resource: &Value,
    ) -> EncryptedContent {
        let plain = resource.to_string();
        let data = Aes256CbcEnc::new_from_slices(sym, &sym[..16])
            .expect("key")
            .encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
        let mut mac = HmacSha256::new_from_slice(sym).expect("key");
        mac.update(&data);
        let wrapped = public
            .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), sym)
            .expect("wrap");
        EncryptedContent {
            data: STANDARD.encode(&data),
            data_key: STANDARD.encode(wrapped),
            data_signature: STANDARD.encode(mac.finalize().into_bytes()),
            encryption_certificate_id: Some("cert-1".into()),
            encryption_certificate_thumbprint: None,
        }
    }

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key")
    }

    #[test]
    fn handshake_token_is_url_decoded() {
        assert_eq!(
            handshake_token("validationToken=Validation%3a+Testing+client+application").as_deref(),
            Some("Validation: Testing client application")
        );
        assert_eq!(handshake_token("other=1"), None);
    }

    #[test]
    fn notification_collections_parse_and_name_their_item() {
        let body = serde_json::json!({"value": [{
            "subscriptionId": "s1", "clientState": "cs", "changeType": "created",
            "resource": "Users/u1/Messages('AAMk1')", "tenantId": "t",
            "subscriptionExpirationDateTime": "2026-11-27T00:00:00Z", "id": "n1",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1"}
        }, {
            "subscriptionId": "s1", "lifecycleEvent": "missed", "clientState": "cs"
        }]});
        let c: NotificationCollection = serde_json::from_value(body).expect("parse");
        assert_eq!(c.value[0].item_id().as_deref(), Some("AAMk1"));
        assert_eq!(c.value[0].dedupe_id().as_deref(), Some("n1"));
        assert_eq!(c.value[1].lifecycle_event.as_deref(), Some("missed"));
        let mut no_data = c.value[0].clone();
        no_data.resource_data = None;
        assert_eq!(no_data.item_id().as_deref(), Some("AAMk1"));
    }

    #[test]
    fn client_state_must_match_exactly() {
        assert!(client_state_matches("secret", Some("secret")));
        assert!(!client_state_matches("secret", Some("secreT")));
        assert!(!client_state_matches("secret", None));
        assert!(!client_state_matches("", Some("")));
    }

    #[test]
    fn rich_content_made_with_a_throwaway_certificate_decrypts() {
        let private = key();
        let resource =
            serde_json::json!({"id": "AAMk1", "subject": "报关单 customs", "isRead": false});
        let sym: [u8; 32] = rand::random();
        let content = encrypt_like_graph(&private.to_public_key(), &sym, &resource);
        assert_eq!(decrypt_content(&private, &content), Ok(resource));
    }

    #[test]
    fn rich_content_with_a_forged_signature_or_foreign_key_is_refused() {
        let private = key();
        let sym: [u8; 32] = rand::random();
        let mut content =
            encrypt_like_graph(&private.to_public_key(), &sym, &serde_json::json!({"a": 1}));
        let mut forged = content.clone();
        forged.data_signature = STANDARD.encode([0u8; 32]);
        assert_eq!(
            decrypt_content(&private, &forged),
            Err(RichError::Signature)
        );
        let other = key();
        assert_eq!(decrypt_content(&other, &content), Err(RichError::KeyUnwrap));
        content.data = "***".into();
        assert_eq!(decrypt_content(&private, &content), Err(RichError::Base64));
    }

    #[test]
    fn validation_claims_need_our_audience_and_graphs_publisher() {
        let ok = ValidationClaims {
            aud: "client-1".into(),
            appid: GRAPH_NOTIFICATION_PUBLISHER.into(),
            iss: None,
        };
        assert!(check_validation_claims(&ok, "client-1").is_ok());
        let wrong_app = ValidationClaims {
            appid: "11111111-1111-1111-1111-111111111111".into(),
            ..ok
        };
        assert!(check_validation_claims(&wrong_app, "client-1").is_err());
        let wrong_aud = ValidationClaims {
            aud: "someone-else".into(),
            appid: GRAPH_NOTIFICATION_PUBLISHER.into(),
            iss: None,
        };
        assert!(check_validation_claims(&wrong_aud, "client-1").is_err());
    }
}
