//! The server against real clients on loopback: reqwest over TLS, raw sockets for the
//! misbehaving ones.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn quick() -> Limits {
    Limits {
        max_body: 1024,
        header_timeout: Duration::from_millis(300),
        handler_timeout: Duration::from_millis(300),
        max_connections: 8,
        drain: Duration::from_secs(2),
    }
}

/// Echoes the body's length; `/slow` takes a second; `/peer` names the peer's address.
async fn handler(request: Request<Bytes>) -> Reply {
    match request.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            reply(StatusCode::OK, "text/plain", "slow")
        }
        "/peer" => {
            let peer = request.extensions().get::<SocketAddr>().copied();
            reply(StatusCode::OK, "text/plain", format!("{peer:?}"))
        }
        _ => reply(
            StatusCode::OK,
            "text/plain",
            format!("{} bytes", request.body().len()),
        ),
    }
}

/// Serves on a thread until the returned sender is dropped or fires; returns the port.
fn start(
    tls: Option<TlsFiles>,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), tls.as_ref())
                .await
                .unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let stop = async move {
                let _ = stop_rx.await;
            };
            listener.serve(&quick(), handler, stop).await.unwrap();
        })
    });
    (port_rx.recv().unwrap(), stop_tx, thread)
}

/// Sends raw bytes and returns everything the server answers until it closes.
fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bodies_are_bounded_and_slow_handlers_answer_503() {
    let (port, stop, thread) = start(None);
    let ok = raw(
        port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("3 bytes"),
        "{ok}"
    );
    let big = format!(
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(5000)
    );
    let refused = raw(port, big.as_bytes());
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    let slow = raw(
        port,
        b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(slow.starts_with("HTTP/1.1 503"), "{slow}");
    let peer = raw(
        port,
        b"GET /peer HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(peer.contains("127.0.0.1:"), "{peer}");
    drop(stop);
    thread.join().unwrap();
}

#[test]
fn a_client_that_never_finishes_its_headers_is_dropped() {
    let (port, stop, thread) = start(None);
    let started = Instant::now();
    let answer = raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held for {:?}",
        started.elapsed()
    );
    assert!(!answer.contains("200"), "{answer}");
    drop(stop);
    thread.join().unwrap();
}

#[test]
fn shutdown_lets_a_request_in_flight_finish() {
    let (port, stop, thread) = start(None);
    let client = std::thread::spawn(move || {
        raw(
            port,
            b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.send(()).unwrap();
    // The handler times out at 300 ms with 503: an answer, not a cut connection.
    let answer = client.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    thread.join().unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting"
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_not() {
    let dir = std::env::temp_dir().join(format!("serve-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let write = |(cert, key): &(String, String)| {
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    };
    let first = testkit::tls::self_signed_pem();
    write(&first);
    let (port, stop, thread) = start(Some(files.clone()));

    let get = |trusted: &str| {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(trusted.as_bytes()).unwrap()])
            .no_proxy()
            .build()
            .unwrap();
        runtime().block_on(async {
            client
                .post(format!("https://127.0.0.1:{port}/x"))
                .body("abcd")
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    assert_eq!(get(&first.0).unwrap(), 200);

    // cert-manager renews: new files, new key.
    let second = testkit::tls::self_signed_pem();
    write(&second);
    assert_eq!(get(&second.0).unwrap(), 200);
    assert!(
        get(&first.0).is_err(),
        "the old certificate is still served"
    );

    // Half-way through a rotation the pair does not match: the last good pair serves.
    let third = testkit::tls::self_signed_pem();
    std::fs::write(&files.cert, &third.0).unwrap();
    assert_eq!(get(&second.0).unwrap(), 200);

    drop(stop);
    thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_pair_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("serve-bad-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let (cert, _) = testkit::tls::self_signed_pem();
    let (_, other_key) = testkit::tls::self_signed_pem();
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, other_key).unwrap();
    let err = runtime()
        .block_on(Listener::bind("127.0.0.1:0".parse().unwrap(), Some(&files)))
        .err()
        .unwrap();
    assert_eq!(Failure::of(&err), Failure::Usage);
    assert!(
        format!("{err:#}").contains("do not belong together"),
        "{err:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
