//! Just enough HTTP/1.1 server for the Lambda Runtime API: request head, `Content-Length` or
//! chunked body, keep-alive, buffered responses.
//!
//! Why not hyper: the AWS SDK already links hyper 1 as a *client*; enabling its `server` feature
//! changes hyper's feature set and so recompiles every SDK crate that depends on it, which is
//! minutes of build on a shared 2-core machine for a protocol with four routes. The only client
//! of this server is the Lambda runtime inside the function (aws-lambda-rust-runtime's hyper
//! client, or any other runtime), which speaks plain HTTP/1.1 to loopback. The emulator module
//! hand-rolls its tiny HTTP client for the same reason.

use std::future::Future;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

/// A request head larger than this is refused: runtime requests carry a handful of headers.
const MAX_HEAD: usize = 64 * 1024;
/// Hard cap on a request body; the Runtime API itself refuses anything above Lambda's 6 MB
/// payload limit with a proper error, this only protects memory against a broken client.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent, e.g. `/2018-06-01/runtime/invocation/next`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// HTTP/1.0, or `Connection: close`: answer, then close.
    pub close: bool,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response (`Content-Type: application/json`).
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(body).expect("a JSON value always serialises"),
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body over {MAX_BODY} bytes")]
    TooLarge,
}

/// Serves requests on one connection until the peer closes it, asks to, or sends garbage.
/// Requests on a connection are answered in order, one at a time (no pipelining needed: the
/// runtime client waits for each answer).
pub async fn serve_connection<F, Fut>(stream: TcpStream, handler: F)
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let _ = stream.set_nodelay(true); // small request/response pairs: no Nagle delay
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let request = match read_request_answering_continue(&mut rd, &mut wr).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(HttpError::Io(_)) => return,
            Err(e) => {
                let status = if matches!(e, HttpError::TooLarge) {
                    413
                } else {
                    400
                };
                let body =
                    serde_json::json!({"errorType": "BadRequest", "errorMessage": e.to_string()});
                let _ = write_response(&mut wr, &Response::json(status, &body), true).await;
                return;
            }
        };
        let close = request.close;
        let response = handler(request).await;
        if write_response(&mut wr, &response, close).await.is_err() || close {
            return;
        }
    }
}

/// Reads one request; `Ok(None)` when the peer closed the connection between requests.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    rd: &mut R,
) -> Result<Option<Request>, HttpError> {
    read(rd, None::<&mut tokio::io::Sink>).await
}

/// [`read_request`] for a server: a client that sent `Expect: 100-continue` (curl does for
/// large bodies) is told to go on before the body is read, instead of waiting a second for
/// a `100 Continue` that never comes.
pub async fn read_request_answering_continue<R, W>(
    rd: &mut R,
    wr: &mut W,
) -> Result<Option<Request>, HttpError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    read(rd, Some(wr)).await
}

async fn read<R, W>(rd: &mut R, wr: Option<&mut W>) -> Result<Option<Request>, HttpError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head_len = 0;
    let mut line = String::new();
    // Request line (RFC 9112 allows empty lines before it).
    let request_line = loop {
        line.clear();
        let n = read_line(rd, &mut line, &mut head_len).await?;
        if n == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if !trimmed.is_empty() {
            break trimmed.to_owned();
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!(
            "request line {request_line:?}"
        )));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("version {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        if read_line(rd, &mut line, &mut head_len).await? == 0 {
            return Err(HttpError::Malformed(
                "connection closed inside the head".into(),
            ));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {trimmed:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: Vec::new(),
        close: version == "HTTP/1.0",
    };
    if let Some(conn) = request.header("connection") {
        request.close = conn.eq_ignore_ascii_case("close");
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = match request.header("content-length") {
        Some(len) => Some(
            len.parse::<usize>()
                .map_err(|_| HttpError::Malformed(format!("content-length {len:?}")))?,
        ),
        None => None,
    };
    if length.is_some_and(|len| len > MAX_BODY) {
        // Refused before `100 Continue`: the client need not send it at all.
        return Err(HttpError::TooLarge);
    }
    if let Some(wr) = wr
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && (chunked || length.is_some_and(|len| len > 0))
    {
        wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        wr.flush().await?;
    }
    if chunked {
        request.body = read_chunked(rd).await?;
    } else if let Some(len) = length {
        let mut body = vec![0; len];
        rd.read_exact(&mut body).await?;
        request.body = body;
    }
    Ok(Some(request))
}

/// Reads a line (up to `\n`), counting it against the head limit.
async fn read_line<R: AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut String,
    head_len: &mut usize,
) -> Result<usize, HttpError> {
    let mut bytes = Vec::new();
    let n = (&mut *rd)
        .take((MAX_HEAD - *head_len + 1) as u64)
        .read_until(b'\n', &mut bytes)
        .await?;
    *head_len += n;
    if *head_len > MAX_HEAD {
        return Err(HttpError::Malformed("request head too large".into()));
    }
    line.push_str(
        std::str::from_utf8(&bytes).map_err(|_| HttpError::Malformed("non-UTF-8 head".into()))?,
    );
    Ok(n)
}

/// A `Transfer-Encoding: chunked` body; trailers are read and ignored.
async fn read_chunked<R: AsyncBufRead + Unpin>(rd: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut line = String::new();
    let mut trailer_len = 0;
    loop {
        line.clear();
        let mut size_len = 0;
        if read_line(rd, &mut line, &mut size_len).await? == 0 {
            return Err(HttpError::Malformed(
                "connection closed inside a chunk".into(),
            ));
        }
        let size = line.trim_end_matches(['\r', '\n']);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {size:?}")))?;
        if size == 0 {
            break;
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        rd.read_exact(&mut body[start..]).await?;
        let mut crlf = [0; 2];
        rd.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
    }
    loop {
        line.clear();
        if read_line(rd, &mut line, &mut trailer_len).await? == 0
            || line.trim_end_matches(['\r', '\n']).is_empty()
        {
            return Ok(body);
        }
    }
}

/// Writes a response with `Content-Length`.
pub async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    response: &Response,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    // One write for small responses: head and body in the same segment.
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&response.body);
    wr.write_all(&bytes).await?;
    wr.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        let mut rd = BufReader::new(raw);
        read_request(&mut rd).await
    }

    #[tokio::test]
    async fn reads_content_length_and_chunked_bodies() {
        let r = parse(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a"));
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("HOST"), Some("x"));
        assert!(!r.close);

        let r = parse(
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.body, b"abcde");

        let r = parse(b"GET / HTTP/1.0\r\n\r\n").await.unwrap().unwrap();
        assert!(r.close);
        assert!(parse(b"").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_garbage_and_huge_bodies() {
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n").await,
            Err(HttpError::Malformed(_))
        ));
        let huge = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            parse(huge.as_bytes()).await,
            Err(HttpError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_before_the_body() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi";
        let mut rd = BufReader::new(&raw[..]);
        let mut out = Vec::new();
        let r = read_request_answering_continue(&mut rd, &mut out)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"hi");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        // Without the header, nothing is written.
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        let mut out = Vec::new();
        read_request_answering_continue(&mut BufReader::new(&raw[..]), &mut out)
            .await
            .unwrap();
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn writes_length_and_close() {
        let mut out = Vec::new();
        let resp = Response::json(202, &serde_json::json!({"status": "OK"}));
        write_response(&mut out, &resp, true).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"status\":\"OK\"}"));
    }
}
