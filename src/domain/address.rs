//! Client addresses: the canonical form every rule compares, the networks of
//! `RELAY_TRUSTED_PROXIES`, and which address in `X-Forwarded-For` is the caller's.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

/// The address as rules compare it: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a
/// dual-stack listener reports for an IPv4 peer) is the IPv4 address it maps.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whom failed authentications are charged to: an IPv4 address, or the /64 of an IPv6 one,
/// since one subscriber is routinely given a whole /64 and could otherwise take a fresh
/// budget from each of its 2^64 addresses.
pub fn failure_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Parses a CIDR (`203.0.113.0/24`, `2001:db8::/32`) or a bare address (one host). Host bits
/// set past the prefix (`10.0.0.1/8`) are refused: such a network is almost always a typo.
/// The error does not repeat the text (it may be anything a client sent).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let network = match text.parse::<IpNet>() {
        Ok(network) => network,
        Err(_) => text
            .parse::<IpAddr>()
            .map(|ip| IpNet::from(canonical(ip)))
            .map_err(|_| "is not an IP address or CIDR network".to_string())?,
    };
    if network.trunc() != network {
        return Err(format!(
            "has host bits set past its prefix; did you mean {}?",
            network.trunc()
        ));
    }
    Ok(canonical_network(network))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it maps
/// (`10.0.0.0/8`), since addresses are compared in canonical form.
fn canonical_network(network: IpNet) -> IpNet {
    if let IpNet::V6(v6) = network {
        if let (Some(v4), Some(prefix)) =
            (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(v4) = ipnet::Ipv4Net::new(v4, prefix) {
                return IpNet::V4(v4);
            }
        }
    }
    network
}

/// Whether `ip` lies in one of `networks`, compared in canonical form.
pub fn in_networks(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    networks.iter().any(|n| n.contains(&ip))
}

/// The proxies whose `X-Forwarded-For` is believed. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks.into())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        in_networks(&self.0, ip)
    }

    /// The caller behind `peer`: `peer` itself unless it is a trusted proxy; then, walking
    /// `X-Forwarded-For` from the nearest hop, the first address that is not a trusted proxy.
    /// Only trusted proxies appended to the right end of the chain, so an entry that does not
    /// parse stops the walk at the last hop known.
    pub fn caller<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        let mut caller = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            caller = ip;
            if !self.contains(ip) {
                break;
            }
        }
        caller
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_failures_are_charged_to_the_64_and_mapped_ipv4_to_the_ipv4_address() {
        assert_eq!(
            failure_key(ip("2001:db8:1:2:aaaa::1")),
            failure_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            failure_key(ip("2001:db8:1:2::1")),
            failure_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(failure_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(failure_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn ipv4_mapped_networks_are_the_ipv4_networks_they_map() {
        let mapped = parse_network("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(in_networks(&[mapped], ip("10.9.8.7")));
        assert!(in_networks(&[mapped], ip("::ffff:10.9.8.7")));
        assert_eq!(parse_network("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn networks_parse_as_cidrs_or_hosts_and_refuse_host_bits() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            parse_network("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(
            parse_network("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_mapped_peer_matches_an_ipv4_trusted_proxy() {
        let proxies = TrustedProxies::new(vec![parse_network("127.0.0.0/8").unwrap()]);
        assert!(proxies.contains(ip("::ffff:127.0.0.1")));
        assert!(proxies.contains(ip("127.9.9.9")));
        assert!(!proxies.contains(ip("192.0.2.1")));
    }

    #[test]
    fn the_caller_is_the_nearest_untrusted_hop() {
        let proxies = TrustedProxies::new(vec![parse_network("10.0.0.0/8").unwrap()]);
        let xff = |v: &'static str| std::iter::once(v);
        // An untrusted peer's claims are ignored.
        assert_eq!(
            proxies.caller(ip("192.0.2.1"), xff("198.51.100.1")),
            ip("192.0.2.1")
        );
        // Through two trusted proxies, the spoofed left-most entry is not believed.
        assert_eq!(
            proxies.caller(ip("10.0.0.1"), xff("6.6.6.6, 198.51.100.1, 10.0.0.2")),
            ip("198.51.100.1")
        );
        assert_eq!(
            proxies.caller(ip("10.0.0.1"), xff("[2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        // Nothing but trusted hops: the farthest one known.
        assert_eq!(
            proxies.caller(ip("10.0.0.1"), xff("10.0.0.3")),
            ip("10.0.0.3")
        );
        assert_eq!(
            proxies.caller(ip("10.0.0.1"), xff("junk, 10.0.0.3")),
            ip("10.0.0.3")
        );
    }
}
