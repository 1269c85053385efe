//! Setting values that have a syntax of their own, parsed once when the configuration is
//! read: handlers and clients receive these types, never the raw strings.
//!
//! Each value deserialises from its string form; a bad value fails with a message that
//! starts with the setting's name (`key: reason`), which [`super::ConfigError`] splits
//! back into key and reason.

use std::{collections::BTreeSet, fmt, net::IpAddr, str::FromStr};

use base64::{
    Engine as _, alphabet,
    engine::{GeneralPurpose, GeneralPurposeConfig},
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// REST hooks and polling triggers (`/v1/hooks`, `/v1/triggers`).
    Triggers,
    /// Actions and searches (`/v1/actions`).
    Actions,
    /// Dead letters and the audit trail (`/v1/deliveries`, `/v1/audit`).
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Triggers, Scope::Actions, Scope::Admin];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Triggers => "triggers",
            Scope::Actions => "actions",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "triggers" => Ok(Scope::Triggers),
            "actions" => Ok(Scope::Actions),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}`; expected triggers, actions or admin"
            )),
        }
    }
}

/// Parses `a,b` or `a+b` into a non-empty scope set.
pub fn parse_scopes(s: &str) -> Result<BTreeSet<Scope>, String> {
    let scopes = s
        .split([',', '+'])
        .filter(|p| !p.trim().is_empty())
        .map(Scope::from_str)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if scopes.is_empty() {
        return Err("at least one scope is needed (triggers, actions, admin)".into());
    }
    Ok(scopes)
}

/// An API key accepted from the configuration (`api.bootstrap_keys`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct BootstrapKey {
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: BTreeSet<Scope>,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

impl BootstrapKey {
    /// Parses `name:scope+scope:sha256hex`.
    pub fn parse(entry: &str) -> Result<BootstrapKey, String> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(scopes), Some(hash)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(
                "each entry must read `name:scope+scope:sha256hex` (see `dingbridge keys hash`)"
                    .into(),
            );
        };
        if name.is_empty() {
            return Err("the name part is empty".into());
        }
        let scopes = parse_scopes(scopes)?;
        let bytes = hex::decode(hash.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or("the hash part must be 64 hex characters (a SHA-256)")?;
        Ok(BootstrapKey {
            name: name.to_string(),
            scopes,
            hash: bytes,
        })
    }
}

impl TryFrom<String> for BootstrapKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|why| format!("api.bootstrap_keys: {why}"))
    }
}

impl From<BootstrapKey> for String {
    fn from(k: BootstrapKey) -> String {
        let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
        format!("{}:{}:{}", k.name, scopes.join("+"), hex::encode(k.hash))
    }
}

/// One `id` or `id|label` entry of an option list (`api.mailboxes`, …); the label
/// defaults to the id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub struct OptionItem {
    /// What the option stands for (a mailbox address, a conversation id…).
    pub id: String,
    /// What a person sees in the dropdown.
    pub label: String,
}

impl From<&str> for OptionItem {
    fn from(entry: &str) -> Self {
        let (id, label) = match entry.split_once('|') {
            Some((id, label)) if !label.trim().is_empty() => (id.trim(), label.trim()),
            Some((id, _)) => (id.trim(), id.trim()),
            None => (entry.trim(), entry.trim()),
        };
        OptionItem {
            id: id.to_string(),
            label: label.to_string(),
        }
    }
}

impl From<String> for OptionItem {
    fn from(entry: String) -> Self {
        OptionItem::from(entry.as_str())
    }
}

impl From<OptionItem> for String {
    fn from(o: OptionItem) -> String {
        if o.id == o.label {
            o.id
        } else {
            format!("{}|{}", o.id, o.label)
        }
    }
}

/// An address or CIDR range of `hooks.allow_private_targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedNet(pub IpNet);

impl AllowedNet {
    /// Parses an address (`10.1.2.3`) or a CIDR range (`10.1.2.0/24`).
    pub fn parse(entry: &str) -> Result<AllowedNet, String> {
        let e = entry.trim();
        if let Ok(net) = e.parse::<IpNet>() {
            return Ok(AllowedNet(net));
        }
        e.parse::<IpAddr>()
            .map(|ip| AllowedNet(IpNet::from(ip)))
            .map_err(|_| format!("`{e}` is neither an IP address nor a CIDR range"))
    }
}

