//! `ggufembed serve` as a process: the port on stdout, requests served, SIGTERM exits 0 after
//! finishing the request in flight. (The server's behaviour is tested in crates/embed-server.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn model() -> std::path::PathBuf {
    model_fetch::testing::gguf(model_fetch::OutType::Q8_0)
}

/// Sends one HTTP/1.1 request and returns the status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn start(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(["serve", "--port", "0", "--threads", "2", "--model"])
        .arg(model())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_owned();
    let t = Instant::now();
    while http(&addr, "GET", "/health", "").map(|r| r.0).unwrap_or(0) != 200 {
        assert!(t.elapsed() < Duration::from_secs(60), "not healthy within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn serves_and_stops_gracefully_on_sigterm() {
    let (mut child, addr) = start(&["--served-model-name", "eg"]);
    let (status, body) = http(&addr, "POST", "/v1/embeddings", r#"{"input": ["hello", "world"], "dimensions": 128}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model"], "eg");
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 128);

    // A request in flight when SIGTERM arrives is finished; then the process exits 0.
    let long = "A man is playing a flute. ".repeat(400);
    let body = format!(r#"{{"inputs": ["{long}", "{long}"]}}"#);
    let addr2 = addr.clone();
    let in_flight = std::thread::spawn(move || http(&addr2, "POST", "/embed", &body));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let (status, body) = in_flight.join().unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(exit.success(), "{exit}: {err}");
    assert!(err.contains("shutting down"), "{err}");
    assert!(TcpStream::connect(&addr).is_err(), "port closed");
}

/// A second signal while requests are still being finished exits at once, with the status of a
/// process killed by that signal (143 for SIGTERM), as a supervisor that escalates expects.
#[test]
fn a_second_sigterm_exits_at_once_with_143() {
    let (mut child, addr) = start(&[]);
    let long = "A man is playing a flute. ".repeat(400);
    let texts = vec![format!("\"{long}\""); 16].join(", ");
    let body = format!(r#"{{"inputs": [{texts}]}}"#);
    let in_flight = std::thread::spawn(move || http(&addr, "POST", "/embed", &body));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(100));
    sigterm(&child);
    let t = Instant::now();
    let exit = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "exited at once");
    assert_eq!(exit.code(), Some(143), "{exit}");
    // The connection was cut, not answered.
    assert!(!matches!(in_flight.join().unwrap(), Ok((200, _))));
}

#[test]
fn a_taken_port_and_bad_limits_fail_with_a_message() {
    let (mut child, addr) = start(&[]);
    let port = addr.rsplit_once(':').unwrap().1;
    let out = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(["serve", "--port", port, "--model"])
        .arg(model())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a taken port is not a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on") && err.contains(port), "{err}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    let out = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(["serve", "--port", "0", "--max-concurrent-inputs", "4", "--max-client-batch", "8", "--model"])
        .arg(model())
        .output()
        .unwrap();
    // Limits that do not fit together are a usage error, as a malformed option is: status 2.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max client batch"), "{err}");
    for bad in [["--cors-allow-origin", "garb age"], ["--api-key", ""]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
            .args(["serve", "--port", "0", bad[0], bad[1], "--model"])
            .arg(model())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(["serve", "--port", "0", "--max-concurrent-requests", "0", "--model"])
        .arg(model())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-concurrent-requests"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(["serve", "--model", "/no/such.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such.gguf"));
}
