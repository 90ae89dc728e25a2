//! A fault-injecting HTTP proxy between xtask and a test's emulator: it forwards every request,
//! and for each rule drops the answer of the first request the rule matches *after* the
//! emulator executed it (the connection closes without a response), as a lost answer on AWS
//! would; a hold rule instead keeps its first request unanswered (a call that hangs). Fault
//! injection lives here, in the harness, not in xtask.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the proxy sees it.
pub struct Request {
    pub method: String,
    pub path: String,
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

    /// The operation of a JSON-protocol call (`X-Amz-Target: DynamoDB_20120810.CreateTable`)
    /// or of a query-protocol call (`Action=CreateRole` in the form body).
    pub fn is_operation(&self, operation: &str) -> bool {
        self.header("x-amz-target")
            .is_some_and(|t| t.rsplit('.').next() == Some(operation))
            || String::from_utf8_lossy(&self.body)
                .split('&')
                .any(|kv| kv == format!("Action={operation}"))
    }
}

/// Which requests lose their first answer.
pub struct Rule {
    pub name: &'static str,
    pub matches: Box<dyn Fn(&Request) -> bool + Send + Sync>,
    /// Instead: the first matching request is never forwarded nor answered; the proxy holds
    /// it until the client goes away (a call that hangs).
    pub hold: bool,
}

impl Rule {
    pub fn new(
        name: &'static str,
        matches: impl Fn(&Request) -> bool + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            name,
            matches: Box::new(matches),
            hold: false,
        }
    }

    /// The first matching request hangs until the client goes away.
    pub fn hold(
        name: &'static str,
        matches: impl Fn(&Request) -> bool + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            hold: true,
            ..Rule::new(name, matches)
        }
    }
}

/// Takes the first of `rules` that matches `request` and has not fired yet, with `hold` as
/// given; whether one did.
fn fire(
    rules: &[Rule],
    fired: &Mutex<Vec<(&'static str, usize)>>,
    request: &Request,
    hold: bool,
) -> bool {
    let mut fired = fired.lock().unwrap();
    match rules
        .iter()
        .zip(fired.iter_mut())
        .find(|(r, (_, n))| r.hold == hold && *n == 0 && (r.matches)(request))
    {
        Some((_, (_, n))) => {
            *n += 1;
            true
        }
        None => false,
    }
}

pub struct DropFirstAnswer {
    port: u16,
    /// For each rule, how many answers it dropped (at most one).
    dropped: Arc<Mutex<Vec<(&'static str, usize)>>>,
}

impl DropFirstAnswer {
    /// Listens on a free port and forwards to `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16, rules: Vec<Rule>) -> DropFirstAnswer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let dropped = Arc::new(Mutex::new(rules.iter().map(|r| (r.name, 0)).collect()));
        let rules = Arc::new(rules);
        let shared = dropped.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let rules = rules.clone();
                let dropped = shared.clone();
                thread::spawn(move || serve(client, upstream, &rules, &dropped));
            }
        });
        DropFirstAnswer { port, dropped }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's URL, where clients are pointed instead of the emulator's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(rule, answers dropped)` for every rule.
    pub fn dropped(&self) -> Vec<(&'static str, usize)> {
        self.dropped.lock().unwrap().clone()
    }
}

/// Serves one client connection: one request per connection is all the proxy keeps, answers
/// carry `Connection: close` so the client never reuses it.
fn serve(
    mut client: TcpStream,
    upstream: u16,
    rules: &[Rule],
    dropped: &Mutex<Vec<(&'static str, usize)>>,
) {
    let Some(request) = read_request(&mut client) else {
        return;
    };
    if fire(rules, dropped, &request, true) {
        // Read until the client closes its end: the call hangs for as long as it waits.
        let _ = std::io::copy(&mut client, &mut std::io::sink());
        return;
    }
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (n, v) in &request.headers {
        if !["connection", "expect"].contains(&n.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if up.write_all(head.as_bytes()).is_err() || up.write_all(&request.body).is_err() {
        return;
    }
    let mut answer = Vec::new();
    if up.read_to_end(&mut answer).is_err() {
        return;
    }
    // The emulator has executed the request; now decide whether its answer gets through.
    if fire(rules, dropped, &request, false) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.write_all(&with_connection_close(&answer));
    let _ = client.shutdown(Shutdown::Both);
}

fn read_request(client: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// The emulator's answer with its `Connection` header replaced by `close`.
fn with_connection_close(answer: &[u8]) -> Vec<u8> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer[split + 4..]);
    bytes
}
