//! Just enough of Redis's RESP2 protocol to load sets in pipelined batches and time commands.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

pub struct Redis {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// A reply: an integer, a status, a bulk string or an array length.
#[derive(Debug)]
pub enum Reply {
    Int(i64),
    Status(String),
    Bulk(Vec<u8>),
}

pub fn command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    pub fn connect(port: u16) -> anyhow::Result<Redis> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_nodelay(true)?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Redis { w, r })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.w.write_all(bytes).context("writing to redis")
    }

    pub fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let body = line.get(1..).unwrap_or("").trim_end().to_string();
        match line.as_bytes().first() {
            Some(b':') => Ok(Reply::Int(body.parse()?)),
            Some(b'+') => Ok(Reply::Status(body)),
            Some(b'-') => bail!("redis error: {body}"),
            Some(b'$') => {
                let n: usize = body.parse()?;
                let mut buf = vec![0; n + 2];
                self.r.read_exact(&mut buf)?;
                buf.truncate(n);
                Ok(Reply::Bulk(buf))
            }
            _ => bail!("unexpected redis reply {line:?}"),
        }
    }

    pub fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let mut out = Vec::new();
        command(args, &mut out);
        self.send_raw(&out)?;
        self.read_reply()
    }

    /// `used_memory` from INFO memory, in bytes.
    pub fn used_memory(&mut self) -> anyhow::Result<u64> {
        let Reply::Bulk(info) = self.call(&[b"INFO", b"memory"])? else {
            bail!("INFO answered oddly")
        };
        let text = String::from_utf8_lossy(&info);
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .context("no used_memory in INFO")?
            .trim()
            .parse()
            .context("used_memory")
    }
}