impl TryFrom<String> for AllowedNet {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|why| format!("hooks.allow_private_targets: {why}"))
    }
}

impl From<AllowedNet> for String {
    fn from(n: AllowedNet) -> String {
        n.0.to_string()
    }
}

/// Number of characters of a console `aes_key` (Base64 of 32 bytes without its `=`).
pub const AES_KEY_CHARS: usize = 43;

/// Decoder for the console key: DingTalk keys usually have non-zero trailing bits in the
/// 43rd character, which Java/Python decoders ignore but the default Rust engine rejects.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The 32-byte AES-256 key of DingTalk's callback crypto, decoded from the console's
/// 43-character `EncodingAESKey` (`dingtalk.aes_key`).
// No PartialEq: comparing keys is never needed and would not be constant time.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct AesKey([u8; 32]);

impl AesKey {
    /// Parses a 43-character key (letters and digits) as Base64 of `s + "="`.
    pub fn parse(s: &str) -> Result<AesKey, String> {
        // Count characters, not bytes, so the message is right for non-ASCII input too.
        let given = s.chars().count();
        if given != AES_KEY_CHARS {
            return Err(format!(
                "{AES_KEY_CHARS} characters are needed, {given} were given"
            ));
        }
        // The console only issues letters and digits; '+' and '/' would be valid Base64
        // but signal a pasted value of some other kind.
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("only ASCII letters and digits are allowed".to_owned());
        }
        let bytes = KEY_ENGINE
            .decode(format!("{s}="))
            .map_err(|_| "not decodable as Base64".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "does not decode to 32 bytes".to_owned())?;
        Ok(AesKey(key))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<String> for AesKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|reason| {
            format!(
                "dingtalk.aes_key (DINGBRIDGE_DINGTALK_AES_KEY): the EncodingAESKey from the DingTalk console: {reason}"
            )
        })
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key bytes: Debug output ends up in logs and panics.
        f.write_str("AesKey(<redacted>)")
    }
}

impl Serialize for AesKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Only used to discover field types for env overrides; never reveals the value.
        s.serialize_str("<redacted>")
    }
}

/// Signature algorithm of the Graph client assertion (`graph.assertion_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AssertionAlg {
    /// RSA-PSS with SHA-256 and header `x5t#S256` (Microsoft's current recommendation).
    #[default]
    #[serde(rename = "PS256", alias = "ps256")]
    Ps256,
    /// RSA PKCS#1 v1.5 with SHA-256 and header `x5t` (SHA-1 thumbprint; older docs, MSAL).
    #[serde(rename = "RS256", alias = "rs256")]
    Rs256,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_items_split_on_the_bar_and_default_the_label_to_the_id() {
        let o = OptionItem::from(" ops@contoso.com | Operations ");
        assert_eq!(
            (o.id.as_str(), o.label.as_str()),
            ("ops@contoso.com", "Operations")
        );
        let o = OptionItem::from("cid==|");
        assert_eq!((o.id.as_str(), o.label.as_str()), ("cid==", "cid=="));
        assert_eq!(String::from(OptionItem::from("a|b")), "a|b");
    }

    #[test]
    fn bootstrap_keys_round_trip_through_their_configuration_form() {
        let entry = format!("zapier:triggers+actions:{}", "ab".repeat(32));
        let k = BootstrapKey::try_from(entry.clone()).expect("parses");
        assert_eq!(k.name, "zapier");
        assert_eq!(String::from(k), entry);
        let err = BootstrapKey::try_from("zapier:admin:00".to_string()).expect_err("short hash");
        assert!(err.starts_with("api.bootstrap_keys: "), "{err}");
    }

    #[test]
    fn allowed_nets_take_addresses_and_ranges_and_name_their_setting_when_wrong() {
        assert_eq!(
            AllowedNet::parse("10.1.2.3").map(|n| n.0.to_string()),
            Ok("10.1.2.3/32".to_string())
        );
        assert!(AllowedNet::parse("10.1.2.0/24").is_ok());
        let err = AllowedNet::try_from("intranet".to_string()).expect_err("not an address");
        assert!(err.starts_with("hooks.allow_private_targets: "), "{err}");
    }
}
