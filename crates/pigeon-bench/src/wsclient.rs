//! A bare WebSocket client for load generation: handshake, masked text frames out, unmasked
//! frames in. As lean as the MQTT agent, so neither system is measured through a heavier
//! client than the other.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fixed mask: a load generator needs no unpredictability (RFC 6455 §10.3 is about browsers).
const MASK: [u8; 4] = [0x3a, 0x91, 0x5c, 0x07];

pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The code of the close frame the server sent, once it sent one.
    pub close_code: Option<u16>,
}

impl WsClient {
    pub async fn handshake(
        mut stream: TcpStream,
        host: &str,
        path: &str,
    ) -> anyhow::Result<WsClient> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(512);
        loop {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if !buf.starts_with(b"HTTP/1.1 101") {
                    bail!("handshake refused: {}", String::from_utf8_lossy(&buf));
                }
                buf.drain(..end + 4);
                return Ok(WsClient {
                    stream,
                    buf,
                    close_code: None,
                });
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let p = text.as_bytes();
        let mut out = Vec::with_capacity(p.len() + 8);
        out.push(0x81);
        if p.len() < 126 {
            out.push(0x80 | p.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&MASK);
        out.extend(p.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
        self.stream.write_all(&out).await.context("sending")
    }

    /// The next text frame's payload; control frames are skipped, a close is an error.
    pub async fn next_text(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0F;
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    match opcode {
                        0x1 => return Ok(payload),
                        0x8 => {
                            self.close_code =
                                payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                            bail!("closed by the server")
                        }
                        _ => continue,
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The value of `"key":` in a flat JSON text: a string's contents or a number's digits.
pub fn json_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = text.find(&pat)? + pat.len();
    let rest = text[start..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    }
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_fields() {
        let t = r#"{"op":"push","msg_id":"123","sent_ms":5,"notification":{"extras":{"t":42}}}"#;
        assert_eq!(super::json_field(t, "op"), Some("push"));
        assert_eq!(super::json_field(t, "msg_id"), Some("123"));
        assert_eq!(super::json_field(t, "t"), Some("42"));
    }
}
