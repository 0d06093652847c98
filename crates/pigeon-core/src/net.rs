//! Where Pigeon may send what a client gave it (callback URLs, Web Push endpoints, vendors'
//! `base_url` / `auth_url` / `token_uri`): not to loopback, private, link-local, metadata or
//! otherwise non-public addresses unless the operator allows it, so a client cannot make the
//! server reach into its own network. One policy, applied three times: when the URL is given
//! (its literal host, then what its name resolves to), and again just before sending (names
//! can resolve differently later); vendor clients also refuse at connect time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// How long a check waits for a name to resolve when a URL is given.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether one kind of target may be on a private network, and the setting that says so
/// (named in refusals, so the operator knows what to change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_private: bool,
    pub setting: &'static str,
}

impl AddressPolicy {
    /// Callback URLs: `[callbacks] allow_private_networks`.
    pub const fn callbacks(allow_private: bool) -> AddressPolicy {
        AddressPolicy {
            allow_private,
            setting: "[callbacks] allow_private_networks",
        }
    }

    /// Vendors' `base_url`, `auth_url` and `token_uri`: `vendors_allow_private_networks`.
    pub const fn vendors(allow_private: bool) -> AddressPolicy {
        AddressPolicy {
            allow_private,
            setting: "vendors_allow_private_networks",
        }
    }

    /// Devices' Web Push endpoints: `webpush_allow_private_networks`.
    pub const fn webpush(allow_private: bool) -> AddressPolicy {
        AddressPolicy {
            allow_private,
            setting: "webpush_allow_private_networks",
        }
    }

    fn refusal(&self, field: &str, what: &str) -> String {
        format!("{field}: {what}; set {} to allow it", self.setting)
    }
}

/// Why `ip` is not a public address (a phrase like "a loopback address"), or `None` if it is.
pub fn private_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

/// Whether `ip` is anything but a public unicast address.
pub fn is_private(ip: IpAddr) -> bool {
    private_kind(ip).is_some()
}

fn v4_kind(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(match (a, b, c) {
        (127, _, _) => "a loopback address",
        (0, _, _) => "an unspecified (\"this network\") address",
        (10, _, _) | (192, 168, _) => "a private address",
        (172, b, _) if b & 0xf0 == 16 => "a private address",
        // Where clouds serve instance metadata and credentials (169.254.169.254).
        (169, 254, _) => "a link-local (metadata) address",
        (100, b, _) if b & 0xc0 == 64 => "a shared (CGNAT) address",
        (192, 0, 0) => "an IETF protocol-assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, b, _) if b & 0xfe == 18 => "a benchmarking address",
        (192, 88, 99) => "a 6to4 relay address",
        (a, _, _) if a & 0xf0 == 224 => "a multicast address",
        (255, 255, 255) if v4.is_broadcast() => "a broadcast address",
        (a, _, _) if a >= 240 => "a reserved address",
        _ => return None,
    })
}

fn v6_kind(v6: Ipv6Addr) -> Option<&'static str> {
    let s = v6.segments();
    let o = v6.octets();
    let v4_at = |i: usize| Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
    if v6.is_unspecified() {
        return Some("an unspecified address");
    }
    if v6.is_loopback() {
        return Some("a loopback address");
    }
    // IPv4 in IPv6 form: the IPv4 address is what gets reached, so it is what is judged.
    // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated, RFC 2765).
    if s[..5] == [0; 5] && s[5] == 0xffff || s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return v4_kind(v4_at(12));
    }
    // ::a.b.c.d (IPv4-compatible): deprecated by RFC 4291 and never needed, so refused even
    // with a public IPv4 inside; named by the IPv4 it hides when that is private.
    if s[..6] == [0; 6] {
        return Some(v4_kind(v4_at(12)).unwrap_or("a deprecated IPv4-compatible address"));
    }
    // NAT64's well-known prefix (RFC 6052): a gateway reaches the embedded IPv4.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_kind(v4_at(12));
    }
    // 64:ff9b:1::/48 (RFC 8215) is for local NAT64 with prefixes of any length, so where the
    // IPv4 sits is not known; it is not global, so all of it is refused.
    if s[..3] == [0x64, 0xff9b, 1] {
        return Some("a local-use NAT64 address");
    }
    // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 routes to the IPv4 AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return v4_kind(v4_at(2));
    }
    Some(match s {
        // Teredo (RFC 4380) tunnels to an obfuscated IPv4 through a relay: refused whole.
        [0x2001, 0, ..] => "a Teredo address",
        [0x2001, 2, 0, ..] => "a benchmarking address",
        [0x2001, 0xdb8, ..] => "a documentation address",
        [0x3fff, b, ..] if b & 0xf000 == 0 => "a documentation address",
        [0x100, 0, 0, 0, ..] => "a discard-only address",
        [a, ..] if a & 0xfe00 == 0xfc00 => "a unique-local (private) address",
        [a, ..] if a & 0xffc0 == 0xfe80 => "a link-local address",
        [a, ..] if a & 0xffc0 == 0xfec0 => "a site-local address",
        [a, ..] if a & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Why a URL's host, as written, is not public: an IP literal in any form the URL parser
/// reads (`2130706433`, `0x7f.1`, `017700000001`, `127.1`, `[::ffff:127.0.0.1]` — all
/// normalized by it), or `localhost` / `*.localhost` (RFC 6761: always loopback), with or
/// without trailing dots.
pub fn host_kind(host: &Host<&str>) -> Option<&'static str> {
    match host {
        Host::Ipv4(v4) => v4_kind(*v4),
        Host::Ipv6(v6) => v6_kind(*v6),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Some("a loopback name");
            }
            // A name that is an address once its trailing dots are gone ("127.0.0.1.." is
            // left a domain by the parser but resolves as the address).
            match d.parse::<IpAddr>() {
                Ok(ip) => private_kind(ip),
                Err(_) => None,
            }
        }
    }
}

