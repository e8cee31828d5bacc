//! A static WebSocket echo server (RFC 6455) for `tests/serverless.rs`, run inside a pod. It
//! listens on port 8080 (or the first argument) and serves HTTP/1.1 with keep-alive:
//! - `GET /` answers `ws-echo\n`; `GET /sleep` answers `bye\n` with `X-Tpod-Scale-To-Zero: now`
//!   (the pod asks the provider to scale it to zero);
//! - a WebSocket upgrade on any path answers 101 with `Sec-WebSocket-Accept`, the first
//!   subprotocol offered, and what it was asked (`X-Echo-Target`, `X-Echo-Host`,
//!   `X-Echo-Forwarded-For`), then echoes each text or binary message (fragmented or not) as one
//!   frame, answers pings with pongs and a close with the same close; it refuses unmasked client
//!   frames and text that is not UTF-8 with a close (1002, 1007), as the RFC asks.
//!
//! Built by the test with `rustc` alone (no crate dependencies, static), so SHA-1 and base64
//! for the handshake are written out here.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest message echoed; a bigger one is refused with close code 1009.
const MAX_MESSAGE: u64 = 16 << 20;
/// The longest request head read.
const MAX_HEAD: usize = 16 << 10;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8080);
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    println!("wsecho listening on {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                println!("connection ended: {e}");
            }
        });
    }
}

/// One request head: method, target, version and headers (names lower-cased).
struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated header `name` holds `token` (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Serves requests on one connection until it closes or turns into a WebSocket.
fn serve(stream: TcpStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut reader)? else { return Ok(()) };
        if head.has_token("connection", "upgrade") && head.has_token("upgrade", "websocket") {
            return websocket(head, reader, writer);
        }
        if head.header("transfer-encoding").is_some() {
            respond(&mut writer, "501 Not Implemented", &[], "no request bodies\n", true)?;
            return Ok(());
        }
        let length: u64 = head.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        io::copy(&mut (&mut reader).take(length), &mut io::sink())?;
        let close = head.version == "HTTP/1.0" || head.has_token("connection", "close");
        match (head.method.as_str(), head.target.as_str()) {
            ("GET", "/") => respond(&mut writer, "200 OK", &[], "ws-echo\n", close)?,
            ("GET", "/sleep") => respond(&mut writer, "200 OK", &[("X-Tpod-Scale-To-Zero", "now")], "bye\n", close)?,
            _ => respond(&mut writer, "404 Not Found", &[], "not here\n", close)?,
        }
        if close {
            return Ok(());
        }
    }
}

/// Reads a request head; `None` if the connection closed before one began.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // a stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut request = lines[0].split(' ');
    let (Some(method), Some(target), Some(version)) = (request.next(), request.next(), request.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad request line {:?}", lines[0])));
    };
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some(Head { method: method.to_owned(), target: target.to_owned(), version: version.to_owned(), headers }))
}

fn respond(w: &mut TcpStream, status: &str, extra: &[(&str, &str)], body: &str, close: bool) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    w.write_all(out.as_bytes())
}

/// Completes the handshake and echoes until the close.
fn websocket(head: Head, mut reader: BufReader<TcpStream>, mut writer: TcpStream) -> io::Result<()> {
    let key = head.header("sec-websocket-key").unwrap_or_default();
    if head.method != "GET" || head.header("sec-websocket-version") != Some("13") || key.len() != 24 {
        respond(&mut writer, "400 Bad Request", &[("Sec-WebSocket-Version", "13")], "bad WebSocket handshake\n", true)?;
        return Ok(());
    }
    let accept = base64(&sha1(format!("{key}{GUID}").as_bytes()));
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \
         {accept}\r\nX-Echo-Target: {}\r\nX-Echo-Host: {}\r\nX-Echo-Forwarded-For: {}\r\n",
        head.target,
        head.header("host").unwrap_or("-"),
        head.header("x-forwarded-for").unwrap_or("-"),
    );
    if let Some(protocol) = head.header("sec-websocket-protocol").and_then(|p| p.split(',').next()) {
        out.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", protocol.trim()));
    }
    out.push_str("\r\n");
    writer.write_all(out.as_bytes())?;
    println!("websocket open on {}", head.target);

    // The message being assembled from fragments: its opcode and bytes.
    let mut message: Option<(u8, Vec<u8>)> = None;
    loop {
        let frame = match read_frame(&mut reader)? {
            Ok(frame) => frame,
            Err((code, reason)) => return close(&mut writer, code, reason),
        };
        match frame.opcode {
            0x1 | 0x2 if message.is_some() => return close(&mut writer, 1002, "a new message inside a fragmented one"),
            0x1 | 0x2 => message = Some((frame.opcode, frame.payload)),
            0x0 => match message.as_mut() {
                Some((_, bytes)) if (bytes.len() + frame.payload.len()) as u64 <= MAX_MESSAGE => {
                    bytes.extend_from_slice(&frame.payload)
                }
                Some(_) => return close(&mut writer, 1009, "message too big"),
                None => return close(&mut writer, 1002, "a continuation with no message"),
            },
            0x8 => {
                // The same code and reason back, then the connection ends (the server closes TCP).
                println!("websocket closed by the client");
                write_frame(&mut writer, 0x8, &frame.payload)?;
                return writer.shutdown(std::net::Shutdown::Both);
            }
            0x9 => write_frame(&mut writer, 0xA, &frame.payload)?,
            0xA => {}
            _ => return close(&mut writer, 1002, "unknown opcode"),
        }
        if frame.fin && matches!(frame.opcode, 0x0..=0x2) {
            let (opcode, bytes) = message.take().unwrap_or_default();
            if opcode == 0x1 && std::str::from_utf8(&bytes).is_err() {
                return close(&mut writer, 1007, "text that is not UTF-8");
            }
            write_frame(&mut writer, opcode, &bytes)?;
        }
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Reads one client frame, unmasked; `Err((code, reason))` inside for a protocol error.
fn read_frame(r: &mut impl Read) -> io::Result<Result<Frame, (u16, &'static str)>> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let (fin, opcode, masked) = (head[0] & 0x80 != 0, head[0] & 0x0f, head[1] & 0x80 != 0);
    if head[0] & 0x70 != 0 {
        return Ok(Err((1002, "reserved bits set")));
    }
    if !masked {
        return Ok(Err((1002, "client frames must be masked")));
    }
    let length = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if opcode >= 0x8 && (length > 125 || !fin) {
        return Ok(Err((1002, "bad control frame")));
    }
    if length > MAX_MESSAGE {
        return Ok(Err((1009, "frame too big")));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask)?;
    let mut payload = vec![0u8; length as usize];
    r.read_exact(&mut payload)?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Ok(Frame { fin, opcode, payload }))
}

/// Writes one unmasked, final server frame.
fn write_frame(w: &mut TcpStream, opcode: u8, payload: &[u8]) -> io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    w.write_all(&frame)
}

/// Closes with `code` and `reason` after a protocol error.
fn close(w: &mut TcpStream, code: u16, reason: &str) -> io::Result<()> {
    println!("websocket failed: {code} {reason}");
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    write_frame(w, 0x8, &payload)?;
    w.shutdown(std::net::Shutdown::Both)
}

/// SHA-1 (FIPS 180-4), enough for the handshake's accept value.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut padded = data.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in padded.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*word);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
