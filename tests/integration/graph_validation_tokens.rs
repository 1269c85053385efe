//! Rich-notification validation tokens checked against a JWKS served by a local fake,
//! with keys and tokens made in the test.

use crate::common;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{FakeReply, FakeServer};
use dingbridge::graph::{jwks::JwksValidator, notifications::GRAPH_NOTIFICATION_PUBLISHER};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::{RsaPrivateKey, pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};
use serde_json::json;

struct Signer {
    key: EncodingKey,
    kid: String,
}

fn make_key(kid: &str) -> (Signer, serde_json::Value) {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
    let public = private.to_public_key();
    let jwk = json!({
        "kty": "RSA", "use": "sig", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    });
    let pem = private
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .expect("pem");
    let signer = Signer {
        key: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("encoding key"),
        kid: kid.into(),
    };
    (signer, jwk)
}

fn token(s: &Signer, aud: &str, appid: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(s.kid.clone());
    encode(
        &header,
        &json!({
            "aud": aud, "appid": appid, "iss": "https://sts.windows.net/tenant-1/",
            "iat": now, "nbf": now - 10, "exp": now + 3600, "ver": "1.0",
        }),
        &s.key,
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_graph_for_our_app_pass_and_others_are_rejected() {
    let (good, jwk) = make_key("k1");
    let (rotated, jwk2) = make_key("k2");
    let jwk2_again = jwk2.clone();
    let jwks = std::sync::Arc::new(std::sync::Mutex::new(json!({ "keys": [jwk] })));
    let served = jwks.clone();
    let fake = FakeServer::start(move |_| FakeReply::json(served.lock().expect("jwks").clone()));
    let v = JwksValidator::new(
        reqwest::Client::new(),
        fake.url("/common/discovery/v2.0/keys"),
        "client-1".into(),
    );

    v.validate(&token(&good, "client-1", GRAPH_NOTIFICATION_PUBLISHER))
        .await
        .expect("a genuine token passes");
    let wrong_app = v
        .validate(&token(
            &good,
            "client-1",
            "11111111-2222-3333-4444-555555555555",
        ))
        .await;
    assert!(wrong_app.is_err_and(|e| e.contains("appid")));
    let wrong_aud = v
        .validate(&token(&good, "someone-else", GRAPH_NOTIFICATION_PUBLISHER))
        .await;
    assert!(wrong_aud.is_err());

    // Microsoft rotates keys: an unknown kid makes the validator fetch the JWKS again,
    // but not more often than the minimum refresh interval.
    jwks.lock().expect("jwks")["keys"] = json!([jwk2]);
    let rotated_token = token(&rotated, "client-1", GRAPH_NOTIFICATION_PUBLISHER);
    let fetches = fake.requests().len();
    assert!(
        v.validate(&rotated_token).await.is_err(),
        "refetch is rate-limited"
    );
    assert_eq!(fake.requests().len(), fetches);

    let eager = JwksValidator::new(
        reqwest::Client::new(),
        fake.url("/common/discovery/v2.0/keys"),
        "client-1".into(),
    )
    .with_min_refresh(std::time::Duration::ZERO);
    jwks.lock().expect("jwks")["keys"] = json!([]);
    assert!(eager.validate(&rotated_token).await.is_err(), "unknown key");
    jwks.lock().expect("jwks")["keys"] = json!([jwk2_again]);
    eager
        .validate(&rotated_token)
        .await
        .expect("the rotated key is fetched on its first use");
}
