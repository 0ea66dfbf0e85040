//! Webhook targets are checked against a deny-list of loopback, private, link-local (cloud metadata at
//! 169.254.169.254), shared, multicast and unspecified addresses, unless `alerts.webhook_allow_private`
//! allows them: a webhook URL must not turn the control plane into a proxy into its own network (SSRF).
//! Every address a host name resolves to is checked, at creation and at each delivery; the delivery client
//! resolves through [`DenyPrivate`], so a name re-pointed after the check (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whether `ip` is in a range a webhook may not reach.
pub fn denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return denied_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 64:ff9b::/96 embeds IPv4
        }
    }
}

fn denied_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a usable http(s) URL.
    #[error("not an http(s) URL with a host")]
    BadUrl,
    /// The host did not resolve.
    #[error("host {0} does not resolve")]
    Unresolved(String),
    /// The host is or resolves to a denied address.
    #[error(
        "{host} resolves to {ip}, a loopback, private, link-local or otherwise internal address \
         (allow with alerts.webhook_allow_private)"
    )]
    Denied {
        /// The URL's host.
        host: String,
        /// The offending address.
        ip: IpAddr,
    },
}

/// Checks a webhook URL: every address its host resolves to must be allowed.
pub async fn check(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let u = reqwest::Url::parse(url).map_err(|_| TargetError::BadUrl)?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl);
    }
    let host = u.host_str().ok_or(TargetError::BadUrl)?.trim_start_matches('[').trim_end_matches(']').to_string();
    if allow_private {
        return Ok(());
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| TargetError::Unresolved(host.clone()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved(host));
    }
    match addrs.iter().find(|a| denied(a.ip())) {
        Some(a) => Err(TargetError::Denied { host, ip: a.ip() }),
        None => Ok(()),
    }
}

/// A resolver for the delivery client that refuses names resolving to any denied address.
#[derive(Debug, Clone, Copy)]
pub struct DenyPrivate;

impl reqwest::dns::Resolve for DenyPrivate {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(a) = addrs.iter().find(|a| denied(a.ip())) {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(TargetError::Denied { host: host.clone(), ip: a.ip() });
                return Err(e);
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_denied_and_public_ones_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(denied(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!denied(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn literal_and_named_internal_targets_are_refused() {
        assert!(matches!(check("http://169.254.169.254/latest", false).await, Err(TargetError::Denied { .. })));
        assert!(matches!(check("http://[::1]:8080/x", false).await, Err(TargetError::Denied { .. })));
        assert!(matches!(check("http://localhost:9/x", false).await, Err(TargetError::Denied { .. })));
        assert_eq!(check("http://127.0.0.1:9/x", true).await, Ok(()));
        assert_eq!(check("ftp://example.com/", false).await, Err(TargetError::BadUrl));
    }
}
