//! `quiver health --url http://HOST:PORT/PATH`: exits 0 when the URL answers HTTP 200 and
//! non-zero otherwise, for exec-form container health checks (the image has no shell and no
//! curl). Plain HTTP/1.1 over a blocking TCP socket with a short timeout; no TLS.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// URL to probe: http://HOST:PORT/PATH (a coordinator's or node's /health or /ready).
    #[arg(long, default_value = "http://127.0.0.1:8277/ready")]
    pub url: String,
    /// Give up after this many milliseconds (connect, and then the response).
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
}

/// The parts of an `http://` URL a probe needs.
#[derive(Debug, PartialEq)]
pub struct Target {
    /// `host:port`, also sent as the Host header.
    pub authority: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        bail!("{url:?}: expected http://HOST[:PORT]/PATH");
    }
    // An IPv6 literal ends with `]`; otherwise a port follows the last colon.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        let port = &authority[authority.rfind(':').unwrap_or(0) + 1..];
        port.parse::<u16>()
            .map_err(|_| anyhow!("{url:?}: bad port {port:?}"))?;
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        path: path.to_owned(),
    })
}

/// The status code of an HTTP/1.x response head (`HTTP/1.1 200 OK\r\n...`).
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// Sends `GET` and returns the response's status code.
pub fn probe(target: &Target, timeout: Duration) -> anyhow::Result<u16> {
    let addrs: Vec<_> = target
        .authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", target.authority))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(anyhow!("connecting to {addr}: {e}")),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        last_error.unwrap_or_else(|| anyhow!("{} resolved to no address", target.authority))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write, so the request leaves in one segment.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: quiver-health\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).context("reading the response")?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| anyhow!("not an HTTP response from {}", target.authority))
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let target = parse_url(&args.url)?;
    let code = probe(&target, Duration::from_millis(args.timeout_ms.max(1)))?;
    if code != 200 {
        bail!("{} answered HTTP {code}", args.url);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_authority_and_path() {
        let t = parse_url("http://127.0.0.1:8277/ready").expect("url");
        assert_eq!(t.authority, "127.0.0.1:8277");
        assert_eq!(t.path, "/ready");
        let t = parse_url("http://node-1").expect("url");
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("node-1:80", "/"));
        let t = parse_url("http://[::1]:9301/health?x=1").expect("url");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("[::1]:9301", "/health?x=1")
        );
        assert_eq!(
            parse_url("http://[::1]/").expect("url").authority,
            "[::1]:80"
        );
        for bad in [
            "https://a:1/",
            "a:1/ready",
            "http:///x",
            "http://a:x/",
            "http://u@a:1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn probes_a_real_socket_and_fails_on_non_200() {
        use std::net::TcpListener;
        let serve = |answer: &'static str| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            std::thread::spawn(move || {
                let (mut s, _) = listener.accept().expect("accept");
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "request ended early");
                    request.extend_from_slice(&buf[..n]);
                }
                assert!(request.starts_with(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1:"));
                s.write_all(answer.as_bytes()).expect("write");
            });
            format!("http://127.0.0.1:{port}/ready")
        };
        let args = |url| HealthArgs {
            url,
            timeout_ms: 2_000,
        };
        run(args(serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready",
        )))
        .expect("200");
        let error =
            run(args(serve("HTTP/1.1 503 Service Unavailable\r\n\r\n"))).expect_err("503 fails");
        assert!(error.to_string().contains("503"), "{error}");
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        assert!(run(args(format!("http://127.0.0.1:{port}/ready"))).is_err());
    }
}
