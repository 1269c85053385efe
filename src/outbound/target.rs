//! Where REST hook deliveries may go. A target URL is http(s), carries no credentials,
//! and neither names nor resolves to a loopback, private, link-local, unique-local,
//! shared, multicast or unspecified address (v4 or v6, IPv4-mapped included) unless
//! `hooks.allow_private_targets` lists it. The check runs when a hook is created and
//! again at every delivery, through a DNS resolver that drops refused addresses, so a
//! name re-pointed at an internal host later (DNS rebinding) is still refused.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use url::{Host, Url};

use crate::config::AllowedNet;

/// Longest time a name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// `true` for addresses a public webhook target never has.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted_v4(v4);
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 (may reach internal v4)
                || (s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

/// The SSRF policy.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow: Vec<IpNet>,
}

impl TargetPolicy {
    /// A policy permitting these otherwise-refused ranges.
    pub fn new(allowed: &[AllowedNet]) -> Self {
        Self {
            allow: allowed.iter().map(|n| n.0).collect(),
        }
    }

    /// `true` when deliveries may go to `ip`.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        !is_restricted(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks everything that needs no lookup; answers the parsed URL.
    pub fn check_syntax(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials (user:password@)".into());
        }
        if raw.len() > 2048 {
            return Err("must be at most 2048 characters".into());
        }
        match url.host() {
            None => return Err("must name a host".into()),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(_)) => {}
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.ip_allowed(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is a loopback, private, link-local or otherwise internal address; such targets are refused unless listed in hooks.allow_private_targets"
            ))
        }
    }

    /// Full check: syntax, then every address the host resolves to.
    pub async fn validate(&self, raw: &str) -> Result<Url, String> {
        let url = self.check_syntax(raw)?;
        if let Some(Host::Domain(name)) = url.host() {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
                    .and(self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)))?;
            }
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs = resolve(&name, port)
                .await
                .map_err(|e| format!("host `{name}` cannot be resolved: {e}"))?;
            for a in addrs {
                self.check_ip(a.ip())
                    .map_err(|why| format!("host `{name}` resolves to {why}"))?;
            }
        }
        Ok(url)
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(addrs)) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err("no addresses".into())
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("lookup timed out".into()),
    }
}

/// reqwest resolver that only ever hands out permitted addresses.
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TargetPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve(&name, 0).await?;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.ip_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("`{name}` resolves only to refused internal addresses").into());
            }
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        let p = TargetPolicy::default();
        for bad in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(p.check_syntax(bad).is_err(), "{bad} must be refused");
        }
        for good in ["https://93.184.216.34/hook", "https://[2606:4700::1]/x"] {
            assert!(p.check_syntax(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_allow_list_permits_listed_ranges_only() {
        let p = TargetPolicy::new(&[
            AllowedNet::parse("127.0.0.1").expect("address"),
            AllowedNet::parse("10.0.0.0/8").expect("range"),
        ]);
        assert!(p.check_syntax("http://127.0.0.1:9/x").is_ok());
        assert!(p.check_syntax("http://10.9.9.9/").is_ok());
        assert!(p.check_syntax("http://127.0.0.2/").is_err());
        assert!(p.check_syntax("http://[::1]/").is_err());
        assert!(p.check_syntax("http://192.168.0.1/").is_err());
    }

    #[tokio::test]
    async fn localhost_by_name_is_refused() {
        let p = TargetPolicy::default();
        assert!(p.validate("http://localhost:8080/").await.is_err());
    }
}