/// Checks an http(s) URL's host as written, without resolving it: `Err` names `field` and
/// why. Clients (vendor channels) that resolve at connect time through a resolver that
/// refuses private addresses need only this, as IP literals are never resolved.
pub fn check_literal(url: &Url, field: &str, policy: &AddressPolicy) -> Result<(), String> {
    if !["http", "https"].contains(&url.scheme()) {
        return Err(format!(
            "{field}: {:?} must be an http or https URL",
            url.as_str()
        ));
    }
    let Some(host) = url.host() else {
        return Err(format!("{field}: {:?} has no host", url.as_str()));
    };
    if policy.allow_private {
        return Ok(());
    }
    match host_kind(&host) {
        Some(kind) => Err(policy.refusal(field, &format!("{host} is {kind}"))),
        None => Ok(()),
    }
}

/// Refuses a name if any address it resolved to is not public (a name with one private
/// address among public ones could be connected to that one).
pub fn check_resolved(
    name: &str,
    addrs: &[SocketAddr],
    field: &str,
    policy: &AddressPolicy,
) -> Result<(), String> {
    if policy.allow_private {
        return Ok(());
    }
    for a in addrs {
        if let Some(kind) = private_kind(a.ip()) {
            let what = format!("{name} resolves to {}, {kind}", a.ip());
            return Err(policy.refusal(field, &what));
        }
    }
    Ok(())
}

/// The one check of a URL a client gives (a callback URL, a vendor's `base_url`, ...) when it
/// is given: parsed, http(s), its host as written, then what the name resolves to. A name
/// that does not resolve now is let through: it cannot be reached now, and the check before
/// sending (or the vendor clients' resolver) refuses it if it later resolves privately.
pub async fn check_url(url: &str, field: &str, policy: &AddressPolicy) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{field}: {url:?} is not a URL: {e}"))?;
    check(&parsed, field, policy, false).await?;
    Ok(parsed)
}

/// The check just before sending to `url`: as [`check_url`], but a name that does not
/// resolve is refused too (nothing could be sent to it anyway).
pub async fn check_before_send(
    url: &Url,
    field: &str,
    policy: &AddressPolicy,
) -> Result<(), String> {
    check(url, field, policy, true).await
}

async fn check(url: &Url, field: &str, policy: &AddressPolicy, strict: bool) -> Result<(), String> {
    check_literal(url, field, policy)?;
    if policy.allow_private {
        return Ok(());
    }
    let Some(Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
    match lookup.await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            check_resolved(name, &addrs, field, policy)
        }
        Ok(Err(e)) if strict => Err(format!("{field}: cannot resolve {name}: {e}")),
        Err(_) if strict => Err(format!("{field}: resolving {name} took too long")),
        _ => Ok(()),
    }
}

/// Makes a client resolve names with [`PublicResolver`] unless private networks are allowed.
/// IP literals are not resolved by reqwest, so URLs' literal hosts must be checked before (see
/// [`check_literal`]).
#[cfg(feature = "reqwest")]
pub fn public_only(
    builder: reqwest::ClientBuilder,
    policy: AddressPolicy,
) -> reqwest::ClientBuilder {
    if policy.allow_private {
        builder
    } else {
        builder.dns_resolver(std::sync::Arc::new(PublicResolver(policy)))
    }
}

