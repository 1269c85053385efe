//! DingTalk event-subscription HTTP-push crypto (the `DingCallbackCrypto` scheme).
//!
//! Pure functions, no I/O. Wire format (DingTalk's reference implementation,
//! <https://github.com/open-dingtalk/DingTalk-Callback-Crypto>; vectors the tests check in
//! `tests/vectors/dingtalk.json`):
//! `encrypt = Base64(AES-256-CBC(key, iv = key[..16],
//! PKCS#7/32(random(16) || u32_be(len) || msg || owner_key)))` and
//! `signature = hex(SHA1(sorted(token, timestamp, nonce, encrypt).concat()))`.
//!
//! The scheme has no real MAC: the SHA-1 signature over the secret token is the only
//! integrity check, so untrusted input should go through [`CallbackCrypto::decrypt_verified`].

use std::fmt;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use rand::distributions::Alphanumeric;
use serde::Serialize;
use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

/// Number of characters of a console `aes_key` (Base64 of 32 bytes without its `=`).
pub use crate::config::AES_KEY_CHARS;
/// The 32-byte key, parsed once with the configuration.
pub use crate::config::AesKey;

/// AES block size; the ciphertext must be a non-zero multiple of it.
const AES_BLOCK: usize = 16;
/// DingTalk pads to 32-byte blocks (not AES's 16); its published ciphertexts carry pad
/// bytes up to 32.
const PAD_BLOCK: usize = 32;
/// Length of the random prefix of the plaintext layout.
const RANDOM_LEN: usize = 16;
/// Length of the big-endian message-length field after the random prefix.
const LEN_FIELD: usize = 4;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Errors of the callback crypto; `code()` gives a stable machine-readable name.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// The configured `aes_key` is malformed (the reason never contains key material).
    #[error("invalid aes_key: {0}")]
    InvalidAesKey(String),
    /// The SHA-1 signature over token, timestamp, nonce and encrypt does not match.
    #[error("callback signature does not match")]
    SignatureMismatch,
    /// The `encrypt` field is not strict standard Base64.
    #[error("encrypt field is not valid standard Base64")]
    BadBase64,
    /// The ciphertext is empty or not a multiple of the AES block size.
    #[error("ciphertext length is not a non-zero multiple of 16 bytes")]
    BadCiphertextLength,
    /// The decrypted data does not end in valid 32-byte-block PKCS#7 padding.
    #[error("decrypted data has invalid PKCS#7 padding")]
    BadPadding,
    /// The decrypted data is too short or its length field points past its end.
    #[error("decrypted data does not match the random|length|message|owner layout")]
    BadLayout,
    /// The owner key (app key / suite key / corp id) in the plaintext is not ours.
    #[error("owner key in the decrypted message does not match the configured one")]
    OwnerKeyMismatch,
    /// The decrypted message is not valid UTF-8.
    #[error("decrypted message is not valid UTF-8")]
    NotUtf8,
    /// The timestamp is not a plain decimal number of seconds or milliseconds.
    #[error("timestamp is not a decimal number of seconds or milliseconds")]
    BadTimestamp,
    /// The timestamp lies outside the accepted window around now.
    #[error("timestamp is outside the accepted window")]
    Stale,
}

impl CryptoError {
    /// Stable snake_case code for logs, metrics and API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            CryptoError::InvalidAesKey(_) => "invalid_aes_key",
            CryptoError::SignatureMismatch => "invalid_signature",
            CryptoError::BadBase64 => "bad_base64",
            CryptoError::BadCiphertextLength => "bad_ciphertext_length",
            CryptoError::BadPadding => "bad_padding",
            CryptoError::BadLayout => "bad_layout",
            CryptoError::OwnerKeyMismatch => "owner_key_mismatch",
            CryptoError::NotUtf8 => "not_utf8",
            CryptoError::BadTimestamp => "bad_timestamp",
            CryptoError::Stale => "stale_timestamp",
        }
    }
}

/// Parses a console `aes_key`, as [`AesKey::parse`] with this module's error.
pub fn parse_key(s: &str) -> Result<AesKey, CryptoError> {
    AesKey::parse(s).map_err(CryptoError::InvalidAesKey)
}

/// The CBC IV of the scheme: the first 16 key bytes.
fn iv(key: &AesKey) -> [u8; AES_BLOCK] {
    let mut iv = [0u8; AES_BLOCK];
    iv.copy_from_slice(&key.bytes()[..AES_BLOCK]);
    iv
}

/// Callback crypto bound to one app's token, AES key and owner key.
#[derive(Clone)]
pub struct CallbackCrypto {
    token: String,
    aes_key: AesKey,
    owner_key: String,
}

impl fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The owner key (app key / corp id) is an identifier, not a secret; the rest is.
        f.debug_struct("CallbackCrypto")
            .field("token", &"<redacted>")
            .field("aes_key", &self.aes_key)
            .field("owner_key", &self.owner_key)
            .finish()
    }
}

