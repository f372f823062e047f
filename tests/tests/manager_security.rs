//! Who can reach the manager (issue #15.9, 15.10):
//! - `--http unix:PATH`: the socket is 0600; its owner is served, another local user
//!   (`nobody`, through setpriv) is refused by the kernel;
//! - a non-loopback address without TLS stops the start (exit 2) unless
//!   `--insecure-listen`;
//! - server TLS on HTTP (curl with the CA) and gRPC (tonic), and mTLS: without a client
//!   certificate the handshake fails, with one the API answers;
//! - a request whose body never arrives gets 408 after 10 s without holding up others,
//!   and connections beyond `--max-connections` are closed at once, on HTTP and gRPC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use cocos_tests::{http, manager_args, manager_bin, synthetic_release, ManagerProc};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn unix_socket_is_for_its_owner_only() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let sock = d.path().join("m.sock");
    let mut args = manager_args(&release, &state, &fw, FAKE, &[]);
    args.extend([
        "--http".into(),
        format!("unix:{}", sock.display()),
        "--grpc-listen".into(),
        format!("unix:{}", d.path().join("g.sock").display()),
    ]);
    let m = ManagerProc::start_listening(&args, &[], &d.path().join("m.log"));
    assert_eq!(m.http, format!("unix:{}", sock.display()));
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (rc, body) = curl(&["--unix-socket", sock.to_str().unwrap(), "http://m/health"]);
    assert_eq!(rc, 0, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    // Another local user cannot connect (the kernel checks the socket's mode).
    assert_nobody_is_refused(&sock);
}

/// `nobody` (through setpriv) cannot connect to the socket: curl's exit code 7.
fn assert_nobody_is_refused(sock: &std::path::Path) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-m",
            "5",
            "--unix-socket",
        ])
        .arg(sock)
        .args(["-X", "POST", "http://m/run"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "nobody reached the API at {}: {}",
        sock.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issue #15.9: with no listener flags the APIs are Unix sockets in the state
/// directory (0700), 0600: another local user cannot reach them by default.
#[test]
fn the_default_listeners_are_owner_only_unix_sockets() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let state = d.path().join("state");
    let args = manager_args(&release, &state, &fw, FAKE, &[]);
    let m = ManagerProc::start_listening(&args, &[], &d.path().join("m.log"));
    let http_sock = state.join("http.sock");
    assert_eq!(m.http, format!("unix:{}", http_sock.display()));
    assert_eq!(
        m.grpc,
        format!("unix:{}", state.join("grpc.sock").display())
    );
    for sock in [&http_sock, &state.join("grpc.sock")] {
        assert_eq!(
            std::fs::metadata(sock).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let (rc, body) = curl(&[
        "--unix-socket",
        http_sock.to_str().unwrap(),
        "http://m/health",
    ]);
    assert_eq!(rc, 0, "{body}");
    assert_nobody_is_refused(&http_sock);
}

#[test]
fn non_loopback_needs_tls_or_an_explicit_override() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let args = manager_args(&release, &d.path().join("state"), &fw, FAKE, &[]);
    let out = Command::new(manager_bin())
        .args(["--http", "0.0.0.0:0", "--grpc-listen", "off"])
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("without TLS") && err.contains("--insecure-listen"),
        "{err}"
    );
    let log = d.path().join("m.log");
    let mut a = args.clone();
    a.extend([
        "--http".into(),
        "0.0.0.0:0".into(),
        "--grpc-listen".into(),
        "off".into(),
        "--insecure-listen".into(),
    ]);
    let m = ManagerProc::start_listening(&a, &[], &log);
    assert!(m.http.starts_with("0.0.0.0:"), "{}", m.http);
    assert!(std::fs::read_to_string(&log).unwrap().contains("INSECURE"));
}

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "cocos test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf = |usage: ExtendedKeyUsagePurpose| {
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("cocos test {usage:?}"));
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![usage];
        let c = p.signed_by(&k, &ca, &ca_key).unwrap();
        (c.pem(), k.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(ExtendedKeyUsagePurpose::ClientAuth),
    }
}

