//! Where Pigeon may send what a client gave it (callback URLs, Web Push endpoints): not to
//! loopback, private or link-local addresses unless the operator allows it, so a client
//! cannot make the server reach into its own network.

use std::net::IpAddr;

/// Loopback, private, link-local, unspecified or unique-local addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves `host` and refuses it if any of its addresses is private; why, if refused.
pub async fn refuse_private(host: &str, port: u16) -> Result<(), String> {
    let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for a in addrs {
        if is_private(a.ip()) {
            return Err(format!(
                "{host} resolves to the private address {}; set allow_private_networks to allow it",
                a.ip()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognized() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