/// The JSON body DingTalk expects as the answer to an event push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncryptedReply {
    /// SHA-1 signature over token, timestamp, nonce and encrypt.
    pub msg_signature: String,
    /// Timestamp string used in the signature (milliseconds, as the official class sends).
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// Nonce used in the signature.
    pub nonce: String,
    /// Base64 ciphertext of the reply plaintext.
    pub encrypt: String,
}

/// Lowercase-hex SHA-1 of the four strings sorted lexicographically and concatenated.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    // Java sorts by UTF-16 code units, Rust `str` by UTF-8 bytes (= code points); both
    // agree except for astral vs U+E000..U+FFFF characters, which never occur in these
    // ASCII fields.
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Parses a DingTalk timestamp given in seconds (up to 11 digits) or milliseconds (12–13).
pub fn parse_timestamp_ms(ts: &str) -> Result<i64, CryptoError> {
    // Digits only: `i64::from_str` would also accept a sign, which no sender produces.
    // More than 13 digits is past year 2286 even in milliseconds, so it is garbage.
    if ts.is_empty() || ts.len() > 13 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::BadTimestamp);
    }
    let value: i64 = ts.parse().map_err(|_| CryptoError::BadTimestamp)?;
    // DingTalk's own examples use 10-digit seconds on some pages and 13-digit ms on others.
    if ts.len() <= 11 {
        Ok(value * 1000)
    } else {
        Ok(value)
    }
}

/// Fails with `Stale` unless `|now_ms - ts_ms| <= window_ms` (a negative window accepts nothing).
pub fn check_freshness(ts_ms: i64, now_ms: i64, window_ms: i64) -> Result<(), CryptoError> {
    // abs_diff cannot overflow, unlike `(now - ts).abs()` on extreme inputs.
    match u64::try_from(window_ms) {
        Ok(window) if now_ms.abs_diff(ts_ms) <= window => Ok(()),
        _ => Err(CryptoError::Stale),
    }
}

/// Random `[A-Za-z0-9]` bytes, the alphabet the official encoder uses for prefix and nonce.
fn random_alphanumeric<const N: usize>() -> [u8; N] {
    let mut rng = rand::thread_rng();
    let mut out = [0u8; N];
    for b in &mut out {
        *b = rng.sample(Alphanumeric);
    }
    out
}

/// AES-256-CBC in place over whole blocks; the caller guarantees a block-multiple length.
fn cbc_encrypt_in_place(key: &AesKey, buf: &mut [u8]) {
    let mut enc = Aes256CbcEnc::new(key.bytes().into(), (&iv(key)).into());
    for block in buf.chunks_exact_mut(AES_BLOCK) {
        enc.encrypt_block_mut(GenericArray::from_mut_slice(block));
    }
}

/// AES-256-CBC decryption in place over whole blocks (no library padding handling).
fn cbc_decrypt_in_place(key: &AesKey, buf: &mut [u8]) {
    let mut dec = Aes256CbcDec::new(key.bytes().into(), (&iv(key)).into());
    for block in buf.chunks_exact_mut(AES_BLOCK) {
        dec.decrypt_block_mut(GenericArray::from_mut_slice(block));
    }
}

