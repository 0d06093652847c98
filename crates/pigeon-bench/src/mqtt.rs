//! Just enough MQTT 3.1.1 (OASIS spec §3) to load Mosquitto the way push systems use it:
//! CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at QoS 1 and PUBACK.

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend(body);
    out
}

pub fn connect(client_id: &str, keepalive_s: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keepalive_s.to_be_bytes());
    string(client_id, &mut body);
    packet(0x10, body)
}

pub fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    string(topic, &mut body);
    body.push(1); // QoS 1
    packet(0x82, body)
}

pub fn publish_qos1(packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32, body)
}

pub fn puback(packet_id: u16) -> [u8; 4] {
    let id = packet_id.to_be_bytes();
    [0x40, 0x02, id[0], id[1]]
}

/// One MQTT control packet as read: its first byte and its body.
pub struct Packet {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The packet id of a QoS 1 PUBLISH.
    pub fn publish_id(&self) -> anyhow::Result<u16> {
        let topic_len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let at = 2 + topic_len;
        if self.body.len() < at + 2 {
            bail!("short PUBLISH");
        }
        Ok(u16::from_be_bytes([self.body[at], self.body[at + 1]]))
    }
}

pub async fn read_packet(s: &mut TcpStream) -> anyhow::Result<Packet> {
    let first = s.read_u8().await.context("reading a packet")?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = s.read_u8().await?;
        len |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            bail!("bad remaining length");
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok(Packet { first, body })
}

/// Connects and subscribes one client; returns when SUBACK arrived.
pub async fn subscriber(
    mut s: TcpStream,
    client_id: &str,
    topic: &str,
) -> anyhow::Result<TcpStream> {
    s.write_all(&connect(client_id, 600)).await?;
    let ack = read_packet(&mut s).await?;
    if ack.kind() != 2 || ack.body.get(1) != Some(&0) {
        bail!("CONNACK refused: {:?}", ack.body);
    }
    s.write_all(&subscribe(1, topic)).await?;
    let sub = read_packet(&mut s).await?;
    if sub.kind() != 9 || sub.body.get(2) == Some(&0x80) {
        bail!("SUBACK refused");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_is_varint() {
        let mut v = Vec::new();
        remaining_length(321, &mut v);
        assert_eq!(v, [0xC1, 0x02]);
        let p = publish_qos1(7, "t", b"x");
        assert_eq!(p, [0x32, 6, 0, 1, b't', 0, 7, b'x']);
    }
}