/// Resolves names as the system does, and refuses a name with any non-public address. A URL
/// was checked when it was given, but a name can resolve elsewhere later (DNS rebinding):
/// this is the check at the moment of connecting, on the very addresses connected to.
#[cfg(feature = "reqwest")]
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver(pub AddressPolicy);

#[cfg(feature = "reqwest")]
impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let policy = self.0;
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            check_resolved(&name, &addrs, "host", &policy)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSE: AddressPolicy = AddressPolicy::vendors(false);
    const ALLOW: AddressPolicy = AddressPolicy::vendors(true);

    #[test]
    fn every_non_public_range_is_recognized() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.5.5",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "100::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(is_private(ip), "{a} should be refused");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2001:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(!is_private(ip), "{a} is public");
        }
    }

    fn literal(url: &str) -> Result<(), String> {
        check_literal(&Url::parse(url).unwrap(), "base_url", &REFUSE)
    }

    #[test]
    fn every_way_of_writing_a_private_host_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1.:8080/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
            "http://0/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://localhost../",
            "http://api.localhost/",
            "http://a.b.localhost./",
        ] {
            let err = literal(url).expect_err(url);
            assert!(err.starts_with("base_url: "), "{url}: {err}");
            assert!(
                err.contains("vendors_allow_private_networks"),
                "{url}: {err}"
            );
        }
        assert_eq!(
            literal("http://2130706433/").unwrap_err(),
            "base_url: 127.0.0.1 is a loopback address; set vendors_allow_private_networks to allow it"
        );
        assert!(literal("http://[::127.0.0.1]/")
            .unwrap_err()
            .contains("loopback"));
        assert!(literal("http://169.254.169.254/")
            .unwrap_err()
            .contains("metadata"));
        for url in [
            "https://push-api.cloud.huawei.com",
            "https://8.8.8.8/",
            "https://[2606:4700::1111]/",
            "https://localhost.example.com/",
            "https://mylocalhost/",
        ] {
            assert_eq!(literal(url), Ok(()), "{url}");
        }
        let not_http = check_literal(
            &Url::parse("file:///etc/passwd").unwrap(),
            "auth_url",
            &REFUSE,
        );
        assert!(not_http.unwrap_err().starts_with("auth_url: "));
        let allowed = check_literal(
            &Url::parse("http://127.0.0.1:9/").unwrap(),
            "base_url",
            &ALLOW,
        );
        assert_eq!(allowed, Ok(()));
    }

    #[test]
    fn resolved_addresses_are_judged_too() {
        let addrs: Vec<SocketAddr> = vec![
            "8.8.8.8:443".parse().unwrap(),
            "10.0.0.5:443".parse().unwrap(),
        ];
        let err = check_resolved(
            "evil.example",
            &addrs,
            "url",
            &AddressPolicy::callbacks(false),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "url: evil.example resolves to 10.0.0.5, a private address; set [callbacks] allow_private_networks to allow it"
        );
        assert_eq!(
            check_resolved("evil.example", &addrs, "url", &ALLOW),
            Ok(())
        );
        let public: Vec<SocketAddr> = vec!["8.8.8.8:443".parse().unwrap()];
        assert_eq!(
            check_resolved("dns.google", &public, "url", &REFUSE),
            Ok(())
        );
    }

    #[tokio::test]
    async fn check_url_resolves_names_and_reads_every_literal_form() {
        // "localhost" is refused by name; "ip6-localhost"-style names by what they resolve to
        // is covered by check_resolved. An unresolvable name is let through when given and
        // refused before sending.
        let err = check_url(
            "http://localhost:8080/cb",
            "url",
            &AddressPolicy::callbacks(false),
        )
        .await
        .unwrap_err();
        assert!(err.contains("localhost is a loopback name"), "{err}");
        let err = check_url("not a url", "callback.url", &REFUSE)
            .await
            .unwrap_err();
        assert!(err.starts_with("callback.url: "), "{err}");
        let unknown = Url::parse("https://no-such-host.invalid/").unwrap();
        assert!(check_url(unknown.as_str(), "url", &REFUSE).await.is_ok());
        assert!(check_before_send(&unknown, "url", &REFUSE).await.is_err());
        assert!(check_url("http://127.0.0.1:1/", "url", &ALLOW)
            .await
            .is_ok());
    }
}
