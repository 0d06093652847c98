//! The WebSocket wire format (RFC 6455 §5) as the device protocol uses it: the opening
//! handshake's accept key, parsing masked client frames, and encoding unmasked server frames.
//! Written by hand because the connection keeps no buffers while idle (see connection.rs),
//! which the general-purpose WebSocket crates do not allow.

use base64::Engine as _;
use sha1::{Digest, Sha1};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(client_key: &str) -> String {
    let mut h = Sha1::new();
    h.update(client_key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why a client's bytes cannot be a frame; each maps to a close code.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set, unmasked, bad control frame, unknown opcode: 1002.
    Protocol(&'static str),
    /// Over the size limit: 1009.
    TooLarge,
}

/// One complete client frame, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Parses one frame from the front of `buf`. `Ok(None)`: more bytes are needed. On success
/// returns the frame and how many bytes it took.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Err(FrameError::Protocol(
            "control frames must be short and unfragmented",
        ));
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge);
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload: Vec<u8> = buf[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i & 3])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + len,
    )))
}

/// The longest header of an unmasked server frame.
pub const MAX_HEADER: usize = 10;

/// The header of an unmasked server frame of `len` bytes, written into `buf`.
pub fn header(opcode: u8, len: usize, buf: &mut [u8; MAX_HEADER]) -> &[u8] {
    buf[0] = 0x80 | opcode;
    match len {
        n if n < 126 => {
            buf[1] = n as u8;
            &buf[..2]
        }
        n if n <= u16::MAX as usize => {
            buf[1] = 126;
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            &buf[..4]
        }
        n => {
            buf[1] = 127;
            buf[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            &buf[..10]
        }
    }
}

/// Appends one unmasked server frame to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut head = [0u8; MAX_HEADER];
    out.extend_from_slice(header(opcode, payload.len(), &mut head));
    out.extend_from_slice(payload);
}

/// A close frame's payload: the code and a reason (cut to fit a control frame).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn rfc_6455_accept_key_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_masked_frames_and_waits_for_more_bytes() {
        let bytes = masked(true, OP_TEXT, b"hello");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], 100), Ok(None));
        }
        let (f, used) = parse(&bytes, 100).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_slice(), used),
            (true, OP_TEXT, &b"hello"[..], bytes.len())
        );
        let long = vec![b'x'; 300];
        let (f, _) = parse(&masked(false, OP_TEXT, &long), 1000)
            .unwrap()
            .unwrap();
        assert_eq!((f.fin, f.payload.len()), (false, 300));
    }

    #[test]
    fn refuses_what_the_rfc_refuses() {
        let mut unmasked = masked(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7F;
        assert!(matches!(
            parse(&unmasked, 100),
            Err(FrameError::Protocol(_))
        ));
        let mut rsv = masked(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(parse(&rsv, 100), Err(FrameError::Protocol(_))));
        assert!(matches!(
            parse(&masked(false, OP_PING, b""), 100),
            Err(FrameError::Protocol(_))
        ));
        assert_eq!(
            parse(&masked(true, OP_TEXT, &[b'x'; 200]), 100),
            Err(FrameError::TooLarge)
        );
        // The size is refused from the header alone, before the payload arrives.
        assert_eq!(
            parse(&masked(true, OP_TEXT, &[b'x'; 200])[..4], 100),
            Err(FrameError::TooLarge)
        );
    }

    #[test]
    fn encodes_server_frames() {
        let mut out = Vec::new();
        encode(OP_TEXT, b"hi", &mut out);
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode(OP_TEXT, &[0u8; 300], &mut out);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
        out.clear();
        encode(OP_BINARY, &vec![0u8; 70_000], &mut out);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(out.len(), 70_010);
        assert_eq!(close_payload(4002, "replaced"), b"\x0f\xa2replaced");
    }
}