/// Removes PKCS#7 padding with 32-byte blocks.
///
/// Stricter than the official Java class, which treats a last byte outside 1..=32 as "no
/// padding" and never checks the other pad bytes: every correct encoder (DingTalk's own
/// included) emits all-equal pad bytes, so anything else means a wrong key or tampered
/// data and is better rejected here than parsed as a garbage length. Padding made for
/// 16-byte blocks (as some unofficial ports emit) still passes, since it is valid here too.
fn strip_pkcs7_32(buf: &[u8]) -> Result<&[u8], CryptoError> {
    let (&last, _) = buf.split_last().ok_or(CryptoError::BadPadding)?;
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > buf.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, padding) = buf.split_at(buf.len() - pad);
    if padding.iter().any(|&b| b != last) {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

impl CallbackCrypto {
    /// Builds the crypto from the console's token, 43-char aes_key and the owner key.
    pub fn new(token: &str, aes_key: &str, owner_key: &str) -> Result<Self, CryptoError> {
        Ok(CallbackCrypto {
            token: token.to_owned(),
            aes_key: parse_key(aes_key)?,
            owner_key: owner_key.to_owned(),
        })
    }

    /// The HTTP-push crypto of the configuration, when `app_key`, `callback_token` and
    /// `aes_key` are all set (the key was parsed when the configuration was read).
    pub fn from_config(c: &crate::config::DingTalkConfig) -> Option<Self> {
        use secrecy::ExposeSecret;
        let (Some(app_key), Some(token), Some(aes_key)) =
            (&c.app_key, &c.callback_token, &c.aes_key)
        else {
            return None;
        };
        Some(CallbackCrypto {
            token: token.expose_secret().to_owned(),
            aes_key: aes_key.clone(),
            owner_key: app_key.clone(),
        })
    }

    /// The owner key (app key / suite key / corp id) plaintexts must end with.
    pub fn owner_key(&self) -> &str {
        &self.owner_key
    }

    /// Checks `msg_signature` against our token in constant time.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = signature(&self.token, timestamp, nonce, encrypt);
        if bool::from(expected.as_bytes().ct_eq(msg_signature.as_bytes())) {
            Ok(())
        } else {
            Err(CryptoError::SignatureMismatch)
        }
    }

    /// Decrypts an `encrypt` field WITHOUT checking its signature; prefer `decrypt_verified`.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        // Strict: DingTalk sends canonical, padded Base64 without line breaks, and the
        // signature is computed over this exact string anyway.
        let mut buf = STANDARD
            .decode(encrypt_b64)
            .map_err(|_| CryptoError::BadBase64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CryptoError::BadCiphertextLength);
        }
        cbc_decrypt_in_place(&self.aes_key, &mut buf);
        let body = strip_pkcs7_32(&buf)?;

        let after_random = body.get(RANDOM_LEN..).ok_or(CryptoError::BadLayout)?;
        let (len_bytes, rest) = after_random
            .split_first_chunk::<LEN_FIELD>()
            .ok_or(CryptoError::BadLayout)?;
        let msg_len =
            usize::try_from(u32::from_be_bytes(*len_bytes)).map_err(|_| CryptoError::BadLayout)?;
        let (msg, owner) = rest
            .split_at_checked(msg_len)
            .ok_or(CryptoError::BadLayout)?;
        if owner != self.owner_key.as_bytes() {
            return Err(CryptoError::OwnerKeyMismatch);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }

    /// Verifies the signature, then decrypts: the entry point for untrusted pushes.
    pub fn decrypt_verified(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Encrypts with a caller-chosen 16-byte random prefix (deterministic, for vectors).
    ///
    /// # Panics
    ///
    /// If `plaintext` is longer than `u32::MAX` bytes, which the format cannot express.
    pub fn encrypt_with(&self, random16: &[u8; 16], plaintext: &str) -> String {
        let msg = plaintext.as_bytes();
        let msg_len = u32::try_from(msg.len())
            .expect("plaintext longer than 4 GiB cannot be expressed in the u32 length field");
        let unpadded = RANDOM_LEN + LEN_FIELD + msg.len() + self.owner_key.len();
        // Always 1..=32: a full block of 32s when already aligned, as PKCS#7 requires.
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
        let mut buf = Vec::with_capacity(unpadded + pad);
        buf.extend_from_slice(random16);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.owner_key.as_bytes());
        // pad <= 32, so the cast is lossless.
        buf.resize(unpadded + pad, pad as u8);
        cbc_encrypt_in_place(&self.aes_key, &mut buf);
        // STANDARD never inserts line breaks (the Python port's 76-char breaks break signatures).
        STANDARD.encode(buf)
    }

    /// Encrypts with a fresh random 16-character `[A-Za-z0-9]` prefix.
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with(&random_alphanumeric::<RANDOM_LEN>(), plaintext)
    }

    /// Builds a signed, encrypted reply with fixed prefix, timestamp and nonce.
    pub fn reply_with(
        &self,
        plaintext: &str,
        random16: &[u8; 16],
        timestamp: &str,
        nonce: &str,
    ) -> EncryptedReply {
        let encrypt = self.encrypt_with(random16, plaintext);
        EncryptedReply {
            msg_signature: signature(&self.token, timestamp, nonce, &encrypt),
            time_stamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            encrypt,
        }
    }

    /// The encrypted `success` reply DingTalk requires, with a ms timestamp and random nonce.
    pub fn reply_success(&self, now_ms: u64) -> EncryptedReply {
        let nonce_bytes = random_alphanumeric::<16>();
        // Alphanumeric yields ASCII only, so this conversion is lossless.
        let nonce: String = nonce_bytes.iter().map(|&b| char::from(b)).collect();
        self.reply_with(
            "success",
            &random_alphanumeric::<RANDOM_LEN>(),
            &now_ms.to_string(),
            &nonce,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngCore as _, SeedableRng as _};
    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/dingtalk.json"
    ));

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("vector file is valid JSON")
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("vector field {key} is a string"))
    }

    fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("vector field {key} is an array"))
    }

    fn random16(v: &Value) -> [u8; 16] {
        s(v, "random16")
            .as_bytes()
            .try_into()
            .expect("random16 has 16 bytes")
    }

    /// The crypto configured with the vectors' token, aes_key and owner key.
    fn vector_crypto() -> CallbackCrypto {
        let v = vectors();
        let inputs = &v["callback_crypto"]["inputs"];
        CallbackCrypto::new(
            s(inputs, "token"),
            s(inputs, "aes_key"),
            s(inputs, "owner_key"),
        )
        .expect("vector key parses")
    }

    /// Encrypts an arbitrary raw plaintext block sequence (for building malformed inputs).
    fn encrypt_raw(crypto: &CallbackCrypto, mut raw: Vec<u8>) -> String {
        assert_eq!(raw.len() % AES_BLOCK, 0, "test helper needs whole blocks");
        cbc_encrypt_in_place(&crypto.aes_key, &mut raw);
        STANDARD.encode(raw)
    }

    /// Decrypts without unpadding, to look at pad bytes and the random prefix.
    fn decrypt_raw(crypto: &CallbackCrypto, encrypt: &str) -> Vec<u8> {
        let mut buf = STANDARD.decode(encrypt).expect("valid base64");
        cbc_decrypt_in_place(&crypto.aes_key, &mut buf);
        buf
    }

    /// A well-formed layout (random | len | msg | owner) with a custom length field.
    fn layout(len_field: u32, msg: &[u8], owner: &[u8]) -> Vec<u8> {
        let mut raw = b"0123456789abcdef".to_vec();
        raw.extend_from_slice(&len_field.to_be_bytes());
        raw.extend_from_slice(msg);
        raw.extend_from_slice(owner);
        raw
    }

    fn pad32(mut raw: Vec<u8>) -> Vec<u8> {
        let pad = PAD_BLOCK - raw.len() % PAD_BLOCK;
        raw.resize(raw.len() + pad, pad as u8);
        raw
    }

    #[test]
    fn parses_vector_key_with_nonzero_trailing_bits_to_expected_bytes_and_iv() {
        let v = vectors();
        let inputs = &v["callback_crypto"]["inputs"];
        let key = parse_key(s(inputs, "aes_key")).expect("key parses");
        assert_eq!(hex::encode(key.bytes()), s(inputs, "aes_key_bytes_hex"));
        assert_eq!(hex::encode(iv(&key)), s(inputs, "iv_hex"));
    }

    #[test]
    fn parses_every_listed_key_whatever_its_trailing_bits() {
        let v = vectors();
        let values = v["callback_crypto"]["aes_key_trailing_bits"]["values"]
            .as_object()
            .expect("values is an object");
        assert_eq!(values.len(), 4);
        for key in values.keys() {
            assert!(parse_key(key).is_ok(), "key {key} must parse");
        }
    }

    #[test]
    fn rejects_42_char_key_with_message_naming_43() {
        let v = vectors();
        let neg = &v["callback_crypto"]["negative_vectors"];
        assert!(s(neg, "aes_key_of_42_chars").starts_with("ERR:900004"));
        let key42 = &s(&v["callback_crypto"]["inputs"], "aes_key")[..42];
        let err = parse_key(key42).expect_err("42 chars must fail");
        assert_eq!(err.code(), "invalid_aes_key");
        let msg = err.to_string();
        assert!(msg.contains("43"), "{msg}");
        assert!(msg.contains("42"), "{msg}");
        let err = CallbackCrypto::new("t", key42, "o").expect_err("42 chars must fail");
        assert!(matches!(err, CryptoError::InvalidAesKey(_)));
    }

    #[test]
    fn rejects_keys_of_wrong_length_or_with_non_alphanumeric_characters() {
        let good = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let too_long = format!("{good}H");
        assert!(parse_key(&too_long).is_err());
        assert!(parse_key("").is_err());
        for bad in ['+', '/', '=', ' ', '-', '_', 'é', '钉'] {
            let key: String = good.chars().take(42).chain([bad]).collect();
            let err = parse_key(&key).expect_err("non-alphanumeric must fail");
            assert!(matches!(err, CryptoError::InvalidAesKey(_)), "{bad:?}");
        }
        // Multi-byte characters are counted as characters in the message.
        let err = parse_key("钉钉").expect_err("too short");
        assert!(err.to_string().contains("2 were given"), "{err}");
    }

    #[test]
    fn debug_output_never_contains_key_material_or_token() {
        let crypto = vector_crypto();
        let key_hex = hex::encode(crypto.aes_key.bytes());
        for out in [format!("{crypto:?}"), format!("{:?}", crypto.aes_key)] {
            assert!(out.contains("redacted"), "{out}");
            assert!(!out.contains("tokenABC123"), "{out}");
            assert!(!out.contains("abcdefghijklmnop"), "{out}");
            assert!(!out.contains(&key_hex[..8]), "{out}");
            assert!(!out.contains("105"), "{out}"); // first key byte 0x69 in decimal
        }
    }

    #[test]
    fn encrypt_vectors_match_official_java_ciphertexts_and_signatures() {
        let v = vectors();
        let crypto = vector_crypto();
        let token = s(&v["callback_crypto"]["inputs"], "token");
        let list = arr(&v["callback_crypto"], "encrypt_vectors");
        assert_eq!(list.len(), 4);
        for vec in list {
            let name = s(vec, "name");
            let plaintext = s(vec, "plaintext");
            assert_eq!(
                plaintext.len() as u64,
                vec["plaintext_utf8_len"].as_u64().expect("len"),
                "{name}"
            );
            let encrypt = crypto.encrypt_with(&random16(vec), plaintext);
            assert_eq!(encrypt, s(vec, "encrypt"), "{name}");
            let sig = signature(token, s(vec, "timestamp"), s(vec, "nonce"), &encrypt);
            assert_eq!(sig, s(vec, "msg_signature"), "{name}");

            let raw = decrypt_raw(&crypto, &encrypt);
            assert_eq!(
                raw.len() as u64,
                vec["ciphertext_len"].as_u64().expect("len"),
                "{name}"
            );
            assert_eq!(
                u64::from(*raw.last().expect("non-empty")),
                vec["pkcs7_pad_byte"].as_u64().expect("pad"),
                "{name}"
            );
            assert_eq!(crypto.decrypt(&encrypt).as_deref(), Ok(plaintext), "{name}");
        }
    }

    #[test]
    fn decrypt_vectors_decrypt_under_both_signature_query_names() {
        let v = vectors();
        let crypto = vector_crypto();
        let list = arr(&v["callback_crypto"], "decrypt_vectors");
        assert_eq!(list.len(), 4);
        for vec in list {
            let name = s(vec, "name");
            let q = &vec["query"];
            let encrypt = s(&vec["body"], "encrypt");
            for param in ["msg_signature", "signature"] {
                let got =
                    crypto.decrypt_verified(s(q, param), s(q, "timestamp"), s(q, "nonce"), encrypt);
                assert_eq!(
                    got.as_deref(),
                    Ok(s(vec, "expected_plaintext")),
                    "{name} via {param}"
                );
            }
        }
    }

    #[test]
    fn success_reply_reproduces_vector_byte_for_byte() {
        let v = vectors();
        let crypto = vector_crypto();
        let sr = &v["callback_crypto"]["success_reply"];
        let reply = crypto.reply_with(
            s(sr, "plaintext"),
            &random16(sr),
            s(sr, "timeStamp"),
            s(sr, "nonce"),
        );
        let body = &sr["reply_body"];
        assert_eq!(reply.msg_signature, s(body, "msg_signature"));
        assert_eq!(reply.time_stamp, s(body, "timeStamp"));
        assert_eq!(reply.nonce, s(body, "nonce"));
        assert_eq!(reply.encrypt, s(body, "encrypt"));

        let json = serde_json::to_string(&reply).expect("serializes");
        let expected = format!(
            r#"{{"msg_signature":"{}","timeStamp":"{}","nonce":"{}","encrypt":"{}"}}"#,
            s(body, "msg_signature"),
            s(body, "timeStamp"),
            s(body, "nonce"),
            s(body, "encrypt"),
        );
        assert_eq!(json, expected);
        assert_eq!(serde_json::to_value(&reply).expect("serializes"), *body);

        let raw = decrypt_raw(&crypto, &reply.encrypt);
        assert_eq!(
            raw.len() as u64,
            sr["ciphertext_len"].as_u64().expect("len")
        );
        assert_eq!(
            u64::from(raw[raw.len() - 1]),
            sr["pkcs7_pad_byte"].as_u64().expect("pad")
        );
    }

    #[test]
    fn reply_success_uses_ms_timestamp_random_nonce_and_decrypts_to_success() {
        let crypto = vector_crypto();
        let now = 1_732_500_000_123_u64;
        let a = crypto.reply_success(now);
        let b = crypto.reply_success(now);
        assert_eq!(a.time_stamp, "1732500000123");
        assert_eq!(a.nonce.len(), 16);
        assert!(a.nonce.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.nonce, b.nonce, "nonce must be random");
        assert_ne!(a.encrypt, b.encrypt, "random prefix must differ");
        for r in [a, b] {
            let got =
                crypto.decrypt_verified(&r.msg_signature, &r.time_stamp, &r.nonce, &r.encrypt);
            assert_eq!(got.as_deref(), Ok("success"));
        }
    }

    #[test]
    fn rejects_tampered_signature_like_official_900006() {
        let v = vectors();
        let crypto = vector_crypto();
        let neg = &v["callback_crypto"]["negative_vectors"];
        assert!(s(neg, "tampered_signature_last_hex_digit").starts_with("ERR:900006"));
        let vec = &arr(&v["callback_crypto"], "decrypt_vectors")[0];
        let q = &vec["query"];
        let sig = s(q, "msg_signature");
        let last = sig.chars().last().expect("non-empty");
        let flipped = if last == '0' { '1' } else { '0' };
        let tampered = format!("{}{flipped}", &sig[..sig.len() - 1]);
        let encrypt = s(&vec["body"], "encrypt");
        let err = crypto
            .decrypt_verified(&tampered, s(q, "timestamp"), s(q, "nonce"), encrypt)
            .expect_err("tampered signature must fail");
        assert_eq!(err, CryptoError::SignatureMismatch);
        assert_eq!(err.code(), "invalid_signature");
        // Upper-case hex, truncation and emptiness are mismatches too.
        for other in [sig.to_uppercase(), sig[..39].to_owned(), String::new()] {
            assert_eq!(
                crypto.verify_signature(&other, s(q, "timestamp"), s(q, "nonce"), encrypt),
                Err(CryptoError::SignatureMismatch)
            );
        }
    }

    #[test]
    fn rejects_changed_timestamp_like_official_900006() {
        let v = vectors();
        let crypto = vector_crypto();
        let neg = &v["callback_crypto"]["negative_vectors"];
        assert!(s(neg, "timestamp_changed_to_1700000000001").starts_with("ERR:900006"));
        let vec = &arr(&v["callback_crypto"], "decrypt_vectors")[0];
        let q = &vec["query"];
        let err = crypto
            .decrypt_verified(
                s(q, "msg_signature"),
                "1700000000001",
                s(q, "nonce"),
                s(&vec["body"], "encrypt"),
            )
            .expect_err("changed timestamp must fail");
        assert_eq!(err, CryptoError::SignatureMismatch);
    }

    #[test]
    fn rejects_wrong_owner_key_like_official_900010() {
        let v = vectors();
        let neg = &v["callback_crypto"]["negative_vectors"];
        assert!(s(neg, "decrypt_with_owner_key_dingyyyyyyyyyyyy").starts_with("ERR:900010"));
        let inputs = &v["callback_crypto"]["inputs"];
        let other =
            CallbackCrypto::new(s(inputs, "token"), s(inputs, "aes_key"), "dingyyyyyyyyyyyy")
                .expect("key parses");
        let vec = &arr(&v["callback_crypto"], "decrypt_vectors")[0];
        let q = &vec["query"];
        let err = other
            .decrypt_verified(
                s(q, "msg_signature"),
                s(q, "timestamp"),
                s(q, "nonce"),
                s(&vec["body"], "encrypt"),
            )
            .expect_err("wrong owner key must fail");
        assert_eq!(err, CryptoError::OwnerKeyMismatch);
        assert_eq!(err.code(), "owner_key_mismatch");
    }

    #[test]
    fn decrypts_both_ciphertexts_published_by_dingtalk() {
        let v = vectors();
        let list = arr(&v["callback_crypto"], "official_published_examples");
        assert_eq!(list.len(), 2);
        for ex in list {
            let crypto = CallbackCrypto::new(s(ex, "token"), s(ex, "aes_key"), s(ex, "owner_key"))
                .expect("published key parses");
            let q = &ex["query"];
            let got = crypto.decrypt_verified(
                s(q, "msg_signature"),
                s(q, "timestamp"),
                s(q, "nonce"),
                s(&ex["body"], "encrypt"),
            );
            assert_eq!(
                got.as_deref(),
                Ok(s(ex, "expected_plaintext_per_source")),
                "{}",
                s(ex, "source")
            );
        }
    }

    #[test]
    fn signature_sorts_the_four_strings_before_hashing() {
        let expected = hex::encode(Sha1::digest(b"1234abcdnoncetoken"));
        assert_eq!(signature("token", "1234", "nonce", "abcd"), expected);
        assert_eq!(signature("abcd", "nonce", "token", "1234"), expected);
        assert_eq!(expected.len(), 40);
        assert!(
            expected
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn round_trips_random_chinese_and_emoji_plaintexts() {
        let crypto = vector_crypto();
        let mut rng = StdRng::seed_from_u64(0x00d1_6b21_d6e0);
        let alphabet: Vec<char> =
            "aZ09 {}\":,\n\t项目群：钉钉⇄同步测试😀🎉👍🏽é\u{0}\u{7f}\u{ffff}\u{10ffff}"
                .chars()
                .collect();
        let mut cases: Vec<String> = vec![
            String::new(),
            "success".to_owned(),
            "钉钉 ⇄ Outlook 😀".to_owned(),
            "x".repeat(4096),
        ];
        for len in 0..120 {
            cases.push(
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect(),
            );
        }
        for plaintext in &cases {
            let encrypt = crypto.encrypt(plaintext);
            assert_eq!(crypto.decrypt(&encrypt).as_deref(), Ok(plaintext.as_str()));
            let reply = crypto.reply_with(plaintext, b"AAAAAAAAAAAAAAAA", "1700000000", "n");
            let got = crypto.decrypt_verified(
                &reply.msg_signature,
                &reply.time_stamp,
                &reply.nonce,
                &reply.encrypt,
            );
            assert_eq!(got.as_deref(), Ok(plaintext.as_str()));
        }
    }

    #[test]
    fn encrypt_output_is_single_line_padded_standard_base64_with_alphanumeric_prefix() {
        let crypto = vector_crypto();
        let encrypt = crypto.encrypt(&"长".repeat(500));
        assert!(!encrypt.contains('\n') && !encrypt.contains('\r'));
        assert!(encrypt.len() > 76);
        let raw = STANDARD.decode(&encrypt).expect("strict base64");
        assert_eq!(raw.len() % PAD_BLOCK, 0);
        let plain = decrypt_raw(&crypto, &encrypt);
        assert!(plain[..16].iter().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn rejects_ciphertext_with_inconsistent_padding() {
        let crypto = vector_crypto();
        let mut raw = pad32(layout(2, b"hi", crypto.owner_key.as_bytes()));
        let n = raw.len();
        // 16 + 4 + 2 + 16 = 38 bytes, so 26 pad bytes; make one of them differ.
        assert_eq!(raw[n - 1], 26);
        raw[n - 3] = 5;
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn rejects_ciphertext_with_pad_byte_zero_or_above_32() {
        let crypto = vector_crypto();
        for last in [0u8, 33, 48, 255] {
            let mut raw = layout(2, b"hi", crypto.owner_key.as_bytes());
            raw.resize(64, last);
            let err = crypto.decrypt(&encrypt_raw(&crypto, raw));
            assert_eq!(err, Err(CryptoError::BadPadding), "pad byte {last}");
            assert_eq!(CryptoError::BadPadding.code(), "bad_padding");
        }
    }

    #[test]
    fn rejects_pad_longer_than_a_single_block_ciphertext() {
        let crypto = vector_crypto();
        // One 16-byte block whose last byte claims 20 bytes of padding.
        let raw = vec![20u8; 16];
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn accepts_padding_made_for_16_byte_blocks_as_some_ports_emit() {
        let crypto = vector_crypto();
        let mut raw = layout(5, b"hello", crypto.owner_key.as_bytes()); // 41 bytes
        let pad = AES_BLOCK - raw.len() % AES_BLOCK; // 7, valid PKCS#7/32 too
        raw.resize(raw.len() + pad, pad as u8);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)).as_deref(),
            Ok("hello")
        );
    }

    #[test]
    fn rejects_ciphertext_whose_length_is_not_a_nonzero_multiple_of_16() {
        let crypto = vector_crypto();
        for len in [0usize, 1, 15, 17, 31, 33, 47] {
            let err = crypto.decrypt(&STANDARD.encode(vec![7u8; len]));
            assert_eq!(err, Err(CryptoError::BadCiphertextLength), "len {len}");
        }
    }

    #[test]
    fn rejects_non_strict_base64_such_as_line_breaks_or_missing_padding() {
        let crypto = vector_crypto();
        let v = vectors();
        let good = s(&arr(&v["callback_crypto"], "encrypt_vectors")[0], "encrypt");
        let with_newline = format!("{}\n{}", &good[..76], &good[76..]);
        let trailing_newline = format!("{good}\n");
        let unpadded = good.trim_end_matches('=').to_owned();
        let url_safe = good.replace('+', "-").replace('/', "_");
        let non_canonical = good.replacen("A==", "B==", 1); // vector ends in "qA==".
        assert_ne!(non_canonical, good);
        for bad in [
            with_newline,
            trailing_newline,
            unpadded,
            url_safe,
            non_canonical,
        ] {
            assert_eq!(crypto.decrypt(&bad), Err(CryptoError::BadBase64), "{bad:?}");
        }
        assert_eq!(crypto.decrypt("!!!!"), Err(CryptoError::BadBase64));
    }

    #[test]
    fn rejects_plaintext_too_short_for_random_and_length_field() {
        let crypto = vector_crypto();
        // 19 bytes of content: one short of random(16) + len(4).
        let raw = pad32(vec![b'a'; 19]);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::BadLayout)
        );
        // A whole block of padding leaves nothing at all.
        let raw = vec![32u8; 32];
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::BadLayout)
        );
    }

    #[test]
    fn rejects_length_field_pointing_past_the_end() {
        let crypto = vector_crypto();
        for len_field in [100u32, u32::MAX, 2 + 16 + 1] {
            let raw = pad32(layout(len_field, b"hi", crypto.owner_key.as_bytes()));
            let err = crypto.decrypt(&encrypt_raw(&crypto, raw));
            assert_eq!(err, Err(CryptoError::BadLayout), "len {len_field}");
        }
    }

    #[test]
    fn rejects_length_field_that_leaves_a_wrong_owner_tail() {
        let crypto = vector_crypto();
        // Length one short: the owner tail gains a leading byte and no longer matches.
        let raw = pad32(layout(1, b"hi", crypto.owner_key.as_bytes()));
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::OwnerKeyMismatch)
        );
        // A missing owner key is a mismatch as well.
        let raw = pad32(layout(2, b"hi", b""));
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, raw)),
            Err(CryptoError::OwnerKeyMismatch)
        );
    }

    #[test]
    fn rejects_message_that_is_not_utf8() {
        let crypto = vector_crypto();
        let raw = pad32(layout(3, b"\xff\xfe\x80", crypto.owner_key.as_bytes()));
        let err = crypto.decrypt(&encrypt_raw(&crypto, raw));
        assert_eq!(err, Err(CryptoError::NotUtf8));
    }

    #[test]
    fn garbage_input_never_panics_and_is_rejected() {
        let crypto = vector_crypto();
        let mut rng = StdRng::seed_from_u64(42);
        for len in 0..300usize {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            // Random ciphertexts of every length, including valid block multiples.
            let b64 = STANDARD.encode(&bytes);
            assert!(crypto.decrypt(&b64).is_err(), "len {len}");
            assert!(crypto.decrypt_verified("x", "1", "n", &b64).is_err());
            // Random bytes as text (lossy), as a signature and as a key.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(crypto.decrypt(&text).is_err());
            let _ = crypto.verify_signature(&text, &text, &text, &text);
            let _ = parse_key(&text);
            let _ = parse_timestamp_ms(&text);
        }
        // Ciphertexts from another key with valid structure fail somewhere, without panic.
        let other = CallbackCrypto::new(
            "tokenABC123",
            "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus",
            "dingxxxxxxxxxxxx",
        )
        .expect("key parses");
        for i in 0..200 {
            let encrypt = other.encrypt(&"z".repeat(i));
            assert!(crypto.decrypt(&encrypt).is_err(), "i {i}");
        }
    }

    #[test]
    fn parses_second_and_millisecond_timestamps_to_milliseconds() {
        assert_eq!(parse_timestamp_ms("1614767836"), Ok(1_614_767_836_000));
        assert_eq!(parse_timestamp_ms("1608001896814"), Ok(1_608_001_896_814));
        assert_eq!(parse_timestamp_ms("99999999999"), Ok(99_999_999_999_000));
        assert_eq!(parse_timestamp_ms("100000000000"), Ok(100_000_000_000));
        assert_eq!(parse_timestamp_ms("0"), Ok(0));
        assert_eq!(parse_timestamp_ms("9999999999999"), Ok(9_999_999_999_999));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "-1",
            "+1700000000",
            " 1700000000",
            "1700000000 ",
            "17e8",
            "1.5",
            "１７００",
            "12345678901234",
            "99999999999999999999999",
        ] {
            let err = parse_timestamp_ms(bad).expect_err(bad);
            assert_eq!(err, CryptoError::BadTimestamp, "{bad:?}");
            assert_eq!(err.code(), "bad_timestamp");
        }
    }

    #[test]
    fn freshness_accepts_inside_window_and_rejects_outside_without_overflow() {
        let now = 1_732_500_000_000;
        let hour = 3_600_000;
        assert_eq!(check_freshness(now, now, hour), Ok(()));
        assert_eq!(check_freshness(now - hour, now, hour), Ok(()));
        assert_eq!(check_freshness(now + hour, now, hour), Ok(()));
        assert_eq!(
            check_freshness(now - hour - 1, now, hour),
            Err(CryptoError::Stale)
        );
        assert_eq!(
            check_freshness(now + hour + 1, now, hour),
            Err(CryptoError::Stale)
        );
        assert_eq!(check_freshness(now, now, -1), Err(CryptoError::Stale));
        assert_eq!(
            check_freshness(i64::MIN, i64::MAX, hour),
            Err(CryptoError::Stale)
        );
        assert_eq!(
            check_freshness(i64::MAX, i64::MIN, i64::MAX),
            Err(CryptoError::Stale)
        );
        assert_eq!(check_freshness(i64::MIN, i64::MIN, 0), Ok(()));
        assert_eq!(CryptoError::Stale.code(), "stale_timestamp");
    }

    #[test]
    fn error_codes_are_distinct_snake_case_and_messages_non_empty() {
        let all = [
            CryptoError::InvalidAesKey("x".into()),
            CryptoError::SignatureMismatch,
            CryptoError::BadBase64,
            CryptoError::BadCiphertextLength,
            CryptoError::BadPadding,
            CryptoError::BadLayout,
            CryptoError::OwnerKeyMismatch,
            CryptoError::NotUtf8,
            CryptoError::BadTimestamp,
            CryptoError::Stale,
        ];
        let mut codes: Vec<&str> = all.iter().map(CryptoError::code).collect();
        for (err, code) in all.iter().zip(&codes) {
            assert!(!err.to_string().is_empty());
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{code}"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
