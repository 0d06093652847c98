//! HTTPS on the listener: the certificate and key read from PEM files (checked to belong
//! together at start, with an error naming the file and what is wrong), served to every new
//! connection from a slot that `SIGHUP` fills again, so a renewed certificate is taken up
//! without dropping the connections open on the old one.

use anyhow::Context;
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{Error as TlsError, InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate new connections get: one slot, replaced whole on reload. Handshakes read
/// it under a lock held for an `Arc` clone, never across an await.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The listener's TLS: the acceptor for new connections and the slot reloads fill.
pub struct Tls {
    pub files: TlsFiles,
    pub acceptor: TlsAcceptor,
    slot: Arc<CertSlot>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl Tls {
    /// Reads and checks the files; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let provider = provider();
        let key = load_pair(&files, &provider)?;
        log_in_use(&files, &key, "TLS certificate in use");
        let slot = Arc::new(CertSlot {
            current: RwLock::new(key),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        // HTTP/2 for API clients that offer it; WebSocket clients offer only HTTP/1.1, and a
        // client that offers nothing gets HTTP/1.1 (hyper tells the two apart by the preface).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            files,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            slot,
        })
    }

    /// Reads the files again (`SIGHUP`): a good pair replaces the one new connections get,
    /// a bad one is logged and the old one kept. Connections open stay on what they began
    /// with. Reads files: call it off the async workers.
    pub fn reload(&self) {
        match load_pair(&self.files, &provider()) {
            Ok(key) => {
                log_in_use(&self.files, &key, "TLS certificate reloaded");
                *self.slot.current.write() = key;
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "TLS reload failed: still serving the certificate loaded before"
            ),
        }
    }
}

/// The chain and key of `files`, checked to belong together.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let cert_pem = read(&files.cert, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, "certificate", e))?;
    if chain.is_empty() {
        not_pem(&files.cert, &cert_pem, "certificate")?;
        anyhow::bail!(
            "the TLS certificate file {cert_path} holds no certificate \
             (no -----BEGIN CERTIFICATE----- section)"
        );
    }
    let key_pem = read(&files.key, "key")?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            not_pem(&files.key, &key_pem, "key")?;
            anyhow::bail!(
                "the TLS key file {key_path} holds no private key (no -----BEGIN PRIVATE KEY----- \
                 or RSA / EC PRIVATE KEY section)"
            );
        }
        Err(e) => return Err(pem_error(&files.key, "key", e)),
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("the TLS key in {key_path} cannot be used: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will show.
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => anyhow::bail!(
            "the TLS key {key_path} does not match the certificate {cert_path} \
             (the key's public half is not the one in the first certificate of the file)"
        ),
        Err(e) => anyhow::bail!("the TLS certificate in {cert_path} cannot be read: {e}"),
    }
    Ok(Arc::new(certified))
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the TLS {what} file {}", path.display()))
}

/// An error when `bytes` has no PEM section at all.
fn not_pem(path: &Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!(
            "the TLS {what} file {} is not PEM (no -----BEGIN ...----- line; a DER file must be \
             converted, e.g. with `openssl x509 -inform der` or `openssl pkey -inform der`)",
            path.display()
        );
    }
    Ok(())
}

fn pem_error(path: &Path, what: &str, e: pem::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "the TLS {what} file {} is not valid PEM: {e}",
        path.display()
    )
}

fn log_in_use(files: &TlsFiles, key: &CertifiedKey, message: &str) {
    let info = key.cert.first().and_then(|c| cert_info(c.as_ref()));
    let (subject, serial, not_after) = info.unwrap_or_default();
    tracing::info!(
        cert = %files.cert.display(),
        subject = %subject,
        serial = %serial,
        not_after = %not_after,
        chain = key.cert.len(),
        "{message}"
    );
}

/// The subject's common name, the serial number (hex) and the end of validity of a DER
/// certificate, for the log; `None` when it does not parse as X.509.
fn cert_info(der: &[u8]) -> Option<(String, String, String)> {
    let (_, cert, _) = tlv(der)?;
    let (tag, mut tbs, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    // [0] version, when present.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    let (_, serial, rest) = tlv(tbs)?;
    let serial: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let (_, _signature, rest) = tlv(rest)?;
    let (_, _issuer, rest) = tlv(rest)?;
    let (_, validity, rest) = tlv(rest)?;
    let (_, subject, _) = tlv(rest)?;
    let (_, _not_before, validity) = tlv(validity)?;
    let (tag, not_after, _) = tlv(validity)?;
    let t = std::str::from_utf8(not_after).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    let t = match tag {
        0x17 if t.len() >= 12 => {
            let century = if t[..2].parse::<u32>().ok()? >= 50 {
                "19"
            } else {
                "20"
            };
            format!("{century}{t}")
        }
        0x18 => t.to_string(),
        _ => return None,
    };
    let not_after = format!(
        "{}-{}-{}T{}:{}:{}Z",
        t.get(0..4)?,
        t.get(4..6)?,
        t.get(6..8)?,
        t.get(8..10)?,
        t.get(10..12)?,
        t.get(12..14)?
    );
    // The subject's CN (2.5.4.3): SEQUENCE OF SET OF SEQUENCE { OID, value }.
    let mut cn = String::new();
    let mut rdns = subject;
    while let Some((_, set, rest)) = tlv(rdns) {
        rdns = rest;
        let Some((_, attr, _)) = tlv(set) else { break };
        let Some((_, oid, value)) = tlv(attr) else {
            break;
        };
        if oid == [0x55, 0x04, 0x03] {
            if let Some((_, v, _)) = tlv(value) {
                cn = String::from_utf8_lossy(v).into_owned();
            }
        }
    }
    Some((format!("CN={cn}"), serial, not_after))
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            2 + n,
        )
    };
    let end = head.checked_add(len)?;
    Some((tag, input.get(head..end)?, input.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_stops_at_truncated_input() {
        assert!(tlv(&[0x30]).is_none());
        assert!(tlv(&[0x30, 0x05, 1, 2]).is_none());
        assert!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
        assert_eq!(tlv(&[0x02, 0x01, 7, 9]), Some((2, &[7u8][..], &[9u8][..])));
        assert!(cert_info(b"not a certificate").is_none());
    }

    #[test]
    fn a_pair_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: write("a.pem", &a.cert.pem()),
            key: write("a.key", &a.key_pair.serialize_pem()),
        };
        let key = load_pair(&files, &provider()).unwrap();
        let (subject, serial, not_after) = cert_info(key.cert[0].as_ref()).unwrap();
        assert_eq!(subject, "CN=rcgen self signed cert");
        assert!(!serial.is_empty());
        // rcgen's default validity ends in 4096.
        assert!(not_after.starts_with("4096-01-01T"), "{not_after}");
        let mismatched = TlsFiles {
            cert: files.cert.clone(),
            key: write("b.key", &b.key_pair.serialize_pem()),
        };
        let e = load_pair(&mismatched, &provider()).unwrap_err().to_string();
        assert!(e.contains("does not match the certificate"), "{e}");
    }
}
