//! A scripted loopback HTTP/1.1 server: answers each request with the next canned
//! response and records what it received (request line, headers, body).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
pub struct Request {
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub fault: Fault,
}

/// How a response goes wrong on the wire, for the fault-injection tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// A well-formed response.
    #[default]
    None,
    /// Wait this long before sending anything.
    DelayHeaders(std::time::Duration),
    /// Announce the whole body, send half of it, close.
    ShortBody,
    /// Send half of the body, then reset the connection (TCP RST).
    Reset,
    /// Send the body one byte at a time with this pause between bytes.
    Trickle(std::time::Duration),
    /// Close the connection without answering at all.
    Close,
    /// Announce a body of 1 GiB, send the response's own body as its start, then pad
    /// it with `x` at about 64 MB/s until the client hangs up.
    Endless,
}

impl Response {
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/x-amz-json-1.1".to_owned())],
            body: body.into(),
            fault: Fault::None,
        }
    }

    pub fn fault(mut self, fault: Fault) -> Response {
        self.fault = fault;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

pub struct Server {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

impl Server {
    /// Serves `responses` in order; the last one repeats.
    pub fn start(responses: Vec<Response>) -> Server {
        let served = std::sync::atomic::AtomicUsize::new(0);
        Server::with_handler(move |_| {
            let index = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            responses[index.min(responses.len() - 1)].clone()
        })
    }

    /// Answers every request with `handler`, which sees the method, path, headers and
    /// body, so a fake can check what a client sent and answer per route.
    pub fn with_handler(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let handler: Arc<Handler> = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                // A response is written as head, then body: with Nagle's algorithm the body
                // would wait for the client's delayed ACK of the head (40 ms on Linux).
                let _ = stream.set_nodelay(true);
                let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                thread::spawn(move || {
                    let Ok(spare) = stream.try_clone() else {
                        return;
                    };
                    if serve(stream, &seen, &*handler) == Fault::Reset {
                        // Closing the last descriptor with a zero linger sends an RST.
                        let _ = rustix::net::sockopt::set_socket_linger(
                            &spare,
                            Some(std::time::Duration::ZERO),
                        );
                    }
                });
            }
        });
        Server { url, requests }
    }

    /// Like [`Server::with_handler`], each answer sent only `delay` after its request
    /// arrived, for tests of what a client does while this server is answering. The flag
    /// turns true as the first answer is sent, so that a test's other servers can tell what
    /// reached them before.
    pub fn answering_after(
        delay: std::time::Duration,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> (Server, Arc<std::sync::atomic::AtomicBool>) {
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&answered);
        let server = Server::with_handler(move |request| {
            thread::sleep(delay);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            handler(request)
        });
        (server, answered)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Answers every request on one connection (keep-alive) until the client closes it or a
/// fault ends it; returns the fault that ended it, if any.
pub fn serve<S: std::io::Read + Write>(
    stream: S,
    seen: &Mutex<Vec<Request>>,
    handler: &Handler,
) -> Fault {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let close = request
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        let response = handler(&request);
        seen.lock().unwrap().push(request);
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let body = response.body.as_bytes();
        let stream = reader.get_mut();
        let sent = match response.fault {
            Fault::None => stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(body)),
            Fault::DelayHeaders(wait) => {
                thread::sleep(wait);
                stream
                    .write_all(head.as_bytes())
                    .and_then(|_| stream.write_all(body))
            }
            Fault::Trickle(pause) => stream.write_all(head.as_bytes()).and_then(|_| {
                body.iter().try_for_each(|byte| {
                    stream.write_all(&[*byte])?;
                    stream.flush()?;
                    thread::sleep(pause);
                    Ok(())
                })
            }),
            Fault::ShortBody | Fault::Reset => {
                let half = &body[..body.len() / 2];
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|_| stream.write_all(half));
                let _ = stream.flush();
                return response.fault;
            }
            Fault::Close => return Fault::Close,
            Fault::Endless => {
                let head = head.replacen(
                    &format!("content-length: {}\r\n", body.len()),
                    "content-length: 1073741824\r\n",
                    1,
                );
                let padding = [b'x'; 64 * 1024];
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|_| stream.write_all(body))
                    .and_then(|_| -> std::io::Result<()> {
                        loop {
                            stream.write_all(&padding)?;
                            thread::sleep(std::time::Duration::from_millis(1));
                        }
                    });
                return Fault::Endless;
            }
        };
        if sent.and_then(|_| stream.flush()).is_err() || close {
            break;
        }
    }
    Fault::None
}

impl Request {
    /// The method, from the request line.
    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or_default()
    }

    /// The path with its query, from the request line.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        line: line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// The fields of an `application/x-www-form-urlencoded` body, decoded.
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
