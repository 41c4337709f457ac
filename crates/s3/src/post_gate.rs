//! Browser uploads (POST Object) are authorized before their file is read: `s3s` buffers the
//! file in memory before the access hook runs, so the hyper service reads only the form fields
//! that precede the file (AWS requires the file to be the last field), learns the object key and
//! whether the form is signed, and refuses an anonymous upload the bucket does not admit before a
//! byte of the file is read. The key goes to the access hook as [`PostKey`], so a policy is
//! evaluated against `bucket/key`, not the bucket.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// The most form data accepted before the file field (AWS: 20 KiB; some room for long policies).
pub(crate) const MAX_PRE_FILE_BYTES: usize = 64 * 1024;

/// The object key a POST Object form names (`${filename}` replaced), for the access hook.
#[derive(Debug, Clone)]
pub(crate) struct PostKey(pub(crate) String);

/// What the fields before the file say.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FormHead {
    /// The object key, `${filename}` replaced by the file's name.
    pub(crate) key: Option<String>,
    /// The form carries a signature (SigV4 `x-amz-signature` or SigV2 `signature`).
    pub(crate) signed: bool,
    /// The form is signed with Signature Version 2 (`AWSAccessKeyId`).
    pub(crate) v2: bool,
}

/// The boundary of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A parameter of a Content-Disposition header line (`name="key"`).
fn disposition_param(line: &str, param: &str) -> Option<String> {
    line.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(param)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Parses the fields of `buf` up to the file part. `Ok(None)`: more bytes are needed.
pub(crate) fn parse_head(buf: &[u8], boundary: &str) -> Result<Option<FormHead>, &'static str> {
    let delim = format!("--{boundary}");
    let text = buf;
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut head = FormHead::default();
    let mut key_field: Option<String> = None;
    let Some(mut at) = find(text, delim.as_bytes(), 0) else {
        return Ok(None);
    };
    loop {
        let part = at + delim.len();
        if text.get(part..part + 2) == Some(b"--") {
            // The closing delimiter before any file: s3s reports the missing file.
            return Err("the form has no file field");
        }
        let Some(headers_end) = find(text, b"\r\n\r\n", part) else {
            return Ok(None);
        };
        let headers = String::from_utf8_lossy(&text[part..headers_end]);
        let disposition = headers
            .lines()
            .find(|l| l.trim_start().to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        let name = disposition_param(disposition, "name")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name == "file" {
            let filename = disposition_param(disposition, "filename").unwrap_or_default();
            head.key = key_field.map(|k| k.replace("${filename}", &filename));
            return Ok(Some(head));
        }
        let value_start = headers_end + 4;
        let end_marker = format!("\r\n{delim}");
        let Some(value_end) = find(text, end_marker.as_bytes(), value_start) else {
            return Ok(None);
        };
        let value = String::from_utf8_lossy(&text[value_start..value_end]).into_owned();
        match name.as_str() {
            "key" => key_field = Some(value),
            "x-amz-signature" | "signature" => head.signed = true,
            "awsaccesskeyid" => head.v2 = true,
            _ => {}
        }
        at = value_end + 2;
    }
}

/// Why the fields could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// More than [`MAX_PRE_FILE_BYTES`] before the file field.
    TooLarge,
    /// The form is malformed or the connection failed.
    Malformed(String),
}

/// Reads `body` until the file part begins; returns the bytes read, the rest of the body and
/// what the fields say.
pub(crate) async fn read_head(mut body: s3s::Body, boundary: &str) -> Result<(Bytes, s3s::Body, FormHead), ReadError> {
    let mut buf = BytesMut::new();
    loop {
        match parse_head(&buf, boundary) {
            Ok(Some(head)) => return Ok((buf.freeze(), body, head)),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Malformed(e.into())),
        }
        if buf.len() > MAX_PRE_FILE_BYTES {
            return Err(ReadError::TooLarge);
        }
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => return Err(ReadError::Malformed(e.to_string())),
            None => return Err(ReadError::Malformed("the form ends before its file field".into())),
        }
    }
}

/// The body again: the bytes read first, then the rest.
pub(crate) fn rejoin(first: Bytes, rest: s3s::Body) -> s3s::Body {
    let head = http_body_util::Full::new(first)
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .boxed();
    let rest = rest.boxed();
    s3s::Body::http_body(Chain {
        first: Some(head),
        rest,
    })
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxedBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Two bodies, one after the other.
struct Chain {
    first: Option<BoxedBody>,
    rest: BoxedBody,
}

impl http_body::Body for Chain {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.as_mut() {
            match std::pin::Pin::new(first).poll_frame(cx) {
                std::task::Poll::Ready(None) => self.first = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)], filename: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            b.extend(format!("--XX\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n").as_bytes());
        }
        b.extend(
            format!("--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\r\nDATA")
                .as_bytes(),
        );
        b
    }

    #[test]
    fn reads_the_key_and_whether_the_form_is_signed() {
        assert_eq!(boundary("multipart/form-data; boundary=XX").as_deref(), Some("XX"));
        assert_eq!(
            boundary("Multipart/Form-Data; charset=x; boundary=\"XX\"").as_deref(),
            Some("XX")
        );
        assert_eq!(boundary("text/plain; boundary=XX"), None);
        let anon = form(&[("key", "uploads/${filename}"), ("acl", "private")], "cat.png");
        let head = parse_head(&anon, "XX").unwrap().unwrap();
        assert_eq!(head.key.as_deref(), Some("uploads/cat.png"));
        assert!(!head.signed && !head.v2);
        let signed = form(&[("key", "k"), ("X-Amz-Signature", "00")], "f");
        assert!(parse_head(&signed, "XX").unwrap().unwrap().signed);
        let v2 = form(&[("AWSAccessKeyId", "AK"), ("signature", "00"), ("key", "k")], "f");
        let head = parse_head(&v2, "XX").unwrap().unwrap();
        assert!(head.signed && head.v2);
        // Cut anywhere before the file part: more bytes are needed, never a wrong answer.
        for cut in 0..anon.len() - 4 {
            if let Ok(Some(h)) = parse_head(&anon[..cut], "XX") {
                assert_eq!(h.key.as_deref(), Some("uploads/cat.png"), "cut at {cut}");
            }
        }
        assert!(parse_head(b"--XX--\r\n", "XX").is_err());
    }
}