#[test]
fn tls_and_mtls_on_both_apis() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let pki = pki();
    let f = |name: &str, s: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, s).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca, sc, sk, cc, ck) = (
        f("ca.pem", &pki.ca),
        f("s.pem", &pki.server.0),
        f("s.key", &pki.server.1),
        f("c.pem", &pki.client.0),
        f("c.key", &pki.client.1),
    );
    let extra = ["--tls-cert", &sc, "--tls-key", &sk, "--tls-client-ca", &ca];
    let m = ManagerProc::start(
        &manager_args(&release, &d.path().join("state"), &fw, FAKE, &extra),
        &[],
        &d.path().join("m.log"),
    );
    let url = format!(
        "https://127.0.0.1:{}/health",
        m.http.rsplit(':').next().unwrap()
    );
    // mTLS: no client certificate, no answer; with one, the API answers.
    assert_ne!(curl(&["--cacert", &ca, &url]).0, 0);
    let (rc, body) = curl(&["--cacert", &ca, "--cert", &cc, "--key", &ck, &url]);
    assert_eq!(rc, 0, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    // Plain HTTP to a TLS port gets nothing useful.
    let (rc, _) = curl(&[&url.replace("https", "http")]);
    assert_ne!(rc, 0);
    // gRPC over TLS with the client certificate: the API answers (NotFound for an
    // unknown computation); without the certificate the call fails at the transport.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grpc = format!("https://localhost:{}", m.grpc.rsplit(':').next().unwrap());
    let call = |identity: bool| {
        let grpc = grpc.clone();
        let (ca, cc, ck) = (pki.ca.clone(), pki.client.0.clone(), pki.client.1.clone());
        rt.block_on(async move {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            if identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cc, ck));
            }
            let ch = tonic::transport::Channel::from_shared(grpc)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await;
            match ch {
                Err(e) => Err(e.to_string()),
                Ok(ch) => {
                    let mut c =
                        cocos_proto::grpc::manager_service_client::ManagerServiceClient::new(ch);
                    c.cvm_info(cocos_proto::grpc::CvmInfoReq { id: "nope".into() })
                        .await
                        .map(|_| ())
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                }
            }
        })
    };
    let with = call(true).unwrap_err();
    assert!(with.starts_with("NotFound"), "{with}");
    let without = call(false).unwrap_err();
    assert!(
        !without.starts_with("NotFound"),
        "served without a client certificate: {without}"
    );
}

#[test]
fn slow_bodies_time_out_and_connections_are_capped() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let m = ManagerProc::start(
        &manager_args(
            &release,
            &d.path().join("state"),
            &fw,
            FAKE,
            &["--max-connections", "4"],
        ),
        &[],
        &d.path().join("m.log"),
    );
    // A body that never arrives: 408 within about 10 s; others are served meanwhile.
    let mut slow = std::net::TcpStream::connect(&m.http).unwrap();
    slow.write_all(b"POST /run HTTP/1.1\r\nHost: m\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(http(&m.http, "GET", "/health", "").0, 200);
    let mut answer = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    drop(slow);
    // Four idle connections fill the slots: a fifth is closed at once, not queued.
    std::thread::sleep(Duration::from_millis(200));
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&m.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = std::net::TcpStream::connect(&m.http).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n");
    let mut buf = Vec::new();
    let n = fifth.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over the limit was served");
    // Silent connections do not keep their slots: the server closes each after 10 s
    // without a byte, and the API answers again while the client still holds them.
    let t0 = Instant::now();
    for mut c in idle.iter() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 16];
        let r = c.read(&mut b);
        assert!(
            matches!(r, Ok(0)),
            "an idle connection was kept: {r:?} after {:?}",
            t0.elapsed()
        );
    }
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(&m.http, "GET", "/health", "").0, 200);
    drop(idle);
    // gRPC has its own four slots: idle connections fill them, a fifth is closed
    // before the server says anything (an HTTP/2 server speaks first: SETTINGS), and
    // a real call goes through once they are gone.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&m.grpc).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = std::net::TcpStream::connect(&m.grpc).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = fifth.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let mut buf = [0u8; 64];
    // Closed at once: end of stream, or a reset if the preface crossed the close.
    let r = fifth.read(&mut buf);
    assert!(
        matches!(&r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a gRPC connection over the limit was served: {r:?}"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grpc = format!("http://{}", m.grpc);
    let answer = rt.block_on(async move {
        let mut c = cocos_proto::grpc::manager_service_client::ManagerServiceClient::connect(grpc)
            .await
            .unwrap();
        c.cvm_info(cocos_proto::grpc::CvmInfoReq { id: "nope".into() })
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    });
    assert_eq!(answer, Err(tonic::Code::NotFound));
    let (_, metrics) = http(&m.http, "GET", "/metrics", "");
    assert!(
        metrics.contains("cocos_manager_connections_refused_total 2"),
        "{metrics}"
    );
}
